//! Inventory scans: ListTables + DescribeTable in every chosen account-region.

use std::num::NonZeroU32;
use std::sync::Arc;

use futures::StreamExt as _;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tablecrypt_core::{AccountId, FailureKind, Region, TableName};
use tablecrypt_fleet::{AccountAccess, Fleet, FleetError};
use tablecrypt_store::{Store, StoreError, TargetOutcome};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::access;
use crate::error::EngineError;

/// How long a running scan's lease lasts without being extended: a replica that dies leaves its scans to be
/// closed after this (by any replica), a live one extends it every third of it.
const SCAN_LEASE: std::time::Duration = std::time::Duration::from_secs(60);

/// Limits of a scan.
#[derive(Debug, Clone)]
pub struct ScanSettings {
    /// Account-regions scanned at once.
    pub concurrent_targets: usize,
    /// DescribeTable calls in flight per account-region.
    pub describes_in_flight: usize,
    /// DescribeTable requests per second per account-region (DynamoDB's control plane allows ~2,500/s per
    /// account-region in total; a scan should take a small share).
    pub describe_rate: NonZeroU32,
    /// Observations written per database statement.
    pub write_batch: usize,
}

impl Default for ScanSettings {
    fn default() -> Self {
        Self {
            concurrent_targets: 64,
            describes_in_flight: 8,
            describe_rate: NonZeroU32::new(50).unwrap_or(NonZeroU32::MIN),
            write_batch: 100,
        }
    }
}

/// One account-region to scan, with the access to reach it.
#[derive(Debug, Clone)]
pub struct ScanTarget {
    pub access: AccountAccess,
    pub region: Region,
}

