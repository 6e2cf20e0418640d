//! The worker's lease: claiming items, keeping leases alive, and the fenced steps before and after sending.

use std::time::Duration;

use tablecrypt_core::ItemState;
use tablecrypt_core::change::apply::CallKind;
use uuid::Uuid;

use super::{CLAIM_LOCK, ChangeItemRepository, ClaimedItem, ItemRow, into_domain};
use crate::error::StoreError;

/// Leases one heartbeat statement renews: each statement holds its rows until it commits, so an item's own write
/// waits for at most this many rows' renewal, not for all of a busy worker's (thousands).
const HEARTBEAT_CHUNK: usize = 100;

/// Whether an UpdateTable may be sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendCheck {
    Go,
    /// The request was paused or cancelled: send nothing, give the item back.
    RequestStopped,
    /// Another claim took the item, or the lease is about to expire: stop without writing.
    LeaseLost,
}

impl ChangeItemRepository {
    /// Claims up to `limit` items for `owner` with a lease of `lease` seconds, within `max_in_flight` tables
    /// updating per account-region (and each request's own cap), never one of `held` (items this process's tasks
    /// still work on, whatever their lease says). Each claim takes a new lease token. PENDING and DEFERRED items
    /// become APPLYING; reclaimed items keep their state (and `apply_time`, which tells the worker to look before
    /// acting). Claims nothing, with `StoreError::SchemaAhead`, while the database has a migration outside
    /// `known_migrations`, the claiming binary's (see [`crate::schema`]).
    #[tracing::instrument(skip(self, held), fields(held = held.len()), err(level = "debug"))]
    pub async fn claim(
        &self,
        owner: Uuid,
        lease_seconds: f64,
        max_in_flight: i64,
        limit: i64,
        held: &[i64],
        known_migrations: &[i64],
    ) -> Result<Vec<ClaimedItem>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK)
            .execute(&mut *tx)
            .await?;
        let ids: Vec<i64> = sqlx::query_file_scalar!(
            "queries/claim_change_items.sql",
            max_in_flight,
            limit,
            held,
            known_migrations
        )
        .fetch_all(&mut *tx)
        .await?;
        if ids.is_empty() {
            // The claim query holds the fence itself; only when it found nothing is it worth asking whether the
            // schema was why (a busy claim loop does not pay for the question).
            let fenced = crate::schema::fence(&mut *tx, known_migrations).await;
            tx.commit().await?;
            return fenced.map(|()| Vec::new());
        }
        // Taken over from a claim whose lease expired; an item handed back at shutdown (`release`) has no token.
        let expired: Vec<i64> = sqlx::query_scalar!(
            "SELECT item_id FROM change_items
             WHERE item_id = ANY($1) AND state IN ('APPLYING', 'WAITING') AND lease_token IS NOT NULL",
            &ids
        )
        .fetch_all(&mut *tx)
        .await?;
        if !expired.is_empty() {
            tracing::info!(
                reclaimed = expired.len(),
                "reclaiming items whose lease expired"
            );
        }
        let items = select_items!(
            "WHERE item_id = ANY($1) ORDER BY next_attempt_time, item_id",
            &ids
        )
        .fetch_all(&mut *tx)
        .await?;
        let tokens = sqlx::query!(
            "UPDATE change_items
             SET state = CASE WHEN state IN ('PENDING', 'DEFERRED') THEN 'APPLYING' ELSE state END,
                 lease_owner = $2, lease_token = nextval('change_items_lease_token_seq'),
                 lease_expire_time = now() + make_interval(secs => $3), update_time = now()
             WHERE item_id = ANY($1)
               -- Again in this statement's snapshot: a migration (and a backfill) committed since the claim query
               -- leaves these items unclaimed rather than read by the older binary.
               AND NOT EXISTS (SELECT 1 FROM _sqlx_migrations WHERE success AND NOT (version = ANY($4)))
             RETURNING item_id, lease_token AS \"lease_token!\", now() AS \"claimed_at!\"",
            &ids,
            owner,
            lease_seconds,
            known_migrations
        )
        .fetch_all(&mut *tx)
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
            r#"SELECT request_id, max_updates_per_second, created_by, approved_by, trace_parent,
                      coalesce(approve_time, create_time) AS "queued_at!"
               FROM change_requests WHERE request_id = ANY($1)"#,
            &request_ids
        )
        .fetch_all(&mut *tx)
        .await?;
        let account_ids: Vec<String> = items.iter().map(|i| i.account_id.clone()).collect();
        let accounts = sqlx::query!(
            "SELECT account_id, update_rate, poll_rate, settle_timeout_seconds FROM accounts
             WHERE account_id = ANY($1)",
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
                let claim = tokens.iter().find(|t| t.item_id == item.item_id)?;
                let reclaimed = expired.contains(&item.item_id);
                if !matches!(item.state, ItemState::Applying | ItemState::Waiting) {
                    item.state = ItemState::Applying;
                }
                Some(ClaimedItem {
                    item,
                    lease_token: claim.lease_token,
                    claimed_at: claim.claimed_at,
                    received: std::time::Instant::now(),
                    reclaimed,
                    queued_at: request.queued_at,
                    max_updates_per_second: request.max_updates_per_second,
                    account_update_rate: account.and_then(|a| a.update_rate),
                    account_poll_rate: account.and_then(|a| a.poll_rate),
                    account_settle_timeout: account
                        .and_then(|a| a.settle_timeout_seconds)
                        .map(std::time::Duration::from_secs_f64),
                    created_by: request.created_by.clone(),
                    approved_by: request.approved_by.clone(),
                    request_trace_parent: request.trace_parent.clone(),
                })
            })
            .collect())
    }

    /// Whether a binary knowing `known_migrations` may claim (`StoreError::SchemaAhead` if not), without claiming:
    /// for a worker whose permits are all taken, so its health follows the schema while it claims nothing.
    pub async fn schema_fence(&self, known_migrations: &[i64]) -> Result<(), StoreError> {
        crate::schema::fence(&self.pool, known_migrations).await
    }

    /// Extends the leases of `held` (item, token) that are still this claim's and not expired: an expired lease
    /// is never revived (another claim may be about to take the item). Returns the items whose leases were
    /// lost: taken by another claim, handed back, or expired while the item was still applying or waiting. Their
    /// tasks must stop without writing. An item not renewed because its own task has just recorded its outcome
    /// (this claim's token, no longer APPLYING or WAITING) is not lost: that task is finishing. Renewed
    /// [`HEARTBEAT_CHUNK`] at a time.
    #[tracing::instrument(skip_all, fields(held = held.len()), err(level = "debug"), level = "debug")]
    pub async fn heartbeat(
        &self,
        held: &[(i64, i64)],
        lease_seconds: f64,
    ) -> Result<Vec<i64>, StoreError> {
        let mut lost = Vec::new();
        // One connection for every chunk: asking the pool again per chunk would queue each behind the item
        // tasks' writes, and stretch the renewal past the lease's margin.
        let mut conn = self.pool.acquire().await?;
        for chunk in held.chunks(HEARTBEAT_CHUNK) {
            let ids: Vec<i64> = chunk.iter().map(|(id, _)| *id).collect();
            let tokens: Vec<i64> = chunk.iter().map(|(_, token)| *token).collect();
            let renewed: Vec<i64> = sqlx::query_scalar!(
                "UPDATE change_items i SET lease_expire_time = now() + make_interval(secs => $3)
                 FROM unnest($1::bigint[], $2::bigint[]) AS h(item_id, lease_token)
                 WHERE i.item_id = h.item_id AND i.lease_token = h.lease_token
                   AND i.state IN ('APPLYING', 'WAITING') AND i.lease_expire_time > now()
                 RETURNING i.item_id",
                &ids,
                &tokens,
                lease_seconds
            )
            .fetch_all(&mut *conn)
            .await?;
            if renewed.len() == chunk.len() {
                continue;
            }
            let (ids, tokens): (Vec<i64>, Vec<i64>) = chunk
                .iter()
                .filter(|(id, _)| !renewed.contains(id))
                .copied()
                .unzip();
            lost.extend(
                sqlx::query_scalar!(
                    r#"SELECT h.item_id AS "item_id!"
                       FROM unnest($1::bigint[], $2::bigint[]) AS h(item_id, lease_token)
                       LEFT JOIN change_items i ON i.item_id = h.item_id
                       WHERE i.item_id IS NULL OR i.lease_token IS DISTINCT FROM h.lease_token
                          OR i.state IN ('APPLYING', 'WAITING')"#,
                    &ids,
                    &tokens
                )
                .fetch_all(&mut *conn)
                .await?,
            );
        }
        Ok(lost)
    }

    /// Hands leases back at shutdown so another worker resumes the items at once instead of after the lease. The
    /// token is cleared so the next claim counts a hand-back, not a reclaim (the metric counts dead workers).
    #[tracing::instrument(skip_all, fields(held = held.len()), err(level = "debug"))]
    pub async fn release(&self, held: &[(i64, i64)]) -> Result<u64, StoreError> {
        let ids: Vec<i64> = held.iter().map(|(id, _)| *id).collect();
        let tokens: Vec<i64> = held.iter().map(|(_, token)| *token).collect();
        Ok(sqlx::query!(
            "UPDATE change_items i SET lease_expire_time = now(), lease_token = NULL
             FROM unnest($1::bigint[], $2::bigint[]) AS h(item_id, lease_token)
             WHERE i.item_id = h.item_id AND i.lease_token = h.lease_token
               AND i.state IN ('APPLYING', 'WAITING')",
            &ids,
            &tokens
        )
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Records that UpdateTable is about to be sent (from now on the table may be changing) and extends the
    /// lease, if the claim still holds it with `margin` to spare and the request is live. Otherwise writes
    /// nothing and says why: then nothing may be sent.
    #[tracing::instrument(skip(self), err(level = "debug"), level = "debug")]
    pub async fn mark_applying(
        &self,
        item_id: i64,
        token: i64,
        call: CallKind,
        lease: Duration,
        margin: Duration,
    ) -> Result<SendCheck, StoreError> {
        // In a transaction whose COMMIT is acknowledged: with a bare statement the row can come back before the
        // implicit commit, and a database restart in between would lose the mark of a table we then changed.
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query_scalar!(
            r#"UPDATE change_items SET state = 'APPLYING', apply_time = now(), apply_call = $5,
                   attempts = attempts + 1, lease_expire_time = now() + make_interval(secs => $3),
                   update_time = now()
               WHERE item_id = $1 AND lease_token = $2
                 AND lease_expire_time > now() + make_interval(secs => $4)
                 AND state IN ('APPLYING', 'WAITING')
                 AND EXISTS (SELECT 1 FROM change_requests r
                             WHERE r.request_id = change_items.request_id AND r.state IN ('QUEUED', 'RUNNING'))
               RETURNING item_id"#,
            item_id,
            token,
            lease.as_secs_f64(),
            margin.as_secs_f64(),
            call.as_str()
        )
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        if done.is_some() {
            return Ok(SendCheck::Go);
        }
        // Nothing was marked, so nothing may be sent, whatever a second look says: a heartbeat may have extended
        // the lease between the two, and a Go here would send a change no row records.
        Ok(match self.check_send(item_id, token, margin).await? {
            SendCheck::RequestStopped => SendCheck::RequestStopped,
            SendCheck::Go | SendCheck::LeaseLost => SendCheck::LeaseLost,
        })
    }

    /// Whether a send may still go after a wait: the claim with `token` holds an unexpired lease with `margin`
    /// to spare, and the request is live.
    #[tracing::instrument(skip(self), err(level = "debug"), level = "debug")]
    pub async fn check_send(
        &self,
        item_id: i64,
        token: i64,
        margin: Duration,
    ) -> Result<SendCheck, StoreError> {
        let row = sqlx::query!(
            r#"SELECT (i.lease_token = $2 AND i.lease_expire_time > now() + make_interval(secs => $3)
                       AND i.state IN ('APPLYING', 'WAITING')) AS "held!",
                      r.state IN ('QUEUED', 'RUNNING') AS "live!"
               FROM change_items i JOIN change_requests r USING (request_id)
               WHERE i.item_id = $1"#,
            item_id,
            token,
            margin.as_secs_f64()
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) if row.held && row.live => SendCheck::Go,
            Some(row) if row.held => SendCheck::RequestStopped,
            _ => SendCheck::LeaseLost,
        })
    }

    /// UpdateTable was accepted: the table is UPDATING (and the run of 5xx answers is over), and the send counts
    /// against the switch quota of the table in each of `regions` (the item's own, or the replica regions a
    /// replica call changes).
    #[tracing::instrument(skip(self), err(level = "debug"), level = "debug")]
    pub async fn mark_waiting(
        &self,
        item_id: i64,
        token: i64,
        regions: &[String],
    ) -> Result<(), StoreError> {
        let updated = sqlx::query_file_scalar!("queries/mark_waiting.sql", item_id, token, regions)
            .fetch_one(&self.pool)
            .await?;
        fenced(u64::try_from(updated).unwrap_or(0), item_id)
    }
}

fn fenced(rows: u64, item_id: i64) -> Result<(), StoreError> {
    if rows == 0 {
        Err(StoreError::LeaseLost { item_id })
    } else {
        Ok(())
    }
}
