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

/// An UpdateTable that changes encryption together with anything else (`ReplicaUpdates`, throughput, streams).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MixedUpdate {
    /// Every part applied (the emulator's first behaviour).
    Accepted,
    /// ValidationException: "... must be the only operation in the request" (observed).
    Refused,
}

/// What an AWS managed or AWS owned SSESpecification does on one replica of a global table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GlobalSseScope {
    /// Only the replica it was sent to changes; AWS managed on a group of customer managed keys is refused.
    OneRegion,
    /// Every replica changes, each to its own region's AWS managed key or to the AWS owned key (observed).
    AllReplicas,
}

/// Changing a table away from a current key DynamoDB cannot use (disabled, pending deletion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnusableOldKey {
    /// Accepted: the table heals onto the new key.
    Accepted,
    /// Refused naming the OLD key: only re-enabling it rescues the table (documented and observed).
    Refused,
}

/// An SSESpecification naming the table's current key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CurrentKeyResend {
    /// ValidationException "already encrypted" however the key is named.
    AlwaysRefused,
    /// Refused only as the exact key ARN; an alias, a key id or `{Enabled: true}` on an AWS managed table is
    /// accepted, re-encrypts and spends a switch (observed).
    RefusedByArnOnly,
}

/// Which UpdateTable check comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaCheck {
    /// The key is validated first; the quota message is generic.
    AfterKeyValidation,
    /// The switch quota is checked before the key, and its message names when the next change is allowed
    /// (observed).
    BeforeKeyValidation,
}

