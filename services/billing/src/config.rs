//! The billing service's settings: where lots come in and how long an ARL may take.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Billing settings (to embed in `[sesam]` or as `[billing]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingConfig {
    /// The lot store (`lots.db`, `content/`).
    pub state_dir: PathBuf,
    /// The spool folder the LPS writes lots into (atomic rename protocol).
    pub spool_dir: PathBuf,
    /// How often the spool folder is scanned.
    #[serde(with = "humantime_serde", default = "default_spool_interval")]
    pub spool_interval: Duration,
    /// The local HTTP API (LAN side only), e.g. `127.0.0.1:8470`.
    pub api_listen: Option<SocketAddr>,
    /// A sent lot without an ARL after this long goes `overdue` (digest §8 #9: alert at
    /// D+3 working days; 5 calendar days covers a weekend).
    #[serde(with = "humantime_serde", default = "default_arl_deadline")]
    pub arl_deadline: Duration,
}

fn default_spool_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_arl_deadline() -> Duration {
    Duration::from_secs(5 * 24 * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c: BillingConfig =
            toml::from_str("state_dir = '/var/lib/passerelle/billing'\nspool_dir = '/srv/spool'")
                .expect("parse");
        assert_eq!(c.arl_deadline, Duration::from_secs(432_000));
        assert_eq!(c.spool_interval, Duration::from_secs(5));
        assert!(c.api_listen.is_none());
        assert!(
            toml::from_str::<BillingConfig>("state_dir='/a'\nspool_dir='/b'\nbogus=1").is_err()
        );
    }
}
