//! What a worker does next for an item, decided from what DescribeTable shows. The worker performs the step and
//! asks again; nothing here does I/O.
//!
//! A change is one or more UpdateTable calls, each with one concern, as AWS requires ("... must be the only
//! operation in the request"): the table's own encryption first; then, for a global table whose replicas did not
//! follow, the replicas' customer managed keys (`ReplicaUpdates` alone) or, for AWS managed / AWS owned targets,
//! one call in each lagging replica's own region.

use chrono::{DateTime, Utc};

use crate::change::ItemReason;
use crate::table::{EncryptionMode, TableEncryption};

/// DynamoDB's TableStatus of a table that can be changed.
pub const TABLE_ACTIVE: &str = "ACTIVE";
/// DynamoDB's TableStatus while a change runs.
pub const TABLE_UPDATING: &str = "UPDATING";
/// SSEDescription.Status once a key is in use.
pub const SSE_ENABLED: &str = "ENABLED";
/// TableStatus of a table DynamoDB is archiving or has archived (inaccessible for 7 days): only a restore helps.
pub const TABLE_ARCHIVED_STATES: [&str; 2] = ["ARCHIVING", "ARCHIVED"];
/// ReplicaStatus values of a replica that is busy.
const REPLICA_BUSY: [&str; 3] = ["CREATING", "UPDATING", "DELETING"];

/// What an item must reach: the mode, the key ARN in the table's region, and a global table's replica keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyTarget {
    pub mode: EncryptionMode,
    /// The key ARN in the table's region (CUSTOMER_MANAGED only).
    pub key_arn: Option<String>,
    /// For a global table: each replica region and the key it must show (its customer managed key, or its
    /// region's AWS managed key); `None` for the AWS owned key.
    pub replica_keys: Vec<(String, Option<String>)>,
}

impl ApplyTarget {
    /// DescribeTable shows the target: ACTIVE, the mode, the key (and every replica's key), and the key in use.
    pub fn reached_by(&self, current: &TableEncryption) -> bool {
        self.home_reached_by(current) && self.lagging_replicas(current).is_empty()
    }

    /// The table's own region shows the target, ACTIVE and in use; replicas aside.
    fn home_reached_by(&self, current: &TableEncryption) -> bool {
        current.table_status == TABLE_ACTIVE
            && self.home_shown_by(current)
            && (self.mode == EncryptionMode::AwsOwned || current.sse_status == SSE_ENABLED)
    }

    /// The table's own region reports the target's encryption, though it may still be UPDATING.
    fn home_shown_by(&self, current: &TableEncryption) -> bool {
        let key_ok = match self.mode {
            EncryptionMode::CustomerManaged => current.key_arn == self.key_arn,
            _ => true,
        };
        current.mode == self.mode && key_ok
    }

    /// The table's reported encryption is the target's, every replica's included, though it may still be UPDATING.
    pub fn shown_by(&self, current: &TableEncryption) -> bool {
        self.home_shown_by(current) && self.lagging_replicas(current).is_empty()
    }

    /// Replicas that do not show their target key yet, or are still changing.
    fn lagging_replicas(&self, current: &TableEncryption) -> Vec<(String, Option<String>)> {
        self.replica_keys
            .iter()
            .filter(|(region, key)| {
                !current.replicas.iter().any(|r| {
                    &r.region == region
                        && r.key_arn == *key
                        && !REPLICA_BUSY.contains(&r.status.as_str())
                })
            })
            .cloned()
            .collect()
    }

    /// The call that moves the table towards the target from what DescribeTable shows; `None` once it shows it.
    pub fn needed_call(&self, current: &TableEncryption) -> Option<Call> {
        if !self.home_reached_by(current) {
            // Shown but not yet ACTIVE and in use: under way, nothing to send.
            return (!self.home_shown_by(current)).then_some(Call::Sse);
        }
        let lagging = self.lagging_replicas(current);
        if lagging.is_empty() {
            return None;
        }
        if self.mode == EncryptionMode::CustomerManaged {
            Some(Call::ReplicaKeys(
                lagging
                    .into_iter()
                    .filter_map(|(region, key)| Some((region, key?)))
                    .collect(),
            ))
        } else {
            lagging
                .into_iter()
                .next()
                .map(|(region, _)| Call::ReplicaSse(region))
        }
    }
}

/// One UpdateTable with one concern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `SSESpecification` alone, in the table's region. On AWS, AWS managed and AWS owned set this way apply to
    /// every replica of a global table.
    Sse,
    /// `ReplicaUpdates` alone, from the table's region: each (replica region, its customer managed key).
    ReplicaKeys(Vec<(String, String)>),
    /// `SSESpecification` alone, in this replica's own region: an AWS managed / AWS owned target the replica did
    /// not follow.
    ReplicaSse(String),
}

