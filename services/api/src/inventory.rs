//! Inventory RPCs: verify an account, live reads, listing, scans and key usage.

use serde::{Deserialize, Serialize};
use tablecrypt_core::InventoryFilter;
use tablecrypt_core::iac::IacOwnership;
use tablecrypt_core::{
    Account, AccountId, EncryptionMode, KeyReference, LabelSelector, Region, TableName,
    ValidationErrors,
};
use tablecrypt_engine::InventoryScanner;
use tablecrypt_engine::access::Visible;
use tablecrypt_engine::keys::{key_usage, resolve_key};
use tablecrypt_fleet::{AccountAccess, Fleet};
use tablecrypt_proto::v1 as pb;
use tablecrypt_store::{InventoryCursor, Store};

use crate::conversions::inventory as convert;
use crate::error::ApiError;
use crate::page_token::{self, CallPages};

/// A region the account is registered in, or NOT_FOUND naming both.
fn registered_region(account: &Account, region: Region) -> Result<Region, ApiError> {
    if account.spec.regions.as_slice().contains(&region) {
        Ok(region)
    } else {
        Err(ApiError::NotFound {
            resource: "region",
            id: format!("{region} of account {}", account.account_id),
        })
    }
}

pub async fn verify_account(
    store: &Store,
    fleet: &Fleet,
    request: pb::VerifyAccountRequest,
) -> Result<pb::VerifyAccountResponse, ApiError> {
    let mut errors = ValidationErrors::new();
    let account_id = errors.check("account_id", AccountId::parse(&request.account_id));
    let regions = errors.check_each("regions", &request.regions, Region::parse);
    let Some(account_id) = account_id.filter(|_| errors.is_empty()) else {
        return Err(errors.into());
    };
    let account = store.accounts.get(&account_id).await?;
    let regions: Vec<Region> = if regions.is_empty() {
        account.spec.regions.as_slice().to_vec()
    } else {
        regions
            .into_iter()
            .map(|r| registered_region(&account, r))
            .collect::<Result<_, _>>()?
    };
    let access = AccountAccess::of(&account);
    let mut out = Vec::with_capacity(regions.len());
    for region in regions {
        let verification = match fleet.caller_identity(&access, region).await {
            Err(error) => pb::RegionVerification {
                region: region.to_string(),
                failure: Some(convert::failure_to_proto(&error)),
                ..Default::default()
            },
            Ok(identity) => match fleet.list_tables(&access, region).await {
                Ok(tables) => pb::RegionVerification {
                    region: region.to_string(),
                    ok: true,
                    assumed_identity_arn: identity.arn,
                    table_count: i32::try_from(tables.len()).unwrap_or(i32::MAX),
                    failure: None,
                },
                Err(error) => pb::RegionVerification {
                    region: region.to_string(),
                    assumed_identity_arn: identity.arn,
                    failure: Some(convert::failure_to_proto(&error)),
                    ..Default::default()
                },
            },
        };
        out.push(verification);
    }
    Ok(pb::VerifyAccountResponse {
        account_id: account_id.to_string(),
        regions: out,
    })
}

pub async fn get_table_encryption(
    store: &Store,
    fleet: &Fleet,
    iac: &IacOwnership,
    request: pb::GetTableEncryptionRequest,
) -> Result<pb::EncryptedTable, ApiError> {
    let mut errors = ValidationErrors::new();
    let account_id = errors.check("account_id", AccountId::parse(&request.account_id));
    let region = errors.check("region", Region::parse(&request.region));
    let table = errors.check("table_name", TableName::parse(&request.table_name));
    let (Some(account_id), Some(region), Some(table)) = (account_id, region, table) else {
        return Err(errors.into());
    };
    let account = store.accounts.get(&account_id).await?;
    let region = registered_region(&account, region)?;
    let observed = fleet
        .describe_table(&AccountAccess::of(&account), region, &table)
        .await?;
    store
        .inventory
        .record(std::slice::from_ref(&observed), None)
        .await?;
    // The live read does not read tags: the stored row keeps those the last scan read.
    let stored = store.inventory.get(&account_id, region, &table).await?;
    Ok(convert::entry_to_proto(&stored, iac))
}

