//! The change-request aggregate as typed values: what the store returns and the API shows. A planned but unsaved
//! request (a `validate_only` preview) is the same type with `request_id` nil and no state, so a preview and a
//! stored request are shown by the same conversion.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::change::apply::CallKind;
use crate::change::plan::{PlannedItem, ReplicaPlan};
use crate::change::{ItemReason, ItemState, PlanAction, RequestState};
use crate::table::EncryptionMode;
use crate::{AccountId, Region, TableName};

/// One table, by its three names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableRef {
    pub account_id: AccountId,
    pub region: Region,
    pub table_name: TableName,
}

/// A selector as the caller gave it (each part already validated; kept as written, for showing it back).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectorSpec {
    pub account_ids: Vec<String>,
    pub account_label_selector: String,
    pub regions: Vec<String>,
    pub current_mode: Option<EncryptionMode>,
    pub current_kms_key: String,
    /// More current keys: tables on any of these (or `current_kms_key`).
    pub current_kms_keys: Vec<String>,
    pub table_name_prefix: String,
    /// Only tables whose tags match (selector syntax over table tags).
    pub table_tag_selector: String,
}

/// Which tables a request was asked to cover, as the caller said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestTargets {
    Tables(Vec<TableRef>),
    Selector(SelectorSpec),
}

/// The encryption a request moves its tables to; a rollback has none (each item returns to its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub mode: EncryptionMode,
    /// As the caller gave it (an ARN, key id or alias), CUSTOMER_MANAGED only.
    pub kms_key: Option<String>,
}

/// How a request is paced; `None`: the service's (or the account's) own limit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeOptions {
    pub max_updates_per_second: Option<f64>,
    pub max_in_flight: Option<i32>,
    pub failure_threshold: Option<i32>,
    pub canary_count: i32,
    /// Change tables owned by infrastructure as code too (planned BLOCKED IAC_OWNED otherwise).
    pub include_iac_owned: bool,
}

/// A change request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRequest {
    /// Nil for a preview that was not stored.
    pub request_id: Uuid,
    /// `None` for a preview.
    pub state: Option<RequestState>,
    pub idempotency_key: Option<String>,
    pub description: String,
    pub targets: RequestTargets,
    pub target: Option<TargetSpec>,
    pub options: ChangeOptions,
    pub canary_passed: bool,
    pub rollback_of: Option<Uuid>,
    pub pause_reason: Option<String>,
    pub created_by: String,
    pub approved_by: Option<String>,
    pub create_time: Option<DateTime<Utc>>,
    pub approve_time: Option<DateTime<Utc>>,
    pub start_time: Option<DateTime<Utc>>,
    pub finish_time: Option<DateTime<Utc>>,
    pub update_time: Option<DateTime<Utc>>,
}

impl ChangeRequest {
    /// Whether `other` asks for the same change as this request: the same targets, target, description, options
    /// and rolled-back request. A replay of a request id must ask the same (AIP-155); who, when and in what state
    /// do not count.
    pub fn asks_the_same(&self, other: &ChangeRequest) -> bool {
        self.targets == other.targets
            && self.target == other.target
            && self.description == other.description
            && self.options == other.options
            && self.rollback_of == other.rollback_of
    }

    /// Nothing more will happen to it.
    pub fn is_terminal(&self) -> bool {
        self.state.is_some_and(RequestState::is_terminal)
    }
}

/// One table's change within a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeItem {
    /// 0 for a preview.
    pub item_id: i64,
    pub request_id: Uuid,
    pub ordinal: i32,
    pub table: TableRef,
    pub state: ItemState,
    pub canary: bool,
    pub from_mode: EncryptionMode,
    pub from_key_arn: Option<String>,
    pub to_mode: EncryptionMode,
    pub to_key_arn: Option<String>,
    pub replicas: Vec<ReplicaPlan>,
    pub reason: Option<ItemReason>,
    pub message: Option<String>,
    pub attempts: i32,
    /// When it may next be tried; for a quota-blocked item, when its quota frees up.
    pub next_attempt_time: Option<DateTime<Utc>>,
    /// Set once UpdateTable may have been sent.
    pub apply_time: Option<DateTime<Utc>>,
    /// Which call was sent at `apply_time` (a global table's change takes calls of one concern each).
    pub apply_call: Option<CallKind>,
    /// HTTP 5xx answers to its UpdateTable in a row: retried up to a bound, then the item fails.
    pub server_errors: i32,
    pub finish_time: Option<DateTime<Utc>>,
    pub update_time: Option<DateTime<Utc>>,
}

