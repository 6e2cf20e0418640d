//! Batch key migration benchmark: 100 account-regions x 100 tables (10,000 tables) on key A move to key B on the
//! fleet emulator (own process), with tablecrypt's UpdateTable rate set to R per account-region and the
//! emulator's UPDATING time T. The lower bound is 100 / R + T seconds (account-regions run in parallel; the last
//! table of each is sent at 99 / R and needs T more). Reports makespan (CreateChangeRequest to SUCCEEDED),
//! makespan / bound, the throttling errors the run caused (AWS-side limit: `--aws-limit` UpdateTable/s per
//! account-region), and this process's peak RSS.
//!
//! `--profiles optimistic,aws-observed` runs once per emulator behaviour profile, one after the other in this
//! run, so the ratios compare. `--kills N` runs the change workers as two `tablecrypt-server` processes
//! (`role = 'worker'`, the API stays in this process) and kills one of them with SIGKILL N times during the run,
//! at even intervals of the bound, restarting it at once: the makespan then includes every lease a dead worker
//! left behind (`--worker-lease`).
//!
//! With `--queue` it measures the queue instead: T = 0 and rates far above the work, so the figure is items
//! claimed and completed per second with AWS reduced to the emulator answering at once.
//!
//!     cargo run --release -p tablecrypt-bench --bin migration -- --emulator http://127.0.0.1:4599 --rate 2 --update-seconds 5

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use tablecrypt_bench::{
    BenchDatabase, BenchServer, WorkerProcess, http, peak_rss_mib, register_accounts, scan,
};
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
    /// tablecrypt's UpdateTable rate per account-region.
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
    /// The emulator's UPDATING time, seconds.
    #[arg(long, default_value_t = 5.0)]
    update_seconds: f64,
    /// The AWS-side UpdateTable limit per account-region the emulator enforces (ThrottlingException above it).
    #[arg(long, default_value_t = 5)]
    aws_limit: u32,
    /// Measure queue throughput: T = 0, no AWS-side limit, rates far above the work.
    #[arg(long)]
    queue: bool,
    /// The emulator's behaviour profiles to run under, one run each, in order (`optimistic`, `aws-observed`).
    #[arg(long, value_delimiter = ',', default_value = "optimistic")]
    profiles: Vec<String>,
    /// SIGKILL one of two worker processes this many times during the run (0: workers in this process).
    #[arg(long, default_value_t = 0)]
    kills: usize,
    /// The workers' lease: how long a killed worker's items wait before another takes them over.
    #[arg(long, default_value = "5s")]
    worker_lease: String,
    /// `worker_settle_timeout`: how long a table whose send a kill left unknown may show no sign of it before it
    /// is sent again. Production's 5 minutes allows for AWS; by default here 2.5 times the time the profile
    /// shows the old key after a change, and at least 5 s: 5 s under `optimistic` (a change shows at once),
    /// 20 s under `aws-observed` (8 s).
    #[arg(long)]
    settle_timeout: Option<String>,
    /// Items each worker process works on at once (`worker_concurrency`). Every item holds one from its claim to
    /// its end, through the update's T seconds and the polls after it, so R x account-regions x (T + the polls'
    /// overshoot + the wait for a slot) of them are needed to send at the full rate.
    #[arg(long, default_value_t = 2000)]
    worker_concurrency: usize,
    /// Keep the emulator's request log (its last 200,000 calls, GET /_emulator/requests) to read the sends'
    /// timing after a run; off by default, since the log costs the emulator memory and time.
    #[arg(long)]
    request_log: bool,
    /// The servers' `log_filter` (on stderr): `warn,tablecrypt_engine::worker::pace=debug` adds a line per send
    /// that missed its rate slot.
    #[arg(long, default_value = "warn")]
    log_filter: String,
    /// Postgres server to create the benchmark database on.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
}

