//! Postgres persistence for tablecrypt.
//!
//! One repository per aggregate (`accounts`), one method per operation. Queries are compile-checked against the
//! schema in `migrations/` (offline data in `.sqlx/`).

pub mod accounts;
pub mod audit;
pub mod change_items;
pub mod change_requests;
pub mod error;
pub mod history;
pub mod inventory;
pub mod notifications;
pub mod rate_slots;
pub mod scans;
pub mod schema;
mod selector;
mod targets;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub use accounts::{AccountPage, AccountRepository};
pub use audit::{AuditEventRecord, AuditFilter, AuditRepository, NewAuditEvent};
pub use change_items::{
    ChangeItemRepository, ClaimedItem, Deferment, Deferral, ItemEnd, SendCheck,
};
pub use change_requests::{ChangeRequestRepository, RequestCursor};
pub use error::StoreError;
pub use history::{HistoryFilter, HistoryRepository, RecentSwitches, TableKey};
pub use inventory::{InventoryCursor, InventoryEntry, InventoryFilter, InventoryRepository};
pub use notifications::{DueDelivery, NotificationRepository, UnroutedEvent};
pub use rate_slots::RateSlotRepository;
pub use scans::{ScanRepository, TargetOutcome};

/// How the pool connects; built from the server's configuration.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Most open connections per process.
    pub max_connections: u32,
    /// How long a caller waits for a free connection (or for Postgres to answer) before the call fails.
    pub acquire_timeout: Duration,
}

/// Opens a pool. Connections are made lazily, so a server can start (and report NOT_SERVING) while Postgres is
/// still coming up; the first query waits up to `acquire_timeout`.
pub fn connect_lazy(options: PgConnectOptions, settings: &PoolSettings) -> PgPool {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_lazy_with(options)
}

/// Applies every pending migration. Safe to run from several replicas at once (sqlx takes an advisory lock).
/// Migrations the database has but this binary does not know are left alone (see [`schema`]).
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    schema::migrator()
        .run(pool)
        .await
        .map_err(StoreError::Migrate)
}

/// Every repository over one pool.
#[derive(Debug, Clone)]
pub struct Store {
    pub accounts: AccountRepository,
    pub audit: AuditRepository,
    pub inventory: InventoryRepository,
    pub scans: ScanRepository,
    pub change_requests: ChangeRequestRepository,
    pub change_items: ChangeItemRepository,
    pub history: HistoryRepository,
    pub rate_slots: RateSlotRepository,
    pub notifications: NotificationRepository,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self {
            accounts: AccountRepository::new(pool.clone()),
            audit: AuditRepository::new(pool.clone()),
            inventory: InventoryRepository::new(pool.clone()),
            scans: ScanRepository::new(pool.clone()),
            change_requests: ChangeRequestRepository::new(pool.clone()),
            change_items: ChangeItemRepository::new(pool.clone()),
            history: HistoryRepository::new(pool.clone()),
            notifications: NotificationRepository::new(pool.clone()),
            rate_slots: RateSlotRepository::new(pool),
        }
    }
}

#[cfg(test)]
mod tests {
    use tablecrypt_core::ItemReason;

    /// The schema stores every reason the planner and the workers can give, and nothing else.
    #[test]
    fn the_reason_check_lists_every_item_reason() {
        // The newest migration that sets the check.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .expect("the migrations folder")
            .map(|entry| entry.expect("a migration").path())
            .collect();
        paths.sort();
        let migration = paths
            .iter()
            .rev()
            .map(|path| std::fs::read_to_string(path).expect("a readable migration"))
            .find(|text| text.contains("ADD CONSTRAINT change_items_reason_check"))
            .expect("a migration setting the reason check");
        let check = &migration[migration
            .find("ADD CONSTRAINT change_items_reason_check")
            .expect("the reason check")..];
        let check = &check[..check.find("))").expect("the check's end")];
        let listed = check.matches('\'').count() / 2;
        assert_eq!(listed, ItemReason::ALL.len(), "{check}");
        for reason in ItemReason::ALL {
            assert!(
                check.contains(&format!("'{}'", reason.as_str())),
                "{reason} is not storable"
            );
        }
    }
}
