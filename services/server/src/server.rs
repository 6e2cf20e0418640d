//! Wiring: the database, the gRPC services, metrics, and an orderly shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tablecrypt_api::auth::{AuthLayer, AuthLimits, Authenticator};
use tablecrypt_api::{ChangeRequests, ChangeSettings, TableEncryptionService};
use tablecrypt_engine::{
    EngineMetrics, InventoryScanner, Notifier, ScanSettings, WorkerSettings, Workers,
};
use tablecrypt_fleet::{Fleet, FleetSettings};
use tablecrypt_proto::v1::table_encryption_server::TableEncryptionServer;
use tablecrypt_store::{PoolSettings, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic_health::ServingStatus;

use crate::config::Config;
use crate::metrics::{self, GrpcMetrics, GrpcMetricsLayer};
use crate::rds_auth::RdsAuth;

/// The sockets to serve on, bound by the caller (the binary from config, tests on port 0).
pub struct Listeners {
    pub grpc: TcpListener,
    pub metrics: Option<TcpListener>,
    /// Plaintext, health only (for Kubernetes probes).
    pub health: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses in `config`.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let grpc = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("failed to listen for gRPC on {}", config.listen_addr))?;
        let metrics = match config.metrics_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("failed to listen for metrics on {addr}"))?,
            ),
            None => None,
        };
        let health = match config.health_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("failed to listen for health checks on {addr}"))?,
            ),
            None => None,
        };
        Ok(Self {
            grpc,
            metrics,
            health,
        })
    }
}

/// The fully qualified name health checks use for our API.
pub const SERVICE_NAME: &str = "tablecrypt.v1.TableEncryption";

/// How often the audit log's monthly partitions are made ahead: this month's and the next exist hours before
/// they are needed, whichever replica makes them (idempotent).
const AUDIT_PARTITIONS_EVERY: Duration = Duration::from_secs(6 * 3600);

