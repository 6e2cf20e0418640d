//! Prometheus metrics: a tower layer that counts and times every gRPC call by method and status code, and the
//! `/metrics` HTTP endpoint that serves them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use http_body::{Body, Frame};
use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Latency buckets in seconds: from a cached read (~1 ms) to a slow fan-out (~10 s).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The label of every call to a path this server does not serve: the path is the caller's to choose (before
/// authentication, too), so it never becomes a label of its own, and the number of series stays bounded.
const UNKNOWN: &str = "unknown";

/// The gRPC methods this server serves, as (service, method): tablecrypt's own from its descriptor set, and the
/// standard health and reflection services.
fn served_methods() -> std::collections::HashSet<(String, String)> {
    let mut methods: std::collections::HashSet<(String, String)> = [
        ("grpc.health.v1.Health", "Check"),
        ("grpc.health.v1.Health", "Watch"),
        (
            "grpc.reflection.v1.ServerReflection",
            "ServerReflectionInfo",
        ),
        (
            "grpc.reflection.v1alpha.ServerReflection",
            "ServerReflectionInfo",
        ),
    ]
    .into_iter()
    .map(|(s, m)| (s.to_owned(), m.to_owned()))
    .collect();
    if let Ok(set) = <prost_types::FileDescriptorSet as prost::Message>::decode(
        tablecrypt_proto::FILE_DESCRIPTOR_SET,
    ) {
        for file in set.file {
            for service in &file.service {
                let full = format!("{}.{}", file.package(), service.name());
                for method in &service.method {
                    methods.insert((full.clone(), method.name().to_owned()));
                }
            }
        }
    }
    methods
}

/// The (service, method) of a gRPC path ("/package.Service/Method"), and whether this server serves it; a path it
/// does not serve is (`unknown`, `unknown`), so what a caller makes up never becomes a label or a span name.
pub(crate) fn served_method<'a>(
    served: &std::collections::HashSet<(String, String)>,
    path: &'a str,
) -> (&'a str, &'a str, bool) {
    let path = path.trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    if served.contains(&(service.to_owned(), method.to_owned())) {
        (service, method, true)
    } else {
        (UNKNOWN, UNKNOWN, false)
    }
}

/// The gRPC server metrics, named as go-grpc-prometheus names them so existing dashboards work.
#[derive(Clone)]
pub struct GrpcMetrics {
    handled: IntCounterVec,
    handling_seconds: HistogramVec,
    /// Only these get their own labels.
    served: std::sync::Arc<std::collections::HashSet<(String, String)>>,
}

impl GrpcMetrics {
    /// The methods that get labels of their own: also what names a call's span (`trace_context`).
    pub(crate) fn served(&self) -> std::sync::Arc<std::collections::HashSet<(String, String)>> {
        self.served.clone()
    }

    /// Registers the metrics in `registry` (one registry per server, so tests can run several servers).
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let labels = &["grpc_service", "grpc_method", "grpc_code"];
        let handled = IntCounterVec::new(
            Opts::new(
                "grpc_server_handled_total",
                "gRPC calls completed, by method and status code.",
            ),
            labels,
        )?;
        let handling_seconds = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "gRPC call latency until the status is sent.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            labels,
        )?;
        registry.register(Box::new(handled.clone()))?;
        registry.register(Box::new(handling_seconds.clone()))?;
        Ok(Self {
            handled,
            handling_seconds,
            served: std::sync::Arc::new(served_methods()),
        })
    }
}

/// Records one call exactly once: when its status is known, or as CANCELLED if the response is dropped first.
struct CallObserver {
    metrics: GrpcMetrics,
    service: String,
    method: String,
    start: Instant,
    recorded: bool,
}

impl CallObserver {
    fn record(&mut self, status: Option<&http::HeaderValue>) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        let code = status
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map(tonic::Code::from_i32)
            .unwrap_or(tonic::Code::Unknown);
        let code = format!("{code:?}");
        let labels = [self.service.as_str(), self.method.as_str(), code.as_str()];
        self.handled.with_label_values(&labels).inc();
        self.handling_seconds
            .with_label_values(&labels)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

impl std::ops::Deref for CallObserver {
    type Target = GrpcMetrics;
    fn deref(&self) -> &GrpcMetrics {
        &self.metrics
    }
}

impl Drop for CallObserver {
    fn drop(&mut self) {
        if !self.recorded {
            let cancelled = http::HeaderValue::from(tonic::Code::Cancelled as i32);
            self.record(Some(&cancelled));
        }
    }
}

/// Adds [`GrpcMetrics`] to every call of the wrapped service.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: GrpcMetrics,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: GrpcMetrics) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: GrpcMetrics,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let (service, method, _) = served_method(&self.metrics.served, request.uri().path());
        let mut observer = CallObserver {
            metrics: self.metrics.clone(),
            service: service.to_owned(),
            method: method.to_owned(),
            start: Instant::now(),
            recorded: false,
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            // A "trailers-only" response (most errors) carries grpc-status in its headers.
            if let Some(status) = response.headers().get("grpc-status") {
                observer.record(Some(status));
            }
            Ok(response.map(|inner| MeteredBody { inner, observer }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the call when its trailers (with grpc-status) go out.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        observer: CallObserver,
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
        {
            this.observer.record(trailers.get("grpc-status"));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `GET /metrics` in the Prometheus text format until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render))
        .with_state(registry);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn render(State(registry): State<Registry>) -> Result<String, (http::StatusCode, String)> {
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buffer)
        .map_err(|e| (http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    String::from_utf8(buffer).map_err(|e| (http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}
