//! `tablecrypt keys usage KEY`: whether a key can be retired.

use tablecrypt_proto::v1 as pb;

use super::Ctx;
use crate::args::KeysCommand;
use crate::error::Result;
use crate::json::to_json;
use crate::output::{print_table, table};

pub async fn run(ctx: &Ctx, command: KeysCommand) -> Result<()> {
    let KeysCommand::Usage {
        kms_key,
        account,
        region,
    } = command;
    let usage = ctx
        .client()
        .await?
        .call(
            pb::GetKeyUsageRequest {
                kms_key,
                account_id: account.unwrap_or_default(),
                region: region.unwrap_or_default(),
            },
            |mut api, request| async move { api.get_key_usage(request).await },
        )
        .await?;
    if ctx.out.is_json() {
        ctx.out.json(&to_json(&usage));
        return Ok(());
    }
    let scanned = scanned(usage.inventory_time.as_ref());
    let key = match usage.key_aliases.get(&usage.kms_key_arn) {
        Some(alias) => format!("{} ({alias})", usage.kms_key_arn),
        None => usage.kms_key_arn.clone(),
    };
    if usage.unused {
        crate::outln!("{key}: no inventoried table or replica uses this key ({scanned}).");
        return Ok(());
    }
    let mut rows = table(&["account", "region", "table", "where"]);
    for t in &usage.tables {
        let primary = t.kms_key_arn == usage.kms_key_arn;
        let replicas: Vec<&str> = t
            .replicas
            .iter()
            .filter(|r| r.kms_key_arn == usage.kms_key_arn)
            .map(|r| r.region.as_str())
            .collect();
        let mut places = Vec::new();
        if primary {
            places.push("table".to_owned());
        }
        if !replicas.is_empty() {
            places.push(format!("replica in {}", replicas.join(",")));
        }
        rows.add_row(vec![
            t.account_id.clone(),
            t.region.clone(),
            t.table_name.clone(),
            places.join("; "),
        ]);
    }
    print_table(&rows);
    crate::outln!(
        "{} tables use {key}; migrate them before disabling it ({scanned}).",
        usage.tables.len()
    );
    Ok(())
}

/// How fresh the inventory behind the answer is, in words.
fn scanned(time: Option<&prost_types::Timestamp>) -> String {
    let Some(time) = time.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0)) else {
        return "its account-region was never scanned: run tablecrypt inventory refresh first"
            .to_owned();
    };
    let age = (chrono::Utc::now() - time).to_std().unwrap_or_default();
    let age = std::time::Duration::from_secs(age.as_secs());
    format!(
        "its account-region was last scanned {} ago, at {}; refresh first if that is old",
        humantime::format_duration(age),
        time.format("%Y-%m-%d %H:%M UTC")
    )
}
