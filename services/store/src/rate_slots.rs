//! Rate limits shared by every replica: each limited scope has one row holding its next free instant.

use std::time::Duration;

use sqlx::PgPool;

use crate::error::StoreError;

/// The fastest rate a slot is handed out at; a limit above it is this (a thousand calls a second is beyond any
/// AWS control-plane budget tablecrypt stays within).
pub const MAX_PER_SECOND: f64 = 1000.0;

#[derive(Debug, Clone)]
pub struct RateSlotRepository {
    pool: PgPool,
}

impl RateSlotRepository {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Reserves one slot in every scope of `scopes` (each with its calls per second) at once, at least `lead`
    /// and at most `lookahead` away, and returns how long to wait for it; `None` when it would be further away
    /// (ask again later). Slots are spaced evenly per scope (no burst), so no one-second window of a scope holds
    /// more than its rate.
    #[tracing::instrument(skip(self), err(level = "debug"), level = "debug")]
    pub async fn reserve(
        &self,
        scopes: &[(String, f64)],
        lead: Duration,
        lookahead: Duration,
    ) -> Result<Option<Duration>, StoreError> {
        let names: Vec<String> = scopes.iter().map(|(scope, _)| scope.clone()).collect();
        let spacings: Vec<f64> = scopes
            .iter()
            .map(|(_, rate)| 1.0 / rate.clamp(f64::MIN_POSITIVE, MAX_PER_SECOND))
            .collect();
        sqlx::query_file!("queries/ensure_rate_slots.sql", &names)
            .execute(&self.pool)
            .await?;
        let waits = sqlx::query_file_scalar!(
            "queries/reserve_rate_slot.sql",
            &names,
            &spacings,
            lookahead.as_secs_f64(),
            lead.as_secs_f64()
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(waits
            .into_iter()
            .next()
            .map(|w| Duration::from_secs_f64(w.max(0.0))))
    }
}
