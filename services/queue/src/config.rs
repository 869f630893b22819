use std::time::Duration;

use passerelle_backoff::Backoff;
use serde::{Deserialize, Serialize};

/// Tuning of a durable queue. Every field has a default; the daemon's configuration embeds
/// this struct (durations in humantime form: `"5m"`, `"5days"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Delay before the first retry (Postfix `minimal_backoff_time`).
    #[serde(with = "humantime_serde")]
    pub first_retry: Duration,
    /// Ceiling of the doubling retry delay (Postfix `maximal_backoff_time`).
    #[serde(with = "humantime_serde")]
    pub max_retry: Duration,
    /// Retry delays are shortened by a random fraction of up to this ratio (0.0–1.0).
    pub retry_jitter: f64,
    /// An item still failing this long after it was enqueued goes dead (Postfix
    /// `maximal_queue_lifetime`).
    #[serde(with = "humantime_serde")]
    pub lifetime: Duration,
    /// Payloads up to this many bytes are stored inside the database row; larger ones in
    /// a file under `payloads/`.
    pub inline_payload_max: u64,
    /// Largest payload accepted at all.
    pub max_payload: u64,
    /// Done rows (and so their idempotency keys) are kept this long, then pruned.
    #[serde(with = "humantime_serde")]
    pub done_retention: Duration,
    /// How long a database call waits on a lock held by another connection.
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            first_retry: passerelle_backoff::POSTFIX_INITIAL,
            max_retry: passerelle_backoff::POSTFIX_MAX,
            retry_jitter: passerelle_backoff::DEFAULT_JITTER,
            lifetime: passerelle_backoff::POSTFIX_LIFETIME,
            inline_payload_max: 256 * 1024,
            max_payload: 64 * 1024 * 1024,
            done_retention: Duration::from_hours(7 * 24),
            busy_timeout: Duration::from_secs(5),
        }
    }
}

impl QueueConfig {
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.first_retry, self.max_retry, self.retry_jitter)
    }
}
