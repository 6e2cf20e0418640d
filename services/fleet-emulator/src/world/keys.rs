//! KMS keys and aliases of one account-region, and how DynamoDB validates a key it is given.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{RegionData, partition_of};
use crate::aws::AwsError;
use crate::behaviour::KeyRefusal;

/// The alias of the AWS managed key for DynamoDB.
pub const DYNAMODB_MANAGED_ALIAS: &str = "alias/aws/dynamodb";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
}

impl KeyState {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "Enabled" => Some(Self::Enabled),
            "Disabled" => Some(Self::Disabled),
            "PendingDeletion" => Some(Self::PendingDeletion),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "Enabled",
            Self::Disabled => "Disabled",
            Self::PendingDeletion => "PendingDeletion",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyManager {
    Customer,
    Aws,
}

#[derive(Debug, Clone)]
pub struct Key {
    pub id: String,
    pub arn: String,
    pub account_id: String,
    pub spec: String,
    pub usage: String,
    pub state: KeyState,
    /// When the key last left the Enabled state (drives INACCESSIBLE_ENCRYPTION_CREDENTIALS).
    pub unusable_since: Option<DateTime<Utc>>,
    pub deletion_date: Option<DateTime<Utc>>,
    pub manager: KeyManager,
    pub description: String,
    pub created: DateTime<Utc>,
}

/// Symmetric encryption keys; everything else (RSA_*, ECC_*, HMAC_*, ML_DSA_*) cannot encrypt a table.
pub const SYMMETRIC_SPEC: &str = "SYMMETRIC_DEFAULT";

/// Key specs CreateKey accepts, from the KMS API reference.
const KNOWN_SPECS: &[&str] = &[
    "SYMMETRIC_DEFAULT",
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "HMAC_224",
    "HMAC_256",
    "HMAC_384",
    "HMAC_512",
    "SM2",
];

impl Key {
    pub fn new(
        account_id: &str,
        region: &str,
        id: Option<String>,
        spec: &str,
        manager: KeyManager,
        description: String,
        now: DateTime<Utc>,
    ) -> Result<Self, AwsError> {
        if !KNOWN_SPECS.contains(&spec) {
            return Err(AwsError::validation(format!(
                "1 validation error detected: Value '{spec}' at 'keySpec' failed to satisfy constraint: Member must \
                 satisfy enum value set: [{}]",
                KNOWN_SPECS.join(", ")
            )));
        }
        Ok(Self::build(
            account_id,
            region,
            id,
            spec,
            manager,
            description,
            now,
        ))
    }

    /// Builds a key of a spec already known to be valid.
    fn build(
        account_id: &str,
        region: &str,
        id: Option<String>,
        spec: &str,
        manager: KeyManager,
        description: String,
        now: DateTime<Utc>,
    ) -> Self {
        let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let usage = if spec == SYMMETRIC_SPEC {
            "ENCRYPT_DECRYPT"
        } else if spec.starts_with("HMAC") {
            "GENERATE_VERIFY_MAC"
        } else {
            "SIGN_VERIFY"
        };
        Self {
            arn: format!(
                "arn:{}:kms:{region}:{account_id}:key/{id}",
                partition_of(region)
            ),
            id,
            account_id: account_id.to_owned(),
            spec: spec.to_owned(),
            usage: usage.to_owned(),
            state: KeyState::Enabled,
            unusable_since: None,
            deletion_date: None,
            manager,
            description,
            created: now,
        }
    }

    pub fn metadata(&self) -> Value {
        let mut meta = json!({
            "AWSAccountId": self.account_id,
            "KeyId": self.id,
            "Arn": self.arn,
            "CreationDate": self.created.timestamp_millis() as f64 / 1000.0,
            "Enabled": self.state == KeyState::Enabled,
            "Description": self.description,
            "KeyUsage": self.usage,
            "KeyState": self.state.as_str(),
            "Origin": "AWS_KMS",
            "KeyManager": match self.manager { KeyManager::Customer => "CUSTOMER", KeyManager::Aws => "AWS" },
            "CustomerMasterKeySpec": self.spec,
            "KeySpec": self.spec,
            "MultiRegion": false,
        });
        if self.spec == SYMMETRIC_SPEC {
            meta["EncryptionAlgorithms"] = json!(["SYMMETRIC_DEFAULT"]);
        }
        if let Some(date) = self.deletion_date {
            meta["DeletionDate"] = json!(date.timestamp_millis() as f64 / 1000.0);
        }
        meta
    }

