//! The tablecrypt server: configuration, telemetry, metrics and the gRPC server with health and reflection.
//!
//! `main.rs` only parses the command line; tests call [`server::run`] with listeners bound to port 0.

pub mod config;
mod connections;
pub mod metrics;
pub mod rds_auth;
mod reload;
pub mod server;
pub mod shutdown;
pub mod telemetry;
mod tls;
mod trace_context;

pub use config::Config;
pub use server::{Listeners, run};
