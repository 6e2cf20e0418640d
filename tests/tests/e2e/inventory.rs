//! The encryption inventory end to end: the real server, a fresh database, and the fleet emulator reached
//! through assumed roles with the AWS SDK.

use std::collections::HashMap;
use std::time::Duration;

use fleet_emulator::{Emulator, FleetSpec, RunningEmulator};
use tablecrypt_proto::v1 as pb;
use tablecrypt_tests::{TestApp, TestDatabase};
use tonic::Code;
use tonic_types::StatusExt as _;

const KEY_A: &str = "11111111-aaaa-4aaa-8aaa-111111111111";
const KEY_B: &str = "11111111-bbbb-4bbb-8bbb-111111111111";
const KEY_DISABLED: &str = "11111111-dddd-4ddd-8ddd-111111111111";

/// Payments (2 regions, external id), search (one region throttles), sandbox (AssumeRole denied).
fn fleet(with_orders: bool) -> String {
    let orders = if with_orders {
        "      - {name: orders, region: eu-west-1, encryption: alias/a}\n"
    } else {
        ""
    };
    format!(
        r#"
hub: {{account_id: "000000000000", access_key_id: AKIAHUBTEST000000000, secret_access_key: hub-secret}}
settings: {{inaccessible_after_seconds: 0}}
accounts:
  - account_id: "111111111111"
    roles: [{{name: tablecrypt-member, external_id: ext-111}}]
    regions: [eu-west-1, us-east-1]
    keys:
      - {{region: eu-west-1, id: {KEY_A}, aliases: [alias/a]}}
      - {{region: eu-west-1, id: {KEY_B}, aliases: [alias/b]}}
      - {{region: eu-west-1, id: {KEY_DISABLED}, aliases: [alias/old], state: Disabled}}
    tables:
{orders}      - {{name: ledger, region: eu-west-1, encryption: alias/a}}
      - {{name: sessions, region: eu-west-1, encryption: managed}}
      - {{name: archive, region: eu-west-1, encryption: alias/old}}
      - {{name: us-owned, region: us-east-1}}
  - account_id: "222222222222"
    roles: [{{name: tablecrypt-member}}]
    regions: [eu-west-1, us-east-1]
    generate: [{{count: 5, prefix: search-, regions: [eu-west-1]}}, {{count: 3, prefix: us-, regions: [us-east-1]}}]
  - account_id: "333333333333"
    roles: []
    regions: [eu-west-1]
    generate: [{{count: 2, prefix: sandbox-}}]
"#
    )
}

fn key_arn(id: &str) -> String {
    format!("arn:aws:kms:eu-west-1:111111111111:key/{id}")
}

async fn admin(emulator: &RunningEmulator, method: &str, path: &str, body: &str) -> u16 {
    emulator
        .admin(method, path, body)
        .await
        .expect("admin API answers")
        .0
}

struct Setup {
    _db: TestDatabase,
    app: TestApp,
    emulator: RunningEmulator,
}

async fn setup() -> Setup {
    setup_with("").await
}

