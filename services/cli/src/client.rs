//! The connection to the server: TLS and credentials from the global flags, a deadline on each call, and a
//! polite back-off when the server's per-caller rate limit answers RESOURCE_EXHAUSTED.

use std::future::Future;
use std::time::Duration;

use tablecrypt_proto::v1::table_encryption_client::TableEncryptionClient;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Response, Status};

use crate::args::GlobalArgs;
use crate::error::{CliError, Result, error_chain};

/// The generated client behind the credentials interceptor.
pub type Api = TableEncryptionClient<InterceptedService<Channel, Credentials>>;

/// Adds the bearer token (or, for development servers, the caller name) to every call, and the W3C trace context
/// of the run when `TRACEPARENT` is in the environment (as otel-cli and CI tracing set it), so a server that
/// exports traces puts the run's calls (a migration's creation among them) in the caller's trace. Without it the
/// CLI sends none: a parent span nobody exports would be a hole in every trace.
#[derive(Clone)]
pub struct Credentials {
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
    caller: Option<MetadataValue<tonic::metadata::Ascii>>,
    traceparent: Option<MetadataValue<tonic::metadata::Ascii>>,
}

/// The trace context of this run: `TRACEPARENT` when it is a valid version-00 value.
fn traceparent() -> Option<MetadataValue<tonic::metadata::Ascii>> {
    let from_env = std::env::var("TRACEPARENT").ok().filter(|v| {
        let parts: Vec<&str> = v.split('-').collect();
        parts.len() == 4
            && parts[0] == "00"
            && [32, 16, 2]
                .iter()
                .zip(&parts[1..])
                .all(|(len, p)| p.len() == *len && p.bytes().all(|b| b.is_ascii_hexdigit()))
            && parts[1].bytes().any(|b| b != b'0')
            && parts[2].bytes().any(|b| b != b'0')
    });
    from_env.and_then(|value| MetadataValue::try_from(value).ok())
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        if let Some(value) = &self.caller {
            request
                .metadata_mut()
                .insert("x-tablecrypt-caller", value.clone());
        }
        if let Some(value) = &self.traceparent {
            request.metadata_mut().insert("traceparent", value.clone());
        }
        Ok(request)
    }
}

/// How many times a call refused with RESOURCE_EXHAUSTED is tried again, and the first wait.
const RATE_LIMIT_RETRIES: u32 = 8;
const RATE_LIMIT_BACKOFF: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct Client {
    api: Api,
    /// For the health service (no credentials needed).
    channel: Channel,
    timeout: Duration,
}

/// The server's URL from `--server`: a URL as given (http:// or https://), or grpcurl's `host:port`, which means
/// plain HTTP on this machine and TLS anywhere else (or wherever a TLS flag is given).
pub fn server_url(given: &str, tls_flags: bool) -> std::result::Result<String, String> {
    if let Some((scheme, _)) = given.split_once("://") {
        return match scheme {
            "http" | "https" => Ok(given.to_owned()),
            other => Err(format!(
                "--server {given:?}: the scheme must be http or https, not {other}; write \
                 https://HOST:PORT (or http://127.0.0.1:PORT for a local server), or just HOST:PORT"
            )),
        };
    }
    let host = match given.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => host,
        _ => {
            return Err(format!(
                "--server {given:?}: write HOST:PORT (as grpcurl takes it) or a URL such as https://HOST:PORT"
            ));
        }
    };
    let scheme = if tablecrypt_core::loopback::is_loopback_host(host) && !tls_flags {
        "http"
    } else {
        "https"
    };
    Ok(format!("{scheme}://{given}"))
}

