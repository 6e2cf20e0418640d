//! The server around the API: health, reflection, metrics, shutdown.

use tablecrypt_proto::v1 as pb;
use tablecrypt_tests::{TestApp, TestDatabase, scrape_metrics};
use tokio_stream::StreamExt as _;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn health_is_serving_then_not_serving_during_shutdown() {
    let db = TestDatabase::create().await.expect("db");
    let app = TestApp::spawn(&db).await.expect("server");
    let mut health = HealthClient::new(app.channel.clone());
    for service in ["", "tablecrypt.v1.TableEncryption"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("check")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }

    let mut watch = health
        .watch(HealthCheckRequest {
            service: "tablecrypt.v1.TableEncryption".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("first").expect("ok");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    app.begin_shutdown();
    let next = watch.next().await.expect("an update").expect("ok");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(watch);
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_every_service() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient as V1;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest as V1Request;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse as V1Response;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as V1Alpha;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResponse;

    let db = TestDatabase::create().await.expect("db");
    let app = TestApp::spawn(&db).await.expect("server");
    let expected = [
        "tablecrypt.v1.TableEncryption",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ];

    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(V1Request::ListServices(String::new())),
    };
    let mut responses = V1::new(app.channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1")
        .into_inner();
    let Some(V1Response::ListServicesResponse(list)) = responses
        .next()
        .await
        .expect("a response")
        .expect("ok")
        .message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for name in expected {
        assert!(
            names.iter().any(|n| n == name),
            "v1 lists {name}: {names:?}"
        );
    }

    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(AlphaRequest::ListServices(String::new())),
    };
    let mut responses = V1Alpha::new(app.channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1alpha")
        .into_inner();
    let Some(AlphaResponse::ListServicesResponse(list)) = responses
        .next()
        .await
        .expect("a response")
        .expect("ok")
        .message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.iter().any(|n| n == "tablecrypt.v1.TableEncryption"),
        "v1alpha: {names:?}"
    );
    assert!(
        names.iter().any(|n| n == "grpc.health.v1.Health"),
        "v1alpha: {names:?}"
    );
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn metrics_count_calls_by_method_and_code() {
    let db = TestDatabase::create().await.expect("db");
    let app = TestApp::spawn(&db).await.expect("server");
    let mut client = app.client.clone();
    client
        .get_account(pb::GetAccountRequest {
            account_id: "bad".into(),
        })
        .await
        .expect_err("invalid");
    client
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .expect("list");

    let text = scrape_metrics(app.metrics_addr).await.expect("scrape");
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    let counted = |method: &str, code: &str| {
        text.lines().any(|l| {
            l.starts_with("grpc_server_handled_total{")
                && l.contains(&format!("grpc_method=\"{method}\""))
                && l.contains(&format!("grpc_code=\"{code}\""))
                && l.contains("grpc_service=\"tablecrypt.v1.TableEncryption\"")
                && l.ends_with(" 1")
        })
    };
    assert!(counted("GetAccount", "InvalidArgument"), "{text}");
    assert!(counted("ListAccounts", "Ok"), "{text}");
    assert!(
        text.contains("grpc_server_handling_seconds_bucket{"),
        "{text}"
    );
    app.stop().await.expect("stop");
}

/// A unary call to any path of `app`'s gRPC listener, served or not.
async fn call_path<
    Req: prost::Message + Send + Sync + 'static,
    Res: prost::Message + Default + Send + Sync + 'static,
>(
    app: &TestApp,
    path: &str,
    request: tonic::Request<Req>,
) -> Result<tonic::Response<Res>, tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    grpc.unary(
        request,
        http::uri::PathAndQuery::try_from(path.to_owned()).expect("path"),
        tonic_prost::ProstCodec::default(),
    )
    .await
}

/// Calls to paths the server does not serve, unauthenticated and of the caller's choosing, all count under one
/// `unknown` label: 300 made-up paths used to become 300 series (10,000 made /metrics 381 MB).
#[tokio::test]
async fn made_up_paths_do_not_grow_the_metrics() {
    let db = TestDatabase::create().await.expect("db");
    let app = TestApp::spawn(&db).await.expect("server");
    for i in 0..300 {
        let path = if i % 2 == 0 {
            format!("/made.up{i}.Service/Method{i}")
        } else {
            format!("/tablecrypt.v1.TableEncryption/NoSuchMethod{i}")
        };
        let _ = call_path::<_, pb::ListAccountsResponse>(
            &app,
            &path,
            tonic::Request::new(pb::ListAccountsRequest::default()),
        )
        .await;
    }
    let text = scrape_metrics(app.metrics_addr).await.expect("scrape");
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("grpc_server_handled_total{"))
        .collect();
    assert!(
        series.len() <= 3,
        "{} series after 300 made-up paths: {series:#?}",
        series.len()
    );
    assert!(
        series.iter().any(
            |l| l.contains("grpc_service=\"unknown\"") && l.contains("grpc_method=\"unknown\"")
        ),
        "{series:#?}"
    );
    assert!(!text.contains("NoSuchMethod") && !text.contains("made.up"));
    app.stop().await.expect("stop");
}

