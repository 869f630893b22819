//! Jittered exponential backoff, Postfix-like by default.
//!
//! A [`Backoff`] turns "this was the n-th failed attempt" into "wait this long before the
//! next one": `initial * 2^(n-1)`, capped at `max`, then shortened by a random fraction of
//! at most `jitter` so that items that failed together (a peer went down) do not all come
//! back at the same second. Jitter only ever shortens the delay, so `max` is a hard ceiling.
//!
//! A peer may say when to come back (HTTP `Retry-After`, an SMTP reply text); its word
//! replaces the computed delay, clamped to `[MIN_RETRY_AFTER, max]` so that a hostile or
//! broken peer can neither make us spin (`Retry-After: 0`) nor park an item forever.
//!
//! The lifetime (how long an item may keep failing before it is given up on) is not this
//! crate's business: the caller knows when the item was born. [`POSTFIX_LIFETIME`] is the
//! default it should use.

use std::time::Duration;

/// Postfix's `minimal_backoff_time` is 300 s; the first retry comes about five minutes later.
pub const POSTFIX_INITIAL: Duration = Duration::from_mins(5);
/// Postfix's `maximal_backoff_time` (4000 s): doubling stops a little above one hour.
pub const POSTFIX_MAX: Duration = Duration::from_secs(4000);
/// Postfix's `maximal_queue_lifetime` (5 days).
pub const POSTFIX_LIFETIME: Duration = Duration::from_hours(5 * 24);
/// Default jitter: up to 10 % shorter than the nominal delay.
pub const DEFAULT_JITTER: f64 = 0.1;
/// Shortest delay a peer's `Retry-After` can impose (a `0` must not make us spin).
pub const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A jittered exponential backoff policy (factor 2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::postfix()
    }
}

impl Backoff {
    /// A policy starting at `initial`, doubling up to `max`, shortened by up to `jitter`
    /// (a ratio, clamped into `0.0..=1.0`; NaN counts as no jitter).
    ///
    /// `max` below `initial` is raised to `initial`: a ceiling under the first step makes no
    /// sense and would otherwise make every delay `max`.
    pub fn new(initial: Duration, max: Duration, jitter: f64) -> Self {
        let jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        Self {
            initial,
            max: max.max(initial),
            jitter,
        }
    }

    /// Postfix-like defaults: 300 s, doubling, at most 4000 s, 10 % jitter.
    pub fn postfix() -> Self {
        Self::new(POSTFIX_INITIAL, POSTFIX_MAX, DEFAULT_JITTER)
    }

    pub fn initial(&self) -> Duration {
        self.initial
    }

    pub fn max(&self) -> Duration {
        self.max
    }

    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// The delay before the next attempt without jitter. `attempt` is the number of failed
    /// attempts so far, counting from 1 (0 is treated as 1).
    pub fn nominal_delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1);
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The jittered delay before the next attempt, from the thread-local generator.
    pub fn next_delay(&self, attempt: u32) -> Duration {
        self.next_delay_with(attempt, &mut fastrand::Rng::new())
    }

    /// The jittered delay before the next attempt, from a caller-supplied generator
    /// (seeded in tests).
    pub fn next_delay_with(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        let nominal = self.nominal_delay(attempt);
        // Both factors are in 0..=1, so the product never overflows nor exceeds `nominal`.
        let shorten = nominal.mul_f64(self.jitter).mul_f64(rng.f64());
        nominal.saturating_sub(shorten)
    }

    /// The delay to use when a peer may have given a `Retry-After`: the peer's value,
    /// clamped to `[MIN_RETRY_AFTER, max]`, else the jittered backoff.
    pub fn delay_for(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(peer) => self.clamp_retry_after(peer),
            None => self.next_delay(attempt),
        }
    }

    /// Clamp a peer's `Retry-After` into `[MIN_RETRY_AFTER, max]` (only `max` if the policy's
    /// ceiling is itself below the floor, as in tests with millisecond delays).
    pub fn clamp_retry_after(&self, peer: Duration) -> Duration {
        peer.max(MIN_RETRY_AFTER).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn postfix_defaults_start_at_five_minutes_and_cap_above_an_hour() {
        let b = Backoff::postfix();
        assert_eq!(b.nominal_delay(1), S(300));
        assert_eq!(b.nominal_delay(2), S(600));
        assert_eq!(b.nominal_delay(3), S(1200));
        assert_eq!(b.nominal_delay(4), S(2400));
        assert_eq!(b.nominal_delay(5), S(4000));
        assert!(b.nominal_delay(5) >= S(3600));
        assert_eq!(POSTFIX_LIFETIME, S(432_000));
    }

    #[test]
    fn attempt_zero_counts_as_first_and_huge_attempts_saturate_at_max() {
        let b = Backoff::postfix();
        assert_eq!(b.nominal_delay(0), b.nominal_delay(1));
        assert_eq!(b.nominal_delay(40), S(4000));
        assert_eq!(b.nominal_delay(u32::MAX), S(4000));
        let huge = Backoff::new(Duration::MAX, Duration::MAX, 0.0);
        assert_eq!(huge.nominal_delay(10), Duration::MAX);
    }

    #[test]
    fn jitter_only_shortens_within_ratio() {
        let b = Backoff::postfix();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut distinct = std::collections::HashSet::new();
        for attempt in 1..=8 {
            let nominal = b.nominal_delay(attempt);
            for _ in 0..200 {
                let d = b.next_delay_with(attempt, &mut rng);
                assert!(d <= nominal, "{d:?} > {nominal:?}");
                assert!(d >= nominal.mul_f64(0.9), "{d:?} too short for {nominal:?}");
                distinct.insert(d);
            }
        }
        assert!(distinct.len() > 100, "jitter should spread delays");
    }

    #[test]
    fn no_jitter_gives_the_nominal_delay() {
        let b = Backoff::new(S(1), S(8), 0.0);
        assert_eq!(b.next_delay(3), S(4));
        let nan = Backoff::new(S(1), S(8), f64::NAN);
        assert!(nan.jitter().abs() < f64::EPSILON);
        assert_eq!(nan.next_delay(4), S(8));
    }

    #[test]
    fn max_below_initial_is_raised_and_jitter_is_clamped() {
        let b = Backoff::new(S(10), S(1), 5.0);
        assert_eq!(b.max(), S(10));
        assert!((b.jitter() - 1.0).abs() < f64::EPSILON);
        assert!(b.next_delay(3) <= S(10));
    }

    #[test]
    fn retry_after_replaces_backoff_and_is_clamped() {
        let b = Backoff::postfix();
        assert_eq!(b.delay_for(1, Some(S(30))), S(30));
        assert_eq!(b.delay_for(5, Some(S(30))), S(30));
        assert_eq!(b.delay_for(1, Some(Duration::ZERO)), MIN_RETRY_AFTER);
        assert_eq!(b.delay_for(1, Some(S(86_400 * 365))), S(4000));
        let d = b.delay_for(2, None);
        assert!(d <= S(600) && d >= S(540));
    }

    #[test]
    fn retry_after_floor_yields_to_a_tiny_ceiling() {
        let b = Backoff::new(Duration::from_millis(10), Duration::from_millis(50), 0.0);
        assert_eq!(
            b.clamp_retry_after(Duration::ZERO),
            Duration::from_millis(50)
        );
    }
}
