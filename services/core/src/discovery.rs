//! Accounts from AWS Organizations: which registry changes an organization's accounts call for. Pure: the fleet
//! layer reads the organization, the engine applies the plan.
//!
//! Labels decide who may act on an account (grants are scoped by them), and whoever can tag an account or move
//! its OU is not necessarily trusted to grant that power. So discovery writes labels only under
//! [`DISCOVERED_PREFIX`], a prefix no caller may write, and owns nothing else of an account it did not register.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::account::{Account, AccountSpec};
use crate::account_id::AccountId;
use crate::account_limits::AccountLimits;
use crate::display_name::DisplayName;
use crate::external_id::ExternalId;
use crate::labels::{Labels, MAX_LABELS, validate_key};
use crate::region::Regions;
use crate::role_arn::RoleArn;
use crate::validation::InvalidValue;

/// The label prefix only discovery writes.
pub const DISCOVERED_PREFIX: &str = "org.tablecrypt/";
/// Carried by every account discovery registered or adopted: the accounts `prune` may deregister.
pub const DISCOVERED_MARKER: &str = "org.tablecrypt/discovered";
/// What the OU path of an account directly under the organization's root starts with.
pub const ROOT: &str = "Root";
/// Labels kept for discovery on every account (the marker, OU rules, tags): a caller's own labels may fill only
/// the rest of [`MAX_LABELS`], so discovery can always replace its labels, removals included.
pub const MAX_DISCOVERED_LABELS: usize = 16;
/// The most labels a caller may give an account.
pub const MAX_CALLER_LABELS: usize = MAX_LABELS - MAX_DISCOVERED_LABELS;

/// An OU's name as one segment of a path: `/` (which AWS allows in names) is written `%2F` and `%` as `%25`, so
/// an OU named `Workloads/Payments` can never pass for the OU `Payments` inside `Workloads`.
pub fn path_segment(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

/// Whether `key` is a label only discovery may write.
pub fn is_discovered_label(key: &str) -> bool {
    key.starts_with(DISCOVERED_PREFIX)
}

/// One account as the organization reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgAccount {
    pub account_id: String,
    pub name: String,
    /// AWS's account state: ACTIVE, SUSPENDED, PENDING_CLOSURE, CLOSED, PENDING_ACTIVATION.
    pub state: String,
    /// The OU names from the root down (`Root/Workloads/Payments`).
    pub ou_path: String,
    pub tags: BTreeMap<String, String>,
    /// The regions the account has enabled (Account ListRegions); `None` when they could not be read, and the
    /// reason.
    pub enabled_regions: Result<BTreeSet<String>, String>,
}

/// The member role of a discovered account, from a pattern such as `arn:aws:iam::{account_id}:role/x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolePattern(String);

/// What [`RolePattern`] replaces with the account's id.
const ACCOUNT_PLACEHOLDER: &str = "{account_id}";

impl RolePattern {
    pub fn parse(pattern: &str) -> Result<Self, InvalidValue> {
        if !pattern.contains(ACCOUNT_PLACEHOLDER) {
            return Err(InvalidValue::new(format!(
                "{pattern:?} must contain {ACCOUNT_PLACEHOLDER}, e.g. arn:aws:iam::{ACCOUNT_PLACEHOLDER}:role/tablecrypt-member"
            )));
        }
        let sample = AccountId::parse("123456789012").expect("a valid account id");
        let candidate = Self(pattern.to_owned());
        let role = RoleArn::parse(&candidate.fill(&sample)).map_err(|e| {
            InvalidValue::new(format!("{pattern:?} is not a role ARN pattern: {e}"))
        })?;
        if role.account_id() != &sample {
            return Err(InvalidValue::new(format!(
                "{pattern:?} must put {ACCOUNT_PLACEHOLDER} in the ARN's account field"
            )));
        }
        Ok(candidate)
    }

    fn fill(&self, account_id: &AccountId) -> String {
        self.0.replace(ACCOUNT_PLACEHOLDER, account_id.as_str())
    }

