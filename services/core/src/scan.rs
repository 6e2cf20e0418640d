//! Inventory scans as typed values: a scan of some account-regions, and how each of them went.

use std::fmt;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::failure::FailureKind;
use crate::{AccountId, Region};

/// Where a scan stands: RUNNING until every account-region has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanState {
    Running,
    Succeeded,
    PartiallyFailed,
    Failed,
}

impl ScanState {
    pub const ALL: [Self; 4] = [
        Self::Running,
        Self::Succeeded,
        Self::PartiallyFailed,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::PartiallyFailed => "PARTIALLY_FAILED",
            Self::Failed => "FAILED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

impl fmt::Display for ScanState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one account-region of a scan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanTargetState {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl ScanTargetState {
    pub const ALL: [Self; 4] = [Self::Pending, Self::Running, Self::Succeeded, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    pub fn is_done(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// How one account-region of a scan went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanTargetStatus {
    pub account_id: AccountId,
    pub region: Region,
    pub state: ScanTargetState,
    pub tables_seen: i32,
    pub tables_gone: i32,
    /// Why it failed, classified, with AWS's message.
    pub failure: Option<(FailureKind, String)>,
}

/// A scan and its account-regions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryScan {
    pub scan_id: Uuid,
    pub state: ScanState,
    pub create_time: DateTime<Utc>,
    pub finish_time: Option<DateTime<Utc>>,
    pub targets: Vec<ScanTargetStatus>,
}

impl InventoryScan {
    /// Account-regions that have ended, well or not.
    pub fn targets_done(&self) -> usize {
        self.targets.iter().filter(|t| t.state.is_done()).count()
    }

    /// Account-regions that failed; one whose region the account cannot use (REGION_UNAVAILABLE) had nothing to
    /// scan and is not counted.
    pub fn targets_failed(&self) -> usize {
        self.targets
            .iter()
            .filter(|t| {
                t.state == ScanTargetState::Failed
                    && !matches!(t.failure, Some((FailureKind::RegionUnavailable, _)))
            })
            .count()
    }

    pub fn tables_seen(&self) -> i64 {
        self.targets.iter().map(|t| i64::from(t.tables_seen)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_a_scan_counts_its_targets() {
        for s in ScanState::ALL {
            assert_eq!(ScanState::parse(s.as_str()), Some(s));
        }
        for s in ScanTargetState::ALL {
            assert_eq!(ScanTargetState::parse(s.as_str()), Some(s));
        }
        let target = |state, seen| ScanTargetStatus {
            account_id: AccountId::parse("111111111111").expect("id"),
            region: Region::parse("eu-west-1").expect("region"),
            state,
            tables_seen: seen,
            tables_gone: 0,
            failure: None,
        };
        let scan = InventoryScan {
            scan_id: Uuid::nil(),
            state: ScanState::Running,
            create_time: DateTime::<Utc>::from_timestamp(0, 0).expect("time"),
            finish_time: None,
            targets: vec![
                target(ScanTargetState::Succeeded, 3),
                target(ScanTargetState::Failed, 1),
                target(ScanTargetState::Running, 0),
                target(ScanTargetState::Pending, 0),
            ],
        };
        assert_eq!((scan.targets_done(), scan.targets_failed()), (2, 1));
        assert_eq!(scan.tables_seen(), 4);
    }
}
