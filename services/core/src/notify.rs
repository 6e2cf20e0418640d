//! Notifications: which change-request states someone may be waiting for, which sink wants which, the text a
//! person reads, and how long to wait before trying a failed delivery again. Pure rules; the outbox lives in the
//! store and the HTTP in the engine.

use std::time::Duration;

use crate::change::RequestState;
use crate::labels::{LabelSelector, Labels};
use crate::validation::InvalidValue;

/// What happened to a change request that a person may have to act on or wants to hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotifyEvent {
    /// The request waits for a second person's approval.
    ApprovalNeeded,
    /// The request stopped sending: its failure threshold or a failed canary, or an operator (the reason says).
    Paused,
    /// The request ended with failed items (PARTIALLY_FAILED or FAILED).
    Failed,
    /// Every item ended as asked.
    Succeeded,
}

impl NotifyEvent {
    pub const ALL: [Self; 4] = [
        Self::ApprovalNeeded,
        Self::Paused,
        Self::Failed,
        Self::Succeeded,
    ];

    /// The event a request entering `state` raises, if any (RUNNING, QUEUED and the like raise none).
    pub fn of_state(state: RequestState) -> Option<Self> {
        match state {
            RequestState::PendingApproval => Some(Self::ApprovalNeeded),
            RequestState::Paused => Some(Self::Paused),
            RequestState::PartiallyFailed | RequestState::Failed => Some(Self::Failed),
            RequestState::Succeeded => Some(Self::Succeeded),
            RequestState::Queued
            | RequestState::Running
            | RequestState::Cancelling
            | RequestState::Cancelled => None,
        }
    }

    /// The name used in the configuration (`events = [...]`) and in the JSON body (`event`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApprovalNeeded => "approval_needed",
            Self::Paused => "paused",
            Self::Failed => "failed",
            Self::Succeeded => "succeeded",
        }
    }

    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        Self::ALL
            .into_iter()
            .find(|e| e.as_str() == value)
            .ok_or_else(|| {
                InvalidValue::new(format!(
                    "unknown event {value:?}: one of {}",
                    Self::ALL.map(Self::as_str).join(", ")
                ))
            })
    }
}

/// How a sink wants the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// tablecrypt's JSON (every field of [`Notice`]).
    Json,
    /// `{"text": "..."}`: what Slack's incoming webhooks (and Mattermost, Google Chat, Teams workflows) accept.
    Slack,
}

impl BodyFormat {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        match value {
            "json" => Ok(Self::Json),
            "slack" => Ok(Self::Slack),
            other => Err(InvalidValue::new(format!(
                "unknown format {other:?}: json or slack"
            ))),
        }
    }
}

/// Who hears about what: one configured sink's filter.
#[derive(Debug, Clone)]
pub struct Route {
    /// The sink's name: in the outbox, the logs and the audit log (its URL may be a secret and never is).
    pub sink: String,
    pub events: Vec<NotifyEvent>,
    /// Requests touching at least one account these labels match; empty: every request.
    pub selector: LabelSelector,
}

impl Route {
    /// Whether this sink hears of `event` on a request over accounts labelled `accounts` (one entry per
    /// account of the request). A request with no accounts (nothing planned) is heard by unscoped sinks only.
    pub fn wants(&self, event: NotifyEvent, accounts: &[Labels]) -> bool {
        self.events.contains(&event)
            && (self.selector.is_empty() || accounts.iter().any(|l| self.selector.matches(l)))
    }
}

/// What a notification says: a change request as a person needs it to act. Nothing secret: no role, external
/// id or credential, only what a viewer of the request may read.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub event: NotifyEvent,
    pub change_request_id: String,
    pub state: RequestState,
    /// Why it paused (failure threshold, canary, or "paused by <who>: <why>"); empty otherwise.
    pub reason: String,
    pub description: String,
    pub created_by: String,
    /// The target as asked: `CUSTOMER_MANAGED alias/payments-b`, `AWS_OWNED`, or `rollback`.
    pub target: String,
    /// The accounts the request touches (ids).
    pub accounts: Vec<String>,
    pub items_total: i64,
    pub items_succeeded: i64,
    pub items_failed: i64,
    /// When the request entered this state (RFC 3339).
    pub event_time: String,
}

impl Notice {
    /// One line a person reads in a chat channel, saying what to do where there is something to do.
    pub fn summary(&self) -> String {
        let what = if self.description.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.description)
        };
        let head = format!(
            "tablecrypt change request {}{what} to {}",
            self.change_request_id, self.target
        );
        let progress = format!(
            "{} of {} tables changed, {} failed",
            self.items_succeeded, self.items_total, self.items_failed
        );
        match self.event {
            NotifyEvent::ApprovalNeeded => format!(
                "{head} by {} waits for approval ({} tables in {} accounts): \
                 `tablecrypt approve {}` by someone else",
                self.created_by,
                self.items_total,
                self.accounts.len(),
                self.change_request_id
            ),
            NotifyEvent::Paused => format!(
                "{head} paused: {}; {progress}. `tablecrypt resume {}` or `tablecrypt cancel {}`",
                if self.reason.is_empty() {
                    "no reason given"
                } else {
                    &self.reason
                },
                self.change_request_id,
                self.change_request_id
            ),
            NotifyEvent::Failed => format!(
                "{head} ended {}: {progress}. `tablecrypt items {} --state FAILED` lists why",
                self.state.as_str(),
                self.change_request_id
            ),
            NotifyEvent::Succeeded => format!("{head} succeeded: {progress}"),
        }
    }
}

