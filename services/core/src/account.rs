//! Member accounts of the fleet: what a caller declares, and what the registry keeps.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::account_id::AccountId;
use crate::account_limits::AccountLimits;
use crate::display_name::DisplayName;
use crate::external_id::ExternalId;
use crate::labels::Labels;
use crate::region::Regions;
use crate::role_arn::RoleArn;
use crate::validation::{InvalidValue, ValidationErrors};

/// What a caller controls about an account. Built only through [`AccountSpec::new`], which checks the fields
/// against each other and against the account id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSpec {
    /// Shown in listings; free text.
    pub display_name: DisplayName,
    /// The role tablecrypt assumes in the account; always in the account itself.
    pub role_arn: RoleArn,
    /// Sent to STS when the role's trust policy demands it.
    pub external_id: Option<ExternalId>,
    /// Where the account's tables live; all in the role's partition.
    pub regions: Regions,
    /// Ownership and environment tags, matched by selectors.
    pub labels: Labels,
    /// Overrides of the change workers' per-account-region limits.
    pub limits: AccountLimits,
}

impl AccountSpec {
    /// Cross-field checks: the role must belong to `account_id`, and every region to the role's partition.
    /// Field paths in the error are relative to the account (`role_arn`, `regions[1]`).
    pub fn new(
        account_id: &AccountId,
        display_name: DisplayName,
        role_arn: RoleArn,
        external_id: Option<ExternalId>,
        regions: Regions,
        labels: Labels,
        limits: AccountLimits,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        if role_arn.account_id() != account_id {
            errors.add(
                "role_arn",
                format!(
                    "must be a role in account {account_id}, but names account {}",
                    role_arn.account_id()
                ),
            );
        }
        for (i, region) in regions.as_slice().iter().enumerate() {
            if region.partition() != role_arn.partition() {
                errors.add(
                    format!("regions[{i}]"),
                    format!(
                        "{region} is in partition {}, but the role is in partition {}",
                        region.partition(),
                        role_arn.partition()
                    ),
                );
            }
        }
        errors.into_result(|| Self {
            display_name,
            role_arn,
            external_id,
            regions,
            labels,
            limits,
        })
    }
}

/// An account as a client writes it (a RegisterAccount request, a line of an import file), before validation.
/// Empty strings mean "not given"; `limits` holds the raw (update rate, poll rate, tables in flight), 0 = default.
#[derive(Debug, Clone, Copy)]
pub struct RawAccount<'a> {
    pub account_id: &'a str,
    pub display_name: &'a str,
    pub role_arn: &'a str,
    pub external_id: &'a str,
    pub regions: &'a [String],
    pub labels: &'a HashMap<String, String>,
    pub limits: Option<(f64, f64, i64, f64)>,
}

impl RawAccount<'_> {
    /// Every field and the cross-field rules; field paths are relative to the account (`role_arn`,
    /// `regions[1]`, `labels["a b"]`, `limits.update_rate_per_second`).
    pub fn parse(&self) -> Result<(AccountId, AccountSpec), ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let account_id = errors.check("account_id", AccountId::parse(self.account_id));
        let display_name = errors.check("display_name", DisplayName::parse(self.display_name));
        let role_arn = errors.check("role_arn", RoleArn::parse(self.role_arn));
        let external_id = errors.check("external_id", parse_external_id(self.external_id));
        let regions = parse_regions(&mut errors, self.regions);
        let labels = parse_labels(&mut errors, self.labels);
        let limits = parse_limits(&mut errors, self.limits);
        match (
            account_id,
            display_name,
            role_arn,
            external_id,
            regions,
            labels,
            limits,
        ) {
            (
                Some(id),
                Some(display_name),
                Some(role_arn),
                Some(external_id),
                Some(regions),
                Some(labels),
                Some(limits),
            ) if errors.is_empty() => {
                let spec = AccountSpec::new(
                    &id,
                    display_name,
                    role_arn,
                    external_id,
                    regions,
                    labels,
                    limits,
                )?;
                Ok((id, spec))
            }
            _ => Err(errors),
        }
    }
}

/// The account's regions; violations under `regions` (`regions[1]`).
pub fn parse_regions(errors: &mut ValidationErrors, regions: &[String]) -> Option<Regions> {
    Regions::parse(regions)
        .map_err(|e| errors.extend_prefixed("regions", e))
        .ok()
}

/// The account's labels; violations under `labels` (`labels["a b"]`).
pub fn parse_labels(
    errors: &mut ValidationErrors,
    labels: &HashMap<String, String>,
) -> Option<Labels> {
    let mut reserved: Vec<&String> = labels
        .keys()
        .filter(|k| crate::discovery::is_discovered_label(k))
        .collect();
    reserved.sort();
    for key in &reserved {
        errors.add(
            format!("labels[{key:?}]"),
            format!(
                "the {} prefix is written only by account discovery",
                crate::discovery::DISCOVERED_PREFIX
            ),
        );
    }
    let limit = crate::discovery::MAX_CALLER_LABELS;
    if labels.len() > limit {
        errors.add(
            "labels",
            format!(
                "at most {limit} labels, got {} ({} more are kept for account discovery's {} labels)",
                labels.len(),
                crate::discovery::MAX_DISCOVERED_LABELS,
                crate::discovery::DISCOVERED_PREFIX
            ),
        );
    }
    let parsed = Labels::parse(labels.iter())
        .map_err(|e| errors.extend_prefixed("labels", e))
        .ok()?;
    (reserved.is_empty() && labels.len() <= limit).then_some(parsed)
}

