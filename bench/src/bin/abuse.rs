//! Abuse benchmark: what hostile or careless traffic costs the server, bounded and on loopback only. The server
//! runs as its own process (`tablecrypt-server` next to this binary) so its memory is its own; each phase lasts
//! `--seconds` and stops by itself:
//!
//! 1. idle: an admin's ListAccounts latency (p50/p99), the reference;
//! 2. unauthenticated flood: clients calling without credentials as fast as they can; audit rows written per
//!    refused call, the admin's latency meanwhile;
//! 3. random-path flood: calls to made-up paths; the server's RSS and `/metrics` size before and after;
//! 4. idle connections: 1,000 TCP connections that send nothing; the admin's latency meanwhile;
//! 5. watch streams: 500 WatchChangeRequest streams on one pending request; Postgres commits per second and the
//!    admin's latency meanwhile.
//!
//! Run: `cargo build --release -p tablecrypt-bench -p tablecrypt-server && target/release/abuse`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use fleet_emulator::{Emulator, FleetSpec};
use tablecrypt_bench::{BenchDatabase, http, server_binary};
use tablecrypt_proto::v1 as pb;
use tablecrypt_proto::v1::table_encryption_client::TableEncryptionClient;
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    /// How long each flood phase lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent flooding clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Calls per second all flooding clients make together; 0: as fast as they can (on 2 shared cores the
    /// benchmark's own clients then take the CPU the server and the sampled admin need). 1,000/s is the rate the
    /// security issue states its audit target at.
    #[arg(long, default_value_t = 1000)]
    flood_rate: u64,
    /// Postgres server to create the benchmark database on.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
}

/// Watchers: 32 callers x 16 streams (the per-caller cap) = 512 >= 500.
const WATCH_CALLERS: usize = 32;
const WATCHES: usize = 500;
const IDLE_CONNECTIONS: usize = 1_000;
/// Admin calls per latency sample: 1,000, so the p99 is the 10th slowest call rather than the 2nd of 200 (one
/// scheduler hiccup).
const SAMPLES: usize = 1_000;
/// Admin calls made before each sample and not counted.
const WARM_UP: usize = 50;
/// After opening the idle connections, before sampling: the server has accepted them all and they sit idle (the
/// state the phase is about), not the burst of accepts.
const IDLE_SETTLE: Duration = Duration::from_secs(1);

fn token(name: &str) -> String {
    format!("token-{name}")
}

fn sha256_hex(text: &str) -> String {
    tablecrypt_api::auth::token_sha256_hex(text)
}

fn bearer<T>(name: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token(name)).parse().expect("ascii"),
    );
    request
}

struct Server {
    child: tokio::process::Child,
    addr: std::net::SocketAddr,
    metrics: std::net::SocketAddr,
    config: std::path::PathBuf,
}

impl Server {
    fn rss_mib(&self) -> f64 {
        let Some(pid) = self.child.id() else {
            return 0.0;
        };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
                line.split_whitespace().nth(1)?.parse::<f64>().ok()
            })
            .map_or(0.0, |kib| kib / 1024.0)
    }

    async fn metrics_bytes(&self) -> usize {
        http(&format!("http://{}", self.metrics), "GET", "/metrics", "")
            .await
            .map(|body| body.len())
            .unwrap_or(0)
    }
}

fn free_addr() -> anyhow::Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

async fn start_server(database_url: &str, emulator: &str) -> anyhow::Result<Server> {
    let binary = server_binary()?;
    let (addr, metrics) = (free_addr()?, free_addr()?);
    let mut toml = format!(
        "insecure = true\nlisten_addr = '{addr}'\nmetrics_addr = '{metrics}'\ndatabase_url = '{database_url}'\n\
         aws_endpoint_url = '{emulator}'\napproval_required = true\ncaller_rate_limit = 0\n\
         [[auth_tokens]]\nidentity = 'admin'\nsha256 = '{}'\n[[grants]]\nidentity = 'token:admin'\nrole = 'admin'\n",
        sha256_hex(&token("admin"))
    );
    for i in 0..WATCH_CALLERS {
        let name = format!("watcher-{i}");
        toml.push_str(&format!(
            "[[auth_tokens]]\nidentity = '{name}'\nsha256 = '{}'\n[[grants]]\nidentity = 'token:{name}'\nrole = 'viewer'\n",
            sha256_hex(&token(&name))
        ));
    }
    let config = std::env::temp_dir().join(format!("tablecrypt-abuse-{}.toml", std::process::id()));
    std::fs::write(&config, toml)?;
    let mut command = tokio::process::Command::new(binary);
    for (key, _) in std::env::vars() {
        if key.starts_with("TABLECRYPT_") {
            command.env_remove(key);
        }
    }
    let child = command
        .env("AWS_ACCESS_KEY_ID", "AKIAHUBTEST000000000")
        .env("AWS_SECRET_ACCESS_KEY", "hub-secret")
        .env("AWS_REGION", "eu-west-1")
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    Ok(Server {
        child,
        addr,
        metrics,
        config,
    })
}