impl Call {
    pub fn kind(&self) -> CallKind {
        match self {
            Self::Sse => CallKind::Sse,
            Self::ReplicaKeys(_) => CallKind::ReplicaKeys,
            Self::ReplicaSse(_) => CallKind::ReplicaSse,
        }
    }
}

/// Which concern an UpdateTable carried, as stored with the time it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Sse,
    ReplicaKeys,
    ReplicaSse,
}

impl CallKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sse => "SSE",
            Self::ReplicaKeys => "REPLICA_KEYS",
            Self::ReplicaSse => "REPLICA_SSE",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Sse, Self::ReplicaKeys, Self::ReplicaSse]
            .into_iter()
            .find(|k| k.as_str() == text)
    }

    /// Whether a send of `self` may still be taking effect as `next`: the same call, or an AWS managed / AWS
    /// owned SSE change that AWS applies to the replicas too.
    fn may_bring(self, next: Self) -> bool {
        self == next || (self == Self::Sse && next == Self::ReplicaSse)
    }
}

/// What to do for an item after looking at its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The table shows the target. `changed`: our UpdateTable did it (a history row); else it already had it.
    Done { changed: bool },
    /// The change is under way: poll until it ends.
    Wait,
    /// Send this UpdateTable (after taking a rate slot).
    Send(Call),
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
    /// Which call that was (`None` from before calls were recorded: taken as the table's own SSE call).
    pub last_call: Option<CallKind>,
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

    /// The last send may still bring about `call`.
    fn settling_towards(&self, call: &Call) -> bool {
        self.settling()
            && self
                .last_call
                .unwrap_or(CallKind::Sse)
                .may_bring(call.kind())
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
    if TABLE_ARCHIVED_STATES.contains(&current.table_status.as_str()) {
        return Step::Fail {
            reason: ItemReason::TableArchived,
            message: format!(
                "table is {}: DynamoDB archived it after its key was inaccessible for 7 days; restore it from the \
                 archival backup (with the old key enabled) first",
                current.table_status
            ),
        };
    }
    if current.table_status == TABLE_UPDATING && target.home_shown_by(current) {
        return Step::Wait;
    }
    if current
        .replicas
        .iter()
        .any(|r| REPLICA_BUSY.contains(&r.status.as_str()))
    {
        return Step::Wait;
    }
    // Shown but not yet in use (SSE status UPDATING): under way.
    let Some(call) = target.needed_call(current) else {
        return Step::Wait;
    };
    // Our send may not show yet: the old key, ACTIVE, is how a change starts. Never send twice within `settle`.
    if clock.settling_towards(&call) && current.inaccessible_since.is_none() {
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
    Step::Send(call)
}

/// What a poll of a table that is changing towards the target shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollStep {
    /// The target is reached.
    Done,
    /// Still changing, or not yet started: poll again.
    KeepWaiting,
    /// The last call took effect and another is needed (a global table's replicas): look and send it.
    NextCall,
    /// The table is ACTIVE on something else: someone changed it meanwhile.
    SettledElsewhere,
}