/// Raw (update rate, poll rate, tables in flight, settle timeout in seconds) limits, None for the service
/// defaults; violations under `limits`.
pub fn parse_limits(
    errors: &mut ValidationErrors,
    limits: Option<(f64, f64, i64, f64)>,
) -> Option<AccountLimits> {
    match limits {
        None => Some(AccountLimits::default()),
        Some((update, poll, in_flight, settle)) => {
            AccountLimits::from_raw(update, poll, in_flight, settle)
                .map_err(|e| errors.extend_prefixed("limits", e))
                .ok()
        }
    }
}

/// An empty external id means none.
pub fn parse_external_id(value: &str) -> Result<Option<ExternalId>, InvalidValue> {
    if value.is_empty() {
        Ok(None)
    } else {
        ExternalId::parse(value).map(Some)
    }
}

/// A registered account as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub account_id: AccountId,
    pub spec: AccountSpec,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    /// Bumped on every update; the API's etag, for optimistic concurrency.
    pub version: i64,
}

impl Account {
    /// The spec this account would have after `changes`, validated as a whole.
    pub fn with_changes(&self, changes: AccountChanges) -> Result<AccountSpec, ValidationErrors> {
        let current = &self.spec;
        AccountSpec::new(
            &self.account_id,
            changes
                .display_name
                .unwrap_or_else(|| current.display_name.clone()),
            changes.role_arn.unwrap_or_else(|| current.role_arn.clone()),
            changes
                .external_id
                .unwrap_or_else(|| current.external_id.clone()),
            changes.regions.unwrap_or_else(|| current.regions.clone()),
            match changes.labels {
                Some(labels) => keep_discovered(&current.labels, labels)?,
                None => current.labels.clone(),
            },
            changes.limits.unwrap_or(current.limits),
        )
    }

    /// The opaque etag the API hands out for this version.
    pub fn etag(&self) -> String {
        format!("v{}", self.version)
    }

    /// The version an etag stands for, if it is one of ours.
    pub fn parse_etag(etag: &str) -> Option<i64> {
        etag.strip_prefix('v')?.parse().ok()
    }
}

/// New labels from a caller, with the account's discovered ones (which no caller writes) kept.
pub fn keep_discovered(current: &Labels, given: Labels) -> Result<Labels, ValidationErrors> {
    let mut merged = given.as_map().clone();
    merged.extend(
        current
            .iter()
            .filter(|(k, _)| crate::discovery::is_discovered_label(k))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    Labels::parse(merged.iter()).map_err(|e| e.prefixed("labels"))
}

/// A partial update: `None` leaves a field as it is. `external_id: Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct AccountChanges {
    pub display_name: Option<DisplayName>,
    pub role_arn: Option<RoleArn>,
    pub external_id: Option<Option<ExternalId>>,
    pub regions: Option<Regions>,
    pub labels: Option<Labels>,
    pub limits: Option<AccountLimits>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> AccountId {
        AccountId::parse(s).expect("valid id")
    }

    fn spec(account: &str, role: &str, regions: &[&str]) -> Result<AccountSpec, ValidationErrors> {
        AccountSpec::new(
            &id(account),
            DisplayName::default(),
            RoleArn::parse(role).expect("valid role"),
            None,
            Regions::parse(regions).expect("valid regions"),
            Labels::default(),
            AccountLimits::default(),
        )
    }

    #[test]
    fn role_must_live_in_the_account() {
        let err = spec(
            "111111111111",
            "arn:aws:iam::222222222222:role/x",
            &["eu-west-1"],
        )
        .expect_err("mismatch");
        assert_eq!(err.violations()[0].field, "role_arn");
        assert!(
            spec(
                "111111111111",
                "arn:aws:iam::111111111111:role/x",
                &["eu-west-1"]
            )
            .is_ok()
        );
    }

    #[test]
    fn regions_must_match_the_role_partition() {
        let err = spec(
            "111111111111",
            "arn:aws:iam::111111111111:role/x",
            &["eu-west-1", "cn-north-1"],
        )
        .expect_err("cross-partition");
        assert_eq!(err.violations()[0].field, "regions[1]");
    }

    #[test]
    fn etags_round_trip() {
        assert_eq!(Account::parse_etag("v42"), Some(42));
        assert_eq!(Account::parse_etag("42"), None);
        assert_eq!(Account::parse_etag("\"v42\""), None);
    }

    #[test]
    fn a_caller_may_not_write_discovered_labels_and_an_update_keeps_them() {
        let mut errors = ValidationErrors::new();
        let given: HashMap<String, String> = [
            ("org.tablecrypt/team".to_owned(), "x".to_owned()),
            ("team".to_owned(), "y".to_owned()),
        ]
        .into();
        assert!(parse_labels(&mut errors, &given).is_none());
        assert_eq!(
            errors.violations()[0].field,
            "labels[\"org.tablecrypt/team\"]"
        );

        let current = Account {
            account_id: id("111111111111"),
            spec: AccountSpec {
                labels: Labels::parse(
                    [
                        ("org.tablecrypt/team".to_owned(), "payments".to_owned()),
                        ("owner".to_owned(), "alice".to_owned()),
                    ]
                    .iter()
                    .map(|(k, v)| (k, v)),
                )
                .expect("labels"),
                ..spec(
                    "111111111111",
                    "arn:aws:iam::111111111111:role/x",
                    &["eu-west-1"],
                )
                .expect("spec")
            },
            create_time: Utc::now(),
            update_time: Utc::now(),
            version: 1,
        };
        let mut errors = ValidationErrors::new();
        let mine: HashMap<String, String> = [("owner".to_owned(), "bob".to_owned())].into();
        let changes = AccountChanges {
            labels: parse_labels(&mut errors, &mine),
            ..AccountChanges::default()
        };
        let after = current.with_changes(changes).expect("valid");
        assert_eq!(after.labels.get("owner"), Some("bob"));
        assert_eq!(after.labels.get("org.tablecrypt/team"), Some("payments"));
    }
}