/// Makes the audit log's partitions for this month and the next, at start and every [`AUDIT_PARTITIONS_EVERY`],
/// until `shutdown`.
async fn ensure_audit_partitions(store: Store, shutdown: CancellationToken) {
    loop {
        match store.audit.ensure_partitions().await {
            Ok(missed) if missed.is_empty() => {}
            Ok(missed) => tracing::warn!(
                months = missed.join(", "),
                "audit log months without a partition of their own: their rows stay in audit_log_default"
            ),
            Err(error) => {
                tracing::warn!(%error, "could not make the audit log's monthly partitions; retrying later")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(AUDIT_PARTITIONS_EVERY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Connections the plaintext health listener keeps open: probes open one or two at a time.
const HEALTH_MAX_CONNECTIONS: usize = 64;
/// After a connection's maximum age, how long its calls in flight (a watch, an export) may take to finish before
/// it is closed anyway; watches reconnect.
const MAX_CONNECTION_AGE_GRACE: Duration = Duration::from_secs(600);

/// The database pool, and with IAM authentication what keeps its password a fresh token.
pub struct Database {
    pub pool: sqlx::PgPool,
    iam: Option<(sqlx::postgres::PgConnectOptions, RdsAuth, Duration)>,
}

impl Database {
    /// Keeps the IAM auth token fresh until `shutdown` (nothing to do without IAM authentication).
    pub fn keep_token_fresh(&self, tasks: &TaskTracker, shutdown: CancellationToken) {
        if let Some((options, auth, every)) = self.iam.clone() {
            tasks.spawn(crate::rds_auth::keep_fresh(
                self.pool.clone(),
                options,
                auth,
                every,
                shutdown,
            ));
        }
    }
}

/// How IAM authentication signs for `options`: the region from the configuration, the RDS endpoint's name or the
/// SDK's region chain, and the SDK's default credentials (IRSA, instance role, environment).
async fn rds_auth(
    config: &Config,
    options: &sqlx::postgres::PgConnectOptions,
) -> anyhow::Result<RdsAuth> {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let region = config
        .database_iam_region
        .clone()
        .or_else(|| RdsAuth::region_of_endpoint(options.get_host()))
        .or_else(|| sdk.region().map(ToString::to_string))
        .context(
            "database_iam_auth: no region for the token; set database_iam_region (or AWS_REGION)",
        )?;
    let credentials = sdk.credentials_provider().context(
        "database_iam_auth: no AWS credentials provider (the default chain found nothing to use)",
    )?;
    Ok(RdsAuth::new(options, region, credentials))
}

/// Opens the pool and applies migrations. Used by `serve` and by the `migrate` subcommand.
pub async fn open_store(config: &Config) -> anyhow::Result<Database> {
    let database = connect(config).await?;
    if let Err(error) = tablecrypt_store::migrate(&database.pool).await {
        let error = anyhow::Error::from(error);
        let hint = tls_hint(&format!("{error:#}"), config.database()?.sslmode);
        return Err(error.context(format!(
            "failed to apply database migrations to {:?}{hint}",
            config.database_url
        )));
    }
    Ok(database)
}

/// Opens the pool (lazily: no connection is made yet), signing the first IAM auth token if configured.
pub async fn connect(config: &Config) -> anyhow::Result<Database> {
    let settings = PoolSettings {
        max_connections: config.database_max_connections.get(),
        acquire_timeout: config.database_acquire_timeout,
    };
    let database = config.database()?;
    for warning in &database.warnings {
        tracing::warn!("{warning}");
    }
    let mut options = database.options;
    let mut iam = None;
    if config.database_iam_auth {
        let auth = rds_auth(config, &options).await?;
        let token = auth
            .token()
            .await
            .context("database_iam_auth: signing the first auth token failed")?;
        iam = Some((options.clone(), auth, config.database_iam_token_refresh));
        options = options.password(&token);
        tracing::info!("authenticating to the database with IAM auth tokens");
    }
    let pool = tablecrypt_store::connect_lazy(options, &settings);
    Ok(Database { pool, iam })
}

/// What a TLS failure reaching the database means, in the settings' words (rustls names only the check).
fn tls_hint(error: &str, sslmode: crate::config::DatabaseSslMode) -> String {
    let hint = if error.contains("UnknownIssuer")
        || error.contains("BadSignature")
        || error.contains("unknown issuer")
    {
        "the database's certificate is not signed by a CA in database_sslrootcert (or the public web roots)"
    } else if error.contains("NotValidForName") || error.contains("not valid for name") {
        "the database's certificate does not name the host in DATABASE_URL (sslmode verify-full checks it; \
         connect by the name on the certificate)"
    } else if error.contains("certificate expired")
        || error.contains("not valid yet")
        || error.contains("Expired")
        || error.contains("NotValidYet")
    {
        "the database's certificate is outside its validity period"
    } else if error.contains("server does not support TLS")
        || error.contains("TLS upgrade required")
    {
        "the database does not accept TLS; turn it on (ssl = on) rather than lowering database_sslmode"
    } else {
        return String::new();
    };
    format!(" (sslmode {}: {hint})", sslmode.as_str())
}

/// Runs the server until `shutdown` is cancelled: health turns NOT_SERVING, the listener closes, in-flight calls
/// get up to the grace period, then background tasks are awaited.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Everything that can stop the start comes before any task is spawned: a failed start leaves nothing running.
    let auth_settings = config.auth_settings()?;
    let authenticator = Authenticator::new(&auth_settings)
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    if let Some(jwt) = &auth_settings.jwt
        && matches!(jwt.jwks, tablecrypt_api::auth::JwksSource::Uri(_))
    {
        // Fetched before serving: without keys every JWT caller would be refused.
        authenticator.reload_jwks().await.map_err(|e| {
            anyhow::anyhow!("{e}; check jwt.jwks_uri and that the identity provider is reachable")
        })?;
    }
    let notifier_settings = config.notifier_settings()?;
    let database = open_store(&config).await?;
    let pool = database.pool.clone();
    let store = Store::new(pool.clone());
    let tasks = TaskTracker::new();
    let fleet = Arc::new(Fleet::new(fleet_settings(&config)).await);
    // Every replica with sinks routes and delivers notifications.
    let notifier = Notifier::new(store.clone(), fleet.clone(), notifier_settings)
        .context("failed to build the notification HTTP client")?;
    database.keep_token_fresh(&tasks, shutdown.clone());
    tasks.spawn(notifier.run(shutdown.clone()));
    tasks.spawn(ensure_audit_partitions(store.clone(), shutdown.clone()));

    let scanner = InventoryScanner::new(
        store.clone(),
        fleet.clone(),
        ScanSettings {
            concurrent_targets: config.scan_concurrent_targets.get() as usize,
            describes_in_flight: config.scan_describes_in_flight.get() as usize,
            describe_rate: config.scan_describe_rate,
            lease: config.scan_lease,
            ..ScanSettings::default()
        },
        tasks.clone(),
        shutdown.clone(),
    );
    tracing::info!(role = ?config.role, "starting");
    let registry = prometheus::Registry::new();
    let grpc_metrics =
        GrpcMetrics::register(&registry).context("failed to register gRPC metrics")?;
    let mut schema_fence = None;
    if config.role.runs_workers() {
        let metrics =
            EngineMetrics::register(&registry).context("failed to register engine metrics")?;
        let workers = Workers::new(
            store.clone(),
            fleet.clone(),
            worker_settings(&config),
            metrics,
        );
        schema_fence = Some(workers.schema_fence());
        tasks.spawn(workers.run(tasks.clone(), shutdown.clone()));
    }
    let changes = ChangeRequests::new(
        store.clone(),
        fleet.clone(),
        scanner.describe_limiter(),
        ChangeSettings {
            approval_required: config.approval_required,
            max_updates_per_second: config.update_rate,
            max_in_flight: config.max_tables_in_flight.get(),
            watch_interval: config.watch_interval,
            watch_max_duration: config.watch_max_duration,
            iac: config.iac_ownership()?,
        },
        shutdown.clone(),
    );
    let max_request_bytes = config.max_request_bytes.get() as usize;
    if auth_settings.jwt.is_some() {
        // An identity provider's key rotation reaches the server without a restart.
        let keys = authenticator.clone();
        tasks.spawn(crate::reload::periodically(
            "JWKS",
            config.jwks_reload_interval,
            authenticator.jwks_wanted(),
            shutdown.clone(),
            move || {
                let keys = keys.clone();
                async move { keys.reload_jwks().await }
            },
        ));
    }
    let auth = AuthLayer::new(
        authenticator,
        store.audit.clone(),
        &AuthLimits {
            calls_per_second: std::num::NonZeroU32::new(config.caller_rate_limit),
            unauthenticated_per_second: std::num::NonZeroU32::new(
                config.unauthenticated_rate_limit,
            ),
            audit_repeat_interval: config.audit_repeat_interval,
        },
        &tasks,
        shutdown.clone(),
    );
    let page_keys = config.page_token_keys()?.unwrap_or_else(|| {
        if config.role.serves_api() {
            tracing::warn!(
                "no page_token_keys configured: page tokens are signed with a key made at start, so a \
                 token works only on this replica and until it restarts; set page_token_keys_file (the same \
                 keys on every replica)"
            );
        }
        tablecrypt_api::page_token::PageTokenKeys::random()
    });
    let discovery_settings = config.discovery_settings()?;
    let discovery_interval = discovery_settings
        .as_ref()
        .and(config.discovery.as_ref())
        .and_then(|d| d.interval);
    let discovery =
        tablecrypt_engine::AccountDiscovery::new(store.clone(), fleet.clone(), discovery_settings);
    if let (Some(interval), true) = (discovery_interval, config.role.serves_api()) {
        tasks.spawn(discovery.clone().periodically(interval, shutdown.clone()));
    }
    let api = config.role.serves_api().then(|| {
        TableEncryptionServer::new(TableEncryptionService::new(
            store.clone(),
            scanner.clone(),
            changes,
            page_keys,
            discovery.clone(),
        ))
        .max_decoding_message_size(max_request_bytes)
    });
    // Every replica, whatever its role, scans its share of every running scan.
    tasks.spawn(scanner.clone().run());
    if let (Some(interval), true) = (config.inventory_scan_interval, config.role.serves_api()) {
        tasks.spawn(periodic_scans(scanner.clone(), interval, shutdown.clone()));
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    if api.is_some() {
        health
            .set_serving::<TableEncryptionServer<TableEncryptionService>>()
            .await;
    }
    if let Some(fence) = schema_fence {
        tasks.spawn(report_worker_health(
            fence,
            health.clone(),
            shutdown.clone(),
        ));
    }

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tablecrypt_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("failed to build reflection v1")?;
    // grpcurl 1.8 speaks only v1alpha.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tablecrypt_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("failed to build reflection v1alpha")?;

    if let Some(listener) = listeners.metrics {
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "serving Prometheus metrics on /metrics");
        let token = shutdown.clone();
        tasks.spawn(async move {
            if let Err(error) = metrics::serve(listener, registry, token).await {
                tracing::error!(%error, "metrics endpoint failed");
            }
        });
    }

    if let Some(listener) = listeners.health {
        // Health only, no TLS and no credentials: what a kubelet's gRPC probe can reach. It reports the same
        // status as the main listener, and stops with it.
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "serving plaintext gRPC health checks (grpc.health.v1 only)");
        let token = shutdown.clone();
        let service = health_service.clone();
        let handshake = config.connection_handshake_timeout;
        tasks.spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    crate::connections::bounded(listener, HEALTH_MAX_CONNECTIONS, handshake, None),
                    token.cancelled_owned(),
                )
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "health listener failed");
            }
        });
    }

    let grpc_addr = listeners.grpc.local_addr()?;
    tracing::info!(addr = %grpc_addr, "serving gRPC ({SERVICE_NAME}, health, reflection)");
    let stop_accepting = {
        let shutdown = shutdown.clone();
        let health = health.clone();
        async move {
            shutdown.cancelled().await;
            health
                .set_not_serving::<TableEncryptionServer<TableEncryptionService>>()
                .await;
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            tracing::info!("health is NOT_SERVING; draining in-flight calls");
        }
    };
    if config.insecure {
        tracing::warn!(
            tls = config.tls.is_some(),
            authentication = auth_settings.is_configured(),
            "INSECURE development mode: do not use in production (no TLS unless configured; without \
             configured authentication every caller is an admin named by x-tablecrypt-caller)"
        );
    }
    // Connections are bounded in number and in how long they may take to start (connections.rs); live ones are
    // pinged (a peer that stopped answering is dropped) and re-established after a maximum age.
    let spans = crate::trace_context::RpcSpans::new(grpc_metrics.served());
    let mut builder = tonic::transport::Server::builder()
        .trace_fn(move |request| spans.span(request))
        .timeout(config.request_timeout)
        .http2_keepalive_interval(Some(config.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(config.http2_keepalive_timeout));
    if let Some(age) = config.max_connection_age {
        builder = builder
            .max_connection_age(age)
            .max_connection_age_grace(MAX_CONNECTION_AGE_GRACE);
    }
    // TLS is the listener's own (reloadable, tls.rs), not tonic's.
    let tls = match &config.tls {
        None => None,
        Some(files) => {
            let tls = Arc::new(crate::tls::ServerTls::load(files)?);
            let files = tls.clone();
            tasks.spawn(crate::reload::periodically(
                "TLS",
                config.tls_reload_interval,
                None,
                shutdown.clone(),
                move || std::future::ready(files.reload().map_err(|e| format!("{e:#}"))),
            ));
            Some(tls)
        }
    };
    // The version header outermost (on every answer, refusals included); then metrics, so refused calls are
    // counted too; then authentication and the audit log.
    let server = builder
        .layer(tower::util::MapResponseLayer::new(with_version))
        .layer(GrpcMetricsLayer::new(grpc_metrics))
        .layer(auth.clone())
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_optional_service(api)
        .serve_with_incoming_shutdown(
            crate::connections::bounded(
                listeners.grpc,
                config.max_connections.get() as usize,
                config.connection_handshake_timeout,
                tls,
            ),
            stop_accepting,
        );

    let grace = config.shutdown_grace_period;
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server => result.context("gRPC server failed")?,
        () = deadline => tracing::warn!(grace = ?grace, "calls still in flight after the grace period; stopping anyway"),
    }

    shutdown.cancel();
    // The refusals repeated since the last interval, now that no call is left to add to them.
    auth.flush().await;
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop within 5 s");
    }
    pool.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The health service name of this replica's change workers: SERVING while they claim, NOT_SERVING while a newer
