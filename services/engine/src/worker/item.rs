//! One pass over an item: look at the table, ask `core::change::apply` what to do, do it, record the outcome.

use std::time::Duration;

use chrono::Utc;
use rand::Rng as _;
use tablecrypt_core::change::apply::{SendClock, Step, next_step};
use tablecrypt_core::change::reason::is_passing;
use tablecrypt_core::change::{AwsCall, failure_reason};
use tablecrypt_core::switch_quota::next_switch_allowed;
use tablecrypt_core::{EncryptionMode, FailureKind, ItemReason, ItemState};
use tablecrypt_fleet::{ApplyTarget, FleetError, UpdateOutcome, is_switch_quota};
use tablecrypt_store::{ClaimedItem, Deferral, ItemEnd, StoreError};
use tokio_util::sync::CancellationToken;

use super::pace::{DbClock, Poll};
use super::{Inner, STORE_FAILURE_BACKOFF, STORE_RETRY_INITIAL, STORE_RETRY_MAX, Stop};

impl Inner {
    #[tracing::instrument(skip_all, fields(
        change_request = %claimed.item.request_id, item = claimed.item.item_id,
        account_id = %claimed.item.table.account_id, region = %claimed.item.table.region,
        table = %claimed.item.table.table_name))]
    pub(super) async fn process(&self, claimed: ClaimedItem, shutdown: CancellationToken) {
        if claimed.reclaimed {
            self.metrics.reclaims.inc();
        }
        let item_id = claimed.item.item_id;
        // Cancelled at shutdown, or by the heartbeat once this claim's lease is lost: then write nothing.
        let lease = self.hold(item_id, claimed.lease_token, &shutdown);
        let outcome = tokio::select! {
            outcome = self.work(&claimed) => outcome,
            () = lease.cancelled() => {
                if !shutdown.is_cancelled() {
                    tracing::warn!("lease lost; stopping without writing");
                }
                return;
            }
        };
        if matches!(outcome, Stop::Done(ItemEnd::Succeeded { changed: true })) {
            // Freshness only: a shutdown skips it and still records the outcome.
            tokio::select! {
                () = self.refresh_replica_regions(&claimed) => {}
                () = lease.cancelled() => {}
            }
        }
        let write = match &outcome {
            Stop::Done(end) => {
                self.persist(|| self.store.change_items.finish(&claimed, end), &lease)
                    .await
            }
            Stop::Defer {
                after,
                until_quota,
                reason,
                message,
                rejected,
            } => {
                let until = until_quota.map_or(Deferral::After(*after), Deferral::Until);
                self.persist(
                    || {
                        self.store.change_items.defer(
                            item_id,
                            claimed.lease_token,
                            until,
                            *reason,
                            message,
                            *rejected,
                        )
                    },
                    &lease,
                )
                .await
            }
        };
        // At shutdown an unwritten outcome keeps its lease registered, so it is handed back for another worker.
        if write.is_ok() || !shutdown.is_cancelled() {
            self.forget(item_id, claimed.lease_token);
        }
        match write {
            Ok(()) => match outcome {
                Stop::Done(end) => {
                    let outcome = match &end {
                        ItemEnd::Succeeded { .. } => ItemState::Succeeded,
                        ItemEnd::Skipped { .. } => ItemState::Skipped,
                        ItemEnd::Failed { .. } => ItemState::Failed,
                    };
                    let seconds =
                        (Utc::now() - claimed.queued_at).num_milliseconds() as f64 / 1000.0;
                    self.metrics
                        .item_seconds
                        .with_label_values(&[outcome.as_str()])
                        .observe(seconds.max(0.0));
                    tracing::info!(?end, "item finished");
                }
                Stop::Defer {
                    reason, message, ..
                } => {
                    let label = reason.map_or("REQUEST_PAUSED", ItemReason::as_str);
                    self.metrics.deferrals.with_label_values(&[label]).inc();
                    tracing::info!(reason = label, detail = %message, "item deferred");
                }
            },
            Err(StoreError::LeaseLost { .. }) => {
                tracing::warn!("lease lost to another claim; writing nothing")
            }
            Err(error) => {
                tracing::error!(%error, "could not record the item; its lease will expire and it resumes")
            }
        }
    }

    /// Retries a store write while the database is unreachable (a restart, a stall), until the lease is lost or
    /// the process shuts down. The write itself is fenced by the claim's token.
    pub(super) async fn persist<F, Fut>(
        &self,
        write: F,
        lease: &CancellationToken,
    ) -> Result<(), StoreError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>>,
    {
        let mut wait = STORE_RETRY_INITIAL;
        loop {
            match write().await {
                Err(StoreError::Unavailable(_) | StoreError::Database(_))
                    if !lease.is_cancelled() =>
                {
                    tracing::warn!("database unavailable; retrying the write");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = lease.cancelled() => return Err(StoreError::LeaseLost { item_id: 0 }),
                    }
                    wait = (wait * 2).min(STORE_RETRY_MAX);
                }
                other => return other,
            }
        }
    }

    /// One pass over an item: look, apply if needed, wait for the target.
    pub(super) async fn work(&self, claimed: &ClaimedItem) -> Stop {
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
        let db_clock = DbClock::from_claim(claimed);

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
        let clock = |sent_at| SendClock {
            sent_at,
            now: db_clock.now(),
            settle: self.settle_timeout(),
        };
        // The switch quota (from our history) matters only when something would be sent: look it up then.
        let step = match next_step(&current, &target, clock(item.apply_time), None) {
            Step::Send => next_step(
                &current,
                &target,
                clock(item.apply_time),
                self.quota_frees_at(&key, target.mode).await,
            ),
            step => step,
        };
        let mut sent_at = item.apply_time;
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
                if let Err(stop) = self.clear_to_send(claimed).await {
                    return stop;
                }
                // The account as it is now: waiting for a slot can be long, and an UpdateAccount (a new role, a
                // rotated external id) must reach the send.
                let access = match self.access(&item.table.account_id).await {
                    Ok(access) => access,
                    Err(stop) => return stop.not_sent(sent_before),
                };
                sent_at = Some(db_clock.now());
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
                            .mark_waiting(item.item_id, claimed.lease_token)
                            .await
                        {
                            return lost_or_retry(e);
                        }
                    }
                    Ok(UpdateOutcome::AlreadyEncrypted) => {}
                    // An earlier send of ours may be what keeps the table busy: our change is under way, so
                    // wait for it, never count this as a rejection.
                    Err(error) if error.kind == FailureKind::InUse && sent_before => {
                        tracing::info!("table busy after an earlier send of ours; waiting for it");
                    }
                    Err(error) => {
                        // Only AWS's definite refusals show the call did nothing: a timeout, a lost answer
                        // or a 5xx may have changed the table, so the item keeps its apply_time and the next
                        // pass records a switch it finds done.
                        let refused =
                            !matches!(error.kind, FailureKind::Transient | FailureKind::Unknown);
                        let mut stop = self
                            .classify_apply_error(item.attempts, error, &target, &key)
                            .await;
                        if let Stop::Defer { rejected, .. } = &mut stop {
                            *rejected = refused && !sent_before;
                        }
                        return stop;
                    }
                }
            }
        }
        let poll = Poll {
            access: &access,
            region,
            table: &table,
            target: &target,
            attempts: item.attempts,
            poll_rate,
            sent_at,
            db_clock,
        };
        self.poll_until_done(poll).await
    }

    /// How long a sent change may take to show before it is taken as not having happened.
    pub(super) fn settle_timeout(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.settings.settle_timeout).unwrap_or(chrono::Duration::MAX)
    }

    /// When the table's switch quota allows the next switch to `mode`, if not now. A database error only costs
    /// the early look: AWS refuses a switch past the quota anyway, and that refusal defers the item too.
    pub(super) async fn quota_frees_at(
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
        next_switch_allowed(mode, switches.of(key), switches.now)
    }

    pub(super) async fn classify_apply_error(
        &self,
        attempts: i32,
        error: FleetError,
        target: &ApplyTarget,
        key: &(String, String, String),
    ) -> Stop {
        match error.kind {
            FailureKind::QuotaExceeded if is_switch_quota(&error) => {
                // AWS counts switches we did not make: without a time from our history, wait out the quiet
                // period.
                let quiet = Duration::from_secs(
                    u64::try_from(tablecrypt_core::switch_quota::QUIET_HOURS).unwrap_or(6) * 3600,
                );
                let frees_at = match self
                    .store
                    .history
                    .recent_switches(std::slice::from_ref(key))
                    .await
                {
                    Ok(switches) => {
                        next_switch_allowed(target.mode, switches.of(key), switches.now)
                    }
                    Err(_) => None,
                };
                Stop::Defer {
                    after: quiet,
                    until_quota: frees_at,
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
    pub(super) fn retry(&self, attempts: i32, reason: ItemReason, message: String) -> Stop {
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

pub(super) fn failed(reason: ItemReason, message: String) -> ItemEnd {
    ItemEnd::Failed { reason, message }
}

pub(super) fn lost_or_retry(error: StoreError) -> Stop {
    Stop::Defer {
        after: STORE_FAILURE_BACKOFF,
        until_quota: None,
        reason: Some(ItemReason::AwsError),
        message: format!("store: {error}"),
        rejected: false,
    }
}

pub(super) fn apply_target(claimed: &ClaimedItem) -> ApplyTarget {
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
