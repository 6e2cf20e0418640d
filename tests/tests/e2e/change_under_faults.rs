//! "Each table switched exactly once, recorded exactly once, never above the limit" under the faults an
//! independent chaos run found breaking it: heartbeats failing for longer than the lease, a database stall in the
//! middle of sending, and AWS throttling beneath the SDK's own retries. Judged from outside tablecrypt: the
//! emulator's request log (what AWS was asked, and when) and the key-rotation history in the database.

use std::collections::BTreeMap;
use std::time::Duration;

use tablecrypt_proto::v1 as pb;
use tablecrypt_tests::changes::*;

/// Runs `sql` on the test's own database.
async fn sql(s: &Setup, sql: &str) {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&s.db.url)
        .await
        .expect("db");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .expect("test sql");
}

async fn scan(s: &Setup, scan_id: &str) -> pb::InventoryScan {
    s.app
        .client
        .clone()
        .get_inventory_scan(pb::GetInventoryScanRequest {
            scan_id: scan_id.to_owned(),
        })
        .await
        .expect("scan")
        .into_inner()
}

/// Sets the emulator's UpdateTable duration, so changes stay in flight while a fault is on.
async fn update_seconds(s: &Setup, seconds: f64) {
    change_emulator_settings(&s.emulator, |settings| {
        settings["update_seconds"] = seconds.into();
    })
    .await;
}

/// Heartbeats refused for three leases while items wait for their rate slots and polls: the process must not
/// take its own items again (two tasks on one item sent a second UpdateTable, took AWS's ResourceInUse for a
/// refusal and ended the item SKIPPED with no history row).
#[tokio::test]
async fn heartbeats_refused_longer_than_the_lease_switch_and_record_each_table_once() {
    let s = setup("worker_lease = '1s'\nupdate_rate = 2.0").await;
    update_seconds(&s, 2.0).await;
    // A heartbeat (and a release) moves only lease_expire_time; every other write of an item sets update_time.
    sql(
        &s,
        "CREATE TABLE tc_test_faults (refuse_heartbeats boolean NOT NULL);
         INSERT INTO tc_test_faults VALUES (false);
         CREATE FUNCTION tc_refuse_heartbeats() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF (SELECT refuse_heartbeats FROM tc_test_faults) THEN
                 RAISE EXCEPTION 'heartbeat refused by the test';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER tc_refuse_heartbeats BEFORE UPDATE ON change_items FOR EACH ROW
             WHEN (NEW.update_time = OLD.update_time
                   AND NEW.lease_expire_time IS DISTINCT FROM OLD.lease_expire_time)
             EXECUTE FUNCTION tc_refuse_heartbeats();",
    )
    .await;
    let id = migrate_bulk(&s.app).await;
    wait_until(&s.app, &id, 30, |r| counts(r).succeeded >= 1).await;
    sql(&s, "UPDATE tc_test_faults SET refuse_heartbeats = true").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sql(&s, "UPDATE tc_test_faults SET refuse_heartbeats = false").await;
    assert_each_table_switched_and_recorded_once(&s, &id).await;
}

/// A database stall in the middle of sending (the change_items table locked for three seconds while UpdateTables
/// are going out at 2/s): sends resume at the configured rate, never in a burst of the slots that fell due during
/// the stall.
#[tokio::test]
async fn a_database_stall_during_sends_resumes_at_the_rate_not_in_a_burst() {
    let rate = 2.0;
    let s = setup(&format!("update_rate = {rate}")).await;
    let id = migrate_bulk(&s.app).await;
    wait_until(&s.app, &id, 30, |r| counts(r).succeeded >= 1).await;
    stall_change_items(&s.db.url, Duration::from_secs(3)).await;
    assert_each_table_switched_and_recorded_once(&s, &id).await;
    let times: Vec<f64> = update_log(&s.emulator)
        .await
        .iter()
        .map(|u| u.time)
        .collect();
    assert_rate_held(&times, rate, "UpdateTable calls");
}

/// Half of all UpdateTables throttled: every call AWS receives, throttled ones included, is one of tablecrypt's
/// rate slots. The SDK's own retries (3 attempts in standard mode) re-sent throttled calls at once, up to 4/s at
/// a 1/s limit.
#[tokio::test]
async fn throttled_updates_are_retried_within_the_rate_not_by_the_sdk() {
    let rate = 2.0;
    let s = setup(&format!("update_rate = {rate}")).await;
    add_fault(
        &s.emulator,
        r#"{"type": "throttle", "rate": 0.5, "service": "dynamodb", "operation": "UpdateTable"}"#,
    )
    .await;
    let id = migrate_bulk(&s.app).await;
    assert_each_table_switched_and_recorded_once(&s, &id).await;
    let log = update_log(&s.emulator).await;
    assert!(
        log.iter().any(|u| !u.ok),
        "no UpdateTable was throttled: the test proves nothing"
    );
    let times: Vec<f64> = log.iter().map(|u| u.time).collect();
    assert_rate_held(&times, rate, "UpdateTable calls (throttled ones included)");
}

