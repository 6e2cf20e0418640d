//! Durable workers: claim change items from Postgres under a lease, apply them through the fleet under rate
//! limits shared by every replica, poll until DynamoDB shows the target, and record the outcome.
//!
//! Crash safety: `apply_time` is written before UpdateTable is sent, so an item reclaimed after its worker died
//! looks at the table first and only sends UpdateTable again if the change is not already there or under way.
//! The key-rotation history holds at most one row per item (unique `item_id`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::Rng as _;
use tablecrypt_core::change::apply::{PollStep, Step, after_poll, next_step};
use tablecrypt_core::change::reason::is_passing;
use tablecrypt_core::change::{AwsCall, failure_reason};
use tablecrypt_core::switch_quota::next_switch_allowed;
use tablecrypt_core::{
    AccountId, EncryptionMode, FailureKind, ItemReason, Region, TableEncryption, TableName,
};
use tablecrypt_fleet::{
    AccountAccess, ApplyTarget, Fleet, FleetError, UpdateOutcome, is_switch_quota,
};
use tablecrypt_store::{ClaimedItem, ItemEnd, Store, StoreError};
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
    accounts: Mutex<HashMap<String, (AccountAccess, std::time::Instant)>>,
    metrics: EngineMetrics,
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
    },
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
                metrics,
            }),
        }
    }

    /// Runs the claim loop and the heartbeat until `shutdown`; items in progress are tracked by `tracker` and
    /// stop at their next step once `shutdown` fires (their leases are released so another worker resumes them).
    pub async fn run(self, tracker: TaskTracker, shutdown: CancellationToken) {
        tracing::info!(owner = %self.inner.owner, "change workers started");
        let heartbeat = {
            let inner = self.inner.clone();
            let token = shutdown.clone();
            tracker.spawn(async move { inner.heartbeat(token).await })
        };
        let items = TaskTracker::new();
        loop {
            let available = self.inner.permits.available_permits();
            let claimed = if available == 0 {
                Vec::new()
            } else {
                match self
                    .inner
                    .store
                    .change_items
                    .claim(
                        self.inner.owner,
                        self.inner.settings.lease.as_secs_f64(),
                        i64::from(self.inner.settings.max_in_flight),
                        available.min(CLAIM_BATCH) as i64,
                    )
                    .await
                {
                    Ok(claimed) => claimed,
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
        if let Err(error) = self.inner.release().await {
            tracing::warn!(%error, "releasing leases at shutdown failed; they expire on their own");
        }
        let _ = heartbeat.await;
        tracing::info!("change workers stopped");
    }
}

impl Inner {
    async fn heartbeat(&self, shutdown: CancellationToken) {
        let every = self.settings.lease / 3;
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.cancelled() => return,
            }
            if let Err(error) = self
                .store
                .change_items
                .heartbeat(self.owner, self.settings.lease.as_secs_f64())
                .await
            {
                tracing::warn!(%error, "lease heartbeat failed");
            }
            self.refresh_item_gauges().await;
            if let Err(error) = self.store.change_items.sweep().await {
                tracing::warn!(%error, "settling change requests failed");
            }
        }
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

    async fn release(&self) -> Result<u64, StoreError> {
        self.store.change_items.heartbeat(self.owner, 0.0).await
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
        self.accounts.lock().await.insert(
            account_id.to_string(),
            (access.clone(), std::time::Instant::now()),
        );
        Ok(access)
    }

    #[tracing::instrument(skip_all, fields(
        change_request = %claimed.item.request_id, item = claimed.item.item_id,
        account_id = %claimed.item.table.account_id, region = %claimed.item.table.region,
        table = %claimed.item.table.table_name))]
    async fn process(&self, claimed: ClaimedItem, shutdown: CancellationToken) {
        if claimed.reclaimed {
            self.metrics.reclaims.inc();
        }
        let outcome = tokio::select! {
            outcome = self.work(&claimed) => outcome,
            () = shutdown.cancelled() => return,
        };
        if matches!(outcome, Stop::Done(ItemEnd::Succeeded { changed: true })) {
            // Freshness only: a shutdown skips it and still records the outcome.
            tokio::select! {
                () = self.refresh_replica_regions(&claimed) => {}
                () = shutdown.cancelled() => {}
            }
        }
        let item_id = claimed.item.item_id;
        let write = match &outcome {
            Stop::Done(end) => {
                self.persist(
                    || self.store.change_items.finish(&claimed, self.owner, end),
                    &shutdown,
                )
                .await
            }
            Stop::Defer {
                after,
                until_quota,
                reason,
                message,
                rejected,
            } => {
                let until = until_quota.unwrap_or_else(|| {
                    Utc::now() + chrono::Duration::from_std(*after).unwrap_or_default()
                });
                self.persist(
                    || {
                        self.store
                            .change_items
                            .defer(item_id, self.owner, until, *reason, message, *rejected)
                    },
                    &shutdown,
                )
                .await
            }
        };
        match write {
            Ok(()) => match outcome {
                Stop::Done(end) => {
                    let outcome = match &end {
                        ItemEnd::Succeeded { .. } => "SUCCEEDED",
                        ItemEnd::Skipped { .. } => "SKIPPED",
                        ItemEnd::Failed { .. } => "FAILED",
                    };
                    let seconds =
                        (Utc::now() - claimed.queued_at).num_milliseconds() as f64 / 1000.0;
                    self.metrics
                        .item_seconds
                        .with_label_values(&[outcome])
                        .observe(seconds.max(0.0));
                    tracing::info!(?end, "item finished");
                }
                Stop::Defer {
                    reason, message, ..
                } => {
                    let label = reason.map_or("REQUEST_PAUSED", ItemReason::as_str);
                    self.metrics.deferrals.with_label_values(&[label]).inc();
                    tracing::info!(?reason, %message, "item deferred");
                }
            },
            Err(StoreError::LeaseLost { .. }) => {
                tracing::warn!("lease lost to another worker; writing nothing")
            }
            Err(error) => {
                tracing::error!(%error, "could not record the item; its lease will expire and it resumes")
            }
        }
    }

    /// Retries a store write while the database is unreachable (a restart), until the lease is lost or shutdown.
    async fn persist<F, Fut>(
        &self,
        write: F,
        shutdown: &CancellationToken,
    ) -> Result<(), StoreError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>>,
    {
        let mut wait = STORE_RETRY_INITIAL;
        loop {
            match write().await {
                Err(StoreError::Unavailable(_) | StoreError::Database(_))
                    if !shutdown.is_cancelled() =>
                {
                    tracing::warn!("database unavailable; retrying the write");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = shutdown.cancelled() => return Err(StoreError::LeaseLost { item_id: 0 }),
                    }
                    wait = (wait * 2).min(STORE_RETRY_MAX);
                }
                other => return other,
            }
        }
    }

    /// One pass over an item: look, apply if needed, wait for the target.
    async fn work(&self, claimed: &ClaimedItem) -> Stop {
        let item = &claimed.item;
        let access = match self.access(&item.table.account_id).await {
            Ok(access) => access,
            Err(stop) => return stop,
        };
        let region = item.table.region;
        let table = item.table.table_name.clone();
        let target = apply_target(claimed);
        let sent_before = item.apply_time.is_some();
        let poll_rate = claimed.account_poll_rate.unwrap_or(self.settings.poll_rate);

        // Look first: the change may be done or under way (a reclaimed item), or no longer needed.
        let current = match self.describe(&access, region, &table, poll_rate).await {
            Ok(current) => current,
            Err(stop) => return stop,
        };
        self.record(&current).await;
        let key = (
            item.table.account_id.to_string(),
            item.table.region.to_string(),
            item.table.table_name.to_string(),
        );
        // The switch quota (from our history) matters only when something would be sent: look it up then.
        let step = match next_step(&current, &target, sent_before, None) {
            Step::Send => next_step(
                &current,
                &target,
                sent_before,
                self.quota_frees_at(&key, target.mode).await,
            ),
            step => step,
        };
        match step {
            Step::Done { changed: true } => {
                return Stop::Done(ItemEnd::Succeeded { changed: true });
            }
            Step::Done { changed: false } => {
                return Stop::Done(ItemEnd::Skipped {
                    message: "already had the target encryption when applied".into(),
                });
            }
            Step::Retry { reason, message } => return self.retry(item.attempts, reason, message),
            Step::Fail { reason, message } => return Stop::Done(failed(reason, message)),
            Step::DeferUntil { until, message } => {
                return Stop::Defer {
                    after: Duration::ZERO,
                    until_quota: Some(until),
                    reason: Some(ItemReason::SwitchQuotaExhausted),
                    message,
                    rejected: false,
                };
            }
            Step::Wait => {}
            Step::Send => {
                if let Err(stop) = self.wait_for_update_slot(claimed).await {
                    return stop;
                }
                match self
                    .store
                    .change_items
                    .mark_applying(item.item_id, self.owner)
                    .await
                {
                    Ok(true) => {}
                    // Paused or cancelled while waiting for the rate slot: send nothing, give the item back.
                    Ok(false) => {
                        return Stop::Defer {
                            after: Duration::ZERO,
                            until_quota: None,
                            reason: None,
                            message:
                                "the request was paused or cancelled before UpdateTable was sent"
                                    .into(),
                            // The table was seen neither changed nor changing: nothing of ours is in flight.
                            rejected: true,
                        };
                    }
                    Err(e) => return lost_or_retry(e),
                }
                let sent = self
                    .fleet
                    .update_table_encryption(&access, region, &table, &target)
                    .await;
                let outcome = match &sent {
                    Ok(UpdateOutcome::Started) => "STARTED",
                    Ok(UpdateOutcome::AlreadyEncrypted) => "ALREADY_ENCRYPTED",
                    Err(error) => error.kind.as_str(),
                };
                self.metrics
                    .updates
                    .with_label_values(&[
                        item.table.account_id.as_str(),
                        item.table.region.as_str(),
                        outcome,
                    ])
                    .inc();
                match sent {
                    Ok(UpdateOutcome::Started) => {
                        if let Err(e) = self
                            .store
                            .change_items
                            .mark_waiting(item.item_id, self.owner)
                            .await
                        {
                            return lost_or_retry(e);
                        }
                    }
                    Ok(UpdateOutcome::AlreadyEncrypted) => {}
                    Err(error) => {
                        let mut stop = self
                            .classify_apply_error(item.attempts, error, &target, &key)
                            .await;
                        if let Stop::Defer { rejected, .. } = &mut stop {
                            *rejected = !sent_before;
                        }
                        return stop;
                    }
                }
            }
        }
        self.poll_until_done(&access, region, &table, &target, item.attempts, poll_rate)
            .await
    }

    /// When the table's switch quota allows the next switch to `mode`, if not now. A database error only costs
    /// the early look: AWS refuses a switch past the quota anyway, and that refusal defers the item too.
    async fn quota_frees_at(
        &self,
        key: &(String, String, String),
        mode: EncryptionMode,
    ) -> Option<chrono::DateTime<Utc>> {
        let switches = self
            .store
            .history
            .recent_switches(std::slice::from_ref(key))
            .await
            .ok()?;
        next_switch_allowed(
            mode,
            switches.get(key).map(Vec::as_slice).unwrap_or(&[]),
            Utc::now(),
        )
    }

    async fn wait_for_update_slot(&self, claimed: &ClaimedItem) -> Result<(), Stop> {
        let item = &claimed.item;
        // The account's own rate if it has one, else the service's; a request may only lower it.
        let allowed = claimed
            .account_update_rate
            .unwrap_or(self.settings.update_rate);
        let rate = claimed
            .max_updates_per_second
            .map_or(allowed, |cap| cap.min(allowed));
        let scope = format!("update:{}:{}", item.table.account_id, item.table.region);
        let regional = self.store.rate_slots.reserve(&scope, rate).await;
        let global = self
            .store
            .rate_slots
            .reserve("update:*", self.settings.global_update_rate)
            .await;
        match (regional, global) {
            (Ok(a), Ok(b)) => {
                tokio::time::sleep(a.max(b)).await;
                Ok(())
            }
            (Err(e), _) | (_, Err(e)) => Err(lost_or_retry(e)),
        }
    }

    /// A global table is listed in each of its regions; after a change those regions' inventory rows would show
    /// the old keys until the next scan (and GetKeyUsage would call a retired key still in use). Describe the
    /// table in each replica region and record what AWS reports. Best effort: a failure only costs freshness.
    async fn refresh_replica_regions(&self, claimed: &ClaimedItem) {
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
    async fn record(&self, table: &TableEncryption) {
        if let Err(error) = self
            .store
            .inventory
            .record(std::slice::from_ref(table), None)
            .await
        {
            tracing::debug!(%error, "could not record the table in the inventory");
        }
    }

    async fn describe(
        &self,
        access: &AccountAccess,
        region: Region,
        table: &TableName,
        poll_rate: f64,
    ) -> Result<TableEncryption, Stop> {
        let scope = format!("describe:{}:{}", access.account_id, region);
        match self.store.rate_slots.reserve(&scope, poll_rate).await {
            Ok(wait) => tokio::time::sleep(wait).await,
            Err(e) => return Err(lost_or_retry(e)),
        }
        let described = self.fleet.describe_table(access, region, table).await;
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

    async fn poll_until_done(
        &self,
        access: &AccountAccess,
        region: Region,
        table: &TableName,
        target: &ApplyTarget,
        attempts: i32,
        poll_rate: f64,
    ) -> Stop {
        let mut wait = self.settings.poll_initial;
        loop {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(self.settings.poll_max);
            let current = match self.describe(access, region, table, poll_rate).await {
                Ok(current) => current,
                Err(Stop::Defer { .. }) => continue, // throttled or transient: keep polling, slower
                Err(stop) => return stop,
            };
            match after_poll(&current, target) {
                PollStep::Done => {
                    // Polls are not written to the inventory (they would double the database load); the end is.
                    self.record(&current).await;
                    return Stop::Done(ItemEnd::Succeeded { changed: true });
                }
                PollStep::SettledElsewhere => {
                    // AWS finished on something else (someone else changed it meanwhile): try again later.
                    return self.retry(
                        attempts,
                        ItemReason::AwsError,
                        "the table settled on another key; retrying".into(),
                    );
                }
                PollStep::KeepWaiting => {}
            }
        }
    }

    async fn classify_apply_error(
        &self,
        attempts: i32,
        error: FleetError,
        target: &ApplyTarget,
        key: &(String, String, String),
    ) -> Stop {
        match error.kind {
            FailureKind::QuotaExceeded if is_switch_quota(&error) => {
                let switches = self
                    .store
                    .history
                    .recent_switches(std::slice::from_ref(key))
                    .await
                    .unwrap_or_default();
                let frees_at = next_switch_allowed(
                    target.mode,
                    switches.get(key).map(Vec::as_slice).unwrap_or(&[]),
                    Utc::now(),
                )
                // AWS counts switches we did not make: wait out the quiet period.
                .unwrap_or_else(|| {
                    Utc::now() + chrono::Duration::hours(tablecrypt_core::switch_quota::QUIET_HOURS)
                });
                Stop::Defer {
                    after: Duration::ZERO,
                    until_quota: Some(frees_at),
                    reason: Some(ItemReason::SwitchQuotaExhausted),
                    message: error.message,
                    rejected: false,
                }
            }
            kind => match failure_reason(
                AwsCall::UpdateTable,
                kind,
                error.role_refused,
                &error.message,
            ) {
                reason if is_passing(reason) => self.retry(attempts, reason, error.message),
                reason => Stop::Done(failed(reason, error.message)),
            },
        }
    }

    /// Defers with jittered exponential backoff by attempt.
    fn retry(&self, attempts: i32, reason: ItemReason, message: String) -> Stop {
        let base = self.settings.retry_initial.as_secs_f64() * 2f64.powi(attempts.clamp(0, 10));
        let capped = base.min(self.settings.retry_max.as_secs_f64());
        let jittered = rand::rng().random_range(capped / 2.0..=capped.max(0.001));
        Stop::Defer {
            after: Duration::from_secs_f64(jittered),
            until_quota: None,
            reason: Some(reason),
            message,
            rejected: false,
        }
    }
}

fn failed(reason: ItemReason, message: String) -> ItemEnd {
    ItemEnd::Failed { reason, message }
}

fn lost_or_retry(error: StoreError) -> Stop {
    Stop::Defer {
        after: STORE_FAILURE_BACKOFF,
        until_quota: None,
        reason: Some(ItemReason::AwsError),
        message: format!("store: {error}"),
        rejected: false,
    }
}

fn apply_target(claimed: &ClaimedItem) -> ApplyTarget {
    let item = &claimed.item;
    ApplyTarget {
        mode: item.to_mode,
        key_arn: item.to_key_arn.clone(),
        replica_keys: item
            .replicas
            .iter()
            .filter_map(|r| Some((r.region.clone(), r.to_key_arn.clone()?)))
            .collect(),
    }
}
