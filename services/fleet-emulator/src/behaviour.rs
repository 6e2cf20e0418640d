//! Switches for what AWS does around an encryption change where our sources disagree or only observation tells
//! (../shared/AWS-BEHAVIOURS.md), so tablecrypt can be proven correct under every plausible version. A named
//! profile sets every switch; a switch given beside it overrides the profile's value.
//!
//! ```yaml
//! behaviour: {profile: aws-observed}                          # every switch at AWS's observed value
//! behaviour: {profile: optimistic, old_key_visible_seconds: 8} # today's emulator, plus one observed quirk
//! ```

use serde::{Deserialize, Serialize};

/// A named set of switch values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// The emulator's first behaviour: a change shows at once, as the generic UpdateTable documentation reads.
    #[default]
    Optimistic,
    /// Every switch at the value observed on real accounts, or the most hostile plausible one.
    AwsObserved,
}

/// TableStatus while an SSE-only change runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeTableStatus {
    /// As the generic UpdateTable documentation says.
    Updating,
    /// As observed: the table stays ACTIVE during an SSE-only change.
    Active,
}

/// SSEDescription.Status names during a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SseStatusNames {
    /// ENABLING (to a KMS key from the owned key), DISABLING (back), UPDATING (between KMS keys).
    EnablingDisabling,
    /// UPDATING only: the enum documents ENABLING/DISABLING but AWS does not emit them.
    UpdatingOnly,
}

/// An UpdateTable identical to the change in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdenticalUpdate {
    /// ResourceInUseException, like any change during a change.
    Refused,
    /// HTTP 200, nothing more happens (observed).
    Accepted,
}

/// The behaviour section of a fleet file (and of the admin API's settings).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Behaviour {
    pub profile: Profile,
    /// Overrides: `None` takes the profile's value.
    pub sse_change_table_status: Option<ChangeTableStatus>,
    /// Seconds after an accepted UpdateTable during which DescribeTable still shows the old key, Status ENABLED.
    pub old_key_visible_seconds: Option<f64>,
    pub sse_status_names: Option<SseStatusNames>,
    pub identical_update_during_change: Option<IdenticalUpdate>,
}

impl Behaviour {
    pub fn aws_observed() -> Self {
        Self {
            profile: Profile::AwsObserved,
            ..Self::default()
        }
    }

    fn observed(&self) -> bool {
        self.profile == Profile::AwsObserved
    }

    pub fn sse_change_table_status(&self) -> ChangeTableStatus {
        self.sse_change_table_status.unwrap_or(if self.observed() {
            ChangeTableStatus::Active
        } else {
            ChangeTableStatus::Updating
        })
    }

    /// Observed: 8-9 s.
    pub fn old_key_visible_seconds(&self) -> f64 {
        self.old_key_visible_seconds
            .unwrap_or(if self.observed() { 8.0 } else { 0.0 })
            .max(0.0)
    }

    pub fn sse_status_names(&self) -> SseStatusNames {
        self.sse_status_names.unwrap_or(if self.observed() {
            SseStatusNames::UpdatingOnly
        } else {
            SseStatusNames::EnablingDisabling
        })
    }

    pub fn identical_update_during_change(&self) -> IdenticalUpdate {
        self.identical_update_during_change
            .unwrap_or(if self.observed() {
                IdenticalUpdate::Accepted
            } else {
                IdenticalUpdate::Refused
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_sets_every_switch_and_a_switch_overrides_it() {
        let optimistic = Behaviour::default();
        assert_eq!(
            optimistic.sse_change_table_status(),
            ChangeTableStatus::Updating
        );
        assert_eq!(optimistic.old_key_visible_seconds(), 0.0);
        let observed: Behaviour = serde_norway::from_str("{profile: aws-observed}").expect("yaml");
        assert_eq!(observed, Behaviour::aws_observed());
        assert_eq!(
            observed.sse_change_table_status(),
            ChangeTableStatus::Active
        );
        assert_eq!(observed.old_key_visible_seconds(), 8.0);
        assert_eq!(observed.sse_status_names(), SseStatusNames::UpdatingOnly);
        assert_eq!(
            observed.identical_update_during_change(),
            IdenticalUpdate::Accepted
        );
        let mixed: Behaviour =
            serde_norway::from_str("{profile: optimistic, old_key_visible_seconds: 3}")
                .expect("yaml");
        assert_eq!(mixed.old_key_visible_seconds(), 3.0);
        assert_eq!(mixed.sse_change_table_status(), ChangeTableStatus::Updating);
        assert!(serde_norway::from_str::<Behaviour>("{profile: pessimistic}").is_err());
        assert!(serde_norway::from_str::<Behaviour>("{old_key_seconds: 3}").is_err());
    }
}
