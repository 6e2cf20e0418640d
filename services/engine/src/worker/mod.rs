//! Durable workers: claim change items from Postgres under a lease, apply them through the fleet under rate
//! limits shared by every replica, poll until DynamoDB shows the target, and record the outcome.
//!
//! Crash safety: `apply_time` is written before UpdateTable is sent, so an item reclaimed after its worker died
//! looks at the table first and only sends UpdateTable again if the change is not already there or under way.
//! The key-rotation history holds at most one row per item (unique `item_id`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tablecrypt_core::{AccountId, ItemReason};
use tablecrypt_fleet::{AccountAccess, Fleet};
use tablecrypt_store::{ItemEnd, Store, StoreError};
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::metrics::EngineMetrics;

/// Most items one claim takes, however many permits are free: one claim transaction stays short (it holds the
/// claim lock every replica takes turns on).
const CLAIM_BATCH: usize = 256;
/// Pause between claims while claims find work: lets the items just started take their rate slots first.
const CLAIM_AGAIN_AFTER: Duration = Duration::from_millis(20);
/// While nearly every permit is taken, a claim waits until this share of them (1/8, at most a full claim) is
/// free, or [`FEW_FREE_CLAIM_AFTER`] has passed. A claim ranks every claimable item under the lock every replica
/// takes turns on (19 ms of database time for 10,000 items in the migration benchmark), whatever it takes:
/// claiming each permit as it came free cost about 3.5 claims a second per worker there, for items that then
/// waited seconds for their rate slots anyway.
const FEW_FREE_SHARE: usize = 8;
/// The longest a free permit waits for others before it is claimed for alone: an item becoming due (a retry, a
/// newly approved request) starts within about a second while the worker is busy.
const FEW_FREE_CLAIM_AFTER: Duration = Duration::from_secs(1);
/// First and longest wait between retries of a store write while the database is unreachable (a restart takes
/// seconds; a longer wait only delays recovery).
const STORE_RETRY_INITIAL: Duration = Duration::from_millis(200);
const STORE_RETRY_MAX: Duration = Duration::from_secs(5);
/// Wait before an item whose store write failed is tried again.
const STORE_FAILURE_BACKOFF: Duration = Duration::from_secs(1);

/// How long a worker trusts an account's role as read: short, so an UpdateAccount (a rotated external id, a new
/// role) or a deregistration reaches items in flight within seconds, long enough that a busy account-region
/// reads its account row a few times a minute rather than once per item pass.
const ACCOUNT_CACHE_TTL: Duration = Duration::from_secs(10);

/// How far ahead a worker may reserve an UpdateTable slot ("about a second", ../shared/QUEUE-NOTES.md): slots
/// reserved further ahead by a worker that stalls or dies would idle the account-region, and pile up into a
/// burst after a stall.
const SLOT_LOOKAHEAD: Duration = Duration::from_secs(1);
/// How late after its slot a send may still go. Later than this (a database stall between the slot and the
/// send) the slot is dropped and a fresh one taken: a missed slot is never saved up.
const SLOT_WINDOW: Duration = Duration::from_millis(100);
/// The least lateness a send is allowed, whatever the rate: a timer's wake on a busy two-core machine is late by
/// milliseconds, so a scope whose spacing is below this (above 100 calls/s) would otherwise miss every slot. At
/// such rates it lets a second hold 1% more than the rate.
const WAKE_SLACK: Duration = Duration::from_millis(10);
/// A slot answered later than this after it was asked for is not used: answers delayed together (a stall after
/// the database handed the slots out) would send together. Well above the round trip of a busy database, so a
/// loaded one still hands out slots.
const SLOW_ANSWER: Duration = Duration::from_secs(1);
/// How far ahead of now a slot is first reserved, at least: the time to mark the item applying (a database write)
/// before the slot, so the send goes at the slot. The lead in use is learned from how long marks take (twice
/// their moving average), and doubled after each slot a slow database made the send miss, up to half of
/// [`SLOT_LOOKAHEAD`], so a loaded database still sends (a slot due the moment it was reserved was missed by
/// every send once the fleet rate's spacing fell below a database round trip).
const SLOT_LEAD: Duration = Duration::from_millis(50);
/// The lead a process starts with, before it has timed any mark: a new process (a restarted worker) meets a
/// database already busy with the others, on a pool still opening connections, so its marks are slow at first.
/// Starting at the floor, a restarted worker missed nearly every slot it reserved for its first seconds, and
/// the whole fleet's sends fell to a few a second after each kill -9 in the migration benchmark. From here the
/// lead learns down (or up) within a few dozen marks; a longer lead only marks the item earlier.
const FIRST_SEND_LEAD: Duration = Duration::from_millis(250);
/// The shortest wait before asking again for a slot when none is within reach, so waiting workers do not
/// hammer the scope's row (the database says when the next slot comes within reach; this bounds a wait of 0,
/// a slot another replica just took).
const SLOT_RETRY_MIN: Duration = Duration::from_millis(50);

