//! Pacing and looking: rate slots before each UpdateTable, DescribeTable at the poll rate, polling until the
//! target shows, and recording what was seen.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tablecrypt_core::change::apply::{CallKind, PollStep, SendClock, after_poll};
use tablecrypt_core::change::{AwsCall, failure_reason};
use tablecrypt_core::{ItemReason, Region, TableEncryption, TableName};
use tablecrypt_fleet::{AccountAccess, ApplyTarget};

use rand::Rng as _;
use tablecrypt_store::rate_slots::Reserved;
use tablecrypt_store::{ClaimedItem, ItemEnd, SendCheck, StoreError};

use super::item::{failed, lost_or_retry};

use super::{
    Inner, SLOT_LEAD, SLOT_LOOKAHEAD, SLOT_RETRY_MIN, SLOT_WINDOW, SLOW_ANSWER, Stop, WAKE_SLACK,
};

/// The tasks of this process wanting slots in one set of scopes: they take turns asking the database, and slots
/// reserved in a batch wait here, each with how late it may still be taken, for the tasks behind.
#[derive(Default)]
pub(super) struct SlotQueue {
    reserved: tokio::sync::Mutex<VecDeque<(Instant, Duration)>>,
    /// Tasks waiting for their turn: how many slots a batch asks for.
    waiting: AtomicUsize,
}

