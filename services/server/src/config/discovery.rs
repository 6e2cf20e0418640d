//! `[discovery]`: registering the accounts of an AWS Organization (DiscoverAccounts, `tablecrypt accounts
//! discover`, and optionally every `interval`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use tablecrypt_core::discovery::{DiscoveryRules, OuLabels, RolePattern};
use tablecrypt_core::{ExternalId, Regions, RoleArn};
use tablecrypt_engine::DiscoverySettings;
use tablecrypt_fleet::OrganizationAccess;

/// How the organization is read and its accounts registered. Absent: discovery is off.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// A role in the organization's management account (or a delegated administrator's) that the hub may assume,
    /// allowed organizations:ListAccounts, ListParents, DescribeOrganizationalUnit, ListTagsForResource and
    /// account:ListRegions (`TABLECRYPT_DISCOVERY__ORGANIZATION_ROLE_ARN`).
    pub organization_role_arn: String,
    /// The external id that role's trust policy asks for, if any.
    #[serde(default, serialize_with = "super::show::redacted_text")]
    pub organization_external_id: String,
    /// The member role of every discovered account, with `{account_id}` for its id
    /// (default `arn:aws:iam::{account_id}:role/tablecrypt-member`, the name deploy/iam's StackSet creates).
    #[serde(default = "default_member_role")]
    pub member_role: String,
    /// The external id the member roles' trust policies ask for, if any.
    #[serde(default, serialize_with = "super::show::redacted_text")]
    pub member_external_id: String,
    /// The regions tablecrypt works in. Each discovered account is registered with those of them it has enabled
    /// (account:ListRegions), so an opt-in region the account never enabled is left out.
    pub regions: Vec<String>,
    /// Account tags copied to labels `org.tablecrypt/<tag>` (values made label-safe: `Payments Team` becomes
    /// `Payments-Team`), e.g. ["team", "env"].
    #[serde(default)]
    pub tag_labels: Vec<String>,
    /// Labels given to the accounts of an OU and the OUs below it, applied in order (a later rule wins):
    /// `[[discovery.ou_labels]] ou = "Root/Workloads/Payments"  labels = { team = "payments" }` gives
    /// `org.tablecrypt/team=payments`. A `/` inside an OU's name is written `%2F`. A name may not be both a rule's
    /// label and a tag label, and all of them together at most 15.
    #[serde(default)]
    pub ou_labels: Vec<OuLabelsConfig>,
    /// How often to discover in the background, e.g. "1h"; "off" (default): only when asked. Background discovery
    /// registers and relabels but never deregisters (`TABLECRYPT_DISCOVERY__INTERVAL`).
    #[serde(
        default,
        deserialize_with = "super::optional_duration",
        serialize_with = "super::show::optional_duration"
    )]
    pub interval: Option<Duration>,
}

/// Labels for one OU's accounts.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct OuLabelsConfig {
    /// The OU's path from the root, `Root/Workloads/Payments`.
    pub ou: String,
    /// Label names (without the org.tablecrypt/ prefix, which is added) and values.
    pub labels: BTreeMap<String, String>,
}

fn default_member_role() -> String {
    "arn:aws:iam::{account_id}:role/tablecrypt-member".to_owned()
}

/// The least time between background discoveries: an organization changes in hours, and each run reads every
/// account's OU, tags and regions (four Organizations calls per account).
const MIN_INTERVAL: Duration = Duration::from_secs(60);

impl DiscoveryConfig {
    /// Everything [`Self::settings`] checks, and the interval's floor (checked when the configuration is loaded).
    pub fn check(&self) -> anyhow::Result<()> {
        self.settings()?;
        if let Some(interval) = self.interval {
            anyhow::ensure!(
                interval >= MIN_INTERVAL,
                "invalid configuration: discovery.interval must be at least {} or \"off\"",
                humantime_serde::re::humantime::format_duration(MIN_INTERVAL)
            );
        }
        Ok(())
    }

    /// Validated settings; errors name the key (`discovery.ou_labels[1].labels["has space"]`).
    pub fn settings(&self) -> anyhow::Result<DiscoverySettings> {
        let at = |key: &str| format!("invalid configuration: discovery.{key}");
        let role_arn = RoleArn::parse(&self.organization_role_arn)
            .map_err(|e| anyhow::anyhow!("{} {}", at("organization_role_arn"), e.0))?;
        let external_id = |key: &str, value: &str| -> anyhow::Result<Option<ExternalId>> {
            anyhow::ensure!(
                value != super::show::REDACTED,
                "{} is check-config's redaction marker, not an external id: give the real value",
                at(key)
            );
            tablecrypt_core::parse_external_id(value)
                .map_err(|e| anyhow::anyhow!("{} {}", at(key), e.0))
        };
        let member_role = RolePattern::parse(&self.member_role)
            .map_err(|e| anyhow::anyhow!("{} {}", at("member_role"), e.0))?;
        anyhow::ensure!(
            !self.regions.is_empty(),
            "{} must name at least one region",
            at("regions")
        );
        let regions =
            Regions::parse(&self.regions).map_err(|e| anyhow::anyhow!("{} {e}", at("regions")))?;
        for (i, tag) in self.tag_labels.iter().enumerate() {
            DiscoveryRules::label_key(tag).map_err(|e| {
                anyhow::anyhow!(
                    "{} {tag:?} cannot name a label: {}",
                    at(&format!("tag_labels[{i}]")),
                    e.0
                )
            })?;
        }
        let mut ou_labels = Vec::with_capacity(self.ou_labels.len());
        for (i, rule) in self.ou_labels.iter().enumerate() {
            anyhow::ensure!(
                rule.ou == tablecrypt_core::discovery::ROOT
                    || rule
                        .ou
                        .starts_with(&format!("{}/", tablecrypt_core::discovery::ROOT)),
                "{} {:?} must be a path from the root, e.g. \"Root/Workloads/Payments\"",
                at(&format!("ou_labels[{i}].ou")),
                rule.ou
            );
            for (name, value) in &rule.labels {
                let field = at(&format!("ou_labels[{i}].labels[{name:?}]"));
                DiscoveryRules::label_key(name).map_err(|e| anyhow::anyhow!("{field} {}", e.0))?;
                tablecrypt_core::labels::validate_value(value)
                    .map_err(|e| anyhow::anyhow!("{field} {}", e.0))?;
            }
            ou_labels.push(OuLabels {
                ou: rule.ou.clone(),
                labels: rule.labels.clone(),
            });
        }
        let rules = DiscoveryRules {
            member_role,
            member_external_id: external_id("member_external_id", &self.member_external_id)?,
            regions,
            tag_labels: self.tag_labels.clone(),
            ou_labels,
        };
        rules
            .check_names()
            .map_err(|e| anyhow::anyhow!("invalid configuration: discovery: {e}"))?;
        Ok(DiscoverySettings {
            organization: OrganizationAccess {
                role_arn,
                external_id: external_id(
                    "organization_external_id",
                    &self.organization_external_id,
                )?,
            },
            rules,
        })
    }
}