/// How workers behave; from the server's configuration.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// How long a claim is good for without a heartbeat; a dead worker's items are reclaimed after this.
    pub lease: Duration,
    /// How often to look for claimable items when there were none.
    pub claim_interval: Duration,
    /// Items this process works on at once.
    pub concurrency: usize,
    /// UpdateTable calls per second per account-region (all replicas together).
    pub update_rate: f64,
    /// UpdateTable calls per second across the fleet (all replicas together).
    pub global_update_rate: f64,
    /// DescribeTable polls per second per account-region (all replicas together).
    pub poll_rate: f64,
    /// Tables updating at once per account-region (AWS allows 500).
    pub max_in_flight: u32,
    /// First wait before polling an updating table; doubles up to `poll_max`.
    pub poll_initial: Duration,
    pub poll_max: Duration,
    /// First wait after throttling or a transient error; doubles (with jitter) up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// How long a sent UpdateTable may take to show before the item sends it again (which spends one of the
    /// table's switches on AWS). AWS shows the old key, ACTIVE, for the first seconds of a change.
    pub settle_timeout: Duration,
    /// The schema migrations this binary knows (`tablecrypt_store::schema::known_migrations`): while the
    /// database has another one (a rolling upgrade), this worker claims nothing.
    pub known_migrations: Vec<i64>,
}

/// Why a worker claims nothing: the database's schema is newer than its binary knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaFence {
    /// The newest migration applied to the database.
    pub database: i64,
    /// The newest migration this binary knows.
    pub binary: i64,
}

/// The worker pool of one process.
#[derive(Clone)]
pub struct Workers {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    fleet: Arc<Fleet>,
    settings: WorkerSettings,
    /// This process's lease identity.
    owner: Uuid,
    permits: Arc<Semaphore>,
    /// Each account's role as last read, and when.
    accounts: Mutex<HashMap<String, (AccountAccess, Instant)>>,
    /// The items this process's tasks work on: each claim's lease token, and how to stop its task once the
    /// heartbeat finds the lease lost.
    held: std::sync::Mutex<HashMap<i64, Held>>,
    /// How far ahead a send's slot is reserved, learned from how long marking items takes here (see
    /// `send_lead`).
    send_lead: std::sync::Mutex<Duration>,
    /// One queue per set of rate-limited scopes: this process's tasks take turns asking the database for slots.
    slot_queues: std::sync::Mutex<HashMap<String, Arc<pace::SlotQueue>>>,
    /// Set while the database's schema is newer than this binary: read by the server's health reporting.
    schema_fence: tokio::sync::watch::Sender<Option<SchemaFence>>,
    metrics: EngineMetrics,
}

/// One item a task of this process works on.
struct Held {
    token: i64,
    cancel: CancellationToken,
}

/// Why an item stops being worked on by this worker.
enum Stop {
    Done(ItemEnd),
    Defer {
        after: Duration,
        until_quota: Option<chrono::DateTime<Utc>>,
        /// None: not a problem (the request was paused before anything was sent).
        reason: Option<ItemReason>,
        message: String,
        /// AWS rejected this attempt's UpdateTable, so the table is not changing because of us: clear
        /// `apply_time`. Otherwise (a poll was throttled, the table is busy) an earlier send may still land.
        rejected: bool,
        /// AWS answered this attempt's UpdateTable with a 5xx: counted, so such retries stay bounded.
        server_error: bool,
    },
}

