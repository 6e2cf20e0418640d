//! Planning: gives every targeted table an item (change, skip, or blocked with its reason) before anything is
//! applied. Target keys are checked live per account-region (KMS DescribeKey); tables come from the inventory, or
//! from a live DescribeTable (capped and paced) when listed explicitly or rolled back and not freshly inventoried;
//! the switch quota comes from our history.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::StreamExt as _;
use tablecrypt_core::InventoryFilter;
use tablecrypt_core::change::plan::{
    check_current_key, check_iac_owner, check_key, check_key_location,
};
use tablecrypt_core::change::{
    AwsCall, KeyInfo, PlannedItem, Resolution, TableRef, failure_reason, plan_table,
};
use tablecrypt_core::iac::IacOwnership;
use tablecrypt_core::{
    Account, AccountId, EncryptionMode, ItemReason, KeyReference, PlanAction, Region,
    TableEncryption, TableName, TableTags,
};
use tablecrypt_fleet::{AccountAccess, Fleet, FleetError};
use tablecrypt_store::{Store, StoreError};

use crate::scanner::DescribeLimiter;

/// Most tables one request may cover.
pub const MAX_ITEMS: usize = 10_000;
/// Live reads in flight while planning (DescribeKey, DescribeTable).
const PLAN_CONCURRENCY: usize = 16;

/// The encryption every targeted table must end with.
#[derive(Debug, Clone)]
pub struct Target {
    pub mode: EncryptionMode,
    /// CUSTOMER_MANAGED only.
    pub key: Option<KeyReference>,
}

/// Which tables a request covers.
#[derive(Debug, Clone)]
pub enum Targets {
    Tables(Vec<(AccountId, Region, TableName)>),
    Selector(InventoryFilter),
    /// A rollback: each table with its own target (the mode and keys it had before).
    Rollback(Vec<RollbackRow>),
}

/// One table of a rollback: where it returns to.
#[derive(Debug, Clone)]
pub struct RollbackRow {
    pub table: TableRef,
    pub mode: EncryptionMode,
    pub key_arn: Option<String>,
    /// A global table's replicas: (region, the key ARN each had there).
    pub replica_keys: Vec<(String, String)>,
}

/// One table's target: the mode, the key in the table's region, and (for a rollback of a global table) each
/// replica region's own key.
#[derive(Debug, Clone)]
struct TableTarget {
    mode: EncryptionMode,
    key: Option<KeyReference>,
    replica_keys: HashMap<String, KeyReference>,
}

impl TableTarget {
    fn key_for(&self, region: &str) -> Option<&KeyReference> {
        self.replica_keys.get(region).or(self.key.as_ref())
    }

    fn label_for(&self, region: &str) -> String {
        target_label(self.mode, self.key_for(region))
    }
}

