//! The tower layer in front of every gRPC service except health: authenticates the caller (UNAUTHENTICATED
//! otherwise), applies the per-caller call rate (RESOURCE_EXHAUSTED), hands the [`Caller`] to the handlers in the
//! request's extensions, and writes the audit log: every mutating call whatever its outcome, and every refused
//! call of any method.

use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tablecrypt_core::Caller;
use tablecrypt_proto::code_name;
use tablecrypt_store::{AuditRepository, NewAuditEvent};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::authenticator::Authenticator;
use super::repeats::RefusalLog;

/// Health checks stay open (probes carry no credentials).
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// The path prefix of tablecrypt's own service.
const API_PREFIX: &str = "/tablecrypt.v1.TableEncryption/";

/// The methods that change something; each call is audited whatever its outcome.
pub const MUTATING_METHODS: &[&str] = &[
    "RegisterAccount",
    "UpdateAccount",
    "DeregisterAccount",
    "DiscoverAccounts",
    "RefreshInventory",
    "CreateChangeRequest",
    "ApproveChangeRequest",
    "CancelChangeRequest",
    "PauseChangeRequest",
    "ResumeChangeRequest",
    "UpdateTableEncryption",
    "RollbackChangeRequest",
];

/// The method of a call's path as the audit log records it (and ListAuditEvents filters it): TableEncryption's
/// own methods by name, any other path whole, so a made-up "/fake.Service/DeregisterAccount" is never recorded as
/// a DeregisterAccount.
pub fn audited_method(path: &str) -> &str {
    match path.strip_prefix(API_PREFIX) {
        Some(name) if !name.contains('/') => name,
        _ => path,
    }
}

/// Outcomes that mean "refused": audited for every method.
const REFUSALS: &[&str] = &["UNAUTHENTICATED", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED"];

/// What a handler says the call was about, for the audit log ("account 123456789012"). Handlers set it through
/// [`note_target`]; it never holds a secret.
#[derive(Debug, Clone, Default)]
pub struct AuditTarget(Arc<Mutex<String>>);

/// Records what `request` is about in its audit event.
pub fn note_target<T>(request: &tonic::Request<T>, target: impl Into<String>) {
    if let Some(slot) = request.extensions().get::<AuditTarget>()
        && let Ok(mut text) = slot.0.lock()
    {
        *text = target.into();
    }
}

/// Builds [`AuthService`]s; cheap to clone.
#[derive(Clone)]
pub struct AuthLayer {
    shared: Arc<Shared>,
}

struct Shared {
    authenticator: Authenticator,
    audit: AuditRepository,
    /// Calls per second per caller identity; None: unlimited.
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    /// Calls per second per peer address that authenticate as nobody; None: unlimited.
    peer_limiter: Option<DefaultKeyedRateLimiter<String>>,
    /// This interval's refusals: the first of each kind written at once, repeats as one row at its end.
    refusals: RefusalLog,
}

/// How the layer limits and audits; from the server's configuration.
#[derive(Debug, Clone)]
pub struct AuthLimits {
    /// Calls per second per caller identity, with a burst of the same size.
    pub calls_per_second: Option<NonZeroU32>,
    /// Calls per second per peer address that fail to authenticate, with a burst of the same size.
    pub unauthenticated_per_second: Option<NonZeroU32>,
    /// How long repeats of a refusal are counted before they are written as one audit row.
    pub audit_repeat_interval: Duration,
}

impl AuthLayer {
    /// The layer, and its task (on `tasks`) writing each interval's repeated refusals until `shutdown`; the
    /// server calls [`AuthLayer::flush`] once the last call is done.
    pub fn new(
        authenticator: Authenticator,
        audit: AuditRepository,
        limits: &AuthLimits,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let keyed = |n: Option<NonZeroU32>| n.map(|n| RateLimiter::keyed(Quota::per_second(n)));
        let shared = Arc::new(Shared {
            authenticator,
            audit,
            limiter: keyed(limits.calls_per_second),
            peer_limiter: keyed(limits.unauthenticated_per_second),
            refusals: RefusalLog::default(),
        });
        let interval = limits.audit_repeat_interval;
        let writer = shared.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = shutdown.cancelled() => return,
                };
                writer.flush().await;
            }
        });
        Self { shared }
    }

    /// Writes the repeats counted so far (at shutdown, after the last call, so none is lost).
    pub async fn flush(&self) {
        self.shared.flush().await;
    }
}

