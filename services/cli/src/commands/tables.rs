//! `tablecrypt tables …`: the inventory, and one table read live.

use tablecrypt_core::iac::CLOUDFORMATION_STACK_TAG;
use tablecrypt_proto::v1 as pb;

use super::{Ctx, all_pages};
use crate::args::{Mode, TableFilters, TablesCommand};
use crate::error::Result;
use crate::json::to_json;
use crate::names;
use crate::output::{print_table, table};

pub async fn run(ctx: &Ctx, command: TablesCommand) -> Result<()> {
    match command {
        TablesCommand::List { filters } => list(ctx, filters).await,
        TablesCommand::Get {
            account_id,
            region,
            table_name,
        } => {
            let found = ctx
                .client()
                .await?
                .call(
                    pb::GetTableEncryptionRequest {
                        account_id,
                        region,
                        table_name,
                    },
                    |mut api, request| async move { api.get_table_encryption(request).await },
                )
                .await?;
            if ctx.out.is_json() {
                ctx.out.json(&to_json(&found));
            } else {
                print_tables(ctx, vec![found], names::KeyAliases::new());
            }
            Ok(())
        }
    }
}

pub fn mode_to_proto(mode: Option<Mode>) -> i32 {
    (match mode {
        None => pb::EncryptionMode::Unspecified,
        Some(Mode::AwsOwned) => pb::EncryptionMode::AwsOwned,
        Some(Mode::AwsManaged) => pb::EncryptionMode::AwsManaged,
        Some(Mode::CustomerManaged) => pb::EncryptionMode::CustomerManaged,
    }) as i32
}

async fn list(ctx: &Ctx, filters: TableFilters) -> Result<()> {
    let client = ctx.client().await?;
    let base = pb::ListTableEncryptionsRequest {
        page_size: 1000,
        page_token: String::new(),
        account_ids: filters.accounts,
        account_label_selector: filters.selector.unwrap_or_default(),
        regions: filters.regions,
        mode: mode_to_proto(filters.mode),
        kms_key: filters.kms_key.unwrap_or_default(),
        table_name_prefix: filters.prefix.unwrap_or_default(),
        inaccessible_only: filters.inaccessible,
        include_gone: filters.include_gone,
        table_tag_selector: filters.tag.unwrap_or_default(),
    };
    let aliases = std::cell::RefCell::new(names::KeyAliases::new());
    let tables = all_pages(filters.limit.unwrap_or(usize::MAX), |page_token| {
        let request = pb::ListTableEncryptionsRequest {
            page_token,
            ..base.clone()
        };
        let aliases = &aliases;
        async move {
            let page = client
                .call(request, |mut api, request| async move {
                    api.list_table_encryptions(request).await
                })
                .await?;
            aliases.borrow_mut().extend(page.key_aliases);
            Ok((page.tables, page.next_page_token))
        }
    })
    .await?;
    let count = tables.len();
    print_tables(ctx, tables, aliases.into_inner());
    if !ctx.out.is_json() {
        eprintln!("{count} tables");
    }
    Ok(())
}

/// Who owns the table as infrastructure as code: the tool behind the tag, "-" for nobody, "?" when no scan read
/// its tags.
fn iac_column(table: &pb::EncryptedTable) -> String {
    if !table.tags_read {
        return "?".to_owned();
    }
    match table.iac_owner.split_once('=') {
        None => "-".to_owned(),
        Some((key, _)) if key == CLOUDFORMATION_STACK_TAG => "cloudformation".to_owned(),
        Some(_) => table.iac_owner.clone(),
    }
}

fn print_tables(ctx: &Ctx, tables: Vec<pb::EncryptedTable>, key_aliases: names::KeyAliases) {
    if ctx.out.is_json() {
        ctx.out.json(&to_json(&pb::ListTableEncryptionsResponse {
            tables,
            next_page_token: String::new(),
            key_aliases,
        }));
        return;
    }
    let mut rows = table(&[
        "account",
        "region",
        "table",
        "encryption",
        "sse",
        "status",
        "iac",
        "observed",
    ]);
    for t in &tables {
        let mut status = t.table_status.clone();
        if t.inaccessible_since.is_some() {
            status.push_str(" (key inaccessible)");
        }
        if t.gone {
            status = "GONE".to_owned();
        }
        rows.add_row(vec![
            t.account_id.clone(),
            t.region.clone(),
            t.table_name.clone(),
            names::encryption(t.mode, &t.kms_key_arn, &key_aliases, ctx.out.is_wide()),
            t.sse_status.clone(),
            status,
            iac_column(t),
            names::time(t.observe_time.as_ref()),
        ]);
    }
    print_table(&rows);
}
