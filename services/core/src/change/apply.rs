//! What a worker does next for an item, decided from what DescribeTable shows. The worker performs the step and
//! asks again; nothing here does I/O.

use chrono::{DateTime, Utc};

use crate::change::ItemReason;
use crate::table::{EncryptionMode, TableEncryption};

/// DynamoDB's TableStatus of a table that can be changed.
pub const TABLE_ACTIVE: &str = "ACTIVE";
/// DynamoDB's TableStatus while a change runs.
pub const TABLE_UPDATING: &str = "UPDATING";
/// SSEDescription.Status once a key is in use.
pub const SSE_ENABLED: &str = "ENABLED";

/// What an UpdateTable must set: the mode, the key ARN in the table's region, and a global table's replica keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyTarget {
    pub mode: EncryptionMode,
    /// The key ARN in the table's region (CUSTOMER_MANAGED only).
    pub key_arn: Option<String>,
    /// For a global table: (replica region, key ARN in that region).
    pub replica_keys: Vec<(String, String)>,
}

impl ApplyTarget {
    /// DescribeTable shows the target: ACTIVE, the mode, the key (and every replica's key), and the key in use.
    pub fn reached_by(&self, current: &TableEncryption) -> bool {
        current.table_status == TABLE_ACTIVE
            && self.shown_by(current)
            && (self.mode == EncryptionMode::AwsOwned || current.sse_status == SSE_ENABLED)
    }

    /// The table's reported encryption is the target's, though it may still be UPDATING.
    pub fn shown_by(&self, current: &TableEncryption) -> bool {
        let key_ok = match self.mode {
            EncryptionMode::CustomerManaged => current.key_arn == self.key_arn,
            _ => true,
        };
        let replicas_ok = self.replica_keys.iter().all(|(region, key)| {
            current
                .replicas
                .iter()
                .any(|r| &r.region == region && r.key_arn.as_deref() == Some(key.as_str()))
        });
        current.mode == self.mode && key_ok && replicas_ok
    }
}

/// What to do for an item after looking at its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The table shows the target. `changed`: our UpdateTable did it (a history row); else it already had it.
    Done { changed: bool },
    /// The change is under way: poll until it ends.
    Wait,
    /// Send UpdateTable (after taking a rate slot).
    Send,
    /// Not now, for a passing reason: try again after a back-off.
    Retry { reason: ItemReason, message: String },
    /// The switch quota is used up: try again at `until`.
    DeferUntil {
        until: DateTime<Utc>,
        message: String,
    },
    /// It cannot be done.
    Fail { reason: ItemReason, message: String },
}

/// What the worker knows of this item's last UpdateTable and of the time, for the settle rule: after AWS accepted
/// an UpdateTable, a table that is ACTIVE and still shows the old key is how a change starts (AWS shows the old key
/// for the first seconds), so nothing is sent again until `settle` has passed with no sign of the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendClock {
    /// When an UpdateTable of this item was last sent, if one may have been (by the database's clock).
    pub sent_at: Option<DateTime<Utc>>,
    /// Now, by the same clock.
    pub now: DateTime<Utc>,
    /// How long a sent change may take to show before it is taken as not having happened.
    pub settle: chrono::Duration,
}

impl SendClock {
    /// A send may still be taking effect.
    pub fn settling(&self) -> bool {
        self.sent_at.is_some_and(|at| self.now - at < self.settle)
    }
}

/// The step for an item whose table DescribeTable showed as `current`.
///
/// `clock`: whether (and when) an UpdateTable of this item may have been sent. `quota_frees_at`: when the table's
/// switch quota allows the next switch, if not now (from our history).
pub fn next_step(
    current: &TableEncryption,
    target: &ApplyTarget,
    clock: SendClock,
    quota_frees_at: Option<DateTime<Utc>>,
) -> Step {
    if target.reached_by(current) {
        return Step::Done {
            changed: clock.sent_at.is_some(),
        };
    }
    if current.table_status == TABLE_UPDATING && target.shown_by(current) {
        return Step::Wait;
    }
    // Our send may not show yet: the old key, ACTIVE, is how a change starts. Never send twice within `settle`.
    if clock.settling() && current.inaccessible_since.is_none() {
        return Step::Wait;
    }
    if current.table_status != TABLE_ACTIVE {
        return Step::Retry {
            reason: ItemReason::TableNotActive,
            message: format!("table is {}", current.table_status),
        };
    }
    if let Some(since) = current.inaccessible_since {
        return Step::Fail {
            reason: ItemReason::TableInaccessible,
            message: format!("table inaccessible since {since}"),
        };
    }
    if let Some(until) = quota_frees_at {
        return Step::DeferUntil {
            until,
            message: format!("switch quota used up until {until}"),
        };
    }
    Step::Send
}

