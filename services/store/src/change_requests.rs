//! Change requests: creation with their planned items (idempotent), reads, and the operator's transitions.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use tablecrypt_core::change::{
    ChangeItem, ChangeOptions, ChangeRequest, ItemCounts, RequestState, TargetSpec,
};
use tablecrypt_core::{EncryptionMode, ItemState};
use uuid::Uuid;

use crate::change_items::replicas_to_json;
use crate::error::StoreError;
use crate::targets;

const RESOURCE: &str = "change request";

/// A change_requests row as stored; [`RequestRow::into_domain`] checks it into a [`ChangeRequest`].
#[derive(Debug, Clone)]
struct RequestRow {
    request_id: Uuid,
    idempotency_key: Option<String>,
    state: String,
    description: String,
    /// `{"tables": [...]}` or `{"selector": {...}}`, as the caller gave it.
    targets: Value,
    target_mode: Option<String>,
    target_key: Option<String>,
    max_updates_per_second: Option<f64>,
    max_in_flight: Option<i32>,
    failure_threshold: Option<i32>,
    canary_count: i32,
    include_iac_owned: bool,
    canary_passed: bool,
    rollback_of: Option<Uuid>,
    pause_reason: Option<String>,
    created_by: String,
    approved_by: Option<String>,
    create_time: DateTime<Utc>,
    approve_time: Option<DateTime<Utc>>,
    start_time: Option<DateTime<Utc>>,
    finish_time: Option<DateTime<Utc>>,
    update_time: DateTime<Utc>,
}

impl RequestRow {
    fn into_domain(self) -> Result<ChangeRequest, StoreError> {
        let id = self.request_id;
        let corrupt = |reason: String| StoreError::Corrupt {
            resource: RESOURCE,
            id: id.to_string(),
            reason,
        };
        let state = RequestState::parse(&self.state)
            .ok_or_else(|| corrupt(format!("unknown state {}", self.state)))?;
        let target = match self.target_mode.as_deref() {
            None => None,
            Some(mode) => Some(TargetSpec {
                mode: EncryptionMode::parse(mode)
                    .ok_or_else(|| corrupt(format!("unknown target mode {mode}")))?,
                kms_key: self.target_key,
            }),
        };
        Ok(ChangeRequest {
            request_id: id,
            state: Some(state),
            idempotency_key: self.idempotency_key,
            description: self.description,
            targets: targets::from_json(&self.targets).map_err(corrupt)?,
            target,
            options: ChangeOptions {
                max_updates_per_second: self.max_updates_per_second,
                max_in_flight: self.max_in_flight,
                failure_threshold: self.failure_threshold,
                canary_count: self.canary_count,
                include_iac_owned: self.include_iac_owned,
            },
            canary_passed: self.canary_passed,
            rollback_of: self.rollback_of,
            pause_reason: self.pause_reason,
            created_by: self.created_by,
            approved_by: self.approved_by,
            create_time: Some(self.create_time),
            approve_time: self.approve_time,
            start_time: self.start_time,
            finish_time: self.finish_time,
            update_time: Some(self.update_time),
        })
    }
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
            RequestRow,
            "SELECT request_id, idempotency_key, state, description, targets, target_mode, target_key,
                    max_updates_per_second, max_in_flight, failure_threshold, canary_count, include_iac_owned,
                    canary_passed, rollback_of, pause_reason, created_by, approved_by, create_time, approve_time, start_time,
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

