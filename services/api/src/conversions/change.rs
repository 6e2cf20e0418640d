//! Change requests, items and key-rotation history: stored records and plans to proto, proto filters in.
//!
//! The proto enums list their values in the same order as the domain's `ALL` arrays (value = index + 1), which
//! `enum_order_matches_the_proto` checks.

use serde_json::{Value, json};
use tablecrypt_core::{
    EncryptionMode, InvalidValue, ItemReason, ItemState, PlanAction, RequestState,
};
use tablecrypt_engine::PlannedItem;
use tablecrypt_proto::v1 as pb;
use tablecrypt_store::{ChangeItemRecord, ChangeRequestRecord, ItemCounts, KeyRotationRecord};

use super::inventory::mode_to_proto;
use super::timestamp::to_proto as ts;

fn index_value<T: PartialEq>(all: &[T], value: &T) -> i32 {
    all.iter()
        .position(|v| v == value)
        .map_or(0, |i| i32::try_from(i + 1).unwrap_or(0))
}

fn mode_value(text: &str) -> i32 {
    EncryptionMode::parse(text).map_or(0, |m| mode_to_proto(m) as i32)
}

pub fn request_state_value(state: &str) -> i32 {
    RequestState::parse(state).map_or(0, |s| index_value(&RequestState::ALL, &s))
}

pub fn item_state_value(state: &str) -> i32 {
    ItemState::parse(state).map_or(0, |s| index_value(&ItemState::ALL, &s))
}

pub fn reason_value(reason: Option<&str>) -> i32 {
    reason
        .and_then(ItemReason::parse)
        .map_or(0, |r| index_value(&ItemReason::ALL, &r))
}

/// A `ChangeRequestState` filter value, as stored.
pub fn request_state_from_proto(value: i32) -> Result<&'static str, InvalidValue> {
    usize::try_from(value - 1)
        .ok()
        .and_then(|i| RequestState::ALL.get(i))
        .map(|s| s.as_str())
        .ok_or_else(|| InvalidValue::new(format!("{value} is not a ChangeRequestState")))
}

/// A `ChangeItemState` filter value, as stored.
pub fn item_state_from_proto(value: i32) -> Result<&'static str, InvalidValue> {
    usize::try_from(value - 1)
        .ok()
        .and_then(|i| ItemState::ALL.get(i))
        .map(|s| s.as_str())
        .ok_or_else(|| InvalidValue::new(format!("{value} is not a ChangeItemState")))
}

pub fn counts_to_proto(counts: &ItemCounts) -> pb::ItemCounts {
    let n = |state: ItemState| i32::try_from(counts.get(state.as_str())).unwrap_or(i32::MAX);
    pb::ItemCounts {
        pending: n(ItemState::Pending),
        applying: n(ItemState::Applying),
        waiting: n(ItemState::Waiting),
        deferred: n(ItemState::Deferred),
        succeeded: n(ItemState::Succeeded),
        failed: n(ItemState::Failed),
        skipped: n(ItemState::Skipped),
        blocked: n(ItemState::Blocked),
        cancelled: n(ItemState::Cancelled),
        total: i32::try_from(counts.total()).unwrap_or(i32::MAX),
    }
}

