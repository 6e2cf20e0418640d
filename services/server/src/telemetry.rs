//! Logging and tracing setup for the binary: logs to stderr, and traces over OTLP when an endpoint is configured
//! (`otel_exporter_otlp_endpoint`, or the standard `OTEL_EXPORTER_OTLP_ENDPOINT`).

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{Config, LogFormat, OtlpProtocol};

/// The service name spans carry unless `OTEL_SERVICE_NAME` says otherwise.
const SERVICE_NAME: &str = "tablecrypt-server";

/// Where traces go, resolved from the configuration and the standard variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpTarget {
    pub endpoint: String,
    pub protocol: OtlpProtocol,
}

impl OtlpTarget {
    /// The configured endpoint, else `OTEL_EXPORTER_OTLP_ENDPOINT`; the protocol likewise with
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc` or `http/protobuf`). None: tracing is off.
    pub fn resolve(config: &Config) -> anyhow::Result<Option<Self>> {
        let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let Some(endpoint) = config
            .otel_exporter_otlp_endpoint
            .clone()
            .or_else(|| from_env("OTEL_EXPORTER_OTLP_ENDPOINT"))
        else {
            return Ok(None);
        };
        let protocol = match (
            config.otel_exporter_otlp_protocol,
            from_env("OTEL_EXPORTER_OTLP_PROTOCOL"),
        ) {
            (Some(protocol), _) => protocol,
            (None, Some(name)) => OtlpProtocol::parse(&name).with_context(|| {
                format!("OTEL_EXPORTER_OTLP_PROTOCOL {name:?} is not grpc or http/protobuf")
            })?,
            (None, None) => OtlpProtocol::Grpc,
        };
        anyhow::ensure!(
            endpoint.starts_with("http://") || endpoint.starts_with("https://"),
            "invalid configuration: otel_exporter_otlp_endpoint must be an http:// or https:// URL"
        );
        Ok(Some(Self { endpoint, protocol }))
    }
}

/// What must outlive the server for its traces to leave: flushes and stops the exporter when dropped.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered (at most the exporter's timeout) and stops exporting.
    pub fn shutdown(mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "flushing traces at shutdown failed");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber: logs, and traces when an OTLP endpoint is configured. `RUST_LOG`, when set,
/// overrides the configured filter. Incoming W3C trace context is read per call (see `crate::trace_context`).
pub fn init(config: &Config) -> anyhow::Result<Telemetry> {
    let filter = || -> anyhow::Result<EnvFilter> {
        Ok(match std::env::var("RUST_LOG") {
            Ok(env) if !env.is_empty() => EnvFilter::try_new(env)?,
            _ => EnvFilter::try_new(&config.log_filter)?,
        })
    };
    let target = OtlpTarget::resolve(config)?;
    let provider = target.as_ref().map(tracer_provider).transpose()?;
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("tablecrypt"))
            // Only our spans: the SDK's and the database driver's internals would drown a trace.
            .with_filter(EnvFilter::new("info,h2=off,hyper=off,tower=off,sqlx=warn"))
    });
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match config.log_format {
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter(filter()?)
            .boxed(),
        LogFormat::Pretty => logs.compact().with_filter(filter()?).boxed(),
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(otel)
        .try_init()
        .map_err(|e| anyhow::anyhow!("failed to install the log subscriber: {e}"))?;
    if let Some(target) = &target {
        tracing::info!(endpoint = %target.endpoint, protocol = target.protocol.as_str(), "exporting traces over OTLP");
    }
    Ok(Telemetry { provider })
}

fn tracer_provider(target: &OtlpTarget) -> anyhow::Result<SdkTracerProvider> {
    let exporter = match target.protocol {
        OtlpProtocol::Grpc => {
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&target.endpoint);
            if target.endpoint.starts_with("https://") {
                builder = builder
                    .with_tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots());
            }
            builder.build()
        }
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!(
                "{}/v1/traces",
                target.endpoint.trim_end_matches('/')
            ))
            .build(),
    }
    .context("failed to build the OTLP trace exporter")?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(
            std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| SERVICE_NAME.to_owned()),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
