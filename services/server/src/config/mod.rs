//! Typed configuration: a TOML file, then environment variables, validated once at start.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tablecrypt_api::auth::{AuthSettings, IdentityGrant, JwksSource, JwtSettings, StaticToken};
use tablecrypt_core::account_limits::MIN_RATE_PER_SECOND;
use tablecrypt_core::iac::{IacOwnership, OwnerTag};
use tablecrypt_core::{LabelSelector, Role as CoreRole, identity};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

/// What a process runs: the API, the change workers, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The gRPC API and the change workers (the default).
    All,
    /// The gRPC API only: scale API replicas apart from workers.
    Api,
    /// The change workers only (gRPC serves health and reflection, for probes).
    Worker,
}

impl Role {
    pub fn serves_api(self) -> bool {
        matches!(self, Self::All | Self::Api)
    }

    pub fn runs_workers(self) -> bool {
        matches!(self, Self::All | Self::Worker)
    }
}

/// The server's configuration. Every field has a default except where noted; see the README's configuration
/// reference for the environment variable of each.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the gRPC API listens (`TABLECRYPT_LISTEN_ADDR`).
    pub listen_addr: SocketAddr,
    /// Where Prometheus scrapes `/metrics` (`TABLECRYPT_METRICS_ADDR`); "off" disables the endpoint.
    #[serde(
        deserialize_with = "optional_addr",
        serialize_with = "show::optional_addr"
    )]
    pub metrics_addr: Option<SocketAddr>,
    /// A second, plaintext gRPC listener that serves only grpc.health.v1 (`TABLECRYPT_HEALTH_ADDR`), for
    /// Kubernetes gRPC probes, which cannot speak TLS; "off" (default) disables it.
    #[serde(
        deserialize_with = "optional_addr",
        serialize_with = "show::optional_addr"
    )]
    pub health_addr: Option<SocketAddr>,
    /// Postgres connection URL (`DATABASE_URL`); its password never appears in logs.
    pub database_url: DatabaseUrl,
    /// How the connection to Postgres is encrypted (`TABLECRYPT_DATABASE_SSLMODE`): disable, allow, prefer, require,
    /// verify-ca or verify-full, as libpq; wins over the URL's `sslmode`, which wins over `PGSSLMODE`. Unstated, a
    /// database on another machine gets `require`, one on this machine `prefer`; below `require` for another
    /// machine the server refuses to start (unless insecure).
    pub database_sslmode: Option<DatabaseSslMode>,
    /// A PEM bundle of the CAs the database's certificate must chain to for verify-ca and verify-full
    /// (`TABLECRYPT_DATABASE_SSLROOTCERT`; for RDS the global bundle); without it, the public web roots.
    pub database_sslrootcert: Option<PathBuf>,
    /// A client certificate (PEM) for databases that authenticate clients by certificate
    /// (`TABLECRYPT_DATABASE_SSLCERT`), with its key (`TABLECRYPT_DATABASE_SSLKEY`).
    pub database_sslcert: Option<PathBuf>,
    pub database_sslkey: Option<PathBuf>,
    /// Authenticate to RDS or Aurora PostgreSQL with IAM (`TABLECRYPT_DATABASE_IAM_AUTH`): the password is an auth
    /// token signed with the server's AWS credentials (the user is DATABASE_URL's, which has no password), made
    /// again every `database_iam_token_refresh`. Needs `database_sslmode` require or stricter, and
    /// `rds-db:connect` (deploy/iam/hub-role-rds-connect-policy.json).
    pub database_iam_auth: bool,
    /// The database's region for IAM tokens (`TABLECRYPT_DATABASE_IAM_REGION`); unset: from the RDS endpoint's
    /// name, else the AWS SDK's region (AWS_REGION).
    pub database_iam_region: Option<String>,
    /// How often a new IAM auth token is made for the connections opened next; tokens last 15 minutes
    /// (`TABLECRYPT_DATABASE_IAM_TOKEN_REFRESH`).
    #[serde(with = "humantime_serde")]
    pub database_iam_token_refresh: Duration,
    /// Most Postgres connections this process opens (`TABLECRYPT_DATABASE_MAX_CONNECTIONS`).
    pub database_max_connections: NonZeroU32,
    /// How long a query waits for a connection before failing with UNAVAILABLE
    /// (`TABLECRYPT_DATABASE_ACQUIRE_TIMEOUT`, e.g. "5s").
    #[serde(with = "humantime_serde")]
    pub database_acquire_timeout: Duration,
    /// json or pretty (`TABLECRYPT_LOG_FORMAT`).
    pub log_format: LogFormat,
    /// A tracing filter such as "info,tablecrypt_api=debug" (`TABLECRYPT_LOG_FILTER`; `RUST_LOG` wins if set).
    pub log_filter: String,
    /// After SIGTERM, how long in-flight calls may take before the server stops anyway
    /// (`TABLECRYPT_SHUTDOWN_GRACE_PERIOD`, e.g. "30s").
    #[serde(with = "humantime_serde")]
    pub shutdown_grace_period: Duration,
    /// Overrides every AWS endpoint, for the fleet emulator or moto (`TABLECRYPT_AWS_ENDPOINT_URL`); "" for AWS.
    #[serde(serialize_with = "show::url")]
    pub aws_endpoint_url: String,
    /// Region STS AssumeRole calls go to (`TABLECRYPT_AWS_STS_REGION`).
    pub aws_sts_region: String,
    /// RoleSessionName of every assumed-role session, visible in CloudTrail (`TABLECRYPT_AWS_SESSION_NAME`).
    pub aws_session_name: String,
    /// Account-regions scanned at once (`TABLECRYPT_SCAN_CONCURRENT_TARGETS`).
    pub scan_concurrent_targets: NonZeroU32,
    /// DescribeTable requests per second per account-region during scans (`TABLECRYPT_SCAN_DESCRIBE_RATE`).
    pub scan_describe_rate: NonZeroU32,
    /// DescribeTable calls in flight per account-region during scans (`TABLECRYPT_SCAN_DESCRIBES_IN_FLIGHT`).
    pub scan_describes_in_flight: NonZeroU32,
    /// How long a replica's claim on an account-region of a scan lasts without being extended; a dead replica's
    /// share of a scan is taken over by another after this (`TABLECRYPT_SCAN_LEASE`, e.g. "60s").
    #[serde(with = "humantime_serde")]
    pub scan_lease: Duration,
    /// How often to scan the whole fleet in the background, e.g. "1h"; "off" (default) disables it
    /// (`TABLECRYPT_INVENTORY_SCAN_INTERVAL`).
    #[serde(
        deserialize_with = "optional_duration",
        serialize_with = "show::optional_duration"
    )]
    pub inventory_scan_interval: Option<Duration>,
    /// all, api or worker (`TABLECRYPT_ROLE`; the `--role` flag wins).
    pub role: Role,
    /// New change requests wait in PENDING_APPROVAL until someone other than their creator approves
    /// (`TABLECRYPT_APPROVAL_REQUIRED`).
    pub approval_required: bool,
    /// UpdateTable calls per second per account-region, all replicas together (`TABLECRYPT_UPDATE_RATE`).
    /// A change request may only lower it.
    pub update_rate: f64,
    /// UpdateTable calls per second across the whole fleet, all replicas together
    /// (`TABLECRYPT_GLOBAL_UPDATE_RATE`).
    pub global_update_rate: f64,
    /// DescribeTable polls per second per account-region while waiting for updates (`TABLECRYPT_POLL_RATE`).
    pub poll_rate: f64,
    /// Tables updating at once per account-region, all replicas together; at most 500, AWS's limit
    /// (`TABLECRYPT_MAX_TABLES_IN_FLIGHT`). A change request may only lower it.
    pub max_tables_in_flight: NonZeroU32,
    /// Change items one process works on at once (`TABLECRYPT_WORKER_CONCURRENCY`).
    pub worker_concurrency: NonZeroU32,
    /// How long a worker's claim on an item lasts without a heartbeat; a dead worker's items are taken over
    /// after this (`TABLECRYPT_WORKER_LEASE`, e.g. "30s").
    #[serde(with = "humantime_serde")]
    pub worker_lease: Duration,
    /// How often an idle worker looks for work (`TABLECRYPT_WORKER_CLAIM_INTERVAL`).
    #[serde(with = "humantime_serde")]
    pub worker_claim_interval: Duration,
    /// First wait before polling an updating table; doubles up to `worker_poll_max`
    /// (`TABLECRYPT_WORKER_POLL_INITIAL`, `TABLECRYPT_WORKER_POLL_MAX`).
    #[serde(with = "humantime_serde")]
    pub worker_poll_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub worker_poll_max: Duration,
    /// First wait after throttling or a transient error; doubles with jitter up to `worker_retry_max`
    /// (`TABLECRYPT_WORKER_RETRY_INITIAL`, `TABLECRYPT_WORKER_RETRY_MAX`).
    #[serde(with = "humantime_serde")]
    pub worker_retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub worker_retry_max: Duration,
    /// After AWS accepted an UpdateTable, how long the table may show no sign of the change before the item sends
    /// it again (`TABLECRYPT_WORKER_SETTLE_TIMEOUT`). Every re-send spends one of the table's 4 switches a day.
    #[serde(with = "humantime_serde")]
    pub worker_settle_timeout: Duration,
    /// How often WatchChangeRequest looks for changes (`TABLECRYPT_WATCH_INTERVAL`).
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
    /// How long one WatchChangeRequest stream lasts before it ends with OK and the client watches again
    /// (`TABLECRYPT_WATCH_MAX_DURATION`), so a watch on a request waiting for approval never polls for ever.
    #[serde(with = "humantime_serde")]
    pub watch_max_duration: Duration,
    /// Development only: serve plaintext gRPC, and if no authentication is configured let every caller act as
    /// an admin named by the `x-tablecrypt-caller` header (`TABLECRYPT_INSECURE`, `--insecure`). Logged as a
    /// warning at start. Without it the server refuses to start unless TLS and authentication are configured.
    pub insecure: bool,
    /// TLS for the gRPC listener (`[tls]`; `TABLECRYPT_TLS__CERT_FILE` etc.).
    pub tls: Option<TlsConfig>,
    /// Static bearer tokens, each stored as the SHA-256 of the token (`[[auth_tokens]]`).
    pub auth_tokens: Vec<TokenConfig>,
    /// JWT bearer tokens checked against an issuer, an audience and a key set file (`[jwt]`).
    pub jwt: Option<JwtConfig>,
    /// Who holds which role over which accounts (`[[grants]]`).
    pub grants: Vec<GrantConfig>,
    /// Largest request message accepted, in bytes (`TABLECRYPT_MAX_REQUEST_BYTES`).
    pub max_request_bytes: NonZeroU32,
    /// Deadline of every call, e.g. "30s"; a shorter grpc-timeout from the client wins
    /// (`TABLECRYPT_REQUEST_TIMEOUT`). Watch streams are not cut by it once they have started.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The keys page tokens are signed with, one per line or comma-separated: the first signs, the others are
    /// still accepted (a rotation). Every API replica needs the same keys. Inline (`TABLECRYPT_PAGE_TOKEN_KEYS`)
    /// or from a file (`TABLECRYPT_PAGE_TOKEN_KEYS_FILE`), not both; neither: a key made at start, so page
    /// tokens work only on the replica that made them and until it restarts (a warning at start).
    #[serde(serialize_with = "show::redacted_option")]
    pub page_token_keys: Option<SecretString>,
    /// A file holding the page-token keys as above (a mounted secret); read at start.
    pub page_token_keys_file: Option<PathBuf>,
    /// Calls per second (and burst) per caller identity; 0 turns the limit off (`TABLECRYPT_CALLER_RATE_LIMIT`).
    pub caller_rate_limit: u32,
    /// How often the TLS certificate, key and client CA are read again (also on SIGHUP): a rotated certificate is
    /// served to new connections without a restart (`TABLECRYPT_TLS_RELOAD_INTERVAL`).
    #[serde(with = "humantime_serde")]
    pub tls_reload_interval: Duration,
    /// How often the JWKS file is read again (also on SIGHUP, and when a token names an unknown key id, at most
    /// every 10 s): an identity provider's key rotation reaches the server without a restart
    /// (`TABLECRYPT_JWKS_RELOAD_INTERVAL`).
    #[serde(with = "humantime_serde")]
    pub jwks_reload_interval: Duration,
    /// Calls per second (and burst) per client IP address that fail to authenticate; beyond it they get
    /// RESOURCE_EXHAUSTED. 0 turns the limit off (`TABLECRYPT_UNAUTHENTICATED_RATE_LIMIT`).
    pub unauthenticated_rate_limit: u32,
    /// How long repeats of a refusal (same caller or client address, method and outcome) are counted before they
    /// are written as one audit row; the first of each is written at once (`TABLECRYPT_AUDIT_REPEAT_INTERVAL`).
    #[serde(with = "humantime_serde")]
    pub audit_repeat_interval: Duration,
    /// Connections the gRPC listener keeps open at once; one more is closed at once (`TABLECRYPT_MAX_CONNECTIONS`).
    pub max_connections: NonZeroU32,
    /// How long a new connection may take to finish its TLS handshake (or, in plaintext, to send its first
    /// bytes) before it is closed (`TABLECRYPT_CONNECTION_HANDSHAKE_TIMEOUT`).
    #[serde(with = "humantime_serde")]
    pub connection_handshake_timeout: Duration,
    /// How often an idle HTTP/2 connection is pinged, and how long the ping's answer may take before the
    /// connection is dropped (`TABLECRYPT_HTTP2_KEEPALIVE_INTERVAL`, `TABLECRYPT_HTTP2_KEEPALIVE_TIMEOUT`).
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_timeout: Duration,
    /// After this long a connection is asked to reconnect (GOAWAY; calls in flight get 10 minutes), so no
    /// connection is held for ever; "off" keeps connections (`TABLECRYPT_MAX_CONNECTION_AGE`).
    #[serde(
        deserialize_with = "optional_duration",
        serialize_with = "show::optional_duration"
    )]
    pub max_connection_age: Option<Duration>,
    /// Where traces are sent over OTLP, e.g. "http://otel-collector:4317" (`TABLECRYPT_OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// else the standard `OTEL_EXPORTER_OTLP_ENDPOINT`); unset: no traces.
    #[serde(serialize_with = "show::optional_url")]
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// `grpc` (port 4317, the default) or `http/protobuf` (port 4318; `/v1/traces` is appended)
    /// (`TABLECRYPT_OTEL_EXPORTER_OTLP_PROTOCOL`, else the standard `OTEL_EXPORTER_OTLP_PROTOCOL`).
    pub otel_exporter_otlp_protocol: Option<OtlpProtocol>,
    /// Table tags marking a table as owned by infrastructure as code, besides CloudFormation's
    /// `aws:cloudformation:stack-id` (always): "key=value", or "key" for any value, e.g. ["ManagedBy=terraform"]
    /// (`TABLECRYPT_IAC_OWNER_TAGS='["ManagedBy=terraform"]'`). Change requests block such tables (IAC_OWNED)
    /// unless they set options.include_iac_owned: the template's next apply would revert the change.
    pub iac_owner_tags: Vec<String>,
    /// Webhooks told when a change request waits for approval, pauses, fails or succeeds
    /// (`[[notifications]]`: name, url or url_file, format, events, selector).
    pub notifications: Vec<notifications::NotificationConfig>,
    /// Registering the accounts of an AWS Organization (`[discovery]`: organization_role_arn, member_role,
    /// regions, tag_labels, ou_labels, interval); absent: DiscoverAccounts is refused.
    pub discovery: Option<discovery::DiscoveryConfig>,
    /// The longest one notification POST may take (`TABLECRYPT_NOTIFICATION_TIMEOUT`).
    #[serde(with = "humantime_serde")]
    pub notification_timeout: Duration,
    /// The wait after a failed delivery, doubled per failure up to `notification_retry_max`
    /// (`TABLECRYPT_NOTIFICATION_RETRY_INITIAL`, `TABLECRYPT_NOTIFICATION_RETRY_MAX`).
    #[serde(with = "humantime_serde")]
    pub notification_retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub notification_retry_max: Duration,
    /// Attempts before a delivery is given up and the giving up audited
    /// (`TABLECRYPT_NOTIFICATION_MAX_ATTEMPTS`).
    pub notification_max_attempts: NonZeroU32,
    /// Not a setting (no file or variable sets it): the schema migrations this binary knows, which its workers
    /// compare with the database's before claiming. A test adds one to stand in for a newer binary.
    #[serde(skip)]
    pub known_migrations: Vec<i64>,
}