    pub fn role_for(&self, account_id: &AccountId) -> Result<RoleArn, InvalidValue> {
        RoleArn::parse(&self.fill(account_id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Labels set on the accounts of one OU and the OUs below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OuLabels {
    /// `Root/Workloads/Payments`.
    pub ou: String,
    /// Label names without the prefix, and their values.
    pub labels: BTreeMap<String, String>,
}

/// How the organization's accounts become registry entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryRules {
    pub member_role: RolePattern,
    /// Sent to STS by every discovered account's role, when its trust policy demands one.
    pub member_external_id: Option<ExternalId>,
    /// The regions tablecrypt works in; an account gets those of them it has enabled.
    pub regions: Regions,
    /// Account tags copied to labels `org.tablecrypt/<tag>`.
    pub tag_labels: Vec<String>,
    /// Applied in order, a later rule's label replacing an earlier one's.
    pub ou_labels: Vec<OuLabels>,
}

impl DiscoveryRules {
    /// The label key a name (a tag or a rule's label) becomes; an error says why it cannot be one.
    pub fn label_key(name: &str) -> Result<String, InvalidValue> {
        let key = format!("{DISCOVERED_PREFIX}{name}");
        validate_key(&key)?;
        Ok(key)
    }

    /// The label names the rules can write (besides the marker), each at most once: an OU rule's name and a
    /// tag's may not be the same, or whoever tags an account would override what its OU says.
    pub fn check_names(&self) -> Result<(), String> {
        let mut names = BTreeSet::new();
        let marker = DISCOVERED_MARKER.trim_start_matches(DISCOVERED_PREFIX);
        for rule in &self.ou_labels {
            names.extend(rule.labels.keys().map(String::as_str));
        }
        for tag in &self.tag_labels {
            if names.contains(tag.as_str()) {
                return Err(format!(
                    "tag_labels {tag:?} is also a label of ou_labels: whoever tags an account would override its OU's label"
                ));
            }
        }
        names.extend(self.tag_labels.iter().map(String::as_str));
        if names.contains(marker) {
            return Err(format!("{marker:?} is discovery's own label"));
        }
        if names.len() + 1 > MAX_DISCOVERED_LABELS {
            return Err(format!(
                "tag_labels and ou_labels name {} labels; at most {} (discovery keeps {MAX_DISCOVERED_LABELS} labels per \
                 account, one of them {DISCOVERED_MARKER})",
                names.len(),
                MAX_DISCOVERED_LABELS - 1
            ));
        }
        Ok(())
    }

    /// The labels discovery gives an account: its OUs' rules, then its tags (the marker is the caller's to add).
    fn labels_for(&self, account: &OrgAccount) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        for rule in &self.ou_labels {
            if within(&account.ou_path, &rule.ou) {
                for (name, value) in &rule.labels {
                    if let Ok(key) = Self::label_key(name) {
                        labels.insert(key, value.clone());
                    }
                }
            }
        }
        for tag in &self.tag_labels {
            if let (Some(value), Ok(key)) = (account.tags.get(tag), Self::label_key(tag))
                && let Some(value) = label_value(value)
            {
                labels.insert(key, value);
            }
        }
        labels
    }
}

/// Whether `path` is the OU `ou` or below it.
fn within(path: &str, ou: &str) -> bool {
    let ou = ou.trim_end_matches('/');
    path == ou
        || path
            .strip_prefix(ou)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Longest label value.
const MAX_VALUE_LEN: usize = 63;

/// A tag's value as a label value: runs of characters a label may not hold become `-`, the ends are trimmed to a
/// letter or digit, 63 characters at most. `None` when nothing is left.
fn label_value(tag: &str) -> Option<String> {
    let mut value = String::new();
    for c in tag.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
            value.push(c);
        } else if !value.ends_with('-') {
            value.push('-');
        }
    }
    let value: String = value
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .chars()
        .take(MAX_VALUE_LEN)
        .collect();
    let value = value.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    (!value.is_empty()).then(|| value.to_owned())
}

/// What discovery does (or, in a dry run, would do) about one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryAction {
    /// New in the organization: registered with this spec.
    Register(AccountSpec),
    /// Registered, with other discovered labels: the account's whole label set after the change.
    Relabel { version: i64, labels: Labels },
    /// Registered and already as discovery would have it.
    Unchanged,
    /// Discovered earlier, now suspended, closed or gone from the organization: deregistered (with `prune`).
    Deregister { version: i64 },
    /// Would be deregistered, but `prune` was not asked for.
    Left,
    /// Would be deregistered, but has change requests in flight.
    InFlight,
    /// Not registered, and not registrable (suspended, no enabled region, ...): the notes say why.
    Skipped,
}

