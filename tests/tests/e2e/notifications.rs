//! Notifications reach webhooks and SNS topics: a request waiting for approval, paused by an operator, and succeeded is told to
//! the sinks whose events and account selector match, in tablecrypt's JSON or a Slack body, retried when the
//! endpoint fails, given up (and audited) when it never answers. Judged from what a real HTTP receiver got and
//! from the audit log in the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use tablecrypt_proto::v1 as pb;
use tablecrypt_tests::changes::*;

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    event_id: String,
    body: serde_json::Value,
}

#[derive(Default)]
struct Receiver {
    got: Mutex<Vec<Received>>,
    /// POSTs per path, refused or not: the first to each path is answered 500.
    tries: Mutex<HashMap<String, usize>>,
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let first = {
        let mut tries = receiver.tries.lock().expect("tries");
        let n = tries.entry(path.clone()).or_default();
        *n += 1;
        *n == 1
    };
    if first {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    receiver.got.lock().expect("got").push(Received {
        path,
        event_id: headers
            .get("x-tablecrypt-event-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: serde_json::from_slice(&body).expect("a JSON body"),
    });
    StatusCode::NO_CONTENT
}

async fn start_receiver() -> (Arc<Receiver>, String) {
    let receiver = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/{path}", axum::routing::post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (receiver, base)
}

fn got(receiver: &Receiver, path: &str) -> Vec<Received> {
    receiver
        .got
        .lock()
        .expect("got")
        .iter()
        .filter(|r| r.path == path)
        .cloned()
        .collect()
}

async fn audit_rows(url: &str) -> Vec<(String, String, String)> {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .expect("db");
    sqlx::query_as(
        "SELECT method, outcome, message FROM audit_log WHERE caller = 'tablecrypt:notifier'
         ORDER BY event_id",
    )
    .fetch_all(&mut conn)
    .await
    .expect("audit rows")
}

#[tokio::test]
async fn a_request_is_told_to_the_sinks_that_want_it_retried_and_audited() {
    let (receiver, base) = start_receiver().await;
    let s = setup(&format!(
        "approval_required = true
update_rate = 2.0
notification_retry_initial = '100ms'
notification_retry_max = '200ms'
notification_max_attempts = 3

[[notifications]]
name = 'everything'
url = '{base}/all'

[[notifications]]
name = 'payments-chat'
url = '{base}/chat'
format = 'slack'
events = ['paused']
selector = 'team=payments'

[[notifications]]
name = 'search-team'
url = '{base}/search'
selector = 'team=search'

[[notifications]]
name = 'down'
url = 'http://127.0.0.1:1/nobody-listens'
events = ['approval_needed']

[[notifications]]
name = 'ops-topic'
sns_topic_arn = 'arn:aws:sns:us-east-1:000000000000:tablecrypt-requests'
events = ['approval_needed', 'succeeded']"
    ))
    .await;
    let created = create(
        &s.app,
        "alice",
        pb::CreateChangeRequestRequest {
            selector: bulk_selector(),
            target: to_key("alias/b"),
            description: "rotate payments to key B".into(),
            ..Default::default()
        },
    )
    .await
    .expect("create")
    .change_request
    .expect("request");
    let id = created.change_request_id;
    let mut client = s.app.client.clone();
    client
        .approve_change_request(as_caller(
            "bob",
            pb::ApproveChangeRequestRequest {
                change_request_id: id.clone(),
            },
        ))
        .await
        .expect("approve");
    wait_until(&s.app, &id, 30, |r| counts(r).succeeded >= 1).await;
    client
        .pause_change_request(as_caller(
            "alice",
            pb::PauseChangeRequestRequest {
                change_request_id: id.clone(),
                reason: "looking at dashboards".into(),
            },
        ))
        .await
        .expect("pause");
    // The pause is heard before the request goes on.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while got(&receiver, "chat").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no pause heard");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
        .resume_change_request(as_caller(
            "alice",
            pb::ResumeChangeRequestRequest {
                change_request_id: id.clone(),
            },
        ))
        .await
        .expect("resume");
    let done = wait_terminal(&s.app, &id).await;
    assert_eq!(done.state(), pb::ChangeRequestState::Succeeded);

    // Every event, once each (the first POST was refused and retried), in order.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while got(&receiver, "all").len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:#?}",
            got(&receiver, "all")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let all = got(&receiver, "all");
    let events: Vec<&str> = all
        .iter()
        .map(|r| r.body["event"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        events,
        ["approval_needed", "paused", "succeeded"],
        "{all:#?}"
    );
    let mut ids: Vec<&str> = all.iter().map(|r| r.event_id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{all:#?}");
    let paused = &all[1].body;
    assert_eq!(paused["change_request_id"], id.as_str());
    assert_eq!(paused["state"], "PAUSED");
    assert!(
        paused["reason"]
            .as_str()
            .is_some_and(|r| r.contains("looking at dashboards") && r.contains("alice")),
        "{paused}"
    );
    assert_eq!(paused["description"], "rotate payments to key B");
    assert_eq!(paused["accounts"], serde_json::json!([PAYMENTS]));
    assert_eq!(all[2].body["items"]["succeeded"], BULK as i64);
    for r in &all {
        let text = r.body.to_string();
        assert!(
            !text.contains("arn:aws:iam") && !text.contains("external"),
            "a role or external id in a notification: {text}"
        );
    }

    // The Slack sink heard only the pause, as a sentence saying what to do.
    let chat = got(&receiver, "chat");
    assert_eq!(chat.len(), 1, "{chat:#?}");
    let text = chat[0].body["text"].as_str().expect("a Slack text");
    assert!(
        text.contains("paused") && text.contains(&format!("tablecrypt resume {id}")),
        "{text}"
    );
    // The search team's sink hears nothing of a payments request.
    assert!(got(&receiver, "search").is_empty());
    assert_eq!(
        *receiver
            .tries
            .lock()
            .expect("tries")
            .get("search")
            .unwrap_or(&0),
        0
    );

    // The SNS topic (the hub's own account, published with the hub's credentials) got the approval and the
    // success, as the emulator's subscribers would: a subject saying what happened, tablecrypt's JSON.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let published = loop {
        let (status, body) = s
            .emulator
            .admin("GET", "/sns/messages", "")
            .await
            .expect("emulator admin");
        assert_eq!(status, 200, "{body}");
        let messages: serde_json::Value = serde_json::from_str(&body).expect("json");
        let messages = messages["messages"].as_array().cloned().unwrap_or_default();
        if messages.len() >= 2 || tokio::time::Instant::now() > deadline {
            break messages;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let subjects: Vec<&str> = published
        .iter()
        .map(|m| m["subject"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        subjects,
        [
            format!("tablecrypt: change request {id} approval needed"),
            format!("tablecrypt: change request {id} succeeded")
        ],
        "{published:#?}"
    );
    for m in &published {
        assert_eq!(
            m["topic_arn"],
            "arn:aws:sns:us-east-1:000000000000:tablecrypt-requests"
        );
        let body: serde_json::Value =
            serde_json::from_str(m["message"].as_str().expect("message")).expect("JSON message");
        assert_eq!(body["change_request_id"], id.as_str());
    }

    // Deliveries are audited: three delivered to `everything` (after 2 attempts for the first), one to the
    // chat, two to the topic, and the endpoint nobody listens on given up after 3 attempts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let rows = audit_rows(&s.db.url).await;
        let count = |method: &str, outcome: &str| {
            rows.iter()
                .filter(|(m, o, _)| m == method && o == outcome)
                .count()
        };
        if count("notify/everything", "OK") == 3
            && count("notify/payments-chat", "OK") == 1
            && count("notify/down", "UNAVAILABLE") == 1
            && count("notify/ops-topic", "OK") == 2
        {
            assert!(
                rows.iter()
                    .any(|(m, _, msg)| m == "notify/down" && msg.contains("after 3 attempts")),
                "{rows:#?}"
            );
            assert!(
                !rows.iter().any(|(_, _, msg)| msg.contains("127.0.0.1:1")),
                "a sink's URL in the audit log: {rows:#?}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{rows:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