/// The server's certificate and key (PEM), and optionally the CA that client certificates must chain to.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Turns on mutual TLS: clients may present a certificate signed by this CA, and are then identified by its
    /// URI SAN (else its CN). Clients without one may still use a bearer token.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// A static bearer token: never the token itself, only its SHA-256 (`printf %s "$TOKEN" | sha256sum`).
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The token's name: the caller is recorded as `token:<identity>` (created by, approved by, audit log), which
    /// is what grants name.
    pub identity: String,
    /// 64 hex digits.
    #[serde(serialize_with = "show::redacted")]
    pub sha256: String,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("identity", &self.identity)
            .field("sha256", &"[redacted]")
            .finish()
    }
}

/// Where JWTs come from; the caller is `jwt:<issuer>:<sub>`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    pub issuer: String,
    pub audience: String,
    /// A JSON Web Key Set file; asymmetric keys only (RS*, PS*, ES*, EdDSA), chosen by the token's `kid`.
    pub jwks_file: Option<PathBuf>,
    /// Or the identity provider's key set URL (its discovery document's `jwks_uri`), fetched at start, every
    /// `jwks_reload_interval`, on SIGHUP and for an unknown key id; https (http only to a loopback address).
    #[serde(serialize_with = "show::optional_url")]
    pub jwks_uri: Option<String>,
}

