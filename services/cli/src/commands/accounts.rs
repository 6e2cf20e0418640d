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
        AccountsCommand::Verify {
            account_id: Some(account_id),
            ..
        } => verify(ctx, account_id).await,
        AccountsCommand::Verify { selector, .. } => {
            verify_many(ctx, selector.unwrap_or_default()).await
        }
        AccountsCommand::Import {
            file,
            dry_run,
            check,
        } => import::run(ctx, &file, dry_run, check).await,
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
    let accounts = accounts_matching(ctx.client().await?, &label_selector, limit).await?;
    print_accounts(ctx, accounts);
    Ok(())
}

/// The registered accounts (that the caller may see) whose labels match `label_selector`, at most `limit`.
async fn accounts_matching(
    client: &crate::client::Client,
    label_selector: &str,
    limit: usize,
) -> Result<Vec<pb::Account>> {
    all_pages(limit, |page_token| {
        let request = pb::ListAccountsRequest {
            page_size: 1000,
            page_token,
            label_selector: label_selector.to_owned(),
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
    .await
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

async fn verify_one(
    client: &crate::client::Client,
    account_id: String,
) -> Result<pb::VerifyAccountResponse> {
    client
        .call(
            pb::VerifyAccountRequest {
                account_id,
                regions: Vec::new(),
            },
            |mut api, request| async move { api.verify_account(request).await },
        )
        .await
}

/// Accounts verified at once. Each VerifyAccount makes two AWS calls (AssumeRole, ListTables) per region of the
/// account, about 100 ms each: 8 at a time verify 300 accounts in 2 regions in ~15 s, while the server's STS
/// calls stay at a few dozen per second, far below STS's per-account quota.
const VERIFY_CONCURRENCY: usize = 8;

/// How a verification ends: done when nothing failed; exit 4 when AWS denied a member role anywhere (fix the role
/// in that account); exit 1 for any other failure.
fn verdict(failed: usize, denied: usize, message: impl FnOnce() -> String) -> Result<()> {
    match (failed, denied) {
        (0, _) => Ok(()),
        (_, 0) => Err(CliError::Failed(message())),
        _ => Err(CliError::AwsDenied(message())),
    }
}

/// Every account `selector` matches (empty: all), one summary row each, failures first in the exit code: 4 if
/// AWS denied any account's role, 1 if anything else failed.
async fn verify_many(ctx: &Ctx, selector: String) -> Result<()> {
    use futures_util::{StreamExt as _, stream};
    let client = ctx.client().await?;
    let accounts = accounts_matching(client, &selector, usize::MAX).await?;
    if accounts.is_empty() {
        return Err(CliError::Failed(if selector.is_empty() {
            "no account is registered (or none you may see)".to_owned()
        } else {
            format!("no account matches `{selector}` (tablecrypt accounts list shows the labels)")
        }));
    }
    let answers: Vec<Result<pb::VerifyAccountResponse>> = stream::iter(&accounts)
        .map(|account| verify_one(client, account.account_id.clone()))
        .buffered(VERIFY_CONCURRENCY)
        .collect()
        .await;
    // The server unreachable or the credentials refused (mid-run too): that is the answer, not a row per account.
    if let Some(Err(CliError::Access(message))) = answers
        .iter()
        .find(|a| matches!(a, Err(CliError::Access(_))))
    {
        return Err(CliError::Access(message.clone()));
    }
    let mut rows = table(&["account", "name", "regions ok", "failures"]);
    let (mut failed, mut denied) = (0, 0);
    let mut json = Vec::new();
    for (account, answer) in accounts.iter().zip(answers) {
        let (ok, failures) = match &answer {
            Ok(answer) => {
                let bad = failed_regions(answer);
                let unavailable = answer.regions.iter().filter(|r| is_unavailable(r)).count();
                if bad.iter().any(|r| is_denied(r.failure.as_ref())) {
                    denied += 1;
                }
                let failures = bad
                    .iter()
                    .map(|r| format!("{}: {}", r.region, names::failure(r.failure.as_ref())))
                    .collect::<Vec<_>>()
                    .join("; ");
                let ok = answer.regions.len() - bad.len() - unavailable;
                let mut counts = format!("{ok}/{}", answer.regions.len());
                if unavailable > 0 {
                    counts.push_str(&format!(" ({unavailable} unavailable)"));
                }
                (counts, failures)
            }
            Err(e) => {
                if matches!(e, CliError::AwsDenied(_)) {
                    denied += 1;
                }
                ("-".to_owned(), e.to_string())
            }
        };
        if !failures.is_empty() {
            failed += 1;
        }
        json.push(match answer {
            Ok(answer) => to_json(&answer),
            Err(error) => serde_json::json!({
                "accountId": account.account_id,
                "error": error.to_string(),
            }),
        });
        rows.add_row(vec![
            account.account_id.clone(),
            account.display_name.clone(),
            ok,
            failures,
        ]);
    }
    if ctx.out.is_json() {
        ctx.out.json(&serde_json::json!({ "accounts": json }));
    } else {
        print_table(&rows);
        crate::outln!(
            "{} account(s) verified: {} ok, {failed} with failures",
            accounts.len(),
            accounts.len() - failed
        );
    }
    verdict(failed, denied, || {
        format!(
            "{failed} of {} accounts failed verification ({denied} with AWS denying the member role)",
            accounts.len()
        )
    })
}

fn is_denied(failure: Option<&pb::AwsFailure>) -> bool {
    failure.is_some_and(|f| f.kind == pb::FailureKind::AccessDenied as i32)
}

/// A region the account cannot use (an opt-in region it has not enabled, or one an SCP denies): its state, not a
/// failure.
fn is_unavailable(region: &pb::RegionVerification) -> bool {
    !region.ok
        && region
            .failure
            .as_ref()
            .is_some_and(|f| f.kind == pb::FailureKind::RegionUnavailable as i32)
}

/// The regions that failed verification: not ok, and not merely unavailable.
fn failed_regions(answer: &pb::VerifyAccountResponse) -> Vec<&pb::RegionVerification> {
    answer
        .regions
        .iter()
        .filter(|r| !r.ok && !is_unavailable(r))
        .collect()
}

async fn verify(ctx: &Ctx, account_id: String) -> Result<()> {
    let answer = verify_one(ctx.client().await?, account_id).await?;
    if ctx.out.is_json() {
        ctx.out.json(&to_json(&answer));
    } else {
        let mut rows = table(&["region", "ok", "tables", "identity or failure"]);
        for region in &answer.regions {
            let ok = if region.ok {
                "yes"
            } else if is_unavailable(region) {
                "unavailable"
            } else {
                "NO"
            };
            rows.add_row(vec![
                region.region.clone(),
                ok.to_owned(),
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
    let failed = failed_regions(&answer);
    let denied = failed
        .iter()
        .filter(|r| is_denied(r.failure.as_ref()))
        .count();
    verdict(failed.len(), denied, || {
        format!(
            "account {}: {} of {} regions failed verification",
            answer.account_id,
            failed.len(),
            answer.regions.len()
        )
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verification_exits_4_when_aws_denied_a_role_and_1_for_anything_else() {
        assert!(verdict(0, 0, String::new).is_ok());
        assert!(matches!(
            verdict(2, 0, String::new),
            Err(CliError::Failed(_))
        ));
        assert!(matches!(
            verdict(2, 1, String::new),
            Err(CliError::AwsDenied(_))
        ));
    }
}
