//! Change items: listing for the API, and the worker's lease-fenced operations (claim, heartbeat, transitions).
//!
//! Every write a worker makes names its lease (`lease_owner = $owner`): once another worker has reclaimed an
//! item, the first one's writes match no row and it stops ([`StoreError::LeaseLost`]).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use tablecrypt_core::change::{ChangeItem, ReplicaPlan, TableRef};
use tablecrypt_core::{AccountId, EncryptionMode, ItemReason, ItemState, Region, TableName};
use uuid::Uuid;

use crate::error::StoreError;

const RESOURCE: &str = "change item";

/// A change_items row as stored; [`ItemRow::into_domain`] checks it into a [`ChangeItem`].
#[derive(Debug, Clone)]
struct ItemRow {
    item_id: i64,
    request_id: Uuid,
    ordinal: i32,
    account_id: String,
    region: String,
    table_name: String,
    state: String,
    canary: bool,
    from_mode: String,
    from_key_arn: Option<String>,
    to_mode: String,
    to_key_arn: Option<String>,
    replicas: Value,
    reason: Option<String>,
    message: Option<String>,
    attempts: i32,
    next_attempt_time: DateTime<Utc>,
    apply_time: Option<DateTime<Utc>>,
    finish_time: Option<DateTime<Utc>>,
    update_time: DateTime<Utc>,
}

impl ItemRow {
    fn into_domain(self) -> Result<ChangeItem, StoreError> {
        let id = self.item_id;
        let corrupt = |reason: String| StoreError::Corrupt {
            resource: RESOURCE,
            id: id.to_string(),
            reason,
        };
        let mode = |text: &str| {
            EncryptionMode::parse(text).ok_or_else(|| corrupt(format!("unknown mode {text}")))
        };
        Ok(ChangeItem {
            item_id: id,
            request_id: self.request_id,
            ordinal: self.ordinal,
            table: TableRef {
                account_id: AccountId::parse(&self.account_id).map_err(|e| corrupt(e.0))?,
                region: Region::parse(&self.region).map_err(|e| corrupt(e.0))?,
                table_name: TableName::parse(&self.table_name).map_err(|e| corrupt(e.0))?,
            },
            state: ItemState::parse(&self.state)
                .ok_or_else(|| corrupt(format!("unknown state {}", self.state)))?,
            canary: self.canary,
            from_mode: mode(&self.from_mode)?,
            from_key_arn: self.from_key_arn,
            to_mode: mode(&self.to_mode)?,
            to_key_arn: self.to_key_arn,
            replicas: replicas_from_json(&self.replicas).map_err(corrupt)?,
            reason: match self.reason.as_deref() {
                None => None,
                Some(text) => Some(
                    ItemReason::parse(text)
                        .ok_or_else(|| corrupt(format!("unknown reason {text}")))?,
                ),
            },
            message: self.message,
            attempts: self.attempts,
            next_attempt_time: Some(self.next_attempt_time),
            apply_time: self.apply_time,
            finish_time: self.finish_time,
            update_time: Some(self.update_time),
        })
    }
}

/// A global table's replicas as stored: `[{"region", "from_key_arn", "to_key_arn"}]`.
pub(crate) fn replicas_to_json(replicas: &[ReplicaPlan]) -> Value {
    Value::Array(
        replicas
            .iter()
            .map(|r| json!({"region": r.region, "from_key_arn": r.from_key_arn, "to_key_arn": r.to_key_arn}))
            .collect(),
    )
}

fn replicas_from_json(value: &Value) -> Result<Vec<ReplicaPlan>, String> {
    let key = |r: &Value, name: &str| r.get(name).and_then(Value::as_str).map(str::to_owned);
    value
        .as_array()
        .ok_or_else(|| format!("replicas are not a list: {value}"))?
        .iter()
        .map(|r| {
            Ok(ReplicaPlan {
                region: key(r, "region").ok_or_else(|| format!("a replica has no region: {r}"))?,
                from_key_arn: key(r, "from_key_arn"),
                to_key_arn: key(r, "to_key_arn"),
            })
        })
        .collect()
}

fn into_domain(rows: Vec<ItemRow>) -> Result<Vec<ChangeItem>, StoreError> {
    rows.into_iter().map(ItemRow::into_domain).collect()
}

/// A claimed item with what the worker needs from its request.
#[derive(Debug, Clone)]
pub struct ClaimedItem {
    pub item: ChangeItem,
    /// Its previous lease had expired (its worker died or stalled): taken over, not newly started.
    pub reclaimed: bool,
    /// When the request became runnable (approved, or created if no approval was needed).
    pub queued_at: DateTime<Utc>,
    pub max_updates_per_second: Option<f64>,
    /// The account's own UpdateTable and DescribeTable rates, where it overrides the service's.
    pub account_update_rate: Option<f64>,
    pub account_poll_rate: Option<f64>,
    pub created_by: String,
    pub approved_by: Option<String>,
}

/// How a finished item ends.
#[derive(Debug, Clone)]
pub enum ItemEnd {
    /// The table shows the target; `changed` adds the key-rotation history row.
    Succeeded {
        changed: bool,
    },
    Skipped {
        message: String,
    },
    Failed {
        reason: ItemReason,
        message: String,
    },
}

/// The claim lock: claims from every replica take turns, so in-flight counts are exact. Held only for the
/// claim transaction. The number is arbitrary but fixed ("tcrypt" on a phone keypad).
const CLAIM_LOCK: i64 = 827_978;

