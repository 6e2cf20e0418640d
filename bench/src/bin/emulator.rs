//! Emulator benchmark: how long a 100,000-table fleet takes to load, and DescribeTable / UpdateTable throughput
//! with the AWS SDK for Rust as the client (so the numbers include SigV4 signing and HTTP, as tablecrypt pays).
//!
//! The emulator runs on a runtime of its own in this process; client and emulator share the machine's cores, so
//! the throughput is a lower bound on what the emulator alone can serve.
//!
//!     cargo run --release -p tablecrypt-bench --bin emulator -- --seconds 5

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_sdk_dynamodb::types::SseSpecification;
use clap::Parser;
use fleet_emulator::{Emulator, FleetSpec};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// Accounts in the generated fleet.
    #[arg(long, default_value_t = 100)]
    accounts: usize,
    /// Tables per account.
    #[arg(long, default_value_t = 1000)]
    tables_per_account: usize,
    /// Seconds per throughput phase.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent client tasks.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Use an emulator already running at this URL (the fleet is loaded into it through the admin API) instead
    /// of one in this process, so client and server CPU can be told apart.
    #[arg(long)]
    endpoint: Option<String>,
    /// With --endpoint: the emulator's process id, to report its CPU time per request (from /proc).
    #[arg(long)]
    emulator_pid: Option<u32>,
}

/// User + system CPU seconds of a process, from /proc/PID/stat (Linux; clock ticks of 10 ms).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// PUT the fleet into a running emulator.
async fn load_remote(endpoint: &str, yaml: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "PUT /_emulator/fleet HTTP/1.0\r\nHost: e\r\nContent-Length: {}\r\n\r\n",
        yaml.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(yaml.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    anyhow::ensure!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "load failed: {response}"
    );
    Ok(())
}

fn fleet_yaml(accounts: usize, tables: usize) -> String {
    let mut yaml = String::from(
        "hub: {account_id: \"000000000000\", access_key_id: AKIABENCH00000000000, secret_access_key: s}\n\
         settings: {update_seconds: 0, max_updating_tables_per_region: 1000000, request_log_capacity: 100000}\n\
         accounts:\n",
    );
    for i in 0..accounts {
        yaml.push_str(&format!(
            "  - account_id: \"{:012}\"\n    roles: [{{name: member}}]\n    regions: [eu-west-1]\n    \
             keys: [{{region: eu-west-1, aliases: [alias/bench]}}]\n    \
             generate: [{{count: {tables}, prefix: t-, mix: {{managed: 1, alias/bench: 1}}}}]\n",
            i + 1
        ));
    }
    yaml
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let yaml = fleet_yaml(args.accounts, args.tables_per_account);
    let total_tables = args.accounts * args.tables_per_account;

    let started = Instant::now();
    let spec = FleetSpec::from_yaml(&yaml)?;
    let emulator = Emulator::new(spec)?;
    let load = started.elapsed();
    println!(
        "fleet load: {total_tables} tables in {} accounts: {:.3} s (parse + build)",
        args.accounts,
        load.as_secs_f64()
    );

    let endpoint = match &args.endpoint {
        Some(endpoint) => {
            drop(emulator);
            let started = Instant::now();
            load_remote(endpoint, &yaml).await?;
            println!(
                "fleet load into {endpoint} over the admin API: {:.3} s",
                started.elapsed().as_secs_f64()
            );
            endpoint.clone()
        }
        None => {
            // Serve on a runtime of its own.
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.set_nonblocking(true)?;
            let addr = listener.local_addr()?;
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    // Never cancelled: the process exits when the benchmark is done.
                    emulator.serve(listener, CancellationToken::new()).await
                })
            });
            format!("http://{addr}")
        }
    };
    let hub = Credentials::new("AKIABENCH00000000000", "s", None, None, "bench");
    let sts_config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(hub)
        .load()
        .await;
    let sts = aws_sdk_sts::Client::new(&sts_config);
    let mut clients = Vec::new();
    for account in 1..=args.accounts {
        let assumed = sts
            .assume_role()
            .role_arn(format!("arn:aws:iam::{account:012}:role/member"))
            .role_session_name("bench")
            .send()
            .await
            .context("assume role")?
            .credentials
            .context("credentials")?;
        let creds = Credentials::new(
            assumed.access_key_id,
            assumed.secret_access_key,
            Some(assumed.session_token),
            None,
            "assumed",
        );
        let config = aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(aws_config::Region::new("eu-west-1"))
            .credentials_provider(creds)
            .load()
            .await;
        clients.push(aws_sdk_dynamodb::Client::new(&config));
    }
    let clients = Arc::new(clients);
    let tables = args.tables_per_account as u64;
    let accounts = args.accounts as u64;
    let cpu_before = args.emulator_pid.and_then(cpu_seconds);

    // Call i goes to account i % accounts, table (i / accounts) % tables: every table, every account.
    let describe = run_phase(args.concurrency, args.seconds, {
        let clients = clients.clone();
        move |i| {
            let client = clients[(i % accounts) as usize].clone();
            let table = format!("t-{:05}", (i / accounts) % tables);
            async move {
                client
                    .describe_table()
                    .table_name(table)
                    .send()
                    .await
                    .is_ok()
            }
        }
    })
    .await;
    let cpu_after_describe = args.emulator_pid.and_then(cpu_seconds);
    println!(
        "DescribeTable: {} ok in {:.1} s = {:.0}/s ({} errors), concurrency {}",
        describe.ok,
        describe.seconds,
        describe.ok as f64 / describe.seconds,
        describe.errors,
        args.concurrency
    );

    // Each UpdateTable switches a distinct table to the AWS owned key (always allowed by the switch quota).
    let update = run_phase(args.concurrency, args.seconds, {
        let clients = clients.clone();
        move |i| {
            let client = clients[(i % accounts) as usize].clone();
            let table = format!("t-{:05}", (i / accounts) % tables);
            async move {
                let sse = SseSpecification::builder().enabled(false).build();
                client
                    .update_table()
                    .table_name(table)
                    .sse_specification(sse)
                    .send()
                    .await
                    .is_ok()
            }
        }
    })
    .await;
    if let (Some(before), Some(after)) = (cpu_before, cpu_after_describe) {
        let requests = describe.ok + describe.errors;
        println!(
            "emulator CPU during DescribeTable: {:.2} s for {requests} requests = {:.0} us/request \
             (= {:.0} requests/s per core if the emulator had the core to itself)",
            after - before,
            (after - before) / requests as f64 * 1e6,
            requests as f64 / (after - before)
        );
    }
    println!(
        "UpdateTable: {} accepted in {:.1} s = {:.0}/s ({} refused)",
        update.ok,
        update.seconds,
        (update.ok + update.errors) as f64 / update.seconds,
        update.errors
    );
    println!(
        "{}",
        serde_json::json!({
            "fleet_tables": total_tables,
            "fleet_load_seconds": load.as_secs_f64(),
            "describe_table_per_second": describe.ok as f64 / describe.seconds,
            "update_table_calls_per_second": (update.ok + update.errors) as f64 / update.seconds,
        })
    );
    Ok(())
}

struct Phase {
    ok: u64,
    errors: u64,
    seconds: f64,
}

async fn run_phase<F, Fut>(concurrency: usize, seconds: u64, call: F) -> Phase
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (ok, errors, next, call) = (ok.clone(), errors.clone(), next.clone(), call.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if call(i).await {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    Phase {
        ok: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
    }
}