/// How many caller identities the limiter remembers before it forgets those whose allowance is full again (JWT
/// subjects are not bounded by configuration, so the map must not grow for ever). Above it every call scans the
/// map until the quiet callers are gone, which takes a second; only 10,000 callers busy at once would keep it
/// scanning.
const LIMITER_PRUNE_ABOVE: usize = 10_000;

/// Whether `identity` may make another call now; prunes identities that have been quiet long enough to be back at
/// a full allowance once the limiter remembers more than [`LIMITER_PRUNE_ABOVE`].
fn admit(limiter: &DefaultKeyedRateLimiter<String>, identity: &str) -> bool {
    let allowed = limiter.check_key(&identity.to_owned()).is_ok();
    if limiter.len() > LIMITER_PRUNE_ABOVE {
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
    allowed
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// What the listener knows of a connection's client, as it hands it to every call: the address, and over mutual
/// TLS the certificates the client presented and TLS verified (leaf first).
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    pub remote_addr: Option<std::net::SocketAddr>,
    pub certificates: Option<Arc<Vec<tonic::transport::CertificateDer<'static>>>>,
}

/// The client's address as the per-address limit and the audit log count it: an IPv4 address, or an IPv6 /64
/// (no port: a client opens as many ports as it likes; and one IPv6 host holds a whole /64 to rotate through).
fn peer_address<B>(request: &http::Request<B>) -> Option<String> {
    let extensions = request.extensions();
    let addr = match extensions.get::<PeerInfo>() {
        Some(peer) => peer.remote_addr,
        None => extensions
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .map(TlsConnectInfo::get_ref)
            .or_else(|| extensions.get::<TcpConnectInfo>())?
            .remote_addr(),
    };
    addr.map(|addr| client_network(addr.ip()))
}

fn client_network(ip: std::net::IpAddr) -> String {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            let prefix = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{prefix}/64")
        }
    }
}

/// The certificates the client presented and TLS verified (leaf first), when the connection is mutual TLS.
fn client_certificates<B>(
    request: &http::Request<B>,
) -> Option<Arc<Vec<tonic::transport::CertificateDer<'static>>>> {
    let extensions = request.extensions();
    match extensions.get::<PeerInfo>() {
        Some(peer) => peer.certificates.clone(),
        None => extensions
            .get::<TlsConnectInfo<TcpConnectInfo>>()?
            .peer_certs(),
    }
}

impl Shared {
    /// Audits a call: at once, unless it is a repeat of a refusal this interval (then counted, see
    /// [`RefusalLog`]).
    async fn audit(&self, call: &Call, caller: Option<&Caller>, target: String, status: &Status) {
        let outcome = code_name(status.code());
        let event = NewAuditEvent {
            caller: caller.map_or_else(|| "unauthenticated".to_owned(), |c| c.identity.clone()),
            authenticated_by: caller.map_or("none", |c| c.authenticated_by).to_owned(),
            method: call.method.clone(),
            target,
            outcome: outcome.to_owned(),
            message: status.message().to_owned(),
            peer: caller.is_none().then(|| call.peer.clone()).flatten(),
            call_count: 1,
            first_time: None,
        };
        let event = if REFUSALS.contains(&outcome) {
            match self.refusals.note(event, call.known) {
                Some(first) => first,
                None => return,
            }
        } else {
            event
        };
        self.write(&event).await;
    }

    async fn flush(&self) {
        for event in self.refusals.drain() {
            self.write(&event).await;
        }
    }

    async fn write(&self, event: &NewAuditEvent) {
        if let Err(error) = self.audit.record(event).await {
            tracing::error!(
                %error,
                method = event.method,
                outcome = event.outcome,
                calls = event.call_count,
                "could not write the audit event"
            );
        }
    }
}