impl ChangeItem {
    /// What planning decided for it, read back from the state it was stored in.
    pub fn action(&self) -> PlanAction {
        match self.state {
            ItemState::Blocked => PlanAction::Blocked,
            ItemState::Skipped => PlanAction::Skip,
            _ => PlanAction::Change,
        }
    }

    /// Skipped when planned (as opposed to found already done by a worker).
    pub fn planned_skip(&self) -> bool {
        self.state == ItemState::Skipped && self.apply_time.is_none() && self.attempts == 0
    }
}

impl From<&PlannedItem> for ChangeItem {
    /// The item a plan stores: PENDING to change, SKIPPED or BLOCKED; the quota's end kept as the next attempt.
    fn from(item: &PlannedItem) -> Self {
        Self {
            item_id: 0,
            request_id: Uuid::nil(),
            ordinal: 0,
            table: TableRef {
                account_id: item.account_id.clone(),
                region: item.region,
                table_name: item.table_name.clone(),
            },
            state: match item.action {
                PlanAction::Change => ItemState::Pending,
                PlanAction::Skip => ItemState::Skipped,
                PlanAction::Blocked => ItemState::Blocked,
            },
            canary: item.canary,
            from_mode: item.from_mode,
            from_key_arn: item.from_key_arn.clone(),
            to_mode: item.to_mode,
            to_key_arn: item.to_key_arn.clone(),
            replicas: item.replicas.clone(),
            reason: item.reason,
            message: item.message.clone(),
            attempts: 0,
            next_attempt_time: item.frees_at,
            apply_time: None,
            apply_call: None,
            server_errors: 0,
            finish_time: None,
            update_time: None,
        }
    }
}

/// A request's items by state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemCounts {
    pub by_state: BTreeMap<&'static str, i64>,
}

impl ItemCounts {
    pub fn get(&self, state: ItemState) -> i64 {
        self.by_state.get(state.as_str()).copied().unwrap_or(0)
    }

    pub fn total(&self) -> i64 {
        self.by_state.values().sum()
    }
}

/// A plan's totals: tables to change, to skip, blocked (and by reason).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanSummary {
    pub change: usize,
    pub skip: usize,
    pub blocked: usize,
    pub blocked_by_reason: BTreeMap<String, usize>,
    /// UpdateTable calls the changes will make (a global table's change is more than one).
    pub update_calls: usize,
}

impl PlanSummary {
    /// The totals of a stored request's items, as planned.
    pub fn of_items<'a>(items: impl IntoIterator<Item = &'a ChangeItem>) -> Self {
        let mut summary = Self::default();
        for item in items {
            match item.state {
                ItemState::Blocked => {
                    summary.blocked += 1;
                    *summary
                        .blocked_by_reason
                        .entry(
                            item.reason
                                .map(|r| r.as_str().to_owned())
                                .unwrap_or_default(),
                        )
                        .or_insert(0) += 1;
                }
                ItemState::Skipped if item.planned_skip() => summary.skip += 1,
                _ => {
                    summary.change += 1;
                    summary.update_calls += item.planned_calls().len();
                }
            }
        }
        summary
    }
}

