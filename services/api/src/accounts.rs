//! Account registry RPCs.

use tablecrypt_core::{AccountId, LabelSelector, ValidationErrors};
use tablecrypt_engine::AccountDiscovery;
use tablecrypt_engine::access::Visible;
use tablecrypt_engine::discovery::Requester;
use tablecrypt_proto::v1 as pb;
use tablecrypt_store::Store;

use crate::conversions::account as convert;
use crate::error::ApiError;
use crate::page_token::{self, CallPages};

fn parse_account_id(field: &str, value: &str) -> Result<AccountId, ApiError> {
    AccountId::parse(value).map_err(|e| ValidationErrors::single(field, e.0).into())
}

pub async fn register(
    store: &Store,
    request: pb::RegisterAccountRequest,
) -> Result<pb::Account, ApiError> {
    let Some(account) = request.account else {
        return Err(ValidationErrors::single("account", "is required").into());
    };
    let (account_id, spec) = convert::parse_new(&account).map_err(|e| e.prefixed("account"))?;
    let account = store.accounts.insert(&account_id, &spec).await?;
    tracing::info!(account_id = %account.account_id, "account registered");
    Ok(convert::to_proto(&account))
}

pub async fn get(store: &Store, request: pb::GetAccountRequest) -> Result<pb::Account, ApiError> {
    let account_id = parse_account_id("account_id", &request.account_id)?;
    Ok(convert::to_proto(&store.accounts.get(&account_id).await?))
}

/// Pages are read until `page_size` accounts the caller may see are found (or none are left), and the page token
/// is the last of those: a token built from an account outside the caller's scope would name it.
pub async fn list(
    store: &Store,
    visible: &Visible,
    pages: &CallPages,
    request: pb::ListAccountsRequest,
) -> Result<pb::ListAccountsResponse, ApiError> {
    let mut errors = ValidationErrors::new();
    let page_size = errors.check("page_size", page_token::page_size(request.page_size));
    let selector = errors.check(
        "label_selector",
        LabelSelector::parse(&request.label_selector),
    );
    let filter = selector
        .as_ref()
        .map(LabelSelector::canonical)
        .unwrap_or_default();
    let after = errors
        .check("page_token", pages.decode(&request.page_token, &filter))
        .flatten()
        .map(|after| AccountId::parse(&after))
        .transpose()
        .unwrap_or_else(|_| {
            errors.add("page_token", "is not a page token returned by this RPC");
            None
        });
    let (Some(page_size), Some(selector)) = (page_size, selector) else {
        return Err(errors.into());
    };
    if !errors.is_empty() {
        return Err(errors.into());
    }
    let page_size_rows = page_size as usize;
    let mut accounts = Vec::with_capacity(page_size_rows);
    let mut cursor = after;
    // Whether a visible account follows the page.
    let more = 'pages: loop {
        let page = store
            .accounts
            .list(&selector, cursor.as_ref(), page_size)
            .await?;
        for account in page.accounts {
            cursor = Some(account.account_id.clone());
            if !visible.contains(account.account_id.as_str()) {
                continue;
            }
            if accounts.len() == page_size_rows {
                break 'pages true;
            }
            accounts.push(account);
        }
        if !page.has_more {
            break false;
        }
    };
    let next_page_token = match (more, accounts.last()) {
        (true, Some(last)) => pages.encode(last.account_id.as_str(), &filter),
        _ => String::new(),
    };
    Ok(pb::ListAccountsResponse {
        accounts: accounts.iter().map(convert::to_proto).collect(),
        next_page_token,
    })
}

pub async fn update(
    store: &Store,
    request: pb::UpdateAccountRequest,
) -> Result<pb::Account, ApiError> {
    let Some(account) = request.account else {
        return Err(ValidationErrors::single("account", "is required").into());
    };
    let (account_id, expected_version, changes) =
        convert::parse_update(&account, request.update_mask.as_ref())?;
    let current = store.accounts.get(&account_id).await?;
    if let Some(expected) = expected_version
        && expected != current.version
    {
        return Err(ApiError::Aborted(format!(
            "account {account_id} was changed since the given etag was read (now {}): read it again and retry",
            current.etag()
        )));
    }
    let spec = current
        .with_changes(changes)
        .map_err(|e| e.prefixed("account"))?;
    // Nothing to change (an external id compared too): nothing written, the etag stays.
    if spec == current.spec {
        return Ok(convert::to_proto(&current));
    }
    if request.validate_only {
        // No etag: the version it would get is not known until written, and a guessed one could match another.
        let mut would_be = convert::to_proto(&tablecrypt_core::Account { spec, ..current });
        would_be.etag = String::new();
        return Ok(would_be);
    }
    // Conditional on the version just read, so a concurrent update between the read and this write is refused.
    let updated = store
        .accounts
        .update(&account_id, current.version, &spec)
        .await?;
    tracing::info!(account_id = %account_id, version = updated.version, "account updated");
    Ok(convert::to_proto(&updated))
}

pub async fn deregister(
    store: &Store,
    request: pb::DeregisterAccountRequest,
) -> Result<pb::DeregisterAccountResponse, ApiError> {
    let mut errors = ValidationErrors::new();
    let account_id = errors.check("account_id", AccountId::parse(&request.account_id));
    let expected_version = match request.etag.as_str() {
        "" => None,
        etag => {
            let version = tablecrypt_core::Account::parse_etag(etag);
            if version.is_none() {
                errors.add("etag", "is not an etag returned by this service");
            }
            version
        }
    };
    let Some(account_id) = account_id.filter(|_| errors.is_empty()) else {
        return Err(errors.into());
    };
    store.accounts.delete(&account_id, expected_version).await?;
    tracing::info!(account_id = %account_id, "account deregistered");
    Ok(pb::DeregisterAccountResponse {})
}

/// Reads the organization and brings the registry in line (see the proto's DiscoverAccounts).
pub async fn discover(
    discovery: &AccountDiscovery,
    requester: &Requester,
    request: pb::DiscoverAccountsRequest,
) -> Result<pb::DiscoverAccountsResponse, ApiError> {
    let report = discovery
        .run(requester, request.dry_run, request.prune)
        .await?;
    Ok(pb::DiscoverAccountsResponse {
        accounts: report
            .lines
            .iter()
            .map(convert::discovered_to_proto)
            .collect(),
        applied: report.applied,
    })
}
