//! The notification outbox: change-request events (recorded by a trigger, see the migration
//! `20261204090000_notifications.sql`), routed once to the sinks that hear of them, then delivered under a lease
//! with retries.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::PgPool;
use tablecrypt_core::notify::{Notice, NotifyEvent};
use tablecrypt_core::{Labels, RequestState};

use crate::error::StoreError;

/// Longest `last_error` kept (the column's limit); the rest of a long error body is cut.
const MAX_ERROR_CHARS: usize = 1000;

/// A new event and what routing needs: the labels of each account its request touches.
#[derive(Debug, Clone)]
pub struct UnroutedEvent {
    pub event_id: i64,
    pub event: NotifyEvent,
    pub accounts: Vec<Labels>,
}

fn unrouted_event(
    event_id: i64,
    state: &str,
    accounts: serde_json::Value,
) -> Result<UnroutedEvent, String> {
    let event = RequestState::parse(state)
        .and_then(NotifyEvent::of_state)
        .ok_or_else(|| format!("state {state:?} raises no event"))?;
    let maps: Vec<BTreeMap<String, String>> =
        serde_json::from_value(accounts).map_err(|e| format!("account labels: {e}"))?;
    let accounts = maps
        .iter()
        .map(|m| Labels::parse(m.iter()).map_err(|e| format!("labels {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(UnroutedEvent {
        event_id,
        event,
        accounts,
    })
}

/// A delivery claimed for one attempt.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub event_id: i64,
    pub sink: String,
    /// Attempts including this one.
    pub attempts: i32,
    pub notice: Notice,
}

#[derive(Debug, Clone)]
pub struct NotificationRepository {
    pool: PgPool,
}

