//! The account registry.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use tablecrypt_core::{
    Account, AccountId, AccountLimits, AccountSpec, DisplayName, ExternalId, LabelSelector, Labels,
    PerSecond, Regions, RoleArn,
};

use crate::error::StoreError;
use crate::selector::SelectorArgs;

const RESOURCE: &str = "account";
/// The advisory lock key account discovery holds ("tc-disco" in ASCII), distinct from the claim lock's.
const DISCOVERY_LOCK: i64 = 0x7463_2d64_6973_636f;

/// Reads and writes `accounts` rows.
#[derive(Debug, Clone)]
pub struct AccountRepository {
    pool: PgPool,
}

/// One page of a listing, and whether more rows follow.
#[derive(Debug)]
pub struct AccountPage {
    pub accounts: Vec<Account>,
    pub has_more: bool,
}

/// An `accounts` row as Postgres returns it, before domain validation.
struct AccountRow {
    account_id: String,
    display_name: String,
    role_arn: String,
    external_id: Option<String>,
    regions: Vec<String>,
    labels: Value,
    update_rate: Option<f64>,
    poll_rate: Option<f64>,
    max_tables_in_flight: Option<i32>,
    settle_timeout_seconds: Option<f64>,
    version: i64,
    create_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
}

impl AccountRow {
    fn into_account(self) -> Result<Account, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            resource: RESOURCE,
            id: self.account_id.clone(),
            reason,
        };
        let account_id =
            AccountId::parse(&self.account_id).map_err(|e| corrupt(format!("account_id {e}")))?;
        let labels_map: BTreeMap<String, String> = serde_json::from_value(self.labels.clone())
            .map_err(|e| corrupt(format!("labels {e}")))?;
        let spec = AccountSpec::new(
            &account_id,
            DisplayName::parse(&self.display_name)
                .map_err(|e| corrupt(format!("display_name {e}")))?,
            RoleArn::parse(&self.role_arn).map_err(|e| corrupt(format!("role_arn {e}")))?,
            self.external_id
                .as_deref()
                .map(ExternalId::parse)
                .transpose()
                .map_err(|e| corrupt(format!("external_id {e}")))?,
            Regions::parse(&self.regions).map_err(|e| corrupt(format!("regions {e}")))?,
            Labels::parse(labels_map.iter()).map_err(|e| corrupt(format!("labels {e}")))?,
            AccountLimits::from_raw(
                self.update_rate.unwrap_or(0.0),
                self.poll_rate.unwrap_or(0.0),
                self.max_tables_in_flight.map_or(0, i64::from),
                self.settle_timeout_seconds.unwrap_or(0.0),
            )
            .map_err(|e| corrupt(format!("limits {e}")))?,
        )
        .map_err(|e| corrupt(e.to_string()))?;
        Ok(Account {
            account_id,
            spec,
            create_time: self.create_time,
            update_time: self.update_time,
            version: self.version,
        })
    }
}

/// The override columns: NULL where the account keeps the service default.
fn limit_columns(limits: &AccountLimits) -> (Option<f64>, Option<f64>, Option<i32>, Option<f64>) {
    (
        limits.update_rate.map(PerSecond::get),
        limits.poll_rate.map(PerSecond::get),
        limits.max_tables_in_flight.map(|n| n as i32),
        limits.settle_timeout.map(|d| d.as_secs_f64()),
    )
}

fn labels_json(labels: &Labels) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

