//! Rate limits shared by every replica: each limited scope has one row holding its next free instant.

use std::time::Duration;

use sqlx::PgPool;

use crate::error::StoreError;

/// The fastest rate a slot is handed out at; a limit above it is this (a thousand calls a second is beyond any
/// AWS control-plane budget tablecrypt stays within).
const MAX_PER_SECOND: f64 = 1000.0;

#[derive(Debug, Clone)]
pub struct RateSlotRepository {
    pool: PgPool,
}

impl RateSlotRepository {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Reserves the next slot of `scope` at `per_second` slots a second if it is at most `lookahead` away, and
    /// returns how long to wait for it; `None` when the next slot is further away (ask again later). Slots are
    /// spaced evenly (no burst), so no one-second window holds more than `per_second` of them.
    #[tracing::instrument(skip(self), err, level = "debug")]
    pub async fn reserve(
        &self,
        scope: &str,
        per_second: f64,
        lookahead: Duration,
    ) -> Result<Option<Duration>, StoreError> {
        let spacing = 1.0 / per_second.clamp(f64::MIN_POSITIVE, MAX_PER_SECOND);
        let wait = sqlx::query_file_scalar!(
            "queries/reserve_rate_slot.sql",
            scope,
            spacing,
            lookahead.as_secs_f64()
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(wait.map(|w| Duration::from_secs_f64(w.max(0.0))))
    }
}
