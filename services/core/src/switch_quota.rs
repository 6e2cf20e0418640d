//! DynamoDB's limit on encryption switches per table, computed from our own history.
//!
//! AWS (DynamoDB service quotas, "Encryption at rest"): a table's encryption key can be switched 4 times in any
//! rolling 24 hours; after that, one more switch is allowed only if there was none in the past 6 hours.
//! Switching to the AWS owned key is always allowed.

use chrono::{DateTime, Duration, Utc};

use crate::table::EncryptionMode;

/// Switches allowed in any rolling 24 hours.
pub const SWITCHES_PER_DAY: usize = 4;
/// With the daily allowance used up, a switch is still allowed after this many quiet hours.
pub const QUIET_HOURS: i64 = 6;

/// When the next switch of a table to `target` is allowed: `None` if now, else the instant the quota frees.
/// `switches` are the times of the table's past switches (any order).
pub fn next_switch_allowed(
    target: EncryptionMode,
    switches: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if target == EncryptionMode::AwsOwned {
        return None;
    }
    let day_ago = now - Duration::hours(24);
    let mut recent: Vec<DateTime<Utc>> =
        switches.iter().copied().filter(|t| *t > day_ago).collect();
    if recent.len() < SWITCHES_PER_DAY {
        return None;
    }
    recent.sort();
    let last = *recent.last()?;
    let quiet_from = last + Duration::hours(QUIET_HOURS);
    if quiet_from <= now {
        return None;
    }
    // Either enough switches age out of the 24 h window, or the table stays quiet for 6 h: whichever is first.
    let ages_out = recent[recent.len() - SWITCHES_PER_DAY] + Duration::hours(24);
    Some(quiet_from.min(ages_out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hours: f64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000, 0).expect("a valid instant")
            + Duration::milliseconds((hours * 3_600_000.0) as i64)
    }

    #[test]
    fn four_switches_a_day_are_allowed() {
        let now = at(10.0);
        for n in 0..4 {
            let past: Vec<_> = (0..n).map(|i| at(i as f64)).collect();
            assert_eq!(
                next_switch_allowed(EncryptionMode::CustomerManaged, &past, now),
                None
            );
        }
    }

    #[test]
    fn the_fifth_waits_for_six_quiet_hours() {
        let past = [at(0.0), at(1.0), at(2.0), at(3.0)];
        assert_eq!(
            next_switch_allowed(EncryptionMode::AwsManaged, &past, at(4.0)),
            Some(at(9.0))
        );
        assert_eq!(
            next_switch_allowed(EncryptionMode::AwsManaged, &past, at(9.0)),
            None
        );
    }

    #[test]
    fn switches_older_than_a_day_do_not_count() {
        let past = [at(0.0), at(20.0), at(21.0), at(22.0)];
        assert_eq!(
            next_switch_allowed(EncryptionMode::CustomerManaged, &past, at(24.5)),
            None
        );
    }

    #[test]
    fn the_window_can_free_before_the_quiet_period() {
        // Four switches, the oldest 23.5 h ago, the newest 1 h ago: the oldest leaves the window first.
        let past = [at(0.0), at(21.0), at(22.0), at(22.5)];
        assert_eq!(
            next_switch_allowed(EncryptionMode::CustomerManaged, &past, at(23.5)),
            Some(at(24.0))
        );
    }

    #[test]
    fn owned_is_always_allowed() {
        let past = [at(0.0), at(0.1), at(0.2), at(0.3), at(0.4)];
        assert_eq!(
            next_switch_allowed(EncryptionMode::AwsOwned, &past, at(0.5)),
            None
        );
    }
}
