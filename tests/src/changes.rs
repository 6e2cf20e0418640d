//! Shared set-up for the change-request tests: a fleet with keys A and B, global tables, broken keys and a denied
//! account; the server with fast workers; and helpers that read outcomes where a user would (the table's key as
//! DynamoDB reports it, the history, the emulator's own request log).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use fleet_emulator::{Emulator, FleetSpec, RunningEmulator};
use tablecrypt_proto::v1 as pb;
use tonic_types::StatusExt as _;

use crate::{TestApp, TestDatabase};

pub const PAYMENTS: &str = "111111111111";
pub const SEARCH: &str = "222222222222";
pub const SANDBOX: &str = "333333333333";
pub const EU: &str = "eu-west-1";
pub const US: &str = "us-east-1";
pub const ROLE: &str = "tablecrypt-member";
/// The temporary caller identity header (until authentication).
pub const CALLER_HEADER: &str = "x-tablecrypt-caller";

pub const KEY_A: &str = "aaaaaaaa-1111-4111-8111-111111111111";
pub const KEY_B: &str = "bbbbbbbb-1111-4111-8111-111111111111";
pub const KEY_OLD: &str = "dddddddd-1111-4111-8111-111111111111";
pub const KEY_GONE: &str = "eeeeeeee-1111-4111-8111-111111111111";
pub const KEY_RSA: &str = "ffffffff-1111-4111-8111-111111111111";
pub const KEY_M_EU: &str = "12121212-1111-4111-8111-111111111111";
pub const KEY_M_US: &str = "13131313-1111-4111-8111-111111111111";
pub const KEY_N_EU: &str = "14141414-1111-4111-8111-111111111111";
pub const KEY_N_US: &str = "15151515-1111-4111-8111-111111111111";
pub const KEY_SEARCH: &str = "aaaaaaaa-2222-4222-8222-222222222222";

/// Bulk tables on key A in payments/eu-west-1.
pub const BULK: usize = 12;

/// payments: orders and bulk-* on key A, sessions (AWS managed), plain (AWS owned), a global table on
/// alias/multi (one key per region), locked (on a disabled key, so inaccessible). search: orders on its own
/// alias/a. sandbox: refuses AssumeRole. The emulator's behaviour profile is `TC_EMULATOR_PROFILE` (tests/run.sh
/// runs the change tests under each), `optimistic` by default.
pub fn fleet() -> String {
    let profile = std::env::var("TC_EMULATOR_PROFILE").unwrap_or_else(|_| "optimistic".to_owned());
    format!(
        r#"
hub: {{account_id: "000000000000", access_key_id: AKIAHUBTEST000000000, secret_access_key: hub-secret}}
settings: {{update_seconds: 0.3, inaccessible_after_seconds: 0}}
behaviour: {{profile: {profile}}}
accounts:
  - account_id: "{PAYMENTS}"
    roles: [{{name: {ROLE}}}]
    regions: [{EU}, {US}]
    keys:
      - {{region: {EU}, id: {KEY_A}, aliases: [alias/a]}}
      - {{region: {EU}, id: {KEY_B}, aliases: [alias/b]}}
      - {{region: {EU}, id: {KEY_OLD}, aliases: [alias/old], state: Disabled}}
      - {{region: {EU}, id: {KEY_GONE}, aliases: [alias/gone], state: PendingDeletion}}
      - {{region: {EU}, id: {KEY_RSA}, aliases: [alias/rsa], spec: RSA_2048}}
      - {{region: {EU}, id: {KEY_M_EU}, aliases: [alias/multi]}}
      - {{region: {US}, id: {KEY_M_US}, aliases: [alias/multi]}}
      - {{region: {EU}, id: {KEY_N_EU}, aliases: [alias/multi2]}}
      - {{region: {US}, id: {KEY_N_US}, aliases: [alias/multi2]}}
    tables:
      - {{name: orders, region: {EU}, encryption: alias/a}}
      - {{name: sessions, region: {EU}, encryption: managed}}
      - {{name: plain, region: {EU}}}
      - {{name: global, region: {EU}, encryption: alias/multi, replicas: [{US}]}}
      - {{name: locked, region: {EU}, encryption: alias/old}}
    generate: [{{count: {BULK}, prefix: bulk-, regions: [{EU}], mix: {{alias/a: 1}}}}]
  - account_id: "{SEARCH}"
    roles: [{{name: {ROLE}}}]
    regions: [{EU}]
    keys:
      - {{region: {EU}, id: {KEY_SEARCH}, aliases: [alias/a]}}
    tables:
      - {{name: orders, region: {EU}, encryption: alias/a}}
  - account_id: "{SANDBOX}"
    roles: []
    regions: [{EU}]
    generate: [{{count: 2, prefix: sandbox-}}]
"#
    )
}

