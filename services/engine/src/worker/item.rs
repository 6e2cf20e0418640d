//! One pass over an item: look at the table, ask `core::change::apply` what to do, do it, record the outcome.

use std::time::Duration;

use chrono::Utc;
use rand::Rng as _;
use tablecrypt_core::change::apply::{Call, SendClock, Step, next_step};
use tablecrypt_core::change::plan::current_key_message;
use tablecrypt_core::change::reason::is_passing;
use tablecrypt_core::change::{AwsCall, failure_reason};
use tablecrypt_core::switch_quota::next_switch_allowed;
use tablecrypt_core::{EncryptionMode, FailureKind, ItemReason, ItemState};
use tablecrypt_fleet::{ApplyTarget, FleetError, UpdateOutcome, is_switch_quota};
use tablecrypt_store::{ClaimedItem, Deferment, Deferral, ItemEnd, StoreError};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::pace::{DbClock, Poll, Polled};
use super::{Inner, STORE_FAILURE_BACKOFF, STORE_RETRY_INITIAL, STORE_RETRY_MAX, Stop};

/// HTTP 5xx answers to an item's UpdateTable in a row before it fails with AWS's message: a passing fault
/// clears within a few retries, and an asymmetric key (a 500 every time, observed) must not retry forever.
const MAX_SERVER_ERRORS: i32 = 3;

impl Inner {
    /// Works one claimed item in its own span: a trace of its own (an item may run hours after the request was
    /// made, on another replica), linked to the call that created the request.
    pub(super) async fn process(&self, claimed: ClaimedItem, shutdown: CancellationToken) {
        let span = tracing::info_span!(
            parent: None,
            "change_item",
            change_request = %claimed.item.request_id,
            item = claimed.item.item_id,
            account_id = %claimed.item.table.account_id,
            region = %claimed.item.table.region,
            table = %claimed.item.table.table_name,
        );
        crate::trace::link(&span, claimed.request_trace_parent.as_deref());
        self.process_in_span(claimed, shutdown)
            .instrument(span)
            .await;
    }

