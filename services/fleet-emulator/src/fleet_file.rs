//! The fleet file (YAML): accounts, the roles they trust, regions, KMS keys and aliases, and tables, listed one by
//! one or generated.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;

use serde::{Deserialize, Serialize};

/// A whole fleet.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSpec {
    /// The account whose long-term credentials callers start from (tablecrypt's hub account).
    #[serde(default)]
    pub hub: HubSpec,
    /// Timings and limits.
    #[serde(default)]
    pub settings: Settings,
    /// What AWS does where the sources disagree (`src/behaviour.rs`, the README's behaviour table); the same as
    /// `settings.behaviour`, which it overrides when given.
    #[serde(default)]
    pub behaviour: Option<crate::behaviour::Behaviour>,
    /// A behaviour profile file written by `fleet-emulator calibrate` (relative to the fleet file): its switches,
    /// with `behaviour`'s switches over them, and where and when they were measured (`settings.behaviour_measured`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behaviour_profile: Option<std::path::PathBuf>,
    #[serde(default)]
    pub accounts: Vec<AccountSpec>,
    /// The AWS Organization the accounts belong to, for Organizations and Account Management calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<OrganizationSpec>,
}

/// An AWS Organization: its management account, its OUs and its accounts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationSpec {
    /// The account whose sessions may read the organization.
    pub management_account_id: String,
    /// Accounts registered as delegated administrators: their sessions may read it too.
    #[serde(default)]
    pub delegated_administrators: Vec<String>,
    /// OU paths from the root (`Root/Workloads/Payments`); an account's `ou` adds its OU and the ones above it.
    #[serde(default)]
    pub units: Vec<String>,
    #[serde(default)]
    pub accounts: Vec<OrgAccountSpec>,
}

/// One account of the organization.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgAccountSpec {
    pub account_id: String,
    #[serde(default)]
    pub name: String,
    /// The OU path (`Root/Workloads/Payments`); `Root` when absent.
    #[serde(default)]
    pub ou: String,
    /// ACTIVE (default), SUSPENDED, PENDING_CLOSURE, CLOSED.
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Opt-in regions the account has enabled (regions enabled by default always are).
    #[serde(default)]
    pub opted_in_regions: Vec<String>,
}

/// The hub account and its long-term access key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSpec {
    pub account_id: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The IAM principal those credentials stand for, reported by GetCallerIdentity and in AccessDenied messages.
    #[serde(default = "default_hub_principal")]
    pub principal: String,
}

fn default_hub_principal() -> String {
    "user/tablecrypt-hub".to_owned()
}

impl Default for HubSpec {
    fn default() -> Self {
        Self {
            account_id: "000000000000".to_owned(),
            access_key_id: "AKIAHUBEXAMPLE000000".to_owned(),
            secret_access_key: "hub-secret-access-key".to_owned(),
            principal: default_hub_principal(),
        }
    }
}

/// Timings and limits. Defaults follow AWS where AWS documents a number.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// How long an UpdateTable keeps the table UPDATING before it is ACTIVE with the new key (AWS: minutes).
    pub update_seconds: f64,
    /// How long after its key is disabled or scheduled for deletion a table turns
    /// INACCESSIBLE_ENCRYPTION_CREDENTIALS (AWS: "within minutes").
    pub inaccessible_after_seconds: f64,
    /// Tables per account-region allowed in CREATING/UPDATING/DELETING at once (AWS default quota: 500).
    pub max_updating_tables_per_region: usize,
    /// Request log entries kept (oldest dropped first).
    pub request_log_capacity: usize,
    /// What AWS does where the sources disagree.
    pub behaviour: crate::behaviour::Behaviour,
    /// Where and when `behaviour` was measured, when it came from a calibrated profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub behaviour_measured: Option<crate::profile::Provenance>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            update_seconds: 2.0,
            inaccessible_after_seconds: 300.0,
            max_updating_tables_per_region: 500,
            request_log_capacity: 1_000_000,
            behaviour: crate::behaviour::Behaviour::default(),
            behaviour_measured: None,
        }
    }
}

/// One member account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSpec {
    pub account_id: String,
    /// Roles the hub may assume here. A role not listed refuses AssumeRole with AccessDenied.
    #[serde(default)]
    pub roles: Vec<RoleSpec>,
    /// Regions the account uses (for table generation; requests to other regions see an empty region).
    #[serde(default)]
    pub regions: Vec<String>,
    #[serde(default)]
    pub keys: Vec<KeySpec>,
    #[serde(default)]
    pub tables: Vec<TableSpec>,
    /// Generated tables, for large fleets.
    #[serde(default)]
    pub generate: Vec<GenerateSpec>,
    /// Opt-in regions the account has not enabled: a member session's calls signed for them are refused as AWS
    /// refuses a session it does not know there (UnrecognizedClientException).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled_regions: Vec<String>,
    /// Regions a service control policy denies: a member session's calls there get AccessDeniedException "with
    /// an explicit deny in a service control policy".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scp_denied_regions: Vec<String>,
}

