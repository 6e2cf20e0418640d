//! Traces over OTLP, as a collector receives them: the real server binary exports to a small OTLP receiver (a
//! tonic TraceService here), the real CLI creates a migration inside a trace of its own (`TRACEPARENT`), and the
//! server continues that trace for the call, while each item of the request is a trace of its own linked back to
//! the creation.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use fleet_emulator::{Emulator, FleetSpec};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use tablecrypt_tests::changes::*;
use tablecrypt_tests::process::{ServerProcess, emulator_env, free_addr, register_and_scan};
use tablecrypt_tests::{TestDatabase, cli};

#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("spans");
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn start_collector() -> (Collector, String) {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    (collector, endpoint)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

#[tokio::test]
async fn a_migration_is_one_trace_from_the_cli_and_each_item_a_trace_linked_to_it() {
    let (collector, endpoint) = start_collector().await;
    let db = TestDatabase::create().await.expect("db");
    let emulator = Emulator::spawn(FleetSpec::from_yaml(&fleet()).expect("fleet"))
        .await
        .expect("emulator");
    let mut env = emulator_env(&db.url, emulator.endpoint());
    env.extend([
        // The standard variable: what a collector sidecar's injection sets.
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("TABLECRYPT_UPDATE_RATE", "50".into()),
        ("TABLECRYPT_WORKER_CLAIM_INTERVAL", "50ms".into()),
        ("TABLECRYPT_WORKER_POLL_INITIAL", "100ms".into()),
        ("TABLECRYPT_WORKER_POLL_MAX", "200ms".into()),
    ]);
    let mut server = ServerProcess::start(free_addr(), &env).await;
    register_and_scan(&mut server.client().await, &[PAYMENTS]).await;

    // The CLI's run is a trace the caller started (as otel-cli or a CI system would).
    let (trace_id, cli_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let mut migrate = cli::command(
        &format!("http://{}", server.addr),
        &[
            "migrate",
            "--account",
            PAYMENTS,
            "--prefix",
            "bulk-",
            "--to-key",
            "alias/b",
            "--yes",
            "-o",
            "json",
            "--caller",
            "alice",
        ],
    );
    migrate.env("TRACEPARENT", format!("00-{trace_id}-{cli_span}-01"));
    let done = cli::finish(migrate).await.expect_code(0);
    let request_id = done.json()["changeRequest"]["changeRequestId"]
        .as_str()
        .expect("id")
        .to_owned();
    // SIGTERM: the server flushes its spans before it exits.
    let status = server.terminate().await;
    assert!(status.success(), "{status}");

    let spans = collector.spans.lock().expect("spans").clone();
    let create = spans
        .iter()
        .find(|s| s.name == "tablecrypt.v1.TableEncryption/CreateChangeRequest")
        .unwrap_or_else(|| {
            panic!(
                "no CreateChangeRequest span among {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(
        hex(&create.trace_id),
        trace_id,
        "the call did not continue the CLI's trace"
    );
    assert_eq!(hex(&create.parent_span_id), cli_span);
    assert_eq!(attribute(create, "rpc.system").as_deref(), Some("grpc"));
    // Every span of the CLI's trace is the server's handling of a call of that run (or inside one).
    let in_trace: HashSet<String> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == trace_id)
        .map(|s| hex(&s.span_id))
        .collect();

    let items: Vec<&Span> = spans.iter().filter(|s| s.name == "change_item").collect();
    assert_eq!(items.len(), BULK, "one span per item");
    let traces: HashSet<String> = items.iter().map(|s| hex(&s.trace_id)).collect();
    assert_eq!(traces.len(), BULK, "each item is a trace of its own");
    assert!(
        !traces.contains(trace_id),
        "an item inside the creation's trace"
    );
    for item in &items {
        assert!(item.parent_span_id.is_empty(), "an item span has a parent");
        assert_eq!(
            attribute(item, "change_request").as_deref(),
            Some(request_id.as_str())
        );
        assert_eq!(attribute(item, "account_id").as_deref(), Some(PAYMENTS));
        assert!(
            attribute(item, "table").is_some_and(|t| t.starts_with("bulk-")),
            "{item:?}"
        );
        let [link] = item.links.as_slice() else {
            panic!("an item span has {} links, not one", item.links.len());
        };
        assert_eq!(hex(&link.trace_id), trace_id, "linked elsewhere");
        assert!(
            in_trace.contains(&hex(&link.span_id)),
            "linked to a span the creation's trace does not have"
        );
    }
}

/// OTLP over HTTP/protobuf (`OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`, port 4318 in a collector): the same spans
/// arrive at `/v1/traces`. The SDK exports from its own thread, outside the server's runtime.
#[tokio::test]
async fn spans_also_travel_over_otlp_http() {
    use prost::Message as _;
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let received = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let received = received.clone();
            async move {
                let request =
                    ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
                let mut spans = received.lock().expect("spans");
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        spans.extend(scope.spans);
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let db = TestDatabase::create().await.expect("db");
    let emulator = Emulator::spawn(FleetSpec::from_yaml(&fleet()).expect("fleet"))
        .await
        .expect("emulator");
    let mut env = emulator_env(&db.url, emulator.endpoint());
    env.extend([
        ("TABLECRYPT_OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        (
            "TABLECRYPT_OTEL_EXPORTER_OTLP_PROTOCOL",
            "http/protobuf".into(),
        ),
    ]);
    let mut server = ServerProcess::start(free_addr(), &env).await;
    register_and_scan(&mut server.client().await, &[PAYMENTS]).await;
    let status = server.terminate().await;
    assert!(status.success(), "{status}");
    let names: Vec<String> = spans
        .lock()
        .expect("spans")
        .iter()
        .map(|s| s.name.clone())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n == "tablecrypt.v1.TableEncryption/RegisterAccount"),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.starts_with("grpc.health")),
        "health checks traced: {names:?}"
    );
}
