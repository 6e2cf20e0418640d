//! Crash safety: the real server binary is killed with SIGKILL at random points while it applies a 2,000-table
//! request, five times, and restarted each time. Every item must end terminal, the history must hold exactly one
//! row per table changed, and the emulator's request log must show no table switched more than once.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use fleet_emulator::{Emulator, FleetSpec};
use rand::Rng as _;
use tablecrypt_proto::v1 as pb;
use tablecrypt_tests::TestDatabase;
use tablecrypt_tests::process::{ServerProcess, emulator_env, free_addr, register_and_scan};

const ACCOUNTS: [&str; 4] = [
    "111111111111",
    "222222222222",
    "333333333333",
    "444444444444",
];
const PER_ACCOUNT: usize = 500;
const KILLS: usize = 5;

/// The emulator's behaviour profile is `TC_EMULATOR_PROFILE` (tests/run.sh runs this test under both).
fn fleet() -> String {
    let profile = std::env::var("TC_EMULATOR_PROFILE").unwrap_or_else(|_| "optimistic".to_owned());
    let mut yaml = format!(
        "hub: {{account_id: \"000000000000\", access_key_id: AKIAHUBTEST000000000, secret_access_key: hub-secret}}\n\
         settings: {{update_seconds: 0.5, request_log_capacity: 500000}}\nbehaviour: {{profile: {profile}}}\n\
         accounts:\n",
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

async fn request_state(server: &ServerProcess, id: &str) -> Option<pb::ChangeRequest> {
    let mut client = server.client().await;
    client
        .get_change_request(pb::GetChangeRequestRequest {
            change_request_id: id.into(),
        })
        .await
        .ok()
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_five_times_during_a_2000_table_request_loses_nothing_and_repeats_nothing() {
    let emulator = Emulator::spawn(FleetSpec::from_yaml(&fleet()).expect("fleet"))
        .await
        .expect("emulator");
    let db = TestDatabase::create().await.expect("db");
    let mut env = emulator_env(&db.url, emulator.endpoint());
    env.extend([
        ("TABLECRYPT_LOG_FORMAT", "json".into()),
        ("TABLECRYPT_LOG_FILTER", "warn".into()),
        ("TABLECRYPT_SCAN_DESCRIBE_RATE", "2000".into()),
        ("TABLECRYPT_UPDATE_RATE", "150.0".into()),
        ("TABLECRYPT_GLOBAL_UPDATE_RATE", "1000.0".into()),
        ("TABLECRYPT_POLL_RATE", "1000.0".into()),
        ("TABLECRYPT_MAX_TABLES_IN_FLIGHT", "200".into()),
        ("TABLECRYPT_WORKER_LEASE", "2s".into()),
        ("TABLECRYPT_WORKER_CLAIM_INTERVAL", "100ms".into()),
        ("TABLECRYPT_WORKER_POLL_INITIAL", "300ms".into()),
        ("TABLECRYPT_WORKER_POLL_MAX", "600ms".into()),
        ("TABLECRYPT_WORKER_RETRY_INITIAL", "100ms".into()),
        ("TABLECRYPT_WORKER_RETRY_MAX", "1s".into()),
        ("TABLECRYPT_SHUTDOWN_GRACE_PERIOD", "1s".into()),
    ]);
    let mut server = ServerProcess::start(free_addr(), &env).await;

    // Register, scan, and create one request over every table.
    let mut client = server.client().await;
    register_and_scan(&mut client, &ACCOUNTS).await;
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

    // Kill at random points of the run, restarting each time.
    let mut rng = rand::rng();
    let mut progress_at_kill = Vec::new();
    for _ in 0..KILLS {
        let wait = rng.random_range(300..2500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let seen = request_state(&server, &id)
            .await
            .and_then(|r| r.counts)
            .map(|c| c.succeeded)
            .unwrap_or(-1);
        server.kill().await;
        progress_at_kill.push((wait, seen));
        server.restart().await;
    }
    eprintln!("killed after (ms, items succeeded so far): {progress_at_kill:?}");

    let mut done = None;
    for _ in 0..1800 {
        if let Some(request) = request_state(&server, &id).await
            && !matches!(
                request.state(),
                pb::ChangeRequestState::Queued | pb::ChangeRequestState::Running
            )
        {
            done = Some(request);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = done.expect("the request ended within 3 minutes of the last restart");
    let counts = done.counts.expect("counts");
    assert_eq!(
        done.state(),
        pb::ChangeRequestState::Succeeded,
        "{counts:?}"
    );
    assert_eq!(counts.succeeded as usize, total, "{counts:?}");

    // Exactly one history row per table.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .expect("db");
    let (rows, tables): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (account_id, region, table_name)) FROM key_rotation_history",
    )
    .fetch_one(&mut conn)
    .await
    .expect("history counts");
    assert_eq!((rows as usize, tables as usize), (total, total));

    // The emulator saw each table switched once: no repeat after a restart.
    let (status, body) = emulator
        .admin("GET", "/requests?operation=UpdateTable", "")
        .await
        .expect("request log");
    assert_eq!(status, 200);
    let log: serde_json::Value = serde_json::from_str(&body).expect("json");
    let mut switched: HashMap<String, usize> = HashMap::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for entry in log["requests"].as_array().expect("requests") {
        let outcome = entry["outcome"].as_str().unwrap_or_default().to_owned();
        if outcome == "ok" {
            let key = format!("{}/{}", entry["account_id"], entry["table"]);
            *switched.entry(key).or_insert(0) += 1;
        }
        *outcomes.entry(outcome).or_insert(0) += 1;
    }
    assert_eq!(switched.len(), total, "UpdateTable outcomes: {outcomes:?}");
    let repeated: Vec<_> = switched.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "switched more than once: {repeated:?}");
    server.kill().await;
}
