//! The worker's lease: claiming items, keeping leases alive, and the fenced steps before and after sending.

use tablecrypt_core::ItemState;
use uuid::Uuid;

use super::{CLAIM_LOCK, ChangeItemRepository, ClaimedItem, ItemRow, into_domain};
use crate::error::StoreError;

impl ChangeItemRepository {
    /// Claims up to `limit` items for `owner` with a lease of `lease` seconds, within `max_in_flight` tables
    /// updating per account-region (and each request's own cap). PENDING and DEFERRED items become APPLYING;
    /// reclaimed items keep their state (and `apply_time`, which tells the worker to look before acting).
    #[tracing::instrument(skip(self), err)]
    pub async fn claim(
        &self,
        owner: Uuid,
        lease_seconds: f64,
        max_in_flight: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedItem>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK)
            .execute(&mut *tx)
            .await?;
        let ids: Vec<i64> =
            sqlx::query_file_scalar!("queries/claim_change_items.sql", max_in_flight, limit)
                .fetch_all(&mut *tx)
                .await?;
        if ids.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let reclaimed = sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM change_items WHERE item_id = ANY($1) AND state IN ('APPLYING', 'WAITING')"#,
            &ids
        )
        .fetch_one(&mut *tx)
        .await?;
        if reclaimed > 0 {
            tracing::info!(reclaimed, "reclaiming items whose lease expired");
        }
        let items = select_items!(
            "WHERE item_id = ANY($1) ORDER BY next_attempt_time, item_id",
            &ids
        )
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query!(
            "UPDATE change_items
             SET state = CASE WHEN state IN ('PENDING', 'DEFERRED') THEN 'APPLYING' ELSE state END,
                 lease_owner = $2, lease_expire_time = now() + make_interval(secs => $3), update_time = now()
             WHERE item_id = ANY($1)",
            &ids,
            owner,
            lease_seconds
        )
        .execute(&mut *tx)
        .await?;
        let request_ids: Vec<Uuid> = items.iter().map(|i| i.request_id).collect();
        sqlx::query!(
            "UPDATE change_requests SET state = 'RUNNING', start_time = coalesce(start_time, now()),
                 update_time = now()
             WHERE request_id = ANY($1) AND state = 'QUEUED'",
            &request_ids
        )
        .execute(&mut *tx)
        .await?;
        let requests = sqlx::query!(
            r#"SELECT request_id, max_updates_per_second, created_by, approved_by,
                      coalesce(approve_time, create_time) AS "queued_at!"
               FROM change_requests WHERE request_id = ANY($1)"#,
            &request_ids
        )
        .fetch_all(&mut *tx)
        .await?;
        let account_ids: Vec<String> = items.iter().map(|i| i.account_id.clone()).collect();
        let accounts = sqlx::query!(
            "SELECT account_id, update_rate, poll_rate FROM accounts WHERE account_id = ANY($1)",
            &account_ids
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(into_domain(items)?
            .into_iter()
            .filter_map(|mut item| {
                let request = requests.iter().find(|r| r.request_id == item.request_id)?;
                let account = accounts
                    .iter()
                    .find(|a| a.account_id == item.table.account_id.as_str());
                let reclaimed = matches!(item.state, ItemState::Applying | ItemState::Waiting);
                if !reclaimed {
                    item.state = ItemState::Applying;
                }
                Some(ClaimedItem {
                    item,
                    reclaimed,
                    queued_at: request.queued_at,
                    max_updates_per_second: request.max_updates_per_second,
                    account_update_rate: account.and_then(|a| a.update_rate),
                    account_poll_rate: account.and_then(|a| a.poll_rate),
                    created_by: request.created_by.clone(),
                    approved_by: request.approved_by.clone(),
                })
            })
            .collect())
    }

    /// Extends every lease `owner` holds. Returns how many it holds.
    #[tracing::instrument(skip(self), err, level = "debug")]
    pub async fn heartbeat(&self, owner: Uuid, lease_seconds: f64) -> Result<u64, StoreError> {
        Ok(sqlx::query!(
            "UPDATE change_items SET lease_expire_time = now() + make_interval(secs => $2)
             WHERE lease_owner = $1 AND state IN ('APPLYING', 'WAITING')",
            owner,
            lease_seconds
        )
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Records that UpdateTable is about to be sent (from now on the table may be changing). Returns `false`,
    /// writing nothing, when the request was paused or cancelled meanwhile: then nothing may be sent.
    pub async fn mark_applying(&self, item_id: i64, owner: Uuid) -> Result<bool, StoreError> {
        let row = sqlx::query!(
            r#"SELECT lease_owner, r.state AS "request_state"
               FROM change_items i JOIN change_requests r USING (request_id)
               WHERE i.item_id = $1"#,
            item_id
        )
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) if row.lease_owner == Some(owner) => {
                if !matches!(row.request_state.as_str(), "QUEUED" | "RUNNING") {
                    return Ok(false);
                }
            }
            _ => return Err(StoreError::LeaseLost { item_id }),
        }
        let done = sqlx::query!(
            "UPDATE change_items SET state = 'APPLYING', apply_time = now(), attempts = attempts + 1,
                 update_time = now()
             WHERE item_id = $1 AND lease_owner = $2
               AND EXISTS (SELECT 1 FROM change_requests r
                           WHERE r.request_id = change_items.request_id AND r.state IN ('QUEUED', 'RUNNING'))",
            item_id,
            owner
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// UpdateTable was accepted: the table is UPDATING.
    pub async fn mark_waiting(&self, item_id: i64, owner: Uuid) -> Result<(), StoreError> {
        let done = sqlx::query!(
            "UPDATE change_items SET state = 'WAITING', update_time = now()
             WHERE item_id = $1 AND lease_owner = $2",
            item_id,
            owner
        )
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected(), item_id)
    }
}

fn fenced(rows: u64, item_id: i64) -> Result<(), StoreError> {
    if rows == 0 {
        Err(StoreError::LeaseLost { item_id })
    } else {
        Ok(())
    }
}
