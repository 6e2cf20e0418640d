//! `tablecrypt`: the command-line client of the tablecrypt control plane. It talks only gRPC to the server.

mod args;
mod client;
mod commands;
mod error;
mod json;
mod names;
mod output;

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // clap exits with 2 on bad usage and 0 for --help/--version.
    let cli = args::Cli::parse();
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    }
}