impl DiscoveryAction {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Register(_) => "REGISTER",
            Self::Relabel { .. } => "RELABEL",
            Self::Unchanged => "UNCHANGED",
            Self::Deregister { .. } => "DEREGISTER",
            Self::Left => "LEFT",
            Self::InFlight => "IN_FLIGHT",
            Self::Skipped => "SKIPPED",
        }
    }

    /// Whether applying the plan writes anything for this account.
    pub fn writes(&self) -> bool {
        matches!(
            self,
            Self::Register(_) | Self::Relabel { .. } | Self::Deregister { .. }
        )
    }
}

impl fmt::Display for DiscoveryAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One account's line of a discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub account_id: String,
    /// The organization's name for it (empty for an account no longer there).
    pub name: String,
    pub ou_path: String,
    pub action: DiscoveryAction,
    /// What changes and why, in words: `+org.tablecrypt/team=payments`, `eu-south-1 is not enabled`.
    pub notes: Vec<String>,
}

/// States in which an account's member role cannot be used.
fn gone_state(state: &str) -> Option<&'static str> {
    match state {
        "SUSPENDED" => Some("suspended"),
        "PENDING_CLOSURE" => Some("closing"),
        "CLOSED" => Some("closed"),
        _ => None,
    }
}

/// The changes the organization calls for, one line per organization account and per discovered account that
/// left it, ordered by account id. `in_flight` holds the registered accounts with change requests in flight.
pub fn plan(
    organization: &[OrgAccount],
    registered: &[Account],
    rules: &DiscoveryRules,
    prune: bool,
    in_flight: &BTreeSet<String>,
) -> Vec<Discovered> {
    let by_id: BTreeMap<&str, &Account> = registered
        .iter()
        .map(|a| (a.account_id.as_str(), a))
        .collect();
    let mut lines = Vec::new();
    let mut seen = BTreeSet::new();
    for account in organization {
        seen.insert(account.account_id.as_str());
        let line = |action, notes| Discovered {
            account_id: account.account_id.clone(),
            name: account.name.clone(),
            ou_path: account.ou_path.clone(),
            action,
            notes,
        };
        let current = by_id.get(account.account_id.as_str()).copied();
        if let Some(why) = gone_state(&account.state) {
            lines.push(match current {
                Some(current) if discovered(current) => {
                    let (action, notes) =
                        leaving(current, prune, in_flight, format!("the account is {why}"));
                    line(action, notes)
                }
                Some(_) => line(
                    DiscoveryAction::Unchanged,
                    vec![format!(
                        "the account is {why}; it was registered by hand, so discovery leaves it"
                    )],
                ),
                None => line(
                    DiscoveryAction::Skipped,
                    vec![format!("the account is {why}")],
                ),
            });
            continue;
        }
        let (action, notes) = match current {
            Some(current) => {
                // Only an account discovery registered carries the marker (and may be pruned); one registered by
                // hand is adopted, its labels kept up to date, but stays the operator's to remove.
                let mut labels = rules.labels_for(account);
                if discovered(current) {
                    labels.insert(DISCOVERED_MARKER.to_owned(), "true".to_owned());
                }
                relabel(current, labels)
            }
            None if account.state == "ACTIVE" => register(account, rules),
            None => (
                DiscoveryAction::Skipped,
                vec![format!(
                    "the account is {}",
                    account.state.to_lowercase().replace('_', " ")
                )],
            ),
        };
        lines.push(line(action, notes));
    }
    for account in registered {
        if seen.contains(account.account_id.as_str()) || !discovered(account) {
            continue;
        }
        let (action, notes) = leaving(
            account,
            prune,
            in_flight,
            "the account is no longer in the organization".to_owned(),
        );
        lines.push(Discovered {
            account_id: account.account_id.to_string(),
            name: account.spec.display_name.as_str().to_owned(),
            ou_path: String::new(),
            action,
            notes,
        });
    }
    lines.sort_by(|a, b| a.account_id.cmp(&b.account_id));
    lines
}

