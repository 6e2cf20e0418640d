//! Inventory scan benchmark: 100 account-regions x 100 tables (10,000 tables) on the fleet emulator, with the
//! scanner's DescribeTable rate set to R per account-region. Reports the wall time of RefreshInventory to scan
//! end, the lower bound R implies (tables per account-region / R, all account-regions in parallel), their ratio,
//! and this process's peak RSS (the server runs in-process; the emulator runs in its own process).
//!
//!     cargo run --release -p tablecrypt-bench --bin inventory_scan -- --emulator http://127.0.0.1:4599 --rate 20

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use tablecrypt_proto::v1 as pb;
use tablecrypt_proto::v1::table_encryption_client::TableEncryptionClient;
use tablecrypt_server::{Config, Listeners};
use tokio_util::sync::CancellationToken;

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

async fn http(endpoint: &str, method: &str, path: &str, body: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(endpoint.trim_start_matches("http://")).await?;
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: e\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    anyhow::ensure!(
        response.contains(" 200 ") || response.contains(" 204 "),
        "{method} {path}: {response}"
    );
    Ok(response)
}

/// Peak resident set size of this process (VmHWM), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
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

    // A fresh database.
    let db = format!("tablecrypt_bench_{}", std::process::id());
    let mut admin =
        <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{}/postgres", args.postgres))
            .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut admin)
        .await?;

    let config = Config::from_toml(&format!(
        "database_url = '{}/{db}'\nlog_format = 'pretty'\nlog_filter = 'warn'\naws_endpoint_url = '{}'\n\
         scan_describe_rate = {}\nscan_concurrent_targets = {}\nscan_describes_in_flight = 8\n\
         database_max_connections = 20\nmetrics_addr = 'off'",
        args.postgres, args.emulator, args.rate, args.accounts
    ))?;
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = grpc.local_addr()?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(tablecrypt_server::run(
        config,
        Listeners {
            grpc,
            metrics: None,
        },
        shutdown.clone(),
    ));
    let mut client = loop {
        if let Ok(client) = TableEncryptionClient::connect(format!("http://{addr}")).await {
            break client;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for i in 1..=args.accounts {
        client
            .register_account(pb::RegisterAccountRequest {
                account: Some(pb::Account {
                    account_id: format!("{i:012}"),
                    role_arn: format!("arn:aws:iam::{i:012}:role/member"),
                    regions: vec!["eu-west-1".into()],
                    ..Default::default()
                }),
            })
            .await
            .context("register")?;
    }

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
    shutdown.cancel();
    let _ = server.await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    Ok(())
}
