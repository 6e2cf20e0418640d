//! Repeated refusals, audited as one row per interval instead of one per call: an unauthenticated client refused
//! ~1,040 times a second wrote as many rows, on a table nobody can prune.
//!
//! The first refusal of a kind (who, method, outcome, target) in an interval is written at once, so a single refusal shows
//! up immediately; the repeats are counted and written as one row (`call_count`, `first_time`) when the interval
//! ends. An aggregated row is how those calls are audited: a crash loses at most one interval of repeat counts,
//! never a first refusal.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tablecrypt_store::NewAuditEvent;

/// Kinds of refusal written at once per interval; past it new kinds share one overflow kind per method and
/// outcome, counted. Each kind is a row written at once, so this bounds the rows many distinct callers (JWT
/// subjects, client addresses) can make: 1,000 per 10 s interval is 100 rows/s at worst, a tenth of the flood the
/// security review measured, and more distinct refusals than a fleet's real callers make in an interval.
const MAX_KINDS: usize = 1_000;

/// Who was refused, what, and how: the repeats of one kind become one row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Kind {
    /// The caller's identity, or the peer's address (no port) for an unauthenticated call.
    who: String,
    /// The method, or one name for every path that is not one of the service's methods (random paths must not
    /// make a row each).
    method: String,
    outcome: String,
    /// What the call was about: a refused DeregisterAccount of 25 accounts is 25 kinds, so no account refused
    /// drops out of the log (empty for refusals before a handler ran).
    target: String,
}

#[derive(Debug)]
struct Repeats {
    /// The last repeat's event (its message, target), with the count and the first repeat's time.
    last: NewAuditEvent,
    count: i32,
    first_time: DateTime<Utc>,
}

/// What one interval has seen.
#[derive(Debug, Default)]
pub struct RefusalLog {
    kinds: Mutex<HashMap<Kind, Option<Repeats>>>,
}

/// The method name repeats to paths outside the service are counted under.
pub const OTHER_PATHS: &str = "(other paths)";
/// The `who` of refusals past [`MAX_KINDS`] kinds in one interval.
const MANY_CALLERS: &str = "(many callers)";

impl RefusalLog {
    /// Notes a refused call. Returns the event to write now (the first of its kind this interval), or `None` when
    /// it is a repeat, counted for [`RefusalLog::drain`].
    pub fn note(&self, event: NewAuditEvent, known_method: bool) -> Option<NewAuditEvent> {
        let who = match (&event.peer, event.caller.as_str()) {
            (Some(peer), "unauthenticated") => peer.clone(),
            _ => event.caller.clone(),
        };
        let method = if known_method {
            event.method.clone()
        } else {
            OTHER_PATHS.to_owned()
        };
        let mut kind = Kind {
            who,
            method,
            outcome: event.outcome.clone(),
            target: event.target.clone(),
        };
        let mut kinds = self
            .kinds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !kinds.contains_key(&kind) && kinds.len() >= MAX_KINDS {
            kind.who = MANY_CALLERS.to_owned();
            kind.target = String::new();
        }
        match kinds.get_mut(&kind) {
            None => {
                kinds.insert(kind, None);
                Some(event)
            }
            Some(slot) => {
                let now = Utc::now();
                match slot {
                    Some(repeats) => {
                        repeats.count = repeats.count.saturating_add(1);
                        repeats.last = event;
                    }
                    None => {
                        *slot = Some(Repeats {
                            last: event,
                            count: 1,
                            first_time: now,
                        });
                    }
                }
                None
            }
        }
    }

    /// Ends the interval: one event per kind that repeated, standing for its repeats; every kind is forgotten, so
    /// the next refusal of it is written at once again.
    pub fn drain(&self) -> Vec<NewAuditEvent> {
        let kinds = std::mem::take(
            &mut *self
                .kinds
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        kinds
            .into_iter()
            .filter_map(|(kind, repeats)| {
                let repeats = repeats?;
                let mut event = repeats.last;
                if kind.who == MANY_CALLERS {
                    event.caller = MANY_CALLERS.to_owned();
                    event.peer = None;
                    event.target = String::new();
                }
                if kind.method == OTHER_PATHS {
                    event.method = OTHER_PATHS.to_owned();
                }
                event.call_count = repeats.count;
                event.first_time = Some(repeats.first_time);
                Some(event)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(caller: &str, peer: Option<&str>, method: &str) -> NewAuditEvent {
        NewAuditEvent {
            caller: caller.into(),
            authenticated_by: "none".into(),
            method: method.into(),
            target: String::new(),
            outcome: "UNAUTHENTICATED".into(),
            message: "credentials required".into(),
            peer: peer.map(str::to_owned),
            call_count: 1,
            first_time: None,
        }
    }

    #[test]
    fn the_first_refusal_is_written_at_once_and_repeats_become_one_row() {
        let log = RefusalLog::default();
        let peer = Some("10.0.0.7");
        assert!(
            log.note(refusal("unauthenticated", peer, "ListAccounts"), true)
                .is_some()
        );
        for _ in 0..999 {
            assert!(
                log.note(refusal("unauthenticated", peer, "ListAccounts"), true)
                    .is_none()
            );
        }
        // Another peer is another kind.
        assert!(
            log.note(
                refusal("unauthenticated", Some("10.0.0.8"), "ListAccounts"),
                true
            )
            .is_some()
        );
        let rows = log.drain();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].call_count, 999);
        assert!(rows[0].first_time.is_some());
        // A new interval: written at once again.
        assert!(
            log.note(refusal("unauthenticated", peer, "ListAccounts"), true)
                .is_some()
        );
        assert!(log.drain().is_empty());
    }

    #[test]
    fn refusals_about_different_targets_are_rows_of_their_own() {
        let log = RefusalLog::default();
        let written = (0..25)
            .filter(|i| {
                let mut event = refusal("token:pay-op", None, "DeregisterAccount");
                event.outcome = "PERMISSION_DENIED".into();
                event.target = format!("account {i:012}");
                log.note(event, true).is_some()
            })
            .count();
        assert_eq!(written, 25);
        assert!(log.drain().is_empty());
    }

    #[test]
    fn random_paths_and_many_callers_stay_a_few_rows() {
        let log = RefusalLog::default();
        let written = (0..300)
            .filter(|i| {
                log.note(
                    refusal("unauthenticated", Some("10.0.0.7"), &format!("/x.Y/M{i}")),
                    false,
                )
                .is_some()
            })
            .count();
        assert_eq!(written, 1);
        let rows = log.drain();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].method, OTHER_PATHS);
        assert_eq!(rows[0].call_count, 299);

        let written = (0..MAX_KINDS + 500)
            .filter(|i| {
                log.note(
                    refusal(&format!("jwt:iss:user-{i}"), None, "ListAccounts"),
                    true,
                )
                .is_some()
            })
            .count();
        assert_eq!(
            written,
            MAX_KINDS + 1,
            "the overflow kind's first is written"
        );
        let rows = log.drain();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].caller, MANY_CALLERS);
        assert_eq!(rows[0].call_count, 499);
    }
}