/// The fleet and server, with `extra_toml` added to the server's configuration.
async fn setup_with(extra_toml: &str) -> Setup {
    let emulator = Emulator::spawn(FleetSpec::from_yaml(&fleet(true)).expect("fleet"))
        .await
        .expect("emulator");
    // us-east-1 of the search account throttles every DynamoDB call.
    let status = admin(
        &emulator,
        "POST",
        "/faults",
        r#"{"type": "throttle", "rate": 1.0, "service": "dynamodb", "account_id": "222222222222", "region": "us-east-1"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let db = TestDatabase::create().await.expect("db");
    let app = TestApp::spawn_with(
        &db,
        &format!(
            "aws_endpoint_url = '{}'\nscan_describe_rate = 1000\n{extra_toml}",
            emulator.endpoint()
        ),
    )
    .await
    .expect("server");
    let mut client = app.client.clone();
    for (id, external_id, regions, team) in [
        (
            "111111111111",
            "ext-111",
            vec!["eu-west-1", "us-east-1"],
            "payments",
        ),
        ("222222222222", "", vec!["eu-west-1", "us-east-1"], "search"),
        ("333333333333", "", vec!["eu-west-1"], "sandbox"),
    ] {
        client
            .register_account(pb::RegisterAccountRequest {
                account: Some(pb::Account {
                    account_id: id.into(),
                    role_arn: format!("arn:aws:iam::{id}:role/tablecrypt-member"),
                    external_id: external_id.into(),
                    regions: regions.into_iter().map(String::from).collect(),
                    labels: HashMap::from([("team".to_owned(), team.to_owned())]),
                    ..Default::default()
                }),
            })
            .await
            .expect("register");
    }
    Setup {
        _db: db,
        app,
        emulator,
    }
}

fn failure_kind(target: &pb::ScanTarget) -> pb::FailureKind {
    target
        .failure
        .as_ref()
        .map(|f| f.kind())
        .unwrap_or(pb::FailureKind::Unspecified)
}

#[tokio::test]
async fn verify_account_reports_identity_tables_and_classified_failures() {
    let s = setup().await;
    let mut client = s.app.client.clone();
    let ok = client
        .verify_account(pb::VerifyAccountRequest {
            account_id: "111111111111".into(),
            regions: vec![],
        })
        .await
        .expect("verify")
        .into_inner();
    assert_eq!(ok.regions.len(), 2);
    assert!(ok.regions.iter().all(|r| r.ok), "{ok:?}");
    assert_eq!(
        ok.regions[0].assumed_identity_arn,
        "arn:aws:sts::111111111111:assumed-role/tablecrypt-member/tablecrypt"
    );
    assert_eq!(ok.regions[0].table_count, 4);

    let denied = client
        .verify_account(pb::VerifyAccountRequest {
            account_id: "333333333333".into(),
            regions: vec![],
        })
        .await
        .expect("verify")
        .into_inner();
    assert!(!denied.regions[0].ok);
    assert_eq!(
        denied.regions[0].failure.as_ref().map(|f| f.kind()),
        Some(pb::FailureKind::AccessDenied)
    );
    let message = &denied.regions[0].failure.as_ref().expect("failure").message;
    assert!(
        message.starts_with("AssumeRole denied: User: "),
        "{message}"
    );

    let status = client
        .verify_account(pb::VerifyAccountRequest {
            account_id: "111111111111".into(),
            regions: vec!["ap-south-1".into()],
        })
        .await
        .expect_err("unregistered region");
    assert_eq!(status.code(), Code::NotFound);
    s.emulator.stop().await.expect("stop");
}

#[tokio::test]
async fn a_scan_lists_every_working_account_and_reports_the_broken_ones() {
    let s = setup().await;
    let scan = s
        .app
        .refresh_and_wait(pb::RefreshInventoryRequest::default())
        .await;
    assert_eq!(scan.state, "PARTIALLY_FAILED", "{scan:?}");
    assert_eq!(scan.targets_total, 5);
    assert_eq!(scan.targets_done, 5);
    assert_eq!(scan.targets_failed, 2);
    let by_target: HashMap<(String, String), &pb::ScanTarget> = scan
        .targets
        .iter()
        .map(|t| ((t.account_id.clone(), t.region.clone()), t))
        .collect();
    let target = |a: &str, r: &str| by_target[&(a.to_owned(), r.to_owned())];
    assert_eq!(
        failure_kind(target("333333333333", "eu-west-1")),
        pb::FailureKind::AccessDenied
    );
    assert_eq!(
        failure_kind(target("222222222222", "us-east-1")),
        pb::FailureKind::Throttled
    );
    assert_eq!(target("111111111111", "eu-west-1").state, "SUCCEEDED");
    assert_eq!(target("111111111111", "eu-west-1").tables_seen, 4);
    assert_eq!(target("222222222222", "eu-west-1").tables_seen, 5);

    let all = s
        .app
        .list_tables(pb::ListTableEncryptionsRequest::default())
        .await;
    assert_eq!(all.len(), 4 + 1 + 5, "{all:?}");

    // Every filter.
    let only = |r: pb::ListTableEncryptionsRequest| s.app.list_tables(r);
    assert_eq!(
        only(pb::ListTableEncryptionsRequest {
            account_ids: vec!["111111111111".into()],
            ..Default::default()
        })
        .await
        .len(),
        5
    );
    assert_eq!(
        only(pb::ListTableEncryptionsRequest {
            account_label_selector: "team=search".into(),
            ..Default::default()
        })
        .await
        .len(),
        5
    );
    assert_eq!(
        only(pb::ListTableEncryptionsRequest {
            regions: vec!["us-east-1".into()],
            ..Default::default()
        })
        .await,
        vec!["111111111111/us-east-1/us-owned"]
    );
    assert_eq!(
        only(pb::ListTableEncryptionsRequest {
            mode: pb::EncryptionMode::AwsManaged as i32,
            ..Default::default()
        })
        .await,
        vec!["111111111111/eu-west-1/sessions"]
    );
    assert_eq!(
        only(pb::ListTableEncryptionsRequest {
            kms_key: key_arn(KEY_A),
            ..Default::default()
        })
        .await,
        vec![
            "111111111111/eu-west-1/ledger",
            "111111111111/eu-west-1/orders"
        ]
    );
    assert_eq!(
        only(pb::ListTableEncryptionsRequest {
            kms_key: "arn:aws:kms:eu-west-1:111111111111:alias/a".into(),
            ..Default::default()
        })
        .await
        .len(),
        2
    );
    assert_eq!(
        only(pb::ListTableEncryptionsRequest {
            table_name_prefix: "search-0000".into(),
            ..Default::default()
        })
        .await
        .len(),
        5
    );
    assert_eq!(
        only(pb::ListTableEncryptionsRequest {
            inaccessible_only: true,
            ..Default::default()
        })
        .await,
        vec!["111111111111/eu-west-1/archive"]
    );

    // The customer key row carries the key ARN, status and observation time.
    let mut client = s.app.client.clone();
    let page = client
        .list_table_encryptions(pb::ListTableEncryptionsRequest {
            table_name_prefix: "ledger".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    let ledger = &page.tables[0];
    assert_eq!(ledger.mode(), pb::EncryptionMode::CustomerManaged);
    assert_eq!(ledger.kms_key_arn, key_arn(KEY_A));
    assert_eq!(ledger.sse_status, "ENABLED");
    assert_eq!(ledger.table_status, "ACTIVE");
    assert!(ledger.observe_time.is_some());
    let archive = only(pb::ListTableEncryptionsRequest {
        inaccessible_only: true,
        ..Default::default()
    })
    .await;
    assert_eq!(archive.len(), 1);

    // Pagination.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_table_encryptions(pb::ListTableEncryptionsRequest {
                page_size: 3,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("page")
            .into_inner();
        seen.extend(
            page.tables
                .into_iter()
                .map(|t| format!("{}/{}/{}", t.account_id, t.region, t.table_name)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, all);
    s.emulator.stop().await.expect("stop");
}

#[tokio::test]
async fn key_usage_live_reads_and_disappearing_tables() {
    let s = setup().await;
    let mut client = s.app.client.clone();
    // Never scanned: "unused" would mean nothing, and the answer says so by having no inventory time.
    let before = client
        .get_key_usage(pb::GetKeyUsageRequest {
            kms_key: key_arn(KEY_B),
            ..Default::default()
        })
        .await
        .expect("usage before a scan")
        .into_inner();
    assert!(
        before.unused && before.inventory_time.is_none(),
        "{before:?}"
    );
    let scan_start = std::time::SystemTime::now();
    s.app
        .refresh_and_wait(pb::RefreshInventoryRequest {
            account_ids: vec!["111111111111".into()],
            regions: vec![],
        })
        .await;

    let usage = client
        .get_key_usage(pb::GetKeyUsageRequest {
            kms_key: "alias/a".into(),
            account_id: "111111111111".into(),
            region: "eu-west-1".into(),
        })
        .await
        .expect("usage")
        .into_inner();
    assert_eq!(usage.kms_key_arn, key_arn(KEY_A));
    assert!(!usage.unused);
    assert_eq!(
        usage.key_aliases.get(&key_arn(KEY_A)).map(String::as_str),
        Some("alias/a"),
        "the scan listed the aliases: {usage:?}"
    );
    assert_eq!(usage.tables.len(), 2);
    let unused = client
        .get_key_usage(pb::GetKeyUsageRequest {
            kms_key: key_arn(KEY_B),
            ..Default::default()
        })
        .await
        .expect("usage b")
        .into_inner();
    assert!(unused.unused);
    let scanned = unused.inventory_time.expect("the scan's time");
    let started = scan_start
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    assert!(
        scanned.seconds >= started - 1,
        "{scanned:?} before the scan began at {started}"
    );
    let status = client
        .get_key_usage(pb::GetKeyUsageRequest {
            kms_key: "alias/a".into(),
            ..Default::default()
        })
        .await
        .expect_err("alias without account");
    let fields: Vec<String> = status
        .get_details_bad_request()
        .expect("details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, vec!["account_id", "region"]);

    // A live read returns what AWS says and records it.
    let live = client
        .get_table_encryption(pb::GetTableEncryptionRequest {
            account_id: "111111111111".into(),
            region: "eu-west-1".into(),
            table_name: "sessions".into(),
        })
        .await
        .expect("live")
        .into_inner();
    assert_eq!(live.mode(), pb::EncryptionMode::AwsManaged);
    assert!(
        live.kms_key_arn
            .starts_with("arn:aws:kms:eu-west-1:111111111111:key/")
    );
    let status = client
        .get_table_encryption(pb::GetTableEncryptionRequest {
            account_id: "111111111111".into(),
            region: "eu-west-1".into(),
            table_name: "missing".into(),
        })
        .await
        .expect_err("missing table");
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .get_table_encryption(pb::GetTableEncryptionRequest {
            account_id: "333333333333".into(),
            region: "eu-west-1".into(),
            table_name: "sandbox-00000".into(),
        })
        .await
        .expect_err("denied");
    assert_eq!(status.code(), Code::PermissionDenied);

    // "orders" disappears: the next scan marks it gone and keeps it.
    assert_eq!(
        admin(&s.emulator, "PUT", "/fleet", &fleet(false)).await,
        200
    );
    let scan = s
        .app
        .refresh_and_wait(pb::RefreshInventoryRequest {
            account_ids: vec!["111111111111".into()],
            regions: vec![],
        })
        .await;
    assert_eq!(scan.state, "SUCCEEDED", "{scan:?}");
    assert_eq!(scan.targets.iter().map(|t| t.tables_gone).sum::<i32>(), 1);
    let current = s
        .app
        .list_tables(pb::ListTableEncryptionsRequest {
            account_ids: vec!["111111111111".into()],
            ..Default::default()
        })
        .await;
    assert!(
        !current.iter().any(|t| t.ends_with("/orders")),
        "{current:?}"
    );
    let page = client
        .list_table_encryptions(pb::ListTableEncryptionsRequest {
            table_name_prefix: "orders".into(),
            include_gone: true,
            ..Default::default()
        })
        .await
        .expect("gone")
        .into_inner();
    assert_eq!(page.tables.len(), 1);
    assert!(page.tables[0].gone);
    s.emulator.stop().await.expect("stop");
}

#[tokio::test]
async fn bad_inventory_requests_name_the_field() {
    let s = setup().await;
    let mut client = s.app.client.clone();
    let fields = |status: tonic::Status| -> Vec<String> {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        status
            .get_details_bad_request()
            .expect("details")
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect()
    };
    let status = client
        .list_table_encryptions(pb::ListTableEncryptionsRequest {
            account_ids: vec!["1".into()],
            regions: vec!["mars-1".into()],
            kms_key: "alias/a".into(),
            mode: 42,
            ..Default::default()
        })
        .await
        .expect_err("bad list");
    assert_eq!(
        fields(status),
        vec!["account_ids[0]", "regions[0]", "mode", "kms_key"]
    );
    let status = client
        .get_table_encryption(pb::GetTableEncryptionRequest {
            account_id: "111111111111".into(),
            region: "eu-west-1".into(),
            table_name: "x".into(),
        })
        .await
        .expect_err("short name");
    assert_eq!(fields(status), vec!["table_name"]);
    let status = client
        .get_inventory_scan(pb::GetInventoryScanRequest {
            scan_id: "nope".into(),
        })
        .await
        .expect_err("bad id");
    assert_eq!(fields(status), vec!["scan_id"]);
    let status = client
        .refresh_inventory(pb::RefreshInventoryRequest {
            account_ids: vec!["999999999999".into()],
            regions: vec![],
        })
        .await
        .expect_err("unknown account");
    assert_eq!(status.code(), Code::NotFound);
    s.emulator.stop().await.expect("stop");
}

#[tokio::test]
async fn the_periodic_scan_fills_and_refreshes_the_inventory_by_itself() {
    let s = setup_with("inventory_scan_interval = '1s'").await;
    let orders = "111111111111/eu-west-1/orders".to_owned();
    let payments = pb::ListTableEncryptionsRequest {
        account_ids: vec!["111111111111".into()],
        ..Default::default()
    };
    // No RefreshInventory call anywhere in this test: the background scan alone must find the tables ...
    let mut found = Vec::new();
    for _ in 0..100 {
        found = s.app.list_tables(payments.clone()).await;
        if found.contains(&orders) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        found.contains(&orders),
        "no periodic scan found orders: {found:?}"
    );

    // ... and a later one must notice that a table went away.
    assert_eq!(
        admin(&s.emulator, "PUT", "/fleet", &fleet(false)).await,
        200
    );
    let mut still_listed = true;
    for _ in 0..100 {
        still_listed = s.app.list_tables(payments.clone()).await.contains(&orders);
        if !still_listed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!still_listed, "no periodic scan marked orders gone");
    let with_gone = s
        .app
        .list_tables(pb::ListTableEncryptionsRequest {
            include_gone: true,
            ..payments
        })
        .await;
    assert!(
        with_gone.contains(&orders),
        "gone tables keep their row: {with_gone:?}"
    );
}

/// An account named 70,000 times is scanned once per region, at once (it used to run 15 s, then fail INTERNAL).
#[tokio::test]
async fn a_refresh_naming_one_account_70000_times_scans_it_once() {
    let s = setup().await;
    let account = "111111111111".to_owned();
    let started = std::time::Instant::now();
    let scan = s
        .app
        .client
        .clone()
        .refresh_inventory(pb::RefreshInventoryRequest {
            account_ids: vec![account.clone(); 70_000],
            ..Default::default()
        })
        .await
        .expect("refresh")
        .into_inner();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        scan.targets.iter().all(|t| t.account_id == account),
        "{scan:#?}"
    );
    let regions: std::collections::BTreeSet<&str> =
        scan.targets.iter().map(|t| t.region.as_str()).collect();
    assert_eq!(
        regions.len(),
        scan.targets.len(),
        "one target per region: {scan:#?}"
    );
    let _ = &s.emulator;
}
