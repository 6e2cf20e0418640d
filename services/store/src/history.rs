//! The key-rotation history: one row per table change tablecrypt made. Append-only (the database refuses UPDATE,
//! DELETE and TRUNCATE); rows are written by [`crate::ChangeItemRepository::finish`].

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::StoreError;

#[derive(Debug, Clone)]
pub struct KeyRotationRecord {
    pub history_id: i64,
    pub account_id: String,
    pub region: String,
    pub table_name: String,
    pub from_mode: String,
    pub from_key_arn: Option<String>,
    pub to_mode: String,
    pub to_key_arn: Option<String>,
    pub request_id: Uuid,
    pub item_id: i64,
    pub requested_by: String,
    pub approved_by: Option<String>,
    pub start_time: DateTime<Utc>,
    pub finish_time: DateTime<Utc>,
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

#[derive(Debug, Clone)]
pub struct HistoryRepository {
    pool: PgPool,
}

impl HistoryRepository {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Newest first, after `before_id`.
    #[tracing::instrument(skip(self), err)]
    pub async fn list(
        &self,
        filter: &HistoryFilter,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<KeyRotationRecord>, StoreError> {
        Ok(sqlx::query_file_as!(
            KeyRotationRecord,
            "queries/list_key_rotation_history.sql",
            before_id,
            filter.account_id,
            filter.region,
            filter.table_name,
            filter.key_arn,
            filter.request_id,
            filter.finished_from,
            filter.finished_before,
            limit
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// When each of `tables` switched encryption in the last 24 hours (the switch quota's window), by the time
    /// UpdateTable was sent.
    #[tracing::instrument(skip_all, fields(tables = tables.len()), err)]
    pub async fn recent_switches(
        &self,
        tables: &[TableKey],
    ) -> Result<HashMap<TableKey, Vec<DateTime<Utc>>>, StoreError> {
        let accounts: Vec<String> = tables.iter().map(|t| t.0.clone()).collect();
        let regions: Vec<String> = tables.iter().map(|t| t.1.clone()).collect();
        let names: Vec<String> = tables.iter().map(|t| t.2.clone()).collect();
        let rows = sqlx::query!(
            "SELECT h.account_id, h.region, h.table_name, h.start_time
             FROM key_rotation_history h
             JOIN unnest($1::text[], $2::text[], $3::text[]) AS t(account_id, region, table_name)
               ON (h.account_id, h.region, h.table_name) = (t.account_id, t.region, t.table_name)
             WHERE h.start_time > now() - interval '24 hours'",
            &accounts,
            &regions,
            &names
        )
        .fetch_all(&self.pool)
        .await?;
        let mut switches: HashMap<TableKey, Vec<DateTime<Utc>>> = HashMap::new();
        for row in rows {
            switches
                .entry((row.account_id, row.region, row.table_name))
                .or_default()
                .push(row.start_time);
        }
        Ok(switches)
    }
}
