//! Planning: gives every targeted table an item (change, skip, or blocked with its reason) before anything is
//! applied. Target keys are checked live per account-region (KMS DescribeKey); tables come from the inventory, or
//! from a live DescribeTable when listed explicitly and not inventoried; the switch quota comes from our history.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use tablecrypt_core::switch_quota::next_switch_allowed;
use tablecrypt_core::{
    Account, AccountId, EncryptionMode, FailureKind, ItemReason, KeyReference, PlanAction, Region,
    TableEncryption, TableName,
};
use tablecrypt_fleet::{AccountAccess, Fleet, FleetError, KeyInfo, key_enabled};
use tablecrypt_store::{InventoryFilter, Store, StoreError};

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
    pub account_id: AccountId,
    pub region: Region,
    pub table_name: TableName,
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

/// One replica's part of a global table's item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaPlan {
    pub region: String,
    pub from_key_arn: Option<String>,
    pub to_key_arn: Option<String>,
}

/// One table's planned item.
#[derive(Debug, Clone)]
pub struct PlannedItem {
    pub account_id: AccountId,
    pub region: Region,
    pub table_name: TableName,
    pub action: PlanAction,
    pub canary: bool,
    pub from_mode: EncryptionMode,
    pub from_key_arn: Option<String>,
    pub to_mode: EncryptionMode,
    pub to_key_arn: Option<String>,
    pub replicas: Vec<ReplicaPlan>,
    pub reason: Option<ItemReason>,
    pub message: Option<String>,
    /// For SWITCH_QUOTA_EXHAUSTED: when the quota frees up.
    pub frees_at: Option<DateTime<Utc>>,
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
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// (account, region, target label): one key resolution shared by every table that needs it.
type ResolutionKey = (String, String, String);
/// What resolving one [`ResolutionKey`] needs.
type Resolvable = (AccountAccess, Region, EncryptionMode, Option<KeyReference>);

/// How a target resolved in one account-region: the key ARN to set, or why it can't be used there.
#[derive(Debug, Clone)]
enum Resolution {
    Usable(Option<String>),
    Unusable(ItemReason, String),
}

#[derive(Clone)]
pub struct Planner {
    store: Store,
    fleet: Arc<Fleet>,
}

impl Planner {
    pub fn new(store: Store, fleet: Arc<Fleet>) -> Self {
        Self { store, fleet }
    }