impl Stop {
    /// This pass sent nothing: an apply_time it wrote must not make the next pass wait for a change that never
    /// went out, while an earlier pass's send (`sent_before`) may still be in flight and is kept.
    fn not_sent(mut self, sent_before: bool) -> Self {
        if let Self::Defer { rejected, .. } = &mut self {
            *rejected = !sent_before;
        }
        self
    }
}

impl Workers {
    pub fn new(
        store: Store,
        fleet: Arc<Fleet>,
        settings: WorkerSettings,
        metrics: EngineMetrics,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(settings.concurrency.max(1))),
                store,
                fleet,
                settings,
                owner: Uuid::new_v4(),
                accounts: Mutex::new(HashMap::new()),
                held: std::sync::Mutex::new(HashMap::new()),
                send_lead: std::sync::Mutex::new(FIRST_SEND_LEAD),
                slot_queues: std::sync::Mutex::new(HashMap::new()),
                schema_fence: tokio::sync::watch::Sender::new(None),
                metrics,
            }),
        }
    }

    /// Whether this worker is fenced off by a newer schema, now and as it changes.
    pub fn schema_fence(&self) -> tokio::sync::watch::Receiver<Option<SchemaFence>> {
        self.inner.schema_fence.subscribe()
    }

    /// Runs the claim loop and the heartbeat until `shutdown`; items in progress are tracked by `tracker` and
    /// stop at their next step once `shutdown` fires (their leases are released so another worker resumes them).
    pub async fn run(self, tracker: TaskTracker, shutdown: CancellationToken) {
        tracing::info!(owner = %self.inner.owner, "change workers started");
        let heartbeat = {
            let inner = self.inner.clone();
            let token = shutdown.clone();
            tracker.spawn(inner.heartbeat(token))
        };
        let items = TaskTracker::new();
        let mut claimed_at = Instant::now();
        loop {
            let available = self.inner.permits.available_permits();
            let claiming = claim_now(
                available,
                self.inner.settings.concurrency,
                claimed_at.elapsed(),
            );
            let claimed = if !claiming {
                // No claim to find out by: ask, so health reports a newer schema while (nearly) every permit
                // is taken.
                match self
                    .inner
                    .store
                    .change_items
                    .schema_fence(&self.inner.settings.known_migrations)
                    .await
                {
                    Ok(()) => self.inner.set_schema_fence(None),
                    Err(StoreError::SchemaAhead { database, binary }) => self
                        .inner
                        .set_schema_fence(Some(SchemaFence { database, binary })),
                    Err(_) => {}
                }
                Vec::new()
            } else {
                claimed_at = Instant::now();
                match self
                    .inner
                    .store
                    .change_items
                    .claim(
                        self.inner.owner,
                        self.inner.settings.lease.as_secs_f64(),
                        i64::from(self.inner.settings.max_in_flight),
                        available.min(CLAIM_BATCH) as i64,
                        &self.inner.held_items(),
                        &self.inner.settings.known_migrations,
                    )
                    .await
                {
                    Ok(claimed) => {
                        self.inner.set_schema_fence(None);
                        claimed
                    }
                    Err(StoreError::SchemaAhead { database, binary }) => {
                        self.inner
                            .set_schema_fence(Some(SchemaFence { database, binary }));
                        Vec::new()
                    }
                    Err(error) => {
                        tracing::warn!(%error, "claiming change items failed; retrying");
                        Vec::new()
                    }
                }
            };
            let got = claimed.len();
            for item in claimed {
                let Ok(permit) = self.inner.permits.clone().acquire_owned().await else {
                    break;
                };
                let inner = self.inner.clone();
                let token = shutdown.clone();
                items.spawn(async move {
                    inner.process(item, token).await;
                    drop(permit);
                });
            }
            let pause = if got > 0 {
                CLAIM_AGAIN_AFTER
            } else if available > 0 && !claiming {
                // A few permits free: look again when they may be claimed for alone, or sooner if more free up.
                FEW_FREE_CLAIM_AFTER
                    .saturating_sub(claimed_at.elapsed())
                    .clamp(
                        CLAIM_AGAIN_AFTER,
                        self.inner.settings.claim_interval.max(CLAIM_AGAIN_AFTER),
                    )
            } else {
                self.inner.settings.claim_interval
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = shutdown.cancelled() => break,
            }
        }
        items.close();
        items.wait().await;
        // Hand what we held back at once instead of waiting for the leases to expire.
        let held = self.inner.held_leases();
        if let Err(error) = self.inner.store.change_items.release(&held).await {
            tracing::warn!(%error, "releasing leases at shutdown failed; they expire on their own");
        }
        let _ = heartbeat.await;
        tracing::info!("change workers stopped");
    }
}

