//! Under the fleet emulator's `aws-observed` behaviour (the table stays ACTIVE and shows the old key for the first
//! seconds of an SSE change, UPDATING is the only SSE status, an identical UpdateTable during a change is
//! accepted), each change is sent once: a migration of every bulk table makes exactly one accepted UpdateTable per
//! table (from the emulator's log) and no "settled on another key" retry. On the optimistic emulator the old
//! engine looked right; reshaped to AWS's observed behaviour it sent every change twice.

use tablecrypt_proto::v1 as pb;
use tablecrypt_proto::v1::table_encryption_client::TableEncryptionClient;
use tablecrypt_tests::changes::*;

async fn observe_like_aws(s: &Setup, update_seconds: f64, old_key_visible_seconds: f64) {
    change_emulator_settings(&s.emulator, |settings| {
        settings["update_seconds"] = update_seconds.into();
        settings["behaviour"] = serde_json::json!({
            "profile": "aws-observed",
            "old_key_visible_seconds": old_key_visible_seconds,
        });
    })
    .await;
}

#[tokio::test]
async fn under_aws_observed_behaviour_each_change_is_sent_once() {
    let s = setup("").await;
    // The old key stays visible for 2 of the change's 3 seconds; the worker polls every 100-200 ms.
    observe_like_aws(&s, 3.0, 2.0).await;
    let id = migrate_bulk(&s.app).await;
    let done = wait_terminal(&s.app, &id).await;
    let all = items(&s.app, &id).await;
    assert_eq!(done.state(), pb::ChangeRequestState::Succeeded, "{all:#?}");
    assert!(
        all.iter().all(|i| i.attempts == 1),
        "an item was tried more than once: {all:#?}"
    );
    let log = update_log(&s.emulator).await;
    assert_eq!(
        log.len(),
        BULK,
        "every UpdateTable the emulator saw: {log:?}"
    );
    let sent = updates_sent(&s.emulator).await;
    assert_eq!(sent.len(), BULK);
    assert!(sent.values().all(|n| *n == 1), "{sent:?}");
    assert_eq!(history(&s.app, history_of(&id)).await.len(), BULK);
    for table in sent.keys() {
        let name = table.rsplit('/').next().expect("table");
        assert_eq!(live_key(&s.app, PAYMENTS, name).await, payments_key(KEY_B));
    }
}

/// The settle timeout is what holds the re-send back: shorter than the old key stays visible, the same migration
/// sends changes twice (the engine's behaviour before the settle rule), so the test above can fail. Each of those
/// sends AWS accepted spends one of the table's 4 daily switches (an identical UpdateTable during a change is
/// accepted and counted): the quota's record holds every one, while the history keeps one row per change. (With
/// no settle timeout at all, the re-sends use up the quota and the items wait for it to free, a day later.)
#[tokio::test]
async fn a_settle_timeout_below_the_old_keys_visibility_makes_the_engine_send_twice() {
    let s = setup("worker_settle_timeout = '1s'").await;
    observe_like_aws(&s, 3.0, 2.0).await;
    let id = migrate_bulk(&s.app).await;
    wait_terminal(&s.app, &id).await;
    let log = update_log(&s.emulator).await;
    assert!(
        log.len() > BULK,
        "{} UpdateTable calls for {BULK} tables",
        log.len()
    );
    let accepted = updates_sent(&s.emulator).await;
    let pool = sqlx::PgPool::connect(&s.db.url).await.expect("db");
    let recorded: Vec<(String, i64)> = sqlx::query_as(
        "SELECT account_id || '/' || table_name, count(*) FROM table_switch_sends GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("switch sends");
    let recorded: std::collections::BTreeMap<String, usize> = recorded
        .into_iter()
        .map(|(table, n)| (table, n as usize))
        .collect();
    assert_eq!(
        recorded, accepted,
        "sends recorded vs accepted by the emulator"
    );
    assert!(
        accepted.values().any(|n| *n > 1),
        "no table was sent twice: {accepted:?}"
    );
    let history: i64 = sqlx::query_scalar("SELECT count(*) FROM key_rotation_history")
        .fetch_one(&pool)
        .await
        .expect("history");
    assert_eq!(history as usize, BULK, "one history row per change");
}

/// Sets the payments account's own settle timeout, in seconds.
async fn set_settle_timeout(
    client: &mut TableEncryptionClient<tonic::transport::Channel>,
    seconds: i64,
) -> Result<tonic::Response<pb::Account>, tonic::Status> {
    client
        .update_account(pb::UpdateAccountRequest {
            account: Some(pb::Account {
                account_id: PAYMENTS.into(),
                limits: Some(pb::AccountLimits {
                    settle_timeout: Some(prost_types::Duration { seconds, nanos: 0 }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["limits".into()],
            }),
            validate_only: false,
        })
        .await
}

/// An account's own settle timeout wins over the service's: the service waits 10 s for a change to show, far
/// longer than the old key stays visible, but the payments account says 1 s, so its changes are sent again
/// while AWS still shows the old key.
#[tokio::test]
async fn an_accounts_own_settle_timeout_is_the_one_used() {
    let s = setup("").await;
    observe_like_aws(&s, 3.0, 2.0).await;
    let mut client = s.app.client.clone();
    let account = set_settle_timeout(&mut client, 1)
        .await
        .expect("set the account's settle timeout")
        .into_inner();
    assert_eq!(
        account
            .limits
            .and_then(|l| l.settle_timeout)
            .map(|d| d.seconds),
        Some(1)
    );
    // Out of range: refused, naming the field.
    let refused = set_settle_timeout(&mut client, 86_401)
        .await
        .expect_err("a settle timeout above a day");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        field_violations(&refused),
        ["account.limits.settle_timeout"]
    );
    let id = migrate_bulk(&s.app).await;
    wait_terminal(&s.app, &id).await;
    let log = update_log(&s.emulator).await;
    assert!(
        log.len() > BULK,
        "{} UpdateTable calls for {BULK} tables: the account's 1 s settle timeout was not used",
        log.len()
    );
}
