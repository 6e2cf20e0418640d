//! A change request's plan, for the person about to confirm it: counts by action and blocked reason, per
//! account-region, and the blocked tables with why.

use std::collections::BTreeMap;

use tablecrypt_proto::v1 as pb;

use crate::names;
use crate::output::{print_table, table};

/// How many blocked tables (and tables changed in more than one call) are listed one by one before "and N more".
const LISTED_ONE_BY_ONE: usize = 20;

#[derive(Default)]
struct Row {
    change: usize,
    calls: usize,
    skip: usize,
    blocked: usize,
    reasons: BTreeMap<String, usize>,
}

pub fn print(plan: &pb::CreateChangeRequestResponse) {
    let summary = plan.summary.clone().unwrap_or_default();
    if let Some(request) = &plan.change_request {
        let target = request.target.clone().unwrap_or_default();
        let to = if request.rollback_of.is_empty() {
            names::target(target.mode, &target.kms_key)
        } else {
            format!(
                "each table's key before change request {}",
                request.rollback_of
            )
        };
        crate::outln!("Target: {to}");
    }
    crate::outln!(
        "Plan: {} tables to change in {} UpdateTable calls, {} already compliant (skip), {} blocked",
        summary.change,
        summary.update_calls,
        summary.skip,
        summary.blocked
    );
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    for item in &plan.items {
        let row = rows
            .entry((item.account_id.clone(), item.region.clone()))
            .or_default();
        match pb::PlanAction::try_from(item.action) {
            Ok(pb::PlanAction::Change) => {
                row.change += 1;
                row.calls += item.planned_calls.len();
            }
            Ok(pb::PlanAction::Skip) => row.skip += 1,
            _ => {
                row.blocked += 1;
                *row.reasons.entry(names::reason(item.reason)).or_default() += 1;
            }
        }
    }
    let mut by_region = table(&[
        "account",
        "region",
        "change",
        "calls",
        "skip",
        "blocked",
        "blocked by",
    ]);
    for ((account, region), row) in &rows {
        let reasons: Vec<String> = row
            .reasons
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        by_region.add_row(vec![
            account.clone(),
            region.clone(),
            row.change.to_string(),
            row.calls.to_string(),
            row.skip.to_string(),
            row.blocked.to_string(),
            reasons.join(", "),
        ]);
    }
    let mut reasons: Vec<String> = summary
        .blocked_by_reason
        .iter()
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    reasons.sort();
    by_region.add_row(vec![
        "TOTAL".to_owned(),
        String::new(),
        summary.change.to_string(),
        summary.update_calls.to_string(),
        summary.skip.to_string(),
        summary.blocked.to_string(),
        reasons.join(", "),
    ]);
    print_table(&by_region);
    print_multi_call(&plan.items);
    let blocked: Vec<&pb::ChangeItem> = plan
        .items
        .iter()
        .filter(|i| i.action == pb::PlanAction::Blocked as i32)
        .collect();
    if !blocked.is_empty() {
        crate::outln!("\nBlocked tables (nothing will be applied to them):");
        let mut rows = table(&["account", "region", "table", "reason", "why"]);
        for item in blocked.iter().take(LISTED_ONE_BY_ONE) {
            rows.add_row(vec![
                item.account_id.clone(),
                item.region.clone(),
                item.table_name.clone(),
                names::reason(item.reason),
                item.message.clone(),
            ]);
        }
        print_table(&rows);
        if blocked.len() > LISTED_ONE_BY_ONE {
            crate::outln!(
                "… and {} more (see -o json)",
                blocked.len() - LISTED_ONE_BY_ONE
            );
        }
    }
}

/// Tables whose change takes more than one UpdateTable (global tables: one concern per call), with the calls.
fn print_multi_call(items: &[pb::ChangeItem]) {
    let multi: Vec<&pb::ChangeItem> = items.iter().filter(|i| i.planned_calls.len() > 1).collect();
    if multi.is_empty() {
        return;
    }
    crate::outln!(
        "\nTables changed in more than one UpdateTable (one concern per call, in this order):"
    );
    let mut rows = table(&["account", "table", "call", "carries", "sent in", "changes"]);
    for item in multi.iter().take(LISTED_ONE_BY_ONE) {
        for (n, call) in item.planned_calls.iter().enumerate() {
            rows.add_row(vec![
                item.account_id.clone(),
                item.table_name.clone(),
                (n + 1).to_string(),
                names::update_concern(call.concern),
                call.region.clone(),
                call.regions_changed.join(" "),
            ]);
        }
    }
    print_table(&rows);
    if multi.len() > LISTED_ONE_BY_ONE {
        crate::outln!(
            "… and {} more (see -o json)",
            multi.len() - LISTED_ONE_BY_ONE
        );
    }
}
