//! DynamoDB UpdateTable: encryption changes and replica changes, with the behaviour switches that decide how AWS
//! answers where sources disagree (`crate::behaviour`).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::dynamodb::{not_found, sse_spec_of, string, table_name, target_sse};
use super::{AwsError, permissions};
use crate::behaviour::{
    CurrentKeyResend, GlobalSseScope, IdenticalUpdate, MixedUpdate, QuotaCheck, UnusableOldKey,
};
use crate::fleet_file::Settings;
use crate::world::tables::{
    SWITCH_QUOTA_MESSAGE, Sse, Table, describe, duration_from_secs, ensure_not_updating,
};
use crate::world::{AccountData, Caller, KeyState};

/// UpdateTable fields that change something other than encryption or replicas.
const OTHER_CHANGES: [&str; 9] = [
    "AttributeDefinitions",
    "BillingMode",
    "ProvisionedThroughput",
    "GlobalSecondaryIndexUpdates",
    "StreamSpecification",
    "TableClass",
    "DeletionProtectionEnabled",
    "OnDemandThroughput",
    "WarmThroughput",
];

/// One table (or replica) whose encryption an UpdateTable changes.
struct Change {
    region: String,
    target: Sse,
    /// The key as the request named it (`None`: `{Enabled: true}` or `{Enabled: false}`, or a replica that follows).
    named: Option<String>,
}

/// AWS's quota text once it is checked first: it names when the next change is allowed.
fn quota_refusal(table: &Table, now: DateTime<Utc>) -> AwsError {
    match table.next_switch_allowed(now) {
        Some(at) => AwsError::limit_exceeded(format!(
            "Subscriber limit exceeded: Encryption mode changes are limited in the 24h window. The next change of \
             table {} is allowed after {}",
            table.name,
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )),
        None => AwsError::limit_exceeded(SWITCH_QUOTA_MESSAGE),
    }
}

/// The encryption change must be the request's only operation (observed); so must a replica change.
fn one_concern(input: &Value, settings: &Settings) -> Result<(), AwsError> {
    if settings.behaviour.sse_with_other_changes() == MixedUpdate::Accepted {
        return Ok(());
    }
    let sse = input.get("SSESpecification").is_some();
    let replicas = input.get("ReplicaUpdates").is_some();
    let others = OTHER_CHANGES.iter().any(|field| input.get(field).is_some());
    if replicas && (sse || others) {
        return Err(AwsError::validation(
            "One or more parameter values were invalid: Replica modification must be the only operation in the \
             request",
        ));
    }
    if sse && others {
        return Err(AwsError::validation(
            "One or more parameter values were invalid: Server-Side Encryption modification must be the only \
             operation in the request",
        ));
    }
    Ok(())
}

/// The table's current customer managed key, if DynamoDB can no longer use it: it cannot re-encrypt away from it.
fn unusable_current_key(account: &AccountData, region: &str, table: &Table) -> Option<AwsError> {
    let Sse::Kms {
        key_arn,
        managed: false,
    } = &table.sse
    else {
        return None;
    };
    let key = account
        .regions
        .get(region)?
        .keys
        .get(key_arn.rsplit('/').next()?)?;
    let state = match key.state {
        KeyState::Enabled => return None,
        KeyState::Disabled => "disabled",
        KeyState::PendingDeletion => "pending deletion",
    };
    Some(AwsError::validation(format!(
        "The table's current KMS key {key_arn} is {state}: DynamoDB cannot decrypt the table to re-encrypt it. \
         Enable the key, then change the table's encryption"
    )))
}

/// Refuses a change to the encryption the table already has, as AWS words it.
fn already_encrypted(change: &Change, settings: &Settings) -> Option<AwsError> {
    let resend = settings.behaviour.current_key_resend();
    let text = match (&change.target, resend) {
        (
            Sse::Kms {
                key_arn,
                managed: false,
            },
            CurrentKeyResend::RefusedByArnOnly,
        ) => {
            // Only the exact ARN is recognised; an alias or key id re-encrypts (and spends a switch).
            if change.named.as_deref() != Some(key_arn.as_str()) {
                return None;
            }
            "Table is already encrypted with given KMSMasterKeyId"
        }
        (Sse::Kms { managed: true, .. }, CurrentKeyResend::RefusedByArnOnly)
            if change.named.is_none() =>
        {
            return None;
        }
        (Sse::Owned, CurrentKeyResend::RefusedByArnOnly) => {
            "One or more parameter values were invalid: Table is already encrypted by default"
        }
        (Sse::Kms { managed: false, .. }, _) => {
            "Table is already encrypted with given KMSMasterKeyId"
        }
        (Sse::Kms { managed: true, .. }, _) => {
            "Table is already encrypted with the AWS managed key"
        }
        (Sse::Owned, CurrentKeyResend::AlwaysRefused) => {
            "Table is already encrypted with the AWS owned key"
        }
    };
    Some(AwsError::validation(text))
}

