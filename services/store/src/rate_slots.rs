//! Rate limits shared by every replica: each limited scope has one row holding its next free instant.

use std::time::Duration;

use sqlx::PgPool;

use crate::error::StoreError;

#[derive(Debug, Clone)]
pub struct RateSlotRepository {
    pool: PgPool,
}

impl RateSlotRepository {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Reserves the next slot of `scope` at `per_second` slots a second and returns how long to wait for it.
    /// Slots are spaced evenly (no burst), so no one-second window holds more than `per_second` of them.
    #[tracing::instrument(skip(self), err, level = "debug")]
    pub async fn reserve(&self, scope: &str, per_second: f64) -> Result<Duration, StoreError> {
        let spacing = 1.0 / per_second.max(1e-6);
        let wait = sqlx::query_file_scalar!("queries/reserve_rate_slot.sql", scope, spacing)
            .fetch_one(&self.pool)
            .await?;
        Ok(Duration::from_secs_f64(wait.max(0.0)))
    }
}
