//! Short, human names for the API's enums and times in table output ("RUNNING", not
//! "CHANGE_REQUEST_STATE_RUNNING").

use tablecrypt_proto::v1 as pb;

fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_owned()
}

pub fn mode(value: i32) -> String {
    pb::EncryptionMode::try_from(value).map_or_else(
        |_| value.to_string(),
        |m| short(m.as_str_name(), "ENCRYPTION_MODE_"),
    )
}

pub fn request_state(value: i32) -> String {
    pb::ChangeRequestState::try_from(value).map_or_else(
        |_| value.to_string(),
        |s| short(s.as_str_name(), "CHANGE_REQUEST_STATE_"),
    )
}

pub fn item_state(value: i32) -> String {
    pb::ChangeItemState::try_from(value).map_or_else(
        |_| value.to_string(),
        |s| short(s.as_str_name(), "CHANGE_ITEM_STATE_"),
    )
}

pub fn action(value: i32) -> String {
    pb::PlanAction::try_from(value).map_or_else(
        |_| value.to_string(),
        |a| short(a.as_str_name(), "PLAN_ACTION_"),
    )
}

/// Empty for "no reason".
pub fn reason(value: i32) -> String {
    match pb::ItemReason::try_from(value) {
        Ok(pb::ItemReason::Unspecified) => String::new(),
        Ok(r) => short(r.as_str_name(), "ITEM_REASON_"),
        Err(_) => value.to_string(),
    }
}

/// How an UpdateTable's one concern is named in AWS's API: SSESpecification or ReplicaUpdates.
pub fn update_concern(value: i32) -> String {
    match pb::UpdateConcern::try_from(value) {
        Ok(pb::UpdateConcern::Sse | pb::UpdateConcern::ReplicaSse) => "SSESpecification".into(),
        Ok(pb::UpdateConcern::ReplicaKeys) => "ReplicaUpdates".into(),
        _ => value.to_string(),
    }
}

pub fn failure(failure: Option<&pb::AwsFailure>) -> String {
    failure.map_or_else(String::new, |f| {
        let kind = pb::FailureKind::try_from(f.kind).map_or_else(
            |_| f.kind.to_string(),
            |k| short(k.as_str_name(), "FAILURE_KIND_"),
        );
        if f.code.is_empty() {
            format!("{kind}: {}", f.message)
        } else {
            format!("{kind} {}: {}", f.code, f.message)
        }
    })
}

/// A mode and key as one cell: the key ARN for customer managed keys, else the mode.
pub fn encryption(mode_value: i32, key_arn: &str) -> String {
    if key_arn.is_empty() {
        mode(mode_value)
    } else {
        key_arn.to_owned()
    }
}

/// RFC 3339 to the second, or "-".
pub fn time(timestamp: Option<&prost_types::Timestamp>) -> String {
    timestamp
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map_or_else(
            || "-".to_owned(),
            |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
}

/// The terminal item states: nothing more will happen to the table.
pub fn item_is_done(state: i32) -> bool {
    matches!(
        pb::ChangeItemState::try_from(state),
        Ok(pb::ChangeItemState::Succeeded
            | pb::ChangeItemState::Failed
            | pb::ChangeItemState::Skipped
            | pb::ChangeItemState::Blocked
            | pb::ChangeItemState::Cancelled)
    )
}

pub fn request_is_done(state: i32) -> bool {
    matches!(
        pb::ChangeRequestState::try_from(state),
        Ok(pb::ChangeRequestState::Succeeded
            | pb::ChangeRequestState::PartiallyFailed
            | pb::ChangeRequestState::Failed
            | pb::ChangeRequestState::Cancelled)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_names_lose_their_prefix() {
        assert_eq!(mode(pb::EncryptionMode::AwsOwned as i32), "AWS_OWNED");
        assert_eq!(
            request_state(pb::ChangeRequestState::PartiallyFailed as i32),
            "PARTIALLY_FAILED"
        );
        assert_eq!(reason(pb::ItemReason::KeyDisabled as i32), "KEY_DISABLED");
        assert_eq!(reason(0), "");
        assert_eq!(mode(99), "99");
    }
}
