//! DynamoDB tables: encryption state, asynchronous updates, the switch quota, and how DescribeTable shows them.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use super::{AccountData, KeyState, RegionData};
use crate::aws::AwsError;
use crate::behaviour::{ChangeTableStatus, SseStatusNames};
use crate::fleet_file::Settings;

/// Encryption at rest of one table (or replica).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// The AWS owned key: DescribeTable shows no SSEDescription.
    Owned,
    /// A KMS key: the AWS managed key (`managed`) or a customer managed key, by ARN.
    Kms { key_arn: String, managed: bool },
}

/// An UpdateTable in flight.
#[derive(Debug, Clone)]
pub struct Pending {
    pub target: Sse,
    /// When UpdateTable accepted it.
    pub started: DateTime<Utc>,
    pub completes_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    pub arn: String,
    pub id: String,
    pub created: DateTime<Utc>,
    pub key_schema: Value,
    pub attribute_definitions: Value,
    pub billing_mode: String,
    pub sse: Sse,
    pub pending: Option<Pending>,
    /// When each encryption change was accepted (the switch quota looks back 24 h).
    pub switches: Vec<DateTime<Utc>>,
    pub tags: BTreeMap<String, String>,
    /// Other regions holding replicas of this (global) table.
    pub replicas: Vec<String>,
    /// `ARCHIVING` or `ARCHIVED` (set through the admin API): shown as the TableStatus, and no update is accepted.
    pub archival: Option<String>,
}

/// AWS's switch quota (DynamoDB service quotas, "encryption at rest"): up to 4 changes in any rolling 24 hours,
/// then one more only if there was none in the past 6 hours. Switching to the AWS owned key is always allowed.
pub const SWITCHES_PER_DAY: usize = 4;
pub const QUIET_PERIOD_HOURS: i64 = 6;

/// The message AWS returns when the switch quota is exhausted.
pub const SWITCH_QUOTA_MESSAGE: &str = "Subscriber limit exceeded: Encryption mode changes are limited in the 24h \
     window. Please try again after the 24h window has passed, or after 6 hours since the last change.";

impl Table {
    pub fn new(name: &str, account_id: &str, region: &str, now: DateTime<Utc>, sse: Sse) -> Self {
        Self {
            name: name.to_owned(),
            arn: format!(
                "arn:{}:dynamodb:{region}:{account_id}:table/{name}",
                super::partition_of(region)
            ),
            id: uuid::Uuid::new_v4().to_string(),
            created: now,
            key_schema: json!([{"AttributeName": "pk", "KeyType": "HASH"}]),
            attribute_definitions: json!([{"AttributeName": "pk", "AttributeType": "S"}]),
            billing_mode: "PAY_PER_REQUEST".to_owned(),
            sse,
            pending: None,
            switches: Vec::new(),
            tags: BTreeMap::new(),
            replicas: Vec::new(),
            archival: None,
        }
    }

    /// Whether another encryption change is allowed now (switching to the owned key always is).
    pub fn switch_allowed(&self, target: &Sse, now: DateTime<Utc>) -> bool {
        if *target == Sse::Owned {
            return true;
        }
        let day_ago = now - Duration::hours(24);
        let recent = self.switches.iter().filter(|t| **t > day_ago).count();
        let quiet = self
            .switches
            .iter()
            .all(|t| *t <= now - Duration::hours(QUIET_PERIOD_HOURS));
        recent < SWITCHES_PER_DAY || quiet
    }

    /// When a change to a KMS key is next allowed, if not now: the earlier of the oldest recent switch leaving
    /// the 24 h window and 6 h after the latest.
    pub fn next_switch_allowed(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let any_kms = Sse::Kms {
            key_arn: String::new(),
            managed: false,
        };
        if self.switch_allowed(&any_kms, now) {
            return None;
        }
        let day_ago = now - Duration::hours(24);
        let oldest = self.switches.iter().filter(|t| **t > day_ago).min()?;
        let latest = self.switches.iter().max()?;
        Some((*oldest + Duration::hours(24)).min(*latest + Duration::hours(QUIET_PERIOD_HOURS)))
    }
}

impl RegionData {
    /// Completes every update due by `now`.
    pub fn settle(&mut self, now: DateTime<Utc>) {
        while let Some((at, _)) = self.due.first() {
            if *at > now {
                break;
            }
            let Some((_, name)) = self.due.pop_first() else {
                break;
            };
            if let Some(table) = self.tables.get_mut(&name)
                && let Some(pending) = table.pending.take()
            {
                table.sse = pending.target;
            }
        }
    }

    /// Tables in UPDATING here (after settling).
    pub fn in_flight(&self) -> usize {
        self.due.len()
    }

    /// Starts an update of `name` to `target`, done at `now + duration`.
    pub fn begin_update(
        &mut self,
        name: &str,
        target: Sse,
        now: DateTime<Utc>,
        duration: Duration,
    ) {
        if let Some(table) = self.tables.get_mut(name) {
            let completes_at = now + duration;
            table.switches.retain(|t| *t > now - Duration::hours(24));
            table.switches.push(now);
            table.pending = Some(Pending {
                target,
                started: now,
                completes_at,
            });
            self.due.insert((completes_at, name.to_owned()));
        }
    }

    /// When the table's KMS key became unusable long enough ago to make the table inaccessible.
    fn inaccessible_since(&self, sse: &Sse, settings: &Settings) -> Option<DateTime<Utc>> {
        let Sse::Kms { key_arn, .. } = sse else {
            return None;
        };
        let id = key_arn.rsplit('/').next()?;
        let key = self.keys.get(id)?;
        if key.state == KeyState::Enabled {
            return None;
        }
        let since = key.unusable_since?;
        Some(since + duration_from_secs(settings.inaccessible_after_seconds))
    }
}

