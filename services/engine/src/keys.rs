//! Key references to key ARNs, once for every caller (planning filters, history and inventory filters, key usage).

use tablecrypt_core::{AccountId, KeyReference, Region};
use tablecrypt_fleet::{AccountAccess, Fleet};
use tablecrypt_store::Store;

use crate::error::EngineError;

/// The ARN of `key`: an ARN as it is; an alias ARN through the role of the account it names; an alias name or key
/// id in `at` (an account-region), which such a reference needs. `field` names the key in a validation error.
pub async fn resolve_key(
    store: &Store,
    fleet: &Fleet,
    key: &KeyReference,
    at: Option<(&AccountId, Region)>,
    field: &str,
) -> Result<String, EngineError> {
    let (account_id, region, reference) = match key {
        KeyReference::Arn(arn) => return Ok(arn.to_string()),
        KeyReference::AliasArn {
            arn,
            region,
            account_id,
        } => (account_id, *region, arn.as_str()),
        KeyReference::AliasName(_) | KeyReference::KeyId(_) => match at {
            Some((account_id, region)) => (account_id, region, key.as_str()),
            None => {
                return Err(EngineError::invalid(
                    field,
                    "use a key ARN or alias ARN here (an alias name or key id needs an account and region)",
                ));
            }
        },
    };
    let account = store.accounts.get(account_id).await?;
    Ok(fleet
        .resolve_key(&AccountAccess::of(&account), region, reference)
        .await?)
}