impl AccountRepository {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Stores a new account; `AlreadyExists` if the id is taken.
    #[tracing::instrument(skip_all, fields(account_id = %account_id), err(level = "debug"))]
    pub async fn insert(
        &self,
        account_id: &AccountId,
        spec: &AccountSpec,
    ) -> Result<Account, StoreError> {
        let (update_rate, poll_rate, max_tables_in_flight, settle_timeout) =
            limit_columns(&spec.limits);
        let row = sqlx::query_file_as!(
            AccountRow,
            "queries/insert_account.sql",
            account_id.as_str(),
            spec.display_name.as_str(),
            spec.role_arn.as_str(),
            spec.external_id.as_ref().map(ExternalId::expose),
            &spec.regions.names(),
            labels_json(&spec.labels),
            update_rate,
            poll_rate,
            max_tables_in_flight,
            settle_timeout,
        )
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => row.into_account(),
            None => Err(StoreError::AlreadyExists {
                resource: RESOURCE,
                id: account_id.to_string(),
            }),
        }
    }

    /// One account, or `NotFound`.
    #[tracing::instrument(skip_all, fields(account_id = %account_id), err(level = "debug"))]
    pub async fn get(&self, account_id: &AccountId) -> Result<Account, StoreError> {
        sqlx::query_file_as!(AccountRow, "queries/get_account.sql", account_id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                resource: RESOURCE,
                id: account_id.to_string(),
            })?
            .into_account()
    }

    /// Accounts matching `selector` with ids after `after`, in id order, at most `limit`.
    #[tracing::instrument(skip_all, fields(selector = %selector.canonical(), limit), err(level = "debug"))]
    pub async fn list(
        &self,
        selector: &LabelSelector,
        after: Option<&AccountId>,
        limit: u32,
    ) -> Result<AccountPage, StoreError> {
        let args = SelectorArgs::from(selector);
        if args.contradictory {
            return Ok(AccountPage {
                accounts: Vec::new(),
                has_more: false,
            });
        }
        // Fetch one more than asked to learn whether another page follows.
        let fetch = i64::from(limit) + 1;
        let rows = sqlx::query_file_as!(
            AccountRow,
            "queries/list_accounts.sql",
            after.map(AccountId::as_str),
            args.equals,
            &args.exists,
            &args.absent,
            args.not_equals,
            fetch,
        )
        .fetch_all(&self.pool)
        .await?;
        let has_more = rows.len() as i64 > i64::from(limit);
        let accounts = rows
            .into_iter()
            .take(limit as usize)
            .map(AccountRow::into_account)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AccountPage { accounts, has_more })
    }

    /// Replaces the spec of an account if it is still at `expected_version`.
    #[tracing::instrument(skip_all, fields(account_id = %account_id, expected_version), err(level = "debug"))]
    pub async fn update(
        &self,
        account_id: &AccountId,
        expected_version: i64,
        spec: &AccountSpec,
    ) -> Result<Account, StoreError> {
        let (update_rate, poll_rate, max_tables_in_flight, settle_timeout) =
            limit_columns(&spec.limits);
        let row = sqlx::query_file_as!(
            AccountRow,
            "queries/update_account.sql",
            account_id.as_str(),
            expected_version,
            spec.display_name.as_str(),
            spec.role_arn.as_str(),
            spec.external_id.as_ref().map(ExternalId::expose),
            &spec.regions.names(),
            labels_json(&spec.labels),
            update_rate,
            poll_rate,
            max_tables_in_flight,
            settle_timeout,
        )
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => row.into_account(),
            None => Err(self.missing_or_conflict(account_id).await),
        }
    }

    /// Deletes an account, only at `expected_version` when one is given.
    #[tracing::instrument(skip_all, fields(account_id = %account_id, expected_version), err(level = "debug"))]
    pub async fn delete(
        &self,
        account_id: &AccountId,
        expected_version: Option<i64>,
    ) -> Result<(), StoreError> {
        let deleted = sqlx::query_file!(
            "queries/delete_account.sql",
            account_id.as_str(),
            expected_version
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        if deleted == 1 {
            Ok(())
        } else {
            Err(self.missing_or_conflict(account_id).await)
        }
    }

    /// Of `account_ids`, those with change items not yet finished (in requests running, paused, queued or
    /// awaiting approval).
    #[tracing::instrument(skip_all, fields(accounts = account_ids.len()), err(level = "debug"))]
    pub async fn with_items_in_flight(
        &self,
        account_ids: &[String],
    ) -> Result<BTreeSet<String>, StoreError> {
        if account_ids.is_empty() {
            return Ok(BTreeSet::new());
        }
        // The states, not finish_time: each has a partial index (claimable, in flight) the planner can combine.
        let rows = sqlx::query_scalar!(
            r#"SELECT DISTINCT account_id AS "account_id!" FROM change_items
               WHERE state IN ('PENDING', 'DEFERRED', 'APPLYING', 'WAITING') AND account_id = ANY($1)"#,
            account_ids
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Deletes an account at `expected_version` only while none of its change items is unfinished (checked in
    /// the same statement, so a request planned since the caller looked keeps its account). False when either
    /// check failed.
    #[tracing::instrument(skip_all, fields(account_id = %account_id, expected_version), err(level = "debug"))]
    pub async fn delete_if_idle(
        &self,
        account_id: &AccountId,
        expected_version: i64,
    ) -> Result<bool, StoreError> {
        let deleted = sqlx::query!(
            "DELETE FROM accounts a WHERE a.account_id = $1 AND a.version = $2
               AND NOT EXISTS (SELECT 1 FROM change_items i WHERE i.account_id = a.account_id
                               AND i.state IN ('PENDING', 'DEFERRED', 'APPLYING', 'WAITING'))",
            account_id.as_str(),
            expected_version
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(deleted == 1)
    }

    /// One account discovery at a time across replicas: the lock is held while the returned transaction lives
    /// (it is released when the transaction ends, also if this process dies). `None` if another holds it.
    pub async fn lock_discovery(
        &self,
    ) -> Result<Option<sqlx::Transaction<'static, sqlx::Postgres>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let locked = sqlx::query_scalar!(
            r#"SELECT pg_try_advisory_xact_lock($1) AS "locked!""#,
            DISCOVERY_LOCK
        )
        .fetch_one(&mut *tx)
        .await?;
        Ok(locked.then_some(tx))
    }

    /// After a conditional write touched nothing: was the row gone, or at another version?
    async fn missing_or_conflict(&self, account_id: &AccountId) -> StoreError {
        match self.get(account_id).await {
            Ok(_) => StoreError::VersionConflict {
                resource: RESOURCE,
                id: account_id.to_string(),
            },
            Err(e) => e,
        }
    }
}
