//! When to download the AC-FACTURATION CRL (A4 §6.3.3; digest §1.6): weekly; the CRL is
//! published around 00:00 and downloads start at 02:00, at a time spread over the window
//! 02:00–22:00 (at least 8 hours) across installations; after a failure — a technical problem
//! or the same CRL served again — retry daily under the same rules; if it keeps failing, alert
//! the practice before the installed CRL expires.
//!
//! The time of day is derived from the device identity (FNV-1a), so one installation keeps its
//! slot across restarts and a fleet spreads evenly over the 20-hour window. Times are UTC.

use time::{Duration, OffsetDateTime, Time};

/// Start of the download window.
const WINDOW_START_HOUR: u8 = 2;
/// Length of the window (02:00–22:00).
const WINDOW_SECONDS: u64 = 20 * 3600;
/// Alert this long before the installed CRL's nextUpdate while downloads fail.
pub const ALERT_BEFORE: Duration = Duration::days(2);

/// What the last download gave, as the trust store's refresh report says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A newer CRL was installed.
    NewCrl,
    /// The source failed, or served the CRL already installed.
    Failed,
}

/// One installation's CRL download slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrlSchedule {
    /// Seconds after 02:00 UTC.
    offset: u64,
}

impl CrlSchedule {
    /// The slot of the installation named `device_id` (its serial or host name).
    pub fn for_device(device_id: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in device_id.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Self {
            offset: h % WINDOW_SECONDS,
        }
    }

    /// The slot's time of day.
    pub fn time_of_day(self) -> Time {
        let secs = u64::from(WINDOW_START_HOUR) * 3600 + self.offset;
        let hour = u8::try_from(secs / 3600).unwrap_or(0);
        let minute = u8::try_from(secs % 3600 / 60).unwrap_or(0);
        let second = u8::try_from(secs % 60).unwrap_or(0);
        Time::from_hms(hour, minute, second).unwrap_or(Time::MIDNIGHT)
    }

    /// The first slot strictly after `now`.
    pub fn first(self, now: OffsetDateTime) -> OffsetDateTime {
        let today = now.replace_time(self.time_of_day());
        if today > now {
            today
        } else {
            today + Duration::days(1)
        }
    }

    /// The next download after one at `at`: a week later after a new CRL, the next day
    /// after a failure.
    pub fn next(self, at: OffsetDateTime, outcome: Outcome) -> OffsetDateTime {
        let days = match outcome {
            Outcome::NewCrl => 7,
            Outcome::Failed => 1,
        };
        (at + Duration::days(days)).replace_time(self.time_of_day())
    }
}

/// Whether to alert the practice: downloads are failing and the installed CRL expires within
/// [`ALERT_BEFORE`] (or already has, [CP2]).
pub fn alert_due(last: Outcome, crl_next_update: OffsetDateTime, now: OffsetDateTime) -> bool {
    last == Outcome::Failed && crl_next_update - now <= ALERT_BEFORE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_fall_inside_02_22_and_spread_over_at_least_8_hours() {
        let slots: Vec<Time> = (0..1000)
            .map(|i| CrlSchedule::for_device(&format!("passerelle-{i:05}")).time_of_day())
            .collect();
        let start = Time::from_hms(2, 0, 0).expect("time");
        let end = Time::from_hms(22, 0, 0).expect("time");
        assert!(slots.iter().all(|t| *t >= start && *t < end));
        let min = slots.iter().min().expect("min");
        let max = slots.iter().max().expect("max");
        assert!(*max - *min >= Duration::hours(8), "{min}..{max}");
        // Stable for one device.
        assert_eq!(
            CrlSchedule::for_device("box-1"),
            CrlSchedule::for_device("box-1")
        );
    }

    #[test]
    fn weekly_after_a_new_crl_daily_after_a_failure_or_the_same_crl() {
        let s = CrlSchedule::for_device("box-1");
        let now = time::macros::datetime!(2026-11-23 01:00 UTC);
        let first = s.first(now);
        assert_eq!(first.date(), now.date());
        assert_eq!(s.next(first, Outcome::NewCrl) - first, Duration::days(7));
        assert_eq!(s.next(first, Outcome::Failed) - first, Duration::days(1));
        // Past today's slot: tomorrow.
        let late = time::macros::datetime!(2026-11-23 23:00 UTC);
        assert_eq!(s.first(late).date(), late.date().next_day().expect("day"));
    }

    #[test]
    fn alert_before_the_crl_expires_only_while_failing() {
        let now = time::macros::datetime!(2026-11-23 12:00 UTC);
        let soon = now + Duration::days(1);
        let later = now + Duration::days(6);
        assert!(alert_due(Outcome::Failed, soon, now));
        assert!(!alert_due(Outcome::Failed, later, now));
        assert!(!alert_due(Outcome::NewCrl, soon, now));
    }
}
