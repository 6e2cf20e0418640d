//! `fleet-emulator`: serve an emulated AWS fleet (STS, KMS, DynamoDB control plane) for demos and tests.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use fleet_emulator::{Emulator, FleetSpec};
use tokio_util::sync::CancellationToken;

/// An AWS-faithful stand-in for STS, KMS and the DynamoDB control plane across many accounts.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Fleet file (YAML). Without one the emulator starts with only the hub account.
    #[arg(long, env = "FLEET_EMULATOR_FLEET")]
    fleet: Option<PathBuf>,
    /// Where to serve AWS requests and the admin API (/_emulator/).
    #[arg(long, env = "FLEET_EMULATOR_LISTEN", default_value = "127.0.0.1:4566")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cli = Cli::parse();
    let fleet = match &cli.fleet {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("failed to read {}", path.display()))?;
            FleetSpec::from_yaml(&text)
                .with_context(|| format!("failed to load {}", path.display()))?
        }
        None => FleetSpec::default(),
    };
    let started = std::time::Instant::now();
    let emulator = Emulator::new(fleet).context("failed to build the fleet")?;
    let summary = emulator.shared().world.summary();
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("failed to listen on {}", cli.listen))?;
    let hub = emulator.shared().world.hub();
    eprintln!(
        "fleet-emulator serving on http://{} ({} accounts, {} tables, {} keys; loaded in {:.2?}); hub access key {}",
        listener.local_addr()?,
        summary["accounts"],
        summary["tables"],
        summary["keys"],
        started.elapsed(),
        hub.access_key_id
    );
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        token.cancel();
    });
    #[cfg(unix)]
    {
        let token = shutdown.clone();
        tokio::spawn(async move {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                term.recv().await;
                token.cancel();
            }
        });
    }
    emulator
        .serve(listener, shutdown)
        .await
        .context("server failed")
}
