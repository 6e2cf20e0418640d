//! KMS: the key operations tablecrypt and its tests need.

use chrono::Duration;
use serde_json::{Value, json};

use super::AwsError;
use crate::world::keys::{Key, KeyManager, KeyState};
use crate::world::{Caller, RegionData, World, lock, partition_of};

fn string<'a>(input: &'a Value, field: &str) -> Option<&'a str> {
    input.get(field).and_then(Value::as_str)
}

fn required<'a>(input: &'a Value, field: &str) -> Result<&'a str, AwsError> {
    string(input, field).ok_or_else(|| AwsError::validation(format!("{field} is required")))
}

fn not_found(reference: &str, caller: &Caller, region: &str) -> AwsError {
    let what = if reference.starts_with("alias/") {
        format!(
            "Alias arn:{}:kms:{region}:{}:{reference} is not found.",
            partition_of(region),
            caller.account_id
        )
    } else {
        format!("Key '{reference}' does not exist")
    };
    AwsError::new(400, "NotFoundException", what)
}

/// Pages through `items` after `marker` (an opaque position), at most `limit` (1-1000, default 100).
fn page<T: Clone>(items: &[T], input: &Value) -> Result<(Vec<T>, Option<String>), AwsError> {
    let limit = input.get("Limit").and_then(Value::as_u64).unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AwsError::validation("Limit must be between 1 and 1000"));
    }
    let start = match string(input, "Marker") {
        Some(marker) => marker
            .parse::<usize>()
            .map_err(|_| AwsError::new(400, "InvalidMarkerException", "Invalid marker"))?,
        None => 0,
    };
    let end = (start + limit as usize).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    Ok((items.get(start..end).unwrap_or_default().to_vec(), next))
}

fn with_page(mut body: Value, next: Option<String>) -> Value {
    body["Truncated"] = json!(next.is_some());
    if let Some(marker) = next {
        body["NextMarker"] = json!(marker);
    }
    body
}

fn alias_checks(name: &str) -> Result<(), AwsError> {
    if !name.starts_with("alias/") || name.len() <= "alias/".len() {
        return Err(AwsError::validation(format!(
            "Alias must start with the prefix \"alias/\": {name}"
        )));
    }
    if name.starts_with("alias/aws/") {
        return Err(AwsError::new(
            400,
            "NotAuthorizedException",
            "Cannot create or update an alias with the reserved prefix alias/aws/",
        ));
    }
    Ok(())
}

fn key_mut<'a>(
    region_data: &'a mut RegionData,
    caller: &Caller,
    region: &str,
    reference: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<&'a mut Key, AwsError> {
    region_data
        .find_key(&caller.account_id, region, reference, now)
        .ok_or_else(|| not_found(reference, caller, region))
}

