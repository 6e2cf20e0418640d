//! Inventory scans across replicas: every replica claims account-regions of a running scan under a lease, so
//! replicas share a scan, and the share of a replica killed with SIGKILL is scanned by another once its lease
//! expires. Judged from the database (who held which account-region, how often it was claimed) and from the
//! scan's outcome as a caller reads it.

use std::collections::BTreeSet;
use std::time::Duration;

use fleet_emulator::{Emulator, FleetSpec};
use tablecrypt_proto::v1 as pb;
use tablecrypt_tests::TestDatabase;
use tablecrypt_tests::changes::add_fault;
use tablecrypt_tests::process::{ServerProcess, emulator_env, free_addr};

const ACCOUNTS: [&str; 4] = [
    "111111111111",
    "222222222222",
    "333333333333",
    "444444444444",
];
const PER_ACCOUNT: i32 = 20;

fn fleet() -> String {
    let mut yaml = String::from(
        "hub: {account_id: \"000000000000\", access_key_id: AKIAHUBTEST000000000, secret_access_key: hub-secret}\n\
         accounts:\n",
    );
    for account in ACCOUNTS {
        yaml.push_str(&format!(
            "  - account_id: \"{account}\"\n    roles: [{{name: tablecrypt-member}}]\n    regions: [eu-west-1]\n    \
             generate: [{{count: {PER_ACCOUNT}, prefix: t-}}]\n"
        ));
    }
    yaml
}

#[derive(Debug, sqlx::FromRow)]
struct Held {
    account_id: String,
    lease_owner: Option<uuid::Uuid>,
}

#[tokio::test]
async fn a_killed_replicas_share_of_a_scan_is_finished_by_another() {
    let db = TestDatabase::create().await.expect("db");
    let emulator = Emulator::spawn(FleetSpec::from_yaml(&fleet()).expect("fleet"))
        .await
        .expect("emulator");
    // Every DescribeTable 200 ms late and one at a time: an account-region takes ~4 s, so the replica is killed
    // in the middle of one.
    add_fault(
        &emulator,
        r#"{"type": "latency", "millis": 200, "operation": "DescribeTable"}"#,
    )
    .await;
    let mut env = emulator_env(&db.url, emulator.endpoint());
    env.extend([
        ("TABLECRYPT_SCAN_LEASE", "2s".to_owned()),
        ("TABLECRYPT_SCAN_CONCURRENT_TARGETS", "1".to_owned()),
        ("TABLECRYPT_SCAN_DESCRIBES_IN_FLIGHT", "1".to_owned()),
    ]);
    let mut doomed = ServerProcess::start(free_addr(), &env).await;
    let survivor = ServerProcess::start(free_addr(), &env).await;
    let mut client = survivor.client().await;
    for account in ACCOUNTS {
        client
            .register_account(pb::RegisterAccountRequest {
                account: Some(pb::Account {
                    account_id: account.into(),
                    role_arn: format!("arn:aws:iam::{account}:role/tablecrypt-member"),
                    regions: vec!["eu-west-1".into()],
                    ..Default::default()
                }),
            })
            .await
            .expect("register");
    }
    // Asked of the replica that will be killed: the scan outlives the replica that created it.
    let scan_id = doomed
        .client()
        .await
        .refresh_inventory(pb::RefreshInventoryRequest::default())
        .await
        .expect("refresh")
        .into_inner()
        .scan_id;
    let scan_uuid: uuid::Uuid = scan_id.parse().expect("scan id");

    let pool = sqlx::PgPool::connect(&db.url).await.expect("db");
    let held = || async {
        sqlx::query_as::<_, Held>(
            "SELECT account_id, lease_owner FROM inventory_scan_targets
             WHERE scan_id = $1 AND state = 'RUNNING' AND lease_owner IS NOT NULL",
        )
        .bind(scan_uuid)
        .fetch_all(&pool)
        .await
        .expect("targets")
    };
    // Both replicas scan at once: two owners hold an account-region each.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let both = loop {
        let now = held().await;
        let owners: BTreeSet<_> = now.iter().filter_map(|h| h.lease_owner).collect();
        if owners.len() == 2 {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replicas never scanned at once: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    doomed.kill().await;
    let killed_at = tokio::time::Instant::now();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let done = loop {
        let now = client
            .get_inventory_scan(pb::GetInventoryScanRequest {
                scan_id: scan_id.clone(),
            })
            .await
            .expect("scan")
            .into_inner();
        if now.state != "RUNNING" {
            break now;
        }
        assert!(tokio::time::Instant::now() < deadline, "{now:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done.state, "SUCCEEDED", "{done:#?}");
    for target in &done.targets {
        assert_eq!(target.tables_seen, PER_ACCOUNT, "{target:?}");
    }
    // The killed replica's account-region was claimed again after its lease expired, not failed.
    let reclaimed: Vec<(String, i32)> = sqlx::query_as(
        "SELECT account_id, attempts FROM inventory_scan_targets WHERE scan_id = $1 AND attempts > 1",
    )
    .bind(scan_uuid)
    .fetch_all(&pool)
    .await
    .expect("attempts");
    assert_eq!(
        reclaimed.len(),
        1,
        "one target was held by the killed replica: {reclaimed:?} (held at the kill: {both:?})"
    );
    assert_eq!(reclaimed[0].1, 2, "{reclaimed:?}");
    assert!(
        both.iter().any(|h| h.account_id == reclaimed[0].0),
        "the target claimed again was not one held at the kill: {reclaimed:?} vs {both:?}"
    );
    assert!(
        killed_at.elapsed() >= Duration::from_secs(2),
        "the scan ended before the killed replica's lease could expire"
    );
    let inventory: i64 =
        sqlx::query_scalar("SELECT count(*) FROM table_inventory WHERE gone_time IS NULL")
            .fetch_one(&pool)
            .await
            .expect("inventory");
    assert_eq!(inventory, i64::from(PER_ACCOUNT) * ACCOUNTS.len() as i64);
}