    /// Plans `targets` towards `target` (ignored for a rollback), marking the first `canary` changes as canaries.
    #[tracing::instrument(skip_all, err)]
    pub async fn plan(
        &self,
        targets: &Targets,
        target: &Target,
        canary: usize,
    ) -> Result<Vec<PlannedItem>, PlanError> {
        let now = Utc::now();
        let tables = self.tables(targets).await?;
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
                    let past = switches.get(&history_key).map(Vec::as_slice).unwrap_or(&[]);
                    plan_table(&table, mode, resolution, past, now)
                }
                Observed::Missing {
                    account_id,
                    region,
                    table_name,
                    reason,
                    message,
                } => PlannedItem {
                    account_id,
                    region,
                    table_name,
                    action: PlanAction::Blocked,
                    canary: false,
                    from_mode: EncryptionMode::AwsOwned,
                    from_key_arn: None,
                    to_mode: mode,
                    to_key_arn: None,
                    replicas: Vec::new(),
                    reason: Some(reason),
                    message: Some(message),
                    frees_at: None,
                },
            };
            if item.action == PlanAction::Change && canaries_left > 0 {
                item.canary = true;
                canaries_left -= 1;
            }
            items.push(item);
        }
        Ok(items)
    }

    /// The tables to plan, as last observed (explicit tables not in the inventory are described live).
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
                .map(|row| (row.account_id.clone(), row.region, row.table_name.clone()))
                .collect(),
        };
        let accounts = self
            .accounts_by_id(ids.iter().map(|(a, r, _)| (a.clone(), *r)))
            .await?;
        let observed =
            futures::stream::iter(ids.into_iter().map(|(account_id, region, table_name)| {
                let access = accounts[account_id.as_str()].clone();
                let store = self.store.clone();
                let fleet = self.fleet.clone();
                async move {
                    if let Ok(entry) = store.inventory.get(&account_id, region, &table_name).await
                        && entry.gone_since.is_none()
                        && !matches!(targets, Targets::Rollback(_))
                    {
                        return Observed::Found(entry.table);
                    }
                    match fleet.describe_table(&access, region, &table_name).await {
                        Ok(table) => {
                            let _ = store
                                .inventory
                                .record(std::slice::from_ref(&table), None)
                                .await;
                            Observed::Found(table)
                        }
                        Err(error) => {
                            let reason = match error.kind {
                                FailureKind::NotFound => ItemReason::TableNotFound,
                                FailureKind::AccessDenied => ItemReason::AccountUnreachable,
                                _ => ItemReason::AwsError,
                            };
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
            }))
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
            .map(|(id, account)| {
                let access = AccountAccess {
                    account_id: account.account_id.clone(),
                    role_arn: account.spec.role_arn.clone(),
                    external_id: account.spec.external_id.clone(),
                };
                (id, access)
            })
            .collect())
    }
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
    let unreachable =
        |e: FleetError| Resolution::Unusable(ItemReason::AccountUnreachable, e.message);
    match mode {
        EncryptionMode::AwsOwned => match fleet.caller_identity(access, region).await {
            Ok(_) => Resolution::Usable(None),
            Err(e) => unreachable(e),
        },
        // The AWS managed key may not exist yet (AWS creates it on first use): no ARN to compare is fine.
        EncryptionMode::AwsManaged => match fleet.managed_key_arn(access, region).await {
            Ok(arn) => Resolution::Usable(arn),
            Err(e) => unreachable(e),
        },
        EncryptionMode::CustomerManaged => {
            let Some(key) = key else {
                return Resolution::Unusable(ItemReason::KeyMissing, "no key given".into());
            };
            if let Some((key_region, key_account)) = key.location() {
                if key_account != &access.account_id {
                    return Resolution::Unusable(
                        ItemReason::KeyInOtherAccount,
                        format!(
                            "key {} belongs to account {key_account}, the table to {}",
                            key.as_str(),
                            access.account_id
                        ),
                    );
                }
                if key_region != region {
                    return Resolution::Unusable(
                        ItemReason::KeyInOtherRegion,
                        format!(
                            "key {} is in {key_region}, the table in {region}",
                            key.as_str()
                        ),
                    );
                }
            }
            match fleet.describe_key(access, region, key.as_str()).await {
                Ok(info) => check_key(&info, key),
                Err(e) if e.kind == FailureKind::NotFound => Resolution::Unusable(
                    ItemReason::KeyMissing,
                    format!("no key {} in {region}: {}", key.as_str(), e.message),
                ),
                Err(e) if e.kind == FailureKind::AccessDenied => unreachable(e),
                Err(e) => Resolution::Unusable(ItemReason::AwsError, e.message),
            }
        }
    }
}

fn check_key(info: &KeyInfo, key: &KeyReference) -> Resolution {
    let name = key.as_str();
    if info.state == "PendingDeletion" || info.state == "PendingReplicaDeletion" {
        return Resolution::Unusable(
            ItemReason::KeyPendingDeletion,
            format!("key {name} is pending deletion"),
        );
    }
    if !key_enabled(info) {
        return Resolution::Unusable(
            ItemReason::KeyDisabled,
            format!("key {name} is {}", info.state),
        );
    }
    if !info.symmetric {
        return Resolution::Unusable(
            ItemReason::KeyAsymmetric,
            format!("key {name} is not a symmetric ENCRYPT_DECRYPT key"),
        );
    }
    Resolution::Usable(Some(info.arn.clone()))
}

