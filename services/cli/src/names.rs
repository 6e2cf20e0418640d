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

/// A change's target as the caller gave it: the mode, or the key (ARN, id or alias) as written.
pub fn target(mode_value: i32, kms_key: &str) -> String {
    if kms_key.is_empty() {
        mode(mode_value)
    } else {
        kms_key.to_owned()
    }
}

/// Key ARN -> an alias of the key, as answers carry them (`key_aliases`).
pub type KeyAliases = std::collections::HashMap<String, String>;

/// How long a key id is shown when no alias is known: enough to tell a fleet's keys apart.
const SHORT_KEY_ID: usize = 8;
/// The longest alias shown in a table cell (AWS allows 256 characters; -o wide shows all).
const SHORT_ALIAS: usize = 24;

/// `text` cut to `max` characters, an ellipsis marking the cut.
pub fn shortened(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!(
            "{}…",
            text.chars().take(max.saturating_sub(1)).collect::<String>()
        )
    }
}

/// A table's encryption as a person reads it: the mode for AWS owned (no key); else the key's alias when one is
/// known, or its short id (`key/1234abcd…`), keeping columns narrow; with `wide`, the alias and the full ARN.
pub fn encryption(mode_value: i32, key_arn: &str, aliases: &KeyAliases, wide: bool) -> String {
    if key_arn.is_empty() {
        return mode(mode_value);
    }
    let alias = aliases.get(key_arn);
    if wide {
        return match alias {
            Some(alias) => format!("{alias} {key_arn}"),
            None => key_arn.to_owned(),
        };
    }
    if let Some(alias) = alias {
        return shortened(alias, SHORT_ALIAS);
    }
    if mode_value == pb::EncryptionMode::AwsManaged as i32 {
        return mode(mode_value);
    }
    match key_arn.rsplit_once(":key/") {
        Some((_, id)) => {
            // A multi-Region key's id starts with mrk-: keep the part that tells keys apart.
            let (prefix, unique) = id.strip_prefix("mrk-").map_or(("", id), |u| ("mrk-", u));
            if unique.chars().count() > SHORT_KEY_ID {
                format!(
                    "key/{prefix}{}…",
                    unique.chars().take(SHORT_KEY_ID).collect::<String>()
                )
            } else {
                format!("key/{id}")
            }
        }
        None => key_arn.to_owned(),
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
    fn keys_read_by_alias_or_short_id_and_in_full_when_wide() {
        let arn = "arn:aws:kms:eu-west-1:111111111111:key/aaaaaaaa-1111-4111-8111-111111111111";
        let other = "arn:aws:kms:eu-west-1:111111111111:key/bbbbbbbb-1111-4111-8111-111111111111";
        let aliases = KeyAliases::from([(arn.to_owned(), "alias/payments-a".to_owned())]);
        let cmk = pb::EncryptionMode::CustomerManaged as i32;
        assert_eq!(encryption(cmk, arn, &aliases, false), "alias/payments-a");
        assert_eq!(encryption(cmk, other, &aliases, false), "key/bbbbbbbb…");
        assert_eq!(
            encryption(cmk, arn, &aliases, true),
            format!("alias/payments-a {arn}")
        );
        assert_eq!(encryption(cmk, other, &aliases, true), other);
        let owned = pb::EncryptionMode::AwsOwned as i32;
        assert_eq!(encryption(owned, "", &aliases, false), "AWS_OWNED");
        let managed = pb::EncryptionMode::AwsManaged as i32;
        assert_eq!(encryption(managed, other, &aliases, false), "AWS_MANAGED");
        let mrk = "arn:aws:kms:eu-west-1:111111111111:key/mrk-1234abcd5678ef901234abcd5678ef90";
        assert_eq!(encryption(cmk, mrk, &aliases, false), "key/mrk-1234abcd…");
        let long = KeyAliases::from([(arn.to_owned(), format!("alias/{}", "x".repeat(80)))]);
        assert_eq!(
            encryption(cmk, arn, &long, false).chars().count(),
            SHORT_ALIAS
        );
    }

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
