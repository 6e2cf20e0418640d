//! The UpdateTable calls a planned change will make, for the person confirming the plan: each call carries one
//! concern, as AWS requires, so a global table's change is more than one call, and each call spends a switch of
//! every copy it changes (4 per 24 h).
//!
//! Not a second copy of the worker's rule: it asks the worker's own decision ([`ApplyTarget::needed_call`]) what to
//! send, applies each call as AWS documents it, and asks again. A table whose replicas did not follow an AWS managed
//! or AWS owned change (AWS applies those to every replica) would get one more call per lagging replica, in that
//! replica's region; the plan shows the documented path.

use chrono::DateTime;

use crate::change::apply::{ApplyTarget, Call, CallKind, SSE_ENABLED, TABLE_ACTIVE};
use crate::change::{ChangeItem, PlanAction};
use crate::table::{EncryptionMode, ReplicaEncryption, TableEncryption};

/// One UpdateTable a change will make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedCall {
    /// The region it is sent in.
    pub region: String,
    /// What it carries.
    pub kind: CallKind,
    /// The regions whose copy of the table it changes.
    pub regions_changed: Vec<String>,
}

impl ApplyTarget {
    /// What `item` must reach: its target mode and key, and each replica's key.
    pub fn of_item(item: &ChangeItem) -> Self {
        Self {
            mode: item.to_mode,
            key_arn: item.to_key_arn.clone(),
            replica_keys: item
                .replicas
                .iter()
                .map(|r| (r.region.clone(), r.to_key_arn.clone()))
                .collect(),
        }
    }
}

impl ChangeItem {
    /// The calls this item's change will make, in order; none unless it is planned to change.
    pub fn planned_calls(&self) -> Vec<PlannedCall> {
        if self.action() != PlanAction::Change {
            return Vec::new();
        }
        let target = ApplyTarget::of_item(self);
        let region = self.table.region.as_str().to_owned();
        let mut table = TableEncryption {
            account_id: self.table.account_id.clone(),
            region: self.table.region,
            table_name: self.table.table_name.clone(),
            mode: self.from_mode,
            key_arn: self.from_key_arn.clone(),
            sse_status: sse_status(self.from_mode),
            table_status: TABLE_ACTIVE.to_owned(),
            inaccessible_since: None,
            replicas: self
                .replicas
                .iter()
                .map(|r| ReplicaEncryption {
                    region: r.region.clone(),
                    status: TABLE_ACTIVE.to_owned(),
                    key_arn: r.from_key_arn.clone(),
                })
                .collect(),
            observed_at: DateTime::UNIX_EPOCH,
            tags: None,
        };
        let mut calls = Vec::new();
        // Each call moves the table or at least one replica to its target, so this ends; the bound is a guard.
        while calls.len() <= self.replicas.len() {
            let Some(call) = target.needed_call(&table) else {
                break;
            };
            let before = table.clone();
            apply_as_documented(&mut table, &target, &call);
            let mut regions_changed = Vec::new();
            if (before.mode, &before.key_arn) != (table.mode, &table.key_arn) {
                regions_changed.push(region.clone());
            }
            for (was, now) in before.replicas.iter().zip(&table.replicas) {
                if was.key_arn != now.key_arn {
                    regions_changed.push(now.region.clone());
                }
            }
            if regions_changed.is_empty() {
                // A call that changes nothing (a replica with no key to send): the rule would ask for it again.
                break;
            }
            calls.push(PlannedCall {
                region: match &call {
                    Call::ReplicaSse(replica) => replica.clone(),
                    _ => region.clone(),
                },
                kind: call.kind(),
                regions_changed,
            });
        }
        calls
    }
}

fn sse_status(mode: EncryptionMode) -> String {
    match mode {
        EncryptionMode::AwsOwned => String::new(),
        _ => SSE_ENABLED.to_owned(),
    }
}