fn fleet_yaml(
    accounts: usize,
    tables: usize,
    update_seconds: f64,
    profile: &str,
    request_log: bool,
) -> String {
    let capacity = if request_log { 200_000 } else { 0 };
    let mut yaml = format!(
        "hub: {{account_id: \"000000000000\", access_key_id: AKIAHUBTEST000000000, secret_access_key: hub-secret}}\n\
         settings: {{request_log_capacity: {capacity}, update_seconds: {update_seconds}}}\nbehaviour: {{profile: {profile}}}\n\
         accounts:\n"
    );
    for i in 1..=accounts {
        yaml.push_str(&format!(
            "  - account_id: \"{i:012}\"\n    roles: [{{name: member}}]\n    regions: [eu-west-1]\n    \
             keys: [{{region: eu-west-1, aliases: [alias/a]}}, {{region: eu-west-1, aliases: [alias/b]}}]\n    \
             generate: [{{count: {tables}, prefix: t-, mix: {{alias/a: 1}}}}]\n"
        ));
    }
    yaml
}

/// UpdateTable outcomes the emulator counted: (ok, throttled).
async fn update_counters(emulator: &str) -> anyhow::Result<(u64, u64)> {
    let body = http(emulator, "GET", "/_emulator/counters", "").await?;
    let counters: serde_json::Value = serde_json::from_str(&body).context("counters JSON")?;
    let update = counters
        .get("counters")
        .unwrap_or(&counters)
        .get("UpdateTable")
        .cloned()
        .unwrap_or_default();
    let n = |key: &str| {
        update
            .get(key)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    Ok((n("ok"), n("ThrottlingException")))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for profile in &args.profiles {
        run(&args, profile).await?;
    }
    Ok(())
}

async fn run(args: &Args, profile: &str) -> anyhow::Result<()> {
    let update_seconds = if args.queue { 0.0 } else { args.update_seconds };
    http(
        &args.emulator,
        "PUT",
        "/_emulator/fleet",
        &fleet_yaml(
            args.accounts,
            args.tables,
            update_seconds,
            profile,
            args.request_log,
        ),
    )
    .await?;
    http(&args.emulator, "DELETE", "/_emulator/faults", "").await?;
    if !args.queue {
        http(
            &args.emulator,
            "POST",
            "/_emulator/faults",
            &format!(
                r#"{{"type": "throttle_above", "requests_per_second": {}, "operation": "UpdateTable"}}"#,
                args.aws_limit
            ),
        )
        .await?;
    }
    let db = BenchDatabase::create(&args.postgres, "migration").await?;
    let (rate, poll) = if args.queue {
        (
            10_000.0,
            "worker_poll_initial = '10ms'\nworker_poll_max = '50ms'\npoll_rate = 100000.0",
        )
    } else {
        // First look at about T, then every second: polls cost AWS requests and database round trips.
        (
            args.rate,
            "worker_poll_initial = '2s'\nworker_poll_max = '2s'\npoll_rate = 50.0",
        )
    };
    let settle = match &args.settle_timeout {
        Some(settle) => settle.clone(),
        None => {
            // The emulator's own value for the profile, not a copy of it.
            let behaviour = fleet_emulator::behaviour::Behaviour {
                profile: serde_json::from_value(serde_json::json!(profile))
                    .with_context(|| format!("unknown profile {profile}"))?,
                ..Default::default()
            };
            format!("{}s", (behaviour.old_key_visible_seconds() * 2.5).max(5.0))
        }
    };
    let common = format!(
        "database_url = '{}'\nlog_format = 'pretty'\nlog_filter = '{}'\naws_endpoint_url = '{}'\n\
         scan_describe_rate = 500\nscan_concurrent_targets = {}\n\
         update_rate = {rate}\nglobal_update_rate = 100000.0\nmax_tables_in_flight = 500\n\
         worker_concurrency = {}\nworker_claim_interval = '100ms'\nworker_lease = '{}'\n\
         worker_settle_timeout = '{settle}'\n{poll}",
        db.url,
        args.log_filter,
        args.emulator,
        args.accounts,
        args.worker_concurrency,
        args.worker_lease
    );
    // Without kills the workers run in this process; with kills, in two processes of their own.
    let role = if args.kills > 0 { "role = 'api'" } else { "" };
    // Postgres allows 100 connections: 90 for one process, or 30 for each of three.
    let connections = if args.kills > 0 { 30 } else { 90 };
    let server = BenchServer::start(&format!(
        "{common}\n{role}\ndatabase_max_connections = {connections}\nmetrics_addr = 'off'"
    ))
    .await?;
    let mut workers = Vec::new();
    if args.kills > 0 {
        for i in 0..2 {
            workers.push(WorkerProcess::start(
                &format!("worker-{i}"),
                &format!("{common}\ndatabase_max_connections = 30"),
            )?);
        }
    }
    let mut client = server.client.clone();
    register_accounts(&mut client, args.accounts).await?;
    let scanned = scan(&mut client).await?;
    anyhow::ensure!(scanned.state == "SUCCEEDED", "scan ended {}", scanned.state);
    let (ok_before, throttled_before) = update_counters(&args.emulator).await?;

    let started = Instant::now();
    let created = client
        .create_change_request(pb::CreateChangeRequestRequest {
            selector: Some(pb::TableSelector {
                table_name_prefix: "t-".into(),
                ..Default::default()
            }),
            target: Some(pb::TargetEncryption {
                mode: pb::EncryptionMode::CustomerManaged as i32,
                kms_key: "alias/b".into(),
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    let planned = started.elapsed().as_secs_f64();
    let id = created
        .change_request
        .context("no request")?
        .change_request_id;
    let bound = args.tables as f64 / args.rate + update_seconds;
    let kill_every = Duration::from_secs_f64(bound / (args.kills + 1) as f64);
    let mut kills_done = 0;
    let done = loop {
        if kills_done < args.kills && started.elapsed() >= kill_every * (kills_done as u32 + 1) {
            let worker = kills_done % workers.len().max(1);
            if let Some(worker) = workers.get_mut(worker) {
                worker.kill_and_restart().await?;
            }
            kills_done += 1;
        }
        let now = client
            .get_change_request(pb::GetChangeRequestRequest {
                change_request_id: id.clone(),
            })
            .await?
            .into_inner();
        if !matches!(
            now.state(),
            pb::ChangeRequestState::Queued | pb::ChangeRequestState::Running
        ) {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let makespan = started.elapsed().as_secs_f64();
    let (ok_after, throttled_after) = update_counters(&args.emulator).await?;
    let counts = done.counts.unwrap_or_default();
    let total = args.accounts * args.tables;
    if args.queue {
        println!(
            "queue: {total} items claimed, applied (T = 0) and completed in {makespan:.2} s ({:.0} items/s; \
             planning {planned:.2} s of it); state {:?}; succeeded {}; peak RSS {:.0} MiB",
            total as f64 / makespan,
            done.state(),
            counts.succeeded,
            peak_rss_mib().unwrap_or(f64::NAN)
        );
    } else {
        let faults = if args.kills > 0 {
            format!(
                ", {kills_done} kill -9 of 2 worker processes (lease {}, settle timeout {settle})",
                args.worker_lease
            )
        } else {
            String::new()
        };
        println!(
            "[{profile}{faults}] migration of {} account-regions x {} tables at R = {}/s, T = {update_seconds} s: {:?} in \
             {makespan:.2} s (planning {planned:.2} s); bound {bound:.2} s; ratio {:.3}; UpdateTable ok {}, throttled {} \
             (AWS-side limit {}/s); succeeded {}; peak RSS {:.0} MiB",
            args.accounts,
            args.tables,
            args.rate,
            done.state(),
            makespan / bound,
            ok_after - ok_before,
            throttled_after - throttled_before,
            args.aws_limit,
            counts.succeeded,
            peak_rss_mib().unwrap_or(f64::NAN)
        );
    }
    for worker in workers {
        worker.stop().await;
    }
    server.stop().await;
    db.drop_now().await?;
    Ok(())
}
