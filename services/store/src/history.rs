//! The key-rotation history: one row per table change tablecrypt made. Append-only (the database refuses UPDATE,
//! DELETE and TRUNCATE); rows are written by [`crate::ChangeItemRepository::finish`].

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tablecrypt_core::change::{KeyRotation, TableRef};
use tablecrypt_core::{AccountId, EncryptionMode, Region, TableName};
use uuid::Uuid;

use crate::error::StoreError;

/// A key_rotation_history row as stored.
#[derive(Debug, Clone)]
struct RotationRow {
    history_id: i64,
    account_id: String,
    region: String,
    table_name: String,
    from_mode: String,
    from_key_arn: Option<String>,
    to_mode: String,
    to_key_arn: Option<String>,
    request_id: Uuid,
    item_id: i64,
    requested_by: String,
    approved_by: Option<String>,
    start_time: DateTime<Utc>,
    finish_time: DateTime<Utc>,
}

impl RotationRow {
    fn into_domain(self) -> Result<KeyRotation, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            resource: "key rotation",
            id: self.history_id.to_string(),
            reason,
        };
        let mode = |text: &str| {
            EncryptionMode::parse(text).ok_or_else(|| corrupt(format!("unknown mode {text}")))
        };
        Ok(KeyRotation {
            history_id: self.history_id,
            table: TableRef {
                account_id: AccountId::parse(&self.account_id).map_err(|e| corrupt(e.0))?,
                region: Region::parse(&self.region).map_err(|e| corrupt(e.0))?,
                table_name: TableName::parse(&self.table_name).map_err(|e| corrupt(e.0))?,
            },
            from_mode: mode(&self.from_mode)?,
            from_key_arn: self.from_key_arn.clone(),
            to_mode: mode(&self.to_mode)?,
            to_key_arn: self.to_key_arn.clone(),
            request_id: self.request_id,
            item_id: self.item_id,
            requested_by: self.requested_by.clone(),
            approved_by: self.approved_by.clone(),
            start_time: self.start_time,
            finish_time: self.finish_time,
        })
    }
}

/// Which rows to list. `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub account_id: Option<String>,
    pub region: Option<String>,
    pub table_name: Option<String>,
    pub key_arn: Option<String>,
    pub request_id: Option<Uuid>,
    pub finished_from: Option<DateTime<Utc>>,
    pub finished_before: Option<DateTime<Utc>>,
}

/// A table, for looking up its switches.
pub type TableKey = (String, String, String);

/// Tables' recent switches, and the database's clock when they were read.
#[derive(Debug, Clone)]
pub struct RecentSwitches {
    pub now: DateTime<Utc>,
    pub by_table: HashMap<TableKey, Vec<DateTime<Utc>>>,
}

impl RecentSwitches {
    /// One table's switches.
    pub fn of(&self, table: &TableKey) -> &[DateTime<Utc>] {
        self.by_table.get(table).map(Vec::as_slice).unwrap_or(&[])
    }
}

#[derive(Debug, Clone)]
pub struct HistoryRepository {
    pool: PgPool,
}

impl HistoryRepository {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Newest first, after `before_id`.
    #[tracing::instrument(skip(self), err(level = "debug"))]
    pub async fn list(
        &self,
        filter: &HistoryFilter,
        scope: Option<&[String]>,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<KeyRotation>, StoreError> {
        sqlx::query_file_as!(
            RotationRow,
            "queries/list_key_rotation_history.sql",
            before_id,
            filter.account_id,
            filter.region,
            filter.table_name,
            filter.key_arn,
            filter.request_id,
            filter.finished_from,
            filter.finished_before,
            limit,
            scope
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(RotationRow::into_domain)
        .collect()
    }

    /// When each of `tables` spent a switch in the last 24 hours (the switch quota's window): each accepted
    /// UpdateTable, by the time it was sent, and the database's clock now: the quota is computed from the history's timestamps,
    /// so it is compared with the clock that wrote them.
    #[tracing::instrument(skip_all, fields(tables = tables.len()), err(level = "debug"))]
    pub async fn recent_switches(&self, tables: &[TableKey]) -> Result<RecentSwitches, StoreError> {
        let accounts: Vec<String> = tables.iter().map(|t| t.0.clone()).collect();
        let regions: Vec<String> = tables.iter().map(|t| t.1.clone()).collect();
        let names: Vec<String> = tables.iter().map(|t| t.2.clone()).collect();
        // Every accepted send (a re-send during a change spends a switch too), and every recorded change whose
        // last send (the history's start time, of whichever call: a global table's last call is to its replicas)
        // went unrecorded: its answer was lost (a crash, a timeout, a lease lost while the call was in flight) and
        // the change was found done.
        let rows = sqlx::query!(
            r#"SELECT s.account_id AS "account_id!", s.region AS "region!", s.table_name AS "table_name!",
                      s.sent_time AS "start_time!"
             FROM table_switch_sends s
             JOIN unnest($1::text[], $2::text[], $3::text[]) AS t(account_id, region, table_name)
               ON (s.account_id, s.region, s.table_name) = (t.account_id, t.region, t.table_name)
             WHERE s.sent_time > now() - interval '24 hours'
             UNION ALL
             SELECT h.account_id, h.region, h.table_name, h.start_time
             FROM key_rotation_history h
             JOIN unnest($1::text[], $2::text[], $3::text[]) AS t(account_id, region, table_name)
               ON (h.account_id, h.region, h.table_name) = (t.account_id, t.region, t.table_name)
             WHERE h.start_time > now() - interval '24 hours'
               AND NOT EXISTS (SELECT 1 FROM table_switch_sends s
                               WHERE s.item_id = h.item_id AND s.sent_time >= h.start_time)"#,
            &accounts,
            &regions,
            &names
        )
        .fetch_all(&self.pool)
        .await?;
        let now = sqlx::query_scalar!(r#"SELECT now() AS "now!""#)
            .fetch_one(&self.pool)
            .await?;
        let mut by_table: HashMap<TableKey, Vec<DateTime<Utc>>> = HashMap::new();
        for row in rows {
            by_table
                .entry((row.account_id, row.region, row.table_name))
                .or_default()
                .push(row.start_time);
        }
        Ok(RecentSwitches { now, by_table })
    }
}
