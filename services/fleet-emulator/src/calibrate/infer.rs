//! From what a calibration run saw to the value of each behaviour switch: pure, so every rule is unit-tested with
//! the answers AWS is reported to give.

use std::collections::BTreeMap;

use crate::behaviour::{
    Behaviour, ChangeTableStatus, CurrentKeyResend, GlobalSseScope, IdenticalUpdate, KeyRefusal,
    MixedUpdate, Profile, QuotaCheck, SseStatusNames, UnusableOldKey,
};

/// One answer of AWS to a call, as the run saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answer {
    /// The HTTP status; 0 when no response came (a timeout, a connection error).
    pub status: u16,
    /// The error code (`ValidationException`); `None` for a success.
    pub code: Option<String>,
    pub message: Option<String>,
}

impl Answer {
    pub fn ok() -> Self {
        Self {
            status: 200,
            ..Self::default()
        }
    }

    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Self {
            status,
            code: Some(code.to_owned()),
            message: Some(message.to_owned()),
        }
    }

    pub fn is_ok(&self) -> bool {
        self.code.is_none() && (200..300).contains(&self.status)
    }

    fn code_is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// `200`, or `400 ValidationException: <message>`.
    pub fn text(&self) -> String {
        match (&self.code, &self.message) {
            (None, _) => self.status.to_string(),
            (Some(code), Some(message)) => format!("{} {code}: {message}", self.status),
            (Some(code), None) => format!("{} {code}", self.status),
        }
    }
}

/// Where a global table's replica ended after AWS managed encryption was set on the other replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaAfterManaged {
    /// Its own region's AWS managed key.
    Managed,
    /// Still its customer managed key.
    Unchanged,
}

/// Everything a run saw that decides a switch, filled in as the experiments go (a cut-short run leaves some empty).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observations {
    /// Seconds, per watched change, that DescribeTable still showed the table as before the call.
    pub old_key_visible: Vec<f64>,
    /// TableStatus of every poll that showed an SSE-only change under way.
    pub table_status_during_change: Vec<String>,
    /// SSEDescription.Status of polls during a change from the AWS owned key to a customer managed key.
    pub status_owned_to_kms: Vec<String>,
    /// SSEDescription.Status (and whether a key was shown) of polls during a change back to the AWS owned key.
    pub status_to_owned: Vec<(String, bool)>,
    pub identical_during_change: Option<Answer>,
    pub different_during_change: Option<Answer>,
    pub sse_with_replica_updates: Option<Answer>,
    pub managed_on_global: Option<Answer>,
    pub replica_after_managed: Option<ReplicaAfterManaged>,
    pub away_from_disabled_key: Option<Answer>,
    pub resend_by_arn: Option<Answer>,
    pub resend_by_key_id: Option<Answer>,
    pub resend_by_alias: Option<Answer>,
    pub resend_managed: Option<Answer>,
    pub owned_disabled_on_owned: Option<Answer>,
    pub quota_with_missing_key: Option<Answer>,
    pub quota_with_real_key: Option<Answer>,
    pub asymmetric_key: Option<Answer>,
    pub replica_key_by_replica_updates: Option<Answer>,
    pub replica_key_by_sse_in_its_region: Option<Answer>,
    /// Seconds from the call to the table settled on its new key, per watched change.
    pub change_seconds: Vec<f64>,
}

/// The value of every switch the run could decide, and how it decided it.
#[derive(Debug, Clone, PartialEq)]
pub struct Inference {
    /// Every switch set; an undetermined one has `aws-observed`'s value.
    pub behaviour: Behaviour,
    pub undetermined: Vec<String>,
    /// Switch -> the evidence, for the report.
    pub evidence: BTreeMap<&'static str, String>,
    /// Facts with no switch, for the profile's `observations`.
    pub observations: BTreeMap<String, String>,
}

fn answer_text(answer: Option<&Answer>) -> String {
    answer.map_or_else(|| "not observed".to_owned(), Answer::text)
}

