//! Inventory scan benchmark: 100 account-regions x 100 tables (10,000 tables) on the fleet emulator, with the
//! scanner's DescribeTable rate set to R per account-region. Reports the wall time of RefreshInventory to scan
//! end, the lower bound R implies (tables per account-region / R, all account-regions in parallel), their ratio,
//! and this process's peak RSS (the server runs in-process; the emulator runs in its own process).
//!
//!     cargo run --release -p tablecrypt-bench --bin inventory_scan -- --emulator http://127.0.0.1:4599 --rate 20

use std::time::{Duration, Instant};

use clap::Parser;
use tablecrypt_bench::{BenchDatabase, BenchServer, http, peak_rss_mib, register_accounts};
use tablecrypt_proto::v1 as pb;

#[derive(Parser)]
struct Args {
    /// A running fleet-emulator (the fleet is loaded into it through the admin API).
    #[arg(long)]
    emulator: String,
    #[arg(long, default_value_t = 100)]
    accounts: usize,
    #[arg(long, default_value_t = 100)]
    tables: usize,
    /// DescribeTable requests per second per account-region (the scanner's limit).
    #[arg(long, default_value_t = 20)]
    rate: u32,
    /// Postgres server to create the benchmark database on.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
}

fn fleet_yaml(accounts: usize, tables: usize) -> String {
    let mut yaml = String::from(
        "hub: {account_id: \"000000000000\", access_key_id: AKIAHUBTEST000000000, secret_access_key: hub-secret}\n\
         settings: {request_log_capacity: 0}\naccounts:\n",
    );
    for i in 1..=accounts {
        yaml.push_str(&format!(
            "  - account_id: \"{i:012}\"\n    roles: [{{name: member}}]\n    regions: [eu-west-1]\n    \
             keys: [{{region: eu-west-1, aliases: [alias/k]}}]\n    \
             generate: [{{count: {tables}, prefix: t-, mix: {{owned: 1, managed: 1, alias/k: 1}}}}]\n"
        ));
    }
    yaml
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    http(
        &args.emulator,
        "PUT",
        "/_emulator/fleet",
        &fleet_yaml(args.accounts, args.tables),
    )
    .await?;
    let db = BenchDatabase::create(&args.postgres, "scan").await?;
    // API only: no change workers competing for the cores.
    let server = BenchServer::start(&format!(
        "database_url = '{}'\nlog_format = 'pretty'\nlog_filter = 'warn'\naws_endpoint_url = '{}'\n\
         scan_describe_rate = {}\nscan_concurrent_targets = {}\nscan_describes_in_flight = 8\n\
         database_max_connections = 20\nmetrics_addr = 'off'\nrole = 'api'",
        db.url, args.emulator, args.rate, args.accounts
    ))
    .await?;
    let mut client = server.client.clone();
    register_accounts(&mut client, args.accounts).await?;

    let started = Instant::now();
    let scan = client
        .refresh_inventory(pb::RefreshInventoryRequest::default())
        .await?
        .into_inner();
    let finished = loop {
        let now = client
            .get_inventory_scan(pb::GetInventoryScanRequest {
                scan_id: scan.scan_id.clone(),
            })
            .await?
            .into_inner();
        if now.state != "RUNNING" {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let wall = started.elapsed().as_secs_f64();
    let bound = args.tables as f64 / f64::from(args.rate);
    println!(
        "scan of {} account-regions x {} tables: {} in {wall:.2} s; bound {bound:.2} s (= {} tables / {} per s); \
         ratio {:.3}; tables seen {}; peak RSS {:.0} MiB",
        args.accounts,
        args.tables,
        finished.state,
        args.tables,
        args.rate,
        wall / bound,
        finished.tables_seen,
        peak_rss_mib().unwrap_or(f64::NAN)
    );
    println!(
        "{}",
        serde_json::json!({"wall_seconds": wall, "bound_seconds": bound, "ratio": wall / bound,
            "tables_seen": finished.tables_seen, "state": finished.state, "peak_rss_mib": peak_rss_mib()})
    );
    server.stop().await;
    db.drop_now().await?;
    Ok(())
}
