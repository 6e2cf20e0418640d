//! `tablecrypt audit`: who did what, and what was refused (admins only).

use tablecrypt_proto::v1 as pb;

use super::{Ctx, all_pages};
use crate::args::AuditArgs;
use crate::error::Result;
use crate::json::to_json;
use crate::names;
use crate::output::{print_table, table};

pub async fn run(ctx: &Ctx, args: AuditArgs) -> Result<()> {
    let client = ctx.client().await?;
    let base = pb::ListAuditEventsRequest {
        page_size: i32::try_from(args.limit.min(1000)).unwrap_or(1000),
        page_token: String::new(),
        caller: args.caller.unwrap_or_default(),
        method: args.method.unwrap_or_default(),
        outcome: args.outcome.unwrap_or_default(),
    };
    let events = all_pages(args.limit, |page_token| {
        let request = pb::ListAuditEventsRequest {
            page_token,
            ..base.clone()
        };
        async move {
            let page = client
                .call(request, |mut api, request| async move {
                    api.list_audit_events(request).await
                })
                .await?;
            Ok((page.events, page.next_page_token))
        }
    })
    .await?;
    if ctx.out.is_json() {
        ctx.out.json(&to_json(&pb::ListAuditEventsResponse {
            events,
            next_page_token: String::new(),
        }));
        return Ok(());
    }
    let mut rows = table(&["time", "caller", "method", "target", "outcome", "message"]);
    for e in &events {
        rows.add_row(vec![
            names::time(e.event_time.as_ref()),
            e.caller.clone(),
            e.method.rsplit('/').next().unwrap_or(&e.method).to_owned(),
            e.target.clone(),
            e.outcome.clone(),
            e.message.clone(),
        ]);
    }
    print_table(&rows);
    Ok(())
}