/// Starts scans in the background and lets them run to completion (or shutdown).
#[derive(Clone)]
pub struct InventoryScanner {
    store: Store,
    fleet: Arc<Fleet>,
    settings: ScanSettings,
    /// Shared by every scan: the DescribeTable rate holds per account-region across concurrent scans.
    limiter: Arc<DefaultKeyedRateLimiter<(String, String)>>,
    targets_at_once: Arc<Semaphore>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for InventoryScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InventoryScanner")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl InventoryScanner {
    pub fn new(
        store: Store,
        fleet: Arc<Fleet>,
        settings: ScanSettings,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            limiter: Arc::new(RateLimiter::keyed(Quota::per_second(
                settings.describe_rate,
            ))),
            targets_at_once: Arc::new(Semaphore::new(settings.concurrent_targets.max(1))),
            store,
            fleet,
            settings,
            tasks,
            shutdown,
        }
    }

    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    /// Starts a scan of `account_ids` (every registered account if empty) in `regions` (each account's
    /// registered regions if empty): a caller's RefreshInventory, or the periodic scan of the whole fleet.
    pub async fn start_for(
        &self,
        requested_by: &str,
        account_ids: &[AccountId],
        regions: &[Region],
    ) -> Result<Uuid, EngineError> {
        // Each account once, however often it was named (70,000 copies of one id ran 15 s, then failed).
        let account_ids: std::collections::BTreeSet<&AccountId> = account_ids.iter().collect();
        let accounts = if account_ids.is_empty() {
            access::all_accounts(&self.store).await?
        } else {
            let mut accounts = Vec::with_capacity(account_ids.len());
            for id in account_ids {
                accounts.push(self.store.accounts.get(id).await?);
            }
            accounts
        };
        let targets: Vec<ScanTarget> = accounts
            .iter()
            .flat_map(|account| {
                let access = AccountAccess::of(account);
                account
                    .spec
                    .regions
                    .as_slice()
                    .iter()
                    .filter(|r| regions.is_empty() || regions.contains(r))
                    .map(move |region| ScanTarget {
                        access: access.clone(),
                        region: *region,
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        if targets.is_empty() {
            return Err(EngineError::invalid(
                "regions",
                "selects no registered account-region: register accounts first, or name regions they use",
            ));
        }
        Ok(self.start(requested_by, targets).await?)
    }

    /// Records a scan of `targets` and starts it; returns its id at once.
    pub async fn start(
        &self,
        requested_by: &str,
        targets: Vec<ScanTarget>,
    ) -> Result<Uuid, StoreError> {
        let ids: Vec<(String, String)> = targets
            .iter()
            .map(|t| (t.access.account_id.to_string(), t.region.to_string()))
            .collect();
        let scan_id = self
            .store
            .scans
            .create(requested_by, SCAN_LEASE, &ids)
            .await?;
        tracing::info!(%scan_id, targets = targets.len(), "inventory scan started");
        self.tasks.spawn(self.clone().keep_lease(scan_id));
        for target in targets {
            let scanner = self.clone();
            self.tasks.spawn(async move {
                let Ok(_permit) = scanner.targets_at_once.clone().acquire_owned().await else { return };
                let account_id = target.access.account_id.to_string();
                let region = target.region.to_string();
                let outcome = tokio::select! {
                    outcome = scanner.scan_target(scan_id, &target) => outcome,
                    () = scanner.shutdown.cancelled() => TargetOutcome::Failed {
                        tables_seen: 0,
                        kind: FailureKind::Transient,
                        message: "the server shut down during the scan; refresh again".to_owned(),
                    },
                };
                if let Err(error) = scanner.store.scans.finish_target(scan_id, &account_id, &region, &outcome).await {
                    tracing::error!(%scan_id, account_id, region, %error, "failed to record a scan target's outcome");
                }
            });
        }
        Ok(scan_id)
    }

    /// Extends the scan's lease until it ends (or the server shuts down), and closes other replicas' abandoned
    /// scans on the way.
    async fn keep_lease(self, scan_id: Uuid) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(SCAN_LEASE / 3) => {}
                () = self.shutdown.cancelled() => return,
            }
            match self.store.scans.extend_lease(scan_id, SCAN_LEASE).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(error) => tracing::warn!(%scan_id, %error, "could not extend the scan's lease"),
            }
            match self.store.scans.fail_interrupted().await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(closed = n, "closed scans whose replica stopped"),
                Err(error) => tracing::debug!(%error, "could not look for abandoned scans"),
            }
        }
    }

    #[tracing::instrument(skip_all, fields(%scan_id, account_id = %target.access.account_id, region = %target.region))]
    async fn scan_target(&self, scan_id: Uuid, target: &ScanTarget) -> TargetOutcome {
        let account_id = target.access.account_id.to_string();
        let region = target.region.to_string();
        if let Err(error) = self
            .store
            .scans
            .start_target(scan_id, &account_id, &region)
            .await
        {
            tracing::warn!(%error, "could not mark the target running");
        }
        let listed_at = chrono::Utc::now();
        let names = match self.fleet.list_tables(&target.access, target.region).await {
            Ok(names) => names,
            Err(error) => return failed(0, &error),
        };
        let key = (account_id.clone(), region.clone());
        let mut described = futures::stream::iter(names.iter().cloned())
            .map(|name| {
                let key = key.clone();
                async move {
                    self.limiter.until_key_ready(&key).await;
                    (
                        name.clone(),
                        self.fleet
                            .describe_table(&target.access, target.region, &name)
                            .await,
                    )
                }
            })
            .buffer_unordered(self.settings.describes_in_flight.max(1));
        let mut batch = Vec::with_capacity(self.settings.write_batch);
        let mut present: Vec<TableName> = Vec::with_capacity(names.len());
        let mut seen = 0i32;
        let mut failure: Option<FleetError> = None;
        while let Some((name, result)) = described.next().await {
            match result {
                Ok(table) => {
                    present.push(name);
                    batch.push(table);
                    seen += 1;
                }
                // Deleted between ListTables and DescribeTable: it is gone, not a failure.
                Err(error) if error.kind == FailureKind::NotFound => {}
                Err(error) => {
                    present.push(name);
                    failure.get_or_insert(error);
                }
            }
            if batch.len() >= self.settings.write_batch {
                if let Err(error) = self.store.inventory.record(&batch, Some(scan_id)).await {
                    return store_failed(seen, &error);
                }
                batch.clear();
            }
        }
        if let Err(error) = self.store.inventory.record(&batch, Some(scan_id)).await {
            return store_failed(seen, &error);
        }
        if let Some(error) = failure {
            return failed(seen, &error);
        }
        // Only a complete listing may mark tables gone.
        let gone = match self
            .store
            .inventory
            .mark_gone(
                &target.access.account_id,
                target.region,
                &present,
                listed_at,
            )
            .await
        {
            Ok(gone) => i32::try_from(gone).unwrap_or(i32::MAX),
            Err(error) => return store_failed(seen, &error),
        };
        tracing::info!(tables = seen, gone, "account-region scanned");
        TargetOutcome::Succeeded {
            tables_seen: seen,
            tables_gone: gone,
        }
    }
}

fn failed(seen: i32, error: &FleetError) -> TargetOutcome {
    tracing::warn!(kind = %error.kind, message = %error.message, "account-region scan failed");
    TargetOutcome::Failed {
        tables_seen: seen,
        kind: error.kind,
        message: error.message.clone(),
    }
}

fn store_failed(seen: i32, error: &StoreError) -> TargetOutcome {
    tracing::error!(%error, "could not record the inventory");
    TargetOutcome::Failed {
        tables_seen: seen,
        kind: FailureKind::Transient,
        message: "could not write the inventory to the database".to_owned(),
    }
}
