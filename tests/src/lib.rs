//! Test harness: a fresh Postgres database per test and the real server on port 0, reached through the generated
//! tonic client over a real socket.

pub mod aws;
pub mod changes;
pub mod cli;
pub mod moto;
pub mod postgres;
pub mod process;
pub mod security;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::Connection as _;
use tablecrypt_proto::v1 as pb;
use tablecrypt_proto::v1::table_encryption_client::TableEncryptionClient;
use tablecrypt_server::{Config, Listeners};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Where tests create their databases; override with TABLECRYPT_TEST_ADMIN_URL.
fn admin_url() -> String {
    std::env::var("TABLECRYPT_TEST_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database of its own for one test, dropped (with its connections) when the value is.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> anyhow::Result<Self> {
        let admin = admin_url();
        let name = format!("tablecrypt_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .with_context(|| format!("failed to connect to Postgres at {admin}: is it running?"))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .context("failed to create the test database")?;
        conn.close().await.ok();
        let base = admin
            .rsplit_once('/')
            .map(|(base, _)| base)
            .unwrap_or(&admin);
        Ok(Self {
            url: format!("{base}/{name}"),
            name,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async context; use a short-lived runtime on its own thread.
        let handle = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url()).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                }
            });
        });
        let _ = handle.join();
    }
}

/// A running server.
pub struct TestApp {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub client: TableEncryptionClient<Channel>,
    pub channel: Channel,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    /// Starts the server against `db` on port 0, with extra TOML configuration lines.
    pub async fn spawn_with(db: &TestDatabase, extra_toml: &str) -> anyhow::Result<Self> {
        Self::spawn_on(&db.url, extra_toml).await
    }

    /// Starts the server against the database at `url` on port 0, with extra TOML configuration lines.
    pub async fn spawn_on(url: &str, extra_toml: &str) -> anyhow::Result<Self> {
        Self::spawn_inner(url, extra_toml, None, |_| {}).await
    }

    /// Starts the server against the database at `url` with extra TOML lines, then `edit` on the parsed
    /// configuration (for what no file sets, like the schema version the binary knows).
    pub async fn spawn_edited(
        url: &str,
        extra_toml: &str,
        edit: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        Self::spawn_inner(url, extra_toml, None, edit).await
    }

    /// Starts a server whose configuration (`extra_toml`) has `[tls]`; the client connects with `tls`.
    pub async fn spawn_tls(
        url: &str,
        extra_toml: &str,
        tls: tonic::transport::ClientTlsConfig,
    ) -> anyhow::Result<Self> {
        Self::spawn_inner(url, extra_toml, Some(tls), |_| {}).await
    }

    async fn spawn_inner(
        url: &str,
        extra_toml: &str,
        tls: Option<tonic::transport::ClientTlsConfig>,
        edit: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        // Development mode (plaintext, the caller named by a header) unless the test configures security itself.
        let insecure = if extra_toml.contains("insecure") {
            ""
        } else {
            "insecure = true"
        };
        let mut config = Config::from_toml(&format!(
            "{insecure}\ndatabase_url = '{url}'\nlog_format = 'pretty'\nshutdown_grace_period = '3s'\n{extra_toml}"
        ))?;
        edit(&mut config);
        let grpc = TcpListener::bind("127.0.0.1:0").await?;
        let metrics = TcpListener::bind("127.0.0.1:0").await?;
        let addr = grpc.local_addr()?;
        let metrics_addr = metrics.local_addr()?;
        let shutdown = CancellationToken::new();
        let mut handle = tokio::spawn(tablecrypt_server::run(
            config,
            Listeners {
                grpc,
                metrics: Some(metrics),
                health: None,
            },
            shutdown.clone(),
        ));
        let channel = connect(addr, &mut handle, tls).await?;
        Ok(Self {
            addr,
            metrics_addr,
            client: TableEncryptionClient::new(channel.clone()),
            channel,
            shutdown,
            handle,
        })
    }

    pub async fn spawn(db: &TestDatabase) -> anyhow::Result<Self> {
        Self::spawn_with(db, "").await
    }

    /// RefreshInventory, then polls GetInventoryScan until the scan leaves RUNNING (at most 15 s).
    pub async fn refresh_and_wait(
        &self,
        request: pb::RefreshInventoryRequest,
    ) -> pb::InventoryScan {
        let mut client = self.client.clone();
        let scan = client
            .refresh_inventory(request)
            .await
            .expect("refresh")
            .into_inner();
        for _ in 0..300 {
            let now = client
                .get_inventory_scan(pb::GetInventoryScanRequest {
                    scan_id: scan.scan_id.clone(),
                })
                .await
                .expect("get scan")
                .into_inner();
            if now.state != "RUNNING" {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("scan {} never finished", scan.scan_id);
    }

    /// One ListTableEncryptions page of up to 1000 rows, as `account/region/table` strings.
    pub async fn list_tables(&self, request: pb::ListTableEncryptionsRequest) -> Vec<String> {
        let mut client = self.client.clone();
        let page = client
            .list_table_encryptions(pb::ListTableEncryptionsRequest {
                page_size: 1000,
                ..request
            })
            .await
            .expect("list")
            .into_inner();
        page.tables
            .into_iter()
            .map(|t| format!("{}/{}/{}", t.account_id, t.region, t.table_name))
            .collect()
    }

    /// Begins shutdown without waiting for it.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts down as SIGTERM would and waits for the server to return.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .context("server did not stop")??
    }
}

/// Connects once the server answers; fails early if the server task ended (e.g. bad config).
async fn connect(
    addr: SocketAddr,
    handle: &mut JoinHandle<anyhow::Result<()>>,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> anyhow::Result<Channel> {
    let endpoint = match tls {
        None => Channel::from_shared(format!("http://{addr}"))?,
        Some(tls) => Channel::from_shared(format!("https://{addr}"))?.tls_config(tls)?,
    }
    .connect_timeout(Duration::from_secs(2));
    for _ in 0..100 {
        if handle.is_finished() {
            // The server's own error (bad configuration, a dependency out of reach), as its binary would print.
            return Err(match handle.await {
                Ok(Err(error)) => error.context("server exited during start"),
                Ok(Ok(())) => anyhow::anyhow!("server exited during start without an error"),
                Err(panic) => anyhow::anyhow!("server panicked during start: {panic}"),
            });
        }
        if let Ok(channel) = endpoint.connect().await {
            return Ok(channel);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("server at {addr} did not accept connections")
}

/// Reads `GET /metrics` over plain HTTP/1.0.
pub async fn scrape_metrics(addr: SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n")
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text)
}

/// Runs each of `statements` on the database at `url` and checks it is refused by an append-only trigger:
/// SQLSTATE 42501 (insufficient_privilege), not a syntax error, a lock timeout or any error at all.
pub async fn assert_append_only(url: &str, statements: &[&str]) {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .expect("db");
    for sql in statements {
        let refused = sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
            .execute(&mut conn)
            .await
            .expect_err("refused");
        assert_eq!(
            refused
                .as_database_error()
                .and_then(|e| e.code())
                .as_deref(),
            Some("42501"),
            "{sql}: {refused}"
        );
    }
}