/// A role in a member account, trusting the hub.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    pub name: String,
    /// When set, AssumeRole must pass exactly this sts:ExternalId.
    #[serde(default)]
    pub external_id: Option<String>,
    /// Actions the role's policies do not allow (`dynamodb:UpdateTable`, `kms:CreateGrant`, `kms:DescribeKey`,
    /// `dynamodb:DescribeTable`, `dynamodb:ListTables`, `dynamodb:ListTagsOfResource`): refused with
    /// AccessDeniedException in IAM's wording.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied_actions: Vec<String>,
}

/// A KMS key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    pub region: String,
    /// The key id (a UUID); generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// Aliases pointing at the key, each "alias/...".
    #[serde(default)]
    pub aliases: Vec<String>,
    /// SYMMETRIC_DEFAULT (the default) or an asymmetric spec such as RSA_2048.
    #[serde(default = "default_key_spec")]
    pub spec: String,
    /// Enabled (default), Disabled or PendingDeletion.
    #[serde(default = "default_key_state")]
    pub state: String,
    #[serde(default)]
    pub description: String,
}

fn default_key_spec() -> String {
    "SYMMETRIC_DEFAULT".to_owned()
}

fn default_key_state() -> String {
    "Enabled".to_owned()
}

/// How a table is encrypted: "owned", "managed", or a key reference (key id, key ARN, alias name or alias ARN).
pub type EncryptionSpec = String;

/// One table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    pub name: String,
    pub region: String,
    #[serde(default = "default_encryption")]
    pub encryption: EncryptionSpec,
    /// Other regions holding replicas (a 2019.11.21 global table). Each replica uses the same kind of key; a key
    /// reference is resolved in each replica's region (so use an alias that exists in every one).
    #[serde(default)]
    pub replicas: Vec<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

fn default_encryption() -> String {
    "owned".to_owned()
}

/// `count` tables named `<prefix><n>` spread over `regions`, encrypted by weighted choice from `mix`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateSpec {
    pub count: usize,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Regions to spread over; the account's regions when empty.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Encryption -> weight, e.g. {owned: 2, managed: 1, "alias/payments": 1}. All owned when empty.
    #[serde(default)]
    pub mix: BTreeMap<EncryptionSpec, u32>,
}

fn default_prefix() -> String {
    "table-".to_owned()
}

impl FleetSpec {
    /// A fleet from YAML; a `behaviour_profile` is read relative to the working directory.
    pub fn from_yaml(text: &str) -> anyhow::Result<Self> {
        Self::from_yaml_in(text, Path::new("."))
    }

    /// A fleet file; its `behaviour_profile` is read relative to the file's directory, unless `profile` (a path
    /// given on the command line, relative to the working directory) replaces it.
    pub fn from_file(path: &Path, profile: Option<&Path>) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        let mut spec: Self = serde_norway::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid fleet file: {e}"))?;
        let base = path.parent().unwrap_or(Path::new("."));
        match (profile, spec.behaviour_profile.clone()) {
            (Some(file), _) => spec.use_profile(file),
            (None, Some(file)) => spec.use_profile(&base.join(file)),
            (None, None) => Ok(()),
        }
        .with_context(|| format!("failed to load {}", path.display()))?;
        Ok(spec)
    }

    fn from_yaml_in(text: &str, base: &Path) -> anyhow::Result<Self> {
        let mut spec: Self =
            serde_norway::from_str(text).map_err(|e| anyhow::anyhow!("invalid fleet file: {e}"))?;
        if let Some(file) = spec.behaviour_profile.clone() {
            spec.use_profile(&base.join(file))?;
        }
        Ok(spec)
    }

    /// Takes the switches of a calibrated profile, keeping any switch the fleet's own `behaviour` sets (call it
    /// once: a second profile would be read over the first one's switches).
    pub fn use_profile(&mut self, path: &Path) -> anyhow::Result<()> {
        let profile = crate::profile::BehaviourProfile::load(path)?;
        let overrides = self.behaviour.take().unwrap_or_default();
        self.behaviour = Some(profile.behaviour.overlay(&overrides));
        self.settings.behaviour_measured = Some(profile.measured);
        Ok(())
    }
}
