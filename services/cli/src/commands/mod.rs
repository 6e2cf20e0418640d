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

use std::future::Future;

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
    if cli.version {
        if cli.command.is_some() {
            return Err(crate::error::CliError::Usage(
                "--version takes no command".to_owned(),
            ));
        }
        return version(&ctx).await;
    }
    let Some(command) = cli.command else {
        return Err(crate::error::CliError::Usage(
            "a command is required (tablecrypt --help lists them)".to_owned(),
        ));
    };
    match command {
        Command::Accounts(command) => accounts::run(&ctx, command).await,
        Command::Tables(command) => tables::run(&ctx, command).await,
        Command::Inventory(command) => inventory::run(&ctx, command).await,
        Command::Keys(command) => keys::run(&ctx, command).await,
        Command::Migrate(args) => migrate::run(&ctx, args).await,
        Command::Requests(command) => requests::run(&ctx, command).await,
        Command::History(args) => history::run(&ctx, args).await,
        Command::Audit(args) => audit::run(&ctx, args).await,
        Command::Completion { shell } => {
            // Needs no server: the script is generated from the CLI's own definition.
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "tablecrypt", &mut script);
            // A reader that stops early (`| head`) is not an error of ours.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            Ok(())
        }
    }
}

/// Every item of a paginated list, at most `limit`: `page` fetches the page of a page token and returns its items
/// and the next page token (empty after the last page).
async fn all_pages<T, F, Fut>(limit: usize, mut page: F) -> Result<Vec<T>>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, String)>>,
{
    let mut items = Vec::new();
    let mut page_token = String::new();
    loop {
        let (batch, next_page_token) = page(page_token).await?;
        items.extend(batch);
        if next_page_token.is_empty() || items.len() >= limit {
            break;
        }
        page_token = next_page_token;
    }
    items.truncate(limit);
    Ok(items)
}

/// A change request's items in plan order, optionally only those in `states`, at most `limit`; and the aliases
/// of their keys.
async fn change_items(
    client: &Client,
    change_request_id: &str,
    states: Vec<i32>,
    limit: usize,
) -> Result<(
    Vec<tablecrypt_proto::v1::ChangeItem>,
    crate::names::KeyAliases,
)> {
    let aliases = std::cell::RefCell::new(crate::names::KeyAliases::new());
    let items = all_pages(limit, |page_token| {
        let request = tablecrypt_proto::v1::ListChangeItemsRequest {
            change_request_id: change_request_id.to_owned(),
            page_size: 1000,
            page_token,
            states: states.clone(),
        };
        let aliases = &aliases;
        async move {
            let page = client
                .call(request, |mut api, request| async move {
                    api.list_change_items(request).await
                })
                .await?;
            aliases.borrow_mut().extend(page.key_aliases);
            Ok((page.items, page.next_page_token))
        }
    })
    .await?;
    Ok((items, aliases.into_inner()))
}

/// `tablecrypt --version`: this CLI's version, then the server's, or why it could not be asked (exit 0 either
/// way: the CLI's own version is known).
async fn version(ctx: &Ctx) -> Result<()> {
    let cli = env!("CARGO_PKG_VERSION");
    let server = match ctx.client().await {
        Ok(client) => client
            .server_version()
            .await
            .map(|v| v.unwrap_or_else(|| "unknown (too old to say)".to_owned())),
        Err(e) => Err(e),
    };
    if ctx.out.is_json() {
        let (version, error) = match &server {
            Ok(v) => (Some(v.clone()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        ctx.out.json(&serde_json::json!({
            "cli": cli,
            "server": version,
            "serverAddress": ctx.global.server,
            "serverError": error,
        }));
    } else {
        crate::outln!("tablecrypt {cli}");
        match server {
            Ok(v) => crate::outln!("server {v} at {}", ctx.global.server),
            Err(e) => crate::outln!("server at {}: not reached ({e})", ctx.global.server),
        }
    }
    Ok(())
}