/// database schema fences them off (a rolling upgrade: replace this replica). The API's own status is separate.
pub const WORKER_HEALTH_NAME: &str = "tablecrypt.worker";

/// Keeps [`WORKER_HEALTH_NAME`] in step with the workers' schema fence until `shutdown`.
async fn report_worker_health(
    mut fence: tokio::sync::watch::Receiver<Option<tablecrypt_engine::SchemaFence>>,
    health: tonic_health::server::HealthReporter,
    shutdown: CancellationToken,
) {
    loop {
        let status = if fence.borrow_and_update().is_some() {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        };
        health.set_service_status(WORKER_HEALTH_NAME, status).await;
        tokio::select! {
            changed = fence.changed() => if changed.is_err() { break },
            () = shutdown.cancelled() => break,
        }
    }
    health
        .set_service_status(WORKER_HEALTH_NAME, ServingStatus::NotServing)
        .await;
}

fn worker_settings(config: &Config) -> WorkerSettings {
    WorkerSettings {
        lease: config.worker_lease,
        claim_interval: config.worker_claim_interval,
        concurrency: config.worker_concurrency.get() as usize,
        update_rate: config.update_rate,
        global_update_rate: config.global_update_rate,
        poll_rate: config.poll_rate,
        max_in_flight: config.max_tables_in_flight.get(),
        poll_initial: config.worker_poll_initial,
        poll_max: config.worker_poll_max,
        retry_initial: config.worker_retry_initial,
        retry_max: config.worker_retry_max,
        settle_timeout: config.worker_settle_timeout,
        known_migrations: config.known_migrations.clone(),
    }
}

fn fleet_settings(config: &Config) -> FleetSettings {
    FleetSettings {
        endpoint_url: (!config.aws_endpoint_url.is_empty())
            .then(|| config.aws_endpoint_url.clone()),
        sts_region: config.aws_sts_region.clone(),
        session_name: config.aws_session_name.clone(),
        ..FleetSettings::default()
    }
}

/// Every answer of the gRPC listener names the server's version (health checks included, which need no
/// credentials), so a client can say which server it talks to.
fn with_version<B>(mut response: http::Response<B>) -> http::Response<B> {
    response.headers_mut().insert(
        http::HeaderName::from_static(tablecrypt_proto::SERVER_VERSION_HEADER),
        http::HeaderValue::from_static(env!("CARGO_PKG_VERSION")),
    );
    response
}

/// Scans the whole fleet every `interval` until shutdown.
async fn periodic_scans(
    scanner: InventoryScanner,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match scanner.start_for("periodic", &[], &[]).await {
            Ok(scan_id) => tracing::info!(%scan_id, "periodic inventory scan started"),
            Err(error) => tracing::warn!(%error, "periodic inventory scan did not start"),
        }
    }
}
