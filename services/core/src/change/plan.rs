//! How one table is planned: change, skip (already compliant), or blocked with the reason, from what the inventory
//! shows, how the target resolved in each of its regions, and the table's recent switches.

use chrono::{DateTime, Utc};

use crate::change::apply::{TABLE_ACTIVE, archived, archived_message, inaccessible_message};
use crate::change::{ChangeItem, ItemReason, PlanAction, PlanSummary};
use crate::iac::IacOwner;
use crate::switch_quota::next_switch_allowed;
use crate::table::{EncryptionMode, KeyReference, TableEncryption};
use crate::{AccountId, Region, TableName};

/// What KMS says about a key, reduced to what decides whether DynamoDB can use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub arn: String,
    /// KMS KeyState: `Enabled`, `Disabled`, `PendingDeletion`, ...
    pub state: String,
    /// Whether the key is SYMMETRIC_DEFAULT with ENCRYPT_DECRYPT usage, as DynamoDB requires.
    pub symmetric: bool,
    /// Whether the key is AWS managed (`alias/aws/dynamodb`), not a customer key.
    pub aws_managed: bool,
}

impl KeyInfo {
    /// KMS KeyState `Enabled`: the only state DynamoDB can use.
    pub fn enabled(&self) -> bool {
        self.state == "Enabled"
    }

    pub fn pending_deletion(&self) -> bool {
        self.state == "PendingDeletion" || self.state == "PendingReplicaDeletion"
    }
}

/// One table's planned item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedItem {
    pub account_id: AccountId,
    pub region: Region,
    pub table_name: TableName,
    pub action: PlanAction,
    pub canary: bool,
    pub from_mode: EncryptionMode,
    pub from_key_arn: Option<String>,
    pub to_mode: EncryptionMode,
    pub to_key_arn: Option<String>,
    pub replicas: Vec<ReplicaPlan>,
    pub reason: Option<ItemReason>,
    pub message: Option<String>,
    /// For SWITCH_QUOTA_EXHAUSTED: when the quota frees up.
    pub frees_at: Option<DateTime<Utc>>,
}

impl PlannedItem {
    /// A table planning could not look at (not found, its account unreachable): blocked with `reason`.
    pub fn unobserved(
        account_id: AccountId,
        region: Region,
        table_name: TableName,
        to_mode: EncryptionMode,
        reason: ItemReason,
        message: String,
    ) -> Self {
        Self {
            account_id,
            region,
            table_name,
            action: PlanAction::Blocked,
            canary: false,
            from_mode: EncryptionMode::AwsOwned,
            from_key_arn: None,
            to_mode,
            to_key_arn: None,
            replicas: Vec::new(),
            reason: Some(reason),
            message: Some(message),
            frees_at: None,
        }
    }
}

/// One replica's part of a global table's item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaPlan {
    pub region: String,
    pub from_key_arn: Option<String>,
    pub to_key_arn: Option<String>,
}

/// How a target resolved in one account-region: the key ARN to set, or why it can't be used there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Usable(Option<String>),
    Unusable(ItemReason, String),
}

/// A key given by ARN names its own account and region: a key elsewhere cannot encrypt this table.
pub fn check_key_location(
    key: &KeyReference,
    account_id: &AccountId,
    region: Region,
) -> Option<Resolution> {
    let (key_region, key_account) = key.location()?;
    if key_account != account_id {
        return Some(Resolution::Unusable(
            ItemReason::KeyInOtherAccount,
            format!(
                "key {} belongs to account {key_account}, the table to {account_id}",
                key.as_str()
            ),
        ));
    }
    if key_region != region {
        return Some(Resolution::Unusable(
            ItemReason::KeyInOtherRegion,
            format!(
                "key {} is in {key_region}, the table in {region}",
                key.as_str()
            ),
        ));
    }
    None
}

