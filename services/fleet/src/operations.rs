//! The AWS calls tablecrypt makes, each returning domain types or a classified [`FleetError`].

use aws_sdk_dynamodb::types::{SseStatus, TableDescription};
use chrono::{DateTime, Utc};
use tablecrypt_core::{
    EncryptionMode, FailureKind, ReplicaEncryption, TableEncryption, TableName, TableTags,
};

use crate::clients::{AccountAccess, Fleet};
use crate::error::{FleetError, classify};

/// Who AWS says we are after AssumeRole.
#[derive(Debug, Clone)]
pub struct CallerIdentity {
    pub arn: String,
    pub account: String,
}

/// The alias of the AWS managed key for DynamoDB: a KMS key behind it means AWS_MANAGED, not CUSTOMER_MANAGED.
const MANAGED_ALIAS: &str = "alias/aws/dynamodb";

fn to_chrono(time: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.secs(), time.subsec_nanos())
}

impl Fleet {
    /// STS GetCallerIdentity with the assumed role: proves AssumeRole works.
    #[tracing::instrument(skip_all, fields(account_id = %access.account_id, region = %region))]
    pub async fn caller_identity(
        &self,
        access: &AccountAccess,
        region: tablecrypt_core::Region,
    ) -> Result<CallerIdentity, FleetError> {
        let clients = self.clients(access, region).await;
        let out = clients
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| self.expired_or(access, region, classify(&e)))?;
        Ok(CallerIdentity {
            arn: out.arn.unwrap_or_default(),
            account: out.account.unwrap_or_default(),
        })
    }

    /// Every table name in the account-region (ListTables, all pages).
    #[tracing::instrument(skip_all, fields(account_id = %access.account_id, region = %region))]
    pub async fn list_tables(
        &self,
        access: &AccountAccess,
        region: tablecrypt_core::Region,
    ) -> Result<Vec<TableName>, FleetError> {
        let clients = self.clients(access, region).await;
        let mut names = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let out = clients
                .dynamodb
                .list_tables()
                .limit(100)
                .set_exclusive_start_table_name(start.take())
                .send()
                .await
                .map_err(|e| self.expired_or(access, region, classify(&e)))?;
            for name in out.table_names.unwrap_or_default() {
                match TableName::parse(&name) {
                    Ok(name) => names.push(name),
                    Err(e) => {
                        tracing::warn!(table = %name, error = %e, "skipping a table name AWS should not return")
                    }
                }
            }
            match out.last_evaluated_table_name {
                Some(last) => start = Some(last),
                None => return Ok(names),
            }
        }
    }

    /// The table's tags (ListTagsOfResource, all pages). `Ok(None)` when the member role may not list them: tags
    /// are optional knowledge, and an older member role without the permission still scans.
    #[tracing::instrument(skip_all, fields(account_id = %access.account_id, region = %region, table = %table))]
    pub async fn table_tags(
        &self,
        access: &AccountAccess,
        region: tablecrypt_core::Region,
        table: &TableName,
    ) -> Result<Option<TableTags>, FleetError> {
        let clients = self.clients(access, region).await;
        let arn = format!(
            "arn:{}:dynamodb:{region}:{}:table/{table}",
            region.partition(),
            access.account_id
        );
        let mut tags = TableTags::new();
        let mut next: Option<String> = None;
        loop {
            let sent = clients
                .dynamodb
                .list_tags_of_resource()
                .resource_arn(&arn)
                .set_next_token(next.take())
                .send()
                .await;
            let out = match sent {
                Ok(out) => out,
                Err(e) => {
                    let error = self.expired_or(access, region, classify(&e));
                    if error.kind == FailureKind::AccessDenied {
                        return Ok(None);
                    }
                    return Err(error);
                }
            };
            for tag in out.tags.unwrap_or_default() {
                tags.insert(tag.key, tag.value);
            }
            match out.next_token {
                Some(token) if !token.is_empty() => next = Some(token),
                _ => return Ok(Some(tags)),
            }
        }
    }

    /// DescribeTable, reduced to its encryption. The AWS managed key is told apart from customer keys by asking
    /// KMS which key `alias/aws/dynamodb` names in that account-region (cached per client set).
    #[tracing::instrument(skip_all, fields(account_id = %access.account_id, region = %region, table = %table))]
    pub async fn describe_table(
        &self,
        access: &AccountAccess,
        region: tablecrypt_core::Region,
        table: &TableName,
    ) -> Result<TableEncryption, FleetError> {
        self.describe(access, region, table, true).await
    }

    /// DescribeTable sent once, without the SDK's retries: for the change workers, whose polls take a rate slot
    /// each and are retried by the worker with a fresh one.
    #[tracing::instrument(skip_all, fields(account_id = %access.account_id, region = %region, table = %table))]
    pub async fn describe_table_once(
        &self,
        access: &AccountAccess,
        region: tablecrypt_core::Region,
        table: &TableName,
    ) -> Result<TableEncryption, FleetError> {
        self.describe(access, region, table, false).await
    }

    async fn describe(
        &self,
        access: &AccountAccess,
        region: tablecrypt_core::Region,
        table: &TableName,
        sdk_retries: bool,
    ) -> Result<TableEncryption, FleetError> {
        let clients = self.clients(access, region).await;
        let call = clients.dynamodb.describe_table().table_name(table.as_str());
        let sent = if sdk_retries {
            call.send().await
        } else {
            call.customize()
                .config_override(crate::changes::without_sdk_retries())
                .send()
                .await
        };
        let out = sent.map_err(|e| self.expired_or(access, region, classify(&e)))?;
        let description = out.table.ok_or_else(|| {
            FleetError::new(FailureKind::Unknown, "DescribeTable returned no table")
        })?;
        let managed_key = self.managed_key_arn(access, region).await?;
        Ok(encryption_of(
            access,
            region,
            table,
            &description,
            managed_key.as_deref(),
        ))
    }

    /// The ARN of the AWS managed key for DynamoDB in the account-region, if it exists yet.
    pub async fn managed_key_arn(
        &self,
        access: &AccountAccess,
        region: tablecrypt_core::Region,
    ) -> Result<Option<String>, FleetError> {
        let clients = self.clients(access, region).await;
        if let Some(arn) = clients.managed_key_arn.get() {
            return Ok(Some(arn.clone()));
        }
        match clients
            .kms
            .describe_key()
            .key_id(MANAGED_ALIAS)
            .send()
            .await
        {
            Ok(out) => {
                let arn = out.key_metadata.and_then(|m| m.arn);
                if let Some(arn) = &arn {
                    let _ = clients.managed_key_arn.set(arn.clone());
                }
                Ok(arn)
            }
            Err(e) => {
                let error = self.expired_or(access, region, classify(&e));
                if error.kind == FailureKind::NotFound {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
        }
    }
}

/// Maps a TableDescription to the domain's view of its encryption.
pub fn encryption_of(
    access: &AccountAccess,
    region: tablecrypt_core::Region,
    table: &TableName,
    description: &TableDescription,
    managed_key_arn: Option<&str>,
) -> TableEncryption {
    let sse = description.sse_description.as_ref();
    let key_arn = sse.and_then(|s| s.kms_master_key_arn.clone());
    let enabled = sse.is_some_and(|s| {
        !matches!(
            s.status,
            Some(SseStatus::Disabled) | Some(SseStatus::Disabling)
        ) || s.kms_master_key_arn.is_some()
    });
    let mode = match (&key_arn, enabled) {
        (Some(arn), true) if Some(arn.as_str()) == managed_key_arn => EncryptionMode::AwsManaged,
        (Some(_), true) => EncryptionMode::CustomerManaged,
        _ => EncryptionMode::AwsOwned,
    };
    let replicas = description
        .replicas()
        .iter()
        .map(|r| ReplicaEncryption {
            region: r.region_name().unwrap_or_default().to_owned(),
            status: r
                .replica_status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            key_arn: r.kms_master_key_id().map(str::to_owned),
        })
        .collect();
    TableEncryption {
        account_id: access.account_id.clone(),
        region,
        table_name: table.clone(),
        mode,
        key_arn: if mode == EncryptionMode::AwsOwned {
            None
        } else {
            key_arn
        },
        sse_status: sse
            .and_then(|s| s.status.as_ref())
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        table_status: description
            .table_status
            .as_ref()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        inaccessible_since: sse
            .and_then(|s| s.inaccessible_encryption_date_time.as_ref())
            .and_then(to_chrono),
        replicas,
        observed_at: Utc::now(),
        tags: None,
    }
}

impl Fleet {
    /// The account-region's KMS aliases that point at a key: (alias name, key ARN). AWS's own aliases without a
    /// key yet (alias/aws/... before first use) are left out.
    #[tracing::instrument(skip_all, fields(account_id = %access.account_id, region = %region))]
    pub async fn list_aliases(
        &self,
        access: &AccountAccess,
        region: tablecrypt_core::Region,
    ) -> Result<Vec<(String, String)>, FleetError> {
        let clients = self.clients(access, region).await;
        let aliases: Vec<aws_sdk_kms::types::AliasListEntry> = clients
            .kms
            .list_aliases()
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| self.expired_or(access, region, classify(&e)))?;
        Ok(aliases
            .into_iter()
            .filter_map(|alias| {
                // arn:<partition>:kms:<region>:<account>:alias/<name> -> ...:key/<target key id>
                let (prefix, _) = alias.alias_arn()?.rsplit_once(":alias/")?;
                let key_arn = format!("{prefix}:key/{}", alias.target_key_id()?);
                Some((alias.alias_name?, key_arn))
            })
            .collect())
    }

    /// Resolves a key reference (id, ARN, alias name or alias ARN) to its key ARN with KMS DescribeKey in the
    /// account-region.
    #[tracing::instrument(skip_all, fields(account_id = %access.account_id, region = %region, key = reference))]
    pub async fn resolve_key(
        &self,
        access: &AccountAccess,
        region: tablecrypt_core::Region,
        reference: &str,
    ) -> Result<String, FleetError> {
        let clients = self.clients(access, region).await;
        let out = clients
            .kms
            .describe_key()
            .key_id(reference)
            .send()
            .await
            .map_err(|e| self.expired_or(access, region, classify(&e)))?;
        out.key_metadata
            .and_then(|m| m.arn)
            .ok_or_else(|| FleetError::new(FailureKind::Unknown, "DescribeKey returned no key ARN"))
    }
}
