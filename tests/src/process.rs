//! The real `tablecrypt-server` binary as a child process, for tests that kill it (SIGKILL) and restart it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tablecrypt_proto::v1::table_encryption_client::TableEncryptionClient;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// The server binary: `TC_TEST_SERVER_BIN` (not `TABLECRYPT_*`: the server reads every such variable as
/// configuration and refuses unknown ones), else `tablecrypt-server` next to the test's target directory
/// (tests/run.sh builds it before the tests run).
pub fn server_binary() -> PathBuf {
    built_binary("tablecrypt-server", "TC_TEST_SERVER_BIN")
}

/// The CLI binary: `TC_TEST_CLI_BIN`, else `tablecrypt` next to the test's target directory.
pub fn cli_binary() -> PathBuf {
    built_binary("tablecrypt", "TC_TEST_CLI_BIN")
}

fn built_binary(name: &str, env_var: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env_var) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> -> target/debug/<name>
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join(name))
        .expect("target directory");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bin {name}` first (tests/run.sh does)",
        path.display()
    );
    path
}

/// A running server process, configured only through the environment.
pub struct ServerProcess {
    pub addr: SocketAddr,
    env: Vec<(String, String)>,
    child: Child,
}

impl ServerProcess {
    /// Starts the binary listening on `addr` with `env` (TABLECRYPT_* and DATABASE_URL), and waits until it
    /// accepts connections.
    pub async fn start(addr: SocketAddr, env: &[(&str, String)]) -> Self {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let child = spawn(addr, &env);
        let mut process = Self { addr, env, child };
        process.wait_ready().await;
        process
    }

    async fn wait_ready(&mut self) {
        for _ in 0..400 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tablecrypt-server exited during start: {status}");
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("tablecrypt-server never listened on {}", self.addr);
    }

    /// SIGKILL: no shutdown hooks, leases left held, whatever was in flight lost.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill -9 the server");
    }

    /// SIGTERM, as Kubernetes stops a pod, then waits (at most 30 s) for the process to exit by itself.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("the server is running");
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("kill -TERM");
        assert!(sent.success(), "kill -TERM {pid}: {sent}");
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the server exits within 30 s of SIGTERM")
            .expect("wait for the server")
    }

    /// Starts it again with the same address and environment.
    pub async fn restart(&mut self) {
        self.child = spawn(self.addr, &self.env);
        self.wait_ready().await;
    }

    pub async fn client(&self) -> TableEncryptionClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect to the server");
        TableEncryptionClient::new(channel)
    }
}

fn spawn(addr: SocketAddr, env: &[(String, String)]) -> Child {
    let mut command = Command::new(server_binary());
    // Only the configuration given here: nothing inherited from the test's own environment.
    for (key, _) in std::env::vars() {
        if key.starts_with("TABLECRYPT_") {
            command.env_remove(key);
        }
    }
    command
        .arg("serve")
        .env("TABLECRYPT_LISTEN_ADDR", addr.to_string())
        .env("TABLECRYPT_METRICS_ADDR", "off")
        .env("TABLECRYPT_INSECURE", "true")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start tablecrypt-server")
}

/// The environment of a server binary on the database at `database_url` reaching AWS at the fleet emulator's
/// `endpoint` with the emulator's hub credentials; tests add their own settings.
pub fn emulator_env(database_url: &str, endpoint: String) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", database_url.to_owned()),
        ("AWS_ACCESS_KEY_ID", crate::aws::HUB_ACCESS_KEY_ID.into()),
        (
            "AWS_SECRET_ACCESS_KEY",
            crate::aws::HUB_SECRET_ACCESS_KEY.into(),
        ),
        ("TABLECRYPT_AWS_ENDPOINT_URL", endpoint),
        // The emulator shows a change within seconds: a send whose fate a kill left unknown need not wait the
        // production default of minutes before it is sent again.
        ("TABLECRYPT_WORKER_SETTLE_TIMEOUT", "10s".into()),
    ]
}

/// A free local port (bound and released; good enough for tests).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// Registers `accounts` (eu-west-1, the `tablecrypt-member` role) through `client`, scans them and waits until the
/// scan succeeded: the start of the tests that run the server binary on a generated fleet.
pub async fn register_and_scan(client: &mut TableEncryptionClient<Channel>, accounts: &[&str]) {
    use tablecrypt_proto::v1 as pb;
    for account in accounts {
        client
            .register_account(pb::RegisterAccountRequest {
                account: Some(pb::Account {
                    account_id: (*account).into(),
                    role_arn: format!("arn:aws:iam::{account}:role/tablecrypt-member"),
                    regions: vec!["eu-west-1".into()],
                    ..Default::default()
                }),
            })
            .await
            .expect("register");
    }
    let scan = client
        .refresh_inventory(pb::RefreshInventoryRequest::default())
        .await
        .expect("scan")
        .into_inner();
    for _ in 0..600 {
        let now = client
            .get_inventory_scan(pb::GetInventoryScanRequest {
                scan_id: scan.scan_id.clone(),
            })
            .await
            .expect("scan state")
            .into_inner();
        if now.state != "RUNNING" {
            assert_eq!(now.state, "SUCCEEDED", "{now:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the scan did not end within a minute");
}