/// The table as DynamoDB shows it once `call` took effect as AWS documents: the table's own encryption (and, for
/// AWS managed / AWS owned, every replica's), the named replicas' keys, or one replica's own encryption.
fn apply_as_documented(table: &mut TableEncryption, target: &ApplyTarget, call: &Call) {
    let replica_target = |region: &str| {
        target
            .replica_keys
            .iter()
            .find(|(r, _)| r == region)
            .and_then(|(_, key)| key.clone())
    };
    match call {
        Call::Sse => {
            table.mode = target.mode;
            table.key_arn = target.key_arn.clone();
            table.sse_status = sse_status(target.mode);
            if target.mode != EncryptionMode::CustomerManaged {
                for replica in &mut table.replicas {
                    replica.key_arn = replica_target(&replica.region);
                }
            }
        }
        Call::ReplicaKeys(keys) => {
            for (region, key) in keys {
                if let Some(replica) = table.replicas.iter_mut().find(|r| &r.region == region) {
                    replica.key_arn = Some(key.clone());
                }
            }
        }
        Call::ReplicaSse(region) => {
            let key = replica_target(region);
            if let Some(replica) = table.replicas.iter_mut().find(|r| &r.region == region) {
                replica.key_arn = key;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{ItemState, ReplicaPlan, TableRef};
    use crate::{AccountId, Region, TableName};
    use EncryptionMode::{AwsManaged, AwsOwned, CustomerManaged};

    const A: &str = "arn:aws:kms:eu-west-1:111111111111:key/aaaaaaaa-1111-4111-8111-111111111111";
    const B: &str = "arn:aws:kms:eu-west-1:111111111111:key/bbbbbbbb-1111-4111-8111-111111111111";
    const A_US: &str =
        "arn:aws:kms:us-east-1:111111111111:key/aaaaaaaa-2222-4222-8222-222222222222";
    const B_US: &str =
        "arn:aws:kms:us-east-1:111111111111:key/bbbbbbbb-2222-4222-8222-222222222222";
    const MANAGED_US: &str =
        "arn:aws:kms:us-east-1:111111111111:key/cccccccc-2222-4222-8222-222222222222";

    fn item(
        from: (EncryptionMode, Option<&str>),
        to: (EncryptionMode, Option<&str>),
        replicas: &[(&str, Option<&str>, Option<&str>)],
    ) -> ChangeItem {
        ChangeItem {
            item_id: 0,
            request_id: uuid::Uuid::nil(),
            ordinal: 0,
            table: TableRef {
                account_id: AccountId::parse("111111111111").expect("id"),
                region: Region::parse("eu-west-1").expect("region"),
                table_name: TableName::parse("orders").expect("name"),
            },
            state: ItemState::Pending,
            canary: false,
            from_mode: from.0,
            from_key_arn: from.1.map(str::to_owned),
            to_mode: to.0,
            to_key_arn: to.1.map(str::to_owned),
            replicas: replicas
                .iter()
                .map(|(region, from, to)| ReplicaPlan {
                    region: (*region).to_owned(),
                    from_key_arn: from.map(str::to_owned),
                    to_key_arn: to.map(str::to_owned),
                })
                .collect(),
            reason: None,
            message: None,
            attempts: 0,
            next_attempt_time: None,
            apply_time: None,
            apply_call: None,
            server_errors: 0,
            finish_time: None,
            update_time: None,
        }
    }

    fn shape(calls: &[PlannedCall]) -> Vec<(&str, &str, Vec<&str>)> {
        calls
            .iter()
            .map(|c| {
                (
                    c.region.as_str(),
                    c.kind.as_str(),
                    c.regions_changed.iter().map(String::as_str).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn a_regional_table_is_one_call() {
        let calls =
            item((CustomerManaged, Some(A)), (CustomerManaged, Some(B)), &[]).planned_calls();
        assert_eq!(shape(&calls), vec![("eu-west-1", "SSE", vec!["eu-west-1"])]);
        let calls = item((AwsOwned, None), (AwsManaged, None), &[]).planned_calls();
        assert_eq!(shape(&calls), vec![("eu-west-1", "SSE", vec!["eu-west-1"])]);
    }

    #[test]
    fn a_global_tables_customer_key_is_its_own_call_then_the_replicas_keys_alone() {
        let calls = item(
            (CustomerManaged, Some(A)),
            (CustomerManaged, Some(B)),
            &[("us-east-1", Some(A_US), Some(B_US))],
        )
        .planned_calls();
        assert_eq!(
            shape(&calls),
            vec![
                ("eu-west-1", "SSE", vec!["eu-west-1"]),
                ("eu-west-1", "REPLICA_KEYS", vec!["us-east-1"]),
            ]
        );
    }

    #[test]
    fn only_lagging_replicas_get_a_call() {
        // The table already has B; only the replica is behind.
        let calls = item(
            (CustomerManaged, Some(B)),
            (CustomerManaged, Some(B)),
            &[("us-east-1", Some(A_US), Some(B_US))],
        )
        .planned_calls();
        assert_eq!(
            shape(&calls),
            vec![("eu-west-1", "REPLICA_KEYS", vec!["us-east-1"])]
        );
    }

    #[test]
    fn aws_managed_and_owned_apply_to_every_replica_in_one_call() {
        let calls = item(
            (CustomerManaged, Some(A)),
            (AwsManaged, None),
            &[("us-east-1", Some(A_US), Some(MANAGED_US))],
        )
        .planned_calls();
        assert_eq!(
            shape(&calls),
            vec![("eu-west-1", "SSE", vec!["eu-west-1", "us-east-1"])]
        );
        let calls = item(
            (CustomerManaged, Some(A)),
            (AwsOwned, None),
            &[("us-east-1", Some(A_US), None)],
        )
        .planned_calls();
        assert_eq!(
            shape(&calls),
            vec![("eu-west-1", "SSE", vec!["eu-west-1", "us-east-1"])]
        );
    }

    #[test]
    fn a_replica_behind_on_an_aws_key_gets_a_call_in_its_own_region() {
        let calls = item(
            (AwsOwned, None),
            (AwsOwned, None),
            &[("us-east-1", Some(A_US), None)],
        )
        .planned_calls();
        assert_eq!(
            shape(&calls),
            vec![("us-east-1", "REPLICA_SSE", vec!["us-east-1"])]
        );
    }

    #[test]
    fn skipped_and_blocked_items_make_no_call() {
        for state in [ItemState::Skipped, ItemState::Blocked] {
            let mut blocked = item((CustomerManaged, Some(A)), (CustomerManaged, Some(B)), &[]);
            blocked.state = state;
            assert!(blocked.planned_calls().is_empty());
        }
    }
}