/// Why planning could not produce a plan at all.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("account {0} is not registered")]
    UnknownAccount(AccountId),
    #[error("region {region} is not registered for account {account_id}")]
    UnknownRegion {
        account_id: AccountId,
        region: Region,
    },
    #[error("the targets match {0} tables; at most {MAX_ITEMS} per request")]
    TooManyTables(usize),
    #[error("the targets match no table (refresh the inventory if it is stale)")]
    NoTables,
    #[error(
        "{count} of the tables are not in the inventory or were last seen over {} minutes ago, and at most \
         {MAX_LIVE_READS} are described during planning: refresh the inventory of {} first (RefreshInventory)",
        INVENTORY_FRESH_FOR.num_minutes(),
        .account_regions.join(", ")
    )]
    TooManyLiveReads {
        count: usize,
        /// A few of the account-regions concerned, to refresh.
        account_regions: Vec<String>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// (account, region, target label): one key resolution shared by every table that needs it.
type ResolutionKey = (String, String, String);
/// What resolving one [`ResolutionKey`] needs.
type Resolvable = (AccountAccess, Region, EncryptionMode, Option<KeyReference>);

/// Most tables one plan describes live (listed tables, or a rollback's, that the inventory lacks or saw too long
/// ago): at a scan's 50 DescribeTable/s per account-region that is 10 s of a call's 30 s deadline. More is a
/// RefreshInventory first: a scoped operator's list of made-up names, or a large rollback, must not become
/// thousands of describes inside one call.
pub const MAX_LIVE_READS: usize = 500;
/// An inventory entry younger than this stands for a listed table or a rollback's without a live read: the
/// workers describe every table again before they send, so the plan needs the inventory's view, not the
/// latest second's; a quarter of an hour catches most changes made behind the inventory's back.
const INVENTORY_FRESH_FOR: chrono::Duration = chrono::Duration::minutes(15);
/// Account-regions a [`PlanError::TooManyLiveReads`] names.
const NAMED_ACCOUNT_REGIONS: usize = 5;

#[derive(Clone)]
pub struct Planner {
    store: Store,
    fleet: Arc<Fleet>,
    /// The scans' DescribeTable rate per account-region, which live reads share.
    describes: DescribeLimiter,
    /// Which tags mark a table as owned by infrastructure as code.
    iac: IacOwnership,
}

impl Planner {
    pub fn new(
        store: Store,
        fleet: Arc<Fleet>,
        describes: DescribeLimiter,
        iac: IacOwnership,
    ) -> Self {
        Self {
            store,
            fleet,
            describes,
            iac,
        }
    }

    /// Plans `targets` towards `target` (ignored for a rollback), marking the first `canary` changes as canaries.
    /// Tables owned by infrastructure as code are blocked unless `include_iac_owned` (a rollback includes them:
    /// it returns them to what their template last saw).
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn plan(
        &self,
        targets: &Targets,
        target: &Target,
        canary: usize,
        include_iac_owned: bool,
    ) -> Result<Vec<PlannedItem>, PlanError> {
        let include_iac_owned = include_iac_owned || matches!(targets, Targets::Rollback(_));
        let tables = match targets {
            Targets::Rollback(_) => self.tables(targets).await?,
            _ => one_per_global_table(self.tables(targets).await?),
        };
        if tables.is_empty() {
            return Err(PlanError::NoTables);
        }
        if tables.len() > MAX_ITEMS {
            return Err(PlanError::TooManyTables(tables.len()));
        }
        let accounts = self.accounts(&tables).await?;

        // Each table's own target (a rollback's differ per table).
        let per_table: Vec<TableTarget> = match targets {
            Targets::Rollback(rows) => rows
                .iter()
                .map(|row| TableTarget {
                    mode: row.mode,
                    key: row
                        .key_arn
                        .as_deref()
                        .and_then(|k| KeyReference::parse(k).ok()),
                    replica_keys: row
                        .replica_keys
                        .iter()
                        .filter_map(|(region, key)| {
                            Some((region.clone(), KeyReference::parse(key).ok()?))
                        })
                        .collect(),
                })
                .collect(),
            _ => vec![
                TableTarget {
                    mode: target.mode,
                    key: target.key.clone(),
                    replica_keys: HashMap::new(),
                };
                tables.len()
            ],
        };

        // Resolve every distinct (account, region, target) once, replica regions included.
        let mut wanted: BTreeMap<ResolutionKey, Resolvable> = BTreeMap::new();
        for (observed, wanted_target) in tables.iter().zip(&per_table) {
            let Observed::Found(table) = observed else {
                continue;
            };
            let access = &accounts[table.account_id.as_str()];
            let mut regions = vec![table.region];
            regions.extend(
                table
                    .replicas
                    .iter()
                    .filter_map(|r| Region::parse(&r.region).ok()),
            );
            for region in regions {
                let key = wanted_target.key_for(region.as_str());
                wanted.insert(
                    (
                        table.account_id.to_string(),
                        region.to_string(),
                        target_label(wanted_target.mode, key),
                    ),
                    (access.clone(), region, wanted_target.mode, key.cloned()),
                );
            }
        }
        let resolutions: HashMap<ResolutionKey, Resolution> =
            futures::stream::iter(wanted.into_iter().map(|(k, (access, region, mode, key))| {
                let fleet = self.fleet.clone();
                async move {
                    (
                        k,
                        resolve(&fleet, &access, region, mode, key.as_ref()).await,
                    )
                }
            }))
            .buffer_unordered(PLAN_CONCURRENCY)
            .collect()
            .await;

        // Each distinct current customer managed key, once: DynamoDB cannot re-encrypt away from one that is
        // disabled or pending deletion.
        let current_keys: BTreeMap<(String, String, String), (AccountAccess, Region)> = tables
            .iter()
            .filter_map(|observed| match observed {
                Observed::Found(table) if table.mode == EncryptionMode::CustomerManaged => {
                    let arn = table.key_arn.clone()?;
                    Some((
                        (table.account_id.to_string(), table.region.to_string(), arn),
                        (accounts[table.account_id.as_str()].clone(), table.region),
                    ))
                }
                _ => None,
            })
            .collect();
        let current_key_info: HashMap<(String, String, String), KeyInfo> =
            futures::stream::iter(current_keys.into_iter().map(|(k, (access, region))| {
                let fleet = self.fleet.clone();
                async move {
                    let info = fleet.describe_key(&access, region, &k.2).await.ok();
                    (k, info)
                }
            }))
            .buffer_unordered(PLAN_CONCURRENCY)
            .filter_map(|(k, info)| async move { info.map(|info| (k, info)) })
            .collect()
            .await;

        let keys: Vec<_> = tables
            .iter()
            .map(|t| {
                let (a, r, n) = t.id();
                (a.to_string(), r.to_string(), n.to_string())
            })
            .collect();
        let switches = self.store.history.recent_switches(&keys).await?;

        let mut items = Vec::with_capacity(tables.len());
        let mut canaries_left = canary;
        for (observed, table_target) in tables.into_iter().zip(per_table) {
            let mode = table_target.mode;
            let mut item = match observed {
                Observed::Found(table) => {
                    let resolution = |region: &str| {
                        resolutions
                            .get(&(
                                table.account_id.to_string(),
                                region.to_owned(),
                                table_target.label_for(region),
                            ))
                            .cloned()
                            .unwrap_or(Resolution::Unusable(
                                ItemReason::AwsError,
                                "not resolved".into(),
                            ))
                    };
                    let history_key = (
                        table.account_id.to_string(),
                        table.region.to_string(),
                        table.table_name.to_string(),
                    );
                    let past = switches.of(&history_key);
                    let current_key = table.key_arn.as_ref().and_then(|arn| {
                        current_key_info.get(&(
                            table.account_id.to_string(),
                            table.region.to_string(),
                            arn.clone(),
                        ))
                    });
                    check_iac_owner(
                        check_current_key(
                            plan_table(&table, mode, resolution, past, switches.now),
                            current_key,
                        ),
                        &self.iac.judge(table.tags.as_ref()),
                        include_iac_owned,
                    )
                }
                Observed::Missing {
                    account_id,
                    region,
                    table_name,
                    reason,
                    message,
                } => PlannedItem::unobserved(account_id, region, table_name, mode, reason, message),
            };
            if item.action == PlanAction::Change && canaries_left > 0 {
                item.canary = true;
                canaries_left -= 1;
            }
            items.push(item);
        }
        Ok(items)
    }

    /// The tables to plan: a selector's from the inventory; listed ones and a rollback's from the inventory where
    /// it saw them within [`INVENTORY_FRESH_FOR`], else described live (at most [`MAX_LIVE_READS`], at the scans'
    /// DescribeTable rate per account-region).
    async fn tables(&self, targets: &Targets) -> Result<Vec<Observed>, PlanError> {
        let ids: Vec<(AccountId, Region, TableName)> = match targets {
            Targets::Selector(filter) => {
                let mut found = Vec::new();
                let mut after = None;
                loop {
                    let (page, more) = self
                        .store
                        .inventory
                        .list(filter, after.as_ref(), 1000)
                        .await?;
                    after = page.last().map(|e| tablecrypt_store::InventoryCursor {
                        account_id: e.table.account_id.to_string(),
                        region: e.table.region.to_string(),
                        table_name: e.table.table_name.to_string(),
                    });
                    found.extend(page.into_iter().map(|e| Observed::Found(e.table)));
                    if !more || found.len() > MAX_ITEMS {
                        return Ok(found);
                    }
                }
            }
            Targets::Tables(ids) => ids.clone(),
            Targets::Rollback(rows) => rows
                .iter()
                .map(|row| {
                    (
                        row.table.account_id.clone(),
                        row.table.region,
                        row.table.table_name.clone(),
                    )
                })
                .collect(),
        };
        let accounts = self
            .accounts_by_id(ids.iter().map(|(a, r, _)| (a.clone(), *r)))
            .await?;
        // The inventory's view where it is fresh; a live read for the rest, capped and paced, keeping the tags
        // the last scan read (a live read reads none).
        let now = chrono::Utc::now();
        let (known, stored_tags): (Vec<Option<TableEncryption>>, Vec<Option<TableTags>>) =
            futures::stream::iter(ids.iter().cloned().map(|(account_id, region, table_name)| {
                let store = self.store.clone();
                async move {
                    match store.inventory.get(&account_id, region, &table_name).await {
                        Ok(entry)
                            if entry.gone_since.is_none()
                                && now - entry.table.observed_at < INVENTORY_FRESH_FOR =>
                        {
                            (Some(entry.table), None)
                        }
                        Ok(entry) => (None, entry.table.tags),
                        Err(_) => (None, None),
                    }
                }
            }))
            .buffered(PLAN_CONCURRENCY)
            .unzip()
            .await;
        let live: Vec<&(AccountId, Region, TableName)> = ids
            .iter()
            .zip(&known)
            .filter(|(_, known)| known.is_none())
            .map(|(id, _)| id)
            .collect();
        if live.len() > MAX_LIVE_READS {
            let account_regions: std::collections::BTreeSet<String> = live
                .iter()
                .map(|(account_id, region, _)| format!("{account_id}/{region}"))
                .collect();
            return Err(PlanError::TooManyLiveReads {
                count: live.len(),
                account_regions: account_regions
                    .into_iter()
                    .take(NAMED_ACCOUNT_REGIONS)
                    .collect(),
            });
        }
        let observed = futures::stream::iter(ids.into_iter().zip(known).zip(stored_tags).map(
            |(((account_id, region, table_name), known), stored_tags)| {
                let access = accounts[account_id.as_str()].clone();
                let store = self.store.clone();
                let fleet = self.fleet.clone();
                let describes = self.describes.clone();
                async move {
                    if let Some(table) = known {
                        return Observed::Found(table);
                    }
                    describes
                        .until_key_ready(&(account_id.to_string(), region.to_string()))
                        .await;
                    match fleet.describe_table(&access, region, &table_name).await {
                        Ok(mut table) => {
                            // The tags the last scan read, or read now (at the same pace) for a table no scan
                            // has seen: ownership by infrastructure as code is judged from them.
                            table.tags = match stored_tags {
                                Some(tags) => Some(tags),
                                None => {
                                    describes
                                        .until_key_ready(&(
                                            account_id.to_string(),
                                            region.to_string(),
                                        ))
                                        .await;
                                    fleet
                                        .table_tags(&access, region, &table_name)
                                        .await
                                        .ok()
                                        .flatten()
                                }
                            };
                            let _ = store
                                .inventory
                                .record(std::slice::from_ref(&table), None)
                                .await;
                            Observed::Found(table)
                        }
                        Err(error) => {
                            let reason = failure_reason(
                                AwsCall::DescribeTable,
                                error.kind,
                                error.role_refused,
                                &error.message,
                            );
                            Observed::Missing {
                                account_id,
                                region,
                                table_name,
                                reason,
                                message: error.message,
                            }
                        }
                    }
                }
            },
        ))
        .buffered(PLAN_CONCURRENCY)
        .collect()
        .await;
        Ok(observed)
    }

    async fn accounts(
        &self,
        tables: &[Observed],
    ) -> Result<HashMap<String, AccountAccess>, PlanError> {
        self.accounts_by_id(tables.iter().map(|t| {
            let (a, r, _) = t.id();
            (a.clone(), r)
        }))
        .await
    }

    /// The registered accounts behind `ids`; an unknown account or region is an error.
    async fn accounts_by_id(
        &self,
        ids: impl Iterator<Item = (AccountId, Region)>,
    ) -> Result<HashMap<String, AccountAccess>, PlanError> {
        let mut accounts: HashMap<String, Account> = HashMap::new();
        for (account_id, region) in ids {
            if !accounts.contains_key(account_id.as_str()) {
                let account = match self.store.accounts.get(&account_id).await {
                    Ok(account) => account,
                    Err(StoreError::NotFound { .. }) => {
                        return Err(PlanError::UnknownAccount(account_id));
                    }
                    Err(e) => return Err(e.into()),
                };
                accounts.insert(account_id.to_string(), account);
            }
            if !accounts[account_id.as_str()]
                .spec
                .regions
                .as_slice()
                .contains(&region)
            {
                return Err(PlanError::UnknownRegion { account_id, region });
            }
        }
        Ok(accounts
            .into_iter()
            .map(|(id, account)| (id, AccountAccess::of(&account)))
            .collect())
    }
}

/// A global table is one item, changed as a whole from the first of its regions the list names.
fn one_per_global_table(tables: Vec<Observed>) -> Vec<Observed> {
    tablecrypt_core::table::one_per_global_table(tables, |observed| match observed {
        Observed::Found(table) => Some(table),
        Observed::Missing { .. } => None,
    })
}

/// A table as planning sees it: observed, or not describable.
enum Observed {
    Found(TableEncryption),
    Missing {
        account_id: AccountId,
        region: Region,
        table_name: TableName,
        reason: ItemReason,
        message: String,
    },
}

impl Observed {
    fn id(&self) -> (&AccountId, Region, &TableName) {
        match self {
            Self::Found(t) => (&t.account_id, t.region, &t.table_name),
            Self::Missing {
                account_id,
                region,
                table_name,
                ..
            } => (account_id, *region, table_name),
        }
    }
}

fn target_label(mode: EncryptionMode, key: Option<&KeyReference>) -> String {
    match key {
        Some(key) => format!("{}:{}", mode.as_str(), key.as_str()),
        None => mode.as_str().to_owned(),
    }
}

/// Resolves the target in one account-region, and checks the key is one DynamoDB can use there.
async fn resolve(
    fleet: &Fleet,
    access: &AccountAccess,
    region: Region,
    mode: EncryptionMode,
    key: Option<&KeyReference>,
) -> Resolution {
    let failed = |call: AwsCall, e: FleetError| {
        Resolution::Unusable(
            failure_reason(call, e.kind, e.role_refused, &e.message),
            e.message,
        )
    };
    match mode {
        EncryptionMode::AwsOwned => match fleet.caller_identity(access, region).await {
            Ok(_) => Resolution::Usable(None),
            Err(e) => failed(AwsCall::Reach, e),
        },
        // The AWS managed key may not exist yet (AWS creates it on first use): no ARN to compare is fine.
        EncryptionMode::AwsManaged => match fleet.managed_key_arn(access, region).await {
            Ok(arn) => Resolution::Usable(arn),
            Err(e) => failed(AwsCall::Reach, e),
        },
        EncryptionMode::CustomerManaged => {
            let Some(key) = key else {
                return Resolution::Unusable(ItemReason::KeyMissing, "no key given".into());
            };
            if let Some(problem) = check_key_location(key, &access.account_id, region) {
                return problem;
            }
            match fleet.describe_key(access, region, key.as_str()).await {
                Ok(info) => check_key(&info, key),
                Err(mut e) => {
                    if !e.role_refused && e.kind == tablecrypt_core::FailureKind::NotFound {
                        e.message = format!("no key {} in {region}: {}", key.as_str(), e.message);
                    }
                    failed(AwsCall::DescribeKey, e)
                }
            }
        }
    }
}
