//! `tablecrypt-server`: serve the API (default) or apply migrations.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tablecrypt_server::config::Role;
use tablecrypt_server::{Config, Listeners, server, shutdown, telemetry};
use tokio_util::sync::CancellationToken;

/// tablecrypt control plane for DynamoDB encryption at rest.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file; environment variables (TABLECRYPT_*, DATABASE_URL) override it.
    #[arg(long, short, env = "TABLECRYPT_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// What this process runs: all (API and change workers), api, or worker. Overrides `role` in the config.
    #[arg(long, value_enum, global = true)]
    role: Option<Role>,
    /// Development only: plaintext gRPC, and without configured authentication every caller is an admin named
    /// by the x-tablecrypt-caller header. Same as `insecure = true` in the config.
    #[arg(long, global = true)]
    insecure: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Apply migrations, then serve the gRPC API until SIGTERM or SIGINT (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Load and validate the configuration, print it (secrets redacted) and exit.
    CheckConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = Config::load(cli.config.as_deref(), cli.insecure)?;
    if let Some(role) = cli.role {
        config.role = role;
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            println!("{config:#?}");
            Ok(())
        }
        Command::Migrate => {
            telemetry::init(config.log_format, &config.log_filter)?;
            let pool = server::open_store(&config).await?;
            pool.close().await;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve => {
            telemetry::init(config.log_format, &config.log_filter)?;
            let listeners = Listeners::bind(&config).await?;
            let token = CancellationToken::new();
            tokio::spawn(shutdown::cancel_on_signal(token.clone()));
            server::run(config, listeners, token)
                .await
                .context("server stopped with an error")
        }
    }
}