/// A call to a made-up service whose last path segment is a real method is never audited as that method.
#[tokio::test]
async fn a_made_up_service_is_not_audited_as_a_real_method() {
    let db = TestDatabase::create().await.expect("db");
    let app = TestApp::spawn(&db).await.expect("server");
    let mut request = tonic::Request::new(pb::DeregisterAccountRequest {
        account_id: "111111111111".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-tablecrypt-caller", "mallory".parse().expect("header"));
    let status = call_path::<_, pb::DeregisterAccountResponse>(
        &app,
        "/fake.Service/DeregisterAccount",
        request,
    )
    .await
    .expect_err("no such service");
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    let events = app
        .client
        .clone()
        .list_audit_events(pb::ListAuditEventsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("audit log")
        .into_inner()
        .events;
    assert!(
        !events.iter().any(|e| e.method == "DeregisterAccount"),
        "{events:#?}"
    );
    app.stop().await.expect("stop");
}

/// The audit log's method filter takes a method of the API by its name or any method by its full path, and a
/// name that is no method of the API is refused, naming the field, instead of matching nothing.
#[tokio::test]
async fn the_audit_method_filter_takes_a_name_or_a_path_and_refuses_a_typo() {
    let db = TestDatabase::create().await.expect("db");
    let app = TestApp::spawn(&db).await.expect("server");
    let _ = app
        .client
        .clone()
        .deregister_account(pb::DeregisterAccountRequest {
            account_id: "111111111111".into(),
            ..Default::default()
        })
        .await;
    let list = |method: &str| {
        let mut client = app.client.clone();
        let method = method.to_owned();
        async move {
            client
                .list_audit_events(pb::ListAuditEventsRequest {
                    page_size: 100,
                    method,
                    ..Default::default()
                })
                .await
                .map(|r| {
                    r.into_inner()
                        .events
                        .into_iter()
                        .map(|e| e.method)
                        .collect::<Vec<_>>()
                })
        }
    };
    let mut by_name = Vec::new();
    for _ in 0..50 {
        by_name = list("DeregisterAccount").await.expect("by name");
        if !by_name.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(by_name, vec!["DeregisterAccount".to_owned()]);
    let path = "/tablecrypt.v1.TableEncryption/DeregisterAccount";
    assert_eq!(list(path).await.expect("by path"), by_name);
    let typo = list("DeregisterAcount").await.expect_err("a typo");
    assert_eq!(typo.code(), tonic::Code::InvalidArgument, "{typo:?}");
    assert_eq!(
        tablecrypt_tests::changes::field_violations(&typo),
        vec!["method".to_owned()]
    );
    app.stop().await.expect("stop");
}

/// The real binary refuses a bad setting at start: it exits non-zero, names the key, and listens nowhere.
#[tokio::test]
async fn bad_configuration_fails_at_start_with_the_key_named() {
    let addr = tablecrypt_tests::process::free_addr();
    let output = tokio::process::Command::new(tablecrypt_tests::process::server_binary())
        .arg("serve")
        .env("TABLECRYPT_INSECURE", "true")
        .env("TABLECRYPT_METRICS_ADDR", "off")
        .env("TABLECRYPT_LISTEN_ADDR", addr.to_string())
        .env("TABLECRYPT_WORKER_LEASE", "soon")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .await
        .expect("run tablecrypt-server");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Exit 2 for a bad configuration, one line, no backtrace or empty "Caused by:".
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        !stderr.contains("backtrace") && !stderr.contains("Caused by"),
        "{stderr}"
    );
    // Named as the variable was spelt (figment upper-cases keys that came from the environment).
    assert!(
        stderr.to_ascii_lowercase().contains("worker_lease"),
        "{stderr}"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "nothing listens"
    );
}

/// The CLI's variables (`TABLECRYPT_SERVER`, `TABLECRYPT_CALLER`, ...), which the README tells users to export, do
/// not stop a server started from the same shell.
#[tokio::test]
async fn the_server_starts_beside_the_clis_environment() {
    use tablecrypt_tests::process::{ServerProcess, free_addr};

    let db = TestDatabase::create().await.expect("db");
    let server = ServerProcess::start(
        free_addr(),
        &[
            ("DATABASE_URL", db.url.clone()),
            ("TABLECRYPT_SERVER", "http://127.0.0.1:50051".into()),
            ("TABLECRYPT_CALLER", "alice".into()),
            ("TABLECRYPT_TLS_DOMAIN", "tablecrypt.internal".into()),
            ("TABLECRYPT_OUTPUT", "json".into()),
        ],
    )
    .await;
    server
        .client()
        .await
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .expect("the server answers");
}

/// The plaintext health listener (`health_addr`) for Kubernetes gRPC probes answers health, and nothing else.
#[tokio::test]
async fn the_health_listener_serves_health_and_nothing_else() {
    use tablecrypt_tests::process::{ServerProcess, free_addr};

    let db = TestDatabase::create().await.expect("db");
    let health_addr = free_addr();
    let server = ServerProcess::start(
        free_addr(),
        &[
            ("DATABASE_URL", db.url.clone()),
            ("TABLECRYPT_HEALTH_ADDR", health_addr.to_string()),
        ],
    )
    .await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{health_addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("the health listener accepts plaintext gRPC");
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "tablecrypt.v1.TableEncryption"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("check")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
    let api = pb::table_encryption_client::TableEncryptionClient::new(channel)
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .expect_err("the API is not on the health listener");
    assert_eq!(api.code(), tonic::Code::Unimplemented, "{api:?}");
    drop(server);
}

/// A flood of refused calls is audited as a few rows that count every call: 600 unauthenticated calls and 300 to
/// made-up paths were 900 rows (one per call; ~1,040 rows/s from one client in the security review). The first
/// refusal of each kind (client address, method, outcome) is written at once and its repeats as one row per
/// `audit_repeat_interval`; the counts add up to every call. Past `unauthenticated_rate_limit` a client address
/// gets RESOURCE_EXHAUSTED instead.
#[tokio::test]
async fn a_flood_of_refusals_is_a_few_audit_rows_that_count_every_call() {
    let db = TestDatabase::create().await.expect("db");
    let toml = format!(
        "insecure = true\naudit_repeat_interval = '1s'\nunauthenticated_rate_limit = 20\n{}",
        tablecrypt_tests::security::tokens_and_grants(&[("auditor", "admin", "")])
    );
    let app = TestApp::spawn_with(&db, &toml).await.expect("server");
    let mut codes: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    let flood = std::time::Instant::now();
    for i in 0..900 {
        let refused = if i < 600 {
            app.client
                .clone()
                .list_accounts(pb::ListAccountsRequest::default())
                .await
                .map(drop)
        } else {
            call_path::<_, pb::ListAccountsResponse>(
                &app,
                &format!("/made.up{i}.Service/Method{i}"),
                tonic::Request::new(pb::ListAccountsRequest::default()),
            )
            .await
            .map(drop)
        }
        .expect_err("no credentials");
        *codes.entry(format!("{:?}", refused.code())).or_default() += 1;
    }
    assert_eq!(
        codes.keys().cloned().collect::<Vec<_>>(),
        vec!["ResourceExhausted".to_owned(), "Unauthenticated".to_owned()],
        "{codes:?}"
    );
    let intervals = flood.elapsed().as_secs() as usize + 2;
    // An interval (and a margin) for the last repeats to be written.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let events = app
        .client
        .clone()
        .list_audit_events(tablecrypt_tests::security::as_token(
            "auditor",
            pb::ListAuditEventsRequest {
                page_size: 1000,
                caller: "unauthenticated".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("audit log")
        .into_inner()
        .events;
    let calls: i32 = events.iter().map(|e| e.call_count).sum();
    assert_eq!(calls, 900, "every refused call is counted: {events:#?}");
    // Four kinds (two methods, two outcomes): each a first row and at most a repeats row per interval the flood
    // spanned (900 rows before).
    assert!(
        events.len() <= 8 * intervals,
        "{} audit rows for 900 refused calls over {intervals} intervals: {events:#?}",
        events.len()
    );
    assert!(events.iter().all(|e| e.peer == "127.0.0.1"), "{events:#?}");
    assert!(
        events
            .iter()
            .filter(|e| e.call_count > 1)
            .all(|e| e.first_time.is_some()),
        "{events:#?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e.method.contains("made.up") && e.call_count > 1),
        "repeats to made-up paths are one kind, not a row per path: {events:#?}"
    );
    app.stop().await.expect("stop");
}
