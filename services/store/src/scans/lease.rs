//! Leases on a scan's account-regions: every replica claims targets, keeps its lease while it scans, and hands
//! them back when it stops. The outcome is written under the claim's token (`ScanRepository::finish_target`).

use std::time::Duration;

use tablecrypt_core::{AccountId, Region};
use uuid::Uuid;

use super::{RESOURCE, ScanRepository};
use crate::error::StoreError;

/// One account-region this replica claimed, with the token its outcome must be written under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedTarget {
    pub scan_id: Uuid,
    pub account_id: AccountId,
    pub region: Region,
    pub token: i64,
    /// Claims of this target so far, this one included.
    pub attempts: i32,
}

impl ScanRepository {
    /// Claims up to `limit` account-regions for `owner`, under a lease of `lease`; a target whose lease expired
    /// `max_attempts` times is left to `fail_exhausted`.
    #[tracing::instrument(skip(self), err(level = "debug"), level = "debug")]
    pub async fn claim_targets(
        &self,
        owner: Uuid,
        limit: i64,
        lease: Duration,
        max_attempts: i32,
    ) -> Result<Vec<ClaimedTarget>, StoreError> {
        let rows = sqlx::query_file!(
            "queries/claim_scan_targets.sql",
            limit,
            owner,
            lease.as_secs_f64(),
            max_attempts
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let corrupt = |reason: String| StoreError::Corrupt {
                    resource: RESOURCE,
                    id: row.scan_id.to_string(),
                    reason,
                };
                Ok(ClaimedTarget {
                    scan_id: row.scan_id,
                    account_id: AccountId::parse(&row.account_id).map_err(|e| corrupt(e.0))?,
                    region: Region::parse(&row.region).map_err(|e| corrupt(e.0))?,
                    token: row.lease_token,
                    attempts: row.attempts,
                })
            })
            .collect()
    }

    /// Extends the lease of a target this replica holds. Returns false if it no longer holds it: an expired lease
    /// is never revived, since another replica may have claimed the target already.
    #[tracing::instrument(skip(self), err(level = "debug"), level = "debug")]
    pub async fn keep_target(
        &self,
        target: &ClaimedTarget,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query!(
            "UPDATE inventory_scan_targets SET lease_expire_time = now() + make_interval(secs => $5)
             WHERE scan_id = $1 AND account_id = $2 AND region = $3 AND lease_token = $4
               AND state = 'RUNNING' AND lease_expire_time > now()",
            target.scan_id,
            target.account_id.as_str(),
            target.region.as_str(),
            target.token,
            lease.as_secs_f64()
        )
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Hands a target back at shutdown so another replica scans it at once; a hand-back is not an attempt.
    #[tracing::instrument(skip(self), err(level = "debug"), level = "debug")]
    pub async fn release_target(&self, target: &ClaimedTarget) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE inventory_scan_targets
             SET state = 'PENDING', lease_owner = NULL, lease_token = NULL, lease_expire_time = NULL,
                 attempts = greatest(attempts - 1, 0)
             WHERE scan_id = $1 AND account_id = $2 AND region = $3 AND lease_token = $4 AND state = 'RUNNING'",
            target.scan_id,
            target.account_id.as_str(),
            target.region.as_str(),
            target.token
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Fails the targets whose replica stopped `max_attempts` times, and ends their scans if nothing else is
    /// left. Returns how many targets failed.
    #[tracing::instrument(skip(self), err(level = "debug"), level = "debug")]
    pub async fn fail_exhausted(&self, max_attempts: i32) -> Result<usize, StoreError> {
        let scans: Vec<Uuid> =
            sqlx::query_file_scalar!("queries/fail_exhausted_scan_targets.sql", max_attempts)
                .fetch_all(&self.pool)
                .await?;
        if !scans.is_empty() {
            let mut distinct = scans.clone();
            distinct.sort_unstable();
            distinct.dedup();
            self.finish_scans(&distinct).await?;
        }
        Ok(scans.len())
    }
}
