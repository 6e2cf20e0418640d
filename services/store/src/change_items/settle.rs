//! Recording an item's outcome (fenced by its lease) and moving its request on: canaries, the failure threshold,
//! the end.

use chrono::{DateTime, Utc};
use tablecrypt_core::{ItemReason, ItemState};
use uuid::Uuid;

use super::{ChangeItemRepository, ClaimedItem, ItemEnd};
use crate::error::StoreError;

/// When a deferred item is due again. Relative waits are counted from the database's clock, the one clock every
/// replica's leases, slots and deferrals share (replicas' own clocks differ); tests move time by writing these
/// columns.
#[derive(Debug, Clone, Copy)]
pub enum Deferral {
    /// After this long.
    After(std::time::Duration),
    /// At this instant (the switch quota frees up then, computed from the history's own timestamps).
    Until(DateTime<Utc>),
}

impl Deferral {
    fn at(self) -> Option<DateTime<Utc>> {
        match self {
            Self::Until(at) => Some(at),
            Self::After(_) => None,
        }
    }

    fn after_seconds(self) -> f64 {
        match self {
            Self::After(wait) => wait.as_secs_f64(),
            Self::Until(_) => 0.0,
        }
    }
}

/// Why and until when an item is given back, and what the attempt showed.
#[derive(Debug, Clone, Copy)]
pub struct Deferment<'a> {
    pub until: Deferral,
    pub reason: Option<ItemReason>,
    pub message: &'a str,
    /// AWS rejected the UpdateTable: the table is not changing because of us.
    pub clear_apply: bool,
    /// AWS answered the UpdateTable with a 5xx.
    pub server_error: bool,
}

