//! Every end-to-end test in one binary: each file below is a module named for what it tests. One binary links
//! the AWS SDK, tonic and sqlx once instead of nineteen times, which keeps the debug build small on disk and quick
//! to link; nextest still runs each test in its own process. Select a file's tests with
//! `cargo nextest run -p tablecrypt-tests -E 'test(/^change_crash::/)'`.

mod accounts;
mod bad_input;
mod change_account_limits;
mod change_aws_observed;
mod change_aws_observed_fleet;
mod change_chaos;
mod change_crash;
mod change_faults;
mod change_postgres_restart;
mod change_requests;
mod change_under_faults;
mod cli;
mod connections;
mod database_iam;
mod database_tls;
mod discovery;
mod fleet_wide;
mod inventory;
mod lease_heartbeat;
mod moto;
mod notifications;
mod rate_slots;
mod regions;
mod request_accounts;
mod rolling_upgrade;
mod scan_replicas;
mod security;
mod server;
mod traces;
