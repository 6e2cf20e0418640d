//! Roles and scopes per use case: does the caller hold a role with the permission, over every account the call
//! touches? Lists are narrowed to what the caller may see (pages may then hold fewer entries than asked).

use std::collections::{BTreeSet, HashMap, HashSet};

use tablecrypt_core::{Account, Caller, LabelSelector, Labels, Permission, Scope};
use tablecrypt_store::{Store, StoreError};
use uuid::Uuid;

use crate::error::EngineError;

/// The caller's scope for `permission`; PERMISSION_DENIED when no grant has it at all.
pub fn require(
    caller: &Caller,
    permission: Permission,
    method: &str,
) -> Result<Scope, EngineError> {
    match caller.scope(permission) {
        Scope::Nowhere => Err(EngineError::PermissionDenied(format!(
            "{} may not call {method}: it needs the {} role (or higher)",
            caller.identity,
            permission.least_role()
        ))),
        scope => Ok(scope),
    }
}

/// Like [`require`], for a call that may touch any account, registered or not (account discovery): only a grant
/// without a selector covers it.
pub fn require_everywhere(
    caller: &Caller,
    permission: Permission,
    method: &str,
) -> Result<(), EngineError> {
    match require(caller, permission, method)? {
        Scope::Everywhere => Ok(()),
        scope => Err(EngineError::PermissionDenied(format!(
            "{} may not call {method}: it can register and relabel any account, so it needs the {} role over \
             every account, not only {}",
            caller.identity,
            permission.least_role(),
            scope.describe()
        ))),
    }
}

/// Accounts read per page when every registered account is needed.
const ACCOUNTS_PAGE: u32 = 1000;

/// Every registered account, page by page.
pub async fn all_accounts(store: &Store) -> Result<Vec<Account>, StoreError> {
    accounts_matching(store, &LabelSelector::default()).await
}

/// Every registered account whose labels match `selector`, page by page.
pub async fn accounts_matching(
    store: &Store,
    selector: &LabelSelector,
) -> Result<Vec<Account>, StoreError> {
    let mut accounts: Vec<Account> = Vec::new();
    loop {
        let page = store
            .accounts
            .list(
                selector,
                accounts.last().map(|a| &a.account_id),
                ACCOUNTS_PAGE,
            )
            .await?;
        accounts.extend(page.accounts);
        if !page.has_more {
            return Ok(accounts);
        }
    }
}

/// Every registered account's labels, for scope checks. Only loaded when the scope is not unlimited.
async fn account_labels(store: &Store) -> Result<HashMap<String, Labels>, EngineError> {
    Ok(all_accounts(store)
        .await?
        .into_iter()
        .map(|account| (account.account_id.to_string(), account.spec.labels))
        .collect())
}

/// What a caller may see or touch with one permission.
pub enum Visible {
    All,
    Only(HashSet<String>),
}

impl Visible {
    pub fn contains(&self, account_id: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(ids) => ids.contains(account_id),
        }
    }

    /// The accounts as a query's scope: `None` for every account.
    pub fn accounts(&self) -> Option<Vec<String>> {
        match self {
            Self::All => None,
            Self::Only(ids) => Some(ids.iter().cloned().collect()),
        }
    }
}

/// The accounts the caller may exercise `permission` on.
pub async fn visible(
    store: &Store,
    caller: &Caller,
    permission: Permission,
    method: &str,
) -> Result<Visible, EngineError> {
    match require(caller, permission, method)? {
        Scope::Everywhere => Ok(Visible::All),
        scope => Ok(Visible::Only(
            account_labels(store)
                .await?
                .into_iter()
                .filter(|(_, labels)| scope.allows(labels))
                .map(|(id, _)| id)
                .collect(),
        )),
    }
}

/// PERMISSION_DENIED naming every account of `account_ids` outside the caller's scope for `permission`.
/// Accounts that are not registered are left to the call itself (it answers NOT_FOUND or plans them blocked).
pub async fn check_accounts(
    store: &Store,
    caller: &Caller,
    permission: Permission,
    method: &str,
    account_ids: impl IntoIterator<Item = String>,
) -> Result<(), EngineError> {
    let scope = require(caller, permission, method)?;
    if scope == Scope::Everywhere {
        return Ok(());
    }
    let labels = account_labels(store).await?;
    deny_outside(caller, permission, method, &scope, &labels, account_ids)
}

/// Like [`check_accounts`] over the accounts of change request `id` (its items'). An account the request touches
/// that is no longer registered has no labels for a scope to match: only a caller whose grant covers every
/// account may read or control such a request (it was readable and controllable from every scope).
pub async fn check_request(
    store: &Store,
    caller: &Caller,
    permission: Permission,
    method: &str,
    id: Uuid,
) -> Result<(), EngineError> {
    let scope = require(caller, permission, method)?;
    if scope == Scope::Everywhere {
        return Ok(());
    }
    let mut accounts = store.change_items.accounts_of(&[id]).await?;
    let accounts = accounts.remove(&id).unwrap_or_default();
    let labels = account_labels(store).await?;
    if accounts.iter().any(|account| !labels.contains_key(account)) {
        return Err(EngineError::PermissionDenied(format!(
            "{} may not call {method} on change request {id}: it touches an account that is no longer \
             registered, which only a grant over every account covers",
            caller.identity
        )));
    }
    deny_outside(caller, permission, method, &scope, &labels, accounts)
}

/// Like [`check_accounts`] over every registered account (a call that names none means the whole fleet).
pub async fn check_every_account(
    store: &Store,
    caller: &Caller,
    permission: Permission,
    method: &str,
) -> Result<(), EngineError> {
    let scope = require(caller, permission, method)?;
    if scope == Scope::Everywhere {
        return Ok(());
    }
    let labels = account_labels(store).await?;
    let everyone: Vec<String> = labels.keys().cloned().collect();
    deny_outside(caller, permission, method, &scope, &labels, everyone)
}

fn deny_outside(
    caller: &Caller,
    permission: Permission,
    method: &str,
    scope: &Scope,
    labels: &HashMap<String, Labels>,
    account_ids: impl IntoIterator<Item = String>,
) -> Result<(), EngineError> {
    let outside: BTreeSet<String> = account_ids
        .into_iter()
        .filter(|id| labels.get(id).is_some_and(|l| !scope.allows(l)))
        .collect();
    if outside.is_empty() {
        return Ok(());
    }
    Err(EngineError::PermissionDenied(format!(
        "{} may not call {method} on account{} {}: outside its {} scope ({})",
        caller.identity,
        if outside.len() == 1 { "" } else { "s" },
        outside.into_iter().collect::<Vec<_>>().join(", "),
        permission.least_role(),
        scope.describe()
    )))
}

/// PERMISSION_DENIED unless `labels` (an account about to be registered or relabelled) are in scope.
pub fn check_labels(
    caller: &Caller,
    permission: Permission,
    method: &str,
    account_id: &str,
    labels: &Labels,
) -> Result<(), EngineError> {
    let scope = require(caller, permission, method)?;
    if scope.allows(labels) {
        Ok(())
    } else {
        Err(EngineError::PermissionDenied(format!(
            "{} may not call {method} for account {account_id} with these labels: outside its {} scope ({})",
            caller.identity,
            permission.least_role(),
            scope.describe()
        )))
    }
}
