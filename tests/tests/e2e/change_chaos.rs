//! Chaos, bounded and on loopback: three server processes share one database and a 1,000-table request while
//! AWS, as observed (the emulator's aws-observed profile: a changing table stays ACTIVE showing its old key for
//! 8 s, one concern per UpdateTable), throttles a tenth of DynamoDB calls, and, at moments drawn from a seed, server processes are killed with
//! SIGKILL and restarted, PostgreSQL is restarted and the change_items table is locked for 15 s (a database
//! stall longer than the lease). Judged from outside tablecrypt: the emulator's request log must show exactly one
//! accepted UpdateTable per table and no second above the per-account-region or fleet-wide rate, and the history
//! exactly one row per table. The seed is printed; `TC_CHAOS_SEED=<seed>` replays a run.

use std::collections::HashMap;
use std::time::Duration;

use fleet_emulator::{Emulator, FleetSpec};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tablecrypt_proto::v1 as pb;
use tablecrypt_tests::changes::{add_fault, assert_rate_held, stall_change_items};
use tablecrypt_tests::postgres::PrivatePostgres;
use tablecrypt_tests::process::{ServerProcess, emulator_env, free_addr, register_and_scan};

const ACCOUNTS: [&str; 4] = [
    "111111111111",
    "222222222222",
    "333333333333",
    "444444444444",
];
const PER_ACCOUNT: usize = 250;
const REPLICAS: usize = 3;
/// UpdateTable calls per second per account-region, and across the fleet.
const REGION_RATE: f64 = 40.0;
const FLEET_RATE: f64 = 100.0;
/// The whole run, faults included, ends within this (the test runner kills tests at 3 minutes).
const HARD_CAP: Duration = Duration::from_secs(150);

fn fleet() -> String {
    let mut yaml = String::from(
        "hub: {account_id: \"000000000000\", access_key_id: AKIAHUBTEST000000000, secret_access_key: hub-secret}\n\
         settings: {update_seconds: 1.0, request_log_capacity: 500000}\n\
         behaviour: {profile: aws-observed}\naccounts:\n",
    );
    for account in ACCOUNTS {
        yaml.push_str(&format!(
            "  - account_id: \"{account}\"\n    roles: [{{name: tablecrypt-member}}]\n    regions: [eu-west-1]\n    \
             keys: [{{region: eu-west-1, aliases: [alias/a]}}, {{region: eu-west-1, aliases: [alias/b]}}]\n    \
             generate: [{{count: {PER_ACCOUNT}, prefix: t-, mix: {{alias/a: 1}}}}]\n"
        ));
    }
    yaml
}

/// The request as any live replica reports it.
async fn request_state(servers: &[ServerProcess], id: &str) -> Option<pb::ChangeRequest> {
    for server in servers {
        let Ok(channel) = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
            .expect("uri")
            .connect()
            .await
        else {
            continue;
        };
        let mut client =
            tablecrypt_proto::v1::table_encryption_client::TableEncryptionClient::new(channel);
        if let Ok(response) = client
            .get_change_request(pb::GetChangeRequestRequest {
                change_request_id: id.into(),
            })
            .await
        {
            return Some(response.into_inner());
        }
    }
    None
}