    /// Moves to `state`, remembering when the key stopped being usable.
    pub fn set_state(&mut self, state: KeyState, now: DateTime<Utc>) {
        if state == KeyState::Enabled {
            self.unusable_since = None;
            self.deletion_date = None;
        } else if self.state == KeyState::Enabled {
            self.unusable_since = Some(now);
        }
        self.state = state;
    }
}

/// What a key reference names, once parsed: an ARN pins account and region.
enum KeyRef<'a> {
    KeyId(&'a str),
    Alias(&'a str),
}

impl RegionData {
    /// Finds a key by id, key ARN, alias name or alias ARN, as KMS does, within `account_id`/`region`.
    /// A reference to another account or region is NotFound here; DynamoDB reports those more precisely.
    pub fn find_key(
        &mut self,
        account_id: &str,
        region: &str,
        reference: &str,
        now: DateTime<Utc>,
    ) -> Option<&mut Key> {
        let key_ref = if let Some(rest) = reference.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            let [_partition, "kms", arn_region, arn_account, resource] = parts.as_slice() else {
                return None;
            };
            if *arn_region != region || *arn_account != account_id {
                return None;
            }
            if let Some(id) = resource.strip_prefix("key/") {
                KeyRef::KeyId(id)
            } else if resource.starts_with("alias/") {
                KeyRef::Alias(resource)
            } else {
                return None;
            }
        } else if reference.starts_with("alias/") {
            KeyRef::Alias(reference)
        } else {
            KeyRef::KeyId(reference)
        };
        let id = match key_ref {
            KeyRef::KeyId(id) => id.to_owned(),
            KeyRef::Alias(DYNAMODB_MANAGED_ALIAS) => {
                self.managed_key(account_id, region, now).id.clone()
            }
            KeyRef::Alias(alias) => self.aliases.get(alias)?.0.clone(),
        };
        self.keys.get_mut(&id)
    }

    /// The AWS managed key for DynamoDB, created on first use as AWS does.
    pub fn managed_key(&mut self, account_id: &str, region: &str, now: DateTime<Utc>) -> &mut Key {
        let (id, _) = self
            .aliases
            .entry(DYNAMODB_MANAGED_ALIAS.to_owned())
            .or_insert_with(|| (uuid::Uuid::new_v4().to_string(), now))
            .clone();
        self.keys.entry(id.clone()).or_insert_with(|| {
            Key::build(
                account_id,
                region,
                Some(id),
                SYMMETRIC_SPEC,
                KeyManager::Aws,
                "Default key that protects my DynamoDB data when no other key is defined"
                    .to_owned(),
                now,
            )
        })
    }
}

/// Why DynamoDB refuses a KMSMasterKeyId, checked in AWS's order: where the key is, whether it exists, its spec,
/// its state. Returns the key's ARN and whether it is the AWS managed key.
pub fn dynamodb_key_check(
    region_data: &mut RegionData,
    account_id: &str,
    region: &str,
    reference: &str,
    now: DateTime<Utc>,
    refusal: KeyRefusal,
) -> Result<(String, KeyManager), AwsError> {
    if let Some(rest) = reference.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        if let [_partition, "kms", arn_region, arn_account, _resource] = parts.as_slice() {
            if *arn_account != account_id {
                return Err(match refusal {
                    KeyRefusal::Validation => AwsError::validation(format!(
                        "KMSMasterKeyId {reference} belongs to account {arn_account}; keys of another account are \
                         not supported for table {account_id} encryption"
                    )),
                    KeyRefusal::AsObserved => AwsError::new(
                        400,
                        "AccessDeniedException",
                        format!(
                            "User: arn:aws:sts::{account_id}:assumed-role is not authorized to perform: \
                             kms:CreateGrant on resource: {reference} because no resource-based policy allows the \
                             kms:CreateGrant action"
                        ),
                    ),
                });
            }
            if *arn_region != region {
                return Err(AwsError::validation(format!(
                    "KMSMasterKeyId {reference} is in region {arn_region}; the key must be in the table's region \
                     {region}"
                )));
            }
        } else {
            return Err(AwsError::validation(format!(
                "KMSMasterKeyId {reference} is not a valid KMS key ARN"
            )));
        }
    }
    let Some(key) = region_data.find_key(account_id, region, reference, now) else {
        return Err(AwsError::validation(format!(
            "KMSMasterKeyId {reference} does not exist in account {account_id} region {region}"
        )));
    };
    if key.spec != SYMMETRIC_SPEC || key.usage != "ENCRYPT_DECRYPT" {
        if refusal == KeyRefusal::AsObserved {
            // Observed: DynamoDB's grant on the key fails inside AWS, and the caller sees a 500.
            return Err(AwsError::internal("Internal server error"));
        }
        return Err(AwsError::validation(format!(
            "KMS key {} is asymmetric ({}); DynamoDB tables need a symmetric encryption key (SYMMETRIC_DEFAULT)",
            key.arn, key.spec
        )));
    }
    match key.state {
        KeyState::Enabled => Ok((key.arn.clone(), key.manager)),
        KeyState::Disabled => Err(AwsError::validation(format!(
            "KMS key {} is disabled",
            key.arn
        ))),
        KeyState::PendingDeletion => Err(AwsError::validation(format!(
            "KMS key {} is pending deletion",
            key.arn
        ))),
    }
}
