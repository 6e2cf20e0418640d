//! Keys by name: an alias of every KMS key ARN an answer holds (`key_aliases`), from the aliases scans recorded, so
//! a person reads `alias/payments-a` where a machine reads the ARN.

use std::collections::HashMap;

use tablecrypt_proto::v1 as pb;
use tablecrypt_store::Store;

use crate::error::ApiError;

/// The aliases of `arns` (empty strings and repeats ignored).
pub async fn lookup<'a>(
    store: &Store,
    arns: impl IntoIterator<Item = &'a str>,
) -> Result<HashMap<String, String>, ApiError> {
    let mut arns: Vec<String> = arns
        .into_iter()
        .filter(|arn| !arn.is_empty())
        .map(str::to_owned)
        .collect();
    arns.sort();
    arns.dedup();
    Ok(store.inventory.aliases_of(&arns).await?)
}

/// A table's key and its replicas' keys.
pub fn of_tables(tables: &[pb::EncryptedTable]) -> impl Iterator<Item = &str> {
    tables.iter().flat_map(|t| {
        std::iter::once(t.kms_key_arn.as_str())
            .chain(t.replicas.iter().map(|r| r.kms_key_arn.as_str()))
    })
}

/// Each item's keys before and after, its replicas' too.
pub fn of_items(items: &[pb::ChangeItem]) -> impl Iterator<Item = &str> {
    items.iter().flat_map(|i| {
        [i.from_kms_key_arn.as_str(), i.to_kms_key_arn.as_str()]
            .into_iter()
            .chain(
                i.replicas
                    .iter()
                    .flat_map(|r| [r.from_kms_key_arn.as_str(), r.to_kms_key_arn.as_str()]),
            )
    })
}

/// Each rotation's keys before and after.
pub fn of_rotations(rotations: &[pb::KeyRotation]) -> impl Iterator<Item = &str> {
    rotations
        .iter()
        .flat_map(|r| [r.from_kms_key_arn.as_str(), r.to_kms_key_arn.as_str()])
}
