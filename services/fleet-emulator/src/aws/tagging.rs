//! The Resource Groups Tagging API for DynamoDB tables (awsJson1_1, `X-Amz-Target:
//! ResourceGroupsTaggingAPI_20170126.<Op>`): `GetResources`, `TagResources`, `UntagResources`, so the tools that
//! inventory by tags (c7n-org, cloud-custodian, scripts on `tag:GetResources`) can read the emulator's fleet.
//!
//! As AWS: tag filters are ANDed, and a filter's values ORed (no values: any value); pages of `ResourcesPerPage`
//! (1-100, default 50) with an opaque `PaginationToken` that is "" on the last page; at most 50 tags per table.
//! The emulator holds only DynamoDB tables, so a `ResourceTypeFilters` without `dynamodb` or `dynamodb:table`
//! finds nothing. Unlike AWS: only tables that carry tags now are listed (AWS also lists, with no tags, those that
//! once had some), and a malformed `PaginationToken` starts over instead of being refused.

use serde_json::{Value, json};

use super::{AwsError, permissions};
use crate::world::{AccountData, Caller, World, lock};

/// DynamoDB's limit of tags per table.
const MAX_TAGS: usize = 50;

fn table_arn(region: &str, account_id: &str, name: &str) -> String {
    format!("arn:aws:dynamodb:{region}:{account_id}:table/{name}")
}

fn invalid(message: impl Into<String>) -> AwsError {
    AwsError::new(400, "InvalidParameterException", message)
}

fn strings(input: &Value, field: &str) -> Vec<String> {
    input
        .get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

pub fn handle(
    world: &World,
    caller: &Caller,
    region: &str,
    operation: &str,
    input: &Value,
) -> Result<Value, AwsError> {
    let account = world.account(&caller.account_id);
    let mut account = lock(&account);
    match operation {
        "GetResources" => {
            permissions::require(&account, caller, "tag:GetResources", "*")?;
            get_resources(&mut account, region, input)
        }
        "TagResources" | "UntagResources" => {
            let action = format!("tag:{operation}");
            permissions::require(&account, caller, &action, "*")?;
            change_tags(&mut account, region, operation, input)
        }
        other => Err(AwsError::new(
            400,
            "UnknownOperationException",
            format!("Unknown operation {other}"),
        )),
    }
}

fn get_resources(
    account: &mut AccountData,
    region: &str,
    input: &Value,
) -> Result<Value, AwsError> {
    let per_page = input
        .get("ResourcesPerPage")
        .and_then(Value::as_u64)
        .unwrap_or(50);
    if !(1..=100).contains(&per_page) {
        return Err(invalid(format!(
            "ResourcesPerPage must be between 1 and 100, got {per_page}"
        )));
    }
    let types = strings(input, "ResourceTypeFilters");
    let tables_wanted = types.is_empty()
        || types
            .iter()
            .any(|t| t == "dynamodb" || t == "dynamodb:table");
    let arns = strings(input, "ResourceARNList");
    let filters: Vec<(String, Vec<String>)> = input
        .get("TagFilters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| {
            let key = f.get("Key")?.as_str()?.to_owned();
            Some((key, strings(f, "Values")))
        })
        .collect();
    let after = input
        .get("PaginationToken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    let account_id = account.account_id.clone();
    let tables = &account.region(region).tables;
    let mut found = Vec::new();
    let mut more = false;
    if tables_wanted {
        for (name, table) in tables {
            if after.is_some_and(|after| name.as_str() <= after) || table.tags.is_empty() {
                continue;
            }
            let arn = table_arn(region, &account_id, name);
            if !arns.is_empty() && !arns.contains(&arn) {
                continue;
            }
            let matches = filters.iter().all(|(key, values)| {
                table
                    .tags
                    .get(key)
                    .is_some_and(|value| values.is_empty() || values.contains(value))
            });
            if !matches {
                continue;
            }
            if found.len() == per_page as usize {
                more = true;
                break;
            }
            let tags: Vec<Value> = table
                .tags
                .iter()
                .map(|(k, v)| json!({"Key": k, "Value": v}))
                .collect();
            found.push((name.clone(), json!({"ResourceARN": arn, "Tags": tags})));
        }
    }
    let token = match (more, found.last()) {
        (true, Some((name, _))) => name.clone(),
        _ => String::new(),
    };
    let list: Vec<Value> = found.into_iter().map(|(_, v)| v).collect();
    Ok(json!({"PaginationToken": token, "ResourceTagMappingList": list}))
}

fn change_tags(
    account: &mut AccountData,
    region: &str,
    operation: &str,
    input: &Value,
) -> Result<Value, AwsError> {
    let arns = strings(input, "ResourceARNList");
    if !(1..=20).contains(&arns.len()) {
        return Err(invalid("ResourceARNList must name 1 to 20 resources"));
    }
    let tags: Vec<(String, String)> = input
        .get("Tags")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect();
    let keys = strings(input, "TagKeys");
    if operation == "TagResources" && tags.is_empty() {
        return Err(invalid("Tags must hold 1 to 50 tags"));
    }
    if operation == "UntagResources" && keys.is_empty() {
        return Err(invalid("TagKeys must hold 1 to 50 keys"));
    }
    let prefix = format!("arn:aws:dynamodb:{region}:{}:table/", account.account_id);
    let mut failed = serde_json::Map::new();
    for arn in arns {
        let table = arn
            .strip_prefix(&prefix)
            .and_then(|name| account.region(region).tables.get_mut(name));
        let Some(table) = table else {
            let message = format!("Requested resource not found: {arn}");
            failed.insert(arn, failure(404, message));
            continue;
        };
        if operation == "TagResources" {
            let new_keys = tags
                .iter()
                .filter(|(k, _)| !table.tags.contains_key(k))
                .count();
            if table.tags.len() + new_keys > MAX_TAGS {
                failed.insert(
                    arn,
                    failure(400, format!("a table may hold at most {MAX_TAGS} tags")),
                );
                continue;
            }
            table.tags.extend(tags.iter().cloned());
        } else {
            for key in &keys {
                table.tags.remove(key);
            }
        }
    }
    Ok(json!({"FailedResourcesMap": failed}))
}

/// One resource's entry in `FailedResourcesMap`.
fn failure(status: u16, message: String) -> Value {
    json!({
        "StatusCode": status,
        "ErrorCode": "InvalidParameterException",
        "ErrorMessage": message,
    })
}
