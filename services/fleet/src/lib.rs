//! AWS access for tablecrypt.
//!
//! One long-lived client set per (account, region), built from aws-config's `AssumeRoleProvider` with the
//! account's role and external id; a fleet-sized identity cache so credentials are reused until they near expiry;
//! a retry partition per account-region so one throttled account cannot drain the others' retry budget; connect
//! and operation timeouts. Every error is classified ([`tablecrypt_core::FailureKind`]) before it leaves here.

mod changes;
mod clients;
mod error;
mod notify;
mod operations;
mod organizations;
mod settings;

pub use changes::{UpdateOutcome, is_switch_quota};
pub use clients::{AccountAccess, Fleet};
pub use error::FleetError;
pub use operations::CallerIdentity;
pub use organizations::OrganizationAccess;
pub use settings::FleetSettings;
pub use tablecrypt_core::change::{ApplyTarget, KeyInfo};
