//! Inventory scans: ListTables, then DescribeTable and ListTagsOfResource per table, in every chosen account-region.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tablecrypt_core::{AccountId, FailureKind, Region, TableName};
use tablecrypt_fleet::{AccountAccess, Fleet, FleetError};
use tablecrypt_store::scans::ClaimedTarget;
use tablecrypt_store::{Store, StoreError, TargetOutcome};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::access;
use crate::error::EngineError;

/// How often an idle replica looks for account-regions to scan that another replica created (its own are started
/// at once): a second is cheap (one indexed query) and a scan's start is not worth a shorter wait.
const CLAIM_INTERVAL: Duration = Duration::from_secs(1);

/// Claims of one account-region before it is failed instead of claimed again: three replicas dying on one target
/// means scanning it is what kills them, or the fleet keeps restarting; either way an operator should look.
const MAX_ATTEMPTS: i32 = 3;

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
    /// How long a replica's claim on an account-region lasts without being extended (every third of it): a dead
    /// replica's share of a scan is taken over by another after this.
    pub lease: Duration,
}

impl Default for ScanSettings {
    fn default() -> Self {
        Self {
            concurrent_targets: 64,
            describes_in_flight: 8,
            describe_rate: NonZeroU32::new(50).unwrap_or(NonZeroU32::MIN),
            write_batch: 100,
            lease: Duration::from_secs(60),
        }
    }
}

/// One account-region to scan, with the access to reach it.
#[derive(Debug, Clone)]
pub struct ScanTarget {
    pub access: AccountAccess,
    pub region: Region,
}

/// Records scans, and scans their account-regions: every replica claims targets of every running scan (`run`),
/// so replicas share a scan and a dead replica's share is finished by another.
#[derive(Clone)]
pub struct InventoryScanner {
    store: Store,
    /// This replica, as the owner of its leases.
    owner: Uuid,
    /// Wakes this replica's claim loop when it created a scan or finished a target.
    wake: Arc<Notify>,
    fleet: Arc<Fleet>,
    settings: ScanSettings,
    /// Shared by every scan (and planning's live reads): the DescribeTable rate holds per account-region across
    /// concurrent scans.
    limiter: DescribeLimiter,
    targets_at_once: Arc<Semaphore>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// DescribeTable calls per second per (account, region), shared by scans and planning's live reads.
pub type DescribeLimiter = Arc<DefaultKeyedRateLimiter<(String, String)>>;

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
            owner: Uuid::new_v4(),
            wake: Arc::new(Notify::new()),
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

    /// The DescribeTable rate per account-region, for planning's live reads to share.
    pub fn describe_limiter(&self) -> DescribeLimiter {
        self.limiter.clone()
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

    /// Records a scan of `targets`; returns its id at once. This replica's claim loop starts it at once, the
    /// others join within `CLAIM_INTERVAL`.
    pub async fn start(
        &self,
        requested_by: &str,
        targets: Vec<ScanTarget>,
    ) -> Result<Uuid, StoreError> {
        let ids: Vec<(String, String)> = targets
            .iter()
            .map(|t| (t.access.account_id.to_string(), t.region.to_string()))
            .collect();
        let scan_id = self.store.scans.create(requested_by, &ids).await?;
        tracing::info!(%scan_id, targets = targets.len(), "inventory scan started");
        self.wake.notify_one();
        Ok(scan_id)
    }

    /// Claims account-regions to scan (as many as `concurrent_targets` allows) and scans each under its lease,
    /// until shutdown. Spawned once per replica.
    pub async fn run(self) {
        loop {
            match self.store.scans.fail_exhausted(MAX_ATTEMPTS).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    targets = n,
                    "failed account-regions whose replica stopped {MAX_ATTEMPTS} times"
                ),
                Err(error) => tracing::debug!(%error, "could not look for abandoned scan targets"),
            }
            let free = self.targets_at_once.available_permits();
            if free > 0 {
                let limit = i64::try_from(free).unwrap_or(i64::MAX);
                match self
                    .store
                    .scans
                    .claim_targets(self.owner, limit, self.settings.lease, MAX_ATTEMPTS)
                    .await
                {
                    Ok(claimed) => {
                        for target in claimed {
                            let Ok(permit) = self.targets_at_once.clone().try_acquire_owned()
                            else {
                                // Only this loop takes permits, so there is one; if not, the lease expires and
                                // another claim takes the target.
                                break;
                            };
                            let scanner = self.clone();
                            self.tasks.spawn(async move {
                                scanner.run_target(target).await;
                                drop(permit);
                                scanner.wake.notify_one();
                            });
                        }
                    }
                    Err(error) => tracing::warn!(%error, "could not claim account-regions to scan"),
                }
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(CLAIM_INTERVAL) => {}
                () = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Scans one claimed account-region while keeping its lease, and records the outcome under the claim's token.
    /// At shutdown the target is handed back for another replica; if the lease is lost, nothing is written.
    async fn run_target(&self, claimed: ClaimedTarget) {
        let scan_id = claimed.scan_id;
        let outcome = tokio::select! {
            outcome = self.scan_claimed(&claimed) => outcome,
            () = self.keep_lease(&claimed) => {
                tracing::warn!(%scan_id, account_id = %claimed.account_id, region = %claimed.region,
                    "lost the lease on an account-region being scanned; another replica scans it");
                return;
            }
            () = self.shutdown.cancelled() => {
                if let Err(error) = self.store.scans.release_target(&claimed).await {
                    tracing::warn!(%scan_id, %error, "could not hand a scan target back; it is claimed again once its lease expires");
                }
                return;
            }
        };
        let account_id = claimed.account_id.to_string();
        let region = claimed.region.to_string();
        match self
            .store
            .scans
            .finish_target(scan_id, &account_id, &region, claimed.token, &outcome)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(%scan_id, account_id, region, "lost the lease before recording the scan; another replica records it")
            }
            Err(error) => {
                tracing::error!(%scan_id, account_id, region, %error, "failed to record a scan target's outcome; it is scanned again once its lease expires")
            }
        }
    }