/// The filter part of a ListTableEncryptionsRequest, as tied into page tokens.
#[derive(Serialize)]
struct FilterFingerprint<'a> {
    account_ids: &'a [String],
    selector: String,
    regions: &'a [String],
    mode: i32,
    key: &'a str,
    prefix: &'a str,
    inaccessible_only: bool,
    include_gone: bool,
    /// Skipped when empty, so tokens issued before tag selectors existed still decode.
    #[serde(skip_serializing_if = "String::is_empty")]
    tags: String,
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    a: String,
    r: String,
    t: String,
}

/// A page of the inventory, narrowed to the accounts the caller may see in the query itself, so pages are full
/// and page tokens are built from rows the caller may see (tokens built from unfiltered rows leaked other teams'
/// table names).
pub async fn list_table_encryptions(
    store: &Store,
    fleet: &Fleet,
    iac: &IacOwnership,
    visible: &Visible,
    pages: &CallPages,
    request: pb::ListTableEncryptionsRequest,
) -> Result<pb::ListTableEncryptionsResponse, ApiError> {
    let mut errors = ValidationErrors::new();
    let page_size = errors.check("page_size", page_token::page_size(request.page_size));
    let account_ids = errors.check_each("account_ids", &request.account_ids, AccountId::parse);
    let selector = errors.check(
        "account_label_selector",
        LabelSelector::parse(&request.account_label_selector),
    );
    let regions = errors.check_each("regions", &request.regions, Region::parse);
    let table_tags = errors.check(
        "table_tag_selector",
        LabelSelector::parse_tags(&request.table_tag_selector),
    );
    errors.free_text("table_name_prefix", &request.table_name_prefix);
    let mode = match pb::EncryptionMode::try_from(request.mode) {
        Ok(pb::EncryptionMode::Unspecified) => None,
        Ok(pb::EncryptionMode::AwsOwned) => Some(EncryptionMode::AwsOwned),
        Ok(pb::EncryptionMode::AwsManaged) => Some(EncryptionMode::AwsManaged),
        Ok(pb::EncryptionMode::CustomerManaged) => Some(EncryptionMode::CustomerManaged),
        Err(_) => {
            errors.add("mode", format!("{} is not an EncryptionMode", request.mode));
            None
        }
    };
    let key = if request.kms_key.is_empty() {
        None
    } else {
        match KeyReference::parse(&request.kms_key) {
            Ok(key @ (KeyReference::Arn(_) | KeyReference::AliasArn { .. })) => Some(key),
            Ok(_) => {
                errors.add(
                    "kms_key",
                    "use a key ARN or alias ARN here (or GetKeyUsage with an account and region)",
                );
                None
            }
            Err(e) => {
                errors.add("kms_key", e.0);
                None
            }
        }
    };
    let fingerprint = serde_json::to_string(&FilterFingerprint {
        account_ids: &request.account_ids,
        selector: selector
            .as_ref()
            .map(LabelSelector::canonical)
            .unwrap_or_default(),
        regions: &request.regions,
        mode: request.mode,
        key: &request.kms_key,
        prefix: &request.table_name_prefix,
        inaccessible_only: request.inaccessible_only,
        include_gone: request.include_gone,
        tags: table_tags
            .as_ref()
            .map(LabelSelector::canonical)
            .unwrap_or_default(),
    })
    .unwrap_or_default();
    let after = match errors
        .check(
            "page_token",
            pages.decode(&request.page_token, &fingerprint),
        )
        .flatten()
    {
        Some(text) => match serde_json::from_str::<Cursor>(&text) {
            Ok(c) => Some(InventoryCursor {
                account_id: c.a,
                region: c.r,
                table_name: c.t,
            }),
            Err(_) => {
                errors.add("page_token", "is not a page token returned by this RPC");
                None
            }
        },
        None => None,
    };
    let (Some(page_size), Some(selector), Some(table_tags)) = (page_size, selector, table_tags)
    else {
        return Err(errors.into());
    };
    if !errors.is_empty() {
        return Err(errors.into());
    }
    let key_arns = match &key {
        None => Vec::new(),
        Some(key) => vec![resolve_key(store, fleet, visible, key, None, "kms_key").await?],
    };
    let account_ids = match visible {
        Visible::All => account_ids,
        Visible::Only(ids) => {
            let mut scoped: Vec<AccountId> = if account_ids.is_empty() {
                ids.iter()
                    .filter_map(|id| AccountId::parse(id).ok())
                    .collect()
            } else {
                account_ids
                    .into_iter()
                    .filter(|id| ids.contains(id.as_str()))
                    .collect()
            };
            scoped.sort();
            if scoped.is_empty() {
                return Ok(pb::ListTableEncryptionsResponse::default());
            }
            scoped
        }
    };
    let filter = InventoryFilter {
        account_ids,
        account_selector: selector,
        table_tags,
        regions,
        mode,
        key_arns,
        name_prefix: (!request.table_name_prefix.is_empty())
            .then(|| request.table_name_prefix.clone()),
        inaccessible_only: request.inaccessible_only,
        include_gone: request.include_gone,
    };
    let (entries, more) = store
        .inventory
        .list(&filter, after.as_ref(), page_size)
        .await?;
    let next_page_token = match (more, entries.last()) {
        (true, Some(last)) => {
            let cursor = Cursor {
                a: last.table.account_id.to_string(),
                r: last.table.region.to_string(),
                t: last.table.table_name.to_string(),
            };
            pages.encode(
                &serde_json::to_string(&cursor).unwrap_or_default(),
                &fingerprint,
            )
        }
        _ => String::new(),
    };
    let tables: Vec<pb::EncryptedTable> = entries
        .iter()
        .map(|entry| convert::entry_to_proto(entry, iac))
        .collect();
    Ok(pb::ListTableEncryptionsResponse {
        key_aliases: crate::key_aliases::lookup(store, crate::key_aliases::of_tables(&tables))
            .await?,
        tables,
        next_page_token,
    })
}