macro_rules! select_items {
    ($where:literal, $($arg:expr),*) => {
        sqlx::query_as!(
            ItemRow,
            "SELECT item_id, request_id, ordinal, account_id, region, table_name, state, canary, from_mode,
                    from_key_arn, to_mode, to_key_arn, replicas, reason, message, attempts, next_attempt_time,
                    apply_time, finish_time, update_time
             FROM change_items " + $where,
            $($arg),*
        )
    };
}

#[derive(Debug, Clone)]
pub struct ChangeItemRepository {
    pool: PgPool,
}

impl ChangeItemRepository {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// A request's items in plan order after `after_ordinal`, optionally only in `states`.
    #[tracing::instrument(skip(self), err)]
    pub async fn list(
        &self,
        request_id: Uuid,
        states: &[ItemState],
        after_ordinal: Option<i32>,
        limit: i64,
    ) -> Result<Vec<ChangeItem>, StoreError> {
        let states: Vec<String> = states.iter().map(|s| s.as_str().to_owned()).collect();
        into_domain(
            select_items!(
                "WHERE request_id = $1 AND (cardinality($2::text[]) = 0 OR state = ANY($2))
               AND ($3::integer IS NULL OR ordinal > $3)
             ORDER BY ordinal LIMIT $4",
                request_id,
                &states,
                after_ordinal,
                limit
            )
            .fetch_all(&self.pool)
            .await?,
        )
    }

    /// Items of a request changed at or after `since`, oldest change first (for watching).
    #[tracing::instrument(skip(self), err)]
    pub async fn changed_since(
        &self,
        request_id: Uuid,
        since: DateTime<Utc>,
    ) -> Result<Vec<ChangeItem>, StoreError> {
        into_domain(
            select_items!(
                "WHERE request_id = $1 AND update_time >= $2 ORDER BY update_time, item_id",
                request_id,
                since
            )
            .fetch_all(&self.pool)
            .await?,
        )
    }

    /// Every item of a request (for rollback planning).
    pub async fn all_of(&self, request_id: Uuid) -> Result<Vec<ChangeItem>, StoreError> {
        self.list(request_id, &[], None, i64::MAX).await
    }

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

    /// The accounts each request's items are in, for authorization.
    #[tracing::instrument(skip_all, err, level = "debug")]
    pub async fn accounts_of(
        &self,
        request_ids: &[Uuid],
    ) -> Result<std::collections::HashMap<Uuid, Vec<String>>, StoreError> {
        let rows = sqlx::query!(
            r#"SELECT DISTINCT request_id, account_id FROM change_items WHERE request_id = ANY($1)"#,
            request_ids
        )
        .fetch_all(&self.pool)
        .await?;
        let mut accounts: std::collections::HashMap<Uuid, Vec<String>> =
            std::collections::HashMap::new();
        for row in rows {
            accounts
                .entry(row.request_id)
                .or_default()
                .push(row.account_id);
        }
        Ok(accounts)
    }

    /// Items of requests still in progress, by state (for the items-by-state gauge).
    #[tracing::instrument(skip(self), err, level = "debug")]
    pub async fn live_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query!(
            r#"SELECT i.state, count(*) AS "n!"
               FROM change_items i JOIN change_requests r USING (request_id)
               WHERE r.state NOT IN ('SUCCEEDED', 'PARTIALLY_FAILED', 'FAILED', 'CANCELLED')
               GROUP BY i.state"#
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.state, r.n)).collect())
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

    /// Gives the item back until `until`, with the reason. `clear_apply` when AWS rejected the UpdateTable, so
    /// the table is not changing because of us.
    pub async fn defer(
        &self,
        item_id: i64,
        owner: Uuid,
        until: DateTime<Utc>,
        reason: Option<ItemReason>,
        message: &str,
        clear_apply: bool,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_request_of(&mut tx, item_id).await?;
        let done = sqlx::query!(
            "UPDATE change_items
             SET state = CASE WHEN r.state = 'CANCELLING' AND ($6 OR apply_time IS NULL) THEN 'CANCELLED'
                              ELSE 'DEFERRED' END,
                 finish_time = CASE WHEN r.state = 'CANCELLING' AND ($6 OR apply_time IS NULL) THEN now() END,
                 next_attempt_time = $3, reason = $4, message = $5,
                 apply_time = CASE WHEN $6 THEN NULL ELSE apply_time END, lease_owner = NULL,
                 lease_expire_time = NULL, update_time = now()
             FROM change_requests r
             WHERE item_id = $1 AND lease_owner = $2 AND r.request_id = change_items.request_id
             RETURNING change_items.request_id",
            item_id,
            owner,
            until,
            reason.map(ItemReason::as_str),
            message,
            clear_apply
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
    pub async fn finish(
        &self,
        claimed: &ClaimedItem,
        owner: Uuid,
        end: &ItemEnd,
    ) -> Result<(), StoreError> {
        let item = &claimed.item;
        let (state, reason, message) = match end {
            ItemEnd::Succeeded { .. } => (ItemState::Succeeded, None, None),
            ItemEnd::Skipped { message } => (ItemState::Skipped, None, Some(message.clone())),
            ItemEnd::Failed { reason, message } => (
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
             WHERE item_id = $1 AND lease_owner = $2
             RETURNING apply_time",
            item.item_id,
            owner,
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
        if let ItemEnd::Succeeded { changed: true } = end {
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
    #[tracing::instrument(skip(self), err, level = "debug")]
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

fn fenced(rows: u64, item_id: i64) -> Result<(), StoreError> {
    if rows == 0 {
        Err(StoreError::LeaseLost { item_id })
    } else {
        Ok(())
    }
}
