//! `tablecrypt inventory …`: start a scan and follow it with a progress bar.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tablecrypt_proto::v1 as pb;

use super::Ctx;
use crate::args::InventoryCommand;
use crate::error::{CliError, Result};
use crate::json::to_json;
use crate::names;
use crate::output::{print_table, table};

const POLL: Duration = Duration::from_millis(500);

pub async fn run(ctx: &Ctx, command: InventoryCommand) -> Result<()> {
    match command {
        InventoryCommand::Refresh {
            accounts,
            regions,
            no_wait,
            verbose,
        } => refresh(ctx, accounts, regions, no_wait, verbose).await,
        InventoryCommand::Scan { scan_id, verbose } => {
            let scan = get(ctx, scan_id).await?;
            report(ctx, &scan, verbose)
        }
    }
}

async fn get(ctx: &Ctx, scan_id: String) -> Result<pb::InventoryScan> {
    ctx.client()
        .await?
        .call(
            pb::GetInventoryScanRequest { scan_id },
            |mut api, request| async move { api.get_inventory_scan(request).await },
        )
        .await
}

async fn refresh(
    ctx: &Ctx,
    account_ids: Vec<String>,
    regions: Vec<String>,
    no_wait: bool,
    verbose: bool,
) -> Result<()> {
    let mut scan = ctx
        .client()
        .await?
        .call(
            pb::RefreshInventoryRequest {
                account_ids,
                regions,
            },
            |mut api, request| async move { api.refresh_inventory(request).await },
        )
        .await?;
    if no_wait {
        return report(ctx, &scan, verbose);
    }
    let bar = ProgressBar::new(u64::try_from(scan.targets_total).unwrap_or(0));
    bar.set_style(
        ProgressStyle::with_template(
            "scan {prefix} [{bar:30}] {pos}/{len} account-regions, {msg} ({elapsed}, ETA {eta})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(scan.scan_id.clone());
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    while scan.state == "RUNNING" {
        bar.set_length(u64::try_from(scan.targets_total).unwrap_or(0));
        bar.set_position(u64::try_from(scan.targets_done).unwrap_or(0));
        bar.set_message(format!("{} tables seen", scan.tables_seen));
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            _ = &mut interrupted => {
                bar.abandon();
                return Err(CliError::Interrupted(format!(
                    "stopped following scan {0}; it keeps running: tablecrypt inventory scan {0}",
                    scan.scan_id
                )));
            }
        }
        scan = get(ctx, scan.scan_id.clone()).await?;
    }
    bar.finish_and_clear();
    report(ctx, &scan, verbose)
}

/// The scan and each account-region's outcome; failed targets make the command fail.
/// The scan's totals, then a row per account-region that failed or is unfinished (every one with `verbose`): at
/// 300 accounts the successes would bury the few that need a look.
fn report(ctx: &Ctx, scan: &pb::InventoryScan, verbose: bool) -> Result<()> {
    if ctx.out.is_json() {
        ctx.out.json(&to_json(scan));
    } else {
        crate::outln!(
            "scan {}: {}, {}/{} account-regions done, {} failed, {} tables seen",
            scan.scan_id,
            scan.state,
            scan.targets_done,
            scan.targets_total,
            scan.targets_failed,
            scan.tables_seen
        );
        let mut rows = table(&["account", "region", "state", "tables", "gone", "failure"]);
        let shown: Vec<&pb::ScanTarget> = scan
            .targets
            .iter()
            .filter(|t| verbose || t.state != "SUCCEEDED")
            .collect();
        for t in &shown {
            rows.add_row(vec![
                t.account_id.clone(),
                t.region.clone(),
                t.state.clone(),
                t.tables_seen.to_string(),
                t.tables_gone.to_string(),
                names::failure(t.failure.as_ref()),
            ]);
        }
        if !shown.is_empty() {
            print_table(&rows);
        }
        if shown.len() < scan.targets.len() {
            crate::outln!(
                "({} account-regions succeeded; -v lists them)",
                scan.targets.len() - shown.len()
            );
        }
    }
    if scan.targets_failed > 0 {
        return Err(CliError::Failed(format!(
            "{} of {} account-regions could not be scanned",
            scan.targets_failed, scan.targets_total
        )));
    }
    Ok(())
}
