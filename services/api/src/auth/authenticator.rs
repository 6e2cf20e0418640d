//! Who is calling: a static bearer token (stored as a SHA-256 hash), a JWT checked against a configured issuer,
//! audience and key set, or a client certificate (its URI SAN, else its CN). The identity is prefixed by the kind
//! of credential (`tablecrypt_core::identity`) and given the grants configured for that prefixed form.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest as _, Sha256};
use tablecrypt_core::{Caller, Grant, LabelSelector, Role, identity};

/// The identity recorded for a development server's callers that do not name themselves.
pub const ANONYMOUS: &str = "anonymous";

/// The metadata header a development (`--insecure`, no authentication configured) server takes the caller's
/// name from. Ignored whenever authentication is configured.
pub const CALLER_HEADER: &str = "x-tablecrypt-caller";

/// A static token: who presents it, and the hex SHA-256 of the token (the token itself is never stored).
#[derive(Debug, Clone)]
pub struct StaticToken {
    pub identity: String,
    pub sha256_hex: String,
}

/// Where JWTs come from.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// An `aud` every token must carry.
    pub audience: String,
    /// Where the JSON Web Key Set (RFC 7517) is read; tokens name their key with `kid`.
    pub jwks: JwksSource,
}

/// A key set file (a mounted secret or a sidecar's output), or the identity provider's `jwks_uri` fetched over
/// HTTPS.
#[derive(Debug, Clone)]
pub enum JwksSource {
    File(PathBuf),
    Uri(String),
}

impl JwksSource {
    /// A key set URL: https, or http to a loopback address; no user name or password in it (a URL like
    /// `http://localhost:x@idp.example/` names idp.example, not this machine).
    pub fn uri(value: &str) -> Result<Self, String> {
        let refuse = || {
            "jwt.jwks_uri must be an https:// URL (http:// only to a loopback address), without credentials"
                .to_owned()
        };
        let url = reqwest::Url::parse(value).map_err(|_| refuse())?;
        let loopback = url
            .host_str()
            .is_some_and(tablecrypt_core::loopback::is_loopback_host);
        let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && loopback);
        if !scheme_ok
            || url.host_str().is_none()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(refuse());
        }
        Ok(Self::Uri(value.to_owned()))
    }

    fn describe(&self) -> String {
        match self {
            Self::File(path) => format!("the JWKS file {}", path.display()),
            Self::Uri(uri) => format!("the JWKS at {uri}"),
        }
    }
}

/// One configured grant: `identity` holds `role` over the accounts `scope` matches.
#[derive(Debug, Clone)]
pub struct IdentityGrant {
    pub identity: String,
    pub role: Role,
    pub scope: LabelSelector,
}

/// How callers prove who they are; from the server's configuration.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    pub tokens: Vec<StaticToken>,
    pub jwt: Option<JwtSettings>,
    /// Client certificates are verified by TLS against the configured client CA; their identity is accepted.
    pub client_certificates: bool,
    pub grants: Vec<IdentityGrant>,
}

impl AuthSettings {
    /// Whether any way to authenticate is configured. Without one, every caller is an unauthenticated
    /// development caller with the admin role (only allowed with `--insecure`).
    pub fn is_configured(&self) -> bool {
        !self.tokens.is_empty() || self.jwt.is_some() || self.client_certificates
    }
}

/// Why a caller was not authenticated. Messages never contain the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("credentials required: send \"authorization: Bearer <token>\" or a client certificate")]
    Missing,
    #[error("the authorization header must be \"Bearer <token>\"")]
    Malformed,
    #[error("unknown bearer token")]
    UnknownToken,
    #[error("invalid JWT: {0}")]
    InvalidJwt(String),
    #[error("the client certificate names no identity (no URI SAN and no CN)")]
    CertificateWithoutIdentity,
}

/// Checks credentials and turns them into a [`Caller`] with its grants.
#[derive(Clone)]
pub struct Authenticator {
    configured: bool,
    /// Token hash (hex, lowercase) to identity.
    tokens: HashMap<String, String>,
    jwt: Option<JwtVerifier>,
    client_certificates: bool,
    grants: HashMap<String, Vec<Grant>>,
}

