//! What the benchmarks share: the emulator's admin API over plain HTTP, a fresh database, the server in-process
//! on port 0, worker processes to kill, account registration, and this process's peak RSS.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tablecrypt_proto::v1 as pb;
use tablecrypt_proto::v1::table_encryption_client::TableEncryptionClient;
use tablecrypt_server::{Config, Listeners};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// One HTTP/1.0 call to the emulator (its admin API lives under `/_emulator`). Returns the body.
pub async fn http(endpoint: &str, method: &str, path: &str, body: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(endpoint.trim_start_matches("http://")).await?;
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: e\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    anyhow::ensure!(
        response.contains(" 200 ") || response.contains(" 204 "),
        "{method} {path}: {response}"
    );
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

/// Peak resident set size of this process (VmHWM), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// A database of the benchmark's own on `postgres` (a server URL without a database), dropped by [`Self::drop_now`].
pub struct BenchDatabase {
    pub url: String,
    name: String,
    admin: sqlx::PgConnection,
}

impl BenchDatabase {
    pub async fn create(postgres: &str, label: &str) -> anyhow::Result<Self> {
        let name = format!("tablecrypt_bench_{label}_{}", std::process::id());
        let mut admin =
            <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{postgres}/postgres"))
                .await
                .context("connect to Postgres")?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        Ok(Self {
            url: format!("{postgres}/{name}"),
            name,
            admin,
        })
    }

    pub async fn drop_now(mut self) -> anyhow::Result<()> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut self.admin)
        .await?;
        Ok(())
    }
}

/// The server running in this process.
pub struct BenchServer {
    pub addr: SocketAddr,
    pub client: TableEncryptionClient<Channel>,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl BenchServer {
    /// Starts the server with `toml` (database, endpoint and limits) on port 0 and connects to it.
    pub async fn start(toml: &str) -> anyhow::Result<Self> {
        // The benchmark talks plaintext to its own in-process server, and registers a fleet as fast as it can
        // (the per-caller call limit is for shared servers, not this measurement).
        let config = Config::from_toml(&format!("insecure = true\ncaller_rate_limit = 0\n{toml}"))?;
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = grpc.local_addr()?;
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(tablecrypt_server::run(
            config,
            Listeners {
                grpc,
                metrics: None,
                health: None,
            },
            shutdown.clone(),
        ));
        let client = loop {
            anyhow::ensure!(!handle.is_finished(), "the server stopped during start");
            if let Ok(client) = TableEncryptionClient::connect(format!("http://{addr}")).await {
                break client;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok(Self {
            addr,
            client,
            shutdown,
            handle,
        })
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.handle.await;
    }
}

/// The `tablecrypt-server` binary next to this benchmark's (`target/<profile>/tablecrypt-server`).
pub fn server_binary() -> anyhow::Result<std::path::PathBuf> {
    let binary = std::env::current_exe()?
        .parent()
        .context("the benchmark's directory")?
        .join("tablecrypt-server");
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: cargo build --release -p tablecrypt-server",
        binary.display()
    );
    Ok(binary)
}

/// A `tablecrypt-server` worker process (`role = 'worker'`), for benchmarks that kill workers with SIGKILL.
pub struct WorkerProcess {
    binary: std::path::PathBuf,
    config: std::path::PathBuf,
    child: tokio::process::Child,
}

impl WorkerProcess {
    /// Starts the server binary next to this benchmark's (`target/<profile>/tablecrypt-server`) as a worker with
    /// `toml`, on a free port; `name` names its configuration file.
    pub fn start(name: &str, toml: &str) -> anyhow::Result<Self> {
        let binary = server_binary()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let config = std::env::temp_dir().join(format!(
            "tablecrypt-bench-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(
            &config,
            format!(
                "insecure = true
role = 'worker'
listen_addr = '127.0.0.1:{port}'
metrics_addr = 'off'
{toml}"
            ),
        )?;
        let child = spawn_worker(&binary, &config)?;
        Ok(Self {
            binary,
            config,
            child,
        })
    }

    /// SIGKILL, then the same process again at once: what a crash-looping pod does.
    pub async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        self.child = spawn_worker(&self.binary, &self.config)?;
        Ok(())
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_file(&self.config);
    }
}

fn spawn_worker(
    binary: &std::path::Path,
    config: &std::path::Path,
) -> anyhow::Result<tokio::process::Child> {
    let mut command = tokio::process::Command::new(binary);
    for (key, _) in std::env::vars() {
        if key.starts_with("TABLECRYPT_") {
            command.env_remove(key);
        }
    }
    Ok(command
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?)
}

/// Registers accounts `000000000001..=n`, each in eu-west-1 with role `member`.
pub async fn register_accounts(
    client: &mut TableEncryptionClient<Channel>,
    accounts: usize,
) -> anyhow::Result<()> {
    for i in 1..=accounts {
        client
            .register_account(pb::RegisterAccountRequest {
                account: Some(pb::Account {
                    account_id: format!("{i:012}"),
                    role_arn: format!("arn:aws:iam::{i:012}:role/member"),
                    regions: vec!["eu-west-1".into()],
                    ..Default::default()
                }),
            })
            .await
            .context("register")?;
    }
    Ok(())
}

/// Scans everything and waits for the scan to end; returns its state.
pub async fn scan(
    client: &mut TableEncryptionClient<Channel>,
) -> anyhow::Result<pb::InventoryScan> {
    let scan = client
        .refresh_inventory(pb::RefreshInventoryRequest::default())
        .await?
        .into_inner();
    loop {
        let now = client
            .get_inventory_scan(pb::GetInventoryScanRequest {
                scan_id: scan.scan_id.clone(),
            })
            .await?
            .into_inner();
        if now.state != "RUNNING" {
            return Ok(now);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