pub fn update_table(
    account: &mut AccountData,
    caller: &Caller,
    region: &str,
    input: &Value,
    now: DateTime<Utc>,
    settings: &Settings,
) -> Result<Value, AwsError> {
    let behaviour = &settings.behaviour;
    let name = table_name(input, caller, region)?;
    let table = account
        .regions
        .get(region)
        .and_then(|r| r.tables.get(&name))
        .cloned()
        .ok_or_else(|| not_found(&name))?;
    permissions::require(account, caller, "dynamodb:UpdateTable", &table.arn)?;
    if let Some(state) = &table.archival {
        return Err(AwsError::validation(format!(
            "Table {name} is {state}: it must be restored from its archival backup before it can be updated"
        )));
    }
    one_concern(input, settings)?;
    if let Some(pending) = table.pending.clone() {
        // Observed: the same change again is accepted and changes nothing; any other is refused.
        let same = input.get("ReplicaUpdates").is_none()
            && input
                .get("SSESpecification")
                .and_then(|spec| target_sse(account, region, spec, now, settings).ok())
                .is_some_and(|target| target == pending.target);
        if same && behaviour.identical_update_during_change() == IdenticalUpdate::Accepted {
            let description =
                describe(account, region, &name, now, settings).ok_or_else(|| not_found(&name))?;
            return Ok(json!({"TableDescription": description}));
        }
        return Err(AwsError::resource_in_use(
            "Server-Side Encryption is still being updated. Please try again after the update is complete."
                .to_owned(),
        ));
    }
    let replicas = table.replicas.clone();
    if behaviour.quota_check() == QuotaCheck::BeforeKeyValidation
        && let Some(spec) = input.get("SSESpecification")
        && spec
            .get("Enabled")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        && !table.switch_allowed(
            &Sse::Kms {
                key_arn: String::new(),
                managed: false,
            },
            now,
        )
    {
        return Err(quota_refusal(&table, now));
    }

    let mut changes: Vec<Change> = Vec::new();
    let mut replica_creates: Vec<(String, Sse)> = Vec::new();
    let mut replica_deletes: Vec<String> = Vec::new();
    if let Some(spec) = input.get("SSESpecification") {
        let target = target_sse(account, region, spec, now, settings)?;
        if let Sse::Kms {
            key_arn,
            managed: false,
        } = &target
        {
            permissions::require(account, caller, "kms:DescribeKey", key_arn)?;
            permissions::require(account, caller, "kms:CreateGrant", key_arn)?;
        }
        let follows = matches!(target, Sse::Owned | Sse::Kms { managed: true, .. })
            && behaviour.global_sse_scope() == GlobalSseScope::AllReplicas;
        changes.push(Change {
            region: region.to_owned(),
            target: target.clone(),
            named: string(spec, "KMSMasterKeyId").map(str::to_owned),
        });
        // Observed: AWS managed or owned set on one replica applies to every replica, each in its own region.
        if follows {
            for replica_region in &replicas {
                let follower = match target {
                    Sse::Owned => Sse::Owned,
                    Sse::Kms { .. } => target_sse(
                        account,
                        replica_region,
                        &json!({"Enabled": true}),
                        now,
                        settings,
                    )?,
                };
                changes.push(Change {
                    region: replica_region.clone(),
                    target: follower,
                    named: None,
                });
            }
        }
    }
    for update in input
        .get("ReplicaUpdates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(create) = update.get("Create") {
            let replica_region = string(create, "RegionName")
                .ok_or_else(|| AwsError::validation("RegionName is required"))?;
            if replica_region == region || replicas.iter().any(|r| r == replica_region) {
                return Err(AwsError::validation(format!(
                    "Replica already exists in region {replica_region}"
                )));
            }
            let spec = match string(create, "KMSMasterKeyId") {
                Some(key) => json!({"Enabled": true, "SSEType": "KMS", "KMSMasterKeyId": key}),
                None => sse_spec_of(&account.region(region).tables[&name].sse),
            };
            let target = target_sse(account, replica_region, &spec, now, settings)?;
            replica_creates.push((replica_region.to_owned(), target));
        } else if let Some(update) = update.get("Update") {
            let replica_region = string(update, "RegionName")
                .ok_or_else(|| AwsError::validation("RegionName is required"))?;
            if !replicas.iter().any(|r| r == replica_region) {
                return Err(AwsError::validation(format!(
                    "Table {name} has no replica in region {replica_region}"
                )));
            }
            if let Some(key) = string(update, "KMSMasterKeyId") {
                let spec = json!({"Enabled": true, "SSEType": "KMS", "KMSMasterKeyId": key});
                let target = target_sse(account, replica_region, &spec, now, settings)?;
                if let Sse::Kms { key_arn, .. } = &target {
                    permissions::require(account, caller, "kms:CreateGrant", key_arn)?;
                }
                changes.push(Change {
                    region: replica_region.to_owned(),
                    target,
                    named: Some(key.to_owned()),
                });
            }
        } else if let Some(delete) = update.get("Delete") {
            let replica_region = string(delete, "RegionName")
                .ok_or_else(|| AwsError::validation("RegionName is required"))?;
            if !replicas.iter().any(|r| r == replica_region) {
                return Err(AwsError::validation(format!(
                    "Table {name} has no replica in region {replica_region}"
                )));
            }
            replica_deletes.push(replica_region.to_owned());
        }
    }

    // Every change must be a change, allowed by the old key, the quota and the in-flight limit.
    for change in &changes {
        let table = account
            .regions
            .get(&change.region)
            .and_then(|r| r.tables.get(&name))
            .ok_or_else(|| not_found(&name))?;
        ensure_not_updating(table)?;
        // A replica following the table's AWS managed / owned change is left alone if it is there already.
        let follower = change.region != region && change.named.is_none();
        if table.sse == change.target
            && !follower
            && let Some(refusal) = already_encrypted(change, settings)
        {
            return Err(refusal);
        }
        if behaviour.unusable_old_key() == UnusableOldKey::Refused
            && let Some(refusal) = unusable_current_key(account, &change.region, table)
        {
            return Err(refusal);
        }
        if !table.switch_allowed(&change.target, now) {
            return Err(match behaviour.quota_check() {
                QuotaCheck::BeforeKeyValidation => quota_refusal(table, now),
                QuotaCheck::AfterKeyValidation => AwsError::limit_exceeded(SWITCH_QUOTA_MESSAGE),
            });
        }
        let in_flight = account
            .regions
            .get(&change.region)
            .map_or(0, |r| r.in_flight());
        if in_flight >= settings.max_updating_tables_per_region {
            return Err(AwsError::limit_exceeded(format!(
                "Subscriber limit exceeded: Only {} tables can be created, updated, or deleted simultaneously",
                settings.max_updating_tables_per_region
            )));
        }
    }

    // Global tables can't mix AWS managed and customer managed keys across replicas.
    if !replicas.is_empty() || !replica_creates.is_empty() {
        let mut kinds = Vec::new();
        let mut group: Vec<String> = vec![region.to_owned()];
        group.extend(
            replicas
                .iter()
                .filter(|r| !replica_deletes.contains(r))
                .cloned(),
        );
        for r in &group {
            let current = account
                .region(r)
                .tables
                .get(&name)
                .map(|t| t.sse.clone())
                .unwrap_or(Sse::Owned);
            let target = changes
                .iter()
                .find(|c| &c.region == r)
                .map(|c| c.target.clone())
                .unwrap_or(current);
            kinds.push(target);
        }
        kinds.extend(replica_creates.iter().map(|(_, sse)| sse.clone()));
        let managed = kinds
            .iter()
            .any(|k| matches!(k, Sse::Kms { managed: true, .. }));
        let customer = kinds
            .iter()
            .any(|k| matches!(k, Sse::Kms { managed: false, .. }));
        if managed && customer {
            return Err(AwsError::validation(
                "One or more parameter values were invalid: replicas of a global table cannot mix AWS managed and \
                 customer managed KMS keys",
            ));
        }
    }

    if changes.is_empty() && replica_creates.is_empty() && replica_deletes.is_empty() {
        // Other settings (throughput, streams, ...) are accepted and ignored.
        let description =
            describe(account, region, &name, now, settings).ok_or_else(|| not_found(&name))?;
        return Ok(json!({"TableDescription": description}));
    }

    let duration = duration_from_secs(settings.update_seconds);
    for change in changes {
        let unchanged = account
            .regions
            .get(&change.region)
            .and_then(|r| r.tables.get(&name))
            .is_some_and(|t| t.sse == change.target);
        if unchanged && change.region != region && change.named.is_none() {
            continue;
        }
        account
            .region(&change.region)
            .begin_update(&name, change.target, now, duration);
    }
    for (replica_region, sse) in replica_creates {
        let mut replica = Table::new(&name, &caller.account_id, &replica_region, now, sse);
        let mut group: Vec<String> = vec![region.to_owned()];
        group.extend(replicas.iter().cloned());
        replica.replicas = group.clone();
        account
            .region(&replica_region)
            .tables
            .insert(name.clone(), replica);
        for r in group {
            if let Some(t) = account.region(&r).tables.get_mut(&name) {
                t.replicas.push(replica_region.clone());
            }
        }
    }
    for replica_region in replica_deletes {
        account.region(&replica_region).tables.remove(&name);
        for data in account.regions.values_mut() {
            if let Some(t) = data.tables.get_mut(&name) {
                t.replicas.retain(|r| *r != replica_region);
            }
        }
    }
    let description =
        describe(account, region, &name, now, settings).ok_or_else(|| not_found(&name))?;
    Ok(json!({"TableDescription": description}))
}
