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
/// SSEDescription.Status values while an encryption change runs (AWS documents UPDATING; ENABLING and DISABLING
/// are the older names).
const SSE_CHANGING: [&str; 3] = ["UPDATING", "ENABLING", "DISABLING"];
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

    /// The table's own region shows the target, ACTIVE and in use; replicas aside. The AWS owned key has no
    /// SSEDescription once in use; while a change to it runs AWS shows `{Status: UPDATING}` with no key, which is
    /// not there yet.
    pub fn home_reached_by(&self, current: &TableEncryption) -> bool {
        current.table_status == TABLE_ACTIVE
            && self.home_shown_by(current)
            && match self.mode {
                EncryptionMode::AwsOwned => !SSE_CHANGING.contains(&current.sse_status.as_str()),
                _ => current.sse_status == SSE_ENABLED,
            }
    }

    /// The regions whose copy of the table `call` changes, each spending one of that copy's switches when AWS
    /// accepts it: [`Call::regions_changed`], and for an AWS managed / AWS owned change of the table's own
    /// encryption every replica too (AWS applies those to every replica).
    pub fn regions_changed(&self, call: &Call, region: &str) -> Vec<String> {
        let mut regions = call.regions_changed(region);
        if *call == Call::Sse && self.mode != EncryptionMode::CustomerManaged {
            regions.extend(self.replica_keys.iter().map(|(r, _)| r.clone()));
        }
        regions
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

/// Why a table whose key became inaccessible cannot be changed (planning blocks it, a worker fails it), naming
/// the key to enable again.
pub fn inaccessible_message(key_arn: Option<&str>, since: DateTime<Utc>) -> String {
    let key = key_arn.map_or_else(|| "its key".to_owned(), |arn| format!("its key {arn}"));
    format!(
        "the table cannot use {key} since {since} (disabled, pending deletion or its grant revoked): DynamoDB \
         cannot re-encrypt it away from a key it cannot use; enable that key again (and restore its grant), wait \
         for the table to be ACTIVE, then retry"
    )
}

/// Why an archived table cannot be changed (planning blocks it, a worker fails it).
pub fn archived_message(table_status: &str) -> String {
    format!(
        "table is {table_status}: DynamoDB archived it after its key was inaccessible for 7 days; restore it from \
         the archival backup (with the old key enabled) first"
    )
}

/// DynamoDB archived the table, or is archiving it.
pub fn archived(current: &TableEncryption) -> bool {
    TABLE_ARCHIVED_STATES.contains(&current.table_status.as_str())
}

/// A replica of the table is being created, changed or deleted.
fn replicas_busy(current: &TableEncryption) -> bool {
    current
        .replicas
        .iter()
        .any(|r| REPLICA_BUSY.contains(&r.status.as_str()))
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
    /// The regions whose copy of the table this call changes, each spending one of that copy's switches when
    /// AWS accepts it: the table's own region (`region`), a replica's, or the replicas a key update names.
    pub fn regions_changed(&self, region: &str) -> Vec<String> {
        match self {
            Self::Sse => vec![region.to_owned()],
            Self::ReplicaKeys(keys) => keys.iter().map(|(region, _)| region.clone()).collect(),
            Self::ReplicaSse(replica) => vec![replica.clone()],
        }
    }

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
    /// [`Call::Sse`].
    Sse,
    /// [`Call::ReplicaKeys`].
    ReplicaKeys,
    /// [`Call::ReplicaSse`].
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
    /// owned SSE change that AWS applies to the replicas too. `None` (a send recorded before calls were): the
    /// engine then sent SSE and replica keys in one call, so it may bring any.
    fn may_bring(last: Option<Self>, next: Self) -> bool {
        match last {
            None => true,
            Some(last) => last == next || (last == Self::Sse && next == Self::ReplicaSse),
        }
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
        self.settling() && CallKind::may_bring(self.last_call, call.kind())
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
    if archived(current) {
        return Step::Fail {
            reason: ItemReason::TableArchived,
            message: archived_message(&current.table_status),
        };
    }
    // Inaccessible (its key unusable): no call can help and no waiting either, whatever was sent.
    if let Some(since) = current.inaccessible_since {
        return Step::Fail {
            reason: ItemReason::TableInaccessible,
            message: inaccessible_message(current.key_arn.as_deref(), since),
        };
    }
    if current.table_status == TABLE_UPDATING && target.home_shown_by(current) {
        return Step::Wait;
    }
    if replicas_busy(current) {
        return Step::Wait;
    }
    // Shown but not yet in use (SSE status UPDATING): under way.
    let Some(call) = target.needed_call(current) else {
        return Step::Wait;
    };
    // Our send may not show yet: the old key, ACTIVE, is how a change starts. Never send twice within `settle`.
    if clock.settling_towards(&call) {
        return Step::Wait;
    }
    if current.table_status != TABLE_ACTIVE {
        return Step::Retry {
            reason: ItemReason::TableNotActive,
            message: format!("table is {}", current.table_status),
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
    /// Look again and act on it: the last call took effect and another is needed (a global table's replicas), or
    /// the table became inaccessible or archived (a verdict, not a wait).
    Look,
    /// The table is ACTIVE on something else: someone changed it meanwhile.
    SettledElsewhere,
}

/// The step after polling a table we sent an UpdateTable for: done, keep waiting, the next call, or (only once
/// `settle` has passed since the send with no sign of the change) settled on something else.
pub fn after_poll(current: &TableEncryption, target: &ApplyTarget, clock: SendClock) -> PollStep {
    if target.reached_by(current) {
        return PollStep::Done;
    }
    if archived(current) || current.inaccessible_since.is_some() {
        return PollStep::Look;
    }
    if current.table_status != TABLE_ACTIVE || replicas_busy(current) {
        return PollStep::KeepWaiting;
    }
    match target.needed_call(current) {
        None => PollStep::KeepWaiting,
        Some(call) if clock.settling_towards(&call) => PollStep::KeepWaiting,
        // The table's own encryption is not (or no longer) the target: someone else's change won, or ours left
        // no sign within the settle timeout. Sending it again spends a switch: a retry, counted and backed off.
        Some(Call::Sse) => PollStep::SettledElsewhere,
        // The last call shows (or had its time to bring the replicas along); the next one is of another kind.
        Some(call) if Some(call.kind()) != clock.last_call => PollStep::Look,
        Some(_) => PollStep::SettledElsewhere,
    }
}

#[cfg(test)]
mod tests;