/// Whether DynamoDB can use the key KMS described.
pub fn check_key(info: &KeyInfo, key: &KeyReference) -> Resolution {
    let name = key.as_str();
    if info.pending_deletion() {
        return Resolution::Unusable(
            ItemReason::KeyPendingDeletion,
            format!("key {name} is pending deletion"),
        );
    }
    if !info.enabled() {
        return Resolution::Unusable(
            ItemReason::KeyDisabled,
            format!("key {name} is {}", info.state),
        );
    }
    if !info.symmetric {
        return Resolution::Unusable(
            ItemReason::KeyAsymmetric,
            format!("key {name} is not a symmetric ENCRYPT_DECRYPT key"),
        );
    }
    Resolution::Usable(Some(info.arn.clone()))
}

/// The plan for one observed table.
pub fn plan_table(
    table: &TableEncryption,
    mode: EncryptionMode,
    resolution: impl Fn(&str) -> Resolution,
    past_switches: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> PlannedItem {
    let mut item = PlannedItem {
        account_id: table.account_id.clone(),
        region: table.region,
        table_name: table.table_name.clone(),
        action: PlanAction::Change,
        canary: false,
        from_mode: table.mode,
        from_key_arn: table.key_arn.clone(),
        to_mode: mode,
        to_key_arn: None,
        replicas: Vec::new(),
        reason: None,
        message: None,
        frees_at: None,
    };
    let block = |mut item: PlannedItem, reason: ItemReason, message: String| {
        item.action = PlanAction::Blocked;
        item.reason = Some(reason);
        item.message = Some(message);
        item
    };
    match resolution(table.region.as_str()) {
        Resolution::Usable(arn) => {
            item.to_key_arn = if mode == EncryptionMode::CustomerManaged {
                arn
            } else {
                None
            };
            if mode == EncryptionMode::AwsManaged {
                // Compared by mode: the AWS managed key's ARN is AWS's business.
                item.to_key_arn = None;
            }
        }
        Resolution::Unusable(reason, message) => return block(item, reason, message),
    }
    // Global tables: every replica needs the target in its own region: its customer managed key, its region's
    // AWS managed key, or the AWS owned key (the last two follow a change of the table's own region on AWS).
    for replica in &table.replicas {
        let to_key_arn = match (mode, resolution(&replica.region)) {
            (EncryptionMode::AwsOwned, _) => None,
            (_, Resolution::Usable(Some(arn))) => Some(arn),
            (EncryptionMode::AwsManaged, Resolution::Usable(None)) => {
                return block(
                    item,
                    ItemReason::GlobalTableNotCovered,
                    format!(
                        "replica in {}: the AWS managed key of the region could not be resolved",
                        replica.region
                    ),
                );
            }
            (_, Resolution::Usable(None)) => {
                return block(
                    item,
                    ItemReason::GlobalTableNotCovered,
                    "no key resolved".into(),
                );
            }
            (_, Resolution::Unusable(reason, message)) => {
                return block(
                    item,
                    ItemReason::GlobalTableNotCovered,
                    format!(
                        "replica in {}: {reason}: {message} (give an alias that exists in every replica region)",
                        replica.region
                    ),
                );
            }
        };
        item.replicas.push(ReplicaPlan {
            region: replica.region.clone(),
            from_key_arn: replica.key_arn.clone(),
            to_key_arn,
        });
    }
    let compliant = table.mode == mode
        && (mode != EncryptionMode::CustomerManaged || table.key_arn == item.to_key_arn)
        && item.replicas.iter().all(|r| r.from_key_arn == r.to_key_arn);
    if compliant {
        item.action = PlanAction::Skip;
        item.message = Some("already has the target encryption".into());
        return item;
    }
    // Inaccessible first: DynamoDB reports such a table as INACCESSIBLE_ENCRYPTION_CREDENTIALS, not ACTIVE.
    if let Some(since) = table.inaccessible_since {
        let message = inaccessible_message(table.key_arn.as_deref(), since);
        return block(item, ItemReason::TableInaccessible, message);
    }
    if archived(table) {
        let message = archived_message(&table.table_status);
        return block(item, ItemReason::TableArchived, message);
    }
    if table.table_status != TABLE_ACTIVE {
        return block(
            item,
            ItemReason::TableNotActive,
            format!("table is {}", table.table_status),
        );
    }
    if let Some(frees_at) = next_switch_allowed(mode, past_switches, now) {
        item.frees_at = Some(frees_at);
        return block(
            item,
            ItemReason::SwitchQuotaExhausted,
            format!("the table's encryption switch quota is used up until {frees_at}"),
        );
    }
    item
}

/// Blocks a planned change of a table whose current customer managed key (`current`, as KMS describes it) DynamoDB
/// can no longer use: AWS refuses to re-encrypt away from a disabled or pending-deletion key, and only enabling it
/// again rescues the table. Without a description (it could not be read) the plan stands: the send finds out.
pub fn check_current_key(mut item: PlannedItem, current: Option<&KeyInfo>) -> PlannedItem {
    let Some(info) = current else {
        return item;
    };
    if item.action != PlanAction::Change || info.enabled() {
        return item;
    }
    item.action = PlanAction::Blocked;
    item.reason = Some(ItemReason::CurrentKeyUnusable);
    item.message = Some(current_key_message(&info.arn, &info.state));
    item
}

/// Blocks a planned change of a table owned by infrastructure as code, or whose tags could not be read, unless
/// the request includes such tables. A table already compliant stays skipped: nothing would be reverted.
pub fn check_iac_owner(mut item: PlannedItem, owner: &IacOwner, include: bool) -> PlannedItem {
    if include || item.action != PlanAction::Change {
        return item;
    }
    let message = match owner {
        IacOwner::NotOwned => return item,
        IacOwner::Owned(tag) => crate::iac::owned_message(tag),
        IacOwner::Unknown => crate::iac::unknown_message(),
    };
    item.action = PlanAction::Blocked;
    item.reason = Some(ItemReason::IacOwned);
    item.message = Some(message);
    item
}

/// Why a table on an unusable current key cannot be changed, naming the key.
pub fn current_key_message(key_arn: &str, state: &str) -> String {
    format!(
        "the table's current key {key_arn} is {state}: DynamoDB cannot re-encrypt the table away from it; enable \
         that key again first (KMS EnableKey, or CancelKeyDeletion then EnableKey), then retry"
    )
}

/// Counts by action and blocked reason.
pub fn summarize(items: &[PlannedItem]) -> PlanSummary {
    let mut summary = PlanSummary::default();
    for item in items {
        match item.action {
            PlanAction::Change => {
                summary.change += 1;
                summary.update_calls += ChangeItem::from(item).planned_calls().len();
            }
            PlanAction::Skip => summary.skip += 1,
            PlanAction::Blocked => {
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
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::ReplicaEncryption;

    const A: &str = "arn:aws:kms:eu-west-1:111111111111:key/aaaaaaaa-1111-4111-8111-111111111111";
    const B: &str = "arn:aws:kms:eu-west-1:111111111111:key/bbbbbbbb-1111-4111-8111-111111111111";
    const B_US: &str =
        "arn:aws:kms:us-east-1:111111111111:key/bbbbbbbb-2222-4222-8222-222222222222";

    fn now() -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000, 0).expect("time")
    }

    fn on(mode: EncryptionMode, key: Option<&str>) -> TableEncryption {
        TableEncryption {
            account_id: AccountId::parse("111111111111").expect("id"),
            region: Region::parse("eu-west-1").expect("region"),
            table_name: TableName::parse("orders").expect("name"),
            mode,
            key_arn: key.map(str::to_owned),
            sse_status: if key.is_some() { "ENABLED" } else { "" }.to_owned(),
            table_status: "ACTIVE".to_owned(),
            inaccessible_since: None,
            replicas: Vec::new(),
            observed_at: now(),
            tags: None,
        }
    }

    fn usable(arn: &str) -> impl Fn(&str) -> Resolution {
        let arn = arn.to_owned();
        move |_| Resolution::Usable(Some(arn.clone()))
    }

    use EncryptionMode::{AwsManaged, AwsOwned, CustomerManaged};

    #[test]
    fn a_table_on_another_key_changes_and_one_on_the_target_skips() {
        let item = plan_table(
            &on(CustomerManaged, Some(A)),
            CustomerManaged,
            usable(B),
            &[],
            now(),
        );
        assert_eq!(item.action, PlanAction::Change);
        assert_eq!(item.to_key_arn.as_deref(), Some(B));
        assert_eq!(item.from_key_arn.as_deref(), Some(A));
        let item = plan_table(
            &on(CustomerManaged, Some(B)),
            CustomerManaged,
            usable(B),
            &[],
            now(),
        );
        assert_eq!(item.action, PlanAction::Skip);
        // The AWS managed target is compared by mode: its ARN is AWS's business.
        let item = plan_table(&on(AwsManaged, Some(A)), AwsManaged, usable(A), &[], now());
        assert_eq!((item.action, item.to_key_arn), (PlanAction::Skip, None));
        let item = plan_table(
            &on(AwsOwned, None),
            AwsManaged,
            |_| Resolution::Usable(None),
            &[],
            now(),
        );
        assert_eq!(item.action, PlanAction::Change);
    }

    #[test]
    fn an_unusable_key_blocks_with_its_reason() {
        for reason in [
            ItemReason::KeyMissing,
            ItemReason::KeyDisabled,
            ItemReason::KeyPendingDeletion,
            ItemReason::KeyAsymmetric,
            ItemReason::KeyInOtherRegion,
            ItemReason::KeyInOtherAccount,
            ItemReason::AccountUnreachable,
            ItemReason::AccessDenied,
            ItemReason::AwsError,
        ] {
            let item = plan_table(
                &on(AwsOwned, None),
                CustomerManaged,
                |_| Resolution::Unusable(reason, "why".into()),
                &[],
                now(),
            );
            assert_eq!(
                (item.action, item.reason),
                (PlanAction::Blocked, Some(reason))
            );
        }
    }

    #[test]
    fn a_busy_or_inaccessible_table_is_blocked() {
        let mut busy = on(CustomerManaged, Some(A));
        busy.table_status = "UPDATING".into();
        let item = plan_table(&busy, CustomerManaged, usable(B), &[], now());
        assert_eq!(item.reason, Some(ItemReason::TableNotActive));
        let mut locked = on(CustomerManaged, Some(A));
        locked.table_status = "INACCESSIBLE_ENCRYPTION_CREDENTIALS".into();
        locked.inaccessible_since = Some(now());
        let item = plan_table(&locked, CustomerManaged, usable(B), &[], now());
        assert_eq!(item.reason, Some(ItemReason::TableInaccessible));
    }

    #[test]
    fn the_switch_quota_blocks_with_when_it_frees() {
        let hour = chrono::Duration::hours(1);
        let past = [
            now() - hour * 4,
            now() - hour * 3,
            now() - hour * 2,
            now() - hour,
        ];
        let item = plan_table(
            &on(CustomerManaged, Some(A)),
            CustomerManaged,
            usable(B),
            &past,
            now(),
        );
        assert_eq!(item.reason, Some(ItemReason::SwitchQuotaExhausted));
        assert_eq!(item.frees_at, Some(now() + hour * 5));
        // Going to the AWS owned key is always allowed.
        let item = plan_table(
            &on(CustomerManaged, Some(A)),
            AwsOwned,
            |_| Resolution::Usable(None),
            &past,
            now(),
        );
        assert_eq!(item.action, PlanAction::Change);
    }

    #[test]
    fn a_global_table_needs_a_key_in_every_replica_region() {
        let mut global = on(CustomerManaged, Some(A));
        global.replicas = vec![ReplicaEncryption {
            region: "us-east-1".into(),
            status: "ACTIVE".into(),
            key_arn: Some(A.replace("eu-west-1", "us-east-1")),
        }];
        let both = |region: &str| {
            Resolution::Usable(Some(
                if region == "us-east-1" { B_US } else { B }.to_owned(),
            ))
        };
        let item = plan_table(&global, CustomerManaged, both, &[], now());
        assert_eq!(item.action, PlanAction::Change);
        assert_eq!(item.replicas[0].to_key_arn.as_deref(), Some(B_US));
        let eu_only = |region: &str| {
            if region == "us-east-1" {
                Resolution::Unusable(ItemReason::KeyMissing, "no alias".into())
            } else {
                Resolution::Usable(Some(B.to_owned()))
            }
        };
        let item = plan_table(&global, CustomerManaged, eu_only, &[], now());
        assert_eq!(item.reason, Some(ItemReason::GlobalTableNotCovered));
        let item = plan_table(
            &global,
            AwsManaged,
            |_| Resolution::Usable(None),
            &[],
            now(),
        );
        assert_eq!(item.reason, Some(ItemReason::GlobalTableNotCovered));
        // AWS managed and AWS owned targets apply to every replica: each replica's expected key is its region's
        // AWS managed key, or none.
        let managed = |region: &str| {
            Resolution::Usable(Some(format!(
                "arn:aws:kms:{region}:111111111111:key/managed"
            )))
        };
        let item = plan_table(&global, AwsManaged, managed, &[], now());
        assert_eq!(item.action, PlanAction::Change);
        assert_eq!(
            item.replicas[0].to_key_arn.as_deref(),
            Some("arn:aws:kms:us-east-1:111111111111:key/managed")
        );
        let item = plan_table(&global, AwsOwned, |_| Resolution::Usable(None), &[], now());
        assert_eq!(item.action, PlanAction::Change);
        assert_eq!(item.replicas[0].to_key_arn, None);
    }

    #[test]
    fn an_archived_table_is_blocked_with_its_own_reason() {
        for status in ["ARCHIVING", "ARCHIVED"] {
            let mut archived = on(CustomerManaged, Some(A));
            archived.table_status = status.into();
            let item = plan_table(&archived, CustomerManaged, usable(B), &[], now());
            assert_eq!(item.reason, Some(ItemReason::TableArchived), "{status}");
            assert!(item.message.as_deref().unwrap_or_default().contains(status));
        }
    }

    #[test]
    fn a_table_on_a_disabled_or_deleted_key_is_blocked_naming_the_key() {
        let planned = plan_table(
            &on(CustomerManaged, Some(A)),
            CustomerManaged,
            usable(B),
            &[],
            now(),
        );
        for state in ["Disabled", "PendingDeletion"] {
            let info = KeyInfo {
                arn: A.into(),
                state: state.into(),
                symmetric: true,
                aws_managed: false,
            };
            let item = check_current_key(planned.clone(), Some(&info));
            assert_eq!(item.action, PlanAction::Blocked);
            assert_eq!(item.reason, Some(ItemReason::CurrentKeyUnusable));
            let message = item.message.unwrap_or_default();
            assert!(message.contains(A) && message.contains(state), "{message}");
        }
        let enabled = KeyInfo {
            arn: A.into(),
            state: "Enabled".into(),
            symmetric: true,
            aws_managed: false,
        };
        assert_eq!(check_current_key(planned.clone(), Some(&enabled)), planned);
        assert_eq!(check_current_key(planned.clone(), None), planned);
    }

    #[test]
    fn a_table_owned_by_iac_is_blocked_unless_included_and_never_when_compliant() {
        let owner = "ManagedBy=terraform";
        let planned = plan_table(
            &on(CustomerManaged, Some(A)),
            CustomerManaged,
            usable(B),
            &[],
            now(),
        );
        let item = check_iac_owner(planned.clone(), &IacOwner::Owned(owner.to_owned()), false);
        assert_eq!(item.action, PlanAction::Blocked);
        assert_eq!(item.reason, Some(ItemReason::IacOwned));
        assert!(item.message.unwrap_or_default().contains(owner));
        assert_eq!(
            check_iac_owner(planned.clone(), &IacOwner::Owned(owner.to_owned()), true),
            planned
        );
        assert_eq!(
            check_iac_owner(planned.clone(), &IacOwner::NotOwned, false),
            planned
        );
        // Unread tags cannot rule ownership out: blocked too, saying why.
        let unknown = check_iac_owner(planned.clone(), &IacOwner::Unknown, false);
        assert_eq!(unknown.reason, Some(ItemReason::IacOwned));
        assert!(
            unknown
                .message
                .unwrap_or_default()
                .contains("could not be read")
        );
        assert_eq!(
            check_iac_owner(planned.clone(), &IacOwner::Unknown, true),
            planned
        );
        let compliant = plan_table(
            &on(CustomerManaged, Some(B)),
            CustomerManaged,
            usable(B),
            &[],
            now(),
        );
        assert_eq!(compliant.action, PlanAction::Skip);
        assert_eq!(
            check_iac_owner(compliant.clone(), &IacOwner::Owned(owner.to_owned()), false),
            compliant
        );
    }

    #[test]
    fn keys_are_checked_for_what_dynamodb_needs() {
        let key = KeyReference::parse(B).expect("arn");
        let info = |state: &str, symmetric: bool| KeyInfo {
            arn: B.into(),
            state: state.into(),
            symmetric,
            aws_managed: false,
        };
        let reason = |r: Resolution| match r {
            Resolution::Unusable(reason, _) => Some(reason),
            Resolution::Usable(_) => None,
        };
        assert_eq!(reason(check_key(&info("Enabled", true), &key)), None);
        assert_eq!(
            reason(check_key(&info("Disabled", true), &key)),
            Some(ItemReason::KeyDisabled)
        );
        assert_eq!(
            reason(check_key(&info("PendingDeletion", true), &key)),
            Some(ItemReason::KeyPendingDeletion)
        );
        assert_eq!(
            reason(check_key(&info("Enabled", false), &key)),
            Some(ItemReason::KeyAsymmetric)
        );
        let account = AccountId::parse("111111111111").expect("id");
        let eu = Region::parse("eu-west-1").expect("eu");
        let us = Region::parse("us-east-1").expect("us");
        assert_eq!(check_key_location(&key, &account, eu), None);
        assert_eq!(
            check_key_location(&key, &account, us).and_then(reason),
            Some(ItemReason::KeyInOtherRegion)
        );
        let other = AccountId::parse("222222222222").expect("id");
        assert_eq!(
            check_key_location(&key, &other, eu).and_then(reason),
            Some(ItemReason::KeyInOtherAccount)
        );
        let alias = KeyReference::parse("alias/b").expect("alias");
        assert_eq!(
            check_key_location(&alias, &other, us),
            None,
            "an alias is resolved where it is"
        );
    }

    #[test]
    fn a_summary_counts_by_action_and_reason() {
        let change = plan_table(
            &on(CustomerManaged, Some(A)),
            CustomerManaged,
            usable(B),
            &[],
            now(),
        );
        let skip = plan_table(
            &on(CustomerManaged, Some(B)),
            CustomerManaged,
            usable(B),
            &[],
            now(),
        );
        let blocked = |reason| {
            plan_table(
                &on(AwsOwned, None),
                CustomerManaged,
                move |_| Resolution::Unusable(reason, String::new()),
                &[],
                now(),
            )
        };
        let summary = summarize(&[
            change,
            skip,
            blocked(ItemReason::KeyMissing),
            blocked(ItemReason::KeyMissing),
            blocked(ItemReason::KeyDisabled),
        ]);
        assert_eq!((summary.change, summary.skip, summary.blocked), (1, 1, 3));
        assert_eq!(summary.blocked_by_reason.get("KEY_MISSING"), Some(&2));
        assert_eq!(summary.blocked_by_reason.get("KEY_DISABLED"), Some(&1));
    }
}
