//! The emulator through the real AWS SDK for Rust, in one test binary (each file a module) so the SDK is linked
//! once.

mod accounts_and_sts;
mod behaviour_switches;
mod calibrate;
mod common;
mod encryption_switches;
mod global_tables_and_faults;
mod keys;
