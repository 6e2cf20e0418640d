//! Change requests under trouble: a throttling storm, an account whose role loses its permission after
//! planning, and three server replicas sharing one database and one request.

use std::collections::BTreeMap;

use tablecrypt_proto::v1 as pb;
use tablecrypt_tests::TestApp;
use tablecrypt_tests::changes::*;

async fn fault(s: &Setup, rule: &str) {
    add_fault(&s.emulator, rule).await;
}

/// The generated bulk table names, as the inventory knows them.
async fn bulk_names(s: &Setup) -> Vec<String> {
    let names: Vec<String> = s
        .app
        .list_tables(pb::ListTableEncryptionsRequest {
            account_ids: vec![PAYMENTS.into()],
            table_name_prefix: "bulk-".into(),
            ..Default::default()
        })
        .await
        .into_iter()
        .filter_map(|t| t.rsplit('/').next().map(str::to_owned))
        .collect();
    assert_eq!(names.len(), BULK);
    names
}

#[tokio::test]
async fn a_throttling_storm_slows_the_request_but_it_still_succeeds() {
    let s = setup("").await;
    // 30% of every DynamoDB call (UpdateTable and DescribeTable alike) is throttled from now on.
    fault(
        &s,
        r#"{"type": "throttle", "rate": 0.3, "service": "dynamodb"}"#,
    )
    .await;
    let id = migrate_bulk(&s.app).await;
    let done = wait_terminal(&s.app, &id).await;
    assert_eq!(
        done.state(),
        pb::ChangeRequestState::Succeeded,
        "{:#?}",
        items(&s.app, &id).await
    );
    assert_eq!(counts(&done).succeeded as usize, BULK);
    // Every table switched exactly once despite the retries.
    let sent = updates_sent(&s.emulator).await;
    assert_eq!(sent.len(), BULK);
    assert!(sent.values().all(|n| *n == 1), "{sent:?}");
    assert_eq!(history(&s.app, history_of(&id)).await.len(), BULK);
    // The storm really hit the request: the emulator answered some of its calls with ThrottlingException.
    let (status, body) = s
        .emulator
        .admin("GET", "/requests?account_id=111111111111", "")
        .await
        .expect("request log");
    assert_eq!(status, 200, "{body}");
    let log: serde_json::Value = serde_json::from_str(&body).expect("json");
    let throttled = log["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter(|e| e["outcome"] == "ThrottlingException")
        .count();
    assert!(
        throttled > 0,
        "no call was throttled: the test proves nothing"
    );
}

#[tokio::test]
async fn an_account_that_loses_its_permission_fails_only_its_own_items() {
    // Approval holds the request between planning and applying, while search's role loses UpdateTable.
    let s = setup("approval_required = true").await;
    let names = bulk_names(&s).await;
    let mut refs: Vec<pb::TableRef> = names.iter().map(|n| table(PAYMENTS, EU, n)).collect();
    refs.push(table(SEARCH, EU, "orders"));
    let created = create(
        &s.app,
        "alice",
        pb::CreateChangeRequestRequest {
            tables: tables(refs),
            target: Some(pb::TargetEncryption {
                mode: pb::EncryptionMode::AwsManaged as i32,
                kms_key: String::new(),
            }),
            ..Default::default()
        },
    )
    .await
    .expect("create");
    assert_eq!(created.summary.expect("summary").change as usize, BULK + 1);
    let id = created.change_request.expect("request").change_request_id;
    fault(
        &s,
        &format!(
            r#"{{"type": "access_denied", "operation": "UpdateTable", "account_id": "{SEARCH}"}}"#
        ),
    )
    .await;
    s.app
        .client
        .clone()
        .approve_change_request(as_caller(
            "bob",
            pb::ApproveChangeRequestRequest {
                change_request_id: id.clone(),
            },
        ))
        .await
        .expect("approve");
    let done = wait_terminal(&s.app, &id).await;
    assert_eq!(done.state(), pb::ChangeRequestState::PartiallyFailed);
    let by_account: BTreeMap<(String, i32), usize> =
        items(&s.app, &id)
            .await
            .into_iter()
            .fold(BTreeMap::new(), |mut m, i| {
                *m.entry((i.account_id.clone(), i.state)).or_insert(0) += 1;
                m
            });
    assert_eq!(
        by_account,
        BTreeMap::from([
            (
                (PAYMENTS.to_owned(), pb::ChangeItemState::Succeeded as i32),
                BULK
            ),
            ((SEARCH.to_owned(), pb::ChangeItemState::Failed as i32), 1),
        ])
    );
    let failed = items(&s.app, &id)
        .await
        .into_iter()
        .find(|i| i.account_id == SEARCH)
        .expect("search item");
    assert_eq!(failed.reason(), pb::ItemReason::AccessDenied, "{failed:?}");
}

#[tokio::test]
async fn three_replicas_apply_each_item_once_within_the_shared_rate() {
    // Three servers on one database, each running workers; UpdateTable at 4/s per account-region in total.
    // (FAST leaves update_rate to each server's own line.)
    let rate = 4.0;
    let s = setup(&format!("update_rate = {rate}")).await;
    let replica = |n: usize| {
        let toml = format!(
            "aws_endpoint_url = '{}'\n{FAST}\nupdate_rate = {rate}\nrole = 'worker'",
            s.emulator.endpoint()
        );
        let db = &s.db;
        async move {
            let app = TestApp::spawn_with(db, &toml).await;
            app.unwrap_or_else(|e| panic!("replica {n}: {e:#}"))
        }
    };
    let (r2, r3) = tokio::join!(replica(2), replica(3));
    let id = migrate_bulk(&s.app).await;
    let done = wait_terminal(&s.app, &id).await;
    assert_eq!(done.state(), pb::ChangeRequestState::Succeeded);
    assert_eq!(history(&s.app, history_of(&id)).await.len(), BULK);

    let mut times: Vec<f64> = Vec::new();
    let mut per_table: BTreeMap<String, usize> = BTreeMap::new();
    for update in update_log(&s.emulator).await {
        *per_table.entry(update.table).or_insert(0) += 1;
        times.push(update.time);
    }
    assert_eq!(per_table.len(), BULK, "{per_table:?}");
    assert!(
        per_table.values().all(|n| *n == 1),
        "each table once: {per_table:?}"
    );
    // No one-second window holds more than the rate allows (the slots are 1/rate apart; allow the edge).
    times.sort_by(f64::total_cmp);
    for (i, start) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|t| **t < start + 1.0).count();
        assert!(
            in_window as f64 <= rate + 1.0,
            "{in_window} UpdateTable calls within one second of {start}"
        );
    }
    // The calls were spread over the replicas' shared rate: at least (n - 1) / rate seconds end to end.
    let span = times.last().copied().unwrap_or(0.0) - times.first().copied().unwrap_or(0.0);
    assert!(span >= (BULK as f64 - 1.0) / rate - 0.5, "span {span} s");
    r2.stop().await.expect("replica 2 stops");
    r3.stop().await.expect("replica 3 stops");
}