pub fn key_arn(account: &str, region: &str, id: &str) -> String {
    format!("arn:aws:kms:{region}:{account}:key/{id}")
}

pub fn payments_key(id: &str) -> String {
    key_arn(PAYMENTS, EU, id)
}

/// Fast workers for tests: short polls and retries, generous rates.
pub const FAST: &str = "
scan_describe_rate = 1000
poll_rate = 500.0
worker_claim_interval = '50ms'
worker_poll_initial = '100ms'
worker_poll_max = '200ms'
worker_retry_initial = '100ms'
worker_retry_max = '500ms'
worker_lease = '5s'
worker_settle_timeout = '10s'
watch_interval = '100ms'
";

pub struct Setup {
    pub db: TestDatabase,
    pub app: TestApp,
    pub emulator: RunningEmulator,
}

/// The emulator, the server with `extra_toml`, the three accounts registered and scanned once.
pub async fn setup(extra_toml: &str) -> Setup {
    let db = TestDatabase::create().await.expect("db");
    let (emulator, app) = fleet_and_server(&db.url, extra_toml).await;
    Setup { db, app, emulator }
}

/// The emulator and a server on the database at `url`, with the accounts registered and scanned once.
pub async fn fleet_and_server(url: &str, extra_toml: &str) -> (RunningEmulator, TestApp) {
    let emulator = Emulator::spawn(FleetSpec::from_yaml(&fleet()).expect("fleet"))
        .await
        .expect("emulator");
    // A generous UpdateTable rate unless the test sets its own (TOML refuses a key given twice).
    let rate = if extra_toml.contains("update_rate") {
        ""
    } else {
        "update_rate = 50.0"
    };
    // FAST's settings, less those the test sets itself.
    let fast: String = FAST
        .lines()
        .filter(|line| {
            let key = line.split('=').next().unwrap_or_default().trim();
            key.is_empty() || !extra_toml.contains(&format!("{key} ="))
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let app = TestApp::spawn_on(
        url,
        &format!(
            "aws_endpoint_url = '{}'\n{fast}\n{rate}\n{extra_toml}",
            emulator.endpoint()
        ),
    )
    .await
    .expect("server");
    register_and_scan(
        &app,
        &[
            (PAYMENTS, &[EU, US], "payments"),
            (SEARCH, &[EU], "search"),
            (SANDBOX, &[EU], "sandbox"),
        ],
    )
    .await;
    (emulator, app)
}

/// Registers each (account, regions, team label) with the member role `ROLE`, then scans them all once.
pub async fn register_and_scan(app: &TestApp, accounts: &[(&str, &[&str], &str)]) {
    let mut client = app.client.clone();
    for (id, regions, team) in accounts {
        client
            .register_account(pb::RegisterAccountRequest {
                account: Some(pb::Account {
                    account_id: (*id).into(),
                    role_arn: format!("arn:aws:iam::{id}:role/{ROLE}"),
                    regions: regions.iter().map(|r| (*r).to_owned()).collect(),
                    labels: HashMap::from([("team".to_owned(), (*team).to_owned())]),
                    ..Default::default()
                }),
            })
            .await
            .expect("register");
    }
    app.refresh_and_wait(pb::RefreshInventoryRequest::default())
        .await;
}

/// A request carrying the caller identity header.
pub fn as_caller<T>(caller: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(CALLER_HEADER, caller.parse().expect("ascii caller"));
    request
}

pub fn table(account: &str, region: &str, name: &str) -> pb::TableRef {
    pb::TableRef {
        account_id: account.into(),
        region: region.into(),
        table_name: name.into(),
    }
}

/// The payments account's bulk-* tables (BULK of them, on key A in eu-west-1).
pub fn bulk_selector() -> Option<pb::TableSelector> {
    Some(pb::TableSelector {
        account_ids: vec![PAYMENTS.into()],
        table_name_prefix: "bulk-".into(),
        ..Default::default()
    })
}

pub fn to_key(kms_key: &str) -> Option<pb::TargetEncryption> {
    Some(pb::TargetEncryption {
        mode: pb::EncryptionMode::CustomerManaged as i32,
        kms_key: kms_key.into(),
    })
}

pub fn tables(refs: Vec<pb::TableRef>) -> Option<pb::TableList> {
    Some(pb::TableList { tables: refs })
}

/// The live key of a table, as DynamoDB reports it through GetTableEncryption.
pub async fn live_key(app: &TestApp, account: &str, name: &str) -> String {
    app.client
        .clone()
        .get_table_encryption(pb::GetTableEncryptionRequest {
            account_id: account.into(),
            region: EU.into(),
            table_name: name.into(),
        })
        .await
        .expect("get table")
        .into_inner()
        .kms_key_arn
}

pub async fn get(app: &TestApp, id: &str) -> pb::ChangeRequest {
    app.client
        .clone()
        .get_change_request(pb::GetChangeRequestRequest {
            change_request_id: id.into(),
        })
        .await
        .expect("get change request")
        .into_inner()
}

/// Polls until `done` holds for the request (at most `seconds`).
pub async fn wait_until(
    app: &TestApp,
    id: &str,
    seconds: u64,
    done: impl Fn(&pb::ChangeRequest) -> bool,
) -> pb::ChangeRequest {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        let request = get(app, id).await;
        if done(&request) {
            return request;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "change request never got there: {request:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn is_terminal(request: &pb::ChangeRequest) -> bool {
    use pb::ChangeRequestState as S;
    matches!(
        request.state(),
        S::Succeeded | S::PartiallyFailed | S::Failed | S::Cancelled
    )
}

pub async fn wait_terminal(app: &TestApp, id: &str) -> pb::ChangeRequest {
    wait_until(app, id, 60, is_terminal).await
}

pub fn counts(request: &pb::ChangeRequest) -> pb::ItemCounts {
    request.counts.unwrap_or_default()
}

pub async fn items(app: &TestApp, id: &str) -> Vec<pb::ChangeItem> {
    app.client
        .clone()
        .list_change_items(pb::ListChangeItemsRequest {
            change_request_id: id.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list items")
        .into_inner()
        .items
}

pub async fn history(
    app: &TestApp,
    request: pb::ListKeyRotationHistoryRequest,
) -> Vec<pb::KeyRotation> {
    app.client
        .clone()
        .list_key_rotation_history(pb::ListKeyRotationHistoryRequest {
            page_size: 1000,
            ..request
        })
        .await
        .expect("history")
        .into_inner()
        .rotations
}

pub fn history_of(id: &str) -> pb::ListKeyRotationHistoryRequest {
    pb::ListKeyRotationHistoryRequest {
        change_request_id: id.into(),
        ..Default::default()
    }
}

/// One UpdateTable call in the emulator's request log.
#[derive(Debug, Clone)]
pub struct LoggedUpdate {
    pub account_id: String,
    /// The region it was sent in.
    pub region: String,
    pub table: String,
    /// The emulator accepted it (not throttled or refused).
    pub ok: bool,
    /// When the emulator received it, in seconds since the epoch.
    pub time: f64,
}

/// The emulator's request log entries matching `query` (e.g. `operation=UpdateTable`), in log order.
pub async fn request_log(emulator: &RunningEmulator, query: &str) -> Vec<serde_json::Value> {
    let (status, body) = emulator
        .admin("GET", &format!("/requests?{query}"), "")
        .await
        .expect("request log");
    assert_eq!(status, 200, "{body}");
    let mut log: serde_json::Value = serde_json::from_str(&body).expect("json");
    match log["requests"].take() {
        serde_json::Value::Array(entries) => entries,
        other => panic!("no requests in the log: {other}"),
    }
}

/// How many calls of any kind the emulator received in `account`.
pub async fn calls_in(emulator: &RunningEmulator, account: &str) -> usize {
    request_log(emulator, &format!("account_id={account}"))
        .await
        .len()
}

/// Every UpdateTable call the emulator received, in log order.
pub async fn update_log(emulator: &RunningEmulator) -> Vec<LoggedUpdate> {
    request_log(emulator, "operation=UpdateTable")
        .await
        .iter()
        .map(|entry| {
            let time = chrono::DateTime::parse_from_rfc3339(entry["time"].as_str().expect("time"))
                .expect("RFC 3339");
            LoggedUpdate {
                account_id: entry["account_id"].as_str().unwrap_or_default().to_owned(),
                region: entry["region"].as_str().unwrap_or_default().to_owned(),
                table: entry["table"].as_str().unwrap_or_default().to_owned(),
                ok: entry["outcome"] == "ok",
                time: time.timestamp_micros() as f64 / 1e6,
            }
        })
        .collect()
}

/// How many UpdateTable calls the emulator accepted, per table.
pub async fn updates_sent(emulator: &RunningEmulator) -> BTreeMap<String, usize> {
    let mut sent = BTreeMap::new();
    for update in update_log(emulator).await.into_iter().filter(|u| u.ok) {
        *sent
            .entry(format!("{}/{}", update.account_id, update.table))
            .or_insert(0) += 1;
    }
    sent
}

pub fn field_violations(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

pub async fn create(
    app: &TestApp,
    caller: &str,
    request: pb::CreateChangeRequestRequest,
) -> Result<pb::CreateChangeRequestResponse, tonic::Status> {
    app.client
        .clone()
        .create_change_request(as_caller(caller, request))
        .await
        .map(tonic::Response::into_inner)
}

pub async fn stored_requests(app: &TestApp) -> usize {
    app.client
        .clone()
        .list_change_requests(pb::ListChangeRequestsRequest::default())
        .await
        .expect("list requests")
        .into_inner()
        .change_requests
        .len()
}

/// No one-second window of `times` (seconds, any order) holds more than `rate` calls, allowing the one at the
/// window's edge (slots are exactly 1/rate apart, so a window can start on one and end on another).
pub fn assert_rate_held(times: &[f64], rate: f64, what: &str) {
    let mut times = times.to_vec();
    times.sort_by(f64::total_cmp);
    for (i, start) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|t| **t < start + 1.0).count();
        assert!(
            in_window as f64 <= rate + 1.0,
            "{in_window} {what} within one second of {start} (limit {rate}/s): {times:?}"
        );
    }
}

/// Locks the change_items table of the database at `url` for `how_long`: a database stall, as a failover or a
/// long vacuum makes one, under every worker at once.
pub async fn stall_change_items(url: &str, how_long: Duration) {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .expect("db");
    sqlx::raw_sql(sqlx::AssertSqlSafe(
        "BEGIN; LOCK TABLE change_items IN ACCESS EXCLUSIVE MODE;",
    ))
    .execute(&mut conn)
    .await
    .expect("stall");
    tokio::time::sleep(how_long).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe("COMMIT"))
        .execute(&mut conn)
        .await
        .expect("end the stall");
}

/// A request moving every bulk table to key B (alias/b); its id.
pub async fn migrate_bulk(app: &TestApp) -> String {
    create(
        app,
        "alice",
        pb::CreateChangeRequestRequest {
            selector: bulk_selector(),
            target: to_key("alias/b"),
            ..Default::default()
        },
    )
    .await
    .expect("create")
    .change_request
    .expect("request")
    .change_request_id
}

/// Adds a fault rule to the emulator (its admin API's JSON, e.g. `{"type": "throttle", "rate": 0.5}`).
pub async fn add_fault(emulator: &RunningEmulator, rule: &str) {
    let (status, body) = emulator
        .admin("POST", "/faults", rule)
        .await
        .expect("the emulator's admin API");
    assert_eq!(status, 200, "{body}");
}

/// Changes the emulator's settings (timings and behaviour) through its admin API.
pub async fn change_emulator_settings(
    emulator: &RunningEmulator,
    change: impl FnOnce(&mut serde_json::Value),
) {
    let (_, body) = emulator
        .admin("GET", "/settings", "")
        .await
        .expect("settings");
    let mut settings: serde_json::Value = serde_json::from_str(&body).expect("json");
    change(&mut settings);
    let (status, body) = emulator
        .admin("PUT", "/settings", &settings.to_string())
        .await
        .expect("settings");
    assert_eq!(status, 200, "{body}");
}

/// Exactly one accepted UpdateTable per bulk table (from the emulator's log), one history row each, every one on
/// key B as DynamoDB reports it.
pub async fn assert_each_table_switched_and_recorded_once(s: &Setup, id: &str) {
    let done = wait_terminal(&s.app, id).await;
    assert_eq!(
        done.state(),
        pb::ChangeRequestState::Succeeded,
        "{:#?}",
        items(&s.app, id).await
    );
    let sent = updates_sent(&s.emulator).await;
    assert_eq!(sent.len(), BULK, "{sent:?}");
    assert!(
        sent.values().all(|n| *n == 1),
        "a table switched twice: {sent:?}"
    );
    let rows = history(&s.app, history_of(id)).await;
    let mut per_table: BTreeMap<String, usize> = BTreeMap::new();
    for row in &rows {
        *per_table.entry(row.table_name.clone()).or_default() += 1;
    }
    assert_eq!(
        per_table.len(),
        BULK,
        "a switch without a history row: {per_table:?}"
    );
    assert!(per_table.values().all(|n| *n == 1), "{per_table:?}");
    for table in per_table.keys() {
        assert_eq!(live_key(&s.app, PAYMENTS, table).await, payments_key(KEY_B));
    }
}
