//! DynamoDB tables and their encryption at rest, as observed.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::account_id::AccountId;
use crate::region::Region;
use crate::validation::InvalidValue;

/// A DynamoDB table name: 3-255 characters of `[A-Za-z0-9_.-]` (DynamoDB naming rules).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName(String);

impl TableName {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        let len = value.len();
        if !(3..=255).contains(&len) {
            return Err(InvalidValue::new(format!(
                "must be 3 to 255 characters (a DynamoDB table name), got {len}"
            )));
        }
        if let Some(bad) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c)))
        {
            return Err(InvalidValue::new(format!(
                "may contain only letters, digits, '_', '.' and '-' (found {bad:?})"
            )));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A KMS key ARN, `arn:<partition>:kms:<region>:<account>:key/<id>`: the only form tablecrypt records or compares
/// (aliases and ids are resolved first).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyArn {
    arn: String,
    region: Region,
    account_id: AccountId,
}

impl KeyArn {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        let parts: Vec<&str> = value.splitn(6, ':').collect();
        let [arn, partition, service, region, account, resource] = parts.as_slice() else {
            return Err(InvalidValue::new(
                "is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)",
            ));
        };
        if *arn != "arn"
            || *service != "kms"
            || !matches!(*partition, "aws" | "aws-cn" | "aws-us-gov")
        {
            return Err(InvalidValue::new(
                "is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)",
            ));
        }
        let region = Region::parse(region)?;
        let account_id =
            AccountId::parse(account).map_err(|e| InvalidValue::new(format!("account {}", e.0)))?;
        let Some(id) = resource.strip_prefix("key/") else {
            return Err(InvalidValue::new(
                "names an alias or other resource, not key/<id>",
            ));
        };
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(InvalidValue::new("has an invalid key id"));
        }
        Ok(Self {
            arn: value.to_owned(),
            region,
            account_id,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.arn
    }

    pub fn region(&self) -> Region {
        self.region
    }

    pub fn account_id(&self) -> &AccountId {
        &self.account_id
    }
}

impl fmt::Display for KeyArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

/// A reference to a KMS key as a caller may give it: key ARN, key id, alias name (`alias/x`) or alias ARN.
/// Anything but a key ARN must be resolved in an account-region before use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyReference {
    Arn(KeyArn),
    KeyId(String),
    AliasName(String),
    AliasArn {
        arn: String,
        region: Region,
        account_id: AccountId,
    },
}

impl KeyReference {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        if value.is_empty() {
            return Err(InvalidValue::new(
                "is required: a key ARN, key id, alias/name or alias ARN",
            ));
        }
        if value.starts_with("arn:") {
            if value.contains(":alias/") {
                let parts: Vec<&str> = value.splitn(6, ':').collect();
                let [_, _, "kms", region, account, resource] = parts.as_slice() else {
                    return Err(InvalidValue::new("is not a KMS alias ARN"));
                };
                let region = Region::parse(region)?;
                let account_id = AccountId::parse(account)
                    .map_err(|e| InvalidValue::new(format!("account {}", e.0)))?;
                if resource.len() <= "alias/".len() {
                    return Err(InvalidValue::new("has an empty alias name"));
                }
                return Ok(Self::AliasArn {
                    arn: value.to_owned(),
                    region,
                    account_id,
                });
            }
            return KeyArn::parse(value).map(Self::Arn);
        }
        if let Some(name) = value.strip_prefix("alias/") {
            if name.is_empty()
                || name.len() > 250
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c))
            {
                return Err(InvalidValue::new(
                    "alias names are alias/ followed by 1-250 of [A-Za-z0-9/_-]",
                ));
            }
            return Ok(Self::AliasName(value.to_owned()));
        }
        if value.len() == 36 && value.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Ok(Self::KeyId(value.to_owned()));
        }
        Err(InvalidValue::new(format!(
            "{value:?} is not a key ARN, key id (UUID), alias/name or alias ARN"
        )))
    }

    /// The text to hand to KMS.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Arn(arn) => arn.as_str(),
            Self::KeyId(s) | Self::AliasName(s) => s,
            Self::AliasArn { arn, .. } => arn,
        }
    }

    /// The region and account an ARN (key or alias) pins the key to; ids and alias names resolve anywhere.
    pub fn location(&self) -> Option<(Region, &AccountId)> {
        match self {
            Self::Arn(arn) => Some((arn.region(), arn.account_id())),
            Self::AliasArn {
                region, account_id, ..
            } => Some((*region, account_id)),
            Self::KeyId(_) | Self::AliasName(_) => None,
        }
    }
}

/// The three ways a table can be encrypted at rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncryptionMode {
    /// The AWS owned key: DescribeTable shows no SSEDescription (or status DISABLED).
    AwsOwned,
    /// The AWS managed key `alias/aws/dynamodb`.
    AwsManaged,
    /// A customer managed KMS key.
    CustomerManaged,
}

