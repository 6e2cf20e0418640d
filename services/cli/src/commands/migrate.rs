//! `tablecrypt migrate` (and `requests rollback`): plan, show the plan, confirm, create, watch, summarize.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use tablecrypt_proto::v1 as pb;

use super::{Ctx, plan, tables::mode_to_proto, watch};
use crate::args::{AwsKey, FlowArgs, MigrateArgs};
use crate::client::Client;
use crate::error::{CliError, Result};
use crate::json::to_json;
use crate::names;

/// What is being proposed: a new migration or the rollback of an earlier request.
// One value per command, moved once: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Proposal {
    Create(pb::CreateChangeRequestRequest),
    Rollback(pb::RollbackChangeRequestRequest),
}

impl Proposal {
    async fn send(
        &self,
        client: &Client,
        validate_only: bool,
        request_id: String,
    ) -> Result<pb::CreateChangeRequestResponse> {
        match self {
            Self::Create(request) => {
                let request = pb::CreateChangeRequestRequest {
                    validate_only,
                    request_id,
                    ..request.clone()
                };
                let response = client
                    .call(request.clone(), |mut api, request| async move {
                        api.create_change_request(request).await
                    })
                    .await?;
                refuse_unheard(&request, &response)?;
                Ok(response)
            }
            Self::Rollback(request) => {
                let request = pb::RollbackChangeRequestRequest {
                    validate_only,
                    request_id,
                    ..request.clone()
                };
                client
                    .call(request, |mut api, request| async move {
                        api.rollback_change_request(request).await
                    })
                    .await
            }
        }
    }
}

/// A server older than this CLI ignores the fields it does not know, and would then plan (and change) more tables
/// than asked: every field it echoes back must be the one sent.
fn refuse_unheard(
    sent: &pb::CreateChangeRequestRequest,
    response: &pb::CreateChangeRequestResponse,
) -> Result<()> {
    let heard = response.change_request.clone().unwrap_or_default();
    let (sent_selector, heard_selector) = (
        sent.selector.clone().unwrap_or_default(),
        heard.selector.unwrap_or_default(),
    );
    let unheard = [
        (
            "--from-key with several keys",
            sent_selector.current_kms_keys != heard_selector.current_kms_keys,
        ),
        (
            "--tag",
            sent_selector.table_tag_selector != heard_selector.table_tag_selector,
        ),
        (
            "--include-iac-owned",
            sent.options.as_ref().is_some_and(|o| o.include_iac_owned)
                && !heard.options.is_some_and(|o| o.include_iac_owned),
        ),
    ];
    let Some((flag, _)) = unheard.iter().find(|(_, ignored)| *ignored) else {
        return Ok(());
    };
    let older = format!(
        "the server ignored {flag}: it is older than this CLI (upgrade every server replica first)"
    );
    Err(CliError::Failed(if heard.change_request_id.is_empty() {
        format!("{older}; nothing was created")
    } else {
        // The plan was heard by a newer replica, the create by an older one: the request covers more than asked.
        format!(
            "{older}, and created request {id} without it: cancel it now (tablecrypt requests cancel {id})",
            id = heard.change_request_id
        )
    }))
}

pub async fn run(ctx: &Ctx, args: MigrateArgs) -> Result<()> {
    let target = match (&args.to_key, args.to_mode) {
        (Some(key), None) => pb::TargetEncryption {
            mode: pb::EncryptionMode::CustomerManaged as i32,
            kms_key: key.clone(),
        },
        (None, Some(AwsKey::AwsOwned)) => pb::TargetEncryption {
            mode: pb::EncryptionMode::AwsOwned as i32,
            kms_key: String::new(),
        },
        (None, Some(AwsKey::AwsManaged)) => pb::TargetEncryption {
            mode: pb::EncryptionMode::AwsManaged as i32,
            kms_key: String::new(),
        },
        // clap refuses both together; neither is a usage error of ours.
        _ => {
            return Err(CliError::Usage(
                "say where to move the tables: --to-key KEY, or --to-mode aws-owned|aws-managed"
                    .to_owned(),
            ));
        }
    };
    let selector = pb::TableSelector {
        account_ids: args.accounts,
        account_label_selector: args.selector.unwrap_or_default(),
        regions: args.regions,
        current_mode: mode_to_proto(args.from_mode),
        // One key goes where every server reads it (an older one takes an ARN and refuses an alias name); only
        // several need the newer field, which refuse_unheard checks was heard.
        current_kms_key: match args.from_key.as_slice() {
            [one] => one.clone(),
            _ => String::new(),
        },
        current_kms_keys: if args.from_key.len() > 1 {
            args.from_key
        } else {
            Vec::new()
        },
        table_name_prefix: args.prefix.unwrap_or_default(),
        table_tag_selector: args.tag.unwrap_or_default(),
    };
    let request = pb::CreateChangeRequestRequest {
        tables: None,
        selector: Some(selector),
        target: Some(target),
        description: args.description,
        options: Some(pb::ChangeOptions {
            max_updates_per_second: args.pace.rate.unwrap_or(0.0),
            max_in_flight: args.pace.max_in_flight.unwrap_or(0),
            failure_threshold: args.pace.failure_threshold.unwrap_or(0),
            canary_count: args.pace.canary.unwrap_or(0),
            include_iac_owned: args.include_iac_owned,
        }),
        request_id: String::new(),
        validate_only: false,
    };
    propose(ctx, Proposal::Create(request), args.flow).await
}

