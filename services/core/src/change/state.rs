//! The state machines of change requests and items, and the reasons an item cannot (or did not) change.

use std::fmt;

/// Where a change request stands.
///
/// `PENDING_APPROVAL? -> QUEUED -> RUNNING <-> PAUSED -> SUCCEEDED | PARTIALLY_FAILED | FAILED`, and
/// `-> CANCELLING -> CANCELLED` from any live state (in-flight items finish and are recorded first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestState {
    PendingApproval,
    Queued,
    Running,
    Paused,
    Cancelling,
    Succeeded,
    PartiallyFailed,
    Failed,
    Cancelled,
}

impl RequestState {
    pub const ALL: [Self; 9] = [
        Self::PendingApproval,
        Self::Queued,
        Self::Running,
        Self::Paused,
        Self::Cancelling,
        Self::Succeeded,
        Self::PartiallyFailed,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingApproval => "PENDING_APPROVAL",
            Self::Queued => "QUEUED",
            Self::Running => "RUNNING",
            Self::Paused => "PAUSED",
            Self::Cancelling => "CANCELLING",
            Self::Succeeded => "SUCCEEDED",
            Self::PartiallyFailed => "PARTIALLY_FAILED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Nothing more will happen to a request in a terminal state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::PartiallyFailed | Self::Failed | Self::Cancelled
        )
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one table's change stands.
///
/// `PENDING -> APPLYING -> WAITING -> SUCCEEDED | FAILED`; `-> DEFERRED -> PENDING` when a quota or throttling
/// pushes it later; `SKIPPED` (already compliant) and `BLOCKED` (cannot be done, with a reason) are decided when
/// planning; `CANCELLED` when the request is cancelled before the item was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemState {
    Pending,
    Applying,
    Waiting,
    Deferred,
    Succeeded,
    Failed,
    Skipped,
    Blocked,
    Cancelled,
}

impl ItemState {
    pub const ALL: [Self; 9] = [
        Self::Pending,
        Self::Applying,
        Self::Waiting,
        Self::Deferred,
        Self::Succeeded,
        Self::Failed,
        Self::Skipped,
        Self::Blocked,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Applying => "APPLYING",
            Self::Waiting => "WAITING",
            Self::Deferred => "DEFERRED",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Skipped => "SKIPPED",
            Self::Blocked => "BLOCKED",
            Self::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

impl fmt::Display for ItemState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an item is blocked, deferred or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemReason {
    /// The target key does not exist in the table's account-region.
    KeyMissing,
    KeyDisabled,
    KeyPendingDeletion,
    /// DynamoDB needs a symmetric ENCRYPT_DECRYPT key.
    KeyAsymmetric,
    KeyInOtherRegion,
    KeyInOtherAccount,
    /// The table's encryption changed 4 times in 24 h (and once in the last 6 h): wait for the window.
    SwitchQuotaExhausted,
    /// A global table whose replicas can't all be given a key of the target kind.
    GlobalTableNotCovered,
    TableNotActive,
    /// The table's current key is unusable (INACCESSIBLE_ENCRYPTION_CREDENTIALS).
    TableInaccessible,
    TableNotFound,
    /// AssumeRole or the first call in the account-region failed.
    AccountUnreachable,
    /// AWS refused the call for lack of permission.
    AccessDenied,
    /// Too many tables UPDATING in the account-region (AWS allows 500), or throttled: retried later.
    Throttled,
    /// Any other error, with AWS's message.
    AwsError,
    /// DynamoDB archived the table (ARCHIVING / ARCHIVED, after 7 days inaccessible): restore it first.
    TableArchived,
    /// The table's current customer managed key is disabled or pending deletion: DynamoDB cannot re-encrypt away
    /// from it until it is enabled again.
    CurrentKeyUnusable,
    /// The table belongs to infrastructure as code (its tags say so), whose next apply would revert the change:
    /// change the template first, or ask for `include_iac_owned`.
    IacOwned,
}

impl ItemReason {
    pub const ALL: [Self; 18] = [
        Self::KeyMissing,
        Self::KeyDisabled,
        Self::KeyPendingDeletion,
        Self::KeyAsymmetric,
        Self::KeyInOtherRegion,
        Self::KeyInOtherAccount,
        Self::SwitchQuotaExhausted,
        Self::GlobalTableNotCovered,
        Self::TableNotActive,
        Self::TableInaccessible,
        Self::TableNotFound,
        Self::AccountUnreachable,
        Self::AccessDenied,
        Self::Throttled,
        Self::AwsError,
        Self::TableArchived,
        Self::CurrentKeyUnusable,
        Self::IacOwned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeyMissing => "KEY_MISSING",
            Self::KeyDisabled => "KEY_DISABLED",
            Self::KeyPendingDeletion => "KEY_PENDING_DELETION",
            Self::KeyAsymmetric => "KEY_ASYMMETRIC",
            Self::KeyInOtherRegion => "KEY_IN_OTHER_REGION",
            Self::KeyInOtherAccount => "KEY_IN_OTHER_ACCOUNT",
            Self::SwitchQuotaExhausted => "SWITCH_QUOTA_EXHAUSTED",
            Self::GlobalTableNotCovered => "GLOBAL_TABLE_NOT_COVERED",
            Self::TableNotActive => "TABLE_NOT_ACTIVE",
            Self::TableInaccessible => "TABLE_INACCESSIBLE",
            Self::TableNotFound => "TABLE_NOT_FOUND",
            Self::AccountUnreachable => "ACCOUNT_UNREACHABLE",
            Self::AccessDenied => "ACCESS_DENIED",
            Self::Throttled => "THROTTLED",
            Self::AwsError => "AWS_ERROR",
            Self::TableArchived => "TABLE_ARCHIVED",
            Self::CurrentKeyUnusable => "CURRENT_KEY_UNUSABLE",
            Self::IacOwned => "IAC_OWNED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

impl fmt::Display for ItemReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What planning decided for one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanAction {
    Change,
    Skip,
    Blocked,
}

impl PlanAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Change => "CHANGE",
            Self::Skip => "SKIP",
            Self::Blocked => "BLOCKED",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_reasons_round_trip_through_their_names() {
        for s in RequestState::ALL {
            assert_eq!(RequestState::parse(s.as_str()), Some(s));
        }
        for s in ItemState::ALL {
            assert_eq!(ItemState::parse(s.as_str()), Some(s));
        }
        for r in ItemReason::ALL {
            assert_eq!(ItemReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(RequestState::parse("running"), None);
    }
}