/// One table change tablecrypt made: a row of the append-only key-rotation history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRotation {
    pub history_id: i64,
    pub table: TableRef,
    pub from_mode: EncryptionMode,
    pub from_key_arn: Option<String>,
    pub to_mode: EncryptionMode,
    pub to_key_arn: Option<String>,
    pub request_id: Uuid,
    pub item_id: i64,
    pub requested_by: String,
    pub approved_by: Option<String>,
    pub start_time: DateTime<Utc>,
    pub finish_time: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(description: &str) -> ChangeRequest {
        ChangeRequest {
            request_id: Uuid::nil(),
            state: None,
            idempotency_key: Some("q4".into()),
            description: description.into(),
            targets: RequestTargets::Tables(Vec::new()),
            target: Some(TargetSpec {
                mode: EncryptionMode::AwsManaged,
                kms_key: None,
            }),
            options: ChangeOptions::default(),
            canary_passed: false,
            rollback_of: None,
            pause_reason: None,
            created_by: "alice".into(),
            approved_by: None,
            create_time: None,
            approve_time: None,
            start_time: None,
            finish_time: None,
            update_time: None,
        }
    }

    #[test]
    fn a_replay_asks_the_same_whatever_its_state_but_not_another_change() {
        let asked = request("rotate");
        let mut stored = request("rotate");
        stored.request_id = Uuid::new_v4();
        stored.state = Some(RequestState::Running);
        stored.create_time = Some(Utc::now());
        assert!(stored.asks_the_same(&asked));
        let mut other_key = request("rotate");
        other_key.target = Some(TargetSpec {
            mode: EncryptionMode::CustomerManaged,
            kms_key: Some("alias/b".into()),
        });
        assert!(!stored.asks_the_same(&other_key));
        assert!(!stored.asks_the_same(&request("another description")));
        let mut paced = request("rotate");
        paced.options.max_in_flight = Some(1);
        assert!(!stored.asks_the_same(&paced));
        let mut rollback = request("rotate");
        rollback.rollback_of = Some(Uuid::new_v4());
        assert!(!stored.asks_the_same(&rollback));
    }

    fn planned(action: PlanAction, reason: Option<ItemReason>) -> PlannedItem {
        PlannedItem {
            account_id: AccountId::parse("111111111111").expect("id"),
            region: Region::parse("eu-west-1").expect("region"),
            table_name: TableName::parse("orders").expect("name"),
            action,
            canary: false,
            from_mode: EncryptionMode::AwsOwned,
            from_key_arn: None,
            to_mode: EncryptionMode::AwsManaged,
            to_key_arn: None,
            replicas: Vec::new(),
            reason,
            message: None,
            frees_at: None,
        }
    }

    #[test]
    fn a_plan_is_stored_in_the_state_of_its_action_and_summarised_back() {
        let mut quota = planned(PlanAction::Blocked, Some(ItemReason::SwitchQuotaExhausted));
        let frees_at = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).expect("time");
        quota.frees_at = Some(frees_at);
        let items: Vec<ChangeItem> = [
            planned(PlanAction::Change, None),
            planned(PlanAction::Skip, None),
            quota,
        ]
        .iter()
        .map(ChangeItem::from)
        .collect();
        assert_eq!(
            items.iter().map(|i| i.state).collect::<Vec<_>>(),
            [ItemState::Pending, ItemState::Skipped, ItemState::Blocked]
        );
        assert_eq!(
            items.iter().map(ChangeItem::action).collect::<Vec<_>>(),
            [PlanAction::Change, PlanAction::Skip, PlanAction::Blocked]
        );
        assert_eq!(
            items[2].next_attempt_time,
            Some(frees_at),
            "frees_at is kept"
        );
        let summary = PlanSummary::of_items(&items);
        assert_eq!((summary.change, summary.skip, summary.blocked), (1, 1, 1));
        assert_eq!(
            summary.blocked_by_reason.get("SWITCH_QUOTA_EXHAUSTED"),
            Some(&1)
        );
    }

    #[test]
    fn an_item_a_worker_skipped_counts_as_a_change_in_the_summary() {
        let mut item = ChangeItem::from(&planned(PlanAction::Change, None));
        item.state = ItemState::Skipped;
        item.attempts = 1;
        assert_eq!(PlanSummary::of_items([&item]).change, 1);
    }
}