async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<TableEncryptionClient<Channel>> {
    let started = Instant::now();
    loop {
        if let Ok(client) = TableEncryptionClient::connect(format!("http://{addr}")).await {
            return Ok(client);
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the server did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// p50 and p99 of an admin's ListAccounts, in milliseconds, over [`SAMPLES`] calls one after another, after
/// [`WARM_UP`] calls not counted (a new connection, the first pool connections).
async fn admin_latency(addr: std::net::SocketAddr) -> anyhow::Result<(f64, f64)> {
    let mut client = connect(addr).await?;
    for _ in 0..WARM_UP {
        client
            .list_accounts(bearer("admin", pb::ListAccountsRequest::default()))
            .await
            .context("admin ListAccounts")?;
    }
    let mut millis = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        client
            .list_accounts(bearer("admin", pb::ListAccountsRequest::default()))
            .await
            .context("admin ListAccounts")?;
        millis.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    millis.sort_by(f64::total_cmp);
    let at = |q: f64| millis[((millis.len() - 1) as f64 * q).round() as usize];
    Ok((at(0.5), at(0.99)))
}

/// Runs `clients` loops of `call` until `seconds` pass, together at most `rate` calls per second (0: no pacing);
/// returns the calls made.
async fn flood<F, Fut>(clients: usize, seconds: u64, rate: u64, call: F) -> u64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    // Each client paces itself at its share of the rate.
    let spacing = (rate > 0).then(|| Duration::from_secs_f64(clients as f64 / rate as f64));
    for _ in 0..clients {
        let (stop, calls, call) = (stop.clone(), calls.clone(), call.clone());
        tasks.push(tokio::spawn(async move {
            let mut ticks = spacing.map(|every| {
                let mut ticks = tokio::time::interval(every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticks
            });
            while !stop.load(Ordering::Relaxed) {
                if let Some(ticks) = ticks.as_mut() {
                    ticks.tick().await;
                }
                call().await;
                calls.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    calls.load(Ordering::Relaxed)
}

async fn commits(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await?)
}

fn fleet_yaml() -> &'static str {
    r#"
hub: {account_id: "000000000000", access_key_id: AKIAHUBTEST000000000, secret_access_key: hub-secret}
accounts:
  - account_id: "111111111111"
    roles: [{name: member}]
    regions: [eu-west-1]
    keys: [{region: eu-west-1, aliases: [alias/a]}, {region: eu-west-1, aliases: [alias/b]}]
    generate: [{count: 20, prefix: t-, mix: {alias/a: 1}}]
"#
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let db = BenchDatabase::create(&args.postgres, "abuse").await?;
    let emulator = Emulator::spawn(FleetSpec::from_yaml(fleet_yaml())?).await?;
    let mut server = start_server(&db.url, &emulator.endpoint()).await?;
    let result = run(&args, &server, &db.url).await;
    let _ = server.child.kill().await;
    let _ = std::fs::remove_file(&server.config);
    db.drop_now().await?;
    result
}

async fn run(args: &Args, server: &Server, database_url: &str) -> anyhow::Result<()> {
    let addr = server.addr;
    let pool = sqlx::PgPool::connect(database_url).await?;
    let mut admin = connect(addr).await?;
    let (p50, p99) = admin_latency(addr).await?;
    println!(
        "idle: admin ListAccounts p50 {p50:.2} ms, p99 {p99:.2} ms; server RSS {:.0} MiB; /metrics {} bytes",
        server.rss_mib(),
        server.metrics_bytes().await
    );

    // 2. Unauthenticated flood. Each flood's admin p99 is compared with an idle sample taken just before it: on
    // a shared 2-core machine the idle latency itself drifts between minutes.
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let (_, idle_p99) = admin_latency(addr).await?;
    let flooding = {
        let channel = channel.clone();
        tokio::spawn(flood(
            args.clients,
            args.seconds,
            args.flood_rate,
            move || {
                let mut client = TableEncryptionClient::new(channel.clone());
                async move {
                    let _ = client
                        .list_accounts(pb::ListAccountsRequest::default())
                        .await;
                }
            },
        ))
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (p50, p99) = admin_latency(addr).await?;
    let calls = flooding.await?;
    // The last interval's repeats are written at its end (audit_repeat_interval, 10 s by default).
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (rows, counted): (i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(call_count), 0)::bigint FROM audit_log WHERE caller = 'unauthenticated'",
    )
    .fetch_one(&pool)
    .await?;
    println!(
        "unauthenticated flood: {calls} calls in {} s ({:.0}/s); audit rows {rows} counting {counted} calls = {:.5} \
         rows per refused call; admin p50 {p50:.2} ms, p99 {p99:.2} ms ({:.2}x the p99 of {idle_p99:.2} ms just \
         before); server RSS {:.0} MiB",
        args.seconds,
        calls as f64 / args.seconds as f64,
        rows as f64 / calls.max(1) as f64,
        p99 / idle_p99,
        server.rss_mib()
    );

    // 3. Random-path flood.
    let (rss_before, metrics_before) = (server.rss_mib(), server.metrics_bytes().await);
    let (_, idle_p99) = admin_latency(addr).await?;
    let counter = Arc::new(AtomicU64::new(0));
    let flooding = {
        let channel = channel.clone();
        let counter = counter.clone();
        tokio::spawn(flood(
            args.clients,
            args.seconds,
            args.flood_rate,
            move || {
                let channel = channel.clone();
                let n = counter.fetch_add(1, Ordering::Relaxed);
                async move {
                    let mut grpc = tonic::client::Grpc::new(channel);
                    if grpc.ready().await.is_err() {
                        return;
                    }
                    let path = format!("/made.up{n}.Service/Method{n}");
                    let _: Result<tonic::Response<pb::ListAccountsResponse>, _> = grpc
                        .unary(
                            bearer("admin", pb::ListAccountsRequest::default()),
                            http::uri::PathAndQuery::try_from(path).expect("path"),
                            tonic_prost::ProstCodec::default(),
                        )
                        .await;
                }
            },
        ))
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (p50, p99) = admin_latency(addr).await?;
    let calls = flooding.await?;
    println!(
        "random-path flood: {calls} made-up paths; admin p50 {p50:.2} ms, p99 {p99:.2} ms ({:.2}x the p99 of \
         {idle_p99:.2} ms just before); server RSS {rss_before:.0} -> {:.0} MiB; /metrics {metrics_before} -> {} \
         bytes",
        p99 / idle_p99,
        server.rss_mib(),
        server.metrics_bytes().await
    );

    // 4. Idle connections.
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => idle.push(stream),
            Err(_) => break,
        }
    }
    tokio::time::sleep(IDLE_SETTLE).await;
    let (p50, p99) = admin_latency(addr).await?;
    println!(
        "{} idle connections: admin p50 {p50:.2} ms, p99 {p99:.2} ms; server RSS {:.0} MiB",
        idle.len(),
        server.rss_mib()
    );
    drop(idle);

    // 5. Watch streams on one request waiting for approval.
    admin
        .register_account(bearer(
            "admin",
            pb::RegisterAccountRequest {
                account: Some(pb::Account {
                    account_id: "111111111111".into(),
                    role_arn: "arn:aws:iam::111111111111:role/member".into(),
                    regions: vec!["eu-west-1".into()],
                    ..Default::default()
                }),
            },
        ))
        .await?;
    let scan = admin
        .refresh_inventory(bearer("admin", pb::RefreshInventoryRequest::default()))
        .await?
        .into_inner();
    loop {
        let now = admin
            .get_inventory_scan(bearer(
                "admin",
                pb::GetInventoryScanRequest {
                    scan_id: scan.scan_id.clone(),
                },
            ))
            .await?
            .into_inner();
        if now.state != "RUNNING" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let id = admin
        .create_change_request(bearer(
            "admin",
            pb::CreateChangeRequestRequest {
                selector: Some(pb::TableSelector {
                    table_name_prefix: "t-".into(),
                    ..Default::default()
                }),
                target: Some(pb::TargetEncryption {
                    mode: pb::EncryptionMode::CustomerManaged as i32,
                    kms_key: "alias/b".into(),
                }),
                ..Default::default()
            },
        ))
        .await?
        .into_inner()
        .change_request
        .context("request")?
        .change_request_id;
    let mut streams = Vec::with_capacity(WATCHES);
    for i in 0..WATCHES {
        let mut client = TableEncryptionClient::new(channel.clone());
        let mut stream = client
            .watch_change_request(bearer(
                &format!("watcher-{}", i % WATCH_CALLERS),
                pb::WatchChangeRequestRequest {
                    change_request_id: id.clone(),
                },
            ))
            .await?
            .into_inner();
        stream.message().await?;
        streams.push(stream);
    }
    let before = commits(&pool).await?;
    let started = Instant::now();
    let (p50, p99) = admin_latency(addr).await?;
    tokio::time::sleep(Duration::from_secs(args.seconds).saturating_sub(started.elapsed())).await;
    let per_second = (commits(&pool).await? - before) as f64 / started.elapsed().as_secs_f64();
    println!(
        "{} watch streams: Postgres {per_second:.0} commits/s; admin p50 {p50:.2} ms, p99 {p99:.2} ms; server RSS \
         {:.0} MiB",
        streams.len(),
        server.rss_mib()
    );
    drop(streams);
    pool.close().await;
    Ok(())
}
