//! Change requests, items and key-rotation history out to proto. A preview (validate_only) and a stored request go
//! through the same conversions.
//!
//! The proto enums list their values in the same order as the domain's `ALL` arrays (value = index + 1), which
//! `enum_order_matches_the_proto` checks.

use tablecrypt_core::change::apply::CallKind;
use tablecrypt_core::change::{ChangeItem, ChangeRequest, ItemCounts, KeyRotation, RequestTargets};
use tablecrypt_core::{InvalidValue, ItemReason, ItemState, PlanAction, RequestState};
use tablecrypt_engine::requests::{Created, WatchUpdate};
use tablecrypt_proto::v1 as pb;

use super::inventory::mode_to_proto;
use super::timestamp::to_proto as ts;

fn index_value<T: PartialEq>(all: &[T], value: &T) -> i32 {
    all.iter()
        .position(|v| v == value)
        .map_or(0, |i| i32::try_from(i + 1).unwrap_or(0))
}

fn from_index<T: Copy>(all: &[T], value: i32, name: &str) -> Result<T, InvalidValue> {
    usize::try_from(value - 1)
        .ok()
        .and_then(|i| all.get(i).copied())
        .ok_or_else(|| InvalidValue::new(format!("{value} is not a {name}")))
}

/// A `ChangeRequestState` filter value.
pub fn request_state_from_proto(value: i32) -> Result<RequestState, InvalidValue> {
    from_index(&RequestState::ALL, value, "ChangeRequestState")
}

/// A `ChangeItemState` filter value.
pub fn item_state_from_proto(value: i32) -> Result<ItemState, InvalidValue> {
    from_index(&ItemState::ALL, value, "ChangeItemState")
}

fn reason_value(reason: Option<ItemReason>) -> i32 {
    reason.map_or(0, |r| index_value(&ItemReason::ALL, &r))
}