impl NotificationRepository {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Routes up to `limit` new events, oldest first: `route` names the sinks that hear of each; their delivery
    /// rows are written and the events marked routed in one transaction (replicas route different events).
    /// Returns how many events were routed.
    #[tracing::instrument(skip(self, route), err(level = "debug"), level = "debug")]
    pub async fn route_new(
        &self,
        limit: i64,
        route: impl Fn(&UnroutedEvent) -> Vec<String>,
    ) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query!(
            r#"SELECT e.event_id, e.state,
                      coalesce((SELECT jsonb_agg(a.labels) FROM accounts a
                                WHERE a.account_id IN (SELECT DISTINCT i.account_id FROM change_items i
                                                       WHERE i.request_id = e.request_id)),
                               '[]'::jsonb) AS "accounts!"
               FROM request_events e
               WHERE NOT e.routed
               ORDER BY e.event_id
               LIMIT $1
               FOR UPDATE OF e SKIP LOCKED"#,
            limit
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut routed = Vec::with_capacity(rows.len());
        let (mut event_ids, mut sinks) = (Vec::new(), Vec::new());
        for row in rows {
            routed.push(row.event_id);
            // A row this binary cannot read (written by a newer one, say) is routed to nobody, with a warning,
            // rather than stopping every later event behind it.
            let unrouted = match unrouted_event(row.event_id, &row.state, row.accounts) {
                Ok(event) => event,
                Err(reason) => {
                    tracing::warn!(event_id = row.event_id, %reason, "a notification event cannot be read; skipped");
                    continue;
                }
            };
            for sink in route(&unrouted) {
                event_ids.push(row.event_id);
                sinks.push(sink);
            }
        }
        sqlx::query!(
            "INSERT INTO notification_deliveries (event_id, sink)
             SELECT * FROM unnest($1::bigint[], $2::text[]) ON CONFLICT DO NOTHING",
            &event_ids,
            &sinks
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "UPDATE request_events SET routed = true WHERE event_id = ANY($1)",
            &routed
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(routed.len())
    }

    /// Claims up to `limit` due deliveries to `sinks` (the ones this replica knows: during a configuration
    /// rollout replicas may differ) for one attempt each, oldest due first: no other replica takes them for
    /// `lease` (longer than an attempt may take).
    #[tracing::instrument(skip(self), err(level = "debug"), level = "debug")]
    pub async fn claim_due(
        &self,
        limit: i64,
        lease: Duration,
        sinks: &[String],
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query!(
            "WITH due AS (
                 SELECT event_id, sink FROM notification_deliveries
                 WHERE delivered_time IS NULL AND abandoned_time IS NULL AND next_attempt_time <= now()
                   AND sink = ANY($3)
                 ORDER BY next_attempt_time
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE notification_deliveries d
             SET attempts = d.attempts + 1, next_attempt_time = now() + make_interval(secs => $2)
             FROM due WHERE d.event_id = due.event_id AND d.sink = due.sink
             RETURNING d.event_id, d.sink, d.attempts",
            limit,
            lease.as_secs_f64(),
            sinks
        )
        .fetch_all(&mut *tx)
        .await?;
        let ids: Vec<i64> = claimed.iter().map(|c| c.event_id).collect();
        let events = sqlx::query!(
            r#"SELECT e.event_id, e.state, coalesce(e.reason, '') AS "reason!", e.event_time,
                      r.request_id, r.description, r.created_by, r.target_mode, r.target_key,
                      r.rollback_of,
                      coalesce((SELECT array_agg(DISTINCT i.account_id ORDER BY i.account_id)
                                FROM change_items i WHERE i.request_id = r.request_id),
                               '{}') AS "accounts!",
                      (SELECT count(*) FROM change_items i WHERE i.request_id = r.request_id)
                          AS "total!",
                      (SELECT count(*) FROM change_items i
                       WHERE i.request_id = r.request_id AND i.state = 'SUCCEEDED') AS "succeeded!",
                      (SELECT count(*) FROM change_items i
                       WHERE i.request_id = r.request_id AND i.state = 'FAILED') AS "failed!"
               FROM request_events e JOIN change_requests r ON r.request_id = e.request_id
               WHERE e.event_id = ANY($1)"#,
            &ids
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut due = Vec::with_capacity(claimed.len());
        let mut unreadable = (Vec::new(), Vec::new(), Vec::new());
        for c in claimed {
            let Some(e) = events.iter().find(|e| e.event_id == c.event_id) else {
                continue;
            };
            let notice = (|| -> Result<Notice, String> {
                let state =
                    RequestState::parse(&e.state).ok_or_else(|| format!("state {:?}", e.state))?;
                let event = NotifyEvent::of_state(state)
                    .ok_or_else(|| format!("state {:?} raises no event", e.state))?;
                let target = match (&e.target_mode, &e.target_key, &e.rollback_of) {
                    (Some(mode), Some(key), _) => format!("{mode} {key}"),
                    (Some(mode), None, _) => mode.clone(),
                    (None, _, Some(of)) => format!("a rollback of {of}"),
                    (None, _, None) => "its earlier keys".to_owned(),
                };
                Ok(Notice {
                    event,
                    change_request_id: e.request_id.to_string(),
                    state,
                    reason: e.reason.clone(),
                    description: e.description.clone(),
                    created_by: e.created_by.clone(),
                    target,
                    accounts: e.accounts.clone(),
                    items_total: e.total,
                    items_succeeded: e.succeeded,
                    items_failed: e.failed,
                    event_time: e
                        .event_time
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                })
            })();
            match notice {
                Ok(notice) => due.push(DueDelivery {
                    event_id: c.event_id,
                    sink: c.sink,
                    attempts: c.attempts,
                    notice,
                }),
                // Given up at once: a row this binary cannot read would otherwise be leased again for ever.
                Err(reason) => {
                    tracing::warn!(event_id = c.event_id, sink = %c.sink, %reason, "a notification cannot be read; given up");
                    unreadable.0.push(c.event_id);
                    unreadable.1.push(c.sink);
                    unreadable.2.push(format!("unreadable: {reason}"));
                }
            }
        }
        if !unreadable.0.is_empty() {
            sqlx::query!(
                "UPDATE notification_deliveries d SET abandoned_time = now(), last_error = u.error
                 FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(event_id, sink, error)
                 WHERE d.event_id = u.event_id AND d.sink = u.sink",
                &unreadable.0,
                &unreadable.1,
                &unreadable.2
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(due)
    }

    /// The sink took the notification. False when this attempt's claim was no longer current (its lease ran out
    /// and another attempt took the delivery): nothing is written.
    #[tracing::instrument(skip(self), err(level = "debug"), level = "debug")]
    pub async fn delivered(
        &self,
        event_id: i64,
        sink: &str,
        attempts: i32,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query!(
            "UPDATE notification_deliveries SET delivered_time = now(), last_error = NULL
             WHERE event_id = $1 AND sink = $2 AND attempts = $3
               AND delivered_time IS NULL AND abandoned_time IS NULL",
            event_id,
            sink,
            attempts
        )
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Attempt `attempts` failed with `error`: tried again after `retry_after`, or given up when that is `None`.
    /// False (nothing written) when this attempt's claim was no longer current.
    #[tracing::instrument(skip(self, error), err(level = "debug"), level = "debug")]
    pub async fn failed(
        &self,
        event_id: i64,
        sink: &str,
        attempts: i32,
        error: &str,
        retry_after: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let error: String = error
            .replace('\0', "\u{FFFD}")
            .chars()
            .take(MAX_ERROR_CHARS)
            .collect();
        let updated = sqlx::query!(
            "UPDATE notification_deliveries
             SET last_error = $3,
                 next_attempt_time = now() + make_interval(secs => coalesce($4::float8, 0)),
                 abandoned_time = CASE WHEN $4::float8 IS NULL THEN now() END
             WHERE event_id = $1 AND sink = $2 AND attempts = $5
               AND delivered_time IS NULL AND abandoned_time IS NULL",
            event_id,
            sink,
            error,
            retry_after.map(|d| d.as_secs_f64()),
            attempts
        )
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Deletes events older than `keep` whose deliveries all ended (delivered or given up), with those
    /// deliveries (and events never routed, on a fleet with no sinks), and gives up deliveries to sinks no longer configured (`sinks`) that have waited longer than
    /// `keep`. Returns the events deleted.
    #[tracing::instrument(skip(self), err(level = "debug"), level = "debug")]
    pub async fn prune(&self, keep: Duration, sinks: &[String]) -> Result<u64, StoreError> {
        let keep = keep.as_secs_f64();
        sqlx::query!(
            "UPDATE notification_deliveries SET abandoned_time = now(), last_error = 'the sink is no longer configured'
             WHERE delivered_time IS NULL AND abandoned_time IS NULL AND NOT (sink = ANY($1))
               AND next_attempt_time < now() - make_interval(secs => $2)",
            sinks,
            keep
        )
        .execute(&self.pool)
        .await?;
        let deleted = sqlx::query!(
            "DELETE FROM request_events e
             WHERE e.event_time < now() - make_interval(secs => $1)
               AND NOT EXISTS (SELECT 1 FROM notification_deliveries d
                               WHERE d.event_id = e.event_id
                                 AND d.delivered_time IS NULL AND d.abandoned_time IS NULL)",
            keep
        )
        .execute(&self.pool)
        .await?;
        Ok(deleted.rows_affected())
    }
}
