//! `tablecrypt.v1.Account` in and out.

use tablecrypt_core::{
    Account, AccountChanges, AccountId, AccountLimits, AccountSpec, DisplayName, PerSecond,
    RawAccount, RoleArn, ValidationErrors, parse_external_id, parse_labels, parse_limits,
    parse_regions,
};
use tablecrypt_proto::v1 as pb;

use super::timestamp;

/// The account as callers see it: the external id is never sent back, only whether one is set.
pub fn to_proto(account: &Account) -> pb::Account {
    let spec = &account.spec;
    pb::Account {
        account_id: account.account_id.to_string(),
        display_name: spec.display_name.to_string(),
        role_arn: spec.role_arn.to_string(),
        external_id: String::new(),
        external_id_set: spec.external_id.is_some(),
        regions: spec.regions.names(),
        labels: spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        create_time: Some(timestamp::to_proto(account.create_time)),
        update_time: Some(timestamp::to_proto(account.update_time)),
        etag: account.etag(),
        limits: (!spec.limits.is_empty()).then(|| limits_to_proto(&spec.limits)),
    }
}

fn limits_to_proto(limits: &AccountLimits) -> pb::AccountLimits {
    pb::AccountLimits {
        update_rate_per_second: limits.update_rate.map_or(0.0, PerSecond::get),
        poll_rate_per_second: limits.poll_rate.map_or(0.0, PerSecond::get),
        max_tables_in_flight: limits.max_tables_in_flight.map_or(0, |n| n as i32),
        settle_timeout: limits.settle_timeout.map(|d| prost_types::Duration {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }),
    }
}

/// `AccountLimits` as the raw values the domain parses; absent means the service defaults (an unset settle
/// timeout is 0 s, a negative one stays negative and is refused).
fn raw_limits(limits: Option<&pb::AccountLimits>) -> Option<(f64, f64, i64, f64)> {
    limits.map(|l| {
        (
            l.update_rate_per_second,
            l.poll_rate_per_second,
            i64::from(l.max_tables_in_flight),
            l.settle_timeout
                .map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9),
        )
    })
}

/// `RegisterAccountRequest.account` into a new account; field paths are relative to `account`.
pub fn parse_new(account: &pb::Account) -> Result<(AccountId, AccountSpec), ValidationErrors> {
    RawAccount {
        account_id: &account.account_id,
        display_name: &account.display_name,
        role_arn: &account.role_arn,
        external_id: &account.external_id,
        regions: &account.regions,
        labels: &account.labels,
        limits: raw_limits(account.limits.as_ref()),
    }
    .parse()
}

/// The fields UpdateAccount may change, as named in an update mask.
const UPDATABLE: &[&str] = &[
    "display_name",
    "role_arn",
    "external_id",
    "regions",
    "labels",
    "limits",
];

/// `UpdateAccountRequest` into the account id, the expected version (from the etag) and the changes. Field paths
/// are relative to the request (`account.role_arn`, `update_mask`).
pub fn parse_update(
    account: &pb::Account,
    mask: Option<&prost_types::FieldMask>,
) -> Result<(AccountId, Option<i64>, AccountChanges), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    let account_id = errors.check("account.account_id", AccountId::parse(&account.account_id));
    let expected_version = match account.etag.as_str() {
        "" => None,
        etag => match Account::parse_etag(etag) {
            Some(version) => Some(version),
            None => {
                errors.add("account.etag", "is not an etag returned by this service");
                None
            }
        },
    };
    let paths: Vec<String> = match mask {
        Some(mask) => mask.paths.clone(),
        // No mask: every field given a non-empty value (AIP-134).
        None => {
            let mut paths = Vec::new();
            let mut set = |name: &str, present: bool| {
                if present {
                    paths.push(name.to_owned());
                }
            };
            set("display_name", !account.display_name.is_empty());
            set("role_arn", !account.role_arn.is_empty());
            set("external_id", !account.external_id.is_empty());
            set("regions", !account.regions.is_empty());
            set("labels", !account.labels.is_empty());
            set("limits", account.limits.is_some());
            paths
        }
    };
    if paths.is_empty() {
        errors.add(
            "update_mask",
            format!(
                "names no field to change: use any of {}",
                UPDATABLE.join(", ")
            ),
        );
    }
    let mut changes = AccountChanges::default();
    let mut nested = ValidationErrors::new();
    for path in &paths {
        match path.as_str() {
            "display_name" => {
                changes.display_name =
                    nested.check("display_name", DisplayName::parse(&account.display_name));
            }
            "role_arn" => {
                changes.role_arn = nested.check("role_arn", RoleArn::parse(&account.role_arn))
            }
            "external_id" => {
                changes.external_id =
                    nested.check("external_id", parse_external_id(&account.external_id));
            }
            "regions" => changes.regions = parse_regions(&mut nested, &account.regions),
            "labels" => changes.labels = parse_labels(&mut nested, &account.labels),
            "limits" => {
                changes.limits = parse_limits(&mut nested, raw_limits(account.limits.as_ref()));
            }
            other => errors.add(
                "update_mask",
                format!(
                    "{other:?} cannot be updated: use any of {}",
                    UPDATABLE.join(", ")
                ),
            ),
        }
    }
    errors.extend_prefixed("account", nested);
    match account_id {
        Some(id) if errors.is_empty() => Ok((id, expected_version, changes)),
        _ => Err(errors),
    }
}

/// One line of a discovery.
pub fn discovered_to_proto(
    line: &tablecrypt_engine::discovery::DiscoveryLine,
) -> pb::DiscoveredAccount {
    use pb::discovered_account::Action;
    use tablecrypt_core::discovery::DiscoveryAction;
    let action = match line.line.action {
        DiscoveryAction::Register(_) => Action::Register,
        DiscoveryAction::Relabel { .. } => Action::Relabel,
        DiscoveryAction::Unchanged => Action::Unchanged,
        DiscoveryAction::Deregister { .. } => Action::Deregister,
        DiscoveryAction::Left => Action::Left,
        DiscoveryAction::InFlight => Action::InFlight,
        DiscoveryAction::Skipped => Action::Skipped,
    };
    pb::DiscoveredAccount {
        account_id: line.line.account_id.clone(),
        name: line.line.name.clone(),
        ou_path: line.line.ou_path.clone(),
        action: action.into(),
        notes: line.line.notes.clone(),
        error: line.error.clone().unwrap_or_default(),
    }
}
