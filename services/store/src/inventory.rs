//! The encryption inventory: one row per (account, region, table), as DynamoDB last reported it.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use tablecrypt_core::{
    AccountId, EncryptionMode, Region, ReplicaEncryption, TableEncryption, TableName,
};

pub use tablecrypt_core::InventoryFilter;

use crate::error::StoreError;
use crate::selector::SelectorArgs;

const RESOURCE: &str = "table";

/// An inventory row: the observation and whether the table has since disappeared.
#[derive(Debug, Clone)]
pub struct InventoryEntry {
    pub table: TableEncryption,
    /// When a scan no longer found the table.
    pub gone_since: Option<DateTime<Utc>>,
}

/// The position after which a page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryCursor {
    pub account_id: String,
    pub region: String,
    pub table_name: String,
}

struct InventoryRow {
    account_id: String,
    region: String,
    table_name: String,
    mode: String,
    kms_key_arn: Option<String>,
    sse_status: String,
    table_status: String,
    inaccessible_since: Option<DateTime<Utc>>,
    replicas: Value,
    observe_time: DateTime<Utc>,
    gone_time: Option<DateTime<Utc>>,
    tags: Option<Value>,
}

impl InventoryRow {
    fn into_entry(self) -> Result<InventoryEntry, StoreError> {
        let id = format!("{}/{}/{}", self.account_id, self.region, self.table_name);
        let corrupt = |reason: String| StoreError::Corrupt {
            resource: RESOURCE,
            id: id.clone(),
            reason,
        };
        let replicas = self
            .replicas
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|r| ReplicaEncryption {
                        region: r["region"].as_str().unwrap_or_default().to_owned(),
                        status: r["status"].as_str().unwrap_or_default().to_owned(),
                        key_arn: r["key_arn"].as_str().map(str::to_owned),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(InventoryEntry {
            table: TableEncryption {
                account_id: AccountId::parse(&self.account_id).map_err(|e| corrupt(e.0))?,
                region: Region::parse(&self.region).map_err(|e| corrupt(e.0))?,
                table_name: TableName::parse(&self.table_name).map_err(|e| corrupt(e.0))?,
                mode: EncryptionMode::parse(&self.mode)
                    .ok_or_else(|| corrupt(format!("mode {}", self.mode)))?,
                key_arn: self.kms_key_arn,
                sse_status: self.sse_status,
                table_status: self.table_status,
                inaccessible_since: self.inaccessible_since,
                replicas,
                observed_at: self.observe_time,
                tags: self.tags.as_ref().and_then(Value::as_object).map(|tags| {
                    tags.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                }),
            },
            gone_since: self.gone_time,
        })
    }
}

fn replicas_json(replicas: &[ReplicaEncryption]) -> Value {
    Value::Array(
        replicas
            .iter()
            .map(|r| json!({"region": r.region, "status": r.status, "key_arn": r.key_arn}))
            .collect(),
    )
}

/// Reads and writes `table_inventory`.
#[derive(Debug, Clone)]
pub struct InventoryRepository {
    pool: PgPool,
}

impl InventoryRepository {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Records observations (one statement for the whole batch); a newer stored observation wins.
    #[tracing::instrument(skip_all, fields(count = tables.len()), err(level = "debug"))]
    pub async fn record(
        &self,
        tables: &[TableEncryption],
        scan_id: Option<uuid::Uuid>,
    ) -> Result<(), StoreError> {
        if tables.is_empty() {
            return Ok(());
        }
        let column = |f: fn(&TableEncryption) -> String| tables.iter().map(f).collect::<Vec<_>>();
        sqlx::query_file!(
            "queries/upsert_inventory.sql",
            &column(|t| t.account_id.to_string()),
            &column(|t| t.region.to_string()),
            &column(|t| t.table_name.to_string()),
            &column(|t| t.mode.as_str().to_owned()),
            &tables
                .iter()
                .map(|t| t.key_arn.clone())
                .collect::<Vec<Option<String>>>() as &[Option<String>],
            &column(|t| t.sse_status.clone()),
            &column(|t| t.table_status.clone()),
            &tables
                .iter()
                .map(|t| t.inaccessible_since)
                .collect::<Vec<Option<DateTime<Utc>>>>() as &[Option<DateTime<Utc>>],
            &tables
                .iter()
                .map(|t| replicas_json(&t.replicas))
                .collect::<Vec<Value>>(),
            &tables
                .iter()
                .map(|t| t.observed_at)
                .collect::<Vec<DateTime<Utc>>>(),
            scan_id,
            &tables
                .iter()
                .map(|t| t.tags.as_ref().map(|tags| json!(tags)))
                .collect::<Vec<Option<Value>>>() as &[Option<Value>],
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Replaces the KMS aliases known in `account_id`/`region` with `aliases` (alias name, key ARN), as listed at
    /// `observed`. Two scans of one account-region at once (two replicas, a refresh during a scan) cannot mix
    /// their listings: a row is written only over an older one, and only rows older than this listing go.
    #[tracing::instrument(skip_all, fields(account_id = %account_id, %region, aliases = aliases.len()), err(level = "debug"))]
    pub async fn record_aliases(
        &self,
        account_id: &AccountId,
        region: Region,
        aliases: &[(String, String)],
        observed: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (names, keys): (Vec<String>, Vec<String>) = aliases.iter().cloned().unzip();
        let mut tx = self.pool.begin().await?;
        sqlx::query!(
            "INSERT INTO key_aliases (account_id, region, alias_name, key_arn, observe_time)
             SELECT $1, $2, name, key, $5 FROM UNNEST($3::text[], $4::text[]) AS a (name, key)
             ON CONFLICT (account_id, region, alias_name) DO UPDATE
                SET key_arn = EXCLUDED.key_arn, observe_time = EXCLUDED.observe_time
                WHERE key_aliases.observe_time <= EXCLUDED.observe_time",
            account_id.as_str(),
            region.as_str(),
            &names,
            &keys,
            observed
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "DELETE FROM key_aliases
             WHERE account_id = $1 AND region = $2 AND observe_time < $3 AND alias_name <> ALL($4)",
            account_id.as_str(),
            region.as_str(),
            observed,
            &names
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// An alias of each of `key_arns` that has one (the first by name), as scans last listed them.
    #[tracing::instrument(skip_all, fields(keys = key_arns.len()), err(level = "debug"))]
    pub async fn aliases_of(
        &self,
        key_arns: &[String],
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        if key_arns.is_empty() {
            return Ok(Default::default());
        }
        let rows = sqlx::query!(
            r#"SELECT key_arn AS "key_arn!", min(alias_name) AS "alias_name!" FROM key_aliases
               WHERE key_arn = ANY($1) GROUP BY key_arn"#,
            key_arns
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.key_arn, r.alias_name))
            .collect())
    }

    /// Marks as gone the tables of an account-region that a listing taken at `listed_at` did not return.
    #[tracing::instrument(skip_all, fields(account_id = %account_id, region = %region), err(level = "debug"))]
    pub async fn mark_gone(
        &self,
        account_id: &AccountId,
        region: Region,
        present: &[TableName],
        listed_at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let names: Vec<String> = present.iter().map(ToString::to_string).collect();
        let result = sqlx::query_file!(
            "queries/mark_inventory_gone.sql",
            account_id.as_str(),
            region.as_str(),
            &names,
            listed_at
        )
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    #[tracing::instrument(skip_all, fields(account_id = %account_id, region = %region, table = %table), err(level = "debug"))]
    pub async fn get(
        &self,
        account_id: &AccountId,
        region: Region,
        table: &TableName,
    ) -> Result<InventoryEntry, StoreError> {
        sqlx::query_file_as!(
            InventoryRow,
            "queries/get_inventory.sql",
            account_id.as_str(),
            region.as_str(),
            table.as_str()
        )
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            resource: RESOURCE,
            id: format!("{account_id}/{region}/{table}"),
        })?
        .into_entry()
    }

    /// One page of rows matching `filter` after `after`, and whether more follow.
    #[tracing::instrument(skip_all, fields(limit), err(level = "debug"))]
    pub async fn list(
        &self,
        filter: &InventoryFilter,
        after: Option<&InventoryCursor>,
        limit: u32,
    ) -> Result<(Vec<InventoryEntry>, bool), StoreError> {
        let selector = SelectorArgs::from(&filter.account_selector);
        let tags = SelectorArgs::from(&filter.table_tags);
        if selector.contradictory || tags.contradictory {
            return Ok((Vec::new(), false));
        }
        let account_ids: Vec<String> = filter.account_ids.iter().map(ToString::to_string).collect();
        let regions: Vec<String> = filter.regions.iter().map(ToString::to_string).collect();
        let rows = sqlx::query_file_as!(
            InventoryRow,
            "queries/list_inventory.sql",
            after.map(|c| c.account_id.as_str()),
            after.map(|c| c.region.as_str()),
            after.map(|c| c.table_name.as_str()),
            &account_ids,
            selector.equals,
            &selector.exists,
            &selector.absent,
            selector.not_equals,
            &regions,
            filter.mode.map(EncryptionMode::as_str),
            &filter.key_arns,
            filter.name_prefix.as_deref(),
            filter.inaccessible_only,
            filter.include_gone,
            i64::from(limit) + 1,
            tags.equals,
            &tags.exists,
            &tags.absent,
            tags.not_equals,
        )
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() as i64 > i64::from(limit);
        let entries = rows
            .into_iter()
            .take(limit as usize)
            .map(InventoryRow::into_entry)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((entries, more))
    }
}
