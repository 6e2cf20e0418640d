//! `tablecrypt requests …`: change requests after they are created.

use tablecrypt_proto::v1 as pb;

use super::migrate::{Proposal, propose};
use super::{Ctx, all_pages, change_items, watch};
use crate::args::{ItemState, RequestState, RequestsCommand};
use crate::error::Result;
use crate::json::to_json;
use crate::names;
use crate::output::{print_table, table};

pub async fn run(ctx: &Ctx, command: RequestsCommand) -> Result<()> {
    match command {
        RequestsCommand::List { states, limit } => list(ctx, states, limit).await,
        RequestsCommand::Get {
            change_request_id,
            items,
            states,
            limit,
        } => {
            let states = states.into_iter().map(item_state_to_proto).collect();
            get(
                ctx,
                change_request_id,
                items,
                states,
                limit.unwrap_or(usize::MAX),
            )
            .await
        }
        RequestsCommand::Approve { change_request_id } => {
            let request = ctx
                .client()
                .await?
                .call(
                    pb::ApproveChangeRequestRequest { change_request_id },
                    |mut api, request| async move { api.approve_change_request(request).await },
                )
                .await?;
            print_request(ctx, &request);
            Ok(())
        }
        RequestsCommand::Cancel { change_request_id } => {
            let request = ctx
                .client()
                .await?
                .call(
                    pb::CancelChangeRequestRequest { change_request_id },
                    |mut api, request| async move { api.cancel_change_request(request).await },
                )
                .await?;
            print_request(ctx, &request);
            Ok(())
        }
        RequestsCommand::Pause {
            change_request_id,
            reason,
        } => {
            let request = ctx
                .client()
                .await?
                .call(
                    pb::PauseChangeRequestRequest {
                        change_request_id,
                        reason,
                    },
                    |mut api, request| async move { api.pause_change_request(request).await },
                )
                .await?;
            print_request(ctx, &request);
            Ok(())
        }
        RequestsCommand::Resume { change_request_id } => {
            let request = ctx
                .client()
                .await?
                .call(
                    pb::ResumeChangeRequestRequest { change_request_id },
                    |mut api, request| async move { api.resume_change_request(request).await },
                )
                .await?;
            print_request(ctx, &request);
            Ok(())
        }
        RequestsCommand::Rollback {
            change_request_id,
            description,
            flow,
        } => {
            let proposal = Proposal::Rollback(pb::RollbackChangeRequestRequest {
                change_request_id,
                description,
                request_id: String::new(),
                validate_only: false,
            });
            propose(ctx, proposal, flow).await
        }
        RequestsCommand::Watch { change_request_id } => {
            let finished = watch::follow(ctx, &change_request_id).await?;
            watch::finish(ctx, finished, None).await
        }
    }
}

fn state_to_proto(state: RequestState) -> i32 {
    (match state {
        RequestState::PendingApproval => pb::ChangeRequestState::PendingApproval,
        RequestState::Queued => pb::ChangeRequestState::Queued,
        RequestState::Running => pb::ChangeRequestState::Running,
        RequestState::Paused => pb::ChangeRequestState::Paused,
        RequestState::Cancelling => pb::ChangeRequestState::Cancelling,
        RequestState::Succeeded => pb::ChangeRequestState::Succeeded,
        RequestState::PartiallyFailed => pb::ChangeRequestState::PartiallyFailed,
        RequestState::Failed => pb::ChangeRequestState::Failed,
        RequestState::Cancelled => pb::ChangeRequestState::Cancelled,
    }) as i32
}

async fn list(ctx: &Ctx, states: Vec<RequestState>, limit: usize) -> Result<()> {
    let client = ctx.client().await?;
    let states: Vec<i32> = states.into_iter().map(state_to_proto).collect();
    let requests = all_pages(limit, |page_token| {
        let request = pb::ListChangeRequestsRequest {
            page_size: i32::try_from(limit.min(1000)).unwrap_or(1000),
            page_token,
            states: states.clone(),
        };
        async move {
            let page = client
                .call(request, |mut api, request| async move {
                    api.list_change_requests(request).await
                })
                .await?;
            Ok((page.change_requests, page.next_page_token))
        }
    })
    .await?;
    if ctx.out.is_json() {
        ctx.out.json(&to_json(&pb::ListChangeRequestsResponse {
            change_requests: requests,
            next_page_token: String::new(),
        }));
        return Ok(());
    }
    let mut rows = table(&[
        "id",
        "state",
        "target",
        "finished",
        "failed",
        "created by",
        "created",
        "description",
    ]);
    for r in &requests {
        let counts = r.counts.unwrap_or_default();
        let done =
            counts.succeeded + counts.failed + counts.skipped + counts.blocked + counts.cancelled;
        rows.add_row(vec![
            r.change_request_id.clone(),
            names::request_state(r.state),
            target(r),
            format!("{done}/{}", counts.total),
            counts.failed.to_string(),
            r.created_by.clone(),
            names::time(r.create_time.as_ref()),
            r.description.clone(),
        ]);
    }
    print_table(&rows);
    Ok(())
}