pub fn duration_from_secs(seconds: f64) -> Duration {
    Duration::milliseconds((seconds * 1000.0).round() as i64)
}

fn epoch(time: DateTime<Utc>) -> f64 {
    time.timestamp_millis() as f64 / 1000.0
}

/// The change in flight, once DescribeTable shows it: for `old_key_visible_seconds` after the call AWS still shows
/// the old key, Status ENABLED, as if nothing had happened.
fn visible_pending<'a>(
    table: &'a Table,
    now: DateTime<Utc>,
    settings: &Settings,
) -> Option<&'a Pending> {
    let pending = table.pending.as_ref()?;
    let hidden_until =
        pending.started + duration_from_secs(settings.behaviour.old_key_visible_seconds());
    (now >= hidden_until).then_some(pending)
}

/// The `TableStatus` and `SSEDescription` of one table (or replica) as DescribeTable reports them.
fn status_and_sse(
    region: &RegionData,
    table: &Table,
    now: DateTime<Utc>,
    settings: &Settings,
) -> (&'static str, Option<Value>) {
    let behaviour = &settings.behaviour;
    if let Some(pending) = visible_pending(table, now, settings) {
        let status = match (behaviour.sse_status_names(), &table.sse, &pending.target) {
            (SseStatusNames::EnablingDisabling, Sse::Owned, Sse::Kms { .. }) => "ENABLING",
            (SseStatusNames::EnablingDisabling, Sse::Kms { .. }, Sse::Owned) => "DISABLING",
            _ => "UPDATING",
        };
        let shown = match (&pending.target, behaviour.sse_status_names()) {
            (Sse::Kms { .. }, _) => Some(&pending.target),
            // Going to the owned key: observed as {Status: UPDATING} with no key.
            (Sse::Owned, SseStatusNames::UpdatingOnly) => None,
            (Sse::Owned, SseStatusNames::EnablingDisabling) => Some(&table.sse),
        };
        let mut sse = json!({"Status": status, "SSEType": "KMS"});
        if let Some(Sse::Kms { key_arn, .. }) = shown {
            sse["KMSMasterKeyArn"] = json!(key_arn);
        }
        let table_status = match behaviour.sse_change_table_status() {
            ChangeTableStatus::Updating => "UPDATING",
            ChangeTableStatus::Active => "ACTIVE",
        };
        return (table_status, Some(sse));
    }
    match &table.sse {
        Sse::Owned => ("ACTIVE", None),
        Sse::Kms { key_arn, .. } => {
            let mut sse =
                json!({"Status": "ENABLED", "SSEType": "KMS", "KMSMasterKeyArn": key_arn});
            match region.inaccessible_since(&table.sse, settings) {
                Some(since) if since <= now => {
                    sse["InaccessibleEncryptionDateTime"] = json!(epoch(since));
                    ("INACCESSIBLE_ENCRYPTION_CREDENTIALS", Some(sse))
                }
                _ => ("ACTIVE", Some(sse)),
            }
        }
    }
}

/// DescribeTable's `Table` for `name` in `region` (already settled), with its replicas.
pub fn describe(
    account: &AccountData,
    region: &str,
    name: &str,
    now: DateTime<Utc>,
    settings: &Settings,
) -> Option<Value> {
    let region_data = account.regions.get(region)?;
    let table = region_data.tables.get(name)?;
    let (status, sse) = status_and_sse(region_data, table, now, settings);
    let mut out = json!({
        "TableName": table.name,
        "TableArn": table.arn,
        "TableId": table.id,
        "TableStatus": status,
        "CreationDateTime": epoch(table.created),
        "KeySchema": table.key_schema,
        "AttributeDefinitions": table.attribute_definitions,
        "BillingModeSummary": {"BillingMode": table.billing_mode},
        "ItemCount": 0,
        "TableSizeBytes": 0,
        "DeletionProtectionEnabled": false,
    });
    if let Some(sse) = sse {
        out["SSEDescription"] = sse;
    }
    if let Some(state) = &table.archival {
        out["TableStatus"] = json!(state);
        out["ArchivalSummary"] = json!({
            "ArchivalDateTime": epoch(now),
            "ArchivalReason": "INACCESSIBLE_ENCRYPTION_CREDENTIALS",
            "ArchivalBackupArn": format!("{}/backup/01700000000000-archival", table.arn),
        });
    }
    if !table.replicas.is_empty() {
        out["GlobalTableVersion"] = json!("2019.11.21");
        let replicas: Vec<Value> = table
            .replicas
            .iter()
            .filter_map(|replica_region| {
                let data = account.regions.get(replica_region)?;
                let replica = data.tables.get(name)?;
                let (replica_status, _) = status_and_sse(data, replica, now, settings);
                let mut r = json!({"RegionName": replica_region, "ReplicaStatus": match replica_status {
                    "INACCESSIBLE_ENCRYPTION_CREDENTIALS" => "INACCESSIBLE_ENCRYPTION_CREDENTIALS",
                    "UPDATING" => "UPDATING",
                    _ => "ACTIVE",
                }});
                let sse = visible_pending(replica, now, settings)
                    .map(|p| &p.target)
                    .unwrap_or(&replica.sse);
                if let Sse::Kms { key_arn, .. } = sse {
                    r["KMSMasterKeyId"] = json!(key_arn);
                }
                Some(r)
            })
            .collect();
        out["Replicas"] = json!(replicas);
    }
    Some(out)
}

/// Refuses a change in flight.
pub fn ensure_not_updating(table: &Table) -> Result<(), AwsError> {
    if table.pending.is_some() {
        return Err(AwsError::resource_in_use(format!(
            "Attempt to change a resource which is still in use: Table is being updated: {}",
            table.name
        )));
    }
    Ok(())
}