/// Prints the items that are neither succeeded nor pending, to diagnose a failed run.
async fn dump_items(url: &str) {
    let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(url).await else {
        return;
    };
    type Row = (
        String,
        String,
        Option<String>,
        Option<String>,
        i32,
        bool,
        Option<bool>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT table_name, state, reason, message, attempts, apply_time IS NOT NULL,
                lease_expire_time > now()
         FROM change_items WHERE state NOT IN ('SUCCEEDED', 'PENDING') ORDER BY state, table_name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    for row in rows {
        eprintln!("{row:?}");
    }
}

/// One fault, at a moment of the run.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill(usize),
    RestartPostgres,
    Stall,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_under_kills_restarts_a_stall_and_throttling_switch_each_table_once() {
    let seed: u64 = std::env::var("TC_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("chaos seed: {seed} (replay with TC_CHAOS_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = tokio::time::Instant::now();

    let postgres = PrivatePostgres::start();
    let emulator = Emulator::spawn(FleetSpec::from_yaml(&fleet()).expect("fleet"))
        .await
        .expect("emulator");
    let mut env = emulator_env(&postgres.url(), emulator.endpoint());
    env.extend([
        ("TABLECRYPT_LOG_FORMAT", "json".into()),
        ("TABLECRYPT_LOG_FILTER", "error".into()),
        ("TABLECRYPT_SCAN_DESCRIBE_RATE", "2000".into()),
        ("TABLECRYPT_UPDATE_RATE", REGION_RATE.to_string()),
        ("TABLECRYPT_GLOBAL_UPDATE_RATE", FLEET_RATE.to_string()),
        ("TABLECRYPT_POLL_RATE", "400.0".into()),
        ("TABLECRYPT_MAX_TABLES_IN_FLIGHT", "200".into()),
        ("TABLECRYPT_WORKER_LEASE", "3s".into()),
        ("TABLECRYPT_WORKER_CLAIM_INTERVAL", "100ms".into()),
        ("TABLECRYPT_WORKER_POLL_INITIAL", "500ms".into()),
        ("TABLECRYPT_WORKER_POLL_MAX", "1s".into()),
        ("TABLECRYPT_WORKER_RETRY_INITIAL", "200ms".into()),
        ("TABLECRYPT_WORKER_RETRY_MAX", "2s".into()),
        ("TABLECRYPT_SHUTDOWN_GRACE_PERIOD", "1s".into()),
        ("TABLECRYPT_DATABASE_ACQUIRE_TIMEOUT", "2s".into()),
    ]);
    let mut servers = Vec::new();
    for _ in 0..REPLICAS {
        servers.push(ServerProcess::start(free_addr(), &env).await);
    }

    let mut client = servers[0].client().await;
    register_and_scan(&mut client, &ACCOUNTS).await;
    // From now on a tenth of DynamoDB calls are throttled.
    add_fault(
        &emulator,
        r#"{"type": "throttle", "rate": 0.1, "service": "dynamodb"}"#,
    )
    .await;
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
        .await
        .expect("create")
        .into_inner();
    let total = ACCOUNTS.len() * PER_ACCOUNT;
    assert_eq!(created.summary.expect("summary").change as usize, total);
    let id = created.change_request.expect("request").change_request_id;

    // The faults, in an order and at moments drawn from the seed.
    let mut faults = vec![
        Fault::Kill(rng.random_range(0..REPLICAS)),
        Fault::Kill(rng.random_range(0..REPLICAS)),
        Fault::Kill(rng.random_range(0..REPLICAS)),
        Fault::RestartPostgres,
        Fault::Stall,
    ];
    for i in (1..faults.len()).rev() {
        faults.swap(i, rng.random_range(0..=i));
    }
    let mut log = Vec::new();
    for fault in faults {
        let wait = rng.random_range(200..1500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        log.push((wait, fault));
        match fault {
            Fault::Kill(i) => {
                servers[i].kill().await;
                servers[i].restart().await;
            }
            Fault::RestartPostgres => {
                postgres.stop_server();
                tokio::time::sleep(Duration::from_secs(2)).await;
                postgres.start_server();
            }
            Fault::Stall => stall_change_items(&postgres.url(), Duration::from_secs(15)).await,
        }
    }
    eprintln!("faults (ms after the previous, fault): {log:?}");

    let mut last = None;
    let done = loop {
        if let Some(request) = request_state(&servers, &id).await {
            if !matches!(
                request.state(),
                pb::ChangeRequestState::Queued | pb::ChangeRequestState::Running
            ) {
                break request;
            }
            last = request.counts;
        }
        if started.elapsed() >= HARD_CAP {
            dump_items(&postgres.url()).await;
            panic!("the request did not end within {HARD_CAP:?} (seed {seed}): {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let counts = done.counts.expect("counts");
    if counts.succeeded as usize != total {
        dump_items(&postgres.url()).await;
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&postgres.url())
            .await
            .expect("db");
        let odd: Vec<(String, String)> = sqlx::query_as(
            "SELECT account_id, table_name FROM change_items WHERE state <> 'SUCCEEDED'",
        )
        .fetch_all(&mut conn)
        .await
        .expect("items");
        let (_, body) = emulator
            .admin("GET", "/requests", "")
            .await
            .expect("request log");
        let entries: serde_json::Value = serde_json::from_str(&body).expect("json");
        for entry in entries["requests"].as_array().expect("requests") {
            let account = entry["account_id"].as_str().unwrap_or_default();
            let table = entry["table"].as_str().unwrap_or_default();
            if odd.iter().any(|(a, t)| a == account && t == table) {
                eprintln!("{entry}");
            }
        }
    }
    assert_eq!(
        done.state(),
        pb::ChangeRequestState::Succeeded,
        "seed {seed}: {counts:?}"
    );
    assert_eq!(counts.succeeded as usize, total, "seed {seed}: {counts:?}");

    // Exactly one history row per table.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&postgres.url())
        .await
        .expect("db");
    let (rows, tables): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (account_id, region, table_name)) FROM key_rotation_history",
    )
    .fetch_one(&mut conn)
    .await
    .expect("history counts");
    assert_eq!(
        (rows as usize, tables as usize),
        (total, total),
        "seed {seed}"
    );

    // From AWS's side: one accepted UpdateTable per table, and the rates held, throttled calls included.
    let (status, body) = emulator
        .admin("GET", "/requests?operation=UpdateTable", "")
        .await
        .expect("request log");
    assert_eq!(status, 200);
    let entries: serde_json::Value = serde_json::from_str(&body).expect("json");
    let mut accepted: HashMap<String, usize> = HashMap::new();
    let mut per_account: HashMap<String, Vec<f64>> = HashMap::new();
    let mut all = Vec::new();
    for entry in entries["requests"].as_array().expect("requests") {
        let account = entry["account_id"].as_str().unwrap_or_default().to_owned();
        let time = chrono::DateTime::parse_from_rfc3339(entry["time"].as_str().expect("time"))
            .expect("RFC 3339")
            .timestamp_micros() as f64
            / 1e6;
        if entry["outcome"] == "ok" {
            *accepted
                .entry(format!("{account}/{}", entry["table"]))
                .or_insert(0) += 1;
        }
        per_account.entry(account).or_default().push(time);
        all.push(time);
    }
    assert_eq!(accepted.len(), total, "seed {seed}");
    let repeated: Vec<_> = accepted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "seed {seed}: switched more than once: {repeated:?}"
    );
    for (account, times) in &per_account {
        assert_rate_held(
            times,
            REGION_RATE,
            &format!("UpdateTable calls in {account}/eu-west-1"),
        );
    }
    assert_rate_held(&all, FLEET_RATE, "UpdateTable calls across the fleet");
    eprintln!("chaos run took {:?}", started.elapsed());
    for server in &mut servers {
        server.kill().await;
    }
}
