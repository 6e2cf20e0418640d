//! Change requests: creation with their planned items (idempotent), reads, and the operator's transitions.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::StoreError;

const RESOURCE: &str = "change request";

/// A stored change request.
#[derive(Debug, Clone)]
pub struct ChangeRequestRecord {
    pub request_id: Uuid,
    pub idempotency_key: Option<String>,
    pub state: String,
    pub description: String,
    /// `{"tables": [...]}` or `{"selector": {...}}`, as the caller gave it.
    pub targets: Value,
    pub target_mode: Option<String>,
    pub target_key: Option<String>,
    pub max_updates_per_second: Option<f64>,
    pub max_in_flight: Option<i32>,
    pub failure_threshold: Option<i32>,
    pub canary_count: i32,
    pub canary_passed: bool,
    pub rollback_of: Option<Uuid>,
    pub pause_reason: Option<String>,
    pub created_by: String,
    pub approved_by: Option<String>,
    pub create_time: DateTime<Utc>,
    pub approve_time: Option<DateTime<Utc>>,
    pub start_time: Option<DateTime<Utc>>,
    pub finish_time: Option<DateTime<Utc>>,
    pub update_time: DateTime<Utc>,
}

/// Items of a request by state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemCounts {
    pub by_state: std::collections::BTreeMap<String, i64>,
}

impl ItemCounts {
    pub fn get(&self, state: &str) -> i64 {
        self.by_state.get(state).copied().unwrap_or(0)
    }

    pub fn total(&self) -> i64 {
        self.by_state.values().sum()
    }
}

/// A request to store.
#[derive(Debug, Clone)]
pub struct NewChangeRequest {
    pub idempotency_key: Option<String>,
    /// PENDING_APPROVAL or QUEUED.
    pub state: String,
    pub description: String,
    pub targets: Value,
    pub target_mode: Option<String>,
    pub target_key: Option<String>,
    pub max_updates_per_second: Option<f64>,
    pub max_in_flight: Option<i32>,
    pub failure_threshold: Option<i32>,
    pub canary_count: i32,
    pub rollback_of: Option<Uuid>,
    pub created_by: String,
}

/// A planned item to store with its request.
#[derive(Debug, Clone)]
pub struct NewChangeItem {
    pub account_id: String,
    pub region: String,
    pub table_name: String,
    /// PENDING (to change), SKIPPED or BLOCKED.
    pub state: String,
    pub canary: bool,
    pub from_mode: String,
    pub from_key_arn: Option<String>,
    pub to_mode: String,
    pub to_key_arn: Option<String>,
    pub replicas: Value,
    pub reason: Option<String>,
    pub message: Option<String>,
    /// For a PENDING item held back by the switch quota: when it frees up.
    pub next_attempt_time: Option<DateTime<Utc>>,
}

/// Newest-first paging position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestCursor {
    pub create_time: DateTime<Utc>,
    pub request_id: Uuid,
}

#[derive(Debug, Clone)]
pub struct ChangeRequestRepository {
    pool: PgPool,
}

macro_rules! select_request {
    ($where:literal, $($arg:expr),*) => {
        sqlx::query_as!(
            ChangeRequestRecord,
            "SELECT request_id, idempotency_key, state, description, targets, target_mode, target_key,
                    max_updates_per_second, max_in_flight, failure_threshold, canary_count, canary_passed,
                    rollback_of, pause_reason, created_by, approved_by, create_time, approve_time, start_time,
                    finish_time, update_time
             FROM change_requests " + $where,
            $($arg),*
        )
    };
}

