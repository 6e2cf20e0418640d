//! A behaviour profile file: every behaviour switch as `fleet-emulator calibrate` measured it in one real account,
//! with where and when. The emulator loads one with `behaviour_profile: FILE` in the fleet file (or
//! `--behaviour-profile FILE`), so tests run against "what your AWS did last Tuesday".
//!
//! ```yaml
//! measured: {account_id: "123456789012", regions: [eu-west-1, us-east-1], endpoint: AWS, ...}
//! behaviour: {profile: aws-observed, sse_change_table_status: ACTIVE, old_key_visible_seconds: 8.0, ...}
//! undetermined: []            # switches the run could not observe: the base profile's value stands
//! observations: {quota_refusal: "...", ...}   # measured facts no switch models, for the reader
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::behaviour::Behaviour;

/// Where and when a profile was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The account the calibration ran in.
    pub account_id: String,
    /// The region of the tables, then the region of the global table's replica.
    pub regions: Vec<String>,
    /// `AWS` for AWS's own endpoints, else the endpoint URL the run was pointed at (an emulator, a VPC endpoint).
    pub endpoint: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    /// The calibration run: names every resource it created (`tc-calibrate-<run_id>-...`).
    pub run_id: String,
    /// The program and version that measured it.
    pub tool: String,
}

/// A calibrated behaviour profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BehaviourProfile {
    pub measured: Provenance,
    /// Every switch, set (`Behaviour::resolved`).
    pub behaviour: Behaviour,
    /// Switches the run could not decide: they keep the value of `behaviour.profile`.
    #[serde(default)]
    pub undetermined: Vec<String>,
    /// Measured facts that no switch models (message texts, durations), for the reader.
    #[serde(default)]
    pub observations: BTreeMap<String, String>,
}

impl BehaviourProfile {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read behaviour profile {}", path.display()))?;
        Self::from_yaml(&text)
            .with_context(|| format!("invalid behaviour profile {}", path.display()))
    }

    pub fn from_yaml(text: &str) -> anyhow::Result<Self> {
        let mut profile: Self = serde_norway::from_str(text)?;
        profile.behaviour = profile.behaviour.resolved();
        Ok(profile)
    }

    pub fn to_yaml(&self) -> anyhow::Result<String> {
        let body = serde_norway::to_string(self)?;
        Ok(format!(
            "# A fleet-emulator behaviour profile, measured by `fleet-emulator calibrate` (run {}) in account {} \
             on {}.\n# Load it with `behaviour_profile: FILE` in a fleet file or `--behaviour-profile FILE`.\n{body}",
            self.measured.run_id,
            self.measured.account_id,
            self.measured.started.format("%Y-%m-%d"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::behaviour::KeyRefusal;

    #[test]
    fn a_profile_round_trips_through_yaml_with_every_switch_set() {
        let profile = BehaviourProfile {
            measured: Provenance {
                account_id: "123456789012".to_owned(),
                regions: vec!["eu-west-1".to_owned(), "us-east-1".to_owned()],
                endpoint: "AWS".to_owned(),
                started: "2026-12-01T10:00:00Z".parse().expect("time"),
                finished: "2026-12-01T10:40:00Z".parse().expect("time"),
                run_id: "20261201t1000-ab12".to_owned(),
                tool: "fleet-emulator 0.1.0".to_owned(),
            },
            behaviour: Behaviour::aws_observed().resolved(),
            undetermined: vec![],
            observations: BTreeMap::from([("quota_message".to_owned(), "x".to_owned())]),
        };
        let text = profile.to_yaml().expect("yaml");
        assert!(
            text.starts_with("# A fleet-emulator behaviour profile"),
            "{text}"
        );
        assert_eq!(BehaviourProfile::from_yaml(&text).expect("loads"), profile);
        // A hand-written profile that leaves switches out gets its named profile's values for them.
        let partial = text.replace("  key_refusal: as_observed\n", "");
        assert_ne!(partial, text);
        let loaded = BehaviourProfile::from_yaml(&partial).expect("loads");
        assert_eq!(loaded.behaviour.key_refusal, Some(KeyRefusal::AsObserved));
        assert!(BehaviourProfile::from_yaml(&text.replace("measured:", "measurd:")).is_err());
    }
}
