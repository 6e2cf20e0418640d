//! Inventory scans and their per account-region targets.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tablecrypt_core::scan::{InventoryScan, ScanState, ScanTargetState, ScanTargetStatus};
use tablecrypt_core::{AccountId, FailureKind, Region};
use uuid::Uuid;

use crate::error::StoreError;

mod lease;

pub use lease::ClaimedTarget;

const RESOURCE: &str = "inventory scan";

/// An inventory_scan_targets row as stored.
#[derive(Debug, Clone)]
struct TargetRow {
    account_id: String,
    region: String,
    state: String,
    tables_seen: i32,
    tables_gone: i32,
    failure_kind: Option<String>,
    failure_message: Option<String>,
}

impl TargetRow {
    fn into_domain(self, scan_id: Uuid) -> Result<ScanTargetStatus, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            resource: RESOURCE,
            id: scan_id.to_string(),
            reason,
        };
        Ok(ScanTargetStatus {
            account_id: AccountId::parse(&self.account_id).map_err(|e| corrupt(e.0))?,
            region: Region::parse(&self.region).map_err(|e| corrupt(e.0))?,
            state: ScanTargetState::parse(&self.state)
                .ok_or_else(|| corrupt(format!("unknown target state {}", self.state)))?,
            tables_seen: self.tables_seen,
            tables_gone: self.tables_gone,
            failure: self.failure_kind.map(|kind| {
                (
                    FailureKind::parse(&kind).unwrap_or(FailureKind::Unknown),
                    self.failure_message.unwrap_or_default(),
                )
            }),
        })
    }
}

/// How one account-region of a scan ended.
#[derive(Debug, Clone)]
pub enum TargetOutcome {
    Succeeded {
        tables_seen: i32,
        tables_gone: i32,
    },
    Failed {
        tables_seen: i32,
        kind: FailureKind,
        message: String,
    },
}

#[derive(Debug, Clone)]
pub struct ScanRepository {
    pool: PgPool,
}

impl ScanRepository {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Creates a RUNNING scan with its targets PENDING, in one transaction; replicas claim the targets (`lease`).
    /// The scan's own lease is 'infinity' only so that a replica of the previous version never closes it.
    #[tracing::instrument(skip_all, fields(targets = targets.len()), err(level = "debug"))]
    pub async fn create(
        &self,
        requested_by: &str,
        targets: &[(String, String)],
    ) -> Result<Uuid, StoreError> {
        let scan_id = Uuid::new_v4();
        let mut tx = self.pool.begin().await?;
        sqlx::query!(
            "INSERT INTO inventory_scans (scan_id, state, requested_by, lease_expire_time)
             VALUES ($1, 'RUNNING', $2, 'infinity')",
            scan_id,
            requested_by
        )
        .execute(&mut *tx)
        .await?;
        let accounts: Vec<String> = targets.iter().map(|(a, _)| a.clone()).collect();
        let regions: Vec<String> = targets.iter().map(|(_, r)| r.clone()).collect();
        sqlx::query_file!(
            "queries/insert_scan_targets.sql",
            scan_id,
            &accounts,
            &regions
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(scan_id)
    }

    /// Records a target's outcome under the lease `token` that claimed it, then closes the scan if it was the
    /// last one. Returns false, writing nothing, if the lease was lost (another replica claimed the target).
    #[tracing::instrument(skip_all, fields(%scan_id, account_id, region), err(level = "debug"))]
    pub async fn finish_target(
        &self,
        scan_id: Uuid,
        account_id: &str,
        region: &str,
        token: i64,
        outcome: &TargetOutcome,
    ) -> Result<bool, StoreError> {
        let (state, seen, gone, kind, message) = match outcome {
            TargetOutcome::Succeeded {
                tables_seen,
                tables_gone,
            } => (
                ScanTargetState::Succeeded.as_str(),
                *tables_seen,
                *tables_gone,
                None,
                None,
            ),
            TargetOutcome::Failed {
                tables_seen,
                kind,
                message,
            } => (
                ScanTargetState::Failed.as_str(),
                *tables_seen,
                0,
                Some(kind.as_str()),
                Some(message.as_str()),
            ),
        };
        let recorded = sqlx::query_file!(
            "queries/finish_scan_target.sql",
            scan_id,
            account_id,
            region,
            state,
            seen,
            gone,
            kind,
            message,
            token
        )
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        if recorded {
            self.finish_scans(&[scan_id]).await?;
        }
        Ok(recorded)
    }

    /// Ends each of `scan_ids` whose targets have all ended.
    async fn finish_scans(&self, scan_ids: &[Uuid]) -> Result<(), StoreError> {
        sqlx::query_file!("queries/finish_scan.sql", scan_ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// When `account_id`/`region` was last scanned successfully, if ever.
    pub async fn last_success(
        &self,
        account_id: &str,
        region: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(sqlx::query_scalar!(
            "SELECT max(finish_time) FROM inventory_scan_targets
             WHERE account_id = $1 AND region = $2 AND state = 'SUCCEEDED'",
            account_id,
            region
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn get(&self, scan_id: Uuid) -> Result<InventoryScan, StoreError> {
        let scan = sqlx::query!(
            "SELECT scan_id, state, create_time, finish_time FROM inventory_scans WHERE scan_id = $1",
            scan_id
        )
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound { resource: RESOURCE, id: scan_id.to_string() })?;
        let targets = sqlx::query_as!(
            TargetRow,
            "SELECT account_id, region, state, tables_seen, tables_gone, failure_kind, failure_message
             FROM inventory_scan_targets WHERE scan_id = $1 ORDER BY account_id, region",
            scan_id
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(InventoryScan {
            scan_id: scan.scan_id,
            state: ScanState::parse(&scan.state).ok_or_else(|| StoreError::Corrupt {
                resource: RESOURCE,
                id: scan_id.to_string(),
                reason: format!("unknown state {}", scan.state),
            })?,
            create_time: scan.create_time,
            finish_time: scan.finish_time,
            targets: targets
                .into_iter()
                .map(|t| t.into_domain(scan_id))
                .collect::<Result<_, _>>()?,
        })
    }
}