impl ChangeRequestRepository {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Stores a request and its items in one transaction. With an idempotency key already used, stores nothing
    /// and returns the existing request (`false`).
    #[tracing::instrument(skip_all, fields(items = items.len()), err)]
    pub async fn create(
        &self,
        request: &NewChangeRequest,
        items: &[NewChangeItem],
    ) -> Result<(ChangeRequestRecord, bool), StoreError> {
        let mut tx = self.pool.begin().await?;
        let request_id = Uuid::new_v4();
        let inserted = sqlx::query_scalar!(
            "INSERT INTO change_requests (request_id, idempotency_key, state, description, targets, target_mode,
                 target_key, max_updates_per_second, max_in_flight, failure_threshold, canary_count, rollback_of,
                 created_by, canary_passed)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (idempotency_key) DO NOTHING
             RETURNING request_id",
            request_id,
            request.idempotency_key,
            request.state,
            request.description,
            request.targets,
            request.target_mode,
            request.target_key,
            request.max_updates_per_second,
            request.max_in_flight,
            request.failure_threshold,
            request.canary_count,
            request.rollback_of,
            request.created_by,
            // No canary among the items (none asked for, or none changes anything): nothing to wait for.
            !items.iter().any(|i| i.canary),
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(request_id) = inserted else {
            tx.rollback().await?;
            let key = request.idempotency_key.clone().unwrap_or_default();
            let existing = select_request!("WHERE idempotency_key = $1", key)
                .fetch_one(&self.pool)
                .await?;
            return Ok((existing, false));
        };
        let column = |f: fn(&NewChangeItem) -> String| items.iter().map(f).collect::<Vec<_>>();
        let optional =
            |f: fn(&NewChangeItem) -> Option<String>| items.iter().map(f).collect::<Vec<_>>();
        sqlx::query_file!(
            "queries/insert_change_items.sql",
            request_id,
            &column(|i| i.account_id.clone()),
            &column(|i| i.region.clone()),
            &column(|i| i.table_name.clone()),
            &column(|i| i.state.clone()),
            &items.iter().map(|i| i.canary).collect::<Vec<_>>(),
            &column(|i| i.from_mode.clone()),
            &optional(|i| i.from_key_arn.clone()) as &[Option<String>],
            &column(|i| i.to_mode.clone()),
            &optional(|i| i.to_key_arn.clone()) as &[Option<String>],
            &items.iter().map(|i| i.replicas.clone()).collect::<Vec<_>>(),
            &optional(|i| i.reason.clone()) as &[Option<String>],
            &optional(|i| i.message.clone()) as &[Option<String>],
            &items
                .iter()
                .map(|i| i.next_attempt_time)
                .collect::<Vec<_>>() as &[Option<DateTime<Utc>>],
        )
        .execute(&mut *tx)
        .await?;
        // A request with nothing to apply is done as soon as it is stored (unless it waits for approval).
        if request.state == "QUEUED" {
            sqlx::query_file!("queries/finish_request_if_done.sql", request_id)
                .fetch_optional(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((self.get(request_id).await?, true))
    }

    #[tracing::instrument(skip(self), err)]
    pub async fn get(&self, request_id: Uuid) -> Result<ChangeRequestRecord, StoreError> {
        select_request!("WHERE request_id = $1", request_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                resource: RESOURCE,
                id: request_id.to_string(),
            })
    }

    /// The request created with idempotency key `key`, if any.
    #[tracing::instrument(skip(self), err)]
    pub async fn find_by_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<ChangeRequestRecord>, StoreError> {
        Ok(select_request!("WHERE idempotency_key = $1", key)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Item counts by state.
    #[tracing::instrument(skip(self), err)]
    pub async fn counts(&self, request_id: Uuid) -> Result<ItemCounts, StoreError> {
        let rows = sqlx::query!(
            r#"SELECT state, count(*) AS "n!" FROM change_items WHERE request_id = $1 GROUP BY state"#,
            request_id
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(ItemCounts {
            by_state: rows.into_iter().map(|r| (r.state, r.n)).collect(),
        })
    }

    /// Requests newest first, optionally only in `states`.
    #[tracing::instrument(skip(self), err)]
    pub async fn list(
        &self,
        states: &[String],
        after: Option<&RequestCursor>,
        limit: i64,
    ) -> Result<Vec<ChangeRequestRecord>, StoreError> {
        Ok(select_request!(
            "WHERE (cardinality($1::text[]) = 0 OR state = ANY($1))
               AND ($2::timestamptz IS NULL OR (create_time, request_id) < ($2, $3::uuid))
             ORDER BY create_time DESC, request_id DESC
             LIMIT $4",
            states,
            after.map(|c| c.create_time),
            after.map(|c| c.request_id),
            limit
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// PENDING_APPROVAL -> QUEUED, recording the approver (never the creator: the database checks that too).
    #[tracing::instrument(skip(self), err)]
    pub async fn approve(
        &self,
        request_id: Uuid,
        approver: &str,
    ) -> Result<ChangeRequestRecord, StoreError> {
        let current = self.get(request_id).await?;
        if current.state != "PENDING_APPROVAL" {
            return Err(invalid_state(
                &current,
                "only a PENDING_APPROVAL request can be approved",
            ));
        }
        if current.created_by == approver {
            return Err(StoreError::Forbidden {
                reason: format!(
                    "{approver} created change request {request_id} and cannot also approve it"
                ),
            });
        }
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query!(
            "UPDATE change_requests
             SET state = 'QUEUED', approved_by = $2, approve_time = now(), update_time = now()
             WHERE request_id = $1 AND state = 'PENDING_APPROVAL'",
            request_id,
            approver
        )
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::VersionConflict {
                resource: RESOURCE,
                id: request_id.to_string(),
            });
        }
        sqlx::query_file!("queries/finish_request_if_done.sql", request_id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        self.get(request_id).await
    }

    /// Stops new applies: open items not yet sent are CANCELLED; the request is CANCELLING until the ones in
    /// flight finish (at once CANCELLED if none is).
    #[tracing::instrument(skip(self), err)]
    pub async fn cancel(&self, request_id: Uuid) -> Result<ChangeRequestRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        let state = sqlx::query_scalar!(
            "SELECT state FROM change_requests WHERE request_id = $1 FOR UPDATE",
            request_id
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            resource: RESOURCE,
            id: request_id.to_string(),
        })?;
        if !matches!(
            state.as_str(),
            "PENDING_APPROVAL" | "QUEUED" | "RUNNING" | "PAUSED"
        ) {
            tx.rollback().await?;
            let current = self.get(request_id).await?;
            return Err(invalid_state(
                &current,
                "only a live request can be cancelled",
            ));
        }
        sqlx::query!(
            "UPDATE change_requests SET state = 'CANCELLING', update_time = now() WHERE request_id = $1",
            request_id
        )
        .execute(&mut *tx)
        .await?;
        // Items whose UpdateTable may have been sent (apply_time set) finish; the rest are cancelled.
        sqlx::query!(
            "UPDATE change_items
             SET state = 'CANCELLED', finish_time = now(), update_time = now(), lease_owner = NULL,
                 lease_expire_time = NULL
             WHERE request_id = $1 AND state IN ('PENDING', 'DEFERRED') AND apply_time IS NULL",
            request_id
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query_file!("queries/finish_request_if_done.sql", request_id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        self.get(request_id).await
    }

    /// QUEUED or RUNNING -> PAUSED.
    #[tracing::instrument(skip(self), err)]
    pub async fn pause(
        &self,
        request_id: Uuid,
        reason: &str,
    ) -> Result<ChangeRequestRecord, StoreError> {
        let updated = sqlx::query!(
            "UPDATE change_requests SET state = 'PAUSED', pause_reason = $2, update_time = now()
             WHERE request_id = $1 AND state IN ('QUEUED', 'RUNNING')",
            request_id,
            reason
        )
        .execute(&self.pool)
        .await?;
        let current = self.get(request_id).await?;
        if updated.rows_affected() == 0 {
            return Err(invalid_state(
                &current,
                "only a QUEUED or RUNNING request can be paused",
            ));
        }
        Ok(current)
    }

    /// PAUSED -> RUNNING (or QUEUED if nothing was claimed yet). After a failed canary, resuming is how an
    /// operator accepts it and lets the rest run.
    #[tracing::instrument(skip(self), err)]
    pub async fn resume(&self, request_id: Uuid) -> Result<ChangeRequestRecord, StoreError> {
        let updated = sqlx::query!(
            "UPDATE change_requests
             SET state = CASE WHEN start_time IS NULL THEN 'QUEUED' ELSE 'RUNNING' END, pause_reason = NULL,
                 -- Resuming after a failed canary accepts it and releases the rest (with any canary still open);
                 -- otherwise once every canary has ended.
                 canary_passed = canary_passed
                     OR EXISTS (SELECT 1 FROM change_items WHERE request_id = $1 AND canary AND state = 'FAILED')
                     OR NOT EXISTS (
                         SELECT 1 FROM change_items
                         WHERE request_id = $1 AND canary AND state IN ('PENDING', 'APPLYING', 'WAITING', 'DEFERRED')),
                 update_time = now()
             WHERE request_id = $1 AND state = 'PAUSED'",
            request_id
        )
        .execute(&self.pool)
        .await?;
        let current = self.get(request_id).await?;
        if updated.rows_affected() == 0 {
            return Err(invalid_state(
                &current,
                "only a PAUSED request can be resumed",
            ));
        }
        Ok(current)
    }
}

fn invalid_state(current: &ChangeRequestRecord, reason: &str) -> StoreError {
    StoreError::InvalidState {
        resource: RESOURCE,
        id: current.request_id.to_string(),
        state: current.state.clone(),
        reason: reason.to_owned(),
    }
}