fn discovered(account: &Account) -> bool {
    account.spec.labels.get(DISCOVERED_MARKER).is_some()
}

fn leaving(
    account: &Account,
    prune: bool,
    in_flight: &BTreeSet<String>,
    why: String,
) -> (DiscoveryAction, Vec<String>) {
    if !prune {
        (
            DiscoveryAction::Left,
            vec![why, "prune deregisters it".to_owned()],
        )
    } else if in_flight.contains(account.account_id.as_str()) {
        (
            DiscoveryAction::InFlight,
            vec![
                why,
                "not deregistered: it has change requests in flight (finish or cancel them, then prune again)"
                    .to_owned(),
            ],
        )
    } else {
        (
            DiscoveryAction::Deregister {
                version: account.version,
            },
            vec![why],
        )
    }
}

/// A registered account's labels with its discovered ones replaced.
fn relabel(
    current: &Account,
    discovered: BTreeMap<String, String>,
) -> (DiscoveryAction, Vec<String>) {
    let old = current.spec.labels.as_map();
    let mut labels: BTreeMap<String, String> = old
        .iter()
        .filter(|(k, _)| !is_discovered_label(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.extend(discovered);
    if &labels == old {
        return (DiscoveryAction::Unchanged, Vec::new());
    }
    let notes = label_changes(old, &labels);
    if labels.len() > MAX_LABELS {
        // Only an account given more than MAX_CALLER_LABELS before that limit existed.
        return (
            DiscoveryAction::Skipped,
            vec![format!(
                "the account would carry {} labels, more than {MAX_LABELS}: not relabelled (remove some of its own \
                 labels)",
                labels.len()
            )],
        );
    }
    match Labels::parse(labels.iter()) {
        Ok(labels) => (
            DiscoveryAction::Relabel {
                version: current.version,
                labels,
            },
            notes,
        ),
        Err(e) => (DiscoveryAction::Skipped, vec![format!("labels: {e}")]),
    }
}

/// `+key=value`, `-key`, `key: old -> new`, for the labels that differ.
fn label_changes(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<String> {
    let mut notes = Vec::new();
    for (key, value) in new {
        match old.get(key) {
            None => notes.push(format!("+{key}={value}")),
            Some(was) if was != value => notes.push(format!("{key}: {was} -> {value}")),
            Some(_) => {}
        }
    }
    for key in old.keys().filter(|k| !new.contains_key(*k)) {
        notes.push(format!("-{key}"));
    }
    notes
}

fn register(account: &OrgAccount, rules: &DiscoveryRules) -> (DiscoveryAction, Vec<String>) {
    let skipped = |why: String| (DiscoveryAction::Skipped, vec![why]);
    let account_id = match AccountId::parse(&account.account_id) {
        Ok(id) => id,
        Err(e) => return skipped(format!("account id {e}")),
    };
    let role = match rules.member_role.role_for(&account_id) {
        Ok(role) => role,
        Err(e) => return skipped(format!("member role {e}")),
    };
    let mut notes = Vec::new();
    let regions: Vec<String> = match &account.enabled_regions {
        Ok(enabled) => {
            let (kept, off): (Vec<String>, Vec<String>) = rules
                .regions
                .names()
                .into_iter()
                .partition(|r| enabled.contains(r));
            if !off.is_empty() {
                notes.push(format!("not enabled in the account: {}", off.join(", ")));
            }
            kept
        }
        Err(why) => {
            notes.push(format!(
                "enabled regions not read ({why}): the configured regions are used"
            ));
            rules.regions.names()
        }
    };
    if regions.is_empty() {
        return skipped(format!(
            "none of the configured regions ({}) is enabled in the account",
            rules.regions.names().join(", ")
        ));
    }
    let Ok(regions) = Regions::parse(&regions) else {
        return skipped("its regions are not valid".to_owned());
    };
    let mut labels_map = rules.labels_for(account);
    labels_map.insert(DISCOVERED_MARKER.to_owned(), "true".to_owned());
    let labels = match Labels::parse(labels_map.iter()) {
        Ok(labels) => labels,
        Err(e) => return skipped(format!("labels: {e}")),
    };
    let display_name: String = account
        .name
        .chars()
        .filter(|c| !c.is_control())
        .take(crate::display_name::MAX_DISPLAY_NAME_CHARS)
        .collect();
    let display_name = DisplayName::parse(display_name.trim()).unwrap_or_default();
    match AccountSpec::new(
        &account_id,
        display_name,
        role.clone(),
        rules.member_external_id.clone(),
        regions.clone(),
        labels,
        AccountLimits::default(),
    ) {
        Ok(spec) => {
            notes.insert(0, format!("role {role}"));
            notes.insert(1, format!("regions {}", regions.names().join(", ")));
            notes.extend(label_changes(&BTreeMap::new(), &labels_map));
            (DiscoveryAction::Register(spec), notes)
        }
        Err(e) => skipped(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> DiscoveryRules {
        DiscoveryRules {
            member_role: RolePattern::parse("arn:aws:iam::{account_id}:role/tablecrypt-member")
                .expect("pattern"),
            member_external_id: None,
            regions: Regions::parse(&["eu-west-1", "us-east-1"]).expect("regions"),
            tag_labels: vec!["team".into()],
            ou_labels: vec![
                OuLabels {
                    ou: "Root/Workloads".into(),
                    labels: BTreeMap::from([("env".into(), "prod".into())]),
                },
                OuLabels {
                    ou: "Root/Workloads/Sandbox/".into(),
                    labels: BTreeMap::from([("env".into(), "sandbox".into())]),
                },
            ],
        }
    }

    fn org(id: &str, state: &str, ou: &str, tags: &[(&str, &str)]) -> OrgAccount {
        OrgAccount {
            account_id: id.into(),
            name: format!("acct {id}"),
            state: state.into(),
            ou_path: ou.into(),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            enabled_regions: Ok(["eu-west-1".to_owned(), "us-east-1".to_owned()].into()),
        }
    }

    fn registered(id: &str, labels: &[(&str, &str)]) -> Account {
        let id = AccountId::parse(id).expect("id");
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        Account {
            spec: AccountSpec::new(
                &id,
                DisplayName::default(),
                RoleArn::parse(&format!("arn:aws:iam::{id}:role/by-hand")).expect("role"),
                None,
                Regions::parse(&["eu-west-1"]).expect("regions"),
                Labels::parse(labels.iter()).expect("labels"),
                AccountLimits::default(),
            )
            .expect("spec"),
            account_id: id,
            create_time: chrono::Utc::now(),
            update_time: chrono::Utc::now(),
            version: 3,
        }
    }

    fn actions(lines: &[Discovered]) -> Vec<(&str, &str)> {
        lines
            .iter()
            .map(|l| (l.account_id.as_str(), l.action.as_str()))
            .collect()
    }

    #[test]
    fn a_new_account_is_registered_with_the_pattern_role_its_enabled_regions_and_prefixed_labels() {
        let mut account = org(
            "111111111111",
            "ACTIVE",
            "Root/Workloads/Payments",
            &[("team", "Payments Team")],
        );
        account.enabled_regions = Ok(["us-east-1".to_owned()].into());
        let lines = plan(&[account], &[], &rules(), false, &BTreeSet::new());
        let DiscoveryAction::Register(spec) = &lines[0].action else {
            panic!("{lines:?}");
        };
        assert_eq!(
            spec.role_arn.as_str(),
            "arn:aws:iam::111111111111:role/tablecrypt-member"
        );
        assert_eq!(spec.regions.names(), ["us-east-1"]);
        assert_eq!(spec.labels.get("org.tablecrypt/env"), Some("prod"));
        assert_eq!(
            spec.labels.get("org.tablecrypt/team"),
            Some("Payments-Team")
        );
        assert_eq!(spec.labels.get(DISCOVERED_MARKER), Some("true"));
        assert_eq!(spec.display_name.as_str(), "acct 111111111111");
        assert!(
            lines[0]
                .notes
                .iter()
                .any(|n| n == "not enabled in the account: eu-west-1"),
            "{:?}",
            lines[0].notes
        );
    }

    #[test]
    fn a_later_ou_rule_wins_and_a_sibling_ou_with_a_common_prefix_does_not_match() {
        let sandbox = org("111111111111", "ACTIVE", "Root/Workloads/Sandbox/Team", &[]);
        let lookalike = org("222222222222", "ACTIVE", "Root/WorkloadsOld", &[]);
        let lines = plan(
            &[sandbox, lookalike],
            &[],
            &rules(),
            false,
            &BTreeSet::new(),
        );
        let labels = |i: usize| match &lines[i].action {
            DiscoveryAction::Register(spec) => spec.labels.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(labels(0).get("org.tablecrypt/env"), Some("sandbox"));
        assert_eq!(labels(1).get("org.tablecrypt/env"), None);
    }

    #[test]
    fn a_moved_account_is_relabelled_and_keeps_its_own_labels() {
        let current = registered(
            "111111111111",
            &[
                ("owner", "alice"),
                (DISCOVERED_MARKER, "true"),
                ("org.tablecrypt/env", "sandbox"),
                ("org.tablecrypt/old", "x"),
            ],
        );
        let moved = org("111111111111", "ACTIVE", "Root/Workloads/Payments", &[]);
        let lines = plan(&[moved], &[current], &rules(), false, &BTreeSet::new());
        let DiscoveryAction::Relabel { version, labels } = &lines[0].action else {
            panic!("{lines:?}");
        };
        assert_eq!(*version, 3);
        assert_eq!(labels.get("owner"), Some("alice"));
        assert_eq!(labels.get("org.tablecrypt/env"), Some("prod"));
        assert_eq!(labels.get("org.tablecrypt/old"), None);
        assert_eq!(
            lines[0].notes,
            ["org.tablecrypt/env: sandbox -> prod", "-org.tablecrypt/old"]
        );
    }

    #[test]
    fn an_account_as_discovery_would_have_it_is_unchanged() {
        let current = registered(
            "111111111111",
            &[(DISCOVERED_MARKER, "true"), ("org.tablecrypt/env", "prod")],
        );
        let same = org("111111111111", "ACTIVE", "Root/Workloads", &[]);
        let lines = plan(&[same], &[current], &rules(), true, &BTreeSet::new());
        assert_eq!(actions(&lines), [("111111111111", "UNCHANGED")]);
    }

    #[test]
    fn suspended_and_departed_accounts_are_pruned_only_when_asked_and_not_in_flight() {
        let marker = [(DISCOVERED_MARKER, "true")];
        let registry = [
            registered("111111111111", &marker),
            registered("222222222222", &marker),
            registered("333333333333", &marker),
            registered("444444444444", &[("owner", "bob")]),
        ];
        let organization = [
            org("111111111111", "SUSPENDED", "Root", &[]),
            org("555555555555", "SUSPENDED", "Root", &[]),
        ];
        let in_flight = BTreeSet::from(["333333333333".to_owned()]);
        let lines = plan(&organization, &registry, &rules(), false, &in_flight);
        assert_eq!(
            actions(&lines),
            [
                ("111111111111", "LEFT"),
                ("222222222222", "LEFT"),
                ("333333333333", "LEFT"),
                ("555555555555", "SKIPPED"),
            ]
        );
        let lines = plan(&organization, &registry, &rules(), true, &in_flight);
        assert_eq!(
            actions(&lines),
            [
                ("111111111111", "DEREGISTER"),
                ("222222222222", "DEREGISTER"),
                ("333333333333", "IN_FLIGHT"),
                ("555555555555", "SKIPPED"),
            ]
        );
        assert_eq!(lines[0].notes, ["the account is suspended"]);
        assert_eq!(
            lines[1].notes,
            ["the account is no longer in the organization"]
        );
    }

    #[test]
    fn an_account_registered_by_hand_is_adopted_but_never_pruned() {
        let by_hand = registered("111111111111", &[("owner", "bob")]);
        let lines = plan(
            &[org("111111111111", "ACTIVE", "Root/Workloads", &[])],
            std::slice::from_ref(&by_hand),
            &rules(),
            true,
            &BTreeSet::new(),
        );
        assert_eq!(actions(&lines), [("111111111111", "RELABEL")]);
        let DiscoveryAction::Relabel { labels, .. } = &lines[0].action else {
            panic!("{lines:?}");
        };
        assert_eq!(
            labels.get(DISCOVERED_MARKER),
            None,
            "adopted, not discovered"
        );
        // Adopted (its discovered labels written), then suspended: still never pruned.
        let adopted = Account {
            spec: AccountSpec {
                labels: labels.clone(),
                ..by_hand.spec.clone()
            },
            ..by_hand.clone()
        };
        for registry in [by_hand, adopted] {
            let lines = plan(
                &[org("111111111111", "SUSPENDED", "Root", &[])],
                std::slice::from_ref(&registry),
                &rules(),
                true,
                &BTreeSet::new(),
            );
            assert_eq!(actions(&lines), [("111111111111", "UNCHANGED")]);
            let lines = plan(&[], &[registry], &rules(), true, &BTreeSet::new());
            assert!(lines.is_empty(), "{lines:?}");
        }
    }

    #[test]
    fn rule_names_may_not_overlap_a_tag_or_the_marker_and_fit_the_budget() {
        assert_eq!(rules().check_names(), Ok(()));
        let mut overlap = rules();
        overlap.tag_labels.push("env".into());
        assert!(
            overlap
                .check_names()
                .expect_err("overlap")
                .contains("\"env\"")
        );
        let mut marker = rules();
        marker.tag_labels = vec!["discovered".into()];
        assert!(marker.check_names().is_err());
        let mut many = rules();
        many.tag_labels = (0..MAX_DISCOVERED_LABELS)
            .map(|i| format!("t{i}"))
            .collect();
        assert!(many.check_names().is_err());
    }

    #[test]
    fn ou_paths_match_whole_segments() {
        assert!(within("Root/Workloads", "Root/Workloads/"));
        assert!(within("Root/Workloads/Payments", "Root"));
        assert!(!within("Root/WorkloadsOld", "Root/Workloads"));
        assert_eq!(path_segment("Workloads/Payments"), "Workloads%2FPayments");
        assert!(!within(
            &format!("Root/{}", path_segment("Workloads/Payments")),
            "Root/Workloads"
        ));
    }

    #[test]
    fn an_account_without_an_enabled_configured_region_is_skipped_and_unread_regions_fall_back() {
        let mut none = org("111111111111", "ACTIVE", "Root", &[]);
        none.enabled_regions = Ok(["ap-east-1".to_owned()].into());
        let mut unread = org("222222222222", "ACTIVE", "Root", &[]);
        unread.enabled_regions = Err("AccessDenied".into());
        let lines = plan(&[none, unread], &[], &rules(), false, &BTreeSet::new());
        assert_eq!(
            actions(&lines),
            [("111111111111", "SKIPPED"), ("222222222222", "REGISTER")]
        );
        assert!(
            lines[0].notes[0].contains("none of the configured regions"),
            "{:?}",
            lines[0].notes
        );
        assert!(
            lines[1].notes.iter().any(|n| n.contains("AccessDenied")),
            "{:?}",
            lines[1].notes
        );
    }

    #[test]
    fn role_patterns_must_name_the_account() {
        assert!(RolePattern::parse("arn:aws:iam::123456789012:role/x").is_err());
        assert!(RolePattern::parse("arn:aws:iam::111111111111:role/{account_id}").is_err());
        assert!(RolePattern::parse("arn:aws:iam::{account_id}:role/x").is_ok());
        assert!(RolePattern::parse("arn:aws-cn:iam::{account_id}:role/x").is_ok());
    }

    #[test]
    fn tag_values_become_label_values() {
        assert_eq!(
            label_value("Payments Team").as_deref(),
            Some("Payments-Team")
        );
        assert_eq!(label_value("  ##  ").as_deref(), None);
        assert_eq!(label_value("a/b:c").as_deref(), Some("a-b-c"));
        assert_eq!(label_value(&"x".repeat(100)).map(|v| v.len()), Some(63));
        assert_eq!(
            label_value(&format!("{}.-y", "x".repeat(62))).as_deref(),
            Some("x".repeat(62).as_str())
        );
    }
}
