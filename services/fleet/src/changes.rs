//! The AWS calls that change encryption: KMS DescribeKey (is the target key usable?) and DynamoDB UpdateTable.

use aws_sdk_dynamodb::types::{
    ReplicationGroupUpdate, SseSpecification, SseType, UpdateReplicationGroupMemberAction,
};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use tablecrypt_core::change::apply::Call;
use tablecrypt_core::change::{ApplyTarget, KeyInfo};
use tablecrypt_core::{EncryptionMode, FailureKind, Region, TableName};

use crate::clients::{AccountAccess, Fleet};
use crate::error::{FleetError, classify};

/// How an UpdateTable ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Accepted: the table is now UPDATING towards the target.
    Started,
    /// AWS says the table already has this encryption ("already encrypted with given KMSMasterKeyId").
    AlreadyEncrypted,
}

/// DynamoDB settings for a call that tablecrypt paces and retries itself (UpdateTable, the workers' polls): the
/// SDK's own retries would re-send it behind the rate limit (the standard mode tries 3 times).
pub(crate) fn without_sdk_retries() -> aws_sdk_dynamodb::config::Builder {
    aws_sdk_dynamodb::config::Builder::default()
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
}

/// The LimitExceededException text DynamoDB uses for the per-table switch quota, as opposed to the per
/// account-region limit on tables in flight.
const SWITCH_QUOTA_TEXT: &str = "Encryption mode changes are limited";

/// Whether a quota error is the per-table switch quota (defer for hours) rather than the in-flight limit
/// (defer for seconds).
pub fn is_switch_quota(error: &FleetError) -> bool {
    error.kind == FailureKind::QuotaExceeded && error.message.contains(SWITCH_QUOTA_TEXT)
}

impl Fleet {
    /// KMS DescribeKey on a key reference (id, ARN, alias name or alias ARN) in the account-region.
    #[tracing::instrument(skip_all, fields(account_id = %access.account_id, region = %region, key = reference))]
    pub async fn describe_key(
        &self,
        access: &AccountAccess,
        region: Region,
        reference: &str,
    ) -> Result<KeyInfo, FleetError> {
        let clients = self.clients(access, region).await;
        let out = clients
            .kms
            .describe_key()
            .key_id(reference)
            .send()
            .await
            .map_err(|e| self.expired_or(access, region, classify(&e)))?;
        let meta = out
            .key_metadata
            .ok_or_else(|| FleetError::new(FailureKind::Unknown, "DescribeKey returned no key"))?;
        Ok(KeyInfo {
            arn: meta.arn.clone().unwrap_or_default(),
            state: meta
                .key_state
                .as_ref()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            symmetric: meta
                .key_spec
                .as_ref()
                .is_none_or(|s| *s == KeySpec::SymmetricDefault)
                && meta
                    .key_usage
                    .as_ref()
                    .is_none_or(|u| *u == KeyUsageType::EncryptDecrypt),
            aws_managed: meta
                .key_manager
                .as_ref()
                .is_some_and(|m| m.as_str() == "AWS"),
        })
    }

    /// One UpdateTable of one concern towards `target` (`call`): the table's SSE in its region, its replicas'
    /// customer managed keys (`ReplicaUpdates` alone), or the SSE of one replica in that replica's region. Only
    /// resolved key ARNs are sent. Returns at once; DescribeTable shows when the change is complete.
    #[tracing::instrument(skip_all, fields(account_id = %access.account_id, region = %region, table = %table, call = ?call.kind()))]
    pub async fn update_table_encryption(
        &self,
        access: &AccountAccess,
        region: Region,
        table: &TableName,
        target: &ApplyTarget,
        call: &Call,
    ) -> Result<UpdateOutcome, FleetError> {
        let sse = match target.mode {
            EncryptionMode::AwsOwned => SseSpecification::builder().enabled(false).build(),
            EncryptionMode::AwsManaged => SseSpecification::builder().enabled(true).build(),
            EncryptionMode::CustomerManaged => SseSpecification::builder()
                .enabled(true)
                .sse_type(SseType::Kms)
                .set_kms_master_key_id(target.key_arn.clone())
                .build(),
        };
        let (region, sse, replica_updates) = match call {
            Call::Sse => (region, Some(sse), None),
            Call::ReplicaSse(replica) => {
                let replica = Region::parse(replica).map_err(|e| {
                    FleetError::new(FailureKind::Unknown, format!("replica region: {}", e.0))
                })?;
                (replica, Some(sse), None)
            }
            Call::ReplicaKeys(keys) => {
                let updates: Vec<ReplicationGroupUpdate> = keys
                    .iter()
                    .map(|(region, key)| {
                        ReplicationGroupUpdate::builder()
                            .update(
                                UpdateReplicationGroupMemberAction::builder()
                                    .region_name(region)
                                    .kms_master_key_id(key)
                                    .build()
                                    .expect("region_name is set"),
                            )
                            .build()
                    })
                    .collect();
                (region, None, Some(updates))
            }
        };
        let clients = self.clients(access, region).await;
        let result = clients
            .dynamodb
            .update_table()
            .table_name(table.as_str())
            .set_sse_specification(sse)
            .set_replica_updates(replica_updates)
            // Every UpdateTable is one rate slot of ours: the SDK must not re-send it behind our limit.
            .customize()
            .config_override(without_sdk_retries())
            .send()
            .await;
        match result {
            Ok(_) => Ok(UpdateOutcome::Started),
            Err(e) => {
                let error = self.expired_or(access, region, classify(&e));
                // "...already encrypted with given KMSMasterKeyId", "...already encrypted by default".
                if error.code.as_deref() == Some("ValidationException")
                    && error.message.contains("already encrypted")
                {
                    Ok(UpdateOutcome::AlreadyEncrypted)
                } else {
                    Err(error)
                }
            }
        }
    }
}
