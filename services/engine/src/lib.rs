//! Background work: inventory scans fanned out over account-regions, with bounded concurrency and a
//! DescribeTable rate limit per account-region. Every task is tracked and cancellable.

mod scanner;

pub use scanner::{InventoryScanner, ScanSettings, ScanTarget};