/// How UpdateTable refuses a key DynamoDB cannot use for reasons of its kind or owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyRefusal {
    /// ValidationException naming the problem.
    Validation,
    /// As observed: an asymmetric key is HTTP 500 InternalServerError (a failed KMS grant); another account's
    /// key is AccessDeniedException.
    AsObserved,
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
    pub sse_with_other_changes: Option<MixedUpdate>,
    pub global_sse_scope: Option<GlobalSseScope>,
    pub unusable_old_key: Option<UnusableOldKey>,
    pub current_key_resend: Option<CurrentKeyResend>,
    pub quota_check: Option<QuotaCheck>,
    pub key_refusal: Option<KeyRefusal>,
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

    /// The switch's value: the override if set, else the profile's.
    fn pick<T>(&self, set: Option<T>, optimistic: T, observed: T) -> T {
        set.unwrap_or(if self.observed() {
            observed
        } else {
            optimistic
        })
    }

    /// Every switch set to the value in force: what a behaviour profile file records, and what a calibration
    /// run is compared against.
    pub fn resolved(&self) -> Self {
        Self {
            profile: self.profile,
            sse_change_table_status: Some(self.sse_change_table_status()),
            old_key_visible_seconds: Some(self.old_key_visible_seconds()),
            sse_status_names: Some(self.sse_status_names()),
            identical_update_during_change: Some(self.identical_update_during_change()),
            sse_with_other_changes: Some(self.sse_with_other_changes()),
            global_sse_scope: Some(self.global_sse_scope()),
            unusable_old_key: Some(self.unusable_old_key()),
            current_key_resend: Some(self.current_key_resend()),
            quota_check: Some(self.quota_check()),
            key_refusal: Some(self.key_refusal()),
        }
    }

    /// These switches with every switch `overrides` sets put over them (its `profile` is not used).
    pub fn overlay(&self, overrides: &Self) -> Self {
        Self {
            profile: self.profile,
            sse_change_table_status: overrides
                .sse_change_table_status
                .or(self.sse_change_table_status),
            old_key_visible_seconds: overrides
                .old_key_visible_seconds
                .or(self.old_key_visible_seconds),
            sse_status_names: overrides.sse_status_names.or(self.sse_status_names),
            identical_update_during_change: overrides
                .identical_update_during_change
                .or(self.identical_update_during_change),
            sse_with_other_changes: overrides
                .sse_with_other_changes
                .or(self.sse_with_other_changes),
            global_sse_scope: overrides.global_sse_scope.or(self.global_sse_scope),
            unusable_old_key: overrides.unusable_old_key.or(self.unusable_old_key),
            current_key_resend: overrides.current_key_resend.or(self.current_key_resend),
            quota_check: overrides.quota_check.or(self.quota_check),
            key_refusal: overrides.key_refusal.or(self.key_refusal),
        }
    }

    pub fn sse_with_other_changes(&self) -> MixedUpdate {
        self.pick(
            self.sse_with_other_changes,
            MixedUpdate::Accepted,
            MixedUpdate::Refused,
        )
    }

    pub fn global_sse_scope(&self) -> GlobalSseScope {
        self.pick(
            self.global_sse_scope,
            GlobalSseScope::OneRegion,
            GlobalSseScope::AllReplicas,
        )
    }

    pub fn unusable_old_key(&self) -> UnusableOldKey {
        self.pick(
            self.unusable_old_key,
            UnusableOldKey::Accepted,
            UnusableOldKey::Refused,
        )
    }

    pub fn current_key_resend(&self) -> CurrentKeyResend {
        self.pick(
            self.current_key_resend,
            CurrentKeyResend::AlwaysRefused,
            CurrentKeyResend::RefusedByArnOnly,
        )
    }

    pub fn quota_check(&self) -> QuotaCheck {
        self.pick(
            self.quota_check,
            QuotaCheck::AfterKeyValidation,
            QuotaCheck::BeforeKeyValidation,
        )
    }

    pub fn key_refusal(&self) -> KeyRefusal {
        self.pick(
            self.key_refusal,
            KeyRefusal::Validation,
            KeyRefusal::AsObserved,
        )
    }

    pub fn sse_change_table_status(&self) -> ChangeTableStatus {
        self.pick(
            self.sse_change_table_status,
            ChangeTableStatus::Updating,
            ChangeTableStatus::Active,
        )
    }

    /// Observed: 8-9 s.
    pub fn old_key_visible_seconds(&self) -> f64 {
        self.pick(self.old_key_visible_seconds, 0.0, 8.0).max(0.0)
    }

    pub fn sse_status_names(&self) -> SseStatusNames {
        self.pick(
            self.sse_status_names,
            SseStatusNames::EnablingDisabling,
            SseStatusNames::UpdatingOnly,
        )
    }

    pub fn identical_update_during_change(&self) -> IdenticalUpdate {
        self.pick(
            self.identical_update_during_change,
            IdenticalUpdate::Refused,
            IdenticalUpdate::Accepted,
        )
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
        assert_eq!(observed.sse_with_other_changes(), MixedUpdate::Refused);
        assert_eq!(observed.global_sse_scope(), GlobalSseScope::AllReplicas);
        assert_eq!(observed.unusable_old_key(), UnusableOldKey::Refused);
        assert_eq!(
            observed.current_key_resend(),
            CurrentKeyResend::RefusedByArnOnly
        );
        assert_eq!(observed.quota_check(), QuotaCheck::BeforeKeyValidation);
        assert_eq!(observed.key_refusal(), KeyRefusal::AsObserved);
        assert_eq!(optimistic.sse_with_other_changes(), MixedUpdate::Accepted);
        assert_eq!(optimistic.global_sse_scope(), GlobalSseScope::OneRegion);
        let refused: Behaviour =
            serde_norway::from_str("{profile: optimistic, unusable_old_key: refused}")
                .expect("yaml");
        assert_eq!(refused.unusable_old_key(), UnusableOldKey::Refused);
        assert_eq!(refused.key_refusal(), KeyRefusal::Validation);
        assert!(serde_norway::from_str::<Behaviour>("{profile: pessimistic}").is_err());
        assert!(serde_norway::from_str::<Behaviour>("{old_key_seconds: 3}").is_err());
    }

    #[test]
    fn resolved_sets_every_switch_and_overlay_keeps_what_is_not_overridden() {
        let observed = Behaviour::aws_observed().resolved();
        assert_eq!(observed.old_key_visible_seconds, Some(8.0));
        assert_eq!(observed.key_refusal, Some(KeyRefusal::AsObserved));
        let text = serde_norway::to_string(&observed).expect("yaml");
        assert!(!text.contains("null"), "{text}");
        // Resolving a resolved behaviour changes nothing, whatever its named profile says.
        let mut renamed = observed.clone();
        renamed.profile = Profile::Optimistic;
        assert_eq!(renamed.resolved().key_refusal, Some(KeyRefusal::AsObserved));
        let overrides = Behaviour {
            old_key_visible_seconds: Some(3.0),
            ..Behaviour::default()
        };
        let merged = observed.overlay(&overrides);
        assert_eq!(merged.old_key_visible_seconds(), 3.0);
        assert_eq!(merged.sse_change_table_status(), ChangeTableStatus::Active);
        assert_eq!(merged.profile, Profile::AwsObserved);
    }
}