/// What a poll of a table that is changing towards the target shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollStep {
    /// The target is reached.
    Done,
    /// Still changing, or not yet started: poll again.
    KeepWaiting,
    /// The table is ACTIVE on something else: someone changed it meanwhile.
    SettledElsewhere,
}

/// The step after polling a table we sent an UpdateTable for: done, keep waiting, or (only once `settle` has
/// passed since the send with no sign of the change) settled on something else.
pub fn after_poll(current: &TableEncryption, target: &ApplyTarget, clock: SendClock) -> PollStep {
    if target.reached_by(current) {
        PollStep::Done
    } else if current.table_status == TABLE_ACTIVE && !target.shown_by(current) && !clock.settling()
    {
        PollStep::SettledElsewhere
    } else {
        PollStep::KeepWaiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::ReplicaEncryption;
    use crate::{AccountId, Region, TableName};

    const A: &str = "arn:aws:kms:eu-west-1:111111111111:key/aaaaaaaa-1111-4111-8111-111111111111";
    const B: &str = "arn:aws:kms:eu-west-1:111111111111:key/bbbbbbbb-1111-4111-8111-111111111111";
    const B_US: &str =
        "arn:aws:kms:us-east-1:111111111111:key/bbbbbbbb-2222-4222-8222-222222222222";

    fn table(status: &str, mode: EncryptionMode, key: Option<&str>, sse: &str) -> TableEncryption {
        TableEncryption {
            account_id: AccountId::parse("111111111111").expect("id"),
            region: Region::parse("eu-west-1").expect("region"),
            table_name: TableName::parse("orders").expect("name"),
            mode,
            key_arn: key.map(str::to_owned),
            sse_status: sse.to_owned(),
            table_status: status.to_owned(),
            inaccessible_since: None,
            replicas: Vec::new(),
            observed_at: DateTime::<Utc>::from_timestamp(1_800_000_000, 0).expect("time"),
        }
    }

    fn to(mode: EncryptionMode, key: Option<&str>) -> ApplyTarget {
        ApplyTarget {
            mode,
            key_arn: key.map(str::to_owned),
            replica_keys: Vec::new(),
        }
    }

    use EncryptionMode::{AwsManaged, AwsOwned, CustomerManaged};

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + seconds, 0).expect("time")
    }

    /// Nothing sent yet.
    fn unsent() -> SendClock {
        SendClock {
            sent_at: None,
            now: at(0),
            settle: chrono::Duration::minutes(5),
        }
    }

    /// Sent `ago` seconds ago, with a five-minute settle timeout.
    fn sent(ago: i64) -> SendClock {
        SendClock {
            sent_at: Some(at(0)),
            now: at(ago),
            settle: chrono::Duration::minutes(5),
        }
    }

    #[test]
    fn done_when_the_table_shows_the_target() {
        let on_b = table("ACTIVE", CustomerManaged, Some(B), "ENABLED");
        let target = to(CustomerManaged, Some(B));
        assert_eq!(
            next_step(&on_b, &target, sent(10), None),
            Step::Done { changed: true }
        );
        assert_eq!(
            next_step(&on_b, &target, unsent(), None),
            Step::Done { changed: false }
        );
        let owned = table("ACTIVE", AwsOwned, None, "");
        assert_eq!(
            next_step(&owned, &to(AwsOwned, None), unsent(), None),
            Step::Done { changed: false }
        );
        let managed = table("ACTIVE", AwsManaged, Some(A), "ENABLED");
        assert_eq!(
            next_step(&managed, &to(AwsManaged, None), sent(10), None),
            Step::Done { changed: true }
        );
    }

    #[test]
    fn a_change_under_way_is_waited_for() {
        let updating = table("UPDATING", CustomerManaged, Some(B), "UPDATING");
        assert_eq!(
            next_step(&updating, &to(CustomerManaged, Some(B)), sent(10), None),
            Step::Wait
        );
        // The key shown but not yet in use is not the end either.
        let enabling = table("ACTIVE", CustomerManaged, Some(B), "UPDATING");
        assert_eq!(
            after_poll(&enabling, &to(CustomerManaged, Some(B)), sent(10)),
            PollStep::KeepWaiting
        );
    }

    #[test]
    fn an_active_table_on_the_old_key_is_sent_the_change() {
        let on_a = table("ACTIVE", CustomerManaged, Some(A), "ENABLED");
        assert_eq!(
            next_step(&on_a, &to(CustomerManaged, Some(B)), unsent(), None),
            Step::Send
        );
    }

    #[test]
    fn a_busy_table_is_retried_and_an_inaccessible_one_fails() {
        let busy = table("UPDATING", CustomerManaged, Some(A), "ENABLED");
        assert!(matches!(
            next_step(&busy, &to(CustomerManaged, Some(B)), unsent(), None),
            Step::Retry {
                reason: ItemReason::TableNotActive,
                ..
            }
        ));
        let mut locked = table("ACTIVE", CustomerManaged, Some(A), "INACCESSIBLE");
        locked.inaccessible_since = Some(locked.observed_at);
        assert!(matches!(
            next_step(&locked, &to(CustomerManaged, Some(B)), unsent(), None),
            Step::Fail {
                reason: ItemReason::TableInaccessible,
                ..
            }
        ));
    }

    #[test]
    fn the_switch_quota_defers_until_it_frees() {
        let on_a = table("ACTIVE", CustomerManaged, Some(A), "ENABLED");
        let until = on_a.observed_at + chrono::Duration::hours(6);
        assert!(matches!(
            next_step(&on_a, &to(CustomerManaged, Some(B)), unsent(), Some(until)),
            Step::DeferUntil { until: u, .. } if u == until
        ));
    }

    #[test]
    fn a_global_table_is_done_only_when_every_replica_shows_its_key() {
        let mut global = table("ACTIVE", CustomerManaged, Some(B), "ENABLED");
        global.replicas = vec![ReplicaEncryption {
            region: "us-east-1".into(),
            status: "ACTIVE".into(),
            key_arn: Some(A.into()),
        }];
        let target = ApplyTarget {
            mode: CustomerManaged,
            key_arn: Some(B.into()),
            replica_keys: vec![("us-east-1".into(), B_US.into())],
        };
        assert_eq!(
            after_poll(&global, &target, sent(600)),
            PollStep::SettledElsewhere
        );
        global.replicas[0].key_arn = Some(B_US.into());
        assert_eq!(after_poll(&global, &target, sent(600)), PollStep::Done);
    }

    #[test]
    fn a_table_settled_on_another_key_is_noticed() {
        let on_a = table("ACTIVE", CustomerManaged, Some(A), "ENABLED");
        assert_eq!(
            after_poll(&on_a, &to(CustomerManaged, Some(B)), sent(600)),
            PollStep::SettledElsewhere
        );
    }

    /// AWS shows the old key, ACTIVE, for the first seconds of an SSE change: after our send that is a change
    /// starting, never a reason to send again, until the settle timeout passes with no sign of it.
    #[test]
    fn the_old_key_after_our_send_is_waited_for_until_the_settle_timeout() {
        let on_a = table("ACTIVE", CustomerManaged, Some(A), "ENABLED");
        let target = to(CustomerManaged, Some(B));
        for ago in [0, 8, 25, 299] {
            assert_eq!(
                next_step(&on_a, &target, sent(ago), None),
                Step::Wait,
                "{ago} s"
            );
            assert_eq!(
                after_poll(&on_a, &target, sent(ago)),
                PollStep::KeepWaiting,
                "{ago} s"
            );
        }
        assert_eq!(next_step(&on_a, &target, sent(300), None), Step::Send);
        assert_eq!(
            after_poll(&on_a, &target, sent(300)),
            PollStep::SettledElsewhere
        );
        // AWS's other status names during the change are waited for too.
        let updating = table("ACTIVE", CustomerManaged, None, "UPDATING");
        assert_eq!(
            after_poll(&updating, &target, sent(12)),
            PollStep::KeepWaiting
        );
        assert_eq!(next_step(&updating, &target, sent(12), None), Step::Wait);
    }

    /// A table that became inaccessible fails even while our send settles: waiting would not help.
    #[test]
    fn an_inaccessible_table_fails_while_a_send_settles() {
        let mut locked = table("ACTIVE", CustomerManaged, Some(A), "INACCESSIBLE");
        locked.inaccessible_since = Some(locked.observed_at);
        assert!(matches!(
            next_step(&locked, &to(CustomerManaged, Some(B)), sent(5), None),
            Step::Fail {
                reason: ItemReason::TableInaccessible,
                ..
            }
        ));
    }
}
