//! Pacing and looking: rate slots before each UpdateTable, DescribeTable at the poll rate, polling until the
//! target shows, and recording what was seen.

use tablecrypt_core::change::apply::{PollStep, after_poll};
use tablecrypt_core::change::{AwsCall, failure_reason};
use tablecrypt_core::{ItemReason, Region, TableEncryption, TableName};
use tablecrypt_fleet::{AccountAccess, ApplyTarget};
use tablecrypt_store::{ClaimedItem, ItemEnd};

use super::item::{failed, lost_or_retry};
use super::{Inner, Stop};

impl Inner {
    pub(super) async fn wait_for_update_slot(&self, claimed: &ClaimedItem) -> Result<(), Stop> {
        let item = &claimed.item;
        // The account's own rate if it has one, else the service's; a request may only lower it.
        let allowed = claimed
            .account_update_rate
            .unwrap_or(self.settings.update_rate);
        let rate = claimed
            .max_updates_per_second
            .map_or(allowed, |cap| cap.min(allowed));
        let scope = format!("update:{}:{}", item.table.account_id, item.table.region);
        let regional = self.store.rate_slots.reserve(&scope, rate).await;
        let global = self
            .store
            .rate_slots
            .reserve("update:*", self.settings.global_update_rate)
            .await;
        match (regional, global) {
            (Ok(a), Ok(b)) => {
                tokio::time::sleep(a.max(b)).await;
                Ok(())
            }
            (Err(e), _) | (_, Err(e)) => Err(lost_or_retry(e)),
        }
    }

    /// A global table is listed in each of its regions; after a change those regions' inventory rows would show
    /// the old keys until the next scan (and GetKeyUsage would call a retired key still in use). Describe the
    /// table in each replica region and record what AWS reports. Best effort: a failure only costs freshness.
    pub(super) async fn refresh_replica_regions(&self, claimed: &ClaimedItem) {
        let item = &claimed.item;
        let regions: Vec<Region> = item
            .replicas
            .iter()
            .filter_map(|r| Region::parse(&r.region).ok())
            .collect();
        if regions.is_empty() {
            return;
        }
        let Ok(access) = self.access(&item.table.account_id).await else {
            return;
        };
        let table = item.table.table_name.clone();
        let poll_rate = claimed.account_poll_rate.unwrap_or(self.settings.poll_rate);
        for region in regions {
            if let Ok(seen) = self.describe(&access, region, &table, poll_rate).await {
                self.record(&seen).await;
            }
        }
    }

    /// Writes what DescribeTable showed to the inventory; a failure only costs freshness.
    pub(super) async fn record(&self, table: &TableEncryption) {
        if let Err(error) = self
            .store
            .inventory
            .record(std::slice::from_ref(table), None)
            .await
        {
            tracing::debug!(%error, "could not record the table in the inventory");
        }
    }

    pub(super) async fn describe(
        &self,
        access: &AccountAccess,
        region: Region,
        table: &TableName,
        poll_rate: f64,
    ) -> Result<TableEncryption, Stop> {
        let scope = format!("describe:{}:{}", access.account_id, region);
        match self.store.rate_slots.reserve(&scope, poll_rate).await {
            Ok(wait) => tokio::time::sleep(wait).await,
            Err(e) => return Err(lost_or_retry(e)),
        }
        let described = self.fleet.describe_table(access, region, table).await;
        let outcome = match &described {
            Ok(_) => "OK",
            Err(error) => error.kind.as_str(),
        };
        self.metrics
            .polls
            .with_label_values(&[access.account_id.as_str(), region.as_str(), outcome])
            .inc();
        match described {
            Ok(table) => Ok(table),
            Err(error) => Err(
                match failure_reason(
                    AwsCall::DescribeTable,
                    error.kind,
                    error.role_refused,
                    &error.message,
                ) {
                    // AWS's verdicts about the table or the role; anything else is looked at again later.
                    reason @ (ItemReason::TableNotFound
                    | ItemReason::AccessDenied
                    | ItemReason::AccountUnreachable) => Stop::Done(failed(reason, error.message)),
                    _ => self.retry(0, ItemReason::Throttled, error.message),
                },
            ),
        }
    }

    pub(super) async fn poll_until_done(
        &self,
        access: &AccountAccess,
        region: Region,
        table: &TableName,
        target: &ApplyTarget,
        attempts: i32,
        poll_rate: f64,
    ) -> Stop {
        let mut wait = self.settings.poll_initial;
        loop {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(self.settings.poll_max);
            let current = match self.describe(access, region, table, poll_rate).await {
                Ok(current) => current,
                Err(Stop::Defer { .. }) => continue, // throttled or transient: keep polling, slower
                Err(stop) => return stop,
            };
            match after_poll(&current, target) {
                PollStep::Done => {
                    // Polls are not written to the inventory (they would double the database load); the end is.
                    self.record(&current).await;
                    return Stop::Done(ItemEnd::Succeeded { changed: true });
                }
                PollStep::SettledElsewhere => {
                    // AWS finished on something else (someone else changed it meanwhile): try again later.
                    return self.retry(
                        attempts,
                        ItemReason::AwsError,
                        "the table settled on another key; retrying".into(),
                    );
                }
                PollStep::KeepWaiting => {}
            }
        }
    }
}