#[derive(Clone)]
struct JwtVerifier {
    issuer: String,
    audience: String,
    /// The key set as last read: replaced by a reload, shared by every clone.
    keys: Arc<RwLock<JwkSet>>,
    source: JwksSource,
    /// For a `jwks_uri`: no redirects, a timeout, a bounded body.
    http: reqwest::Client,
    /// When a token's unknown key id last made us read the key set again.
    last_unknown_kid_reload: Arc<Mutex<Option<Instant>>>,
    /// Asks the server's reload task to fetch a URI's key set now (an unknown key id): the fetch runs there,
    /// tracked and cancelled with the server's other tasks.
    fetch_wanted: Arc<tokio::sync::Notify>,
}

/// The longest a JWKS fetch may take: an identity provider answers in milliseconds; a hung one must not hold the
/// reload (the keys in use stay meanwhile).
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest key set accepted from a URI: real ones are a few KiB (a handful of keys).
const JWKS_MAX_BYTES: usize = 1 << 20;

/// How often a token naming a key we do not know may make us read the JWKS file again (an identity provider
/// that rotated its keys: the first token signed with the new key arrives before the periodic reload). Bounded,
/// so made-up key ids cannot make every call read a file.
const UNKNOWN_KID_RELOAD_EVERY: Duration = Duration::from_secs(10);

/// Reads and parses a JWKS file. Errors name the file, never a key.
fn read_jwks(path: &Path) -> Result<JwkSet, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the JWKS file {}: {e}", path.display()))?;
    parse_jwks(&text, &JwksSource::File(path.to_owned()))
}

/// Parses a key set. An empty set is refused: a sidecar writing `{"keys": []}` (or a provider answering so) during
/// an identity provider's outage must not lock out every JWT caller.
fn parse_jwks(text: &str, source: &JwksSource) -> Result<JwkSet, String> {
    let keys: JwkSet = serde_json::from_str(text)
        .map_err(|e| format!("{} is not a key set: {e}", source.describe()))?;
    if keys.keys.is_empty() {
        return Err(format!("{} holds no key", source.describe()));
    }
    Ok(keys)
}