pub fn handle(
    world: &World,
    caller: &Caller,
    region: &str,
    operation: &str,
    input: &Value,
) -> Result<Value, AwsError> {
    let now = world.clock.now();
    let account = world.account(&caller.account_id);
    let mut account = lock(&account);
    let account_id = caller.account_id.clone();
    if operation == "DescribeKey" {
        let resource = string(input, "KeyId").unwrap_or_default();
        super::permissions::require(&account, caller, "kms:DescribeKey", resource)?;
    }
    let region_data = account.region(region);
    match operation {
        "CreateKey" => {
            let spec = string(input, "KeySpec")
                .or_else(|| string(input, "CustomerMasterKeySpec"))
                .unwrap_or("SYMMETRIC_DEFAULT");
            let description = string(input, "Description").unwrap_or_default().to_owned();
            let key = Key::new(
                &account_id,
                region,
                None,
                spec,
                KeyManager::Customer,
                description,
                now,
            )?;
            if let Some(usage) = string(input, "KeyUsage")
                && usage != key.usage
                && !(usage == "ENCRYPT_DECRYPT" && key.spec.starts_with("RSA"))
            {
                return Err(AwsError::validation(format!(
                    "KeyUsage {usage} is not valid for KeySpec {spec}"
                )));
            }
            let mut key = key;
            if let Some(usage) = string(input, "KeyUsage") {
                key.usage = usage.to_owned();
            }
            let metadata = key.metadata();
            region_data.keys.insert(key.id.clone(), key);
            Ok(json!({"KeyMetadata": metadata}))
        }
        "DescribeKey" => {
            let reference = required(input, "KeyId")?;
            Ok(
                json!({"KeyMetadata": key_mut(region_data, caller, region, reference, now)?.metadata()}),
            )
        }
        "ListKeys" => {
            let keys: Vec<Value> = region_data
                .keys
                .values()
                .map(|k| json!({"KeyId": k.id, "KeyArn": k.arn}))
                .collect();
            let (keys, next) = page(&keys, input)?;
            Ok(with_page(json!({"Keys": keys}), next))
        }
        "ListAliases" => {
            let filter = match string(input, "KeyId") {
                Some(reference) => Some(
                    key_mut(region_data, caller, region, reference, now)?
                        .id
                        .clone(),
                ),
                None => None,
            };
            let partition = partition_of(region);
            let aliases: Vec<Value> = region_data
                .aliases
                .iter()
                .filter(|(_, (id, _))| filter.as_ref().is_none_or(|f| f == id))
                .map(|(name, (id, created))| {
                    json!({
                        "AliasName": name,
                        "AliasArn": format!("arn:{partition}:kms:{region}:{account_id}:{name}"),
                        "TargetKeyId": id,
                        "CreationDate": created.timestamp_millis() as f64 / 1000.0,
                        "LastUpdatedDate": created.timestamp_millis() as f64 / 1000.0,
                    })
                })
                .collect();
            let (aliases, next) = page(&aliases, input)?;
            Ok(with_page(json!({"Aliases": aliases}), next))
        }
        "CreateAlias" | "UpdateAlias" => {
            let name = required(input, "AliasName")?;
            alias_checks(name)?;
            let target = required(input, "TargetKeyId")?;
            if target.starts_with("alias/") {
                return Err(AwsError::validation(
                    "TargetKeyId must be a key id or key ARN, not an alias",
                ));
            }
            let key = key_mut(region_data, caller, region, target, now)?;
            if key.manager == KeyManager::Aws {
                return Err(AwsError::new(
                    400,
                    "NotAuthorizedException",
                    "An alias cannot point at an AWS managed key",
                ));
            }
            let id = key.id.clone();
            let exists = region_data.aliases.contains_key(name);
            match (operation, exists) {
                ("CreateAlias", true) => {
                    return Err(AwsError::new(
                        400,
                        "AlreadyExistsException",
                        format!(
                            "An alias with the name arn:{}:kms:{region}:{account_id}:{name} already exists",
                            partition_of(region)
                        ),
                    ));
                }
                ("UpdateAlias", false) => return Err(not_found(name, caller, region)),
                _ => {}
            }
            region_data.aliases.insert(name.to_owned(), (id, now));
            Ok(json!({}))
        }
        "DeleteAlias" => {
            let name = required(input, "AliasName")?;
            alias_checks(name)?;
            if region_data.aliases.remove(name).is_none() {
                return Err(not_found(name, caller, region));
            }
            Ok(json!({}))
        }
        "EnableKey" | "DisableKey" => {
            let reference = required(input, "KeyId")?;
            let key = key_mut(region_data, caller, region, reference, now)?;
            if key.manager == KeyManager::Aws {
                return Err(AwsError::new(
                    400,
                    "AccessDeniedException",
                    "AWS managed keys cannot be enabled or disabled",
                ));
            }
            if key.state == KeyState::PendingDeletion {
                return Err(AwsError::new(
                    400,
                    "KMSInvalidStateException",
                    format!("{} is pending deletion.", key.arn),
                ));
            }
            let state = if operation == "EnableKey" {
                KeyState::Enabled
            } else {
                KeyState::Disabled
            };
            key.set_state(state, now);
            Ok(json!({}))
        }
        "ScheduleKeyDeletion" => {
            let reference = required(input, "KeyId")?;
            let days = input
                .get("PendingWindowInDays")
                .and_then(Value::as_i64)
                .unwrap_or(30);
            if !(7..=30).contains(&days) {
                return Err(AwsError::validation(
                    "PendingWindowInDays must be between 7 and 30",
                ));
            }
            let key = key_mut(region_data, caller, region, reference, now)?;
            if key.manager == KeyManager::Aws {
                return Err(AwsError::new(
                    400,
                    "AccessDeniedException",
                    "AWS managed keys cannot be deleted",
                ));
            }
            if key.state == KeyState::PendingDeletion {
                return Err(AwsError::new(
                    400,
                    "KMSInvalidStateException",
                    format!("{} is pending deletion.", key.arn),
                ));
            }
            key.set_state(KeyState::PendingDeletion, now);
            let deletion = now + Duration::days(days);
            key.deletion_date = Some(deletion);
            Ok(json!({
                "KeyId": key.arn,
                "DeletionDate": deletion.timestamp_millis() as f64 / 1000.0,
                "KeyState": "PendingDeletion",
                "PendingWindowInDays": days,
            }))
        }
        other => Err(AwsError::new(
            400,
            "UnknownOperationException",
            format!("Unknown operation {other}"),
        )),
    }
}