/// The step after polling a table we sent an UpdateTable for: done, keep waiting, the next call, or (only once
/// `settle` has passed since the send with no sign of the change) settled on something else.
pub fn after_poll(current: &TableEncryption, target: &ApplyTarget, clock: SendClock) -> PollStep {
    if target.reached_by(current) {
        return PollStep::Done;
    }
    let busy = current.table_status != TABLE_ACTIVE
        || current
            .replicas
            .iter()
            .any(|r| REPLICA_BUSY.contains(&r.status.as_str()));
    let last = clock.last_call.unwrap_or(CallKind::Sse);
    match target.needed_call(current) {
        None => PollStep::KeepWaiting,
        Some(_) if busy => PollStep::KeepWaiting,
        Some(call) if clock.settling_towards(&call) => PollStep::KeepWaiting,
        // The last call shows (or had its time to bring the replicas along); the next one is of another kind.
        Some(call) if call.kind() != last => PollStep::NextCall,
        Some(_) => PollStep::SettledElsewhere,
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
            last_call: None,
            now: at(0),
            settle: chrono::Duration::minutes(5),
        }
    }

    /// Sent `ago` seconds ago, with a five-minute settle timeout.
    fn sent(ago: i64) -> SendClock {
        SendClock {
            sent_at: Some(at(0)),
            last_call: Some(CallKind::Sse),
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
            Step::Send(Call::Sse)
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
            replica_keys: vec![("us-east-1".into(), Some(B_US.into()))],
        };
        // The table's own key shows; the replica's needs its own call, never sent with the SSE change.
        assert_eq!(after_poll(&global, &target, sent(5)), PollStep::NextCall);
        assert_eq!(
            next_step(&global, &target, sent(5), None),
            Step::Send(Call::ReplicaKeys(vec![("us-east-1".into(), B_US.into())]))
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
        assert_eq!(
            next_step(&on_a, &target, sent(300), None),
            Step::Send(Call::Sse)
        );
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

    fn global(home: (EncryptionMode, Option<&str>), replica_key: Option<&str>) -> TableEncryption {
        let mut t = table(
            "ACTIVE",
            home.0,
            home.1,
            if home.1.is_some() { "ENABLED" } else { "" },
        );
        t.replicas = vec![ReplicaEncryption {
            region: "us-east-1".into(),
            status: "ACTIVE".into(),
            key_arn: replica_key.map(str::to_owned),
        }];
        t
    }

    /// A global table to a customer managed key: the table's own SSE call, then the replicas' keys in a call of
    /// their own (AWS refuses SSE and ReplicaUpdates together), each waited for under the settle rule.
    #[test]
    fn a_global_table_moves_in_calls_of_one_concern() {
        let target = ApplyTarget {
            mode: CustomerManaged,
            key_arn: Some(B.into()),
            replica_keys: vec![("us-east-1".into(), Some(B_US.into()))],
        };
        let start = global(
            (CustomerManaged, Some(A)),
            Some("arn:aws:kms:us-east-1:111111111111:key/a"),
        );
        assert_eq!(
            next_step(&start, &target, unsent(), None),
            Step::Send(Call::Sse)
        );
        let home_done = global(
            (CustomerManaged, Some(B)),
            Some("arn:aws:kms:us-east-1:111111111111:key/a"),
        );
        let replicas_sent = SendClock {
            last_call: Some(CallKind::ReplicaKeys),
            ..sent(3)
        };
        // The replica keys were sent: the old replica key showing is how that change starts.
        assert_eq!(
            next_step(&home_done, &target, replicas_sent, None),
            Step::Wait
        );
        assert_eq!(
            after_poll(&home_done, &target, replicas_sent),
            PollStep::KeepWaiting
        );
        let mut replica_busy = global((CustomerManaged, Some(B)), Some(B_US));
        replica_busy.replicas[0].status = "UPDATING".into();
        assert_eq!(
            next_step(&replica_busy, &target, replicas_sent, None),
            Step::Wait
        );
        let done = global((CustomerManaged, Some(B)), Some(B_US));
        assert_eq!(
            next_step(&done, &target, replicas_sent, None),
            Step::Done { changed: true }
        );
    }

    /// AWS managed on a global table: one SSE call, which AWS applies to every replica; a replica that did not
    /// follow within the settle timeout gets its own call in its own region.
    #[test]
    fn an_aws_managed_global_table_is_one_call_unless_a_replica_lags() {
        const M_EU: &str = "arn:aws:kms:eu-west-1:111111111111:key/managed-eu";
        const M_US: &str = "arn:aws:kms:us-east-1:111111111111:key/managed-us";
        let target = ApplyTarget {
            mode: AwsManaged,
            key_arn: None,
            replica_keys: vec![("us-east-1".into(), Some(M_US.into()))],
        };
        let start = global(
            (CustomerManaged, Some(A)),
            Some("arn:aws:kms:us-east-1:111111111111:key/a"),
        );
        assert_eq!(
            next_step(&start, &target, unsent(), None),
            Step::Send(Call::Sse)
        );
        let lagging = global(
            (AwsManaged, Some(M_EU)),
            Some("arn:aws:kms:us-east-1:111111111111:key/a"),
        );
        assert_eq!(next_step(&lagging, &target, sent(20), None), Step::Wait);
        assert_eq!(
            after_poll(&lagging, &target, sent(20)),
            PollStep::KeepWaiting
        );
        assert_eq!(after_poll(&lagging, &target, sent(300)), PollStep::NextCall);
        assert_eq!(
            next_step(&lagging, &target, sent(300), None),
            Step::Send(Call::ReplicaSse("us-east-1".into()))
        );
        let followed = global((AwsManaged, Some(M_EU)), Some(M_US));
        assert_eq!(
            next_step(&followed, &target, sent(20), None),
            Step::Done { changed: true }
        );
    }

    #[test]
    fn an_archived_table_fails_with_its_own_reason() {
        for status in ["ARCHIVING", "ARCHIVED"] {
            let archived = table(status, CustomerManaged, Some(A), "ENABLED");
            assert!(matches!(
                next_step(&archived, &to(CustomerManaged, Some(B)), sent(400), None),
                Step::Fail {
                    reason: ItemReason::TableArchived,
                    ..
                }
            ));
        }
    }

    #[test]
    fn call_kinds_round_trip_their_stored_names() {
        for kind in [CallKind::Sse, CallKind::ReplicaKeys, CallKind::ReplicaSse] {
            assert_eq!(CallKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(CallKind::parse("SSE_AND_REPLICAS"), None);
    }
}
