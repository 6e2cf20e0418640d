//! A rolling upgrade in the middle of a request: a newer release's (additive) migration lands while items are
//! still to be sent. The older replica keeps serving the API but its workers stop claiming and say so in health;
//! a replica of the newer binary finishes the request. Judged from the emulator's log and the history.

use std::time::Duration;

use tablecrypt_proto::v1 as pb;
use tablecrypt_tests::TestApp;
use tablecrypt_tests::changes::*;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The health name of a replica's change workers.
const WORKERS: &str = "tablecrypt.worker";

async fn worker_health(app: &TestApp) -> ServingStatus {
    let status = HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest {
            service: WORKERS.into(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status;
    ServingStatus::try_from(status).expect("a known status")
}

async fn wait_for_worker_health(app: &TestApp, want: ServingStatus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let now = worker_health(app).await;
        if now == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "workers' health stayed {now:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A synthetic migration `version` (additive, like every migration within a release) running `sql`.
async fn apply_migration(url: &str, version: i64, sql: &str) {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .expect("db");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "{sql}
         INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES ({version}, 'a migration this binary does not know', true, '\\x00'::bytea, 1);"
    )))
    .execute(&mut conn)
    .await
    .expect("synthetic migration");
}

#[tokio::test]
async fn a_request_started_before_a_newer_schema_is_finished_by_the_newer_binary_only() {
    // Two items at a time, one UpdateTable a second: the request is still sending when the schema moves on.
    let old_settings = "update_rate = 1.0\nworker_concurrency = 2";
    let s = setup(old_settings).await;
    assert_eq!(worker_health(&s.app).await, ServingStatus::Serving);
    let id = migrate_bulk(&s.app).await;
    wait_until(&s.app, &id, 30, |r| counts(r).succeeded >= 2).await;

    let known = tablecrypt_store::schema::known_version();
    apply_migration(
        &s.db.url,
        known + 1,
        "ALTER TABLE change_items ADD COLUMN tc_future_note text;",
    )
    .await;
    wait_for_worker_health(&s.app, ServingStatus::NotServing).await;
    // What the old replica held when the fence went up finishes; then nothing more is sent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent_when_fenced = updates_sent(&s.emulator).await.len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let sent_later = updates_sent(&s.emulator).await.len();
    assert_eq!(
        sent_later, sent_when_fenced,
        "the older worker went on claiming after the newer schema landed"
    );
    assert!(
        sent_later < BULK,
        "the request finished before the schema moved on ({sent_later} of {BULK}); nothing was proven"
    );
    // The older replica still serves the API on the newer, additive schema.
    let request = get(&s.app, &id).await;
    assert!(!is_terminal(&request), "{request:#?}");

    // The newer binary (it knows the future migration) joins and finishes the request.
    let newer = TestApp::spawn_edited(
        &s.db.url,
        &format!(
            "aws_endpoint_url = '{}'\n{FAST}\nupdate_rate = 1.0",
            s.emulator.endpoint()
        ),
        |config| config.known_migrations.push(known + 1),
    )
    .await
    .expect("the newer replica");
    assert_eq!(worker_health(&newer).await, ServingStatus::Serving);
    assert_each_table_switched_and_recorded_once(&s, &id).await;
    // The older replica never claimed again: its workers are still fenced.
    assert_eq!(worker_health(&s.app).await, ServingStatus::NotServing);
    let done: pb::ChangeRequest = get(&newer, &id).await;
    assert_eq!(done.state(), pb::ChangeRequestState::Succeeded);
}

/// A migration merged late, with a timestamp older than this binary's newest, is as unknown to the binary as a
/// newer one: the worker stops claiming (a fence on the newest version alone let it through).
#[tokio::test]
async fn a_late_merged_older_migration_fences_the_worker_too() {
    let s = setup("").await;
    assert_eq!(worker_health(&s.app).await, ServingStatus::Serving);
    let known = tablecrypt_store::schema::known_migrations();
    let older = known.iter().copied().min().expect("migrations") + 1;
    assert!(!known.contains(&older), "{older} is one of this binary's");
    apply_migration(
        &s.db.url,
        older,
        "ALTER TABLE accounts ADD COLUMN tc_late_note text;",
    )
    .await;
    wait_for_worker_health(&s.app, ServingStatus::NotServing).await;
    // Nothing is claimed meanwhile.
    let id = migrate_bulk(&s.app).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(counts(&get(&s.app, &id).await).succeeded, 0);
    assert!(updates_sent(&s.emulator).await.is_empty());
}
