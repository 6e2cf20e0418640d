//! The one map from a failed AWS call to the reason an item records, used by the planner and the workers alike.
//!
//! Decided once for both: a role that cannot be assumed is `ACCOUNT_UNREACHABLE` (nothing in the account can be
//! done); a role that was assumed but is refused one call is `ACCESS_DENIED` (the role lacks a permission, which
//! the message names). The planner used to call both unreachable and the workers both denied.

use crate::change::ItemReason;
use crate::failure::FailureKind;

/// Which AWS call failed: a `NotFound` means the key for DescribeKey, the table otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsCall {
    /// The account's first call in a region (GetCallerIdentity, the AWS managed key's alias): any failure means
    /// the account-region cannot be reached.
    Reach,
    DescribeTable,
    DescribeKey,
    UpdateTable,
}

/// The reason an item records when `call` failed with `kind`. `role_refused`: the failure was AssumeRole's (the
/// role's trust policy or external id), not the call's. `message` is AWS's text, which tells a key's problems
/// apart.
pub fn failure_reason(
    call: AwsCall,
    kind: FailureKind,
    role_refused: bool,
    message: &str,
) -> ItemReason {
    if role_refused || call == AwsCall::Reach {
        return ItemReason::AccountUnreachable;
    }
    match kind {
        FailureKind::AccessDenied => ItemReason::AccessDenied,
        FailureKind::NotFound if call == AwsCall::DescribeKey => ItemReason::KeyMissing,
        FailureKind::NotFound => ItemReason::TableNotFound,
        FailureKind::InvalidKey => invalid_key_reason(message),
        FailureKind::Throttled
        | FailureKind::Transient
        | FailureKind::InUse
        | FailureKind::QuotaExceeded => ItemReason::Throttled,
        FailureKind::Unknown => ItemReason::AwsError,
        // The table's region cannot be reached in its account (not enabled, or denied by an SCP).
        FailureKind::RegionUnavailable => ItemReason::AccountUnreachable,
    }
}

/// Whether an item that failed for `reason` is tried again later rather than failed: only AWS's passing
/// refusals (throttling, a busy table, a 5xx) are.
pub fn is_passing(reason: ItemReason) -> bool {
    matches!(reason, ItemReason::Throttled)
}

/// Which key problem AWS's message describes.
fn invalid_key_reason(message: &str) -> ItemReason {
    let lower = message.to_ascii_lowercase();
    if lower.contains("pending deletion") || lower.contains("pendingdeletion") {
        ItemReason::KeyPendingDeletion
    } else if lower.contains("disabled") {
        ItemReason::KeyDisabled
    } else if lower.contains("not found") || lower.contains("does not exist") {
        ItemReason::KeyMissing
    } else if lower.contains("symmetric") {
        ItemReason::KeyAsymmetric
    } else {
        ItemReason::AwsError
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use AwsCall::*;
    use FailureKind as K;
    use ItemReason as R;

    #[test]
    fn every_failure_maps_to_one_reason() {
        let cases = [
            (Reach, K::Transient, false, "", R::AccountUnreachable),
            (
                DescribeTable,
                K::AccessDenied,
                true,
                "",
                R::AccountUnreachable,
            ),
            (
                UpdateTable,
                K::AccessDenied,
                true,
                "",
                R::AccountUnreachable,
            ),
            (DescribeTable, K::AccessDenied, false, "", R::AccessDenied),
            (DescribeKey, K::AccessDenied, false, "", R::AccessDenied),
            (UpdateTable, K::AccessDenied, false, "", R::AccessDenied),
            (DescribeKey, K::NotFound, false, "", R::KeyMissing),
            (DescribeTable, K::NotFound, false, "", R::TableNotFound),
            (UpdateTable, K::NotFound, false, "", R::TableNotFound),
            (UpdateTable, K::Throttled, false, "", R::Throttled),
            (UpdateTable, K::Transient, false, "", R::Throttled),
            (UpdateTable, K::InUse, false, "", R::Throttled),
            (UpdateTable, K::QuotaExceeded, false, "", R::Throttled),
            (UpdateTable, K::Unknown, false, "", R::AwsError),
            (
                UpdateTable,
                K::InvalidKey,
                false,
                "key is pending deletion",
                R::KeyPendingDeletion,
            ),
            (
                UpdateTable,
                K::InvalidKey,
                false,
                "KMS key is disabled",
                R::KeyDisabled,
            ),
            (
                UpdateTable,
                K::InvalidKey,
                false,
                "key does not exist",
                R::KeyMissing,
            ),
            (
                UpdateTable,
                K::InvalidKey,
                false,
                "key must be symmetric",
                R::KeyAsymmetric,
            ),
            (
                UpdateTable,
                K::InvalidKey,
                false,
                "KMSMasterKeyId is odd",
                R::AwsError,
            ),
        ];
        for (call, kind, refused, message, want) in cases {
            assert_eq!(
                failure_reason(call, kind, refused, message),
                want,
                "{call:?} {kind} refused={refused} {message:?}"
            );
        }
    }

    #[test]
    fn only_passing_refusals_are_retried() {
        for reason in ItemReason::ALL {
            assert_eq!(is_passing(reason), reason == R::Throttled, "{reason}");
        }
    }
}