/// One task counted as waiting in a [`SlotQueue`] for as long as this lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn count(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::Relaxed);
        Self(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The fleet-wide UpdateTable scope: every account-region's sends count against it, so its row is left out of a
/// reservation while the fleet rate cannot bind (see `reserve_rate_slot.sql`).
const FLEET_SCOPE: &str = "update:*";

impl Inner {
    /// The scopes whose limits an UpdateTable of this item counts against, each with its rate: the request's
    /// own pace if it set one (it paces that request only), the account-region's (the account's own limit or the
    /// service's) and the fleet's. Only the service's and accounts' limits reach the shared scopes, so nothing a
    /// request asks for can slow anyone else.
    fn update_scopes(&self, claimed: &ClaimedItem) -> Vec<(String, f64)> {
        let item = &claimed.item;
        let regional = claimed
            .account_update_rate
            .unwrap_or(self.settings.update_rate);
        let mut scopes = Vec::with_capacity(3);
        if let Some(own) = claimed.max_updates_per_second {
            scopes.push((format!("update-request:{}", item.request_id), own));
        }
        scopes.push((
            format!("update:{}:{}", item.table.account_id, item.table.region),
            regional,
        ));
        scopes.push((FLEET_SCOPE.to_owned(), self.settings.global_update_rate));
        scopes
    }

    /// Clears one UpdateTable to be sent now: one slot in every scope that limits it (reserved together), the
    /// item marked applying (fenced: only while this claim holds its lease with a margin, and only for a live
    /// request), and the send at its slot. The mark (a database write) is made before the slot, no further ahead
    /// than half the lease margin it guarantees, so the send goes at the slot and a database round trip never
    /// makes it late. When a stall pushes the mark past the slot by more than the window, a fresh slot is taken
    /// and the lease and request checked again, instead of sending late: a stall never turns into a burst.
    pub(super) async fn clear_to_send(
        &self,
        claimed: &ClaimedItem,
        call: CallKind,
        sent_before: bool,
    ) -> Result<AccountAccess, Stop> {
        let item = &claimed.item;
        let scopes = self.update_scopes(claimed);
        let changes = &self.store.change_items;
        let margin = self.settings.lease / 3;
        let mut marked = false;
        let mut lead = self.send_lead();
        loop {
            let (slot, window) = self
                .reserve_slot(&scopes, lead, false)
                .await
                .map_err(|stop| stop.not_sent(sent_before))?;
            // The check guarantees `margin` of lease after it: made at most margin/2 before the slot, the send at
            // the slot is still covered (with margin/2 to spare for clocks and the call).
            if let Some(check_at) = slot.checked_sub(margin / 2) {
                tokio::time::sleep_until(check_at.into()).await;
            }
            let marking = Instant::now();
            // The account as it is now, before the slot: nothing between the slot and the send may wait.
            let access = self
                .access(&item.table.account_id)
                .await
                .map_err(|stop| stop.not_sent(sent_before))?;
            let check = if marked {
                changes
                    .check_send(item.item_id, claimed.lease_token, margin)
                    .await
            } else {
                changes
                    .mark_applying(
                        item.item_id,
                        claimed.lease_token,
                        call,
                        self.settings.lease,
                        margin,
                    )
                    .await
            };
            let stop = match check {
                Ok(SendCheck::Go) => None,
                Ok(SendCheck::RequestStopped) => Some(Stop::Defer {
                    after: Duration::ZERO,
                    until_quota: None,
                    reason: None,
                    message: "the request was paused or cancelled before UpdateTable was sent"
                        .into(),
                    rejected: true,
                    server_error: false,
                }),
                Ok(SendCheck::LeaseLost) => Some(lost_or_retry(StoreError::LeaseLost {
                    item_id: item.item_id,
                })),
                Err(e) => Some(lost_or_retry(e)),
            };
            if let Some(stop) = stop {
                return Err(stop.not_sent(sent_before));
            }
            marked = true;
            self.learn_send_lead(marking.elapsed());
            if Instant::now() < slot + window {
                tokio::time::sleep_until(slot.into()).await;
                // The wake itself can be late (a busy runtime, a starved machine): a send woken after its window
                // would fall together with the next slot's send, so it takes a fresh slot like a missed one.
                if Instant::now() < slot + window {
                    return Ok(access);
                }
            }
            tracing::debug!(
                ?lead,
                "the send missed its rate slot (a stall or a late wake); taking a fresh one"
            );
            self.metrics.missed_slots.inc();
            lead = (lead * 2).min(SLOT_LOOKAHEAD / 2);
            // The other sends of this process would miss theirs the same way: they start from this lead too.
            self.learn_missed_slot(lead);
        }
    }

    /// How far ahead of now a send's slot is first reserved: twice what marking items took lately in this
    /// process (a moving average), so a loaded database's round trips do not make every send miss its slot
    /// (each miss loses a slot of the account-region's rate); at least [`SLOT_LEAD`], at most half the lookahead.
    fn send_lead(&self) -> Duration {
        *self
            .send_lead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes in how long marking an item took (only marks: a late wake on a starved runtime says nothing of the
    /// database, and is met by that send's own doubled lead).
    fn learn_send_lead(&self, took: Duration) {
        let mut lead = self
            .send_lead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *lead = learned_lead(*lead, took);
    }

    /// A send missed its slot with a lead shorter than `lead`: the process's lead is at least that now.
    fn learn_missed_slot(&self, lead: Duration) {
        let mut learned = self
            .send_lead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *learned = (*learned).max(lead);
    }

    /// The local instant of the next slot in all of `scopes` at once, at least `lead` from now, waiting while
    /// none is within [`SLOT_LOOKAHEAD`] (until the database says one will be, with jitter). Counted from when
    /// the answer arrived, so never earlier than the database's slot; an answer slower than [`SLOW_ANSWER`] is
    /// not used (its slot may fall together with others that were also answered late, a burst), and another slot
    /// is taken. Within this process the tasks wanting the same scopes take turns asking, so a thousand waiting
    /// items are one poller per scope, not a thousand.
    ///
    /// Returns the slot and how late after it the send may still go: a send later than its slot by more than
    /// the spacing of the scopes it was taken in could fall together with the next slot's, so the window is that
    /// spacing (no second holds more than the rate, plus the edge); but never below a timer's wake on a busy
    /// machine (above 100/s that allows 1% over in a second), or no send of a fast scope would ever go. A scope
    /// the reservation left out (the fleet's, while it cannot bind) does not narrow it.
    ///
    /// `batch`: the scopes' slots may be reserved several at once for the tasks waiting their turn here (one
    /// statement for many polls of a busy account-region); a reserved slot nobody takes within its window is
    /// lost, never saved up. Only for calls with nothing to do between the slot and the call (polls): a send's
    /// slot must leave it `lead` to mark its item first.
    pub(super) async fn reserve_slot(
        &self,
        scopes: &[(String, f64)],
        lead: Duration,
        batch: bool,
    ) -> Result<(Instant, Duration), Stop> {
        let queue = self.slot_queue(scopes);
        let mut reserved = {
            // Counted while waiting for the turn, and uncounted however the wait ends (a task whose lease is
            // lost is dropped here): a count left behind would make every later batch ask for slots nobody takes.
            let _waiting = Waiting::count(&queue.waiting);
            queue.reserved.lock().await
        };
        loop {
            let now = Instant::now();
            while let Some((at, window)) = reserved.pop_front() {
                if now + lead < at + window {
                    return Ok((at, window));
                }
            }
            // This task and every task waiting for its turn behind it.
            let wanted = if batch {
                u32::try_from(queue.waiting.load(Ordering::Relaxed) + 1).unwrap_or(u32::MAX)
            } else {
                1
            };
            let asked = Instant::now();
            match self
                .store
                .rate_slots
                .reserve(
                    scopes,
                    lead,
                    SLOT_LOOKAHEAD,
                    Some((FLEET_SCOPE, self.settings.update_rate)),
                    wanted,
                )
                .await
            {
                Ok(Reserved::Slot(slot)) if asked.elapsed() <= SLOW_ANSWER => {
                    let window = slot.spacing.max(WAKE_SLACK).min(SLOT_WINDOW);
                    let first = Instant::now() + slot.wait;
                    // Counted from the answer, the slots are as late as the answer was: one late slot is one
                    // call at most, a late batch would overlap the slots reserved after it. Keep the rest of a
                    // batch only when the answer came within the window.
                    if asked.elapsed() <= window {
                        reserved.extend((1..slot.count).map(|i| (first + slot.step * i, window)));
                    }
                    return Ok((first, window));
                }
                Ok(Reserved::Slot(_)) => {
                    tracing::debug!("a rate slot was answered too late to use")
                }
                Ok(Reserved::NotYet { within_reach_in }) => {
                    let jitter = rand::rng().random_range(1.0..=1.0 + REACH_JITTER);
                    tokio::time::sleep(ask_again_after(within_reach_in, jitter)).await;
                }
                Err(e) => return Err(lost_or_retry(e)),
            }
        }
    }

    /// The local queue of the tasks wanting slots in `scopes`.
    fn slot_queue(&self, scopes: &[(String, f64)]) -> Arc<SlotQueue> {
        let key = scopes
            .iter()
            .map(|(scope, _)| scope.as_str())
            .collect::<Vec<_>>()
            .join("|");
        self.slot_queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone()
    }

    /// A global table is listed in each of its regions; after a change those regions' inventory rows would show
    /// the old keys until the next scan (and GetKeyUsage would call a retired key still in use). Describe the
    /// table in each replica region and record what AWS reports. Best effort: a failure only costs freshness.
    pub(super) async fn refresh_replica_regions(&self, claimed: &ClaimedItem) {
        let item = &claimed.item;
        let regions: Vec<Region> = item
            .replicas
            .iter()
            .filter_map(|r| Region::parse(&r.region).ok())
            .collect();
        if regions.is_empty() {
            return;
        }
        let Ok(access) = self.access(&item.table.account_id).await else {
            return;
        };
        let table = item.table.table_name.clone();
        let poll_rate = claimed.account_poll_rate.unwrap_or(self.settings.poll_rate);
        for region in regions {
            if let Ok(seen) = self.describe(&access, region, &table, poll_rate).await {
                self.record(&seen).await;
            }
        }
    }

    /// Writes what DescribeTable showed to the inventory; a failure only costs freshness.
    pub(super) async fn record(&self, table: &TableEncryption) {
        if let Err(error) = self
            .store
            .inventory
            .record(std::slice::from_ref(table), None)
            .await
        {
            tracing::debug!(%error, "could not record the table in the inventory");
        }
    }

    pub(super) async fn describe(
        &self,
        access: &AccountAccess,
        region: Region,
        table: &TableName,
        poll_rate: f64,
    ) -> Result<TableEncryption, Stop> {
        let scope = format!("describe:{}:{}", access.account_id, region);
        // A poll is a read with nothing to check before it: its slot may be due at once.
        let (at, _) = self
            .reserve_slot(&[(scope, poll_rate)], Duration::ZERO, true)
            .await?;
        tokio::time::sleep_until(at.into()).await;
        let described = self.fleet.describe_table_once(access, region, table).await;
        let outcome = match &described {
            Ok(_) => "OK",
            Err(error) => error.kind.as_str(),
        };
        self.metrics
            .polls
            .with_label_values(&[access.account_id.as_str(), region.as_str(), outcome])
            .inc();
        match described {
            Ok(table) => Ok(table),
            Err(error) => Err(
                match failure_reason(
                    AwsCall::DescribeTable,
                    error.kind,
                    error.role_refused,
                    &error.message,
                ) {
                    // AWS's verdicts about the table or the role; anything else is looked at again later.
                    reason @ (ItemReason::TableNotFound
                    | ItemReason::AccessDenied
                    | ItemReason::AccountUnreachable) => Stop::Done(failed(reason, error.message)),
                    _ => self.retry(0, ItemReason::Throttled, error.message),
                },
            ),
        }
    }

    pub(super) async fn poll_until_done(&self, poll: Poll<'_>) -> Polled {
        let mut wait = self.settings.poll_initial;
        loop {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(self.settings.poll_max);
            let current = match self
                .describe(poll.access, poll.region, poll.table, poll.poll_rate)
                .await
            {
                Ok(current) => current,
                Err(Stop::Defer { .. }) => continue, // throttled or transient: keep polling, slower
                Err(stop) => return Polled::Stop(stop),
            };
            let clock = SendClock {
                sent_at: poll.sent_at,
                last_call: poll.last_call,
                now: poll.db_clock.now(),
                settle: poll.settle,
            };
            match after_poll(&current, poll.target, clock) {
                PollStep::Done => {
                    // Polls are not written to the inventory (they would double the database load); the end is.
                    self.record(&current).await;
                    return Polled::Stop(Stop::Done(ItemEnd::Succeeded { changed: true }));
                }
                PollStep::Look => return Polled::Look,
                PollStep::SettledElsewhere => {
                    // No sign of our change within the settle timeout (or someone else's change won): try again
                    // later, which sends again and spends a switch of the table's quota.
                    return Polled::Stop(self.retry(
                        poll.attempts,
                        ItemReason::AwsError,
                        "the table settled on another key; retrying".into(),
                    ));
                }
                PollStep::KeepWaiting => {}
            }
        }
    }
}

/// How much later than the database said a queue asks again for a slot, at most (a random share of the wait):
/// the replicas' queues waiting on one scope then do not all ask at the same instant.
const REACH_JITTER: f64 = 0.2;

/// How long a queue waits after a reservation found no slot within reach, told the next one comes within reach
/// in `within_reach_in`: not before (asking earlier only finds none again), `jitter` (1 to 1 + [`REACH_JITTER`])
/// times it; at least [`SLOT_RETRY_MIN`], and at most a lookahead, so a scope row that changed under the answer
/// is seen soon (re-created after a crash empties the table, or the fleet's scope no longer left out once an
/// account registers).
fn ask_again_after(within_reach_in: Duration, jitter: f64) -> Duration {
    within_reach_in
        .mul_f64(jitter)
        .clamp(SLOT_RETRY_MIN, SLOT_LOOKAHEAD)
}

/// The send lead after a mark that took `took`: a moving average that settles at twice the marks' time, within
/// [`SLOT_LEAD`] and half of [`SLOT_LOOKAHEAD`].
fn learned_lead(lead: Duration, took: Duration) -> Duration {
    ((lead * 3 + took * 2) / 4).clamp(SLOT_LEAD, SLOT_LOOKAHEAD / 2)
}

/// The database's clock as seen from this task: the claim's `now()` plus the time since it arrived. Deciding
/// with it keeps every replica on the one clock that stamped `apply_time` (replicas' own clocks differ).
#[derive(Debug, Clone, Copy)]
pub(super) struct DbClock {
    at: chrono::DateTime<chrono::Utc>,
    since: Instant,
}

impl DbClock {
    pub(super) fn from_claim(claimed: &ClaimedItem) -> Self {
        Self {
            at: claimed.claimed_at,
            since: claimed.received,
        }
    }

    pub(super) fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.at + chrono::Duration::from_std(self.since.elapsed()).unwrap_or_default()
    }
}

/// How polling ended: with the item's outcome, or with a look to take (the next call of a change in several, or
/// a verdict on a table that became inaccessible or archived).
pub(super) enum Polled {
    Stop(Stop),
    Look,
}

/// What polling one item needs.
pub(super) struct Poll<'a> {
    pub access: &'a AccountAccess,
    pub region: Region,
    pub table: &'a TableName,
    pub target: &'a ApplyTarget,
    pub attempts: i32,
    pub poll_rate: f64,
    /// When the item's UpdateTable was last sent, by the database's clock, and which call it was.
    pub sent_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_call: Option<CallKind>,
    pub db_clock: DbClock,
    /// How long the sent change may take to show (the account's own settle timeout, or the service's).
    pub settle: chrono::Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_dropped_while_waiting_for_its_turn_is_no_longer_counted() {
        let queue = Arc::new(SlotQueue::default());
        let held = queue.reserved.lock().await;
        let waiter = {
            let queue = queue.clone();
            tokio::spawn(async move {
                let _waiting = Waiting::count(&queue.waiting);
                let _turn = queue.reserved.lock().await;
            })
        };
        while queue.waiting.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(queue.waiting.load(Ordering::Relaxed), 0);
        drop(held);
    }

    #[test]
    fn a_queue_asks_again_when_the_next_slot_comes_within_reach_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(ask_again_after(ms(300), 1.0), ms(300));
        assert_eq!(ask_again_after(ms(300), 1.0 + REACH_JITTER), ms(360));
        // A slot just taken by another replica (0): not at once. A slow scope's far slot: within a lookahead.
        assert_eq!(ask_again_after(Duration::ZERO, 1.1), SLOT_RETRY_MIN);
        assert_eq!(
            ask_again_after(Duration::from_secs(99), 1.0),
            SLOT_LOOKAHEAD
        );
    }

    #[test]
    fn the_send_lead_settles_at_twice_the_marks_time_within_its_bounds() {
        let settle = |took: Duration| (0..100).fold(SLOT_LEAD, |lead, _| learned_lead(lead, took));
        let near = |a: Duration, b: Duration| a.abs_diff(b) < Duration::from_millis(2);
        assert!(near(
            settle(Duration::from_millis(80)),
            Duration::from_millis(160)
        ));
        // A fast database keeps the floor; a stalled one is capped, so a send still goes within the lookahead.
        assert_eq!(settle(Duration::from_millis(1)), SLOT_LEAD);
        assert_eq!(settle(Duration::from_secs(30)), SLOT_LOOKAHEAD / 2);
        // One slow mark moves the lead, but not all the way: a single stall does not hold every send back.
        let after_one = learned_lead(SLOT_LEAD, Duration::from_millis(400));
        assert!(
            after_one > SLOT_LEAD && after_one < Duration::from_millis(400),
            "{after_one:?}"
        );
    }
}