/// Plan; show; stop if dry run or nothing to do; confirm; create; watch unless told not to; summarize.
pub async fn propose(ctx: &Ctx, proposal: Proposal, flow: FlowArgs) -> Result<()> {
    let client = ctx.client().await?;
    let planned = proposal.send(client, true, String::new()).await?;
    if !ctx.out.is_json() {
        plan::print(&planned);
    }
    let summary = planned.summary.clone().unwrap_or_default();
    if flow.dry_run {
        if ctx.out.is_json() {
            ctx.out
                .json(&serde_json::json!({ "plan": to_json(&planned) }));
        } else {
            crate::outln!("\nDry run: nothing was created.");
        }
        return Ok(());
    }
    if summary.change == 0 {
        if ctx.out.is_json() {
            ctx.out
                .json(&serde_json::json!({ "plan": to_json(&planned), "changeRequest": null }));
        }
        if summary.blocked > 0 {
            return Err(CliError::Failed(format!(
                "nothing can be changed: {} tables are blocked (see the plan); nothing was created",
                summary.blocked
            )));
        }
        eprintln!("Every table already has the target encryption; nothing was created.");
        return Ok(());
    }
    if !flow.yes {
        confirm(&format!(
            "Create a change request for {} tables ({} blocked tables are left as they are)?",
            summary.change, summary.blocked
        ))?;
    }
    // One idempotency key for the request, so a retried create cannot make a second request.
    let request_id = flow
        .request_id
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let created = proposal.send(client, false, request_id).await?;
    let request = created.change_request.unwrap_or_default();
    let id = request.change_request_id.clone();
    eprintln!(
        "Created change request {id} ({}).",
        names::request_state(request.state)
    );
    if request.state == pb::ChangeRequestState::PendingApproval as i32 {
        eprintln!(
            "It waits for approval by someone other than {}: tablecrypt requests approve {id}",
            request.created_by
        );
    }
    if flow.no_watch {
        if ctx.out.is_json() {
            ctx.out.json(&serde_json::json!({
                "plan": to_json(&planned),
                "changeRequest": to_json(&request),
            }));
        }
        return Ok(());
    }
    let finished = watch::follow(ctx, &id).await?;
    watch::finish(ctx, finished, Some(to_json(&planned))).await
}

/// Asks on the terminal; refuses to guess when no one is there to answer.
fn confirm(question: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "there is no terminal to confirm on: pass --yes to create the request, or --dry-run to only plan it"
                .to_owned(),
        ));
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::Usage(format!("reading the answer: {e}")))?;
    if matches!(answer.trim().to_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(CliError::Failed(
            "not confirmed; nothing was created".to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent() -> pb::CreateChangeRequestRequest {
        pb::CreateChangeRequestRequest {
            selector: Some(pb::TableSelector {
                current_kms_keys: vec!["alias/a".into(), "alias/a-old".into()],
                table_tag_selector: "app=checkout".into(),
                ..Default::default()
            }),
            options: Some(pb::ChangeOptions {
                include_iac_owned: true,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn answer(heard: &pb::CreateChangeRequestRequest, id: &str) -> pb::CreateChangeRequestResponse {
        pb::CreateChangeRequestResponse {
            change_request: Some(pb::ChangeRequest {
                change_request_id: id.into(),
                selector: heard.selector.clone(),
                options: heard.options,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn an_older_server_that_ignores_a_filter_is_refused() {
        let request = sent();
        assert!(refuse_unheard(&request, &answer(&request, "")).is_ok());
        // An older server drops each field it does not know.
        let mut old = request.clone();
        old.selector
            .as_mut()
            .expect("selector")
            .table_tag_selector
            .clear();
        let error = refuse_unheard(&request, &answer(&old, "")).expect_err("tag ignored");
        assert!(
            error.to_string().contains("--tag")
                && error.to_string().contains("nothing was created")
        );
        let mut old = request.clone();
        old.selector
            .as_mut()
            .expect("selector")
            .current_kms_keys
            .clear();
        assert!(refuse_unheard(&request, &answer(&old, "")).is_err());
        let mut old = request.clone();
        old.options = None;
        let error = refuse_unheard(&request, &answer(&old, "r-1")).expect_err("option ignored");
        assert!(error.to_string().contains("requests cancel r-1"), "{error}");
    }
}