/// Whether a worker with `available` of its `concurrency` permits free, `since` its last claim, claims now: when
/// an eighth of its permits are free (a full claim's worth at most), or any are and [`FEW_FREE_CLAIM_AFTER`] has
/// passed.
fn claim_now(available: usize, concurrency: usize, since: Duration) -> bool {
    available >= (concurrency / FEW_FREE_SHARE).clamp(1, CLAIM_BATCH)
        || (available > 0 && since >= FEW_FREE_CLAIM_AFTER)
}

impl Inner {
    /// Records whether the schema fences this worker off, saying so once each time it changes. Items this
    /// worker already holds finish (they were claimed under the schema they were written with).
    fn set_schema_fence(&self, fence: Option<SchemaFence>) {
        self.schema_fence.send_if_modified(|current| {
            if *current == fence {
                return false;
            }
            match fence {
                Some(SchemaFence { database, binary }) => tracing::warn!(
                    database_schema = database,
                    binary_schema = binary,
                    "the database schema is newer than this binary knows: this worker claims no change items \
                     until it is upgraded (a rolling upgrade in progress?); health reports tablecrypt.worker \
                     NOT_SERVING"
                ),
                None if current.is_some() => {
                    tracing::info!("the database schema is one this binary knows again: claiming change items");
                }
                None => {}
            }
            *current = fence;
            true
        });
    }

