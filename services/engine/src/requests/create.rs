//! Creating a request: replay of an idempotency key, planning, authorization over every account the plan reaches,
//! and storing the request with its items in one transaction. Rollback is a create whose targets are the tables
//! an ended request changed, each back to what it had.

use std::collections::BTreeSet;

use tablecrypt_core::change::{
    ChangeItem, ChangeRequest, ItemState, PlanSummary, RequestTargets, TargetSpec,
};
use tablecrypt_core::{AccountId, Caller, EncryptionMode, Permission, RequestState};
use uuid::Uuid;

use super::{ChangeRequests, Created, NewRequest, RollbackRequest, Selection};
use crate::access;
use crate::error::EngineError;
use crate::keys::resolve_keys_across;
use crate::planner::{PlanError, RollbackRow, Target, Targets};

/// What a create stores and plans, however it was asked for.
struct Draft {
    request: ChangeRequest,
    targets: Targets,
    target: Target,
    /// The field a plan-level refusal (too many tables) names.
    field: &'static str,
}

impl ChangeRequests {
    /// Plans a new request and, unless `validate_only`, stores it (QUEUED, or PENDING_APPROVAL when a second
    /// person must approve). A known `idempotency_key` returns the request stored under it.
    #[tracing::instrument(skip_all, fields(caller = %caller.identity, validate_only), err(level = "debug"))]
    pub async fn create(
        &self,
        caller: &Caller,
        new: NewRequest,
        validate_only: bool,
    ) -> Result<Created, EngineError> {
        // The accounts the request names are authorized before anything else: no alias resolution, inventory
        // lookup or live DescribeTable may run in another team's account on a scoped caller's behalf (2,000
        // made-up table names made 2,000 DescribeTable calls there before the refusal). The plan's accounts are
        // checked again below, for selectors that reach further than they name.
        let named: BTreeSet<String> = match &new.selection {
            Selection::Tables(tables) => tables.iter().map(|t| t.account_id.to_string()).collect(),
            Selection::Selector { spec, .. } => spec.account_ids.iter().cloned().collect(),
        };
        access::check_accounts(
            &self.store,
            caller,
            Permission::Change,
            "CreateChangeRequest",
            named,
        )
        .await?;
        let (targets, stored_targets, field) = match new.selection {
            Selection::Tables(tables) => (
                Targets::Tables(
                    tables
                        .iter()
                        .map(|t| (t.account_id.clone(), t.region, t.table_name.clone()))
                        .collect(),
                ),
                RequestTargets::Tables(tables),
                "tables",
            ),
            Selection::Selector {
                spec,
                mut filter,
                current_keys,
            } => {
                // A scoped caller's selector reaches only the accounts it may change: planning (KMS DescribeKey
                // for the target, the AWS managed key, each current key) must not run in another team's account
                // and then name it in the refusal (a selector naming no account reached every one).
                let visible = access::visible(
                    &self.store,
                    caller,
                    Permission::Change,
                    "CreateChangeRequest",
                )
                .await?;
                if let Some(ids) = visible.accounts() {
                    let mut scoped: Vec<AccountId> = ids
                        .iter()
                        .filter_map(|id| AccountId::parse(id).ok())
                        .collect();
                    if !filter.account_ids.is_empty() {
                        scoped.retain(|id| filter.account_ids.contains(id));
                    }
                    scoped.sort();
                    if scoped.is_empty() {
                        return Err(plan_error(PlanError::NoTables, "selector"));
                    }
                    filter.account_ids = scoped;
                }
                // Only for a caller who sees every account: a scoped caller must not learn which labels other
                // teams' accounts carry.
                if !filter.account_selector.is_empty()
                    && visible.accounts().is_none()
                    && self
                        .store
                        .accounts
                        .list(&filter.account_selector, None, 1)
                        .await?
                        .accounts
                        .is_empty()
                {
                    // A typo (`tema=payments`) is not a stale inventory: say which selector matched nothing.
                    return Err(EngineError::FailedPrecondition(format!(
                        "selector.account_label_selector: no registered account matches `{}` (tablecrypt accounts \
                         list shows the labels)",
                        spec.account_label_selector
                    )));
                }
                if !current_keys.is_empty() {
                    // Resolved through each account's role, only in accounts the caller may change: an ARN in
                    // its own account-region, an alias name or key id in every account-region covered.
                    filter.key_arns = resolve_keys_across(
                        &self.store,
                        &self.fleet,
                        &visible,
                        &current_keys,
                        &filter,
                        "selector.current_kms_keys",
                    )
                    .await?;
                }
                (
                    Targets::Selector(filter),
                    RequestTargets::Selector(spec),
                    "selector",
                )
            }
        };
        let request = ChangeRequest {
            target: Some(TargetSpec {
                mode: new.target.mode,
                kms_key: new.target.key.as_ref().map(|k| k.as_str().to_owned()),
            }),
            ..draft_request(
                caller,
                stored_targets,
                new.description,
                new.idempotency_key,
                new.options,
            )
        };
        let draft = Draft {
            request,
            targets,
            target: new.target,
            field,
        };
        self.plan_and_store(caller, draft, validate_only).await
    }