/// How spans travel to the OTLP endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum OtlpProtocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl OtlpProtocol {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "grpc" => Some(Self::Grpc),
            "http/protobuf" => Some(Self::HttpProtobuf),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        }
    }
}

/// `identity` holds `role` (viewer, operator, approver, admin) over the accounts `scope` (an account label
/// selector such as "team=payments"; empty for every account) matches. The identity names its credential kind:
/// `token:NAME`, `jwt:ISSUER:SUBJECT`, `spiffe://...`, `cert-uri:URI` or `cert-cn:NAME`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    pub identity: String,
    pub role: String,
    #[serde(default)]
    pub scope: String,
}

impl Default for Config {
    /// Every setting's default, with the reason for its value. A file and the environment override them field by
    /// field (`#[serde(default)]` on [`Config`]): a new setting is a field above and its value here.
    fn default() -> Self {
        let seconds = Duration::from_secs;
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            // 9464 is the port OpenTelemetry's Prometheus exporter uses by default.
            metrics_addr: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            health_addr: None,
            database_url: "postgres://postgres@127.0.0.1:5432/tablecrypt"
                .parse()
                .expect("the default database URL parses"),
            // Unstated: decided by where the database is (see `database::connection`).
            database_sslmode: None,
            database_sslrootcert: None,
            database_sslcert: None,
            database_sslkey: None,
            database_iam_auth: false,
            database_iam_region: None,
            // Two thirds of a token's 15 minutes: a refresh that fails is retried every 30 s for five minutes
            // before new connections would carry an expired token.
            database_iam_token_refresh: seconds(600),
            database_max_connections: NonZeroU32::new(10).expect("non-zero"),
            database_acquire_timeout: seconds(5),
            log_format: LogFormat::Json,
            log_filter: "info".into(),
            // Kubernetes' default terminationGracePeriodSeconds is 30 s; leave a little of it for the process to
            // exit.
            shutdown_grace_period: seconds(25),
            aws_endpoint_url: String::new(),
            aws_sts_region: "us-east-1".into(),
            aws_session_name: "tablecrypt".into(),
            scan_concurrent_targets: NonZeroU32::new(64).expect("non-zero"),
            // A small share of DynamoDB's ~2,500 control-plane requests/s per account-region.
            scan_describe_rate: NonZeroU32::new(50).expect("non-zero"),
            scan_describes_in_flight: NonZeroU32::new(8).expect("non-zero"),
            // Far above a heartbeat's round trip even under load; a dead replica's accounts wait at most this.
            scan_lease: seconds(60),
            inventory_scan_interval: None,
            role: Role::All,
            approval_required: false,
            // UpdateTable shares DynamoDB's control-plane budget with everything else in the account: stay well
            // below.
            update_rate: 5.0,
            global_update_rate: 100.0,
            poll_rate: 20.0,
            max_tables_in_flight: NonZeroU32::new(50).expect("non-zero"),
            worker_concurrency: NonZeroU32::new(256).expect("non-zero"),
            worker_lease: seconds(30),
            worker_claim_interval: seconds(1),
            worker_poll_initial: seconds(2),
            worker_poll_max: seconds(30),
            worker_retry_initial: seconds(1),
            worker_retry_max: seconds(120),
            // Observed SSE changes show the old key for 8-9 s and take 20-25 s (../shared/AWS-BEHAVIOURS.md);
            // minutes above that, since a needless re-send spends a switch of the table's daily quota.
            worker_settle_timeout: seconds(300),
            watch_interval: Duration::from_millis(500),
            // Long enough that a migration's watcher reconnects a handful of times a day; the connection's own
            // max_connection_age (1 h) ends it no later anyway.
            watch_max_duration: seconds(3600),
            insecure: false,
            tls: None,
            auth_tokens: Vec::new(),
            jwt: None,
            grants: Vec::new(),
            // Our largest requests (an explicit list of 10,000 tables) are well under 1 MiB.
            max_request_bytes: NonZeroU32::new(1024 * 1024).expect("non-zero"),
            request_timeout: seconds(30),
            caller_rate_limit: 50,
            // A person or pipeline with a wrong token retries a few times a second at most; a client over this is
            // a flood or a broken loop, told so (RESOURCE_EXHAUSTED) instead of UNAUTHENTICATED. The credential is
            // still checked first (the address may be shared with callers whose credentials are good).
            unauthenticated_rate_limit: 10,
            // Identity providers publish a new key well before signing with it (hours to days); a minute's lag is
            // nothing, and reading a small file a minute costs nothing.
            jwks_reload_interval: seconds(60),
            // cert-manager renews certificates days before they expire; a minute's lag costs nothing.
            tls_reload_interval: seconds(60),
            // A flood of refusals becomes one row per 10 s per kind (a crash loses at most that much counting), and
            // a person reading the audit log sees the repeats within seconds.
            audit_repeat_interval: seconds(10),
            page_token_keys: None,
            page_token_keys_file: None,
            // Far above the clients of one platform team's fleet; well under the process's usual 65,536 file
            // descriptors, so a flood of silent sockets reaches this first.
            max_connections: NonZeroU32::new(1024).expect("non-zero"),
            // A TLS handshake takes milliseconds even across regions; seconds more for a slow client.
            connection_handshake_timeout: seconds(10),
            // gRPC's usual values: a dead peer is noticed within 40 s without pinging busy connections.
            http2_keepalive_interval: seconds(30),
            http2_keepalive_timeout: seconds(10),
            max_connection_age: Some(seconds(3600)),
            otel_exporter_otlp_endpoint: None,
            otel_exporter_otlp_protocol: None,
            iac_owner_tags: Vec::new(),
            notifications: Vec::new(),
            discovery: None,
            // A chat or paging endpoint answers in well under a second; 10 s rides out a slow one without
            // holding a delivery's lease for long.
            notification_timeout: seconds(10),
            // 5 s, doubling, up to 10 min, 12 attempts: about an hour of an endpoint being down before a
            // notification is given up (and audited as such).
            notification_retry_initial: seconds(5),
            notification_retry_max: seconds(600),
            notification_max_attempts: NonZeroU32::new(
                tablecrypt_core::notify::DEFAULT_MAX_ATTEMPTS,
            )
            .expect("non-zero"),
            known_migrations: tablecrypt_store::schema::known_migrations(),
        }
    }
}