pub fn counts_to_proto(counts: &ItemCounts) -> pb::ItemCounts {
    let n = |state: ItemState| i32::try_from(counts.get(state)).unwrap_or(i32::MAX);
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

fn targets_to_proto(
    targets: &RequestTargets,
) -> (Option<pb::TableList>, Option<pb::TableSelector>) {
    match targets {
        RequestTargets::Tables(tables) => (
            Some(pb::TableList {
                tables: tables
                    .iter()
                    .map(|t| pb::TableRef {
                        account_id: t.account_id.to_string(),
                        region: t.region.to_string(),
                        table_name: t.table_name.to_string(),
                    })
                    .collect(),
            }),
            None,
        ),
        RequestTargets::Selector(s) => (
            None,
            Some(pb::TableSelector {
                account_ids: s.account_ids.clone(),
                account_label_selector: s.account_label_selector.clone(),
                regions: s.regions.clone(),
                current_mode: s.current_mode.map_or(0, |m| mode_to_proto(m) as i32),
                current_kms_key: s.current_kms_key.clone(),
                table_name_prefix: s.table_name_prefix.clone(),
                table_tag_selector: s.table_tag_selector.clone(),
                current_kms_keys: s.current_kms_keys.clone(),
            }),
        ),
    }
}

/// A request; `counts` is `None` for a preview, which has no id, state or times either.
pub fn request_to_proto(request: &ChangeRequest, counts: Option<&ItemCounts>) -> pb::ChangeRequest {
    let (tables, selector) = targets_to_proto(&request.targets);
    let id = |id: uuid::Uuid| {
        if id.is_nil() {
            String::new()
        } else {
            id.to_string()
        }
    };
    pb::ChangeRequest {
        change_request_id: id(request.request_id),
        state: request
            .state
            .map_or(0, |s| index_value(&RequestState::ALL, &s)),
        description: request.description.clone(),
        selector,
        tables,
        // A rollback has no single target: each item returns to its own earlier encryption.
        target: request.target.as_ref().map(|t| pb::TargetEncryption {
            mode: mode_to_proto(t.mode) as i32,
            kms_key: t.kms_key.clone().unwrap_or_default(),
        }),
        options: Some(pb::ChangeOptions {
            max_updates_per_second: request.options.max_updates_per_second.unwrap_or(0.0),
            max_in_flight: request.options.max_in_flight.unwrap_or(0),
            failure_threshold: request.options.failure_threshold.unwrap_or(0),
            canary_count: request.options.canary_count,
            include_iac_owned: request.options.include_iac_owned,
        }),
        request_id: request.idempotency_key.clone().unwrap_or_default(),
        counts: counts.map(counts_to_proto),
        pause_reason: request.pause_reason.clone().unwrap_or_default(),
        rollback_of: request.rollback_of.map(id).unwrap_or_default(),
        created_by: request.created_by.clone(),
        approved_by: request.approved_by.clone().unwrap_or_default(),
        create_time: request.create_time.map(ts),
        approve_time: request.approve_time.map(ts),
        start_time: request.start_time.map(ts),
        finish_time: request.finish_time.map(ts),
        update_time: request.update_time.map(ts),
        canary_passed: request.canary_passed,
    }
}

/// A stored request with its counts.
pub fn shown((request, counts): (ChangeRequest, ItemCounts)) -> pb::ChangeRequest {
    request_to_proto(&request, Some(&counts))
}

/// One message of a watch.
pub fn watch_update_to_proto(update: &WatchUpdate) -> pb::WatchChangeRequestResponse {
    pb::WatchChangeRequestResponse {
        change_request: Some(request_to_proto(&update.request, Some(&update.counts))),
        items: update.items.iter().map(item_to_proto).collect(),
    }
}

/// An item, stored or planned.
pub fn item_to_proto(item: &ChangeItem) -> pb::ChangeItem {
    let action = match item.action() {
        PlanAction::Change => pb::PlanAction::Change,
        PlanAction::Skip => pb::PlanAction::Skip,
        PlanAction::Blocked => pb::PlanAction::Blocked,
    };
    pb::ChangeItem {
        item_id: item.item_id,
        change_request_id: if item.request_id.is_nil() {
            String::new()
        } else {
            item.request_id.to_string()
        },
        account_id: item.table.account_id.to_string(),
        region: item.table.region.to_string(),
        table_name: item.table.table_name.to_string(),
        action: action as i32,
        state: index_value(&ItemState::ALL, &item.state),
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
        reason: reason_value(item.reason),
        message: item.message.clone().unwrap_or_default(),
        attempts: item.attempts,
        next_attempt_time: item.next_attempt_time.map(ts),
        update_time: item.update_time.map(ts),
        finish_time: item.finish_time.map(ts),
        planned_calls: item
            .planned_calls()
            .into_iter()
            .map(|call| pb::PlannedCall {
                region: call.region,
                concern: match call.kind {
                    CallKind::Sse => pb::UpdateConcern::Sse,
                    CallKind::ReplicaKeys => pb::UpdateConcern::ReplicaKeys,
                    CallKind::ReplicaSse => pb::UpdateConcern::ReplicaSse,
                } as i32,
                regions_changed: call.regions_changed,
            })
            .collect(),
    }
}

/// A create's (or preview's) answer.
pub fn created_to_proto(created: &Created) -> pb::CreateChangeRequestResponse {
    let summary = &created.summary;
    let n = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
    pb::CreateChangeRequestResponse {
        // Filled by the handler, which reads the aliases.
        key_aliases: Default::default(),
        change_request: Some(request_to_proto(&created.request, created.counts.as_ref())),
        summary: Some(pb::PlanSummary {
            change: n(summary.change),
            skip: n(summary.skip),
            blocked: n(summary.blocked),
            update_calls: n(summary.update_calls),
            blocked_by_reason: summary
                .blocked_by_reason
                .iter()
                .map(|(k, v)| (k.clone(), n(*v)))
                .collect(),
        }),
        items: created.items.iter().map(item_to_proto).collect(),
    }
}

pub fn rotation_to_proto(row: &KeyRotation) -> pb::KeyRotation {
    pb::KeyRotation {
        rotation_id: row.history_id,
        account_id: row.table.account_id.to_string(),
        region: row.table.region.to_string(),
        table_name: row.table.table_name.to_string(),
        from_mode: mode_to_proto(row.from_mode) as i32,
        from_kms_key_arn: row.from_key_arn.clone().unwrap_or_default(),
        to_mode: mode_to_proto(row.to_mode) as i32,
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
        let request = |s| index_value(&RequestState::ALL, &s);
        assert_eq!(
            request(RequestState::PendingApproval),
            pb::ChangeRequestState::PendingApproval as i32
        );
        assert_eq!(
            request(RequestState::Cancelled),
            pb::ChangeRequestState::Cancelled as i32
        );
        assert_eq!(
            request(RequestState::PartiallyFailed),
            pb::ChangeRequestState::PartiallyFailed as i32
        );
        let item = |s| index_value(&ItemState::ALL, &s);
        assert_eq!(
            item(ItemState::Pending),
            pb::ChangeItemState::Pending as i32
        );
        assert_eq!(
            item(ItemState::Cancelled),
            pb::ChangeItemState::Cancelled as i32
        );
        assert_eq!(
            item(ItemState::Blocked),
            pb::ChangeItemState::Blocked as i32
        );
        for reason in ItemReason::ALL {
            let value = reason_value(Some(reason));
            let name = pb::ItemReason::try_from(value)
                .expect("a proto reason")
                .as_str_name();
            assert_eq!(name, format!("ITEM_REASON_{}", reason.as_str()), "{reason}");
        }
        assert_eq!(reason_value(None), 0);
        for (i, s) in RequestState::ALL.iter().enumerate() {
            assert_eq!(request_state_from_proto(i as i32 + 1), Ok(*s));
        }
        assert!(request_state_from_proto(0).is_err());
        assert!(item_state_from_proto(10).is_err());
    }
}
