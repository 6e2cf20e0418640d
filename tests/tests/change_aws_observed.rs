//! Under the fleet emulator's `aws-observed` behaviour (the table stays ACTIVE and shows the old key for the first
//! seconds of an SSE change, UPDATING is the only SSE status, an identical UpdateTable during a change is
//! accepted), each change is sent once: a migration of every bulk table makes exactly one accepted UpdateTable per
//! table (from the emulator's log) and no "settled on another key" retry. On the optimistic emulator the old
//! engine looked right; reshaped to AWS's observed behaviour it sent every change twice.

use tablecrypt_proto::v1 as pb;
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

/// The settle timeout is what holds the re-send back: with none, the same migration sends changes twice (the
/// engine's behaviour before the settle rule), so the test above can fail.
#[tokio::test]
async fn without_a_settle_timeout_the_old_key_makes_the_engine_send_twice() {
    let s = setup("worker_settle_timeout = '0s'").await;
    observe_like_aws(&s, 3.0, 2.0).await;
    let id = migrate_bulk(&s.app).await;
    wait_terminal(&s.app, &id).await;
    let log = update_log(&s.emulator).await;
    assert!(
        log.len() > BULK,
        "{} UpdateTable calls for {BULK} tables",
        log.len()
    );
}