    /// Renews leases every third of a lease, on its own: the sweep and the gauges run beside it, so they can
    /// never delay a renewal past the lease.
    async fn heartbeat(self: Arc<Self>, shutdown: CancellationToken) {
        let every = self.settings.lease / 3;
        let upkeep = {
            let inner = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(every) => {}
                        () = shutdown.cancelled() => return,
                    }
                    inner.refresh_item_gauges().await;
                    if let Err(error) = inner.store.change_items.sweep().await {
                        tracing::warn!(%error, "settling change requests failed");
                    }
                }
            })
        };
        let mut renewed_at = Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.cancelled() => break,
            }
            if self.renew_leases().await {
                renewed_at = Instant::now();
            } else if renewed_at.elapsed() >= self.settings.lease {
                // No renewal for a whole lease: every lease may have expired and been taken over.
                self.stop_every_task();
            }
        }
        let _ = upkeep.await;
    }

    /// Stops every task: this process can no longer be sure it holds any lease.
    fn stop_every_task(&self) {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !held.is_empty() {
            tracing::warn!(
                tasks = held.len(),
                "leases not renewed for a whole lease; stopping every item task"
            );
        }
        for (_, task) in held.drain() {
            task.cancel.cancel();
        }
    }

    /// Extends the leases this process's tasks hold; a task whose lease was lost (it expired during a stall, or
    /// another claim took the item) is stopped before it writes or sends anything more. A task that recorded
    /// its outcome just before the heartbeat is left to finish, quietly. Returns whether the database answered.
    async fn renew_leases(&self) -> bool {
        let held = self.held_leases();
        if held.is_empty() {
            return true;
        }
        match self
            .store
            .change_items
            .heartbeat(&held, self.settings.lease.as_secs_f64())
            .await
        {
            Ok(lost) => {
                let lost: std::collections::HashSet<i64> = lost.into_iter().collect();
                let mut tasks = self
                    .held
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (item_id, token) in held {
                    if lost.contains(&item_id)
                        && let Some(task) = tasks.get(&item_id).filter(|h| h.token == token)
                    {
                        tracing::warn!(item = item_id, "lease lost; stopping the item's task");
                        task.cancel.cancel();
                        tasks.remove(&item_id);
                    }
                }
                true
            }
            Err(error) => {
                tracing::warn!(%error, "lease heartbeat failed");
                false
            }
        }
    }

    /// Registers a task's claim; its token is cancelled at shutdown or when the lease is lost.
    fn hold(&self, item_id: i64, token: i64, shutdown: &CancellationToken) -> CancellationToken {
        let cancel = shutdown.child_token();
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                item_id,
                Held {
                    token,
                    cancel: cancel.clone(),
                },
            );
        cancel
    }

    /// The task of claim `token` is done with the item (its outcome written, or nothing left to write). A later
    /// claim of the same item by another task of this process is left registered.
    fn forget(&self, item_id: i64, token: i64) {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if held.get(&item_id).is_some_and(|h| h.token == token) {
            held.remove(&item_id);
        }
    }

    fn held_leases(&self) -> Vec<(i64, i64)> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(id, held)| (*id, held.token))
            .collect()
    }

    fn held_items(&self) -> Vec<i64> {
        self.held_leases().into_iter().map(|(id, _)| id).collect()
    }

    /// Items by state, from the database (every process reports the same fleet-wide numbers).
    async fn refresh_item_gauges(&self) {
        match self.store.change_items.live_counts().await {
            Ok(counts) => {
                self.metrics.items.reset();
                for (state, n) in counts {
                    self.metrics
                        .items
                        .with_label_values(&[state.as_str()])
                        .set(n);
                }
            }
            Err(error) => tracing::debug!(%error, "could not refresh the items-by-state gauge"),
        }
    }

    /// The account's role, or why the item cannot go on: a deregistered account fails it; our own database
    /// being unavailable only defers it. Remembered for [`ACCOUNT_CACHE_TTL`], so an UpdateAccount (a new role,
    /// a rotated external id) reaches running workers without a restart.
    async fn access(&self, account_id: &AccountId) -> Result<AccountAccess, Stop> {
        if let Some((access, read_at)) = self.accounts.lock().await.get(account_id.as_str())
            && read_at.elapsed() < ACCOUNT_CACHE_TTL
        {
            return Ok(access.clone());
        }
        let account = match self.store.accounts.get(account_id).await {
            Ok(account) => account,
            Err(e @ StoreError::NotFound { .. }) => {
                return Err(Stop::Done(failed(
                    ItemReason::AccountUnreachable,
                    format!("account {account_id}: {e}"),
                )));
            }
            Err(e) => return Err(lost_or_retry(e)),
        };
        let access = AccountAccess::of(&account);
        self.accounts
            .lock()
            .await
            .insert(account_id.to_string(), (access.clone(), Instant::now()));
        Ok(access)
    }
}

mod item;
mod pace;

use item::{failed, lost_or_retry};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_worker_claims_when_an_eighth_of_its_permits_are_free_or_after_a_second() {
        let now = Duration::ZERO;
        // 2,000 permits: 249 free wait for more, 250 claim at once; after a second even one claims.
        assert!(!claim_now(249, 2000, now));
        assert!(claim_now(250, 2000, now));
        assert!(!claim_now(1, 2000, Duration::from_millis(999)));
        assert!(claim_now(1, 2000, FEW_FREE_CLAIM_AFTER));
        // Nothing free: no claim, however long ago the last one was.
        assert!(!claim_now(0, 2000, Duration::from_secs(3600)));
        // Fewer than sixteen permits: any free permit is claimed at once; sixteen wait for two.
        assert!(claim_now(1, 15, now));
        assert!(claim_now(1, 1, now));
        assert!(!claim_now(1, 16, now));
        assert!(claim_now(2, 16, now));
        // Above 2,048 permits, a full claim (256) is enough: 4,000 do not wait for 500.
        assert!(claim_now(CLAIM_BATCH, 4000, now));
        assert!(!claim_now(CLAIM_BATCH - 1, 4000, now));
    }
}