/// Fetches a key set from `uri`.
async fn fetch_jwks(http: &reqwest::Client, uri: &str) -> Result<JwkSet, String> {
    let source = JwksSource::Uri(uri.to_owned());
    let fail = |e: &dyn std::fmt::Display| format!("cannot fetch {}: {e}", source.describe());
    let mut response = http
        .get(uri)
        .send()
        .await
        .map_err(|e| fail(&e.without_url()))?;
    if !response.status().is_success() {
        return Err(fail(&format!("HTTP {}", response.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| fail(&e.without_url()))? {
        if body.len() + chunk.len() > JWKS_MAX_BYTES {
            return Err(fail(&format!("larger than {JWKS_MAX_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    parse_jwks(&String::from_utf8_lossy(&body), &source)
}

/// Asymmetric algorithms only: a key set file is public, so an HMAC key in it would let anyone sign.
const JWT_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
}

/// The hex SHA-256 of a token, as configured.
pub fn token_sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Authenticator {
    /// Loads the JWT key set from its file, if any; a key set at a URI starts empty and is fetched by
    /// [`Self::reload_jwks`], which the server awaits before serving. Errors name the file, never a key or token.
    pub fn new(settings: &AuthSettings) -> Result<Self, String> {
        let jwt = match &settings.jwt {
            None => None,
            Some(jwt) => Some(JwtVerifier {
                issuer: jwt.issuer.clone(),
                audience: jwt.audience.clone(),
                keys: Arc::new(RwLock::new(match &jwt.jwks {
                    JwksSource::File(path) => read_jwks(path)?,
                    JwksSource::Uri(_) => JwkSet { keys: Vec::new() },
                })),
                source: jwt.jwks.clone(),
                http: reqwest::Client::builder()
                    .timeout(JWKS_FETCH_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| format!("cannot build the JWKS HTTP client: {e}"))?,
                last_unknown_kid_reload: Arc::new(Mutex::new(None)),
                fetch_wanted: Arc::new(tokio::sync::Notify::new()),
            }),
        };
        let mut grants: HashMap<String, Vec<Grant>> = HashMap::new();
        for grant in &settings.grants {
            grants
                .entry(grant.identity.clone())
                .or_default()
                .push(Grant {
                    role: grant.role,
                    scope: grant.scope.clone(),
                });
        }
        Ok(Self {
            configured: settings.is_configured(),
            tokens: settings
                .tokens
                .iter()
                .map(|t| {
                    (
                        t.sha256_hex.to_ascii_lowercase(),
                        format!("{}{}", identity::TOKEN, t.identity),
                    )
                })
                .collect(),
            jwt,
            client_certificates: settings.client_certificates,
            grants,
        })
    }

    /// The caller of a request, from its headers and the client certificate TLS verified (DER, leaf first).
    pub fn authenticate(
        &self,
        headers: &http::HeaderMap,
        client_certificate: Option<&[u8]>,
    ) -> Result<Caller, AuthError> {
        if !self.configured {
            let identity = headers
                .get(CALLER_HEADER)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty() && v.len() <= 256)
                .unwrap_or(ANONYMOUS);
            return Ok(Caller {
                identity: identity.to_owned(),
                authenticated_by: "insecure",
                grants: vec![Grant {
                    role: Role::Admin,
                    scope: LabelSelector::default(),
                }],
            });
        }
        let (identity, method) = if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or(AuthError::Malformed)?;
            self.bearer(token)?
        } else if let (true, Some(der)) = (self.client_certificates, client_certificate) {
            (certificate_identity(der)?, "mtls")
        } else {
            return Err(AuthError::Missing);
        };
        let grants = self.grants.get(&identity).cloned().unwrap_or_default();
        Ok(Caller {
            identity,
            authenticated_by: method,
            grants,
        })
    }

    /// Reads the key set again, from its file or its URI (at start for a URI, on SIGHUP, periodically, or after a
    /// rotation): `Ok(true)` when the keys changed. A key set that cannot be read, fetched or parsed leaves the
    /// keys in use as they are.
    pub async fn reload_jwks(&self) -> Result<bool, String> {
        match &self.jwt {
            None => Ok(false),
            Some(jwt) => jwt.reload().await,
        }
    }

    /// Signalled when a token names a key id a `jwks_uri` key set lacks: the reload task fetches at once.
    pub fn jwks_wanted(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.jwt.as_ref().map(|jwt| jwt.fetch_wanted.clone())
    }

    fn bearer(&self, token: &str) -> Result<(String, &'static str), AuthError> {
        if let Some(identity) = self.tokens.get(&token_sha256_hex(token)) {
            return Ok((identity.clone(), "token"));
        }
        // Three dot-separated parts: a JWT, if JWTs are configured.
        match &self.jwt {
            Some(jwt) if token.split('.').count() == 3 => {
                jwt.verify(token).map(|subject| (subject, "jwt"))
            }
            _ => Err(AuthError::UnknownToken),
        }
    }
}

impl JwtVerifier {
    async fn reload(&self) -> Result<bool, String> {
        let fresh = match &self.source {
            JwksSource::File(path) => read_jwks(path)?,
            JwksSource::Uri(uri) => fetch_jwks(&self.http, uri).await?,
        };
        Ok(self.replace(fresh))
    }

    fn replace(&self, fresh: JwkSet) -> bool {
        let mut keys = self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = *keys != fresh;
        *keys = fresh;
        changed
    }

    /// The key `kid` names; an unknown one makes us read the key set again, at most every
    /// [`UNKNOWN_KID_RELOAD_EVERY`]: a file at once, a URI by the reload task (this token is refused; the
    /// caller's retry finds the key).
    fn key(&self, kid: &str) -> Option<jsonwebtoken::jwk::Jwk> {
        let known = |keys: &Arc<RwLock<JwkSet>>| {
            keys.read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .find(kid)
                .cloned()
        };
        if let Some(jwk) = known(&self.keys) {
            return Some(jwk);
        }
        {
            let mut last = self
                .last_unknown_kid_reload
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < UNKNOWN_KID_RELOAD_EVERY) {
                return None;
            }
            *last = Some(Instant::now());
        }
        match &self.source {
            JwksSource::File(path) => match read_jwks(path) {
                Ok(fresh) => {
                    self.replace(fresh);
                }
                Err(error) => {
                    tracing::warn!(%error, "could not reload the JWKS file for an unknown key id");
                }
            },
            JwksSource::Uri(_) => self.fetch_wanted.notify_one(),
        }
        known(&self.keys)
    }

    fn verify(&self, token: &str) -> Result<String, AuthError> {
        let invalid = |e: jsonwebtoken::errors::Error| AuthError::InvalidJwt(e.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(invalid)?;
        if !JWT_ALGORITHMS.contains(&header.alg) {
            return Err(AuthError::InvalidJwt(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| AuthError::InvalidJwt("the header names no key (kid)".into()))?;
        let jwk = self
            .key(kid)
            .ok_or_else(|| AuthError::InvalidJwt(format!("unknown key id {kid:?}")))?;
        let key = DecodingKey::from_jwk(&jwk).map_err(invalid)?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        // A token is good only from its nbf on (jsonwebtoken ignores nbf unless asked).
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(invalid)?;
        if data.claims.sub.is_empty() || data.claims.sub.len() > 256 {
            return Err(AuthError::InvalidJwt("sub must be 1-256 characters".into()));
        }
        Ok(identity::of_jwt(&self.issuer, &data.claims.sub))
    }
}

/// The identity a client certificate carries: its first URI SAN (a SPIFFE id as it is, another as `cert-uri:`),
/// else its subject CN (`cert-cn:`).
fn certificate_identity(der: &[u8]) -> Result<String, AuthError> {
    use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|_| AuthError::CertificateWithoutIdentity)?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                return Ok(identity::of_certificate_uri(uri));
            }
        }
    }
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .map(|cn| format!("{}{cn}", identity::CERT_CN))
        .ok_or(AuthError::CertificateWithoutIdentity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_token() -> Authenticator {
        Authenticator::new(&AuthSettings {
            tokens: vec![StaticToken {
                identity: "alice".into(),
                sha256_hex: token_sha256_hex("s3cret-token"),
            }],
            grants: vec![IdentityGrant {
                identity: "token:alice".into(),
                role: Role::Viewer,
                scope: LabelSelector::default(),
            }],
            ..Default::default()
        })
        .expect("authenticator")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().expect("header"));
        }
        map
    }

    #[test]
    fn static_tokens_authenticate_by_hash() {
        let auth = with_token();
        let caller = auth
            .authenticate(&headers(&[("authorization", "Bearer s3cret-token")]), None)
            .expect("known token");
        assert_eq!(caller.identity, "token:alice");
        assert_eq!(caller.grants.len(), 1);
        assert_eq!(
            auth.authenticate(&headers(&[("authorization", "Bearer nope")]), None),
            Err(AuthError::UnknownToken)
        );
        assert_eq!(
            auth.authenticate(&headers(&[("authorization", "Basic abc")]), None),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            auth.authenticate(&headers(&[("x-tablecrypt-caller", "root")]), None),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn without_authentication_every_caller_is_a_development_admin() {
        let auth = Authenticator::new(&AuthSettings::default()).expect("authenticator");
        let caller = auth
            .authenticate(&headers(&[("x-tablecrypt-caller", "bob")]), None)
            .expect("dev caller");
        assert_eq!(caller.identity, "bob");
        assert_eq!(caller.authenticated_by, "insecure");
        assert!(caller.may(tablecrypt_core::Permission::ManageAccounts));
    }

    #[test]
    fn error_messages_never_echo_the_credential() {
        let auth = with_token();
        let err = auth
            .authenticate(&headers(&[("authorization", "Bearer leaked-value")]), None)
            .expect_err("unknown");
        assert!(!err.to_string().contains("leaked-value"));
    }
}