/// A replica that starts while another's scan runs closes nothing that is alive: only scans whose replica
/// stopped (their lease expired) are closed. Starting any replica used to mark every running scan FAILED.
#[tokio::test]
async fn a_replica_starting_during_a_scan_fails_nothing() {
    let s = setup("").await;
    // Every DescribeTable a second late, so the scan is still running when the replica starts.
    add_fault(
        &s.emulator,
        r#"{"type": "latency", "millis": 1000, "operation": "DescribeTable"}"#,
    )
    .await;
    let mut client = s.app.client.clone();
    let scan_id = client
        .refresh_inventory(pb::RefreshInventoryRequest::default())
        .await
        .expect("refresh")
        .into_inner()
        .scan_id;
    let replica = tablecrypt_tests::TestApp::spawn_on(
        &s.db.url,
        &format!("aws_endpoint_url = '{}'\n{FAST}", s.emulator.endpoint()),
    )
    .await
    .expect("replica");
    assert_eq!(
        scan(&s, &scan_id).await.state,
        "RUNNING",
        "the scan ended before the replica started: the test proves nothing"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let done = loop {
        let now = scan(&s, &scan_id).await;
        if now.state != "RUNNING" {
            break now;
        }
        assert!(tokio::time::Instant::now() < deadline, "{now:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Only the sandbox account (its role refuses AssumeRole) failed, for its own reason.
    assert_eq!(done.state, "PARTIALLY_FAILED", "{done:#?}");
    let failed: Vec<_> = done
        .targets
        .iter()
        .filter(|t| t.state == "FAILED")
        .collect();
    assert_eq!(failed.len(), 1, "{done:#?}");
    assert_eq!(failed[0].account_id, SANDBOX);
    replica.stop().await.expect("replica stops");
}

/// UpdateAccount reaches the workers of a running request without a restart: once the account's role is
/// replaced by one the account does not have, the items still to be sent fail as unreachable instead of going
/// on with the old role (workers used to keep each account's role for the life of the process).
#[tokio::test]
async fn an_account_update_reaches_the_workers_of_a_running_request() {
    let s = setup("update_rate = 0.5").await;
    let id = migrate_bulk(&s.app).await;
    wait_until(&s.app, &id, 30, |r| counts(r).succeeded >= 1).await;
    let mut client = s.app.client.clone();
    let account = client
        .get_account(as_caller(
            "alice",
            pb::GetAccountRequest {
                account_id: PAYMENTS.into(),
            },
        ))
        .await
        .expect("account")
        .into_inner();
    client
        .update_account(as_caller(
            "alice",
            pb::UpdateAccountRequest {
                account: Some(pb::Account {
                    account_id: PAYMENTS.into(),
                    role_arn: format!("arn:aws:iam::{PAYMENTS}:role/tablecrypt-retired"),
                    etag: account.etag,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["role_arn".into()],
                }),
                validate_only: false,
            },
        ))
        .await
        .expect("update the role");
    let done = wait_terminal(&s.app, &id).await;
    let items = items(&s.app, &id).await;
    let unreachable = items
        .iter()
        .filter(|i| i.reason() == pb::ItemReason::AccountUnreachable)
        .count();
    assert!(
        unreachable > 0,
        "every item went on with the old role: {done:#?}"
    );
    // Nothing switched twice, and every switch that happened is recorded.
    let sent = updates_sent(&s.emulator).await;
    assert!(sent.values().all(|n| *n == 1), "{sent:?}");
    assert_eq!(history(&s.app, history_of(&id)).await.len(), sent.len());
}

/// Our own database failing under the workers (every connection of the server cut every 150 ms while a
/// request runs) defers items; it never fails a user's table, and nothing is switched or recorded twice.
#[tokio::test]
async fn connections_cut_under_the_workers_fail_no_table() {
    let s = setup("update_rate = 4.0").await;
    let id = migrate_bulk(&s.app).await;
    let url = s.db.url.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    let cutter = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
                .await
                .expect("db");
            while !stop.is_cancelled() {
                sqlx::raw_sql(sqlx::AssertSqlSafe(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                ))
                .execute(&mut conn)
                .await
                .expect("cut connections");
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        // Reads may fail while connections are cut: the table of items is what counts.
        if let Ok(r) = s
            .app
            .client
            .clone()
            .get_change_request(as_caller(
                "alice",
                pb::GetChangeRequestRequest {
                    change_request_id: id.clone(),
                },
            ))
            .await
            && counts(&r.into_inner()).succeeded as usize >= BULK / 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    cutter.await.expect("cutter");
    assert_each_table_switched_and_recorded_once(&s, &id).await;
}

/// Postgres refusing new connections ("too many connections", SQLSTATE 53300) while a request runs: every
/// connection of the server is cut and none may be opened again for longer than a lease. Items wait; none fails
/// as "database unavailable" (1 in 10,000 did in a benchmark, 21 in a migration), and nothing is switched or
/// recorded twice. The server connects as a role of its own, since Postgres never limits a superuser.
#[tokio::test]
async fn postgres_refusing_new_connections_fails_no_table() {
    let db = tablecrypt_tests::TestDatabase::create().await.expect("db");
    let role = format!("{}_app", db.name);
    let admin_url = db.url.clone();
    let admin = |statement: String| {
        let url = admin_url.clone();
        async move {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
                .await
                .expect("db");
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut conn)
                .await
                .expect("admin sql");
        }
    };
    admin(format!(
        "CREATE ROLE {role} LOGIN; ALTER DATABASE {} OWNER TO {role}",
        db.name
    ))
    .await;
    let role_url = db.url.replacen("://postgres@", &format!("://{role}@"), 1);
    assert_ne!(
        role_url, db.url,
        "the test database's URL names no postgres user"
    );
    let (emulator, app) = fleet_and_server(&role_url, "update_rate = 4.0").await;
    let s = Setup { db, app, emulator };
    let id = migrate_bulk(&s.app).await;
    // Some items sent, then no connection at all for 6 s (the FAST lease is 5 s).
    wait_until(&s.app, &id, 30, |r| counts(r).succeeded >= 2).await;
    admin(format!(
        "ALTER ROLE {role} CONNECTION LIMIT 0;
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
    ))
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let refused = <sqlx::PgConnection as sqlx::Connection>::connect(&role_url).await;
    let refused = refused.err().map(|e| e.to_string()).unwrap_or_default();
    admin(format!("ALTER ROLE {role} CONNECTION LIMIT -1")).await;
    assert!(
        refused.contains("too many connections"),
        "Postgres did not refuse the role's connections: {refused:?}"
    );
    assert_each_table_switched_and_recorded_once(&s, &id).await;
}

/// Items a stopping replica hands back (SIGTERM) are resumed by another at once, and are not counted as lease
/// reclaims: that metric is an operator's signal that workers die or stall (it counted every hand-back).
#[tokio::test]
async fn items_handed_back_at_shutdown_are_not_counted_as_reclaims() {
    let Setup { db, app, emulator } = setup("update_rate = 2.0").await;
    let s = Setup { db, app, emulator };
    update_seconds(&s, 2.0).await;
    let id = migrate_bulk(&s.app).await;
    wait_until(&s.app, &id, 30, |r| counts(r).succeeded >= 1).await;
    let replica = tablecrypt_tests::TestApp::spawn_on(
        &s.db.url,
        &format!(
            "aws_endpoint_url = '{}'\nupdate_rate = 2.0\n{FAST}",
            s.emulator.endpoint()
        ),
    )
    .await
    .expect("replica");
    let Setup { db, app, emulator } = s;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .expect("db");
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM change_items WHERE state IN ('APPLYING', 'WAITING')",
    )
    .fetch_one(&mut conn)
    .await
    .expect("held");
    app.stop().await.expect("the first replica stops");
    let s = Setup {
        db,
        app: replica,
        emulator,
    };
    assert_each_table_switched_and_recorded_once(&s, &id).await;
    assert!(
        held > 0,
        "nothing was in flight at the stop: the test proves nothing"
    );
    let metrics = tablecrypt_tests::scrape_metrics(s.app.metrics_addr)
        .await
        .expect("metrics");
    let reclaims = metrics
        .lines()
        .find_map(|line| line.strip_prefix("tablecrypt_change_item_lease_reclaims_total "))
        .expect("the reclaim metric");
    assert_eq!(reclaims.trim(), "0", "hand-backs counted as reclaims");
}

/// Every UpdateTable answered with HTTP 500: each item is sent a bounded number of times (3), then fails with
/// AWS's message, instead of retrying forever (an asymmetric key answers 500 on every try).
#[tokio::test]
async fn server_errors_are_retried_a_bounded_number_of_times_then_fail_the_item() {
    let s = setup("").await;
    add_fault(
        &s.emulator,
        r#"{"type": "server_error", "rate": 1.0, "operation": "UpdateTable"}"#,
    )
    .await;
    let id = migrate_bulk(&s.app).await;
    let done = wait_terminal(&s.app, &id).await;
    assert_eq!(done.state(), pb::ChangeRequestState::Failed, "{done:#?}");
    for item in items(&s.app, &id).await {
        assert_eq!(item.state(), pb::ChangeItemState::Failed, "{item:?}");
        assert!(
            item.message.contains("server error 3 times")
                && item.message.contains("InternalServerError"),
            "{item:?}"
        );
    }
    let mut sends: BTreeMap<String, usize> = BTreeMap::new();
    for update in update_log(&s.emulator).await {
        *sends.entry(update.table).or_default() += 1;
    }
    assert_eq!(sends.len(), BULK, "{sends:?}");
    assert!(sends.values().all(|n| *n == 3), "{sends:?}");
}

/// A fleet-wide rate far above what a database round trip allows (100,000/s: a slot every 10 us) still sends:
/// the item is marked before its slot, not after it. Marking after the slot made every send miss its window,
/// and a migration sent nothing at all.
#[tokio::test]
async fn a_fleet_rate_above_a_database_round_trip_still_sends() {
    let s = setup("global_update_rate = 100000.0\nupdate_rate = 1000.0").await;
    let id = migrate_bulk(&s.app).await;
    assert_each_table_switched_and_recorded_once(&s, &id).await;
}
