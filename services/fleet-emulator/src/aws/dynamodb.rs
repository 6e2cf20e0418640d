//! DynamoDB's control plane: tables and their encryption at rest.

use serde_json::{Value, json};

use super::{AwsError, permissions};
use crate::fleet_file::Settings;
use crate::world::keys::{KeyManager, dynamodb_key_check};
use crate::world::tables::{Sse, Table, describe, ensure_not_updating};
use crate::world::{AccountData, Caller, World, lock};

pub(super) fn string<'a>(input: &'a Value, field: &str) -> Option<&'a str> {
    input.get(field).and_then(Value::as_str)
}

/// The table a request names (a name, or a table ARN), for the request log.
pub fn table_of(input: &Value) -> Option<String> {
    let name = string(input, "TableName").or_else(|| string(input, "ResourceArn"))?;
    Some(name.rsplit('/').next().unwrap_or(name).to_owned())
}

pub(super) fn table_name(input: &Value, caller: &Caller, region: &str) -> Result<String, AwsError> {
    let name =
        string(input, "TableName").ok_or_else(|| AwsError::validation("TableName is required"))?;
    if let Some(rest) = name.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        match parts.as_slice() {
            [_, "dynamodb", r, a, resource] if *r == region && *a == caller.account_id => {
                return resource
                    .strip_prefix("table/")
                    .map(str::to_owned)
                    .ok_or_else(|| AwsError::validation(format!("{name} is not a table ARN")));
            }
            _ => {
                return Err(AwsError::resource_not_found(format!(
                    "Requested resource not found: Table: {name} not found"
                )));
            }
        }
    }
    let valid = (3..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !valid {
        return Err(AwsError::validation(format!(
            "1 validation error detected: Value '{name}' at 'tableName' failed to satisfy constraint: Member must \
             satisfy regular expression pattern: [a-zA-Z0-9_.-]+ and have length between 3 and 255"
        )));
    }
    Ok(name.to_owned())
}

/// The `Tags` list of a request (CreateTable, TagResource) as key/value pairs; malformed entries are skipped.
fn tags_of(input: &Value) -> Vec<(String, String)> {
    input
        .get("Tags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|tag| {
            Some((
                string(tag, "Key")?.to_owned(),
                string(tag, "Value")?.to_owned(),
            ))
        })
        .collect()
}

pub(super) fn not_found(name: &str) -> AwsError {
    AwsError::resource_not_found(format!(
        "Requested resource not found: Table: {name} not found"
    ))
}

/// The encryption an `SSESpecification` asks for, validated as DynamoDB does, in `region`.
pub(super) fn target_sse(
    account: &mut AccountData,
    region: &str,
    spec: &Value,
    now: chrono::DateTime<chrono::Utc>,
    settings: &Settings,
) -> Result<Sse, AwsError> {
    let enabled = spec
        .get("Enabled")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let key = string(spec, "KMSMasterKeyId");
    let sse_type = string(spec, "SSEType");
    let account_id = account.account_id.clone();
    match (enabled, key) {
        (false, Some(_)) => Err(AwsError::validation(
            "One or more parameter values were invalid: KMSMasterKeyId can only be specified when SSE is enabled",
        )),
        (false, None) => Ok(Sse::Owned),
        (true, None) => {
            if sse_type.is_some_and(|t| t != "KMS") {
                return Err(AwsError::validation(
                    "One or more parameter values were invalid: SSEType must be KMS",
                ));
            }
            let key = account.region(region).managed_key(&account_id, region, now);
            Ok(Sse::Kms {
                key_arn: key.arn.clone(),
                managed: true,
            })
        }
        (true, Some(reference)) => {
            if sse_type != Some("KMS") {
                return Err(AwsError::validation(
                    "One or more parameter values were invalid: SSEType KMS is required when KMSMasterKeyId is \
                     specified",
                ));
            }
            let (key_arn, manager) = dynamodb_key_check(
                account.region(region),
                &account_id,
                region,
                reference,
                now,
                settings.behaviour.key_refusal(),
            )?;
            Ok(Sse::Kms {
                key_arn,
                managed: manager == KeyManager::Aws,
            })
        }
    }
}