/// The targets as stored with the request (`{"tables": [...]}` or `{"selector": {...}}`).
pub fn targets_to_json(
    tables: Option<&pb::TableList>,
    selector: Option<&pb::TableSelector>,
) -> Value {
    match (tables, selector) {
        (Some(list), _) => json!({
            "tables": list.tables.iter().map(|t| json!({
                "account_id": t.account_id, "region": t.region, "table_name": t.table_name,
            })).collect::<Vec<_>>()
        }),
        (None, Some(s)) => json!({
            "selector": {
                "account_ids": s.account_ids,
                "account_label_selector": s.account_label_selector,
                "regions": s.regions,
                "current_mode": s.current_mode,
                "current_kms_key": s.current_kms_key,
                "table_name_prefix": s.table_name_prefix,
            }
        }),
        (None, None) => json!({}),
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

fn text(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

pub fn targets_from_json(value: &Value) -> (Option<pb::TableList>, Option<pb::TableSelector>) {
    if let Some(tables) = value.get("tables").and_then(Value::as_array) {
        let tables = tables
            .iter()
            .map(|t| pb::TableRef {
                account_id: text(t, "account_id"),
                region: text(t, "region"),
                table_name: text(t, "table_name"),
            })
            .collect();
        return (Some(pb::TableList { tables }), None);
    }
    if let Some(s) = value.get("selector") {
        let selector = pb::TableSelector {
            account_ids: strings(&s["account_ids"]),
            account_label_selector: text(s, "account_label_selector"),
            regions: strings(&s["regions"]),
            current_mode: s["current_mode"]
                .as_i64()
                .and_then(|v| i32::try_from(v).ok())
                .unwrap_or(0),
            current_kms_key: text(s, "current_kms_key"),
            table_name_prefix: text(s, "table_name_prefix"),
        };
        return (None, Some(selector));
    }
    (None, None)
}

pub fn request_to_proto(record: &ChangeRequestRecord, counts: &ItemCounts) -> pb::ChangeRequest {
    let (tables, selector) = targets_from_json(&record.targets);
    pb::ChangeRequest {
        change_request_id: record.request_id.to_string(),
        state: request_state_value(&record.state),
        description: record.description.clone(),
        selector,
        tables,
        // A rollback has no single target: each item returns to its own earlier encryption.
        target: record
            .target_mode
            .as_deref()
            .map(|mode| pb::TargetEncryption {
                mode: mode_value(mode),
                kms_key: record.target_key.clone().unwrap_or_default(),
            }),
        options: Some(pb::ChangeOptions {
            max_updates_per_second: record.max_updates_per_second.unwrap_or(0.0),
            max_in_flight: record.max_in_flight.unwrap_or(0),
            failure_threshold: record.failure_threshold.unwrap_or(0),
            canary_count: record.canary_count,
        }),
        request_id: record.idempotency_key.clone().unwrap_or_default(),
        counts: Some(counts_to_proto(counts)),
        pause_reason: record.pause_reason.clone().unwrap_or_default(),
        rollback_of: record
            .rollback_of
            .map(|id| id.to_string())
            .unwrap_or_default(),
        created_by: record.created_by.clone(),
        approved_by: record.approved_by.clone().unwrap_or_default(),
        create_time: Some(ts(record.create_time)),
        approve_time: record.approve_time.map(ts),
        start_time: record.start_time.map(ts),
        finish_time: record.finish_time.map(ts),
        update_time: Some(ts(record.update_time)),
        canary_passed: record.canary_passed,
    }
}

fn replicas_from_json(value: &Value) -> Vec<pb::ReplicaChange> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| pb::ReplicaChange {
            region: text(r, "region"),
            from_kms_key_arn: text(r, "from_key_arn"),
            to_kms_key_arn: text(r, "to_key_arn"),
        })
        .collect()
}

/// Replicas as stored with an item.
pub fn replicas_to_json(item: &PlannedItem) -> Value {
    Value::Array(
        item.replicas
            .iter()
            .map(|r| json!({"region": r.region, "from_key_arn": r.from_key_arn, "to_key_arn": r.to_key_arn}))
            .collect(),
    )
}

pub fn item_to_proto(item: &ChangeItemRecord) -> pb::ChangeItem {
    let action = match item.state.as_str() {
        "BLOCKED" => pb::PlanAction::Blocked,
        "SKIPPED" => pb::PlanAction::Skip,
        _ => pb::PlanAction::Change,
    };
    pb::ChangeItem {
        item_id: item.item_id,
        change_request_id: item.request_id.to_string(),
        account_id: item.account_id.clone(),
        region: item.region.clone(),
        table_name: item.table_name.clone(),
        action: action as i32,
        state: item_state_value(&item.state),
        canary: item.canary,
        from_mode: mode_value(&item.from_mode),
        from_kms_key_arn: item.from_key_arn.clone().unwrap_or_default(),
        to_mode: mode_value(&item.to_mode),
        to_kms_key_arn: item.to_key_arn.clone().unwrap_or_default(),
        replicas: replicas_from_json(&item.replicas),
        reason: reason_value(item.reason.as_deref()),
        message: item.message.clone().unwrap_or_default(),
        attempts: item.attempts,
        next_attempt_time: Some(ts(item.next_attempt_time)),
        update_time: Some(ts(item.update_time)),
        finish_time: item.finish_time.map(ts),
    }
}

/// The state a planned item is stored in.
pub fn planned_state(item: &PlannedItem) -> ItemState {
    match item.action {
        PlanAction::Change => ItemState::Pending,
        PlanAction::Skip => ItemState::Skipped,
        PlanAction::Blocked => ItemState::Blocked,
    }
}

/// A planned (not stored) item, for validate_only.
pub fn planned_to_proto(item: &PlannedItem) -> pb::ChangeItem {
    let action = match item.action {
        PlanAction::Change => pb::PlanAction::Change,
        PlanAction::Skip => pb::PlanAction::Skip,
        PlanAction::Blocked => pb::PlanAction::Blocked,
    };
    pb::ChangeItem {
        account_id: item.account_id.to_string(),
        region: item.region.to_string(),
        table_name: item.table_name.to_string(),
        action: action as i32,
        state: index_value(&ItemState::ALL, &planned_state(item)),
        canary: item.canary,
        from_mode: mode_to_proto(item.from_mode) as i32,
        from_kms_key_arn: item.from_key_arn.clone().unwrap_or_default(),
        to_mode: mode_to_proto(item.to_mode) as i32,
        to_kms_key_arn: item.to_key_arn.clone().unwrap_or_default(),
        replicas: item
            .replicas
            .iter()
            .map(|r| pb::ReplicaChange {
                region: r.region.clone(),
                from_kms_key_arn: r.from_key_arn.clone().unwrap_or_default(),
                to_kms_key_arn: r.to_key_arn.clone().unwrap_or_default(),
            })
            .collect(),
        reason: reason_value(item.reason.map(ItemReason::as_str)),
        message: item.message.clone().unwrap_or_default(),
        next_attempt_time: item.frees_at.map(ts),
        ..Default::default()
    }
}

pub fn rotation_to_proto(row: &KeyRotationRecord) -> pb::KeyRotation {
    pb::KeyRotation {
        rotation_id: row.history_id,
        account_id: row.account_id.clone(),
        region: row.region.clone(),
        table_name: row.table_name.clone(),
        from_mode: mode_value(&row.from_mode),
        from_kms_key_arn: row.from_key_arn.clone().unwrap_or_default(),
        to_mode: mode_value(&row.to_mode),
        to_kms_key_arn: row.to_key_arn.clone().unwrap_or_default(),
        change_request_id: row.request_id.to_string(),
        item_id: row.item_id,
        requested_by: row.requested_by.clone(),
        approved_by: row.approved_by.clone().unwrap_or_default(),
        start_time: Some(ts(row.start_time)),
        finish_time: Some(ts(row.finish_time)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_order_matches_the_proto() {
        assert_eq!(
            request_state_value("PENDING_APPROVAL"),
            pb::ChangeRequestState::PendingApproval as i32
        );
        assert_eq!(
            request_state_value("CANCELLED"),
            pb::ChangeRequestState::Cancelled as i32
        );
        assert_eq!(
            request_state_value("PARTIALLY_FAILED"),
            pb::ChangeRequestState::PartiallyFailed as i32
        );
        assert_eq!(
            item_state_value("PENDING"),
            pb::ChangeItemState::Pending as i32
        );
        assert_eq!(
            item_state_value("CANCELLED"),
            pb::ChangeItemState::Cancelled as i32
        );
        assert_eq!(
            item_state_value("BLOCKED"),
            pb::ChangeItemState::Blocked as i32
        );
        assert_eq!(
            reason_value(Some("KEY_MISSING")),
            pb::ItemReason::KeyMissing as i32
        );
        assert_eq!(
            reason_value(Some("AWS_ERROR")),
            pb::ItemReason::AwsError as i32
        );
        assert_eq!(
            reason_value(Some("GLOBAL_TABLE_NOT_COVERED")),
            pb::ItemReason::GlobalTableNotCovered as i32
        );
        assert_eq!(reason_value(None), 0);
        for (i, s) in RequestState::ALL.iter().enumerate() {
            assert_eq!(request_state_from_proto(i as i32 + 1), Ok(s.as_str()));
        }
        assert!(request_state_from_proto(0).is_err());
        assert!(item_state_from_proto(10).is_err());
    }

    #[test]
    fn targets_round_trip_through_their_stored_form() {
        let selector = pb::TableSelector {
            account_ids: vec!["111111111111".into()],
            account_label_selector: "team=payments".into(),
            regions: vec!["eu-west-1".into()],
            current_mode: 2,
            current_kms_key: "arn:aws:kms:eu-west-1:111111111111:key/x".into(),
            table_name_prefix: "orders".into(),
        };
        let (tables, back) = targets_from_json(&targets_to_json(None, Some(&selector)));
        assert_eq!((tables, back), (None, Some(selector)));
        let list = pb::TableList {
            tables: vec![pb::TableRef {
                account_id: "111111111111".into(),
                region: "eu-west-1".into(),
                table_name: "orders".into(),
            }],
        };
        assert_eq!(
            targets_from_json(&targets_to_json(Some(&list), None)),
            (Some(list), None)
        );
    }
}
