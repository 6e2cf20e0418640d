//! Prometheus metrics of the change workers: items by state, AWS calls per account-region by outcome,
//! deferrals by reason, lease reclaims, and end-to-end item latency.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// From a few seconds (a table that was already compliant) to hours (switch-quota waits).
const ITEM_SECONDS_BUCKETS: &[f64] = &[
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    6.0 * 3600.0,
    24.0 * 3600.0,
];

/// The engine's metrics; cheap to clone. Registered once per process (tests register one per server).
#[derive(Clone)]
pub struct EngineMetrics {
    /// Items of requests in progress, by state (refreshed from the database by every worker process).
    pub items: IntGaugeVec,
    /// UpdateTable calls by account, region and outcome (STARTED, ALREADY_ENCRYPTED or a failure kind).
    pub updates: IntCounterVec,
    /// DescribeTable calls made while applying and polling, by account, region and outcome (OK or a kind).
    pub polls: IntCounterVec,
    /// Items given back to wait (throttling, quota, a busy table, a paused request), by reason.
    pub deferrals: IntCounterVec,
    /// Items taken over from a worker whose lease expired.
    pub reclaims: IntCounter,
    /// UpdateTable rate slots reserved but not used because the send could not go within the slot's window
    /// (the item's mark or the wake came too late): each is a slot of the account-region's rate lost.
    pub missed_slots: IntCounter,
    /// From the request becoming runnable to the item ending, by how it ended.
    pub item_seconds: HistogramVec,
}

impl EngineMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self::unregistered()?;
        registry.register(Box::new(metrics.items.clone()))?;
        registry.register(Box::new(metrics.updates.clone()))?;
        registry.register(Box::new(metrics.polls.clone()))?;
        registry.register(Box::new(metrics.deferrals.clone()))?;
        registry.register(Box::new(metrics.reclaims.clone()))?;
        registry.register(Box::new(metrics.missed_slots.clone()))?;
        registry.register(Box::new(metrics.item_seconds.clone()))?;
        Ok(metrics)
    }

    /// Metrics that go nowhere (for tools and benchmarks that do not serve /metrics).
    pub fn unregistered() -> prometheus::Result<Self> {
        Ok(Self {
            items: IntGaugeVec::new(
                Opts::new(
                    "tablecrypt_change_items",
                    "Items of change requests in progress, by state.",
                ),
                &["state"],
            )?,
            updates: IntCounterVec::new(
                Opts::new(
                    "tablecrypt_update_table_calls_total",
                    "UpdateTable calls sent by the change workers, by account, region and outcome.",
                ),
                &["account_id", "region", "outcome"],
            )?,
            polls: IntCounterVec::new(
                Opts::new(
                    "tablecrypt_describe_table_polls_total",
                    "DescribeTable calls made by the change workers, by account, region and outcome.",
                ),
                &["account_id", "region", "outcome"],
            )?,
            deferrals: IntCounterVec::new(
                Opts::new(
                    "tablecrypt_change_item_deferrals_total",
                    "Change items deferred for a retry, by reason (THROTTLED, SWITCH_QUOTA_EXHAUSTED, ...).",
                ),
                &["reason"],
            )?,
            reclaims: IntCounter::new(
                "tablecrypt_change_item_lease_reclaims_total",
                "Change items taken over after their worker's lease expired (not those handed back at a shutdown).",
            )?,
            missed_slots: IntCounter::new(
                "tablecrypt_update_slots_missed_total",
                "UpdateTable rate slots reserved but not used because the send could not go within the slot's \
                 window; each is a slot of an account-region's rate lost.",
            )?,
            item_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "tablecrypt_change_item_seconds",
                    "Seconds from a change request becoming runnable to each item ending, by outcome.",
                )
                .buckets(ITEM_SECONDS_BUCKETS.to_vec()),
                &["outcome"],
            )?,
        })
    }
}
