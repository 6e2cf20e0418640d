//! One span per gRPC call, continuing the caller's trace when it sends W3C trace context (`traceparent`,
//! `tracestate` metadata), so a CLI's `tablecrypt migrate` and the server's work on it are one trace.

use std::collections::HashSet;
use std::sync::Arc;

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::metrics::served_method;

/// Health checks get no span.
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// Makes the span of each call (tonic's `trace_fn`).
#[derive(Clone)]
pub struct RpcSpans {
    /// Only these name a span: the path is the caller's to choose, and a span per made-up path would let anyone
    /// fill the trace backend.
    served: Arc<HashSet<(String, String)>>,
}

impl RpcSpans {
    /// Names spans by the same served methods as the metrics (`GrpcMetrics::served`).
    pub fn new(served: Arc<HashSet<(String, String)>>) -> Self {
        Self { served }
    }

    pub fn span<B>(&self, request: &http::Request<B>) -> tracing::Span {
        let (service, method, known) = served_method(&self.served, request.uri().path());
        // Probes every few seconds would bury the calls that matter.
        if service == HEALTH_SERVICE {
            return tracing::Span::none();
        }
        let span = tracing::info_span!(
            "rpc",
            otel.name = %format!("{service}/{method}"),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
        );
        // A call without trace context starts its own trace (an invalid parent is ignored). A call to a path this
        // server does not serve never picks its trace (or forces sampling): its span is a root.
        if known {
            let parent = TraceContextPropagator::new().extract(&Metadata(request.headers()));
            let _ = span.set_parent(parent);
        }
        span
    }
}

struct Metadata<'a>(&'a http::HeaderMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}