    async fn process_in_span(&self, claimed: ClaimedItem, shutdown: CancellationToken) {
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
                server_error,
            } => {
                let deferment = Deferment {
                    until: until_quota.map_or(Deferral::After(*after), Deferral::Until),
                    reason: *reason,
                    message,
                    clear_apply: *rejected,
                    server_error: *server_error,
                };
                self.persist(
                    || {
                        self.store
                            .change_items
                            .defer(item_id, claimed.lease_token, &deferment)
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

    /// One pass over an item (see [`Self::apply`]). A change of several calls that fails after its first call
    /// switched the table's own key still records that switch (a history row; the quota counts it).
    pub(super) async fn work(&self, claimed: &ClaimedItem) -> Stop {
        let mut switched = false;
        match self.apply(claimed, &mut switched).await {
            Stop::Done(ItemEnd::Failed {
                reason, message, ..
            }) if switched => Stop::Done(ItemEnd::Failed {
                reason,
                message,
                switched: true,
            }),
            stop => stop,
        }
    }

    /// Look, send the call the table needs, wait for it to show; again for the next call of a change made of
    /// several (a global table's replicas), until the target shows or the item stops. `switched`: a send of this
    /// item switched the table's own key.
    async fn apply(&self, claimed: &ClaimedItem, switched: &mut bool) -> Stop {
        let item = &claimed.item;
        let access = match self.access(&item.table.account_id).await {
            Ok(access) => access,
            Err(stop) => return stop,
        };
        let region = item.table.region;
        let table = item.table.table_name.clone();
        let target = apply_target(claimed);
        let poll_rate = claimed.account_poll_rate.unwrap_or(self.settings.poll_rate);
        let db_clock = DbClock::from_claim(claimed);
        let key = (
            item.table.account_id.to_string(),
            item.table.region.to_string(),
            item.table.table_name.to_string(),
        );
        // The last UpdateTable of this item, by this pass or an earlier one (a reclaimed item).
        let mut sent_at = item.apply_time;
        let mut last_call = item.apply_call;
        // 5xx answers in a row, as stored at the claim and since.
        let mut server_errors = item.server_errors;
        loop {
            // Look first: the change may be done or under way (a reclaimed item), or no longer needed.
            let current = match self.describe(&access, region, &table, poll_rate).await {
                Ok(current) => current,
                Err(stop) => return stop,
            };
            self.record(&current).await;
            *switched |= sent_at.is_some() && target.home_reached_by(&current);
            let clock = SendClock {
                sent_at,
                last_call,
                now: db_clock.now(),
                settle: self.settle_timeout(claimed),
            };
            // The switch quota (from our history) matters only when something would be sent: look it up then.
            let step = match next_step(&current, &target, clock, None) {
                Step::Send(call) => next_step(
                    &current,
                    &target,
                    clock,
                    self.call_quota_frees_at(&key, &call, &target).await,
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
                Step::Retry { reason, message } => {
                    return self.retry(item.attempts, reason, message);
                }
                Step::Fail { reason, message } => return Stop::Done(failed(reason, message)),
                Step::DeferUntil { until, message } => {
                    return Stop::Defer {
                        after: Duration::ZERO,
                        until_quota: Some(until),
                        reason: Some(ItemReason::SwitchQuotaExhausted),
                        message,
                        rejected: false,
                        server_error: false,
                    };
                }
                Step::Wait => {}
                Step::Send(call) => {
                    let sent_earlier = sent_at.is_some();
                    // The account as it is at the send (read before the slot): waiting for a slot can be long,
                    // and an UpdateAccount (a new role, a rotated external id) must reach the send.
                    let access = match self.clear_to_send(claimed, call.kind(), sent_earlier).await
                    {
                        Ok(access) => access,
                        Err(stop) => return stop,
                    };
                    sent_at = Some(db_clock.now());
                    last_call = Some(call.kind());
                    let sent = self
                        .fleet
                        .update_table_encryption(&access, region, &table, &target, &call)
                        .await;
                    let send = Send {
                        call: &call,
                        target: &target,
                        key: &key,
                        sent_earlier,
                        server_errors,
                    };
                    match self.after_send(claimed, sent, send).await {
                        Ok(()) => server_errors = 0,
                        Err(stop) => return stop,
                    }
                }
            }
            let poll = Poll {
                settle: self.settle_timeout(claimed),
                access: &access,
                region,
                table: &table,
                target: &target,
                attempts: item.attempts,
                poll_rate,
                sent_at,
                last_call,
                db_clock,
            };
            match self.poll_until_done(poll).await {
                Polled::Stop(stop) => return stop,
                Polled::Look => {}
            }
        }
    }

    /// Counts an UpdateTable's outcome and records an accepted one; a refusal ends the pass with how the item
    /// goes on (`sent_earlier`: an earlier send of this item may still be taking effect).
    async fn after_send(
        &self,
        claimed: &ClaimedItem,
        sent: Result<UpdateOutcome, FleetError>,
        send: Send<'_>,
    ) -> Result<(), Stop> {
        let Send { sent_earlier, .. } = send;
        let item = &claimed.item;
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
            Ok(UpdateOutcome::Started) => self
                .store
                .change_items
                .mark_waiting(
                    item.item_id,
                    claimed.lease_token,
                    &send
                        .target
                        .regions_changed(send.call, item.table.region.as_str()),
                )
                .await
                .map_err(lost_or_retry),
            Ok(UpdateOutcome::AlreadyEncrypted) => Ok(()),
            // An earlier send of ours may be what keeps the table busy: our change is under way, so wait for
            // it, never count this as a rejection.
            Err(error) if error.kind == FailureKind::InUse && sent_earlier => {
                tracing::info!("table busy after an earlier send of ours; waiting for it");
                Ok(())
            }
            Err(error) => {
                // Only AWS's definite refusals show the call did nothing: a timeout, a lost answer or a 5xx may
                // have changed the table, so the item keeps its apply_time and the next pass records a switch
                // it finds done.
                let refused = !matches!(error.kind, FailureKind::Transient | FailureKind::Unknown);
                let server_error = error.is_server_error();
                let mut stop = self.classify_apply_error(claimed, error, &send).await;
                if let Stop::Defer {
                    rejected,
                    server_error: counted,
                    ..
                } = &mut stop
                {
                    *rejected = refused && !sent_earlier;
                    *counted = server_error;
                }
                Err(stop)
            }
        }
    }

    /// How long a sent change may take to show before it is taken as not having happened: the account's own,
    /// else the service's.
    pub(super) fn settle_timeout(&self, claimed: &ClaimedItem) -> chrono::Duration {
        let settle = claimed
            .account_settle_timeout
            .unwrap_or(self.settings.settle_timeout);
        chrono::Duration::from_std(settle).unwrap_or(chrono::Duration::MAX)
    }

    /// When every copy of the table that `call` changes (its own region's, or the replicas') may switch again, if
    /// not now: a global table's replica call spends the replicas' switches, not the home region's, so the home
    /// region's first call of the same change does not hold its replica call back.
    async fn call_quota_frees_at(
        &self,
        key: &(String, String, String),
        call: &Call,
        target: &ApplyTarget,
    ) -> Option<chrono::DateTime<Utc>> {
        let mode = target.mode;
        let keys: Vec<(String, String, String)> = target
            .regions_changed(call, &key.1)
            .into_iter()
            .map(|region| (key.0.clone(), region, key.2.clone()))
            .collect();
        let switches = self.store.history.recent_switches(&keys).await.ok()?;
        keys.iter()
            .filter_map(|k| next_switch_allowed(mode, switches.of(k), switches.now))
            .max()
    }

    pub(super) async fn classify_apply_error(
        &self,
        claimed: &ClaimedItem,
        error: FleetError,
        send: &Send<'_>,
    ) -> Stop {
        let item = &claimed.item;
        let (target, key) = (send.target, send.key);
        let attempts = item.attempts;
        if error.is_server_error() && send.server_errors + 1 >= MAX_SERVER_ERRORS {
            return Stop::Done(failed(
                ItemReason::AwsError,
                format!(
                    "UpdateTable answered with a server error {} times in a row; last: {}",
                    send.server_errors + 1,
                    error.message
                ),
            ));
        }
        // Only the table's own SSE call switches away from `from_key_arn`; a replica's refusal is its own.
        if matches!(send.call, Call::Sse)
            && let Some(stop) = self.unusable_current_key(claimed, &error).await
        {
            return stop;
        }
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
                    server_error: false,
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
            server_error: false,
        }
    }

    /// After AWS refused an UpdateTable: if the table's current customer managed key is disabled or pending
    /// deletion, that is the cause whatever AWS's wording, and no retry can help until the key is enabled again.
    async fn unusable_current_key(
        &self,
        claimed: &ClaimedItem,
        error: &FleetError,
    ) -> Option<Stop> {
        let item = &claimed.item;
        if matches!(
            error.kind,
            FailureKind::Transient
                | FailureKind::Throttled
                | FailureKind::InUse
                | FailureKind::QuotaExceeded
        ) || item.from_mode != EncryptionMode::CustomerManaged
        {
            return None;
        }
        let old_key = item.from_key_arn.as_deref()?;
        let access = self.access(&item.table.account_id).await.ok()?;
        let info = self
            .fleet
            .describe_key(&access, item.table.region, old_key)
            .await
            .ok()?;
        (!info.enabled()).then(|| {
            Stop::Done(failed(
                ItemReason::CurrentKeyUnusable,
                format!(
                    "{} (AWS said: {})",
                    current_key_message(&info.arn, &info.state),
                    error.message
                ),
            ))
        })
    }
}

pub(super) fn failed(reason: ItemReason, message: String) -> ItemEnd {
    ItemEnd::Failed {
        reason,
        message,
        switched: false,
    }
}

/// One UpdateTable just sent, and what deciding on its answer needs.
pub(super) struct Send<'a> {
    pub call: &'a Call,
    pub target: &'a ApplyTarget,
    /// (account, region, table), for the switch quota.
    pub key: &'a (String, String, String),
    /// An earlier send of this item may still be taking effect.
    pub sent_earlier: bool,
    /// 5xx answers in a row before this one.
    pub server_errors: i32,
}

pub(super) fn lost_or_retry(error: StoreError) -> Stop {
    Stop::Defer {
        after: STORE_FAILURE_BACKOFF,
        until_quota: None,
        reason: Some(ItemReason::AwsError),
        message: format!("store: {error}"),
        rejected: false,
        server_error: false,
    }
}

pub(super) fn apply_target(claimed: &ClaimedItem) -> ApplyTarget {
    ApplyTarget::of_item(&claimed.item)
}