    /// A new request returning every table request `rollback.of` changed to the mode and keys it had before.
    #[tracing::instrument(skip_all, fields(caller = %caller.identity, of = %rollback.of), err(level = "debug"))]
    pub async fn rollback(
        &self,
        caller: &Caller,
        rollback: RollbackRequest,
        validate_only: bool,
    ) -> Result<Created, EngineError> {
        let id = rollback.of;
        let original = self.store.change_requests.get(id).await?;
        if !original.is_terminal() {
            return Err(EngineError::FailedPrecondition(format!(
                "change request {id} is {}: roll back a request once it has ended (cancel it first)",
                original.state.map(RequestState::as_str).unwrap_or_default()
            )));
        }
        let rows: Vec<RollbackRow> = self
            .store
            .change_items
            .all_of(id)
            .await?
            .into_iter()
            .filter(|item| item.state == ItemState::Succeeded)
            .map(rollback_row)
            .collect();
        if rows.is_empty() {
            return Err(EngineError::FailedPrecondition(format!(
                "change request {id} changed no table: nothing to roll back"
            )));
        }
        let tables = rows.iter().map(|row| row.table.clone()).collect();
        let mut request = draft_request(
            caller,
            RequestTargets::Tables(tables),
            rollback
                .description
                .unwrap_or_else(|| format!("rollback of {id}")),
            rollback.idempotency_key,
            original.options.clone(),
        );
        request.options.canary_count = 0;
        request.rollback_of = Some(id);
        let draft = Draft {
            request,
            targets: Targets::Rollback(rows),
            // Unused: each item has its own target.
            target: Target {
                mode: EncryptionMode::AwsOwned,
                key: None,
            },
            field: "change_request_id",
        };
        self.plan_and_store(caller, draft, validate_only).await
    }

    async fn plan_and_store(
        &self,
        caller: &Caller,
        draft: Draft,
        validate_only: bool,
    ) -> Result<Created, EngineError> {
        if !validate_only
            && let Some(key) = draft.request.idempotency_key.as_deref()
            && let Some(existing) = self.replay(caller, key, &draft.request).await?
        {
            return Ok(existing);
        }
        let canaries = usize::try_from(draft.request.options.canary_count).unwrap_or(0);
        let planned = self
            .planner
            .plan(
                &draft.targets,
                &draft.target,
                canaries,
                draft.request.options.include_iac_owned,
            )
            .await
            .map_err(|e| plan_error(e, draft.field))?;
        // The caller's operator grants must cover every account the plan touches (a selector may reach further).
        access::check_accounts(
            &self.store,
            caller,
            Permission::Change,
            "CreateChangeRequest",
            planned
                .iter()
                .map(|i| i.account_id.to_string())
                .collect::<BTreeSet<_>>(),
        )
        .await?;
        let summary = tablecrypt_core::change::summarize(&planned);
        let items: Vec<ChangeItem> = planned.iter().map(ChangeItem::from).collect();
        if validate_only {
            return Ok(Created {
                request: draft.request,
                counts: None,
                summary,
                items,
            });
        }
        let mut request = draft.request;
        request.state = Some(if self.settings.approval_required {
            RequestState::PendingApproval
        } else {
            RequestState::Queued
        });
        let (stored, created) = self
            .store
            .change_requests
            .create(
                &request,
                &items,
                crate::trace::current_traceparent().as_deref(),
            )
            .await?;
        if !created {
            // The same caller stored a request under this id since the replay check above.
            check_same_ask(&stored, &request)?;
        }
        tracing::info!(
            change_request = %stored.request_id, created_by = %caller.identity, change = summary.change,
            skip = summary.skip, blocked = summary.blocked, "change request created"
        );
        let counts = self.store.change_requests.counts(stored.request_id).await?;
        Ok(Created {
            request: stored,
            counts: Some(counts),
            summary,
            items: Vec::new(),
        })
    }

