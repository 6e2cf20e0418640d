//! Per-account overrides of the change workers' limits: an account the service's defaults do not fit (a
//! sandbox that may go faster, a production account with its own automation competing for the same AWS quota)
//! gets its own. A change request may still only lower what applies.

use std::fmt;
use std::time::Duration;

use crate::validation::{InvalidValue, ValidationErrors};

/// AWS allows 500 tables updating at once per account-region.
pub const AWS_MAX_TABLES_IN_FLIGHT: u32 = 500;

/// The highest per-second rate an override may name; far above any DynamoDB control-plane quota.
pub const MAX_RATE_PER_SECOND: f64 = 1_000.0;

/// The lowest rate any limit may name: one call every 100 seconds. A request's or an account's pace below this is
/// not a slow migration but a freeze (1e-300 would space calls 10^292 years apart), so it is refused.
pub const MIN_RATE_PER_SECOND: f64 = 0.01;

/// The range of an account's settle timeout: at least a second (an emulator shows a change at once); at most the
/// switch quota's day, since every re-send after it may spend one of the table's 4 daily switches.
pub const MIN_SETTLE_TIMEOUT: Duration = Duration::from_secs(1);
pub const MAX_SETTLE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// A finite rate in calls per second, from [`MIN_RATE_PER_SECOND`] to [`MAX_RATE_PER_SECOND`].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct PerSecond(f64);

// Only finite values are ever built, so equality is total.
impl Eq for PerSecond {}

impl PerSecond {
    pub fn parse(value: f64) -> Result<Self, InvalidValue> {
        if !value.is_finite() || value <= 0.0 {
            return Err(InvalidValue::new(format!(
                "must be a positive number of calls per second, got {value}"
            )));
        }
        if value < MIN_RATE_PER_SECOND {
            return Err(InvalidValue::new(format!(
                "must be at least {MIN_RATE_PER_SECOND} calls per second (one every 100 s), got {value}"
            )));
        }
        if value > MAX_RATE_PER_SECOND {
            return Err(InvalidValue::new(format!(
                "must be at most {MAX_RATE_PER_SECOND} calls per second, got {value}"
            )));
        }
        Ok(Self(value))
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl fmt::Display for PerSecond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", self.0)
    }
}

/// What an account overrides; `None` keeps the service's default. Applies to each region of the account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountLimits {
    /// UpdateTable calls per second per account-region (all replicas together).
    pub update_rate: Option<PerSecond>,
    /// DescribeTable polls per second per account-region while waiting for updates.
    pub poll_rate: Option<PerSecond>,
    /// Tables updating at once per account-region, 1 to 500.
    pub max_tables_in_flight: Option<u32>,
    /// After AWS accepted an UpdateTable, how long the table may show no sign of it before it is sent again: an
    /// account whose AWS shows changes late (or an emulator that shows them at once) gets its own.
    pub settle_timeout: Option<Duration>,
}

impl AccountLimits {
    /// From raw values where 0 means "no override". Field paths are the proto's (`update_rate_per_second`, ...).
    pub fn from_raw(
        update_rate: f64,
        poll_rate: f64,
        max_tables_in_flight: i64,
        settle_timeout_seconds: f64,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let rate = |errors: &mut ValidationErrors, field: &str, value: f64| {
            if value == 0.0 {
                None
            } else {
                errors.check(field, PerSecond::parse(value))
            }
        };
        let update_rate = rate(&mut errors, "update_rate_per_second", update_rate);
        let poll_rate = rate(&mut errors, "poll_rate_per_second", poll_rate);
        let max_tables_in_flight = match max_tables_in_flight {
            0 => None,
            n if (1..=i64::from(AWS_MAX_TABLES_IN_FLIGHT)).contains(&n) => Some(n as u32),
            n => {
                errors.add(
                    "max_tables_in_flight",
                    format!("must be 0 (the service default) or 1 to {AWS_MAX_TABLES_IN_FLIGHT} (AWS's limit), got {n}"),
                );
                None
            }
        };
        let settle_timeout = if settle_timeout_seconds == 0.0 {
            None
        } else {
            let range = MIN_SETTLE_TIMEOUT.as_secs_f64()..=MAX_SETTLE_TIMEOUT.as_secs_f64();
            if range.contains(&settle_timeout_seconds) {
                Some(Duration::from_secs_f64(settle_timeout_seconds))
            } else {
                errors.add(
                    "settle_timeout",
                    format!(
                        "must be unset (the service's worker_settle_timeout) or 1s to 24h, got {settle_timeout_seconds}s"
                    ),
                );
                None
            }
        };
        errors.into_result(|| Self {
            update_rate,
            poll_rate,
            max_tables_in_flight,
            settle_timeout,
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_the_default() {
        assert!(
            AccountLimits::from_raw(0.0, 0.0, 0, 0.0)
                .expect("valid")
                .is_empty()
        );
        let limits = AccountLimits::from_raw(2.5, 10.0, 500, 60.0).expect("valid");
        assert_eq!(limits.update_rate.map(PerSecond::get), Some(2.5));
        assert_eq!(limits.max_tables_in_flight, Some(500));
        assert_eq!(limits.settle_timeout, Some(Duration::from_secs(60)));
    }

    #[test]
    fn every_bad_field_is_named() {
        let err = AccountLimits::from_raw(-1.0, f64::NAN, 501, 0.5).expect_err("invalid");
        let fields: Vec<&str> = err.violations().iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "update_rate_per_second",
                "poll_rate_per_second",
                "max_tables_in_flight",
                "settle_timeout"
            ]
        );
        assert!(AccountLimits::from_raw(1001.0, 0.0, 0, 0.0).is_err());
        assert!(
            AccountLimits::from_raw(1e-300, 0.0, 0, 0.0).is_err(),
            "a freeze, not a pace"
        );
        assert!(AccountLimits::from_raw(0.0, 0.009, 0, 0.0).is_err());
        assert!(AccountLimits::from_raw(MIN_RATE_PER_SECOND, 0.0, 0, 0.0).is_ok());
        assert!(AccountLimits::from_raw(0.0, 0.0, -3, 0.0).is_err());
        for bad in [-1.0, 0.999, 86_401.0, f64::NAN, f64::INFINITY] {
            assert!(AccountLimits::from_raw(0.0, 0.0, 0, bad).is_err(), "{bad}");
        }
        let limits = AccountLimits::from_raw(0.0, 0.0, 0, 86_400.0).expect("a day");
        assert_eq!(limits.settle_timeout, Some(MAX_SETTLE_TIMEOUT));
    }
}