/// The plan for one observed table.
fn plan_table(
    table: &TableEncryption,
    mode: EncryptionMode,
    resolution: impl Fn(&str) -> Resolution,
    past_switches: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> PlannedItem {
    let mut item = PlannedItem {
        account_id: table.account_id.clone(),
        region: table.region,
        table_name: table.table_name.clone(),
        action: PlanAction::Change,
        canary: false,
        from_mode: table.mode,
        from_key_arn: table.key_arn.clone(),
        to_mode: mode,
        to_key_arn: None,
        replicas: Vec::new(),
        reason: None,
        message: None,
        frees_at: None,
    };
    let block = |mut item: PlannedItem, reason: ItemReason, message: String| {
        item.action = PlanAction::Blocked;
        item.reason = Some(reason);
        item.message = Some(message);
        item
    };
    match resolution(table.region.as_str()) {
        Resolution::Usable(arn) => {
            item.to_key_arn = if mode == EncryptionMode::CustomerManaged {
                arn
            } else {
                None
            };
            if mode == EncryptionMode::AwsManaged {
                // Compared by mode: the AWS managed key's ARN is AWS's business.
                item.to_key_arn = None;
            }
        }
        Resolution::Unusable(reason, message) => return block(item, reason, message),
    }
    // Global tables: every replica needs a key of the target kind in its own region.
    if !table.replicas.is_empty() {
        if mode != EncryptionMode::CustomerManaged {
            return block(
                item,
                ItemReason::GlobalTableNotCovered,
                "a global table's replicas are changed only to customer managed keys, one per replica region"
                    .into(),
            );
        }
        for replica in &table.replicas {
            match resolution(&replica.region) {
                Resolution::Usable(Some(arn)) => item.replicas.push(ReplicaPlan {
                    region: replica.region.clone(),
                    from_key_arn: replica.key_arn.clone(),
                    to_key_arn: Some(arn),
                }),
                Resolution::Usable(None) => {
                    return block(
                        item,
                        ItemReason::GlobalTableNotCovered,
                        "no key resolved".into(),
                    );
                }
                Resolution::Unusable(reason, message) => {
                    return block(
                        item,
                        ItemReason::GlobalTableNotCovered,
                        format!(
                            "replica in {}: {reason}: {message} (give an alias that exists in every replica region)",
                            replica.region
                        ),
                    );
                }
            }
        }
    }
    let compliant = table.mode == mode
        && (mode != EncryptionMode::CustomerManaged || table.key_arn == item.to_key_arn)
        && item.replicas.iter().all(|r| r.from_key_arn == r.to_key_arn);
    if compliant {
        item.action = PlanAction::Skip;
        item.message = Some("already has the target encryption".into());
        return item;
    }
    // Inaccessible first: DynamoDB reports such a table as INACCESSIBLE_ENCRYPTION_CREDENTIALS, not ACTIVE.
    if let Some(since) = table.inaccessible_since {
        return block(
            item,
            ItemReason::TableInaccessible,
            format!("table's key has been inaccessible since {since}"),
        );
    }
    if table.table_status != "ACTIVE" {
        return block(
            item,
            ItemReason::TableNotActive,
            format!("table is {}", table.table_status),
        );
    }
    if let Some(frees_at) = next_switch_allowed(mode, past_switches, now) {
        item.frees_at = Some(frees_at);
        return block(
            item,
            ItemReason::SwitchQuotaExhausted,
            format!("the table's encryption switch quota is used up until {frees_at}"),
        );
    }
    item
}

/// Counts by action and blocked reason.
pub fn summarize(items: &[PlannedItem]) -> (usize, usize, usize, BTreeMap<String, usize>) {
    let mut by_reason = BTreeMap::new();
    let (mut change, mut skip, mut blocked) = (0, 0, 0);
    for item in items {
        match item.action {
            PlanAction::Change => change += 1,
            PlanAction::Skip => skip += 1,
            PlanAction::Blocked => {
                blocked += 1;
                *by_reason
                    .entry(
                        item.reason
                            .map(|r| r.as_str().to_owned())
                            .unwrap_or_default(),
                    )
                    .or_insert(0) += 1;
            }
        }
    }
    (change, skip, blocked, by_reason)
}