impl EncryptionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwsOwned => "AWS_OWNED",
            Self::AwsManaged => "AWS_MANAGED",
            Self::CustomerManaged => "CUSTOMER_MANAGED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "AWS_OWNED" => Some(Self::AwsOwned),
            "AWS_MANAGED" => Some(Self::AwsManaged),
            "CUSTOMER_MANAGED" => Some(Self::CustomerManaged),
            _ => None,
        }
    }
}

/// One replica of a global table, as seen from the table's own region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaEncryption {
    pub region: String,
    pub status: String,
    /// The replica's key ARN; absent for the AWS owned key.
    pub key_arn: Option<String>,
}

/// A table's encryption as DescribeTable reported it at `observed_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEncryption {
    pub account_id: AccountId,
    pub region: Region,
    pub table_name: TableName,
    pub mode: EncryptionMode,
    /// The key in use; absent for the AWS owned key.
    pub key_arn: Option<String>,
    /// SSEDescription.Status (ENABLED, UPDATING, ...), or empty for the AWS owned key.
    pub sse_status: String,
    /// TableStatus (ACTIVE, UPDATING, INACCESSIBLE_ENCRYPTION_CREDENTIALS, ...).
    pub table_status: String,
    /// When the table lost access to its key (SSEDescription.InaccessibleEncryptionDateTime).
    pub inaccessible_since: Option<DateTime<Utc>>,
    pub replicas: Vec<ReplicaEncryption>,
    pub observed_at: DateTime<Utc>,
    /// The table's tags (ListTagsOfResource), when this observation read them: a scan does, a live describe
    /// does not, and a member role without `dynamodb:ListTagsOfResource` cannot. `None` keeps what was known.
    pub tags: Option<TableTags>,
}

/// Keeps one row per table: a global table is observed in every region it has a replica in, and counts once, in
/// the first of its regions listed (`table` gives a row's observation; rows without one are all kept). Planning
/// makes it one item (two would change it twice, racing each other), key usage and totals count it once.
pub fn one_per_global_table<T>(
    rows: Vec<T>,
    table: impl Fn(&T) -> Option<&TableEncryption>,
) -> Vec<T> {
    let mut covered: std::collections::HashSet<(String, String, String)> =
        std::collections::HashSet::new();
    rows.into_iter()
        .filter(|row| {
            let Some(table) = table(row) else {
                return true;
            };
            let id = |region: &str| {
                (
                    table.account_id.to_string(),
                    table.table_name.to_string(),
                    region.to_owned(),
                )
            };
            if covered.contains(&id(table.region.as_str())) {
                return false;
            }
            covered.insert(id(table.region.as_str()));
            covered.extend(table.replicas.iter().map(|r| id(&r.region)));
            true
        })
        .collect()
}

/// A table's tags, key to value.
pub type TableTags = std::collections::BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_global_table_counts_once_and_regional_namesakes_stay() {
        let row = |region: &str, replicas: &[&str]| TableEncryption {
            account_id: AccountId::parse("111111111111").expect("id"),
            region: Region::parse(region).expect("region"),
            table_name: TableName::parse("orders").expect("name"),
            mode: EncryptionMode::AwsOwned,
            key_arn: None,
            sse_status: String::new(),
            table_status: "ACTIVE".into(),
            inaccessible_since: None,
            replicas: replicas
                .iter()
                .map(|r| ReplicaEncryption {
                    region: (*r).to_owned(),
                    status: "ACTIVE".into(),
                    key_arn: None,
                })
                .collect(),
            observed_at: DateTime::UNIX_EPOCH,
            tags: None,
        };
        let rows = vec![
            row("eu-west-1", &["us-east-1"]),
            row("us-east-1", &["eu-west-1"]),
            // The same name in a third region, not a replica: another table.
            row("ap-south-1", &[]),
        ];
        let kept = one_per_global_table(rows, |t| Some(t));
        let regions: Vec<&str> = kept.iter().map(|t| t.region.as_str()).collect();
        assert_eq!(regions, ["eu-west-1", "ap-south-1"]);
    }

    #[test]
    fn key_references() {
        let arn = "arn:aws:kms:eu-west-1:111111111111:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        assert!(matches!(KeyReference::parse(arn), Ok(KeyReference::Arn(_))));
        assert!(matches!(
            KeyReference::parse("alias/payments"),
            Ok(KeyReference::AliasName(_))
        ));
        assert!(matches!(
            KeyReference::parse("arn:aws:kms:eu-west-1:111111111111:alias/payments"),
            Ok(KeyReference::AliasArn { .. })
        ));
        assert!(matches!(
            KeyReference::parse("1234abcd-12ab-34cd-56ef-1234567890ab"),
            Ok(KeyReference::KeyId(_))
        ));
        for bad in [
            "",
            "payments",
            "alias/",
            "arn:aws:kms:mars-1:111111111111:key/x",
            "arn:aws:s3:::b",
        ] {
            assert!(KeyReference::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn table_names() {
        assert!(TableName::parse("orders-2024.v1_x").is_ok());
        assert!(TableName::parse("ab").is_err());
        assert!(TableName::parse("has space").is_err());
    }
}
