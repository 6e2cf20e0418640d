//! Inventory messages out.

use tablecrypt_core::iac::{IacOwner, IacOwnership};
use tablecrypt_core::scan::InventoryScan;
use tablecrypt_core::{EncryptionMode, FailureKind};
use tablecrypt_fleet::FleetError;
use tablecrypt_proto::v1 as pb;
use tablecrypt_store::InventoryEntry;

use super::timestamp;

pub fn mode_to_proto(mode: EncryptionMode) -> pb::EncryptionMode {
    match mode {
        EncryptionMode::AwsOwned => pb::EncryptionMode::AwsOwned,
        EncryptionMode::AwsManaged => pb::EncryptionMode::AwsManaged,
        EncryptionMode::CustomerManaged => pb::EncryptionMode::CustomerManaged,
    }
}

pub fn failure_kind_to_proto(kind: FailureKind) -> pb::FailureKind {
    match kind {
        FailureKind::Throttled => pb::FailureKind::Throttled,
        FailureKind::QuotaExceeded => pb::FailureKind::QuotaExceeded,
        FailureKind::AccessDenied => pb::FailureKind::AccessDenied,
        FailureKind::NotFound => pb::FailureKind::NotFound,
        FailureKind::InvalidKey => pb::FailureKind::InvalidKey,
        FailureKind::InUse => pb::FailureKind::InUse,
        FailureKind::Transient => pb::FailureKind::Transient,
        FailureKind::RegionUnavailable => pb::FailureKind::RegionUnavailable,
        FailureKind::Unknown => pb::FailureKind::Unknown,
    }
}

pub fn failure_to_proto(error: &FleetError) -> pb::AwsFailure {
    pb::AwsFailure {
        kind: failure_kind_to_proto(error.kind) as i32,
        code: error.code.clone().unwrap_or_default(),
        message: error.message.clone(),
    }
}

/// An inventoried table; `iac` names the tags that mark infrastructure-as-code ownership.
pub fn entry_to_proto(entry: &InventoryEntry, iac: &IacOwnership) -> pb::EncryptedTable {
    let table = &entry.table;
    pb::EncryptedTable {
        account_id: table.account_id.to_string(),
        region: table.region.to_string(),
        table_name: table.table_name.to_string(),
        mode: mode_to_proto(table.mode) as i32,
        kms_key_arn: table.key_arn.clone().unwrap_or_default(),
        sse_status: table.sse_status.clone(),
        table_status: table.table_status.clone(),
        inaccessible_since: table.inaccessible_since.map(timestamp::to_proto),
        replicas: table
            .replicas
            .iter()
            .map(|r| pb::ReplicaEncryption {
                region: r.region.clone(),
                replica_status: r.status.clone(),
                kms_key_arn: r.key_arn.clone().unwrap_or_default(),
            })
            .collect(),
        observe_time: Some(timestamp::to_proto(table.observed_at)),
        gone: entry.gone_since.is_some(),
        tags: table
            .tags
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        tags_read: table.tags.is_some(),
        iac_owner: match iac.judge(table.tags.as_ref()) {
            IacOwner::Owned(tag) => tag,
            IacOwner::NotOwned | IacOwner::Unknown => String::new(),
        },
    }
}

pub fn scan_to_proto(scan: &InventoryScan) -> pb::InventoryScan {
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    pb::InventoryScan {
        scan_id: scan.scan_id.to_string(),
        state: scan.state.as_str().to_owned(),
        create_time: Some(timestamp::to_proto(scan.create_time)),
        finish_time: scan.finish_time.map(timestamp::to_proto),
        targets_total: count(scan.targets.len()),
        targets_done: count(scan.targets_done()),
        targets_failed: count(scan.targets_failed()),
        tables_seen: scan.tables_seen(),
        targets: scan
            .targets
            .iter()
            .map(|t| pb::ScanTarget {
                account_id: t.account_id.to_string(),
                region: t.region.to_string(),
                state: t.state.as_str().to_owned(),
                tables_seen: t.tables_seen,
                tables_gone: t.tables_gone,
                failure: t.failure.as_ref().map(|(kind, message)| pb::AwsFailure {
                    kind: failure_kind_to_proto(*kind) as i32,
                    code: String::new(),
                    message: message.clone(),
                }),
            })
            .collect(),
    }
}
