//! One module per command group; each reads its flags, calls the server and prints the answer.

mod accounts;
mod audit;
mod history;
mod import;
mod inventory;
mod keys;
mod migrate;
mod plan;
mod requests;
mod tables;
mod watch;

use tokio::sync::OnceCell;

use crate::args::{Cli, Command, GlobalArgs};
use crate::client::Client;
use crate::error::Result;
use crate::output::Printer;

/// What every command needs: the connection (made on first use, so a bad input file is reported without one)
/// and the printer.
pub struct Ctx {
    global: GlobalArgs,
    client: OnceCell<Client>,
    pub out: Printer,
}

impl Ctx {
    pub async fn client(&self) -> Result<&Client> {
        self.client
            .get_or_try_init(|| Client::connect(&self.global))
            .await
    }
}

pub async fn run(cli: Cli) -> Result<()> {
    let ctx = Ctx {
        out: Printer {
            format: cli.global.output,
        },
        global: cli.global,
        client: OnceCell::new(),
    };
    match cli.command {
        Command::Accounts(command) => accounts::run(&ctx, command).await,
        Command::Tables(command) => tables::run(&ctx, command).await,
        Command::Inventory(command) => inventory::run(&ctx, command).await,
        Command::Keys(command) => keys::run(&ctx, command).await,
        Command::Migrate(args) => migrate::run(&ctx, args).await,
        Command::Requests(command) => requests::run(&ctx, command).await,
        Command::History(args) => history::run(&ctx, args).await,
        Command::Audit(args) => audit::run(&ctx, args).await,
    }
}

/// Whether a page loop should stop: no more pages, or `limit` reached.
fn last_page(next_page_token: &str, collected: usize, limit: usize) -> bool {
    next_page_token.is_empty() || collected >= limit
}