impl ChangeItemRepository {
    /// Gives the item back until `until` (by the database's clock), with the reason. `clear_apply` when AWS
    /// rejected the UpdateTable, so the table is not changing because of us; `server_error` when AWS answered it
    /// with a 5xx (counted, so the retries stay bounded).
    pub async fn defer(
        &self,
        item_id: i64,
        token: i64,
        deferment: &Deferment<'_>,
    ) -> Result<(), StoreError> {
        let Deferment {
            until,
            reason,
            message,
            clear_apply,
            server_error,
        } = *deferment;
        let mut tx = self.pool.begin().await?;
        lock_request_of(&mut tx, item_id).await?;
        let done = sqlx::query!(
            "UPDATE change_items
             SET state = CASE WHEN r.state = 'CANCELLING' AND ($6 OR apply_time IS NULL) THEN 'CANCELLED'
                              ELSE 'DEFERRED' END,
                 finish_time = CASE WHEN r.state = 'CANCELLING' AND ($6 OR apply_time IS NULL) THEN now() END,
                 next_attempt_time = coalesce($3, now() + make_interval(secs => $7)), reason = $4, message = $5,
                 apply_time = CASE WHEN $6 THEN NULL ELSE apply_time END,
                 apply_call = CASE WHEN $6 THEN NULL ELSE apply_call END,
                 server_errors = CASE WHEN $8 THEN server_errors + 1 ELSE server_errors END, lease_owner = NULL,
                 lease_expire_time = NULL, update_time = now()
             FROM change_requests r
             WHERE item_id = $1 AND lease_token = $2 AND change_items.state IN ('APPLYING', 'WAITING')
               AND r.request_id = change_items.request_id
             RETURNING change_items.request_id",
            item_id,
            token,
            until.at(),
            reason.map(ItemReason::as_str),
            message,
            clear_apply,
            until.after_seconds(),
            server_error
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = done else {
            return Err(StoreError::LeaseLost { item_id });
        };
        tx.commit().await?;
        self.settle(row.request_id, false, false).await;
        Ok(())
    }

    /// Ends the item, appends its history row if it changed the table, and moves the request on: canary passed,
    /// paused by its failure threshold or a failed canary, or finished when nothing is left.
    pub async fn finish(&self, claimed: &ClaimedItem, end: &ItemEnd) -> Result<(), StoreError> {
        let item = &claimed.item;
        let (state, reason, message) = match end {
            ItemEnd::Succeeded { .. } => (ItemState::Succeeded, None, None),
            ItemEnd::Skipped { message } => (ItemState::Skipped, None, Some(message.clone())),
            ItemEnd::Failed {
                reason, message, ..
            } => (
                ItemState::Failed,
                Some(reason.as_str()),
                Some(message.clone()),
            ),
        };
        let mut tx = self.pool.begin().await?;
        lock_request_of(&mut tx, item.item_id).await?;
        let done = sqlx::query!(
            "UPDATE change_items
             SET state = $3, reason = $4, message = $5, finish_time = now(), update_time = now(),
                 lease_owner = NULL, lease_expire_time = NULL
             WHERE item_id = $1 AND lease_token = $2 AND state IN ('APPLYING', 'WAITING')
             RETURNING apply_time",
            item.item_id,
            claimed.lease_token,
            state.as_str(),
            reason,
            message
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = done else {
            return Err(StoreError::LeaseLost {
                item_id: item.item_id,
            });
        };
        // A switch is recorded whenever the table's key changed, also when a later call of the change failed.
        if matches!(
            end,
            ItemEnd::Succeeded { changed: true } | ItemEnd::Failed { switched: true, .. }
        ) {
            sqlx::query!(
                "INSERT INTO key_rotation_history (account_id, region, table_name, from_mode, from_key_arn,
                     to_mode, to_key_arn, request_id, item_id, requested_by, approved_by, start_time, finish_time)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, coalesce($12, now()), now())
                 ON CONFLICT (item_id) DO NOTHING",
                item.table.account_id.as_str(),
                item.table.region.as_str(),
                item.table.table_name.as_str(),
                item.from_mode.as_str(),
                item.from_key_arn,
                item.to_mode.as_str(),
                item.to_key_arn,
                item.request_id,
                item.item_id,
                claimed.created_by,
                claimed.approved_by,
                row.apply_time,
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let failed = matches!(end, ItemEnd::Failed { .. });
        self.settle(item.request_id, item.canary, failed).await;
        Ok(())
    }

    /// Moves a request on after one of its items ended: a failed canary pauses it, passed canaries release the
    /// rest, failures at the threshold pause it, and it finishes when nothing is left. Runs after the item's
    /// transaction commits: of two items ending at once, the later check then sees both (a check inside each
    /// transaction could see the other still open, and a lock to prevent that serialises every item of a
    /// request). If this process dies before it runs, [`Self::sweep`] does the same later. Errors are logged.
    async fn settle(&self, request_id: Uuid, canary: bool, failed: bool) {
        if let Err(error) = self.try_settle(request_id, canary, failed).await {
            tracing::warn!(%error, %request_id, "could not move the request on; the sweep will");
        }
    }

    async fn try_settle(
        &self,
        request_id: Uuid,
        canary: bool,
        failed: bool,
    ) -> Result<(), StoreError> {
        if canary && failed {
            sqlx::query!(
                "UPDATE change_requests
                 SET state = 'PAUSED', pause_reason = 'a canary item failed', update_time = now()
                 WHERE request_id = $1 AND state IN ('QUEUED', 'RUNNING') AND NOT canary_passed",
                request_id
            )
            .execute(&self.pool)
            .await?;
        }
        if canary {
            sqlx::query_file!("queries/pass_canaries.sql", request_id)
                .execute(&self.pool)
                .await?;
        }
        if failed {
            sqlx::query!(
                "UPDATE change_requests r
                 SET state = 'PAUSED', pause_reason = format('%s items failed (threshold %s)', f.n, r.failure_threshold),
                     update_time = now()
                 FROM (SELECT count(*) AS n FROM change_items WHERE request_id = $1 AND state = 'FAILED') f
                 WHERE r.request_id = $1 AND r.state IN ('QUEUED', 'RUNNING') AND r.failure_threshold IS NOT NULL
                   AND f.n >= r.failure_threshold",
                request_id
            )
            .execute(&self.pool)
            .await?;
        }
        sqlx::query_file!("queries/finish_request_if_done.sql", request_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(())
    }

    /// Settles every live request (after a process died between an item's commit and its settle): passes
    /// canaries that are all done, pauses requests whose canary failed, finishes requests with nothing left.
    #[tracing::instrument(skip(self), err(level = "debug"), level = "debug")]
    pub async fn sweep(&self) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE change_requests r
             SET state = 'PAUSED', pause_reason = 'a canary item failed', update_time = now()
             WHERE r.state IN ('QUEUED', 'RUNNING') AND NOT r.canary_passed
               AND EXISTS (SELECT 1 FROM change_items i
                           WHERE i.request_id = r.request_id AND i.canary AND i.state = 'FAILED')"
        )
        .execute(&self.pool)
        .await?;
        let live = sqlx::query_scalar!(
            "SELECT request_id FROM change_requests WHERE state IN ('QUEUED', 'RUNNING', 'PAUSED', 'CANCELLING')"
        )
        .fetch_all(&self.pool)
        .await?;
        for request_id in live {
            sqlx::query_file!("queries/pass_canaries.sql", request_id)
                .execute(&self.pool)
                .await?;
            sqlx::query_file!("queries/finish_request_if_done.sql", request_id)
                .fetch_optional(&self.pool)
                .await?;
        }
        Ok(())
    }
}

/// Share-locks the request an item belongs to, for the rest of the transaction: an operator's cancel, pause or
/// approve (which lock it for update) waits for the item's write, and the item's write sees their result; items
/// of one request do not wait for each other.
async fn lock_request_of(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    item_id: i64,
) -> Result<(), StoreError> {
    sqlx::query!(
        "SELECT r.request_id FROM change_requests r JOIN change_items i USING (request_id)
         WHERE i.item_id = $1 FOR SHARE OF r",
        item_id
    )
    .fetch_optional(&mut **tx)
    .await?;
    Ok(())
}
