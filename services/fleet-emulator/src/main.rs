//! `fleet-emulator`: serve an emulated AWS fleet (STS, KMS, DynamoDB control plane) for demos and tests, or
//! calibrate its behaviour switches against a real AWS account (`fleet-emulator calibrate`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use fleet_emulator::{Emulator, FleetSpec};
use tokio_util::sync::CancellationToken;

/// An AWS-faithful stand-in for STS, KMS and the DynamoDB control plane across many accounts.
#[derive(Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Serve,
}

#[derive(Subcommand)]
enum Command {
    /// Measure, in a sandbox AWS account, each behaviour the emulator has a switch for, and write a behaviour
    /// profile it can load. Prints its plan (resources, time, cost) and does nothing without --yes.
    ///
    /// Example: fleet-emulator calibrate --region eu-west-1 --replica-region us-east-1 --yes
    Calibrate(fleet_emulator::calibrate::Options),
}

#[derive(clap::Args)]
struct Serve {
    /// Fleet file (YAML). Without one the emulator starts with only the hub account.
    #[arg(long, env = "FLEET_EMULATOR_FLEET")]
    fleet: Option<PathBuf>,
    /// Where to serve AWS requests and the admin API (/_emulator/).
    #[arg(long, env = "FLEET_EMULATOR_LISTEN", default_value = "127.0.0.1:4566")]
    listen: SocketAddr,
    /// A behaviour profile written by `fleet-emulator calibrate`, in place of the fleet file's
    /// `behaviour_profile`; the fleet file's `behaviour` switches stay over it.
    #[arg(long, env = "FLEET_EMULATOR_BEHAVIOUR_PROFILE")]
    behaviour_profile: Option<PathBuf>,
}

/// Cancelled at Ctrl-C or SIGTERM.
fn shutdown_signal() -> CancellationToken {
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
    shutdown
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Calibrate(options)) => {
            fleet_emulator::calibrate::run(options, shutdown_signal())
                .await
                .map(drop)
        }
        None => serve(cli.serve).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fleet-emulator: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Serve) -> anyhow::Result<()> {
    let fleet = match (&args.fleet, &args.behaviour_profile) {
        (Some(path), profile) => FleetSpec::from_file(path, profile.as_deref())?,
        (None, Some(profile)) => {
            let mut fleet = FleetSpec::default();
            fleet.use_profile(profile)?;
            fleet
        }
        (None, None) => FleetSpec::default(),
    };
    let started = std::time::Instant::now();
    let emulator = Emulator::new(fleet).context("failed to build the fleet")?;
    let summary = emulator.shared().world.summary();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("failed to listen on {}", args.listen))?;
    let hub = emulator.shared().world.hub();
    let settings = emulator.shared().world.settings();
    let measured = settings
        .behaviour_measured
        .map(|m| {
            format!(
                "; behaviour measured in account {} ({}) on {}",
                m.account_id,
                m.regions.join(", "),
                m.started.format("%Y-%m-%d")
            )
        })
        .unwrap_or_default();
    eprintln!(
        "fleet-emulator serving on http://{} ({} accounts, {} tables, {} keys; loaded in {:.2?}); hub access key {}{measured}",
        listener.local_addr()?,
        summary["accounts"],
        summary["tables"],
        summary["keys"],
        started.elapsed(),
        hub.access_key_id
    );
    emulator
        .serve(listener, shutdown_signal())
        .await
        .context("server failed")
}