    /// Extends the lease every third of it; returns once it is lost (another replica holds it, or it could not
    /// be extended before it expired).
    async fn keep_lease(&self, claimed: &ClaimedTarget) {
        let lease = self.settings.lease;
        let mut kept_at = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(lease / 3).await;
            match self.store.scans.keep_target(claimed, lease).await {
                Ok(true) => kept_at = tokio::time::Instant::now(),
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(scan_id = %claimed.scan_id, %error, "could not extend a scan target's lease");
                    if kept_at.elapsed() >= lease {
                        return;
                    }
                }
            }
        }
    }

    /// Scans a claimed account-region with its account's current access.
    async fn scan_claimed(&self, claimed: &ClaimedTarget) -> TargetOutcome {
        let account = match self.store.accounts.get(&claimed.account_id).await {
            Ok(account) => account,
            Err(StoreError::NotFound { .. }) => {
                return TargetOutcome::Failed {
                    tables_seen: 0,
                    kind: FailureKind::NotFound,
                    message: format!(
                        "account {} was deregistered during the scan",
                        claimed.account_id
                    ),
                };
            }
            Err(error) => return store_failed(0, &error),
        };
        let target = ScanTarget {
            access: AccountAccess::of(&account),
            region: claimed.region,
        };
        self.scan_target(claimed.scan_id, &target).await
    }

    #[tracing::instrument(skip_all, fields(%scan_id, account_id = %target.access.account_id, region = %target.region))]
    async fn scan_target(&self, scan_id: Uuid, target: &ScanTarget) -> TargetOutcome {
        let account_id = target.access.account_id.to_string();
        let region = target.region.to_string();
        let listed_at = chrono::Utc::now();
        let names = match self.fleet.list_tables(&target.access, target.region).await {
            Ok(names) => names,
            Err(error) => return failed(0, &error),
        };
        let key = (account_id.clone(), region.clone());
        // The account-region's aliases, so keys can be shown by name: one more call, at the describes' pace. A
        // refusal (the member role lacks kms:ListAliases) keeps the aliases known before and fails nothing.
        self.limiter.until_key_ready(&key).await;
        match self.fleet.list_aliases(&target.access, target.region).await {
            Ok(aliases) => {
                if let Err(error) = self
                    .store
                    .inventory
                    .record_aliases(
                        &target.access.account_id,
                        target.region,
                        &aliases,
                        listed_at,
                    )
                    .await
                {
                    return store_failed(0, &error);
                }
            }
            // A role without kms:ListAliases is a choice (keys then show by id); anything else is worth a look.
            Err(error) if error.kind == FailureKind::AccessDenied => {
                tracing::debug!(%error, "may not list the key aliases");
            }
            Err(error) => {
                tracing::warn!(%error, "could not list the key aliases; the ones known before stay")
            }
        }
        let mut described = futures::stream::iter(names.iter().cloned())
            .map(|name| {
                let key = key.clone();
                async move {
                    self.limiter.until_key_ready(&key).await;
                    let described = self
                        .fleet
                        .describe_table(&target.access, target.region, &name)
                        .await;
                    let described = match described {
                        Ok(mut table) => {
                            // Tags are read at the same pace as describes (one more control-plane call per
                            // table); a refusal or failure leaves the tags known before, never fails the scan.
                            self.limiter.until_key_ready(&key).await;
                            table.tags = match self
                                .fleet
                                .table_tags(&target.access, target.region, &name)
                                .await
                            {
                                Ok(tags) => tags,
                                Err(error) => {
                                    tracing::debug!(table = %name, %error, "could not read a table's tags");
                                    None
                                }
                            };
                            Ok(table)
                        }
                        Err(error) => Err(error),
                    };
                    (name.clone(), described)
                }
            })
            .buffer_unordered(self.settings.describes_in_flight.max(1));
        let mut batch = Vec::with_capacity(self.settings.write_batch);
        let mut present: Vec<TableName> = Vec::with_capacity(names.len());
        let mut seen = 0i32;
        let mut tags_unread = 0usize;
        let mut failure: Option<FleetError> = None;
        while let Some((name, result)) = described.next().await {
            match result {
                Ok(table) => {
                    tags_unread += usize::from(table.tags.is_none());
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
        if tags_unread > 0 {
            tracing::warn!(
                tables = tags_unread,
                "could not read some tables' tags (their changes plan IAC_OWNED until a scan reads them)"
            );
        }
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
