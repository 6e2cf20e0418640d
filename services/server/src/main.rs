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

/// Exit status of a configuration the server refuses (as clap uses for bad usage).
const EXIT_BAD_CONFIGURATION: u8 = 2;
/// Exit status of any other failure: a dependency unreachable (the database, a port taken), or the server
/// stopping with an error.
const EXIT_FAILED: u8 = 1;

/// One line on standard error naming what failed (every cause, no backtrace unless `RUST_BACKTRACE` asks).
fn report(error: &anyhow::Error) {
    let asked = |var: &str| std::env::var(var).is_ok_and(|v| v != "0");
    if asked("RUST_BACKTRACE") || asked("RUST_LIB_BACKTRACE") {
        eprintln!("tablecrypt-server: {error:?}");
    } else {
        eprintln!("tablecrypt-server: {}", one_line(error));
    }
}

/// Every cause once: many errors (sqlx's among them) repeat their source's text in their own, which `{:#}`
/// would print again for each layer.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        // A layer that ends with its source's text already said it.
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let mut config = match Config::load(cli.config.as_deref(), cli.insecure) {
        Ok(config) => config,
        Err(error) => {
            report(&error);
            return std::process::ExitCode::from(EXIT_BAD_CONFIGURATION);
        }
    };
    if let Some(role) = cli.role {
        config.role = role;
    }
    match run(cli.command.unwrap_or(Command::Serve), config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            report(&error);
            std::process::ExitCode::from(EXIT_FAILED)
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::CheckConfig => {
            print!("{}", config.to_toml()?);
            Ok(())
        }
        Command::Migrate => {
            let _telemetry = telemetry::init(&config)?;
            let database = server::open_store(&config).await?;
            database.pool.close().await;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve => {
            let telemetry = telemetry::init(&config)?;
            let listeners = Listeners::bind(&config).await?;
            let token = CancellationToken::new();
            tokio::spawn(shutdown::cancel_on_signal(token.clone()));
            let served = server::run(config, listeners, token)
                .await
                .context("server stopped with an error");
            // The last spans (the shutdown's calls, items handed back) leave before the process ends.
            tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
            served
        }
    }
}
