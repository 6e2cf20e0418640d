//! The audit log: who called which mutating RPC about what, and what they got. Append-only (the database
//! refuses UPDATE, DELETE and TRUNCATE). Written to `audit_log`, partitioned by month so old months can be dropped
//! whole; rows written before that table existed stay in `audit_events` and are read with it.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::error::StoreError;

/// An event to record.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub caller: String,
    pub authenticated_by: String,
    pub method: String,
    pub target: String,
    /// The gRPC status code name, e.g. "OK" or "PERMISSION_DENIED".
    pub outcome: String,
    pub message: String,
    /// The client's address, for calls without an authenticated caller.
    pub peer: Option<String>,
    /// How many calls the row stands for: 1, or the repeats of a refusal within an interval.
    pub call_count: i32,
    /// For repeats, when the first of them was refused (`event_time` is when the row was written, at the end of the
    /// interval).
    pub first_time: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct AuditEventRecord {
    pub event_id: i64,
    pub event_time: DateTime<Utc>,
    pub caller: String,
    pub authenticated_by: String,
    pub method: String,
    pub target: String,
    pub outcome: String,
    pub message: String,
    pub peer: Option<String>,
    pub call_count: i32,
    pub first_time: Option<DateTime<Utc>>,
}

/// Which events to list; `None` matches every event.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub caller: Option<String>,
    pub method: Option<String>,
    pub outcome: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AuditRepository {
    pool: PgPool,
}

/// Cuts a text to at most `max` characters, on a character boundary.
/// At most `max` characters of `text`, a NUL written as `\0`: PostgreSQL text cannot hold NUL, and a refused
/// call must be audited whatever bytes it carried (the insert used to fail, leaving the call unaudited).
fn clip(text: &str, max: usize) -> String {
    text.replace('\0', "\\0").chars().take(max).collect()
}

impl AuditRepository {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    #[tracing::instrument(skip_all, fields(method = %event.method, outcome = %event.outcome), err(level = "debug"))]
    pub async fn record(&self, event: &NewAuditEvent) -> Result<(), StoreError> {
        sqlx::query!(
            "INSERT INTO audit_log
                 (caller, authenticated_by, method, target, outcome, message, peer, call_count, first_time)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            clip(&event.caller, 512),
            clip(&event.authenticated_by, 64),
            clip(&event.method, 128),
            clip(&event.target, 2048),
            clip(&event.outcome, 32),
            clip(&event.message, 2048),
            event.peer.as_deref().map(|p| clip(p, 128)),
            event.call_count.max(1),
            event.first_time,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Makes the monthly partitions of the audit log for this month and the next, so rows land in a month's own
    /// partition (droppable whole) rather than the default one. Returns the months that could not be made (the
    /// default partition already holds rows of them, which stay there).
    #[tracing::instrument(skip(self), err(level = "debug"))]
    pub async fn ensure_partitions(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query!(
            r#"SELECT to_char(month, 'YYYY-MM') AS "month!", audit_log_ensure_month(month::date) AS "made!"
               FROM (VALUES (now()), (now() + interval '1 month')) AS months (month)"#
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter(|r| !r.made)
            .map(|r| r.month)
            .collect())
    }

    /// Newest first, older than `before_id`, at most `limit`.
    #[tracing::instrument(skip(self), err(level = "debug"))]
    pub async fn list(
        &self,
        filter: &AuditFilter,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEventRecord>, StoreError> {
        Ok(sqlx::query_as!(
            AuditEventRecord,
            r#"SELECT event_id AS "event_id!", event_time AS "event_time!", caller AS "caller!",
                    authenticated_by AS "authenticated_by!", method AS "method!", target AS "target!",
                    outcome AS "outcome!", message AS "message!", peer, call_count AS "call_count!", first_time
             FROM (SELECT event_id, event_time, caller, authenticated_by, method, target, outcome, message, peer,
                          call_count, first_time
                   FROM audit_log
                   UNION ALL
                   SELECT event_id, event_time, caller, authenticated_by, method, target, outcome, message, peer,
                          call_count, first_time
                   FROM audit_events) AS events
             WHERE ($1::bigint IS NULL OR event_id < $1)
               AND ($2::text IS NULL OR caller = $2)
               AND ($3::text IS NULL OR method = $3)
               AND ($4::text IS NULL OR outcome = $4)
             ORDER BY event_id DESC
             LIMIT $5"#,
            before_id,
            filter.caller,
            filter.method,
            filter.outcome,
            limit,
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
