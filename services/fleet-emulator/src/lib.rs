//! An AWS-faithful stand-in for STS, KMS and the DynamoDB control plane across many accounts.
//!
//! One HTTP endpoint serves all three services, dispatched as AWS does (`X-Amz-Target` for the JSON protocols,
//! `Action` for STS's query protocol); the access key in the SigV4 `Authorization` header says which account is
//! calling (signatures are not verified). Beside it, under `/_emulator/`, an admin API loads fleets, injects
//! faults, advances the clock and reads the request log. See the crate's README.md.
//!
//! Behaviour follows AWS's documentation where tablecrypt depends on it: UpdateTable is asynchronous (UPDATING,
//! then ACTIVE with the new key), the per-table switch quota, the per account-region limit on tables in flight,
//! key validation, inaccessible tables after a key is disabled, and per-replica keys of global tables.

pub mod admin;
pub mod aws;
pub mod behaviour;
pub mod calibrate;
pub mod clock;
pub mod faults;
pub mod fleet_file;
pub mod profile;
pub mod request_log;
pub mod server;
pub mod world;

pub use fleet_file::FleetSpec;
pub use server::{Emulator, RunningEmulator};
