//! Key references to key ARNs, once for every caller (planning filters, history and inventory filters, key usage),
//! and which inventoried tables use a key.
//!
//! A key is resolved through the role of the account it belongs to, so the caller must be allowed to read that
//! account first: otherwise a viewer of one team could ask another team's account (through tablecrypt's role)
//! whether an alias exists, and read AWS's answer. The refusal is the same whether the account, the alias or the
//! key exists or not.

use tablecrypt_core::{AccountId, InventoryFilter, KeyReference, Region};
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

/// Which inventoried tables (and global table replicas) of the caller's accounts use a key.
pub struct KeyUsage {
    pub key_arn: String,
    pub tables: Vec<InventoryEntry>,
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
            });
        }
    }
    let (tables, _) = store.inventory.list(&filter, None, limit).await?;
    Ok(KeyUsage { key_arn, tables })
}