fn target(request: &pb::ChangeRequest) -> String {
    if !request.rollback_of.is_empty() {
        return format!("rollback of {}", request.rollback_of);
    }
    let target = request.target.clone().unwrap_or_default();
    names::target(target.mode, &target.kms_key)
}

fn item_state_to_proto(state: ItemState) -> i32 {
    (match state {
        ItemState::Pending => pb::ChangeItemState::Pending,
        ItemState::Applying => pb::ChangeItemState::Applying,
        ItemState::Waiting => pb::ChangeItemState::Waiting,
        ItemState::Deferred => pb::ChangeItemState::Deferred,
        ItemState::Succeeded => pb::ChangeItemState::Succeeded,
        ItemState::Failed => pb::ChangeItemState::Failed,
        ItemState::Skipped => pb::ChangeItemState::Skipped,
        ItemState::Blocked => pb::ChangeItemState::Blocked,
        ItemState::Cancelled => pb::ChangeItemState::Cancelled,
    }) as i32
}

async fn get(
    ctx: &Ctx,
    change_request_id: String,
    with_items: bool,
    states: Vec<i32>,
    limit: usize,
) -> Result<()> {
    let client = ctx.client().await?;
    let request = client
        .call(
            pb::GetChangeRequestRequest {
                change_request_id: change_request_id.clone(),
            },
            |mut api, request| async move { api.get_change_request(request).await },
        )
        .await?;
    let (items, aliases) = if with_items {
        change_items(client, &change_request_id, states, limit).await?
    } else {
        Default::default()
    };
    if ctx.out.is_json() {
        let mut document = to_json(&request);
        if with_items {
            document["items"] = serde_json::Value::Array(items.iter().map(to_json).collect());
            document["keyAliases"] = serde_json::json!(aliases);
        }
        ctx.out.json(&document);
        return Ok(());
    }
    print_request(ctx, &request);
    if with_items {
        let wide = ctx.out.is_wide();
        // The why of each item goes below the table (a message is a sentence; as a column it would push the
        // table past 120 characters); -o wide keeps it as a column.
        let mut headers = vec![
            "item", "account", "region", "table", "action", "state", "from", "to", "reason",
        ];
        if wide {
            headers.push("why");
        }
        let mut rows = table(&headers);
        let mut whys = Vec::new();
        for i in &items {
            let mut row = vec![
                i.item_id.to_string(),
                i.account_id.clone(),
                i.region.clone(),
                i.table_name.clone(),
                names::action(i.action),
                names::item_state(i.state),
                names::encryption(i.from_mode, &i.from_kms_key_arn, &aliases, wide),
                names::encryption(i.to_mode, &i.to_kms_key_arn, &aliases, wide),
                names::reason(i.reason),
            ];
            if wide {
                row.push(i.message.clone());
            } else if !i.message.is_empty() {
                whys.push(format!("  item {}: {}", i.item_id, i.message));
            }
            rows.add_row(row);
        }
        crate::outln!();
        print_table(&rows);
        if !whys.is_empty() {
            crate::outln!();
            crate::outln!("Why:");
            for why in &whys {
                crate::outln!("{why}");
            }
        }
    }
    Ok(())
}

fn print_request(ctx: &Ctx, request: &pb::ChangeRequest) {
    if ctx.out.is_json() {
        ctx.out.json(&to_json(request));
        return;
    }
    let counts = request.counts.unwrap_or_default();
    let mut rows = table(&["field", "value"]);
    let mut row = |field: &str, value: String| {
        if !value.is_empty() {
            rows.add_row(vec![field.to_owned(), value]);
        }
    };
    row("id", request.change_request_id.clone());
    row("state", names::request_state(request.state));
    row("target", target(request));
    row("description", request.description.clone());
    row("pause reason", request.pause_reason.clone());
    row("created by", request.created_by.clone());
    row("approved by", request.approved_by.clone());
    row("created", names::time(request.create_time.as_ref()));
    // Only the states some table is in: ten counts, mostly zero, would not fit a line.
    let states = [
        ("pending", counts.pending),
        ("applying", counts.applying),
        ("waiting for AWS", counts.waiting),
        ("deferred", counts.deferred),
        ("succeeded", counts.succeeded),
        ("failed", counts.failed),
        ("skipped", counts.skipped),
        ("blocked", counts.blocked),
        ("cancelled", counts.cancelled),
    ];
    let by_state: Vec<String> = states
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    row(
        "tables",
        format!("{} total: {}", counts.total, by_state.join(", ")),
    );
    // A key-value listing reads better without the header row.
    for line in rows.to_string().lines().skip(1) {
        let line = line.strip_prefix(' ').unwrap_or(line);
        crate::outln!("{}", line.trim_end());
    }
}
