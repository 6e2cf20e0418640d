//! Background work: planning and applying change requests with durable, rate-limited workers; inventory
//! scans fanned out over account-regions, with bounded concurrency and a
//! DescribeTable rate limit per account-region. Every task is tracked and cancellable.

pub mod access;
pub mod discovery;
mod error;
pub mod keys;
mod metrics;
pub mod notifier;
pub mod planner;
pub mod requests;
mod scanner;
pub mod trace;
pub mod worker;

pub use discovery::{AccountDiscovery, DiscoverySettings};
pub use error::EngineError;
pub use metrics::EngineMetrics;
pub use notifier::{Notifier, NotifierSettings, Sink};
pub use planner::{MAX_ITEMS, PlanError, Planner, RollbackRow, Target, Targets};
pub use scanner::{DescribeLimiter, InventoryScanner, ScanSettings, ScanTarget};
pub use tablecrypt_core::change::{PlannedItem, ReplicaPlan, summarize};
pub use worker::{SchemaFence, WorkerSettings, Workers};
