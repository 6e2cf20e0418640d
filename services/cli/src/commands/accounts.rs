//! `tablecrypt accounts …`: the fleet registry.

use std::collections::HashMap;

use tablecrypt_proto::v1 as pb;

use super::{Ctx, all_pages, import};
use crate::args::{AccountsCommand, RegisterArgs};
use crate::error::{CliError, Result};
use crate::json::to_json;
use crate::names;
use crate::output::{print_table, table};

pub async fn run(ctx: &Ctx, command: AccountsCommand) -> Result<()> {
    match command {
        AccountsCommand::Register(args) => register(ctx, args).await,
        AccountsCommand::List { selector, limit } => {
            list(
                ctx,
                selector.unwrap_or_default(),
                limit.unwrap_or(usize::MAX),
            )
            .await
        }
        AccountsCommand::Get { account_id } => get(ctx, account_id).await,
        AccountsCommand::Verify { account_id } => verify(ctx, account_id).await,
        AccountsCommand::Import { file, dry_run } => import::run(ctx, &file, dry_run).await,
        AccountsCommand::Deregister { account_id } => deregister(ctx, account_id).await,
        AccountsCommand::Discover { dry_run, prune } => discover(ctx, dry_run, prune).await,
    }
}

async fn discover(ctx: &Ctx, dry_run: bool, prune: bool) -> Result<()> {
    let answer = ctx
        .client()
        .await?
        .call(
            pb::DiscoverAccountsRequest { dry_run, prune },
            |mut api, request| async move { api.discover_accounts(request).await },
        )
        .await?;
    let action = |a: &pb::DiscoveredAccount| {
        a.action()
            .as_str_name()
            .trim_start_matches("ACTION_")
            .to_lowercase()
            .replace('_', " ")
    };
    if ctx.out.is_json() {
        ctx.out.json(&to_json(&answer));
    } else {
        let mut rows = table(&["account", "name", "ou", "action", "details"]);
        for account in &answer.accounts {
            let mut details = account.notes.join("; ");
            if !account.error.is_empty() {
                details = format!("FAILED: {} ({details})", account.error);
            }
            rows.add_row(vec![
                account.account_id.clone(),
                account.name.clone(),
                account.ou_path.clone(),
                action(account),
                details,
            ]);
        }
        print_table(&rows);
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for account in &answer.accounts {
            *counts.entry(action(account)).or_default() += 1;
        }
        let summary: Vec<String> = counts.iter().map(|(a, n)| format!("{n} {a}")).collect();
        crate::outln!(
            "{} account(s): {}{}",
            answer.accounts.len(),
            summary.join(", "),
            if answer.applied {
                ""
            } else {
                " (dry run: nothing was changed)"
            }
        );
    }
    let failed = answer
        .accounts
        .iter()
        .filter(|a| !a.error.is_empty())
        .count();
    if failed > 0 {
        return Err(CliError::Failed(format!(
            "{failed} account(s) were not changed (see above); run discovery again"
        )));
    }
    Ok(())
}

async fn register(ctx: &Ctx, args: RegisterArgs) -> Result<()> {
    let account = pb::Account {
        account_id: args.account_id,
        display_name: args.display_name,
        role_arn: args.role_arn,
        external_id: args.external_id.unwrap_or_default(),
        regions: args.regions,
        labels: args.labels.into_iter().collect::<HashMap<_, _>>(),
        ..Default::default()
    };
    let registered = ctx
        .client()
        .await?
        .call(
            pb::RegisterAccountRequest {
                account: Some(account),
            },
            |mut api, request| async move { api.register_account(request).await },
        )
        .await?;
    print_account(ctx, registered);
    Ok(())
}

async fn list(ctx: &Ctx, label_selector: String, limit: usize) -> Result<()> {
    let client = ctx.client().await?;
    let accounts = all_pages(limit, |page_token| {
        let request = pb::ListAccountsRequest {
            page_size: 1000,
            page_token,
            label_selector: label_selector.clone(),
        };
        async move {
            let page = client
                .call(request, |mut api, request| async move {
                    api.list_accounts(request).await
                })
                .await?;
            Ok((page.accounts, page.next_page_token))
        }
    })
    .await?;
    print_accounts(ctx, accounts);
    Ok(())
}

async fn get(ctx: &Ctx, account_id: String) -> Result<()> {
    let account = ctx
        .client()
        .await?
        .call(
            pb::GetAccountRequest { account_id },
            |mut api, request| async move { api.get_account(request).await },
        )
        .await?;
    print_account(ctx, account);
    Ok(())
}

async fn deregister(ctx: &Ctx, account_id: String) -> Result<()> {
    ctx.client()
        .await?
        .call(
            pb::DeregisterAccountRequest {
                account_id: account_id.clone(),
                etag: String::new(),
            },
            |mut api, request| async move { api.deregister_account(request).await },
        )
        .await?;
    if ctx.out.is_json() {
        ctx.out
            .json(&serde_json::json!({ "accountId": account_id, "deregistered": true }));
    } else {
        crate::outln!("account {account_id} deregistered");
    }
    Ok(())
}

async fn verify(ctx: &Ctx, account_id: String) -> Result<()> {
    let answer = ctx
        .client()
        .await?
        .call(
            pb::VerifyAccountRequest {
                account_id,
                regions: Vec::new(),
            },
            |mut api, request| async move { api.verify_account(request).await },
        )
        .await?;
    if ctx.out.is_json() {
        ctx.out.json(&to_json(&answer));
    } else {
        let mut rows = table(&["region", "ok", "tables", "identity or failure"]);
        for region in &answer.regions {
            rows.add_row(vec![
                region.region.clone(),
                if region.ok { "yes" } else { "NO" }.to_owned(),
                region.table_count.to_string(),
                if region.ok {
                    region.assumed_identity_arn.clone()
                } else {
                    names::failure(region.failure.as_ref())
                },
            ]);
        }
        print_table(&rows);
    }
    let failed = answer.regions.iter().filter(|r| !r.ok).count();
    if failed > 0 {
        return Err(CliError::Failed(format!(
            "account {}: {failed} of {} regions failed verification",
            answer.account_id,
            answer.regions.len()
        )));
    }
    Ok(())
}

/// One account: the message itself as JSON, or a one-row table.
fn print_account(ctx: &Ctx, account: pb::Account) {
    if ctx.out.is_json() {
        ctx.out.json(&to_json(&account));
    } else {
        print_accounts(ctx, vec![account]);
    }
}

fn print_accounts(ctx: &Ctx, accounts: Vec<pb::Account>) {
    if ctx.out.is_json() {
        ctx.out.json(&to_json(&pb::ListAccountsResponse {
            accounts,
            next_page_token: String::new(),
        }));
        return;
    }
    let mut rows = table(&["account", "name", "regions", "labels", "role"]);
    for account in &accounts {
        let mut labels: Vec<String> = account
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        rows.add_row(vec![
            account.account_id.clone(),
            account.display_name.clone(),
            account.regions.join(","),
            labels.join(","),
            account.role_arn.clone(),
        ]);
    }
    print_table(&rows);
}
