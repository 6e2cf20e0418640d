//! Key references to key ARNs, once for every caller (planning filters, history and inventory filters, key usage),
//! and which inventoried tables use a key.
//!
//! A key is resolved through the role of the account it belongs to, so the caller must be allowed to read that
//! account first: otherwise a viewer of one team could ask another team's account (through tablecrypt's role)
//! whether an alias exists, and read AWS's answer. The refusal is the same whether the account, the alias or the
//! key exists or not.

use futures::StreamExt as _;
use tablecrypt_core::{AccountId, FailureKind, InventoryFilter, KeyReference, Region};
use tablecrypt_fleet::{AccountAccess, Fleet};
use tablecrypt_store::{InventoryEntry, Store};

use crate::access::Visible;
use crate::error::EngineError;

/// The ARN of `key`: an ARN as it is; an alias ARN through the role of the account it names; an alias name or key
/// id in `at` (an account-region), which such a reference needs. The key's account (its ARN's, or `at`'s) must be
/// one the caller may read (`visible`), checked before anything is looked up. `field` names the key in errors.
pub async fn resolve_key(
    store: &Store,
    fleet: &Fleet,
    visible: &Visible,
    key: &KeyReference,
    at: Option<(&AccountId, Region)>,
    field: &str,
) -> Result<String, EngineError> {
    let (region, account_id) = match (key.location(), at) {
        (Some(location), _) => location,
        (None, Some((account_id, region))) => (region, account_id),
        (None, None) => {
            return Err(EngineError::invalid(
                field,
                "use a key ARN or alias ARN here (an alias name or key id needs an account and region)",
            ));
        }
    };
    if !visible.contains(account_id.as_str()) {
        return Err(EngineError::PermissionDenied(format!(
            "{field}: keys of account {account_id} are outside your scope"
        )));
    }
    let reference = match key {
        KeyReference::Arn(arn) => return Ok(arn.to_string()),
        other => other.as_str(),
    };
    let account = store.accounts.get(account_id).await?;
    Ok(fleet
        .resolve_key(&AccountAccess::of(&account), region, reference)
        .await?)
}

/// Account-regions one KMS DescribeKey each is sent to at once while resolving keys across a selector.
const RESOLVE_CONCURRENCY: usize = 16;

/// Every key ARN `keys` stand for in the account-regions `filter` covers (its accounts, label selector and
/// regions, within what the caller may see): an ARN or alias ARN as [`resolve_key`] does; an alias name or key id
/// in each such account-region, like a request's target, so `alias/payments-a` means each account-region's own key
/// of that name. An account-region where the alias does not exist adds nothing (no table there can be on it); one
/// where it cannot be looked up is an error naming it, since its tables would silently be left out.
pub async fn resolve_keys_across(
    store: &Store,
    fleet: &Fleet,
    visible: &Visible,
    keys: &[KeyReference],
    filter: &InventoryFilter,
    field: &str,
) -> Result<Vec<String>, EngineError> {
    let mut arns = Vec::new();
    let mut local = Vec::new();
    for key in keys {
        match key.location() {
            Some(_) => arns.push(resolve_key(store, fleet, visible, key, None, field).await?),
            None => local.push(key.as_str().to_owned()),
        }
    }
    if local.is_empty() {
        return Ok(arns);
    }
    let mut places: Vec<(AccountAccess, Region)> = Vec::new();
    for account in &crate::access::accounts_matching(store, &filter.account_selector).await? {
        let id = &account.account_id;
        let chosen = filter.account_ids.is_empty() || filter.account_ids.contains(id);
        if !chosen || !visible.contains(id.as_str()) {
            continue;
        }
        for region in account.spec.regions.as_slice() {
            if filter.regions.is_empty() || filter.regions.contains(region) {
                places.push((AccountAccess::of(account), *region));
            }
        }
    }
    // Owned per lookup: futures holding borrows of the list are not Send across the stream.
    let lookups: Vec<(AccountAccess, Region, String)> = places
        .iter()
        .flat_map(|(access, region)| {
            local
                .iter()
                .map(move |key| (access.clone(), *region, key.clone()))
        })
        .collect();
    let mut resolved = futures::stream::iter(lookups)
        .map(|(access, region, key)| async move {
            let found = fleet.resolve_key(&access, region, &key).await;
            (access, region, key, found)
        })
        .buffer_unordered(RESOLVE_CONCURRENCY);
    while let Some((access, region, key, found)) = resolved.next().await {
        match found {
            Ok(arn) => arns.push(arn),
            Err(error) if error.kind == FailureKind::NotFound => {}
            Err(error) => {
                return Err(EngineError::Aws(tablecrypt_fleet::FleetError::new(
                    error.kind,
                    format!(
                        "{field}: could not look up {key} in account {} region {region}, so its tables on that \
                         key cannot be chosen (narrow the selector to leave it out, or fix the account): {}",
                        access.account_id, error.message
                    ),
                )));
            }
        }
    }
    if arns.is_empty() {
        return Err(EngineError::FailedPrecondition(format!(
            "{field}: {} names no key in any of the {} account-regions the selector covers",
            local.join(", "),
            places.len()
        )));
    }
    arns.sort();
    arns.dedup();
    Ok(arns)
}

/// Which inventoried tables (and global table replicas) of the caller's accounts use a key.
pub struct KeyUsage {
    pub key_arn: String,
    pub tables: Vec<InventoryEntry>,
    /// When the key's account-region was last scanned successfully: no table found there is only as true as this.
    pub inventory_time: Option<chrono::DateTime<chrono::Utc>>,
}

/// The tables using `key` (resolved as [`resolve_key`] does, in `at` for an alias name or key id), at most `limit`,
/// among the accounts the caller may read. DynamoDB only takes keys of the table's own account, so for a key of an
/// account in scope this is every table using it.
pub async fn key_usage(
    store: &Store,
    fleet: &Fleet,
    visible: &Visible,
    key: &KeyReference,
    at: Option<(&AccountId, Region)>,
    limit: u32,
) -> Result<KeyUsage, EngineError> {
    let key_arn = resolve_key(store, fleet, visible, key, at, "kms_key").await?;
    let mut filter = InventoryFilter {
        key_arns: vec![key_arn.clone()],
        ..Default::default()
    };
    if let Some(accounts) = visible.accounts() {
        filter.account_ids = accounts
            .iter()
            .filter_map(|id| AccountId::parse(id).ok())
            .collect();
        if filter.account_ids.is_empty() {
            return Ok(KeyUsage {
                key_arn,
                tables: Vec::new(),
                inventory_time: None,
            });
        }
    }
    let inventory_time = match tablecrypt_core::KeyArn::parse(&key_arn) {
        Ok(arn) => {
            store
                .scans
                .last_success(arn.account_id().as_str(), arn.region().as_str())
                .await?
        }
        Err(_) => None,
    };
    let (tables, _) = store.inventory.list(&filter, None, limit).await?;
    // A global table on the key is listed in each of its regions (one by its key, the others by a replica's):
    // it is one table.
    let tables = tablecrypt_core::table::one_per_global_table(tables, |entry| Some(&entry.table));
    Ok(KeyUsage {
        key_arn,
        tables,
        inventory_time,
    })
}