pub async fn refresh_inventory(
    store: &Store,
    scanner: &InventoryScanner,
    requested_by: &str,
    request: pb::RefreshInventoryRequest,
) -> Result<pb::InventoryScan, ApiError> {
    let mut errors = ValidationErrors::new();
    let account_ids = errors.check_each("account_ids", &request.account_ids, AccountId::parse);
    let regions = errors.check_each("regions", &request.regions, Region::parse);
    if !errors.is_empty() {
        return Err(errors.into());
    }
    let scan_id = scanner
        .start_for(requested_by, &account_ids, &regions)
        .await?;
    Ok(convert::scan_to_proto(&store.scans.get(scan_id).await?))
}

pub async fn get_inventory_scan(
    store: &Store,
    request: pb::GetInventoryScanRequest,
) -> Result<pb::InventoryScan, ApiError> {
    let scan_id = uuid::Uuid::parse_str(&request.scan_id).map_err(|_| {
        ValidationErrors::single(
            "scan_id",
            "is not a scan id (a UUID returned by RefreshInventory)",
        )
    })?;
    Ok(convert::scan_to_proto(&store.scans.get(scan_id).await?))
}

/// Most tables GetKeyUsage returns; a key on more tables than this is certainly not retirable.
const MAX_KEY_USAGE_TABLES: u32 = 10_000;

pub async fn get_key_usage(
    store: &Store,
    fleet: &Fleet,
    iac: &IacOwnership,
    visible: &Visible,
    request: pb::GetKeyUsageRequest,
) -> Result<pb::GetKeyUsageResponse, ApiError> {
    let mut errors = ValidationErrors::new();
    let key = errors.check("kms_key", KeyReference::parse(&request.kms_key));
    let account_id = (!request.account_id.is_empty())
        .then(|| errors.check("account_id", AccountId::parse(&request.account_id)))
        .flatten();
    let region = (!request.region.is_empty())
        .then(|| errors.check("region", Region::parse(&request.region)))
        .flatten();
    let Some(key) = key.filter(|_| errors.is_empty()) else {
        return Err(errors.into());
    };
    if key.location().is_none() {
        for (field, given) in [
            ("account_id", &request.account_id),
            ("region", &request.region),
        ] {
            if given.is_empty() {
                errors.add(field, "is required to resolve an alias name or key id");
            }
        }
        if !errors.is_empty() {
            return Err(errors.into());
        }
    }
    let at = account_id.as_ref().zip(region);
    let usage = key_usage(store, fleet, visible, &key, at, MAX_KEY_USAGE_TABLES).await?;
    let tables: Vec<pb::EncryptedTable> = usage
        .tables
        .iter()
        .map(|entry| convert::entry_to_proto(entry, iac))
        .collect();
    let arns = crate::key_aliases::of_tables(&tables).chain([usage.key_arn.as_str()]);
    Ok(pb::GetKeyUsageResponse {
        key_aliases: crate::key_aliases::lookup(store, arns).await?,
        unused: tables.is_empty(),
        inventory_time: usage
            .inventory_time
            .map(crate::conversions::timestamp::to_proto),
        kms_key_arn: usage.key_arn,
        tables,
    })
}