    /// Stores a request (in its given state: QUEUED or PENDING_APPROVAL) and its planned items in one
    /// transaction. With an idempotency key its creator already used, stores nothing and returns the existing
    /// request (`false`); keys belong to their creator, so another caller's same key is a request of its own.
    /// `trace_parent` is the creating call's W3C trace context, which each item's trace links to.
    #[tracing::instrument(skip_all, fields(items = items.len()), err(level = "debug"))]
    pub async fn create(
        &self,
        request: &ChangeRequest,
        items: &[ChangeItem],
        trace_parent: Option<&str>,
    ) -> Result<(ChangeRequest, bool), StoreError> {
        let state = request.state.unwrap_or(RequestState::Queued);
        let mut tx = self.pool.begin().await?;
        let request_id = Uuid::new_v4();
        let inserted = sqlx::query_scalar!(
            "INSERT INTO change_requests (request_id, idempotency_key, state, description, targets, target_mode,
                 target_key, max_updates_per_second, max_in_flight, failure_threshold, canary_count, rollback_of,
                 created_by, canary_passed, trace_parent, include_iac_owned)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
             ON CONFLICT (created_by, idempotency_key) DO NOTHING
             RETURNING request_id",
            request_id,
            request.idempotency_key,
            state.as_str(),
            request.description,
            targets::to_json(&request.targets),
            request.target.as_ref().map(|t| t.mode.as_str()),
            request.target.as_ref().and_then(|t| t.kms_key.clone()),
            request.options.max_updates_per_second,
            request.options.max_in_flight,
            request.options.failure_threshold,
            request.options.canary_count,
            request.rollback_of,
            request.created_by,
            // No canary among the items (none asked for, or none changes anything): nothing to wait for.
            !items.iter().any(|i| i.canary),
            trace_parent,
            request.options.include_iac_owned,
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(request_id) = inserted else {
            tx.rollback().await?;
            let key = request.idempotency_key.clone().unwrap_or_default();
            let existing = select_request!(
                "WHERE created_by = $1 AND idempotency_key = $2",
                request.created_by,
                key
            )
            .fetch_one(&self.pool)
            .await?
            .into_domain()?;
            return Ok((existing, false));
        };
        let text = |f: fn(&ChangeItem) -> String| items.iter().map(f).collect::<Vec<_>>();
        let optional =
            |f: fn(&ChangeItem) -> Option<String>| items.iter().map(f).collect::<Vec<_>>();
        sqlx::query_file!(
            "queries/insert_change_items.sql",
            request_id,
            &text(|i| i.table.account_id.to_string()),
            &text(|i| i.table.region.to_string()),
            &text(|i| i.table.table_name.to_string()),
            &text(|i| i.state.as_str().to_owned()),
            &items.iter().map(|i| i.canary).collect::<Vec<_>>(),
            &text(|i| i.from_mode.as_str().to_owned()),
            &optional(|i| i.from_key_arn.clone()) as &[Option<String>],
            &text(|i| i.to_mode.as_str().to_owned()),
            &optional(|i| i.to_key_arn.clone()) as &[Option<String>],
            &items
                .iter()
                .map(|i| replicas_to_json(&i.replicas))
                .collect::<Vec<_>>(),
            &optional(|i| i.reason.map(|r| r.as_str().to_owned())) as &[Option<String>],
            &optional(|i| i.message.clone()) as &[Option<String>],
            &items
                .iter()
                .map(|i| i.next_attempt_time)
                .collect::<Vec<_>>() as &[Option<DateTime<Utc>>],
        )
        .execute(&mut *tx)
        .await?;
        // A request with nothing to apply is done as soon as it is stored (unless it waits for approval).
        if state == RequestState::Queued {
            sqlx::query_file!("queries/finish_request_if_done.sql", request_id)
                .fetch_optional(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((self.get(request_id).await?, true))
    }

    #[tracing::instrument(skip(self), err(level = "debug"))]
    pub async fn get(&self, request_id: Uuid) -> Result<ChangeRequest, StoreError> {
        select_request!("WHERE request_id = $1", request_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                resource: RESOURCE,
                id: request_id.to_string(),
            })?
            .into_domain()
    }

    /// The request created with idempotency key `key`, if any.
    #[tracing::instrument(skip(self), err(level = "debug"))]
    pub async fn find_by_idempotency_key(
        &self,
        created_by: &str,
        key: &str,
    ) -> Result<Option<ChangeRequest>, StoreError> {
        select_request!(
            "WHERE created_by = $1 AND idempotency_key = $2",
            created_by,
            key
        )
        .fetch_optional(&self.pool)
        .await?
        .map(RequestRow::into_domain)
        .transpose()
    }

    /// Item counts by state.
    #[tracing::instrument(skip(self), err(level = "debug"))]
    pub async fn counts(&self, request_id: Uuid) -> Result<ItemCounts, StoreError> {
        let rows = sqlx::query!(
            r#"SELECT state, count(*) AS "n!" FROM change_items WHERE request_id = $1 GROUP BY state"#,
            request_id
        )
        .fetch_all(&self.pool)
        .await?;
        let mut counts = ItemCounts::default();
        for row in rows {
            let state = ItemState::parse(&row.state).ok_or_else(|| StoreError::Corrupt {
                resource: RESOURCE,
                id: request_id.to_string(),
                reason: format!("an item is in unknown state {}", row.state),
            })?;
            counts.by_state.insert(state.as_str(), row.n);
        }
        Ok(counts)
    }

    /// Requests newest first, optionally only in `states`.
    #[tracing::instrument(skip(self), err(level = "debug"))]
    pub async fn list(
        &self,
        states: &[RequestState],
        scope: Option<&[String]>,
        after: Option<&RequestCursor>,
        limit: i64,
    ) -> Result<Vec<ChangeRequest>, StoreError> {
        let states: Vec<String> = states.iter().map(|s| s.as_str().to_owned()).collect();
        // $5, the accounts the caller may see (NULL: every account): a request is listed only if every account
        // it touches is one of them (and, should its accounts be missing, only if it has no items). Applied before
        // the limit, so a page (and the token made from its last row) holds only requests the caller may see.
        select_request!(
            "WHERE (cardinality($1::text[]) = 0 OR state = ANY($1))
               AND ($2::timestamptz IS NULL OR (create_time, request_id) < ($2, $3::uuid))
               AND ($5::text[] IS NULL OR NOT EXISTS (
                    SELECT 1 FROM change_request_accounts a
                    WHERE a.request_id = change_requests.request_id AND a.account_id <> ALL($5))
                  AND (EXISTS (SELECT 1 FROM change_request_accounts a
                               WHERE a.request_id = change_requests.request_id)
                       OR NOT EXISTS (SELECT 1 FROM change_items i
                                      WHERE i.request_id = change_requests.request_id)))
             ORDER BY create_time DESC, request_id DESC
             LIMIT $4",
            &states,
            after.map(|c| c.create_time),
            after.map(|c| c.request_id),
            limit,
            scope
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(RequestRow::into_domain)
        .collect()
    }

    /// PENDING_APPROVAL -> QUEUED, recording the approver (never the creator: the database checks that too).
    #[tracing::instrument(skip(self), err(level = "debug"))]
    pub async fn approve(
        &self,
        request_id: Uuid,
        approver: &str,
    ) -> Result<ChangeRequest, StoreError> {
        let current = self.get(request_id).await?;
        if current.state != Some(RequestState::PendingApproval) {
            return Err(invalid_state(
                &current,
                "only a PENDING_APPROVAL request can be approved",
            ));
        }
        if tablecrypt_core::identity::same_person(&current.created_by, approver) {
            return Err(StoreError::Forbidden {
                reason: format!(
                    "{approver} is the person who created change request {request_id} (as {}) and cannot also \
                     approve it",
                    current.created_by
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
    #[tracing::instrument(skip(self), err(level = "debug"))]
    pub async fn cancel(&self, request_id: Uuid) -> Result<ChangeRequest, StoreError> {
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
    #[tracing::instrument(skip(self), err(level = "debug"))]
    pub async fn pause(&self, request_id: Uuid, reason: &str) -> Result<ChangeRequest, StoreError> {
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
    #[tracing::instrument(skip(self), err(level = "debug"))]
    pub async fn resume(&self, request_id: Uuid) -> Result<ChangeRequest, StoreError> {
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

fn invalid_state(current: &ChangeRequest, reason: &str) -> StoreError {
    StoreError::InvalidState {
        resource: RESOURCE,
        id: current.request_id.to_string(),
        state: current
            .state
            .map(RequestState::as_str)
            .unwrap_or_default()
            .to_owned(),
        reason: reason.to_owned(),
    }
}