/// An accept/refuse switch: accepted, refused with `refusal`, else undetermined.
fn accepted_or<T>(answer: Option<&Answer>, accepted: T, refusal: &str, refused: T) -> Option<T> {
    let answer = answer?;
    if answer.is_ok() {
        Some(accepted)
    } else if answer.code_is(refusal) {
        Some(refused)
    } else {
        None
    }
}

struct Decider {
    behaviour: Behaviour,
    undetermined: Vec<String>,
    evidence: BTreeMap<&'static str, String>,
}

impl Decider {
    fn decide<T>(&mut self, switch: &'static str, value: Option<T>, evidence: String) -> Option<T> {
        if value.is_none() {
            self.undetermined.push(switch.to_owned());
        }
        self.evidence.insert(switch, evidence);
        value
    }
}

/// Rounds measured seconds to whole seconds (DescribeTable is polled about once a second).
fn whole_seconds(seconds: f64) -> f64 {
    seconds.round().max(0.0)
}

pub fn infer(seen: &Observations) -> Inference {
    let mut d = Decider {
        behaviour: Behaviour {
            profile: Profile::AwsObserved,
            ..Behaviour::default()
        },
        undetermined: Vec::new(),
        evidence: BTreeMap::new(),
    };

    let status = if seen
        .table_status_during_change
        .iter()
        .any(|s| s == "UPDATING")
    {
        Some(ChangeTableStatus::Updating)
    } else if seen.table_status_during_change.is_empty() {
        None
    } else {
        Some(ChangeTableStatus::Active)
    };
    d.behaviour.sse_change_table_status = d.decide(
        "sse_change_table_status",
        status,
        format!(
            "TableStatus during changes: {}",
            distinct(&seen.table_status_during_change)
        ),
    );

    let visible = seen
        .old_key_visible
        .iter()
        .copied()
        .fold(None, |max: Option<f64>, s| {
            Some(max.map_or(s, |m| m.max(s)))
        });
    d.behaviour.old_key_visible_seconds = d.decide(
        "old_key_visible_seconds",
        visible.map(whole_seconds),
        format!(
            "seconds the table looked unchanged after each accepted call: {}",
            seen.old_key_visible
                .iter()
                .map(|s| format!("{s:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );

    let to_owned: Vec<String> = seen
        .status_to_owned
        .iter()
        .map(|(s, _)| s.clone())
        .collect();
    let names = if seen
        .status_owned_to_kms
        .iter()
        .chain(&to_owned)
        .any(|s| s == "ENABLING" || s == "DISABLING")
    {
        Some(SseStatusNames::EnablingDisabling)
    } else if seen.status_owned_to_kms.iter().any(|s| s == "UPDATING") {
        Some(SseStatusNames::UpdatingOnly)
    } else {
        None
    };
    d.behaviour.sse_status_names = d.decide(
        "sse_status_names",
        names,
        format!(
            "SSEDescription.Status from the owned key to a customer key: {}; back to the owned key: {}",
            distinct(&seen.status_owned_to_kms),
            distinct(&to_owned)
        ),
    );

    d.behaviour.identical_update_during_change = d.decide(
        "identical_update_during_change",
        accepted_or(
            seen.identical_during_change.as_ref(),
            IdenticalUpdate::Accepted,
            "ResourceInUseException",
            IdenticalUpdate::Refused,
        ),
        answer_text(seen.identical_during_change.as_ref()),
    );

    d.behaviour.sse_with_other_changes = d.decide(
        "sse_with_other_changes",
        accepted_or(
            seen.sse_with_replica_updates.as_ref(),
            MixedUpdate::Accepted,
            "ValidationException",
            MixedUpdate::Refused,
        ),
        answer_text(seen.sse_with_replica_updates.as_ref()),
    );

    let scope = match (&seen.managed_on_global, seen.replica_after_managed) {
        (Some(answer), _) if answer.code_is("ValidationException") => {
            Some(GlobalSseScope::OneRegion)
        }
        (Some(answer), Some(ReplicaAfterManaged::Managed)) if answer.is_ok() => {
            Some(GlobalSseScope::AllReplicas)
        }
        _ => None,
    };
    d.behaviour.global_sse_scope = d.decide(
        "global_sse_scope",
        scope,
        format!(
            "{}; the other replica after it: {}",
            answer_text(seen.managed_on_global.as_ref()),
            match seen.replica_after_managed {
                Some(ReplicaAfterManaged::Managed) => "its region's AWS managed key",
                Some(ReplicaAfterManaged::Unchanged) => "its customer managed key still",
                None => "not read",
            }
        ),
    );

    d.behaviour.unusable_old_key = d.decide(
        "unusable_old_key",
        accepted_or(
            seen.away_from_disabled_key.as_ref(),
            UnusableOldKey::Accepted,
            "ValidationException",
            UnusableOldKey::Refused,
        ),
        answer_text(seen.away_from_disabled_key.as_ref()),
    );

    // The exact ARN refused and any other name for the current key accepted: only the ARN is recognised.
    let by_arn_refused = seen
        .resend_by_arn
        .as_ref()
        .is_some_and(|a| a.code_is("ValidationException"));
    let others = [
        &seen.resend_by_key_id,
        &seen.resend_by_alias,
        &seen.resend_managed,
    ];
    let resend = if !by_arn_refused {
        None
    } else if others.iter().any(|a| a.as_ref().is_some_and(Answer::is_ok)) {
        Some(CurrentKeyResend::RefusedByArnOnly)
    } else if others
        .iter()
        .all(|a| a.as_ref().is_some_and(|a| a.code_is("ValidationException")))
    {
        Some(CurrentKeyResend::AlwaysRefused)
    } else {
        None
    };
    d.behaviour.current_key_resend = d.decide(
        "current_key_resend",
        resend,
        format!(
            "by ARN: {}; by key id: {}; by alias: {}; {{Enabled: true}} on an AWS managed table: {}",
            answer_text(seen.resend_by_arn.as_ref()),
            answer_text(seen.resend_by_key_id.as_ref()),
            answer_text(seen.resend_by_alias.as_ref()),
            answer_text(seen.resend_managed.as_ref()),
        ),
    );

    // A key that does not exist, sent once the quota is spent: the quota answers first, or the key check.
    let quota = seen.quota_with_missing_key.as_ref().and_then(|a| {
        if a.code_is("LimitExceededException") {
            Some(QuotaCheck::BeforeKeyValidation)
        } else if a.code_is("ValidationException") {
            Some(QuotaCheck::AfterKeyValidation)
        } else {
            None
        }
    });
    d.behaviour.quota_check = d.decide(
        "quota_check",
        quota,
        format!(
            "a missing key after four switches: {}; a real key: {}",
            answer_text(seen.quota_with_missing_key.as_ref()),
            answer_text(seen.quota_with_real_key.as_ref())
        ),
    );

    // As observed: HTTP 500 InternalServerError (a failed KMS grant); a 503 or a throttle decides nothing.
    let refusal = seen.asymmetric_key.as_ref().and_then(|a| {
        if a.status == 500 && (a.code_is("InternalServerError") || a.code_is("InternalFailure")) {
            Some(KeyRefusal::AsObserved)
        } else if a.code_is("ValidationException") {
            Some(KeyRefusal::Validation)
        } else {
            None
        }
    });
    d.behaviour.key_refusal = d.decide(
        "key_refusal",
        refusal,
        answer_text(seen.asymmetric_key.as_ref()),
    );

    let mut observations: BTreeMap<String, String> = [
        (
            "different_change_during_change",
            &seen.different_during_change,
        ),
        ("current_key_resent_by_arn", &seen.resend_by_arn),
        (
            "owned_key_resent_as_enabled_false",
            &seen.owned_disabled_on_owned,
        ),
        ("quota_refusal", &seen.quota_with_real_key),
        (
            "replica_key_by_replica_updates",
            &seen.replica_key_by_replica_updates,
        ),
        (
            "replica_key_by_sse_in_its_region",
            &seen.replica_key_by_sse_in_its_region,
        ),
    ]
    .into_iter()
    .map(|(key, answer)| (key.to_owned(), answer_text(answer.as_ref())))
    .collect();
    let mut note = |key: &str, value: String| {
        observations.insert(key.to_owned(), value);
    };
    if !seen.status_to_owned.is_empty() {
        let shown = seen.status_to_owned.iter().any(|(_, key)| *key);
        note(
            "to_owned_key_shows_a_key_during_the_change",
            shown.to_string(),
        );
    }
    if let (Some(min), Some(max)) = (
        seen.change_seconds.iter().copied().reduce(f64::min),
        seen.change_seconds.iter().copied().reduce(f64::max),
    ) {
        note(
            "change_seconds",
            format!(
                "{min:.0}-{max:.0} over {} changes",
                seen.change_seconds.len()
            ),
        );
    }
    Inference {
        behaviour: d.behaviour.resolved(),
        undetermined: d.undetermined,
        evidence: d.evidence,
        observations,
    }
}

fn distinct(values: &[String]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for v in values {
        if !seen.contains(&v.as_str()) {
            seen.push(v);
        }
    }
    if seen.is_empty() {
        "not observed".to_owned()
    } else {
        seen.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validation(message: &str) -> Option<Answer> {
        Some(Answer::error(400, "ValidationException", message))
    }

    /// What AWS is reported to answer (../shared/AWS-BEHAVIOURS.md).
    fn as_reported() -> Observations {
        Observations {
            old_key_visible: vec![8.4, 7.6, 8.2],
            table_status_during_change: vec!["ACTIVE".to_owned(); 3],
            status_owned_to_kms: vec!["UPDATING".to_owned()],
            status_to_owned: vec![("UPDATING".to_owned(), false)],
            identical_during_change: Some(Answer::ok()),
            different_during_change: Some(Answer::error(
                400,
                "ResourceInUseException",
                "Server-Side Encryption is still being updated",
            )),
            sse_with_replica_updates: validation(
                "Replica modification must be the only operation in the request",
            ),
            managed_on_global: Some(Answer::ok()),
            replica_after_managed: Some(ReplicaAfterManaged::Managed),
            away_from_disabled_key: validation("the table's current KMS key is disabled"),
            resend_by_arn: validation("Table is already encrypted with given KMSMasterKeyId"),
            resend_by_key_id: Some(Answer::ok()),
            resend_by_alias: Some(Answer::ok()),
            resend_managed: Some(Answer::ok()),
            owned_disabled_on_owned: validation("Table is already encrypted by default"),
            quota_with_missing_key: Some(Answer::error(
                400,
                "LimitExceededException",
                "next change allowed after ...",
            )),
            quota_with_real_key: None,
            asymmetric_key: Some(Answer::error(500, "InternalServerError", "Internal error")),
            replica_key_by_replica_updates: Some(Answer::ok()),
            replica_key_by_sse_in_its_region: Some(Answer::ok()),
            change_seconds: vec![21.0, 25.0],
        }
    }

    #[test]
    fn what_aws_is_reported_to_answer_is_the_aws_observed_profile() {
        let inference = infer(&as_reported());
        assert_eq!(inference.undetermined, Vec::<String>::new());
        assert_eq!(inference.behaviour, Behaviour::aws_observed().resolved());
        assert_eq!(
            inference.observations["change_seconds"],
            "21-25 over 2 changes"
        );
        assert_eq!(
            inference.observations["to_owned_key_shows_a_key_during_the_change"],
            "false"
        );
    }

    #[test]
    fn the_documented_answers_are_the_optimistic_profile() {
        let refused_in_use = Some(Answer::error(400, "ResourceInUseException", "in use"));
        let seen = Observations {
            old_key_visible: vec![0.0, 0.3],
            table_status_during_change: vec!["UPDATING".to_owned(), "ACTIVE".to_owned()],
            status_owned_to_kms: vec!["ENABLING".to_owned()],
            identical_during_change: refused_in_use,
            sse_with_replica_updates: Some(Answer::ok()),
            managed_on_global: validation("cannot mix AWS managed and customer managed KMS keys"),
            replica_after_managed: Some(ReplicaAfterManaged::Unchanged),
            away_from_disabled_key: Some(Answer::ok()),
            resend_by_arn: validation("already encrypted"),
            resend_by_key_id: validation("already encrypted"),
            resend_by_alias: validation("already encrypted"),
            resend_managed: validation("already encrypted"),
            quota_with_missing_key: validation("Invalid KMSMasterKeyId"),
            asymmetric_key: validation("asymmetric"),
            ..Observations::default()
        };
        let inference = infer(&seen);
        assert_eq!(inference.undetermined, Vec::<String>::new());
        assert_eq!(
            inference.behaviour,
            Behaviour {
                profile: Profile::AwsObserved,
                ..Behaviour::default()
            }
            .overlay(&Behaviour::default().resolved())
        );
    }

    #[test]
    fn what_was_not_seen_or_not_understood_is_undetermined_and_keeps_aws_observed() {
        let mut seen = as_reported();
        seen.table_status_during_change.clear();
        seen.resend_managed = Some(Answer {
            status: 0,
            code: Some("dispatch failure".to_owned()),
            message: None,
        });
        seen.resend_by_key_id = validation("x");
        seen.resend_by_alias = validation("x");
        seen.asymmetric_key = Some(Answer::error(400, "AccessDeniedException", "denied"));
        seen.managed_on_global = Some(Answer::ok());
        seen.replica_after_managed = Some(ReplicaAfterManaged::Unchanged);
        seen.quota_with_missing_key = Some(Answer::error(503, "ServiceUnavailable", "busy"));
        let inference = infer(&seen);
        assert_eq!(
            inference.undetermined,
            [
                "sse_change_table_status",
                "global_sse_scope",
                "current_key_resend",
                "quota_check",
                "key_refusal"
            ]
        );
        assert_eq!(inference.behaviour, Behaviour::aws_observed().resolved());
        assert!(inference.evidence["key_refusal"].contains("AccessDeniedException"));
    }

    #[test]
    fn a_rule_decides_only_on_the_answer_it_names() {
        let mut seen = as_reported();
        // Every name of the current key accepted, the exact ARN included: no setting describes that.
        seen.resend_by_arn = Some(Answer::ok());
        // After four switches, a throttle or a table still in use says nothing about the order of the checks.
        seen.quota_with_missing_key = Some(Answer::error(
            400,
            "ResourceInUseException",
            "still updating",
        ));
        // A 503 is AWS busy, not the observed 500 of a failed grant.
        seen.asymmetric_key = Some(Answer::error(503, "ServiceUnavailable", "try again"));
        // A call the run did not send (the table's switches were spent).
        seen.away_from_disabled_key = Some(Answer {
            status: 0,
            code: Some("NotSent".to_owned()),
            message: None,
        });
        let inference = infer(&seen);
        assert_eq!(
            inference.undetermined,
            [
                "unusable_old_key",
                "current_key_resend",
                "quota_check",
                "key_refusal"
            ]
        );
    }

    #[test]
    fn old_key_visibility_takes_the_longest_change_in_whole_seconds() {
        let mut seen = as_reported();
        seen.old_key_visible = vec![0.9, 2.4, 1.1];
        assert_eq!(infer(&seen).behaviour.old_key_visible_seconds, Some(2.0));
        seen.old_key_visible = vec![0.0];
        assert_eq!(infer(&seen).behaviour.old_key_visible_seconds, Some(0.0));
    }
}
