//! Test credentials: a throwaway CA with server and client certificates, static tokens and an ES256 key set
//! for JWTs, all written to a temporary directory the server's configuration points at.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use tablecrypt_api::auth::token_sha256_hex;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// The issuer and audience the test JWTs use.
pub const JWT_ISSUER: &str = "https://idp.test.example";
pub const JWT_AUDIENCE: &str = "tablecrypt";
const JWT_KID: &str = "test-key-1";

pub struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    jwt_key: KeyPair,
    jwt_kid: String,
}

/// Writes `jwks.json` in `dir` holding `key`'s public half under `kid`.
fn write_jwks(dir: &std::path::Path, key: &KeyPair, kid: &str) {
    // An uncompressed P-256 point: 0x04, then x and y.
    let point = key.public_key_raw();
    let jwks = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }]});
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).expect("write");
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "tablecrypt test CA");
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write CA");
        let mut server = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        server
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let key = KeyPair::generate().expect("key");
        let cert = server.signed_by(&key, &ca).expect("server cert");
        std::fs::write(dir.path().join("server.pem"), cert.pem()).expect("write");
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).expect("write");

        let jwt_key = KeyPair::generate().expect("jwt key");
        write_jwks(dir.path(), &jwt_key, JWT_KID);
        Self {
            dir,
            ca,
            jwt_key,
            jwt_kid: JWT_KID.to_owned(),
        }
    }

    /// The identity provider rotates its key: a new key under `kid` replaces the old one in the key set file, and
    /// JWTs from now on are signed with it.
    pub fn rotate_jwt_key(&mut self, kid: &str) {
        self.jwt_key = KeyPair::generate().expect("jwt key");
        self.jwt_kid = kid.to_owned();
        write_jwks(self.dir.path(), &self.jwt_key, kid);
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("read")
    }

    /// `[tls]` with mutual TLS and `[jwt]`, as TOML tables (put them after top-level keys).
    pub fn tls_and_jwt_toml(&self) -> String {
        format!(
            "[tls]\ncert_file = '{}'\nkey_file = '{}'\nclient_ca_file = '{}'\n\
             [jwt]\nissuer = '{JWT_ISSUER}'\naudience = '{JWT_AUDIENCE}'\njwks_file = '{}'\n",
            self.path("server.pem").display(),
            self.path("server.key").display(),
            self.path("ca.pem").display(),
            self.path("jwks.json").display(),
        )
    }

    /// A client certificate whose identity is `uri` (URI SAN), signed by the test CA: (cert PEM, key PEM).
    pub fn client_certificate(&self, uri: &str) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .subject_alt_names
            .push(SanType::URI(uri.try_into().expect("uri")));
        params
            .distinguished_name
            .push(DnType::CommonName, "ignored-when-a-uri-san-is-present");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("client cert");
        (cert.pem(), key.serialize_pem())
    }

    /// The server's certificate is renewed by another CA (written to `ca-next.pem`): the files the server reads
    /// now hold a certificate only clients trusting the new CA accept. Client certificates still chain to the
    /// first CA.
    pub fn rotate_server_certificate(&self) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "tablecrypt test CA, next");
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        std::fs::write(self.path("ca-next.pem"), ca.pem()).expect("write CA");
        let mut server = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        server
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let key = KeyPair::generate().expect("key");
        let cert = server.signed_by(&key, &ca).expect("server cert");
        std::fs::write(self.path("server.key"), key.serialize_pem()).expect("write");
        std::fs::write(self.path("server.pem"), cert.pem()).expect("write");
    }

    /// The client TLS configuration trusting the CA in `ca_file` (of this directory).
    pub fn client_tls_trusting(&self, ca_file: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.read(ca_file)))
            .domain_name("localhost")
    }

    /// The client TLS configuration: trusts the test CA, presents `client` if given.
    pub fn client_tls(&self, client: Option<(String, String)>) -> ClientTlsConfig {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.read("ca.pem")))
            .domain_name("localhost");
        if let Some((cert, key)) = client {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        tls
    }

    /// A TLS channel trusting the test CA, with a client certificate if given.
    pub async fn channel(
        &self,
        addr: std::net::SocketAddr,
        client: Option<(String, String)>,
    ) -> Channel {
        let tls = self.client_tls(client);
        Channel::from_shared(format!("https://{addr}"))
            .expect("uri")
            .tls_config(tls)
            .expect("tls config")
            .connect()
            .await
            .expect("TLS connect")
    }

    /// A JWT for `sub`, signed with the key set's key; `expires_in` may be negative (already expired).
    pub fn jwt(&self, sub: &str, audience: &str, expires_in: i64) -> String {
        self.jwt_from(sub, audience, 0, expires_in)
    }

    /// A JWT good from `not_before_in` seconds from now (its `nbf`) until `expires_in` seconds from now.
    pub fn jwt_from(
        &self,
        sub: &str,
        audience: &str,
        not_before_in: i64,
        expires_in: i64,
    ) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        let claims = serde_json::json!({
            "sub": sub, "iss": JWT_ISSUER, "aud": audience, "iat": now, "nbf": now + not_before_in,
            "exp": now + expires_in,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.jwt_kid.clone());
        let key = jsonwebtoken::EncodingKey::from_ec_der(&self.jwt_key.serialize_der());
        jsonwebtoken::encode(&header, &claims, &key).expect("sign")
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// The identity a test token's caller is recorded as (and granted by): `token:<name>`.
pub fn token_identity(name: &str) -> String {
    format!("token:{name}")
}

/// `[[auth_tokens]]` and `[[grants]]` for (name, role, scope) triples; each name's token is "token-<name>" and
/// its grant names `token:<name>`, but a name that is already an identity of another kind (`spiffe://...`,
/// `jwt:...`, `cert-...`) is granted as it is.
pub fn tokens_and_grants(grants: &[(&str, &str, &str)]) -> String {
    let mut toml = String::new();
    let mut seen = std::collections::BTreeSet::new();
    for (identity, role, scope) in grants {
        if seen.insert(*identity) {
            toml.push_str(&format!(
                "[[auth_tokens]]\nidentity = '{identity}'\nsha256 = '{}'\n",
                token_sha256_hex(&format!("token-{identity}"))
            ));
        }
        let granted = if ["spiffe://", "jwt:", "cert-uri:", "cert-cn:"]
            .iter()
            .any(|kind| identity.starts_with(kind))
        {
            (*identity).to_owned()
        } else {
            token_identity(identity)
        };
        toml.push_str(&format!(
            "[[grants]]\nidentity = '{granted}'\nrole = '{role}'\nscope = '{scope}'\n"
        ));
    }
    toml
}

/// A request with `authorization: Bearer <token>`.
pub fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

/// A request as `identity`, with its test token.
pub fn as_token<T>(identity: &str, message: T) -> tonic::Request<T> {
    bearer(&format!("token-{identity}"), message)
}