/// Delivery attempts before a notification is given up (and the giving up audited): with [`retry_after`]'s
/// doubling from 5 s to 10 min, about an hour of an endpoint being down.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 12;

/// The wait before attempt `attempts + 1`, after `attempts` failed: `initial` doubled per failure up to `max`.
/// Without jitter: replicas take deliveries under a lease, so one endpoint is not hit by several at once.
pub fn retry_after(attempts: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(31));
    initial.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(team: &str) -> Labels {
        let (key, value) = ("team".to_owned(), team.to_owned());
        Labels::parse([(&key, &value)]).expect("labels")
    }

    fn notice(event: NotifyEvent, state: RequestState) -> Notice {
        Notice {
            event,
            change_request_id: "cr-1".into(),
            state,
            reason: String::new(),
            description: "rotate payments".into(),
            created_by: "token:alice".into(),
            target: "CUSTOMER_MANAGED alias/payments-b".into(),
            accounts: vec!["111111111111".into()],
            items_total: 10,
            items_succeeded: 7,
            items_failed: 3,
            event_time: "2026-12-02T10:00:00Z".into(),
        }
    }

    #[test]
    fn only_states_someone_waits_for_raise_an_event() {
        let raised: Vec<_> = RequestState::ALL
            .into_iter()
            .filter_map(NotifyEvent::of_state)
            .collect();
        assert_eq!(
            raised,
            [
                NotifyEvent::ApprovalNeeded,
                NotifyEvent::Paused,
                NotifyEvent::Succeeded,
                NotifyEvent::Failed,
                NotifyEvent::Failed
            ]
        );
        for event in NotifyEvent::ALL {
            assert_eq!(NotifyEvent::parse(event.as_str()), Ok(event));
        }
        assert!(NotifyEvent::parse("PAUSED").is_err());
    }

    #[test]
    fn a_route_hears_its_events_on_requests_over_its_accounts() {
        let route = Route {
            sink: "payments".into(),
            events: vec![NotifyEvent::Paused, NotifyEvent::Failed],
            selector: LabelSelector::parse("team=payments").expect("selector"),
        };
        let both = [labels("search"), labels("payments")];
        assert!(route.wants(NotifyEvent::Paused, &both));
        assert!(!route.wants(NotifyEvent::Succeeded, &both));
        assert!(!route.wants(NotifyEvent::Paused, &[labels("search")]));
        assert!(!route.wants(NotifyEvent::Paused, &[]));
        let everyone = Route {
            selector: LabelSelector::default(),
            ..route
        };
        assert!(everyone.wants(NotifyEvent::Paused, &[]));
    }

    #[test]
    fn the_summary_says_what_to_do() {
        let paused = Notice {
            reason: "3 items failed (threshold 3)".into(),
            ..notice(NotifyEvent::Paused, RequestState::Paused)
        };
        assert_eq!(
            paused.summary(),
            "tablecrypt change request cr-1 (rotate payments) to CUSTOMER_MANAGED alias/payments-b paused: \
             3 items failed (threshold 3); 7 of 10 tables changed, 3 failed. `tablecrypt resume cr-1` or \
             `tablecrypt cancel cr-1`"
        );
        assert!(
            notice(NotifyEvent::ApprovalNeeded, RequestState::PendingApproval)
                .summary()
                .contains(
                    "waits for approval (10 tables in 1 accounts): `tablecrypt approve cr-1`"
                )
        );
        assert!(
            notice(NotifyEvent::Failed, RequestState::PartiallyFailed)
                .summary()
                .contains("ended PARTIALLY_FAILED: 7 of 10 tables changed, 3 failed")
        );
    }

    #[test]
    fn retries_double_up_to_the_longest_wait() {
        let (initial, max) = (Duration::from_secs(5), Duration::from_secs(600));
        let waits: Vec<u64> = (1..=10)
            .map(|n| retry_after(n, initial, max).as_secs())
            .collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]);
        assert_eq!(retry_after(0, initial, max), initial);
        assert_eq!(retry_after(u32::MAX, initial, max), max);
        let total: u64 = (1..DEFAULT_MAX_ATTEMPTS)
            .map(|n| retry_after(n, initial, max).as_secs())
            .sum();
        assert!((3000..=5000).contains(&total), "{total} s of retries");
    }
}
