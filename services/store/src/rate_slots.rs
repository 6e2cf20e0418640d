//! Rate limits shared by every replica: each limited scope has one row holding its next free instant.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;

use crate::error::StoreError;

/// The fastest rate a slot is handed out at; a limit above it is this (a thousand calls a second is beyond any
/// AWS control-plane budget tablecrypt stays within).
pub const MAX_PER_SECOND: f64 = 1000.0;

/// Reserved slots: how long until the first, and the smallest spacing of the scopes they were taken in (a send
/// later than that could fall together with the next slot's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slot {
    pub wait: Duration,
    pub spacing: Duration,
    /// How many slots were reserved (one unless a batch was asked for), `step` apart from the first.
    pub count: u32,
    pub step: Duration,
}

/// What a reservation got: slots, or none within reach and how long until the next one comes within reach.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reserved {
    Slot(Slot),
    /// No slot within the lookahead: ask again after this (as the scopes stood; another caller may take it
    /// first).
    NotYet {
        within_reach_in: Duration,
    },
}

impl Reserved {
    /// The slots, if any were handed out.
    pub fn slot(self) -> Option<Slot> {
        match self {
            Self::Slot(slot) => Some(slot),
            Self::NotYet { .. } => None,
        }
    }
}

/// A spacing read back is never taken as longer than a day (rates are at least one a day).
const SLOWEST_SPACING_SECONDS: f64 = 86_400.0;

#[derive(Debug, Clone)]
pub struct RateSlotRepository {
    pool: PgPool,
    /// Scopes whose rows this process has made sure exist, so a reservation is one statement, not two. Forgotten
    /// when a reservation finds nothing: the rows may be gone (the table is unlogged, so emptied by a crash).
    ensured: Arc<Mutex<HashSet<String>>>,
}

impl RateSlotRepository {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            ensured: Arc::default(),
        }
    }

    /// Reserves one slot in every scope of `scopes` (each with its calls per second) at once, at least `lead`
    /// and at most `lookahead` away, and returns how long to wait for it; [`Reserved::NotYet`] when it would be
    /// further away, with when to ask again. Slots are spaced evenly per scope (no burst), so no one-second
    /// window of a scope holds more than its rate. `fleet` names the fleet-wide scope and the service's
    /// account-region rate: that scope is left out while it cannot bind (its rate at least the sum of every
    /// account-region's rate). Up to `batch` slots are reserved at once, as many as fit within `lookahead`: one
    /// statement for many calls of a busy scope.
    #[tracing::instrument(skip(self), err(level = "debug"), level = "debug")]
    pub async fn reserve(
        &self,
        scopes: &[(String, f64)],
        lead: Duration,
        lookahead: Duration,
        fleet: Option<(&str, f64)>,
        batch: u32,
    ) -> Result<Reserved, StoreError> {
        let names: Vec<String> = scopes.iter().map(|(scope, _)| scope.clone()).collect();
        let spacings: Vec<f64> = scopes
            .iter()
            .map(|(_, rate)| 1.0 / rate.clamp(f64::MIN_POSITIVE, MAX_PER_SECOND))
            .collect();
        for _ in 0..2 {
            let missing = {
                let ensured = self
                    .ensured
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                names.iter().any(|name| !ensured.contains(name))
            };
            if missing {
                sqlx::query_file!(
                    "queries/ensure_rate_slots.sql",
                    &names,
                    lookahead.as_secs_f64()
                )
                .execute(&self.pool)
                .await?;
                self.remember(&names, true);
            }
            let reserved = sqlx::query_file!(
                "queries/reserve_rate_slot.sql",
                &names,
                &spacings,
                lookahead.as_secs_f64(),
                lead.as_secs_f64(),
                fleet.map(|(scope, _)| scope),
                fleet.map_or(0.0, |(_, regional)| regional),
                i32::try_from(batch.max(1)).unwrap_or(i32::MAX)
            )
            .fetch_one(&self.pool)
            .await?;
            if reserved.missing > 0 {
                // A row is gone (the table is unlogged: a crash empties it): create it and ask again.
                self.remember(&names, false);
                continue;
            }
            let seconds = |s: Option<f64>| {
                Duration::from_secs_f64(s.unwrap_or(0.0).clamp(0.0, SLOWEST_SPACING_SECONDS))
            };
            return Ok(match reserved.wait_seconds {
                Some(wait) => Reserved::Slot(Slot {
                    wait: Duration::from_secs_f64(wait.max(0.0)),
                    spacing: seconds(reserved.spacing_seconds),
                    count: reserved
                        .slots
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(1)
                        .max(1),
                    step: seconds(reserved.step_seconds),
                }),
                None => Reserved::NotYet {
                    within_reach_in: seconds(Some(reserved.reach_seconds)),
                },
            });
        }
        Ok(Reserved::NotYet {
            within_reach_in: Duration::ZERO,
        })
    }

    fn remember(&self, names: &[String], ensured: bool) {
        let mut set = self
            .ensured
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for name in names {
            if ensured {
                set.insert(name.clone());
            } else {
                set.remove(name);
            }
        }
    }
}