/// AWS allows 500 tables in UPDATING (or CREATING/DELETING) at once per account-region.
const AWS_MAX_TABLES_IN_FLIGHT: u32 = 500;

impl Config {
    /// Defaults, then `file` (if given), then `TABLECRYPT_*` and `DATABASE_URL` from the environment.
    /// `insecure` is the `--insecure` flag, which wins over the file and the environment.
    pub fn load(file: Option<&Path>, insecure: bool) -> anyhow::Result<Self> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            anyhow::ensure!(
                file.exists(),
                "config file {} does not exist",
                file.display()
            );
            figment = figment.merge(Toml::file(file));
        }
        figment = figment
            // TABLECRYPT_CONFIG names the file (the --config flag), not a setting; the CLI's variables
            // (TABLECRYPT_SERVER, TABLECRYPT_CALLER, ...) are the CLI's, which users export in the same shell.
            .merge(
                Env::prefixed("TABLECRYPT_")
                    .ignore(&["config"])
                    .ignore(tablecrypt_proto::CLI_ENVIRONMENT_KEYS)
                    .split("__"),
            )
            .merge(Env::raw().only(&["DATABASE_URL"]));
        if insecure {
            figment = figment.merge(Serialized::default("insecure", true));
        }
        Self::from_figment(figment)
    }

    /// Defaults overridden by a TOML document only, ignoring the environment: for tests and tools that build a
    /// configuration in code.
    pub fn from_toml(toml: &str) -> anyhow::Result<Self> {
        Self::from_figment(Figment::new().merge(Toml::string(toml)))
    }

    fn from_figment(figment: Figment) -> anyhow::Result<Self> {
        let config: Self = figment.extract().map_err(|e| {
            let messages: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            anyhow::anyhow!("invalid configuration: {}", messages.join("; "))
        })?;
        config.check()?;
        Ok(config)
    }

    /// The keys page tokens are signed with, if configured (read from the file each time it is asked).
    pub fn page_token_keys(
        &self,
    ) -> anyhow::Result<Option<tablecrypt_api::page_token::PageTokenKeys>> {
        page_tokens::load(
            self.page_token_keys.as_ref(),
            self.page_token_keys_file.as_deref(),
        )
        .map_err(anyhow::Error::msg)
    }

    /// Rules across or beyond single fields.
    fn check(&self) -> anyhow::Result<()> {
        self.page_token_keys()?;
        for (key, rate) in [
            ("update_rate", self.update_rate),
            ("global_update_rate", self.global_update_rate),
            ("poll_rate", self.poll_rate),
        ] {
            anyhow::ensure!(
                rate.is_finite() && rate >= MIN_RATE_PER_SECOND,
                "invalid configuration: {key} must be at least {MIN_RATE_PER_SECOND} requests per second"
            );
        }
        anyhow::ensure!(
            self.audit_repeat_interval <= Duration::from_secs(3600),
            "invalid configuration: audit_repeat_interval must be at most 1h (a crash loses at most one interval \
             of repeat counts)"
        );
        anyhow::ensure!(
            self.max_tables_in_flight.get() <= AWS_MAX_TABLES_IN_FLIGHT,
            "invalid configuration: max_tables_in_flight must be at most {AWS_MAX_TABLES_IN_FLIGHT} (AWS's limit)"
        );
        for (key, lease) in [
            ("worker_lease", self.worker_lease),
            ("scan_lease", self.scan_lease),
            ("watch_max_duration", self.watch_max_duration),
            ("audit_repeat_interval", self.audit_repeat_interval),
            ("jwks_reload_interval", self.jwks_reload_interval),
            ("tls_reload_interval", self.tls_reload_interval),
        ] {
            anyhow::ensure!(
                lease >= Duration::from_secs(1),
                "invalid configuration: {key} must be at least 1s"
            );
        }
        anyhow::ensure!(
            !self.worker_poll_initial.is_zero() && self.worker_poll_initial <= self.worker_poll_max,
            "invalid configuration: worker_poll_initial must be above zero and at most worker_poll_max"
        );
        anyhow::ensure!(
            !self.worker_retry_initial.is_zero()
                && self.worker_retry_initial <= self.worker_retry_max,
            "invalid configuration: worker_retry_initial must be above zero and at most worker_retry_max"
        );
        anyhow::ensure!(
            !self.request_timeout.is_zero(),
            "invalid configuration: request_timeout must be above zero"
        );
        for (key, value) in [
            (
                "connection_handshake_timeout",
                self.connection_handshake_timeout,
            ),
            ("http2_keepalive_interval", self.http2_keepalive_interval),
            ("http2_keepalive_timeout", self.http2_keepalive_timeout),
        ] {
            anyhow::ensure!(
                !value.is_zero(),
                "invalid configuration: {key} must be above zero"
            );
        }
        anyhow::ensure!(
            !self.notification_timeout.is_zero()
                && !self.notification_retry_initial.is_zero()
                && self.notification_retry_initial <= self.notification_retry_max,
            "invalid configuration: notification_timeout and notification_retry_initial must be above zero, and \
             notification_retry_initial at most notification_retry_max"
        );
        self.notifier_settings()?;
        if let Some(discovery) = &self.discovery {
            discovery.check()?;
        }
        self.iac_ownership()?;
        crate::telemetry::OtlpTarget::resolve(self)?;
        let database = self.database()?;
        if self.database_iam_auth {
            anyhow::ensure!(
                database.sslmode >= DatabaseSslMode::Require,
                "invalid configuration: database_iam_auth needs database_sslmode require, verify-ca or \
                 verify-full (RDS accepts IAM tokens over TLS only, and a token must not cross the network in \
                 plaintext); it is {}",
                database.sslmode.as_str()
            );
            anyhow::ensure!(
                !self.database_url.has_password(),
                "invalid configuration: database_iam_auth signs the password itself: remove the password from \
                 DATABASE_URL"
            );
            anyhow::ensure!(
                self.database_iam_token_refresh >= Duration::from_secs(1)
                    && self.database_iam_token_refresh <= Duration::from_secs(840),
                "invalid configuration: database_iam_token_refresh must be between 1s and 14m (tokens last 15 \
                 minutes)"
            );
        }
        let auth = self.auth_settings()?;
        if !self.insecure {
            anyhow::ensure!(
                self.tls.is_some(),
                "invalid configuration: tls (cert_file, key_file) is required; for local development only, \
                 start with --insecure (TABLECRYPT_INSECURE=true)"
            );
            anyhow::ensure!(
                auth.is_configured(),
                "invalid configuration: no authentication is configured (auth_tokens, jwt, or \
                 tls.client_ca_file); for local development only, start with --insecure"
            );
        }
        Ok(())
    }

    /// The configuration as TOML a file could hold, secrets redacted (`check-config`).
    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(format!(
            "# The effective configuration (defaults, then the file, then the environment); secrets {}: put\n\
             # the real values back before using it as a file.\n{}",
            show::REDACTED,
            toml::to_string(self)
                .map_err(|e| anyhow::anyhow!("printing the configuration as TOML: {e}"))?
        ))
    }

    /// Account discovery's settings, validated; `None` when `[discovery]` is absent.
    pub fn discovery_settings(
        &self,
    ) -> anyhow::Result<Option<tablecrypt_engine::DiscoverySettings>> {
        self.discovery
            .as_ref()
            .map(discovery::DiscoveryConfig::settings)
            .transpose()
    }

    /// Which table tags mark infrastructure-as-code ownership, validated.
    pub fn iac_ownership(&self) -> anyhow::Result<IacOwnership> {
        let tags = self
            .iac_owner_tags
            .iter()
            .enumerate()
            .map(|(i, text)| {
                OwnerTag::parse(text).map_err(|e| {
                    anyhow::anyhow!(
                        "invalid configuration: iac_owner_tags[{i}] {text:?}: {}",
                        e.0
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(IacOwnership::new(tags))
    }

    /// The notification sinks and how they are delivered to, validated.
    pub fn notifier_settings(&self) -> anyhow::Result<tablecrypt_engine::NotifierSettings> {
        Ok(tablecrypt_engine::NotifierSettings {
            sinks: notifications::sinks(&self.notifications)?,
            // New events are routed within a second: a pause someone must act on is heard at once.
            interval: Duration::from_secs(1),
            timeout: self.notification_timeout,
            retry_initial: self.notification_retry_initial,
            retry_max: self.notification_retry_max,
            max_attempts: self.notification_max_attempts.get(),
        })
    }

    /// How to reach the database: the URL with the TLS settings, checked (see [`database::connection`]).
    pub fn database(&self) -> anyhow::Result<DatabaseConnection> {
        database::connection(
            &self.database_url,
            &database::DatabaseTls {
                sslmode: self.database_sslmode,
                sslrootcert: self.database_sslrootcert.as_deref(),
                sslcert: self.database_sslcert.as_deref(),
                sslkey: self.database_sslkey.as_deref(),
            },
            self.insecure,
        )
    }

    /// Why no caller can ever be `identity` with this configuration (a grant that would silently match nobody),
    /// if so: a token name not configured, a JWT of another issuer (or none configured), a certificate identity
    /// without mutual TLS.
    fn unmatchable(&self, identity: &str) -> Option<String> {
        if let Some(name) = identity.strip_prefix(identity::TOKEN) {
            return (!self.auth_tokens.iter().any(|t| t.identity == name))
                .then(|| format!("no [[auth_tokens]] entry has identity {name:?}"));
        }
        if identity.starts_with(identity::JWT) {
            return match &self.jwt {
                None => Some("no [jwt] is configured".into()),
                Some(jwt) if !identity.starts_with(&identity::of_jwt(&jwt.issuer, "")) => {
                    Some(format!(
                        "JWT identities are jwt:{}:<sub> (the configured issuer)",
                        jwt.issuer
                    ))
                }
                Some(_) => None,
            };
        }
        let mutual_tls = self
            .tls
            .as_ref()
            .is_some_and(|tls| tls.client_ca_file.is_some());
        (!mutual_tls).then(|| {
            "a client certificate's identity, but no [tls] client_ca_file turns on mutual TLS"
                .into()
        })
    }

    /// The authentication and grant settings, validated: token hashes, roles and scopes.
    pub fn auth_settings(&self) -> anyhow::Result<AuthSettings> {
        let mut tokens = Vec::new();
        for (i, token) in self.auth_tokens.iter().enumerate() {
            anyhow::ensure!(
                !token.identity.is_empty()
                    && token.identity.len() <= 256
                    && !token.identity.starts_with(identity::TOKEN),
                "invalid configuration: auth_tokens[{i}].identity must be 1-256 characters, the name alone (the \
                 caller becomes token:<identity>)"
            );
            anyhow::ensure!(
                token.sha256.len() == 64 && token.sha256.chars().all(|c| c.is_ascii_hexdigit()),
                "invalid configuration: auth_tokens[{i}].sha256 must be 64 hex digits (the SHA-256 of the \
                 token, never the token itself)"
            );
            tokens.push(StaticToken {
                identity: token.identity.clone(),
                sha256_hex: token.sha256.clone(),
            });
        }
        let mut grants = Vec::new();
        for (i, grant) in self.grants.iter().enumerate() {
            let role = CoreRole::parse(&grant.role)
                .map_err(|e| anyhow::anyhow!("invalid configuration: grants[{i}].role: {e}"))?;
            let scope = LabelSelector::parse(&grant.scope)
                .map_err(|e| anyhow::anyhow!("invalid configuration: grants[{i}].scope: {e}"))?;
            let granted = identity::parse_granted(&grant.identity)
                .map_err(|e| anyhow::anyhow!("invalid configuration: grants[{i}].identity: {e}"))?;
            if let Some(problem) = self.unmatchable(&granted) {
                anyhow::bail!("invalid configuration: grants[{i}].identity {granted:?}: {problem}");
            }
            grants.push(IdentityGrant {
                identity: granted,
                role,
                scope,
            });
        }
        Ok(AuthSettings {
            tokens,
            jwt: self.jwt.as_ref().map(jwt_settings).transpose()?,
            client_certificates: self
                .tls
                .as_ref()
                .is_some_and(|t| t.client_ca_file.is_some()),
            grants,
        })
    }
}

/// `[jwt]` checked: exactly one key set source, a URI over https (http only to a loopback address).
fn jwt_settings(jwt: &JwtConfig) -> anyhow::Result<JwtSettings> {
    let jwks = match (&jwt.jwks_file, &jwt.jwks_uri) {
        (Some(file), None) => JwksSource::File(file.clone()),
        (None, Some(uri)) => {
            JwksSource::uri(uri).map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?
        }
        _ => anyhow::bail!(
            "invalid configuration: [jwt] takes exactly one of jwks_file and jwks_uri"
        ),
    };
    Ok(JwtSettings {
        issuer: jwt.issuer.clone(),
        audience: jwt.audience.clone(),
        jwks,
    })
}

/// A duration such as "1h", or "off" / "" for none.
fn optional_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    match text.trim() {
        "" | "off" => Ok(None),
        value => humantime_serde::re::humantime::parse_duration(value)
            .map(Some)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "{value:?} is not a duration such as \"1h\" or \"off\": {e}"
                ))
            }),
    }
}

/// A socket address, or "off" / "" for none.
fn optional_addr<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    match text.trim() {
        "" | "off" => Ok(None),
        addr => addr.parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!(
                "{addr:?} is not host:port (an IP address and port) or \"off\""
            ))
        }),
    }
}

mod database;
pub mod discovery;
pub mod notifications;
pub mod page_tokens;
mod show;
#[cfg(test)]
mod tests;

pub use database::{DatabaseConnection, DatabaseSslMode, DatabaseUrl};