    /// The request this caller already stored under this idempotency key, if any; ALREADY_EXISTS if it asked for
    /// a different change. Keys belong to their caller, so another team's same key is not found here; the
    /// caller's operator grants must still cover the request's accounts (they may have shrunk since).
    async fn replay(
        &self,
        caller: &Caller,
        key: &str,
        asked: &ChangeRequest,
    ) -> Result<Option<Created>, EngineError> {
        let Some(request) = self
            .store
            .change_requests
            .find_by_idempotency_key(&caller.identity, key)
            .await?
        else {
            return Ok(None);
        };
        check_same_ask(&request, asked)?;
        access::check_request(
            &self.store,
            caller,
            Permission::Change,
            "CreateChangeRequest",
            request.request_id,
        )
        .await?;
        let items = self.store.change_items.all_of(request.request_id).await?;
        let counts = self
            .store
            .change_requests
            .counts(request.request_id)
            .await?;
        Ok(Some(Created {
            summary: PlanSummary::of_items(&items),
            request,
            counts: Some(counts),
            items: Vec::new(),
        }))
    }
}

/// A request id replayed for a different change is refused (AIP-155), naming the request it belongs to.
fn check_same_ask(stored: &ChangeRequest, asked: &ChangeRequest) -> Result<(), EngineError> {
    if stored.asks_the_same(asked) {
        return Ok(());
    }
    Err(EngineError::AlreadyExists {
        resource: "request_id",
        id: format!(
            "{:?} (your change request {}, which asked for a different change: repeat it exactly, or use a new \
             request_id)",
            asked.idempotency_key.as_deref().unwrap_or_default(),
            stored.request_id
        ),
    })
}

/// A request not yet stored: no id, no state, no times.
fn draft_request(
    caller: &Caller,
    targets: RequestTargets,
    description: String,
    idempotency_key: Option<String>,
    options: tablecrypt_core::change::ChangeOptions,
) -> ChangeRequest {
    ChangeRequest {
        request_id: Uuid::nil(),
        state: None,
        idempotency_key,
        description,
        targets,
        target: None,
        options,
        canary_passed: false,
        rollback_of: None,
        pause_reason: None,
        created_by: caller.identity.clone(),
        approved_by: None,
        create_time: None,
        approve_time: None,
        start_time: None,
        finish_time: None,
        update_time: None,
    }
}

/// A SUCCEEDED item's way back: the table and the mode and keys it had before (each replica's too).
fn rollback_row(item: ChangeItem) -> RollbackRow {
    RollbackRow {
        replica_keys: item
            .replicas
            .iter()
            .filter_map(|r| Some((r.region.clone(), r.from_key_arn.clone()?)))
            .collect(),
        table: item.table,
        mode: item.from_mode,
        key_arn: item.from_key_arn,
    }
}

fn plan_error(error: PlanError, field: &str) -> EngineError {
    match error {
        PlanError::UnknownAccount(id) => EngineError::NotFound {
            resource: "account",
            id: id.to_string(),
        },
        PlanError::UnknownRegion { account_id, region } => EngineError::NotFound {
            resource: "region",
            id: format!("{region} of account {account_id}"),
        },
        e @ PlanError::TooManyTables(_) => EngineError::invalid(field, e.to_string()),
        e @ (PlanError::NoTables | PlanError::TooManyLiveReads { .. }) => {
            EngineError::FailedPrecondition(e.to_string())
        }
        PlanError::Store(e) => e.into(),
    }
}