impl Client {
    /// Connects now, so an unreachable server is reported before any work starts.
    pub async fn connect(global: &GlobalArgs) -> Result<Self> {
        let usage = |what: &str, e: &dyn std::fmt::Display| CliError::Usage(format!("{what}: {e}"));
        let tls_flags = global.ca_cert.is_some() || global.cert.is_some();
        let server = server_url(&global.server, tls_flags).map_err(CliError::Usage)?;
        let mut endpoint = Endpoint::from_shared(server.clone())
            .map_err(|e| usage(&format!("--server {:?}", global.server), &e))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let wants_tls = server.starts_with("https://") || tls_flags;
        if wants_tls {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(path) = &global.ca_cert {
                let pem = std::fs::read(path)
                    .map_err(|e| usage(&format!("--ca-cert {}", path.display()), &e))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let (Some(cert), Some(key)) = (&global.cert, &global.key) {
                let cert_pem = std::fs::read(cert)
                    .map_err(|e| usage(&format!("--cert {}", cert.display()), &e))?;
                let key_pem = std::fs::read(key)
                    .map_err(|e| usage(&format!("--key {}", key.display()), &e))?;
                tls = tls.identity(Identity::from_pem(cert_pem, key_pem));
            }
            if let Some(domain) = &global.tls_domain {
                tls = tls.domain_name(domain.clone());
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| usage("TLS configuration", &e))?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            CliError::Access(format!(
                "cannot reach the tablecrypt server at {}: {}",
                server,
                error_chain(&e)
            ))
        })?;
        let header = |name: &str, value: String| {
            MetadataValue::try_from(value)
                .map_err(|_| CliError::Usage(format!("{name} must be printable ASCII")))
        };
        let credentials = Credentials {
            authorization: global
                .token
                .as_ref()
                .map(|t| header("--token", format!("Bearer {t}")))
                .transpose()?,
            caller: global
                .caller
                .as_ref()
                .map(|c| header("--caller", c.clone()))
                .transpose()?,
            traceparent: traceparent(),
        };
        Ok(Self {
            api: TableEncryptionClient::with_interceptor(channel.clone(), credentials),
            channel,
            timeout: global.timeout,
        })
    }

    /// The server's version, from the header every answer carries (asked of the health service, which needs no
    /// credentials); `None` from a server too old to send it.
    pub async fn server_version(&self) -> Result<Option<String>> {
        let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel.clone());
        let mut request = Request::new(tonic_health::pb::HealthCheckRequest::default());
        request.set_timeout(self.timeout);
        let response = health.check(request).await?;
        Ok(response
            .metadata()
            .get(tablecrypt_proto::SERVER_VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned))
    }

    /// A client for streams: no deadline.
    pub fn streaming(&self) -> Api {
        self.api.clone()
    }

    /// One unary call with the deadline, tried again with back-off while the server says RESOURCE_EXHAUSTED
    /// (its per-caller rate limit refuses before doing anything, so trying again is safe).
    pub async fn call<T, R, F, Fut>(&self, message: T, f: F) -> Result<R>
    where
        T: Clone,
        F: Fn(Api, Request<T>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let mut wait = RATE_LIMIT_BACKOFF;
        for attempt in 0.. {
            let mut request = Request::new(message.clone());
            request.set_timeout(self.timeout);
            match f(self.api.clone(), request).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status)
                    if status.code() == Code::ResourceExhausted && attempt < RATE_LIMIT_RETRIES =>
                {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(status) => return Err(status.into()),
            }
        }
        unreachable!("the loop returns")
    }
}

#[cfg(test)]
mod server_url_tests {
    use super::server_url;

    #[test]
    fn host_and_port_means_http_on_this_machine_and_tls_elsewhere() {
        assert_eq!(
            server_url("127.0.0.1:50051", false).as_deref(),
            Ok("http://127.0.0.1:50051")
        );
        assert_eq!(
            server_url("localhost:50051", false).as_deref(),
            Ok("http://localhost:50051")
        );
        assert_eq!(
            server_url("[::1]:50051", false).as_deref(),
            Ok("http://[::1]:50051")
        );
        assert_eq!(
            server_url("tablecrypt.internal:443", false).as_deref(),
            Ok("https://tablecrypt.internal:443")
        );
        assert_eq!(
            server_url("127.0.0.1:50051", true).as_deref(),
            Ok("https://127.0.0.1:50051")
        );
        assert_eq!(
            server_url("https://tablecrypt.internal", false).as_deref(),
            Ok("https://tablecrypt.internal")
        );
        for bad in ["grpc://x:1", "tablecrypt.internal", "x:notaport", ":50051"] {
            let message = server_url(bad, false).expect_err(bad);
            assert!(message.contains("HOST:PORT"), "{bad}: {message}");
        }
    }
}
