//! moto's server as a second AWS implementation: a process of its own on a free port, killed on drop.
//!
//! tests/run.sh installs `moto[server]` into the repo's `.venv`; TABLECRYPT_MOTO_SERVER names another binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::{Child, Command};

/// A running `moto_server`.
pub struct MotoServer {
    pub addr: SocketAddr,
    _child: Child,
}

fn moto_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("TABLECRYPT_MOTO_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server");
    anyhow::ensure!(
        path.exists(),
        "moto_server not found at {}: run tests/run.sh (it installs tests/requirements.txt into .venv) \
         or set TABLECRYPT_MOTO_SERVER",
        path.display()
    );
    Ok(path)
}

impl MotoServer {
    /// Starts moto on a free loopback port and waits until it answers HTTP.
    pub async fn start() -> anyhow::Result<Self> {
        let binary = moto_binary()?;
        // moto picks no port of its own: take a free one from the kernel and hand it over.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("failed to start {}", binary.display()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..200 {
            if answers(addr).await {
                return Ok(Self {
                    addr,
                    _child: child,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("moto_server did not answer on {addr} within 10 s")
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn answers(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if stream
        .write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.is_ok() && head.starts_with(b"HTTP/1.")
}
