//! Injected faults: throttling at a rate or above a request-rate ceiling, server errors, access denied, added
//! latency; each scoped to a service, operation, account and region (any of them may be left open).

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::aws::AwsError;
use crate::world::lock;

/// What a rule does to the requests it matches.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FaultKind {
    /// ThrottlingException on this fraction (0-1) of requests.
    Throttle { rate: f64 },
    /// ThrottlingException on requests beyond this many per second, per account-region.
    ThrottleAbove { requests_per_second: u32 },
    /// HTTP 500 (InternalServerError) on this fraction of requests.
    ServerError { rate: f64 },
    /// This much added latency on every request.
    Latency { millis: u64 },
    /// AccessDeniedException on every request (a member role that lost a permission after planning).
    AccessDenied,
}

/// A fault and the requests it applies to; an absent scope field matches everything.
/// (serde cannot deny unknown fields next to a flattened enum, so a misspelt scope is ignored.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRule {
    /// "dynamodb", "kms" or "sts".
    #[serde(default)]
    pub service: Option<String>,
    /// e.g. "UpdateTable".
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(flatten)]
    pub kind: FaultKind,
}

impl FaultRule {
    fn matches(&self, service: &str, operation: &str, account_id: &str, region: &str) -> bool {
        let ok = |scope: &Option<String>, value: &str| scope.as_deref().is_none_or(|s| s == value);
        ok(&self.service, service)
            && ok(&self.operation, operation)
            && ok(&self.account_id, account_id)
            && ok(&self.region, region)
    }
}

/// What the faults decided for one request.
#[derive(Debug, Default)]
pub struct Verdict {
    pub delay: Option<Duration>,
    pub error: Option<AwsError>,
}

/// A `throttle_above` rule's counting scope: (rule id, account, region).
type WindowKey = (u64, String, String);
/// The start of the current one-second window and the requests admitted in it.
type Window = (Instant, u32);

#[derive(Debug, Default)]
pub struct Faults {
    rules: RwLock<Vec<(u64, FaultRule)>>,
    next_id: Mutex<u64>,
    /// Per (rule, account, region): the current one-second window and the requests admitted in it.
    windows: Mutex<HashMap<WindowKey, Window>>,
}

impl Faults {
    pub fn add(&self, rule: FaultRule) -> u64 {
        let mut next = lock(&self.next_id);
        *next += 1;
        let id = *next;
        self.rules
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((id, rule));
        id
    }

    pub fn remove(&self, id: u64) -> bool {
        let mut rules = self
            .rules
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = rules.len();
        rules.retain(|(rule_id, _)| *rule_id != id);
        before != rules.len()
    }

    pub fn clear(&self) {
        self.rules
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        lock(&self.windows).clear();
    }

    pub fn list(&self) -> Vec<(u64, FaultRule)> {
        self.rules
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn check(&self, service: &str, operation: &str, account_id: &str, region: &str) -> Verdict {
        let rules = self
            .rules
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut verdict = Verdict::default();
        if rules.is_empty() {
            return verdict;
        }
        let mut rng = rand::rng();
        for (id, rule) in rules
            .iter()
            .filter(|(_, r)| r.matches(service, operation, account_id, region))
        {
            match &rule.kind {
                FaultKind::Latency { millis } => {
                    verdict.delay =
                        Some(verdict.delay.unwrap_or_default() + Duration::from_millis(*millis));
                }
                FaultKind::Throttle { rate }
                    if verdict.error.is_none() && rng.random::<f64>() < *rate =>
                {
                    verdict.error = Some(AwsError::throttling(
                        "Rate of requests exceeds the allowed throughput.",
                    ));
                }
                FaultKind::ServerError { rate }
                    if verdict.error.is_none() && rng.random::<f64>() < *rate =>
                {
                    verdict.error = Some(AwsError::internal("Internal server error"));
                }
                FaultKind::AccessDenied if verdict.error.is_none() => {
                    verdict.error = Some(AwsError::new(
                        400,
                        "AccessDeniedException",
                        format!(
                            "User: arn:aws:sts::{account_id}:assumed-role/injected is not authorized to perform: \
                             {service}:{operation} (injected fault)"
                        ),
                    ));
                }
                FaultKind::ThrottleAbove {
                    requests_per_second,
                } if verdict.error.is_none() => {
                    let mut windows = lock(&self.windows);
                    let now = Instant::now();
                    let window = windows
                        .entry((*id, account_id.to_owned(), region.to_owned()))
                        .or_insert((now, 0));
                    if now.duration_since(window.0) >= Duration::from_secs(1) {
                        *window = (now, 0);
                    }
                    if window.1 >= *requests_per_second {
                        verdict.error = Some(AwsError::throttling(
                            "Rate of requests exceeds the allowed throughput.",
                        ));
                    } else {
                        window.1 += 1;
                    }
                }
                _ => {}
            }
        }
        verdict
    }
}