pub fn handle(
    world: &World,
    caller: &Caller,
    region: &str,
    operation: &str,
    input: &Value,
) -> Result<Value, AwsError> {
    let now = world.clock.now();
    let settings = world.settings();
    let account = world.account(&caller.account_id);
    let mut account = lock(&account);
    // Complete every update that is due, in every region (replicas live in other regions).
    for region_data in account.regions.values_mut() {
        region_data.settle(now);
    }
    match operation {
        "DescribeTable" => {
            let name = table_name(input, caller, region)?;
            permissions::require(&account, caller, "dynamodb:DescribeTable", &name)?;
            let table = describe(&account, region, &name, now, &settings)
                .ok_or_else(|| not_found(&name))?;
            Ok(json!({"Table": table}))
        }
        "ListTables" => {
            permissions::require(&account, caller, "dynamodb:ListTables", "*")?;
            let limit = input.get("Limit").and_then(Value::as_u64).unwrap_or(100);
            if !(1..=100).contains(&limit) {
                return Err(AwsError::validation(format!(
                    "1 validation error detected: Value '{limit}' at 'limit' failed to satisfy constraint: Member \
                     must have value less than or equal to 100"
                )));
            }
            let start = string(input, "ExclusiveStartTableName");
            let tables = &account.region(region).tables;
            let mut names: Vec<&String> = match start {
                Some(start) => tables
                    .range::<str, _>((std::ops::Bound::Excluded(start), std::ops::Bound::Unbounded))
                    .map(|(k, _)| k)
                    .take(limit as usize + 1)
                    .collect(),
                None => tables.keys().take(limit as usize + 1).collect(),
            };
            let more = names.len() > limit as usize;
            names.truncate(limit as usize);
            let mut out = json!({"TableNames": names});
            if more && let Some(last) = names.last() {
                out["LastEvaluatedTableName"] = json!(last);
            }
            Ok(out)
        }
        "CreateTable" => create_table(&mut account, caller, region, input, now, &settings),
        "DeleteTable" => {
            let name = table_name(input, caller, region)?;
            let mut description = describe(&account, region, &name, now, &settings)
                .ok_or_else(|| not_found(&name))?;
            let region_data = account.region(region);
            let table = region_data
                .tables
                .get(&name)
                .ok_or_else(|| not_found(&name))?;
            ensure_not_updating(table)?;
            let replicas = table.replicas.clone();
            region_data.tables.remove(&name);
            // The other replicas stay as tables of their own regions, no longer replicating here.
            for replica_region in replicas {
                if let Some(t) = account.region(&replica_region).tables.get_mut(&name) {
                    t.replicas.retain(|r| r != region);
                }
            }
            description["TableStatus"] = json!("DELETING");
            Ok(json!({"TableDescription": description}))
        }
        "UpdateTable" => {
            super::update_table::update_table(&mut account, caller, region, input, now, &settings)
        }
        "ListTagsOfResource" | "TagResource" => {
            let arn = string(input, "ResourceArn")
                .ok_or_else(|| AwsError::validation("ResourceArn is required"))?;
            let name = table_name(&json!({"TableName": arn}), caller, region)?;
            permissions::require(&account, caller, &format!("dynamodb:{operation}"), &name)?;
            let table = account
                .region(region)
                .tables
                .get_mut(&name)
                .ok_or_else(|| not_found(&name))?;
            if operation == "ListTagsOfResource" {
                let tags: Vec<Value> = table
                    .tags
                    .iter()
                    .map(|(k, v)| json!({"Key": k, "Value": v}))
                    .collect();
                return Ok(json!({"Tags": tags}));
            }
            table.tags.extend(tags_of(input));
            Ok(json!({}))
        }
        other => Err(AwsError::new(
            400,
            "UnknownOperationException",
            format!("Unknown operation {other}"),
        )),
    }
}

fn create_table(
    account: &mut AccountData,
    caller: &Caller,
    region: &str,
    input: &Value,
    now: chrono::DateTime<chrono::Utc>,
    settings: &Settings,
) -> Result<Value, AwsError> {
    let name = table_name(input, caller, region)?;
    if account.region(region).tables.contains_key(&name) {
        return Err(AwsError::resource_in_use(format!(
            "Table already exists: {name}"
        )));
    }
    let sse = match input.get("SSESpecification") {
        Some(spec) => target_sse(account, region, spec, now, settings)?,
        None => Sse::Owned,
    };
    let mut table = Table::new(&name, &caller.account_id, region, now, sse);
    if let Some(schema) = input.get("KeySchema") {
        table.key_schema = schema.clone();
    }
    if let Some(defs) = input.get("AttributeDefinitions") {
        table.attribute_definitions = defs.clone();
    }
    if let Some(mode) = string(input, "BillingMode") {
        table.billing_mode = mode.to_owned();
    } else if input.get("ProvisionedThroughput").is_some() {
        table.billing_mode = "PROVISIONED".to_owned();
    }
    table.tags.extend(tags_of(input));
    account.region(region).tables.insert(name.clone(), table);
    let description =
        describe(account, region, &name, now, settings).ok_or_else(|| not_found(&name))?;
    Ok(json!({"TableDescription": description}))
}

/// The SSESpecification that reproduces `sse` (a replica created without a key copies the table's mode).
pub(super) fn sse_spec_of(sse: &Sse) -> Value {
    match sse {
        Sse::Owned => json!({"Enabled": false}),
        Sse::Kms { managed: true, .. } => json!({"Enabled": true}),
        Sse::Kms {
            key_arn,
            managed: false,
        } => {
            // A customer key lives in one region; the caller must name one for the new replica.
            json!({"Enabled": true, "SSEType": "KMS", "KMSMasterKeyId": key_arn})
        }
    }
}
