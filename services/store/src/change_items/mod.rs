//! Change items: the stored row and its domain type, and reads for the API; the worker's claim, heartbeat and
//! send checks are in `lease`, recording outcomes and moving requests on in `settle`. The fence is the claim's
//! `lease_token`: every write about an item names it, so a task whose claim was taken over writes nothing.
//!
//! Every write a worker makes names its lease (`lease_owner = $owner`): once another worker has reclaimed an
//! item, the first one's writes match no row and it stops ([`StoreError::LeaseLost`]).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use tablecrypt_core::change::apply::CallKind;
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
    apply_call: Option<String>,
    server_errors: i32,
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
            apply_call: match self.apply_call.as_deref() {
                None => None,
                Some(text) => Some(
                    CallKind::parse(text).ok_or_else(|| corrupt(format!("unknown call {text}")))?,
                ),
            },
            server_errors: self.server_errors,
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
    /// This claim's fencing token: every write about the item names it, and fails once another claim took it.
    pub lease_token: i64,
    /// The database's clock at the claim, and when the claim arrived here: the worker's estimate of the
    /// database's clock, the one clock of `apply_time`, leases and slots.
    pub claimed_at: DateTime<Utc>,
    pub received: std::time::Instant,
    /// Its previous lease had expired (its worker died or stalled): taken over, not newly started and not handed
    /// back at a shutdown.
    pub reclaimed: bool,
    /// When the request became runnable (approved, or created if no approval was needed).
    pub queued_at: DateTime<Utc>,
    pub max_updates_per_second: Option<f64>,
    /// The account's own UpdateTable and DescribeTable rates, where it overrides the service's.
    pub account_update_rate: Option<f64>,
    pub account_poll_rate: Option<f64>,
    /// The account's own settle timeout, if it has one.
    pub account_settle_timeout: Option<std::time::Duration>,
    pub created_by: String,
    pub approved_by: Option<String>,
    /// The W3C trace context of the call that created the request, for the item's span to link to.
    pub request_trace_parent: Option<String>,
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
        /// A call of this change already switched the table's key (a later call failed): recorded in the history.
        switched: bool,
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
                    apply_time, apply_call, server_errors, finish_time, update_time
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
    #[tracing::instrument(skip(self), err(level = "debug"))]
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
    #[tracing::instrument(skip(self), err(level = "debug"))]
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

    /// The accounts each request's items are in, for authorization (kept per request by the database as items
    /// are written: reading them costs one row per account, not one per item). A request with none kept (rows
    /// a restore or a disabled trigger left out) is read from its items, so a gap never reads as "no accounts",
    /// which every scope would cover.
    #[tracing::instrument(skip_all, err(level = "debug"), level = "debug")]
    pub async fn accounts_of(
        &self,
        request_ids: &[Uuid],
    ) -> Result<std::collections::HashMap<Uuid, Vec<String>>, StoreError> {
        let rows = sqlx::query!(
            r#"WITH unrecorded AS (
                   SELECT r.request_id FROM unnest($1::uuid[]) AS r(request_id)
                   WHERE NOT EXISTS (SELECT 1 FROM change_request_accounts a WHERE a.request_id = r.request_id))
               SELECT request_id AS "request_id!", account_id AS "account_id!"
               FROM change_request_accounts WHERE request_id = ANY($1)
               UNION ALL
               SELECT DISTINCT i.request_id, i.account_id
               FROM change_items i JOIN unrecorded u USING (request_id)"#,
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
    #[tracing::instrument(skip(self), err(level = "debug"), level = "debug")]
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
}

mod lease;
mod settle;

pub use lease::SendCheck;
pub use settle::{Deferment, Deferral};
