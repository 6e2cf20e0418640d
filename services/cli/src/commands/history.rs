//! `tablecrypt history`: the key rotations tablecrypt made, newest first.

use tablecrypt_proto::v1 as pb;

use super::{Ctx, all_pages};
use crate::args::HistoryArgs;
use crate::error::Result;
use crate::json::to_json;
use crate::names;
use crate::output::{print_table, table};

pub async fn run(ctx: &Ctx, args: HistoryArgs) -> Result<()> {
    let client = ctx.client().await?;
    let start_time = args.since.map(|since| {
        let start = std::time::SystemTime::now() - since;
        prost_types::Timestamp::from(start)
    });
    let base = pb::ListKeyRotationHistoryRequest {
        page_size: i32::try_from(args.limit.min(1000)).unwrap_or(1000),
        page_token: String::new(),
        account_id: args.account.unwrap_or_default(),
        region: args.region.unwrap_or_default(),
        table_name: args.table.unwrap_or_default(),
        kms_key_arn: args.kms_key.unwrap_or_default(),
        change_request_id: args.change_request.unwrap_or_default(),
        start_time,
        end_time: None,
    };
    let aliases = std::cell::RefCell::new(names::KeyAliases::new());
    let rotations = all_pages(args.limit, |page_token| {
        let request = pb::ListKeyRotationHistoryRequest {
            page_token,
            ..base.clone()
        };
        let aliases = &aliases;
        async move {
            let page = client
                .call(request, |mut api, request| async move {
                    api.list_key_rotation_history(request).await
                })
                .await?;
            aliases.borrow_mut().extend(page.key_aliases);
            Ok((page.rotations, page.next_page_token))
        }
    })
    .await?;
    let aliases = aliases.into_inner();
    if ctx.out.is_json() {
        ctx.out.json(&to_json(&pb::ListKeyRotationHistoryResponse {
            rotations,
            next_page_token: String::new(),
            key_aliases: aliases,
        }));
        return Ok(());
    }
    let wide = ctx.out.is_wide();
    let mut rows = table(&[
        "finished", "account", "region", "table", "from", "to", "request", "by",
    ]);
    for r in &rotations {
        // The request's first 8 characters tell a fleet's requests apart; -o wide (and JSON) shows the whole id.
        let request = if wide {
            r.change_request_id.clone()
        } else {
            r.change_request_id.chars().take(8).collect()
        };
        let by = if r.approved_by.is_empty() {
            r.requested_by.clone()
        } else {
            format!("{}, approved {}", r.requested_by, r.approved_by)
        };
        rows.add_row(vec![
            names::time(r.finish_time.as_ref()),
            r.account_id.clone(),
            r.region.clone(),
            r.table_name.clone(),
            names::encryption(r.from_mode, &r.from_kms_key_arn, &aliases, wide),
            names::encryption(r.to_mode, &r.to_kms_key_arn, &aliases, wide),
            request,
            by,
        ]);
    }
    print_table(&rows);
    Ok(())
}
