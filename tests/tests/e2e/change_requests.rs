//! Change requests end to end: the real server (API and workers), a fresh database, and the fleet emulator
//! reached through assumed roles. Outcomes are checked where a user would: the table's key as DynamoDB reports
//! it, the key-rotation history, and the emulator's own log of what it was asked.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use fleet_emulator::RunningEmulator;
use tablecrypt_proto::v1 as pb;
use tablecrypt_tests::TestApp;
use tablecrypt_tests::changes::*;
use tokio_stream::StreamExt as _;
use tonic::Code;

#[tokio::test]
async fn the_plan_gives_every_table_an_item_with_its_reason_and_stores_nothing() {
    let s = setup("").await;
    let plan = create(
        &s.app,
        "alice",
        pb::CreateChangeRequestRequest {
            tables: tables(vec![
                table(PAYMENTS, EU, "orders"),
                table(PAYMENTS, EU, "sessions"),
                table(PAYMENTS, EU, "plain"),
                table(PAYMENTS, EU, "global"),
                table(PAYMENTS, EU, "locked"),
                table(PAYMENTS, EU, "missing"),
                table(SEARCH, EU, "orders"),
                table(SANDBOX, EU, "anything"),
            ]),
            target: to_key("alias/a"),
            validate_only: true,
            ..Default::default()
        },
    )
    .await
    .expect("plan");
    let got: BTreeMap<String, (pb::PlanAction, pb::ItemReason)> = plan
        .items
        .iter()
        .map(|i| {
            (
                format!("{}/{}", i.account_id, i.table_name),
                (i.action(), i.reason()),
            )
        })
        .collect();
    use pb::ItemReason as R;
    use pb::PlanAction as A;
    let want: BTreeMap<String, (A, R)> = [
        ("111111111111/orders", (A::Skip, R::Unspecified)),
        ("111111111111/sessions", (A::Change, R::Unspecified)),
        ("111111111111/plain", (A::Change, R::Unspecified)),
        (
            "111111111111/global",
            (A::Blocked, R::GlobalTableNotCovered),
        ),
        ("111111111111/locked", (A::Blocked, R::TableInaccessible)),
        ("111111111111/missing", (A::Blocked, R::TableNotFound)),
        ("222222222222/orders", (A::Skip, R::Unspecified)),
        ("333333333333/anything", (A::Blocked, R::AccountUnreachable)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(got, want);
    // The alias resolved per account: each account's own key A.
    let sessions = plan
        .items
        .iter()
        .find(|i| i.table_name == "sessions")
        .expect("sessions");
    assert_eq!(sessions.to_kms_key_arn, payments_key(KEY_A));
    let summary = plan.summary.expect("summary");
    assert_eq!((summary.change, summary.skip, summary.blocked), (2, 2, 4));
    assert_eq!(summary.blocked_by_reason.get("TABLE_NOT_FOUND"), Some(&1));
    assert!(
        plan.change_request
            .expect("preview")
            .change_request_id
            .is_empty()
    );
    assert_eq!(
        stored_requests(&s.app).await,
        0,
        "validate_only stores nothing"
    );
    assert!(updates_sent(&s.emulator).await.is_empty());

    // Every way a key can be unusable, planned for one table.
    let other_region = key_arn(PAYMENTS, US, KEY_M_US);
    let other_account = key_arn(SEARCH, EU, KEY_SEARCH);
    for (key, reason) in [
        ("alias/old", R::KeyDisabled),
        ("alias/gone", R::KeyPendingDeletion),
        ("alias/rsa", R::KeyAsymmetric),
        ("alias/nope", R::KeyMissing),
        (other_region.as_str(), R::KeyInOtherRegion),
        (other_account.as_str(), R::KeyInOtherAccount),
    ] {
        let plan = s
            .app
            .client
            .clone()
            .update_table_encryption(as_caller(
                "alice",
                pb::UpdateTableEncryptionRequest {
                    table: Some(table(PAYMENTS, EU, "plain")),
                    target: to_key(key),
                    validate_only: true,
                    ..Default::default()
                },
            ))
            .await
            .expect("plan")
            .into_inner();
        assert_eq!(plan.items.len(), 1);
        assert_eq!(plan.items[0].action(), A::Blocked, "{key}");
        assert_eq!(plan.items[0].reason(), reason, "{key}: {:?}", plan.items[0]);
        // Created for real, the request stores the item exactly as previewed (it used to fail INTERNAL on a
        // blocked item without a resolved key).
        let created = s
            .app
            .client
            .clone()
            .update_table_encryption(as_caller(
                "alice",
                pb::UpdateTableEncryptionRequest {
                    table: Some(table(PAYMENTS, EU, "plain")),
                    target: to_key(key),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_or_else(|e| panic!("{key}: a blocked plan is stored: {e:?}"))
            .into_inner();
        let id = created.change_request.expect("request").change_request_id;
        assert_same_items(&plan.items, &items(&s.app, &id).await);
    }

    // The whole preview, stored: the same items, reasons, keys and messages.
    let stored = create(
        &s.app,
        "alice",
        pb::CreateChangeRequestRequest {
            tables: tables(
                plan.items
                    .iter()
                    .map(|i| table(&i.account_id, &i.region, &i.table_name))
                    .collect(),
            ),
            target: to_key("alias/a"),
            ..Default::default()
        },
    )
    .await
    .expect("store the plan");
    let id = stored.change_request.expect("request").change_request_id;
    assert_same_items(&plan.items, &items(&s.app, &id).await);

    // A registered account is required; a selector that matches nothing says so.
    let err = create(
        &s.app,
        "alice",
        pb::CreateChangeRequestRequest {
            tables: tables(vec![table("444444444444", EU, "xyz")]),
            target: to_key("alias/a"),
            ..Default::default()
        },
    )
    .await
    .expect_err("unknown account");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = create(
        &s.app,
        "alice",
        pb::CreateChangeRequestRequest {
            selector: Some(pb::TableSelector {
                table_name_prefix: "nothing-like-this".into(),
                ..Default::default()
            }),
            target: to_key("alias/a"),
            ..Default::default()
        },
    )
    .await
    .expect_err("no tables");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(stored_requests(&s.app).await, 7);
}

/// A stored item says what its preview said: action, reason, message, keys, replicas, and for a quota-blocked item
/// when the quota frees up.
fn assert_same_items(previewed: &[pb::ChangeItem], stored: &[pb::ChangeItem]) {
    let view = |i: &pb::ChangeItem| {
        let frees_at =
            (i.reason() == pb::ItemReason::SwitchQuotaExhausted).then_some(i.next_attempt_time);
        (
            format!("{}/{}/{}", i.account_id, i.region, i.table_name),
            i.action(),
            i.reason(),
            i.message.clone(),
            i.from_kms_key_arn.clone(),
            i.to_kms_key_arn.clone(),
            i.replicas.clone(),
            frees_at,
        )
    };
    let mut want: Vec<_> = previewed.iter().map(view).collect();
    let mut got: Vec<_> = stored.iter().map(view).collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want);
}

#[tokio::test]
async fn bad_input_names_the_field_and_writes_nothing() {
    let s = setup("").await;
    let good_tables = || tables(vec![table(PAYMENTS, EU, "plain")]);
    let cases: Vec<(pb::CreateChangeRequestRequest, &str)> = vec![
        (pb::CreateChangeRequestRequest::default(), "tables"),
        (pb::CreateChangeRequestRequest::default(), "target"),
        (
            pb::CreateChangeRequestRequest {
                tables: good_tables(),
                selector: Some(pb::TableSelector::default()),
                target: to_key("alias/a"),
                ..Default::default()
            },
            "selector",
        ),
        (
            pb::CreateChangeRequestRequest {
                tables: tables(vec![table(PAYMENTS, "mars-1", "plain")]),
                target: to_key("alias/a"),
                ..Default::default()
            },
            "tables.tables[0].region",
        ),
        (
            pb::CreateChangeRequestRequest {
                tables: tables(vec![table("12", EU, "plain")]),
                target: to_key("alias/a"),
                ..Default::default()
            },
            "tables.tables[0].account_id",
        ),
        (
            pb::CreateChangeRequestRequest {
                tables: tables(vec![table(PAYMENTS, EU, "bad name!")]),
                target: to_key("alias/a"),
                ..Default::default()
            },
            "tables.tables[0].table_name",
        ),
        (
            pb::CreateChangeRequestRequest {
                tables: tables(vec![
                    table(PAYMENTS, EU, "plain"),
                    table(PAYMENTS, EU, "plain"),
                ]),
                target: to_key("alias/a"),
                ..Default::default()
            },
            "tables.tables[1]",
        ),
        (
            pb::CreateChangeRequestRequest {
                tables: good_tables(),
                target: to_key(""),
                ..Default::default()
            },
            "target.kms_key",
        ),
        (
            pb::CreateChangeRequestRequest {
                tables: good_tables(),
                target: Some(pb::TargetEncryption {
                    mode: pb::EncryptionMode::AwsOwned as i32,
                    kms_key: "alias/a".into(),
                }),
                ..Default::default()
            },
            "target.kms_key",
        ),
        (
            pb::CreateChangeRequestRequest {
                tables: good_tables(),
                target: Some(pb::TargetEncryption {
                    mode: 42,
                    kms_key: String::new(),
                }),
                ..Default::default()
            },
            "target.mode",
        ),
        (
            pb::CreateChangeRequestRequest {
                tables: good_tables(),
                target: to_key("alias/a"),
                options: Some(pb::ChangeOptions {
                    max_updates_per_second: 1000.0,
                    ..Default::default()
                }),
                ..Default::default()
            },
            "options.max_updates_per_second",
        ),
        (
            pb::CreateChangeRequestRequest {
                tables: good_tables(),
                target: to_key("alias/a"),
                options: Some(pb::ChangeOptions {
                    max_in_flight: 501,
                    ..Default::default()
                }),
                ..Default::default()
            },
            "options.max_in_flight",
        ),
        (
            pb::CreateChangeRequestRequest {
                tables: good_tables(),
                target: to_key("alias/a"),
                options: Some(pb::ChangeOptions {
                    failure_threshold: -1,
                    ..Default::default()
                }),
                ..Default::default()
            },
            "options.failure_threshold",
        ),
        (
            pb::CreateChangeRequestRequest {
                tables: good_tables(),
                target: to_key("alias/a"),
                request_id: "x".repeat(129),
                ..Default::default()
            },
            "request_id",
        ),
        (
            pb::CreateChangeRequestRequest {
                tables: good_tables(),
                target: to_key("alias/a"),
                description: "d".repeat(1025),
                ..Default::default()
            },
            "description",
        ),
        (
            pb::CreateChangeRequestRequest {
                selector: Some(pb::TableSelector {
                    account_label_selector: "team in (".into(),
                    ..Default::default()
                }),
                target: to_key("alias/a"),
                ..Default::default()
            },
            "selector.account_label_selector",
        ),
        (
            pb::CreateChangeRequestRequest {
                selector: Some(pb::TableSelector {
                    current_kms_key: "alias/".into(),
                    ..Default::default()
                }),
                target: to_key("alias/a"),
                ..Default::default()
            },
            "selector.current_kms_key",
        ),
    ];
    for (request, field) in cases {
        let err = create(&s.app, "alice", request).await.expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            field_violations(&err).iter().any(|f| f == field),
            "{field} not named: {:?}",
            field_violations(&err)
        );
    }
    let mut client = s.app.client.clone();
    for (status, field) in [
        (
            client
                .get_change_request(pb::GetChangeRequestRequest {
                    change_request_id: "not-a-uuid".into(),
                })
                .await
                .expect_err("bad id"),
            "change_request_id",
        ),
        (
            client
                .list_change_items(pb::ListChangeItemsRequest {
                    change_request_id: uuid::Uuid::new_v4().to_string(),
                    states: vec![99],
                    ..Default::default()
                })
                .await
                .expect_err("bad state"),
            "states[0]",
        ),
        (
            client
                .list_key_rotation_history(pb::ListKeyRotationHistoryRequest {
                    page_token: "garbage".into(),
                    ..Default::default()
                })
                .await
                .expect_err("bad token"),
            "page_token",
        ),
        (
            client
                .update_table_encryption(pb::UpdateTableEncryptionRequest {
                    table: Some(table(PAYMENTS, "nowhere", "plain")),
                    target: to_key("alias/a"),
                    ..Default::default()
                })
                .await
                .expect_err("bad region"),
            "table.region",
        ),
    ] {
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            field_violations(&status).iter().any(|f| f == field),
            "{field}: {status:?}"
        );
    }
    let err = client
        .get_change_request(pb::GetChangeRequestRequest {
            change_request_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(stored_requests(&s.app).await, 0);
    assert!(updates_sent(&s.emulator).await.is_empty());
}

#[tokio::test]
async fn a_migration_from_key_a_to_key_b_is_applied_watched_recorded_and_rolled_back() {
    let s = setup("").await;
    let on_a = pb::TableSelector {
        account_ids: vec![PAYMENTS.into()],
        current_kms_key: payments_key(KEY_A),
        ..Default::default()
    };
    let plan = create(
        &s.app,
        "alice",
        pb::CreateChangeRequestRequest {
            selector: Some(on_a.clone()),
            target: to_key("alias/b"),
            validate_only: true,
            ..Default::default()
        },
    )
    .await
    .expect("plan");
    let expected = BULK + 1; // bulk-* and orders
    assert_eq!(plan.summary.expect("summary").change as usize, expected);

    let request = pb::CreateChangeRequestRequest {
        selector: Some(on_a),
        target: to_key("alias/b"),
        description: "retire key A".into(),
        request_id: "migrate-a-to-b".into(),
        ..Default::default()
    };
    let created = create(&s.app, "alice", request.clone())
        .await
        .expect("create")
        .change_request
        .expect("request");
    let id = created.change_request_id.clone();
    assert_eq!(created.created_by, "alice");

    // Watch from the start: a snapshot, then transitions, until the request ends.
    let mut stream = s
        .app
        .client
        .clone()
        .watch_change_request(pb::WatchChangeRequestRequest {
            change_request_id: id.clone(),
        })
        .await
        .expect("watch")
        .into_inner();
    let mut last_state: HashMap<i64, pb::ChangeItemState> = HashMap::new();
    let mut messages = 0;
    let mut last_request = None;
    let watched = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(message) = stream.next().await {
            let message = message.expect("watch message");
            messages += 1;
            for item in &message.items {
                last_state.insert(item.item_id, item.state());
            }
            last_request = message.change_request;
        }
    })
    .await;
    assert!(
        watched.is_ok(),
        "the watch did not end by itself: {:#?}",
        items(&s.app, &id)
            .await
            .into_iter()
            .filter(|i| i.state() != pb::ChangeItemState::Succeeded)
            .collect::<Vec<_>>()
    );
    let last_request = last_request.expect("a request in the last message");
    assert_eq!(last_request.state(), pb::ChangeRequestState::Succeeded);
    assert!(
        messages >= 2,
        "snapshot and at least one change, got {messages}"
    );
    assert_eq!(last_state.len(), expected);
    assert!(
        last_state
            .values()
            .all(|s| *s == pb::ChangeItemState::Succeeded),
        "{last_state:?}"
    );
    assert_eq!(counts(&last_request).succeeded as usize, expected);

    // The engine's metrics saw the same: one UpdateTable started per table, every item succeeded.
    let metrics = tablecrypt_tests::scrape_metrics(s.app.metrics_addr)
        .await
        .expect("metrics");
    let line = |prefix: &str, needle: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix) && l.contains(needle))
            .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
    };
    assert_eq!(
        line("tablecrypt_update_table_calls_total{", "STARTED"),
        Some(expected.to_string()),
        "{metrics}"
    );
    assert_eq!(
        line("tablecrypt_change_item_seconds_count{", "SUCCEEDED"),
        Some(expected.to_string())
    );
    assert!(line("tablecrypt_describe_table_polls_total{", "OK").is_some());

    // DynamoDB shows key B, and each table was switched exactly once.
    assert_eq!(
        live_key(&s.app, PAYMENTS, "orders").await,
        payments_key(KEY_B)
    );
    let sent = updates_sent(&s.emulator).await;
    assert_eq!(sent.len(), expected);
    assert!(sent.values().all(|n| *n == 1), "{sent:?}");

    // The same request id returns the same request, and stores nothing new.
    let again = create(&s.app, "alice", request).await.expect("retry");
    assert_eq!(again.change_request.expect("request").change_request_id, id);
    assert_eq!(stored_requests(&s.app).await, 1);

    let rows = history(&s.app, history_of(&id)).await;
    assert_eq!(rows.len(), expected);
    for row in &rows {
        assert_eq!(row.from_kms_key_arn, payments_key(KEY_A));
        assert_eq!(row.to_kms_key_arn, payments_key(KEY_B));
        assert_eq!(row.requested_by, "alice");
        let seconds = |t: &Option<prost_types::Timestamp>| t.as_ref().map(|t| (t.seconds, t.nanos));
        assert!(
            seconds(&row.finish_time) >= seconds(&row.start_time),
            "{row:?}"
        );
    }
    let orders = history(
        &s.app,
        pb::ListKeyRotationHistoryRequest {
            account_id: PAYMENTS.into(),
            table_name: "orders".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(orders.len(), 1);

    // The history is append-only: the database itself refuses to change or remove rows.
    tablecrypt_tests::assert_append_only(
        &s.db.url,
        &[
            "UPDATE key_rotation_history SET requested_by = 'mallory'",
            "DELETE FROM key_rotation_history",
            "TRUNCATE key_rotation_history",
        ],
    )
    .await;

    // Roll back: every table returns to key A, recorded as a new request.
    let rollback = s
        .app
        .client
        .clone()
        .rollback_change_request(as_caller(
            "bob",
            pb::RollbackChangeRequestRequest {
                change_request_id: id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("rollback")
        .into_inner();
    let back = rollback.change_request.expect("request");
    assert_eq!(back.rollback_of, id);
    assert_eq!(rollback.summary.expect("summary").change as usize, expected);
    let done = wait_terminal(&s.app, &back.change_request_id).await;
    assert_eq!(done.state(), pb::ChangeRequestState::Succeeded, "{done:#?}");
    assert_eq!(
        live_key(&s.app, PAYMENTS, "orders").await,
        payments_key(KEY_A)
    );
    let rows = history(&s.app, history_of(&back.change_request_id)).await;
    assert_eq!(rows.len(), expected);
    assert!(
        rows.iter()
            .all(|r| r.to_kms_key_arn == payments_key(KEY_A) && r.requested_by == "bob")
    );
}

#[tokio::test]
async fn approval_takes_a_second_person() {
    let s = setup("approval_required = true").await;
    let created = create(
        &s.app,
        "alice",
        pb::CreateChangeRequestRequest {
            tables: tables(vec![table(PAYMENTS, EU, "plain")]),
            target: to_key("alias/b"),
            ..Default::default()
        },
    )
    .await
    .expect("create")
    .change_request
    .expect("request");
    assert_eq!(created.state(), pb::ChangeRequestState::PendingApproval);
    let id = created.change_request_id;
    // A control: another request, approved, runs to the end meanwhile, so the workers were at work and passed
    // the unapproved one over (not merely slow to start).
    let control = create(
        &s.app,
        "alice",
        pb::CreateChangeRequestRequest {
            tables: tables(vec![table(PAYMENTS, EU, "sessions")]),
            target: to_key("alias/b"),
            ..Default::default()
        },
    )
    .await
    .expect("control")
    .change_request
    .expect("request")
    .change_request_id;
    approve(&s.app, &control).await;
    let control_done = wait_terminal(&s.app, &control).await;
    assert_eq!(control_done.state(), pb::ChangeRequestState::Succeeded);
    let sent = updates_sent(&s.emulator).await;
    assert_eq!(
        sent.keys().collect::<Vec<_>>(),
        [&format!("{PAYMENTS}/sessions")],
        "nothing applied before approval"
    );
    assert_eq!(
        get(&s.app, &id).await.state(),
        pb::ChangeRequestState::PendingApproval
    );

    let mut client = s.app.client.clone();
    let err = client
        .approve_change_request(as_caller(
            "alice",
            pb::ApproveChangeRequestRequest {
                change_request_id: id.clone(),
            },
        ))
        .await
        .expect_err("the creator cannot approve");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let approved = client
        .approve_change_request(as_caller(
            "bob",
            pb::ApproveChangeRequestRequest {
                change_request_id: id.clone(),
            },
        ))
        .await
        .expect("approve")
        .into_inner();
    assert_eq!(approved.approved_by, "bob");
    let done = wait_terminal(&s.app, &id).await;
    assert_eq!(done.state(), pb::ChangeRequestState::Succeeded);
    let err = client
        .approve_change_request(as_caller(
            "carol",
            pb::ApproveChangeRequestRequest {
                change_request_id: id.clone(),
            },
        ))
        .await
        .expect_err("already approved");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let rows = history(&s.app, history_of(&id)).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].requested_by.as_str(), rows[0].approved_by.as_str()),
        ("alice", "bob")
    );
    assert_eq!(
        live_key(&s.app, PAYMENTS, "plain").await,
        payments_key(KEY_B)
    );
}

#[tokio::test]
async fn pause_stops_new_applies_resume_finishes_and_cancel_leaves_every_table_accounted_for() {
    let s = setup("").await;
    // Two updates a second (the request lowers the service's rate), so there is time to pause.
    let slow = Some(pb::ChangeOptions {
        max_updates_per_second: 2.0,
        ..Default::default()
    });
    let id = create(
        &s.app,
        "alice",
        pb::CreateChangeRequestRequest {
            selector: bulk_selector(),
            target: to_key("alias/b"),
            options: slow,
            ..Default::default()
        },
    )
    .await
    .expect("create")
    .change_request
    .expect("request")
    .change_request_id;
    wait_until(&s.app, &id, 30, |r| counts(r).succeeded >= 1).await;
    let mut client = s.app.client.clone();
    let paused = client
        .pause_change_request(as_caller(
            "alice",
            pb::PauseChangeRequestRequest {
                change_request_id: id.clone(),
                reason: "looking at dashboards".into(),
            },
        ))
        .await
        .expect("pause")
        .into_inner();
    assert_eq!(paused.state(), pb::ChangeRequestState::Paused);
    assert!(paused.pause_reason.contains("looking at dashboards"));
    // Items already sent finish; nothing new is sent.
    let settled = wait_until(&s.app, &id, 10, |r| {
        let c = counts(r);
        c.applying == 0 && c.waiting == 0
    })
    .await;
    let sent_while_paused = updates_sent(&s.emulator).await.len();
    // A control request runs to the end while this one is paused: the workers were at work and passed it over.
    let control = switch(&s.app, "plain", "alias/b")
        .await
        .change_request
        .expect("request")
        .change_request_id;
    let control_done = wait_terminal(&s.app, &control).await;
    assert_eq!(control_done.state(), pb::ChangeRequestState::Succeeded);
    let sent = updates_sent(&s.emulator).await;
    assert_eq!(
        sent.keys()
            .filter(|t| t.starts_with(&format!("{PAYMENTS}/bulk-")))
            .count(),
        sent_while_paused,
        "nothing of the paused request was sent"
    );
    let still = get(&s.app, &id).await;
    assert_eq!(counts(&still).succeeded, counts(&settled).succeeded);
    assert!(
        counts(&still).pending + counts(&still).deferred > 0,
        "{still:#?}"
    );
    assert_eq!(counts(&still).succeeded as usize, sent_while_paused);

    let err = client
        .pause_change_request(pb::PauseChangeRequestRequest {
            change_request_id: id.clone(),
            reason: String::new(),
        })
        .await
        .expect_err("already paused");
    assert_eq!(err.code(), Code::FailedPrecondition);
    client
        .resume_change_request(pb::ResumeChangeRequestRequest {
            change_request_id: id.clone(),
        })
        .await
        .expect("resume");
    let done = wait_terminal(&s.app, &id).await;
    assert_eq!(done.state(), pb::ChangeRequestState::Succeeded, "{done:#?}");
    assert_eq!(counts(&done).succeeded as usize, BULK);

    // Back to A, cancelled part way.
    let back = create(
        &s.app,
        "alice",
        pb::CreateChangeRequestRequest {
            selector: bulk_selector(),
            target: to_key("alias/a"),
            options: slow,
            ..Default::default()
        },
    )
    .await
    .expect("create")
    .change_request
    .expect("request")
    .change_request_id;
    wait_until(&s.app, &back, 30, |r| counts(r).succeeded >= 2).await;
    let cancelled = client
        .cancel_change_request(pb::CancelChangeRequestRequest {
            change_request_id: back.clone(),
        })
        .await
        .expect("cancel")
        .into_inner();
    assert!(matches!(
        cancelled.state(),
        pb::ChangeRequestState::Cancelling | pb::ChangeRequestState::Cancelled
    ));
    let done = wait_terminal(&s.app, &back).await;
    assert_eq!(done.state(), pb::ChangeRequestState::Cancelled);
    let c = counts(&done);
    assert_eq!((c.succeeded + c.cancelled) as usize, BULK, "{c:?}");
    assert!(c.cancelled > 0 && c.succeeded >= 2, "{c:?}");
    // Every table is where its item says, and the history has exactly the applied ones.
    for item in items(&s.app, &back).await {
        let key = live_key(&s.app, PAYMENTS, &item.table_name).await;
        match item.state() {
            pb::ChangeItemState::Succeeded => assert_eq!(key, payments_key(KEY_A)),
            pb::ChangeItemState::Cancelled => assert_eq!(key, payments_key(KEY_B)),
            other => panic!("{} ended {other:?}", item.table_name),
        }
    }
    assert_eq!(
        history(&s.app, history_of(&back)).await.len() as i32,
        c.succeeded
    );
    let err = client
        .cancel_change_request(pb::CancelChangeRequestRequest {
            change_request_id: back,
        })
        .await
        .expect_err("already over");
    assert_eq!(err.code(), Code::FailedPrecondition);
}

/// Deletes tables behind tablecrypt's back, so their items fail when applied.
async fn delete_tables(emulator: &RunningEmulator, names: &[String]) {
    let (dynamodb, _) =
        tablecrypt_tests::aws::member_clients(&emulator.endpoint(), PAYMENTS, ROLE, EU).await;
    for name in names {
        dynamodb
            .delete_table()
            .table_name(name)
            .send()
            .await
            .expect("delete table");
    }
}

async fn approve(app: &TestApp, id: &str) {
    app.client
        .clone()
        .approve_change_request(as_caller(
            "bob",
            pb::ApproveChangeRequestRequest {
                change_request_id: id.into(),
            },
        ))
        .await
        .expect("approve");
}

#[tokio::test]
async fn a_failed_canary_pauses_before_anything_else_is_applied() {
    // Approval holds the request while a canary's table is removed.
    let s = setup("approval_required = true").await;
    let id = create(
        &s.app,
        "alice",
        pb::CreateChangeRequestRequest {
            selector: bulk_selector(),
            target: to_key("alias/b"),
            options: Some(pb::ChangeOptions {
                canary_count: 2,
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await
    .expect("create")
    .change_request
    .expect("request")
    .change_request_id;
    let all = items(&s.app, &id).await;
    let canaries: Vec<&pb::ChangeItem> = all.iter().filter(|i| i.canary).collect();
    assert_eq!(canaries.len(), 2);
    delete_tables(&s.emulator, &[canaries[0].table_name.clone()]).await;
    approve(&s.app, &id).await;

    let paused = wait_until(&s.app, &id, 30, |r| {
        r.state() == pb::ChangeRequestState::Paused
    })
    .await;
    assert!(paused.pause_reason.contains("canary"), "{paused:#?}");
    let c = counts(&paused);
    assert_eq!(c.failed, 1, "{c:?}");
    assert!(
        c.pending >= (BULK - 2) as i32,
        "no other item was started: {c:?}"
    );
    // At most the healthy canary reached AWS (it may have been stopped by the pause before it was sent).
    let sent = updates_sent(&s.emulator).await;
    let healthy = format!("{PAYMENTS}/{}", canaries[1].table_name);
    assert!(
        sent.keys().all(|t| *t == healthy),
        "only canaries are applied: {sent:?}"
    );
    let failed = items(&s.app, &id)
        .await
        .into_iter()
        .find(|i| i.state() == pb::ChangeItemState::Failed)
        .expect("failed item");
    assert_eq!(failed.table_name, canaries[0].table_name);
    assert_eq!(failed.reason(), pb::ItemReason::TableNotFound);

    // Resuming accepts the canary's outcome and lets the rest run.
    s.app
        .client
        .clone()
        .resume_change_request(pb::ResumeChangeRequestRequest {
            change_request_id: id.clone(),
        })
        .await
        .expect("resume");
    let done = wait_terminal(&s.app, &id).await;
    assert_eq!(done.state(), pb::ChangeRequestState::PartiallyFailed);
    assert_eq!(counts(&done).succeeded as usize, BULK - 1);
}

#[tokio::test]
async fn failures_past_the_threshold_pause_the_request() {
    let s = setup("approval_required = true").await;
    let id = create(
        &s.app,
        "alice",
        pb::CreateChangeRequestRequest {
            selector: bulk_selector(),
            target: to_key("alias/b"),
            options: Some(pb::ChangeOptions {
                failure_threshold: 2,
                // One at a time, so the count at the pause is exact.
                max_in_flight: 1,
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await
    .expect("create")
    .change_request
    .expect("request")
    .change_request_id;
    let all = items(&s.app, &id).await;
    // The first three in plan order are gone when applied.
    let doomed: Vec<String> = all.iter().take(3).map(|i| i.table_name.clone()).collect();
    delete_tables(&s.emulator, &doomed).await;
    approve(&s.app, &id).await;
    let paused = wait_until(&s.app, &id, 30, |r| {
        r.state() == pb::ChangeRequestState::Paused
    })
    .await;
    assert!(paused.pause_reason.contains("threshold 2"), "{paused:#?}");
    // An item claimed in the moment between the second failure and the pause may still end (here: fail).
    let settled = wait_until(&s.app, &id, 10, |r| {
        let c = counts(r);
        c.applying == 0 && c.waiting == 0
    })
    .await;
    let failed = counts(&settled).failed;
    assert!((2..=3).contains(&failed), "{settled:#?}");
    // Cancelling a paused request cancels what was never sent.
    s.app
        .client
        .clone()
        .cancel_change_request(pb::CancelChangeRequestRequest {
            change_request_id: id.clone(),
        })
        .await
        .expect("cancel");
    let done = wait_terminal(&s.app, &id).await;
    assert_eq!(done.state(), pb::ChangeRequestState::Cancelled);
    // Every table is accounted for: failed (the doomed ones that were tried; one may have ended after the look
    // above) or cancelled, none changed.
    let end = counts(&done);
    assert!((failed..=3).contains(&end.failed), "{done:#?}");
    assert_eq!(end.cancelled, BULK as i32 - end.failed, "{done:#?}");
    assert!(updates_sent(&s.emulator).await.is_empty());
}

#[tokio::test]
async fn a_global_table_changes_every_replica_to_its_regions_key() {
    let s = setup("").await;
    let response = s
        .app
        .client
        .clone()
        .update_table_encryption(as_caller(
            "alice",
            pb::UpdateTableEncryptionRequest {
                table: Some(table(PAYMENTS, EU, "global")),
                target: to_key("alias/multi2"),
                ..Default::default()
            },
        ))
        .await
        .expect("update")
        .into_inner();
    let id = response.change_request.expect("request").change_request_id;
    let done = wait_terminal(&s.app, &id).await;
    assert_eq!(done.state(), pb::ChangeRequestState::Succeeded, "{done:#?}");
    // The replica region's inventory row is fresh without a scan: the old us-east-1 key is no longer in use.
    let usage = |key: String| {
        let mut client = s.app.client.clone();
        async move {
            client
                .get_key_usage(pb::GetKeyUsageRequest {
                    kms_key: key,
                    ..Default::default()
                })
                .await
                .expect("key usage")
                .into_inner()
        }
    };
    let old_us = usage(key_arn(PAYMENTS, US, KEY_M_US)).await;
    assert!(old_us.unused, "{old_us:#?}");
    // The global table is inventoried in both its regions and uses the key in one: it is one table, not two.
    let new_us = usage(key_arn(PAYMENTS, US, KEY_N_US)).await;
    let n_us = key_arn(PAYMENTS, US, KEY_N_US);
    assert_eq!(new_us.tables.len(), 1, "{new_us:#?}");
    let row = &new_us.tables[0];
    assert_eq!(row.table_name, "global");
    assert!(
        row.kms_key_arn == n_us
            || row
                .replicas
                .iter()
                .any(|r| r.region == US && r.kms_key_arn == n_us),
        "{new_us:#?}"
    );
    let live = s
        .app
        .client
        .clone()
        .get_table_encryption(pb::GetTableEncryptionRequest {
            account_id: PAYMENTS.into(),
            region: EU.into(),
            table_name: "global".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(live.kms_key_arn, payments_key(KEY_N_EU));
    let replica = live
        .replicas
        .iter()
        .find(|r| r.region == US)
        .expect("replica");
    assert_eq!(replica.kms_key_arn, key_arn(PAYMENTS, US, KEY_N_US));
    let item = &items(&s.app, &id).await[0];
    assert_eq!(item.replicas.len(), 1);
    assert_eq!(
        item.replicas[0].to_kms_key_arn,
        key_arn(PAYMENTS, US, KEY_N_US)
    );

    // Rolling back returns each replica to its own region's earlier key.
    let back = s
        .app
        .client
        .clone()
        .rollback_change_request(as_caller(
            "alice",
            pb::RollbackChangeRequestRequest {
                change_request_id: id,
                ..Default::default()
            },
        ))
        .await
        .expect("rollback")
        .into_inner()
        .change_request
        .expect("request")
        .change_request_id;
    let done = wait_terminal(&s.app, &back).await;
    assert_eq!(
        done.state(),
        pb::ChangeRequestState::Succeeded,
        "{:#?}",
        items(&s.app, &back).await
    );
    assert_eq!(counts(&done).succeeded, 1);
    let live = s
        .app
        .client
        .clone()
        .get_table_encryption(pb::GetTableEncryptionRequest {
            account_id: PAYMENTS.into(),
            region: EU.into(),
            table_name: "global".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(live.kms_key_arn, payments_key(KEY_M_EU));
    assert_eq!(
        live.replicas[0].kms_key_arn,
        key_arn(PAYMENTS, US, KEY_M_US)
    );
}

async fn switch(app: &TestApp, name: &str, key: &str) -> pb::CreateChangeRequestResponse {
    app.client
        .clone()
        .update_table_encryption(as_caller(
            "alice",
            pb::UpdateTableEncryptionRequest {
                table: Some(table(PAYMENTS, EU, name)),
                target: to_key(key),
                ..Default::default()
            },
        ))
        .await
        .expect("update")
        .into_inner()
}

#[tokio::test]
async fn the_switch_quota_blocks_planning_and_defers_applying_until_it_frees() {
    let s = setup("").await;
    // Four switches through tablecrypt use up the day's allowance; the fifth is blocked with the time it frees.
    for key in ["alias/b", "alias/a", "alias/b", "alias/a"] {
        let id = switch(&s.app, "orders", key)
            .await
            .change_request
            .expect("request")
            .change_request_id;
        let done = wait_terminal(&s.app, &id).await;
        assert_eq!(done.state(), pb::ChangeRequestState::Succeeded);
    }
    let preview = s
        .app
        .client
        .clone()
        .update_table_encryption(as_caller(
            "alice",
            pb::UpdateTableEncryptionRequest {
                table: Some(table(PAYMENTS, EU, "orders")),
                target: to_key("alias/b"),
                validate_only: true,
                ..Default::default()
            },
        ))
        .await
        .expect("preview")
        .into_inner();
    assert!(
        preview.items[0].next_attempt_time.is_some(),
        "{:?}",
        preview.items[0]
    );
    let fifth = switch(&s.app, "orders", "alias/b").await;
    // When the quota frees survives storage.
    assert_same_items(
        &preview.items,
        &items(
            &s.app,
            &fifth
                .change_request
                .clone()
                .expect("request")
                .change_request_id,
        )
        .await,
    );
    let item = &items(
        &s.app,
        &fifth.change_request.expect("request").change_request_id,
    )
    .await[0];
    assert_eq!(item.state(), pb::ChangeItemState::Blocked);
    assert_eq!(item.reason(), pb::ItemReason::SwitchQuotaExhausted);
    assert!(item.message.contains("until"), "{item:?}");

    // Switches made outside tablecrypt: AWS refuses the UpdateTable; the item waits for the quota instead of
    // failing, and finishes once the quota frees (the emulator's clock and ours both moved on).
    let (dynamodb, _) =
        tablecrypt_tests::aws::member_clients(&s.emulator.endpoint(), PAYMENTS, ROLE, EU).await;
    for key in [KEY_B, KEY_A, KEY_B, KEY_A] {
        dynamodb
            .update_table()
            .table_name("plain")
            .sse_specification(
                aws_sdk_dynamodb::types::SseSpecification::builder()
                    .enabled(true)
                    .sse_type(aws_sdk_dynamodb::types::SseType::Kms)
                    .kms_master_key_id(payments_key(key))
                    .build(),
            )
            .send()
            .await
            .expect("switch behind tablecrypt's back");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let id = switch(&s.app, "plain", "alias/b")
        .await
        .change_request
        .expect("request")
        .change_request_id;
    wait_until(&s.app, &id, 30, |r| counts(r).deferred == 1).await;
    let item = &items(&s.app, &id).await[0];
    assert_eq!(
        item.reason(),
        pb::ItemReason::SwitchQuotaExhausted,
        "{item:?}"
    );
    let wait = item.next_attempt_time.expect("next attempt").seconds - chrono_now();
    assert!(
        wait > 5 * 3600,
        "deferred for the quiet period, not retried at once: {wait} s"
    );
    s.emulator
        .admin("POST", "/clock/advance", r#"{"seconds": 90000}"#)
        .await
        .expect("advance");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&s.db.url)
        .await
        .expect("db");
    sqlx::raw_sql(sqlx::AssertSqlSafe(
        "UPDATE change_items SET next_attempt_time = now() WHERE state = 'DEFERRED'",
    ))
    .execute(&mut conn)
    .await
    .expect("our clock moves on too");
    let done = wait_terminal(&s.app, &id).await;
    assert_eq!(
        done.state(),
        pb::ChangeRequestState::Succeeded,
        "{:#?}",
        items(&s.app, &id).await
    );
    assert_eq!(
        live_key(&s.app, PAYMENTS, "plain").await,
        payments_key(KEY_B)
    );
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[tokio::test]
async fn api_and_worker_roles_split_the_work() {
    let s = setup("role = 'api'").await;
    let id = switch(&s.app, "plain", "alias/b")
        .await
        .change_request
        .expect("request")
        .change_request_id;
    // Long enough for many claims at FAST's 50 ms claim interval; the worker below shows how soon a process
    // with workers starts the same request.
    let api_only_for = Duration::from_secs(3);
    tokio::time::sleep(api_only_for).await;
    assert_eq!(
        get(&s.app, &id).await.state(),
        pb::ChangeRequestState::Queued,
        "an API-only server applies nothing"
    );
    let worker_spawned = std::time::Instant::now();
    let worker = TestApp::spawn_with(
        &s.db,
        &format!(
            "aws_endpoint_url = '{}'\n{FAST}\nrole = 'worker'",
            s.emulator.endpoint()
        ),
    )
    .await
    .expect("worker");
    let err = worker
        .client
        .clone()
        .get_change_request(pb::GetChangeRequestRequest {
            change_request_id: id.clone(),
        })
        .await
        .expect_err("a worker serves no API");
    assert_eq!(err.code(), Code::Unimplemented);
    let started = wait_until(&s.app, &id, 30, |r| r.start_time.is_some()).await;
    // The silence above meant something: a process with workers started the request well within that time.
    assert!(
        worker_spawned.elapsed() < api_only_for,
        "the worker took {:?} to start the request: the API-only wait proved nothing",
        worker_spawned.elapsed()
    );
    assert!(started.start_time.is_some());
    let done = wait_terminal(&s.app, &id).await;
    assert_eq!(done.state(), pb::ChangeRequestState::Succeeded);
    worker.stop().await.expect("worker stops");
}

/// One caller holds at most 16 watches at once (each open watch polls the database); one more is
/// RESOURCE_EXHAUSTED, another caller is not affected, and a watch the client closes gives its slot back.
#[tokio::test]
async fn a_caller_holds_a_bounded_number_of_watches() {
    let s = setup("").await;
    let id = migrate_bulk(&s.app).await;
    let watch = |caller: &'static str| {
        let mut client = s.app.client.clone();
        let request = pb::WatchChangeRequestRequest {
            change_request_id: id.clone(),
        };
        async move {
            client
                .watch_change_request(as_caller(caller, request))
                .await
        }
    };
    let mut open = Vec::new();
    for _ in 0..16 {
        open.push(watch("alice").await.expect("within the cap").into_inner());
    }
    let refused = watch("alice").await.expect_err("one watch too many");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    let _bob = watch("bob")
        .await
        .expect("another caller has slots of its own");
    drop(open.pop());
    let mut again = None;
    for _ in 0..100 {
        if let Ok(watch) = watch("alice").await {
            again = Some(watch);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "a closed watch never gave its slot back");
}

/// A watch on a request that waits for approval ends, with OK, after `watch_max_duration`: it polled for ever
/// (found by a security review: streams on pending requests never ended).
#[tokio::test]
async fn a_watch_on_a_pending_request_ends_after_its_longest_duration() {
    let s = setup("approval_required = true\nwatch_max_duration = '1s'").await;
    let id = s
        .app
        .client
        .clone()
        .create_change_request(pb::CreateChangeRequestRequest {
            selector: bulk_selector(),
            target: to_key("alias/b"),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .change_request
        .expect("request")
        .change_request_id;
    let mut stream = s
        .app
        .client
        .clone()
        .watch_change_request(pb::WatchChangeRequestRequest {
            change_request_id: id.clone(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = stream.next().await.expect("a snapshot").expect("ok");
    assert_eq!(
        first.change_request.expect("request").state(),
        pb::ChangeRequestState::PendingApproval
    );
    // The stream ends on its own, well before the test's patience runs out; no error.
    let rest = tokio::time::timeout(Duration::from_secs(30), async {
        let mut updates = 0;
        while let Some(update) = stream.next().await {
            update.expect("no error at the end");
            updates += 1;
        }
        updates
    })
    .await
    .expect("the stream ended");
    assert_eq!(rest, 0, "nothing changed while pending");
    assert_eq!(
        get(&s.app, &id).await.state(),
        pb::ChangeRequestState::PendingApproval
    );
}

/// Transactions committed in the test's database so far (PostgreSQL's own count, flushed by each backend about
/// once a second while it works).
async fn commits(db: &tablecrypt_tests::TestDatabase) -> i64 {
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let commits: i64 = sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&pool)
    .await
    .expect("pg_stat_database");
    pool.close().await;
    commits
}

/// Many watches of one request share one poll: 48 open watches (three callers' worth) cost the database about
/// what one does, judged by PostgreSQL's count of committed transactions (each watch polled on its own before:
/// about 30 commits a second each at a 100 ms interval, 1,000 streams drove ~5,900 commits/s in the security
/// review). Every watch still sees the request end.
#[tokio::test]
async fn watches_of_one_request_share_one_poll() {
    let s = setup("approval_required = true\nwatch_interval = '100ms'").await;
    let id = s
        .app
        .client
        .clone()
        .create_change_request(pb::CreateChangeRequestRequest {
            selector: bulk_selector(),
            target: to_key("alias/b"),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .change_request
        .expect("request")
        .change_request_id;
    let window = Duration::from_secs(5);
    let idle_start = commits(&s.db).await;
    tokio::time::sleep(window).await;
    let idle = commits(&s.db).await - idle_start;

    let mut streams = Vec::new();
    for caller in ["alice", "bob", "carol"] {
        for _ in 0..16 {
            let mut stream = s
                .app
                .client
                .clone()
                .watch_change_request(as_caller(
                    caller,
                    pb::WatchChangeRequestRequest {
                        change_request_id: id.clone(),
                    },
                ))
                .await
                .expect("watch")
                .into_inner();
            stream.next().await.expect("a snapshot").expect("ok");
            streams.push(stream);
        }
    }
    let watched_start = commits(&s.db).await;
    tokio::time::sleep(window).await;
    let watched = commits(&s.db).await - watched_start;
    // One watch polling alone is ~150 commits in the window; 48 of them ~7,200.
    assert!(
        watched - idle < 1_000,
        "48 watches added {} commits in {window:?} ({idle} without them)",
        watched - idle
    );

    s.app
        .client
        .clone()
        .cancel_change_request(pb::CancelChangeRequestRequest {
            change_request_id: id.clone(),
        })
        .await
        .expect("cancel");
    for (n, mut stream) in streams.into_iter().enumerate() {
        let last = tokio::time::timeout(Duration::from_secs(30), async {
            let mut last = None;
            while let Some(update) = stream.next().await {
                last = update.expect("no error").change_request;
            }
            last
        })
        .await
        .unwrap_or_else(|_| panic!("watch {n} never ended"))
        .unwrap_or_else(|| panic!("watch {n} saw no update"));
        assert_eq!(last.state(), pb::ChangeRequestState::Cancelled, "watch {n}");
    }
}

/// Planning describes live only a bounded number of tables the inventory lacks: a list of 501 names nobody
/// inventoried is refused before any DescribeTable (each was described live before, 2,000 names in one call in
/// the security review), with what to do instead; 500 are described, at the scans' DescribeTable rate.
#[tokio::test]
async fn planning_describes_a_bounded_number_of_uninventoried_tables() {
    let s = setup("").await;
    async fn describes(emulator: &RunningEmulator) -> usize {
        request_log(
            emulator,
            &format!("operation=DescribeTable&account_id={PAYMENTS}"),
        )
        .await
        .len()
    }
    let before = describes(&s.emulator).await;
    let made_up = |n: usize| {
        tables(
            (0..n)
                .map(|i| table(PAYMENTS, EU, &format!("never-inventoried-{i}")))
                .collect(),
        )
    };
    let err = s
        .app
        .client
        .clone()
        .create_change_request(pb::CreateChangeRequestRequest {
            tables: made_up(501),
            target: to_key("alias/b"),
            validate_only: true,
            ..Default::default()
        })
        .await
        .expect_err("too many live reads");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("501") && err.message().contains("RefreshInventory"),
        "{err:?}"
    );
    assert_eq!(
        describes(&s.emulator).await,
        before,
        "described before refusing"
    );

    let plan = s
        .app
        .client
        .clone()
        .create_change_request(pb::CreateChangeRequestRequest {
            tables: made_up(500),
            target: to_key("alias/b"),
            validate_only: true,
            ..Default::default()
        })
        .await
        .expect("500 are described")
        .into_inner();
    assert_eq!(plan.items.len(), 500);
    assert_eq!(describes(&s.emulator).await, before + 500);
}