/// What the audit log records of a call before it is handled.
struct Call {
    method: String,
    /// The method is one of TableEncryption's (not a path the caller made up).
    known: bool,
    peer: Option<String>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for AuthService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        // The ready service handles this call; a fresh clone waits for the next (tower's clone-and-swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path().to_owned();
        if path.starts_with(HEALTH_PREFIX) {
            return Box::pin(inner.call(request));
        }
        let shared = self.shared.clone();
        let method = audited_method(&path).to_owned();
        let mutating = MUTATING_METHODS.contains(&method.as_str());
        let call = Call {
            known: tablecrypt_proto::api_methods().contains(&method),
            method,
            peer: peer_address(&request),
        };
        Box::pin(async move {
            let method = &call.method;
            let certificates = client_certificates(&request);
            let leaf = certificates
                .as_deref()
                .and_then(|certs| certs.first())
                .map(|c| c.as_ref());
            let caller = match shared.authenticator.authenticate(request.headers(), leaf) {
                Ok(caller) => caller,
                Err(error) => {
                    tracing::info!(method, %error, "unauthenticated call refused");
                    let peer = call.peer.as_deref().unwrap_or("unknown");
                    let status = match &shared.peer_limiter {
                        Some(limiter) if !admit(limiter, peer) => {
                            Status::resource_exhausted(format!(
                                "too many unauthenticated calls from {peer}: slow down and retry"
                            ))
                        }
                        _ => Status::unauthenticated(error.to_string()),
                    };
                    shared.audit(&call, None, String::new(), &status).await;
                    return Ok(status.into_http());
                }
            };
            if let Some(limiter) = &shared.limiter
                && !admit(limiter, &caller.identity)
            {
                let status = Status::resource_exhausted(format!(
                    "too many calls from {}: slow down and retry",
                    caller.identity
                ));
                shared
                    .audit(&call, Some(&caller), String::new(), &status)
                    .await;
                return Ok(status.into_http());
            }
            let target = AuditTarget::default();
            request.extensions_mut().insert(caller.clone());
            request.extensions_mut().insert(target.clone());
            let response = inner.call(request).await?;
            // Unary errors are "trailers-only": grpc-status is in the headers. Its absence means OK.
            let status =
                Status::from_header_map(response.headers()).unwrap_or_else(|| Status::ok(""));
            if mutating || REFUSALS.contains(&code_name(status.code())) {
                let target = target.0.lock().map(|t| t.clone()).unwrap_or_default();
                shared.audit(&call, Some(&caller), target, &status).await;
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_its_64() {
        let a: std::net::IpAddr = "2001:db8:1:2::7".parse().expect("ip");
        let b: std::net::IpAddr = "2001:db8:1:2:ffff::1".parse().expect("ip");
        assert_eq!(client_network(a), "2001:db8:1:2::/64");
        assert_eq!(client_network(a), client_network(b));
        let v4: std::net::IpAddr = "::ffff:10.0.0.7".parse().expect("ip");
        assert_eq!(client_network(v4), "10.0.0.7");
    }

    #[test]
    fn the_limiter_forgets_quiet_callers_once_it_remembers_many() {
        let limiter = RateLimiter::keyed(Quota::per_second(NonZeroU32::new(50).expect("non-zero")));
        for i in 0..LIMITER_PRUNE_ABOVE {
            assert!(admit(&limiter, &format!("caller-{i}")));
        }
        assert_eq!(limiter.len(), LIMITER_PRUNE_ABOVE);
        // A full allowance of 50 at 50/s is back after a second: then every one of them is forgettable.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert!(admit(&limiter, "one-more"));
        assert!(limiter.len() <= 1, "{} remembered", limiter.len());
        // Still a limiter: a burst above the allowance is refused.
        let refused = (0..60).filter(|_| !admit(&limiter, "busy")).count();
        assert!(refused >= 9, "{refused} of 60 refused");
    }
}
