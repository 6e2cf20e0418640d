//! Change-request RPCs: plan and create (idempotent), read, the operator's transitions, watch, single-table
//! updates, rollback and the key-rotation history.
//!
//! Everything is validated before anything is planned; planning reads AWS but writes nothing but the inventory;
//! a request and its items are stored in one transaction.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tablecrypt_core::{
    AccountId, Caller, EncryptionMode, KeyReference, LabelSelector, Permission, Region,
    RequestState, TableName, ValidationErrors,
};
use tablecrypt_engine::{
    MAX_ITEMS, PlanError, PlannedItem, Planner, RollbackRow, Target, Targets, summarize,
};
use tablecrypt_fleet::Fleet;
use tablecrypt_proto::v1 as pb;
use tablecrypt_store::{
    ChangeItemRecord, ChangeRequestRecord, HistoryFilter, InventoryFilter, NewChangeItem,
    NewChangeRequest, RequestCursor, Store,
};
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::conversions::change as convert;
use crate::error::ApiError;
use crate::inventory::access;
use crate::page_token;

/// The service-wide limits and policy change requests are checked against; from the server's configuration.
#[derive(Debug, Clone)]
pub struct ChangeSettings {
    /// New requests wait in PENDING_APPROVAL for a second person.
    pub approval_required: bool,
    /// The service's UpdateTable rate per account-region; a request may only lower it.
    pub max_updates_per_second: f64,
    /// The service's tables in flight per account-region; a request may only lower it.
    pub max_in_flight: u32,
    /// How often a watch looks for changes.
    pub watch_interval: Duration,
}

/// Most characters in a description.
const MAX_DESCRIPTION: usize = 1024;
/// Most characters in an idempotency key.
const MAX_REQUEST_ID: usize = 128;
/// Most canaries a request may ask for.
const MAX_CANARIES: i32 = 100;

pub type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchChangeRequestResponse, tonic::Status>> + Send>>;

/// The change-request half of the service.
#[derive(Clone)]
pub struct ChangeRequests {
    store: Store,
    fleet: Arc<Fleet>,
    planner: Planner,
    settings: ChangeSettings,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for ChangeRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeRequests")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A validated CreateChangeRequestRequest.
struct Validated {
    targets: Targets,
    target: Target,
    targets_json: serde_json::Value,
    description: String,
    idempotency_key: Option<String>,
    max_updates_per_second: Option<f64>,
    max_in_flight: Option<i32>,
    failure_threshold: Option<i32>,
    canary_count: i32,
}

/// A filter's key, which must name one key unambiguously without an account-region: an ARN or an alias ARN.
fn key_filter(field: &str, text: &str, errors: &mut ValidationErrors) -> Option<KeyReference> {
    if text.is_empty() {
        return None;
    }
    match KeyReference::parse(text) {
        Ok(key @ (KeyReference::Arn(_) | KeyReference::AliasArn { .. })) => Some(key),
        Ok(_) => {
            errors.add(field, "use a key ARN or alias ARN here");
            None
        }
        Err(e) => {
            errors.add(field, e.0);
            None
        }
    }
}

fn mode_from_proto(value: i32) -> Result<Option<EncryptionMode>, String> {
    match pb::EncryptionMode::try_from(value) {
        Ok(pb::EncryptionMode::Unspecified) => Ok(None),
        Ok(pb::EncryptionMode::AwsOwned) => Ok(Some(EncryptionMode::AwsOwned)),
        Ok(pb::EncryptionMode::AwsManaged) => Ok(Some(EncryptionMode::AwsManaged)),
        Ok(pb::EncryptionMode::CustomerManaged) => Ok(Some(EncryptionMode::CustomerManaged)),
        Err(_) => Err(format!("{value} is not an EncryptionMode")),
    }
}

/// The tables of an explicit list, each field checked (`tables.tables[i].account_id`, ...); refs with a bad field
/// are left out.
fn parse_table_refs(
    list: &pb::TableList,
    errors: &mut ValidationErrors,
) -> Vec<(AccountId, Region, TableName)> {
    let mut ids = Vec::with_capacity(list.tables.len());
    for (i, t) in list.tables.iter().enumerate() {
        let field = |name: &str| format!("tables.tables[{i}].{name}");
        let a = errors.check(field("account_id"), AccountId::parse(&t.account_id));
        let r = errors.check(field("region"), Region::parse(&t.region));
        let n = errors.check(field("table_name"), TableName::parse(&t.table_name));
        if let (Some(a), Some(r), Some(n)) = (a, r, n) {
            ids.push((a, r, n));
        }
    }
    ids
}

fn validate_request_id(text: &str, errors: &mut ValidationErrors) -> Option<String> {
    if text.is_empty() {
        return None;
    }
    if text.chars().count() > MAX_REQUEST_ID || text.chars().any(|c| c.is_control()) {
        errors.add(
            "request_id",
            format!("must be 1 to {MAX_REQUEST_ID} printable characters"),
        );
        return None;
    }
    Some(text.to_owned())
}

fn validate_description(text: &str, errors: &mut ValidationErrors) {
    if text.chars().count() > MAX_DESCRIPTION {
        errors.add(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters"),
        );
    }
}

fn validate_target(
    target: Option<&pb::TargetEncryption>,
    errors: &mut ValidationErrors,
) -> Option<Target> {
    let Some(target) = target else {
        errors.add(
            "target",
            "is required: the encryption every table must end with",
        );
        return None;
    };
    let mode = match mode_from_proto(target.mode) {
        Ok(Some(mode)) => mode,
        Ok(None) => {
            errors.add(
                "target.mode",
                "is required: AWS_OWNED, AWS_MANAGED or CUSTOMER_MANAGED",
            );
            return None;
        }
        Err(e) => {
            errors.add("target.mode", e);
            return None;
        }
    };
    let key = match (mode, target.kms_key.is_empty()) {
        (EncryptionMode::CustomerManaged, _) => {
            Some(errors.check("target.kms_key", KeyReference::parse(&target.kms_key))?)
        }
        (_, true) => None,
        (_, false) => {
            errors.add(
                "target.kms_key",
                "is only for CUSTOMER_MANAGED; leave it empty",
            );
            return None;
        }
    };
    Some(Target { mode, key })
}

impl ChangeRequests {
    pub fn new(
        store: Store,
        fleet: Arc<Fleet>,
        settings: ChangeSettings,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            planner: Planner::new(store.clone(), fleet.clone()),
            store,
            fleet,
            settings,
            shutdown,
        }
    }

    fn validate_options(
        &self,
        options: Option<&pb::ChangeOptions>,
        errors: &mut ValidationErrors,
    ) -> (Option<f64>, Option<i32>, Option<i32>, i32) {
        let Some(o) = options else {
            return (None, None, None, 0);
        };
        let rate = o.max_updates_per_second;
        let max_rate = self.settings.max_updates_per_second;
        let rate = if rate == 0.0 {
            None
        } else if !rate.is_finite() || rate < 0.0 {
            errors.add(
                "options.max_updates_per_second",
                "must be a positive number (0: the service's)",
            );
            None
        } else if rate > max_rate {
            errors.add(
                "options.max_updates_per_second",
                format!(
                    "may only lower the service's limit of {max_rate} per second per account-region"
                ),
            );
            None
        } else {
            Some(rate)
        };
        let max_in_flight = i32::try_from(self.settings.max_in_flight).unwrap_or(500);
        let in_flight = match o.max_in_flight {
            0 => None,
            n if n < 0 => {
                errors.add(
                    "options.max_in_flight",
                    "must not be negative (0: the service's)",
                );
                None
            }
            n if n > max_in_flight => {
                errors.add(
                    "options.max_in_flight",
                    format!("may only lower the service's limit of {max_in_flight} tables per account-region"),
                );
                None
            }
            n => Some(n),
        };
        let threshold = match o.failure_threshold {
            0 => None,
            n if n < 0 => {
                errors.add(
                    "options.failure_threshold",
                    "must not be negative (0: never pause)",
                );
                None
            }
            n => Some(n),
        };
        if !(0..=MAX_CANARIES).contains(&o.canary_count) {
            errors.add(
                "options.canary_count",
                format!("must be between 0 and {MAX_CANARIES}"),
            );
        }
        (
            rate,
            in_flight,
            threshold,
            o.canary_count.clamp(0, MAX_CANARIES),
        )
    }

    /// Validates a CreateChangeRequestRequest, resolving a selector's key filter (an alias ARN) through AWS.
    async fn validate(
        &self,
        request: &pb::CreateChangeRequestRequest,
    ) -> Result<Validated, ApiError> {
        let mut errors = ValidationErrors::new();
        let idempotency_key = validate_request_id(&request.request_id, &mut errors);
        validate_description(&request.description, &mut errors);
        let target = validate_target(request.target.as_ref(), &mut errors);
        let (max_updates_per_second, max_in_flight, failure_threshold, canary_count) =
            self.validate_options(request.options.as_ref(), &mut errors);
        let mut targets = None;
        let mut key_to_resolve = None;
        match (&request.tables, &request.selector) {
            (Some(_), Some(_)) => {
                errors.add("selector", "give either tables or selector, not both")
            }
            (None, None) => errors.add(
                "tables",
                "is required (or a selector): which tables to change",
            ),
            (Some(list), None) => {
                if list.tables.is_empty() {
                    errors.add("tables.tables", "must name at least one table");
                } else if list.tables.len() > MAX_ITEMS {
                    errors.add(
                        "tables.tables",
                        format!("may name at most {MAX_ITEMS} tables"),
                    );
                }
                let ids = parse_table_refs(list, &mut errors);
                let mut seen = std::collections::HashSet::new();
                for (i, id) in ids.iter().enumerate() {
                    if !seen.insert(id) {
                        errors.add(
                            format!("tables.tables[{i}]"),
                            "names a table already listed",
                        );
                    }
                }
                targets = Some(Targets::Tables(ids));
            }
            (None, Some(s)) => {
                let account_ids =
                    errors.check_each("selector.account_ids", &s.account_ids, AccountId::parse);
                let selector = errors.check(
                    "selector.account_label_selector",
                    LabelSelector::parse(&s.account_label_selector),
                );
                let regions = errors.check_each("selector.regions", &s.regions, Region::parse);
                let mode = match mode_from_proto(s.current_mode) {
                    Ok(mode) => mode,
                    Err(e) => {
                        errors.add("selector.current_mode", e);
                        None
                    }
                };
                key_to_resolve =
                    key_filter("selector.current_kms_key", &s.current_kms_key, &mut errors);
                if s.table_name_prefix.len() > 255 {
                    errors.add(
                        "selector.table_name_prefix",
                        "must be at most 255 characters",
                    );
                }
                if let Some(selector) = selector {
                    targets = Some(Targets::Selector(InventoryFilter {
                        account_ids,
                        account_selector: selector,
                        regions,
                        mode,
                        key_arns: Vec::new(),
                        name_prefix: (!s.table_name_prefix.is_empty())
                            .then(|| s.table_name_prefix.clone()),
                        inaccessible_only: false,
                        include_gone: false,
                    }));
                }
            }
        }
        let (Some(mut targets), Some(target)) = (targets, target) else {
            return Err(errors.into());
        };
        if !errors.is_empty() {
            return Err(errors.into());
        }
        if let (Targets::Selector(filter), Some(key)) = (&mut targets, key_to_resolve) {
            filter.key_arns = vec![match key {
                KeyReference::Arn(arn) => arn.to_string(),
                KeyReference::AliasArn {
                    arn,
                    region,
                    account_id,
                } => {
                    let account = self.store.accounts.get(&account_id).await?;
                    self.fleet
                        .resolve_key(&access(&account), region, &arn)
                        .await?
                }
                _ => unreachable!("key_filter accepts ARNs only"),
            }];
        }
        Ok(Validated {
            targets,
            target,
            targets_json: convert::targets_to_json(
                request.tables.as_ref(),
                request.selector.as_ref(),
            ),
            description: request.description.clone(),
            idempotency_key,
            max_updates_per_second,
            max_in_flight,
            failure_threshold,
            canary_count,
        })
    }

    async fn plan(
        &self,
        targets: &Targets,
        target: &Target,
        canaries: i32,
        field: &str,
    ) -> Result<Vec<PlannedItem>, ApiError> {
        let canaries = usize::try_from(canaries).unwrap_or(0);
        self.planner
            .plan(targets, target, canaries)
            .await
            .map_err(|e| match e {
                PlanError::UnknownAccount(id) => ApiError::NotFound {
                    resource: "account",
                    id: id.to_string(),
                },
                PlanError::UnknownRegion { account_id, region } => ApiError::NotFound {
                    resource: "region",
                    id: format!("{region} of account {account_id}"),
                },
                e @ PlanError::TooManyTables(_) => {
                    ValidationErrors::single(field, e.to_string()).into()
                }
                e @ PlanError::NoTables => ApiError::FailedPrecondition(e.to_string()),
                PlanError::Store(e) => e.into(),
            })
    }

    /// The stored request with its counts.
    async fn read(&self, record: &ChangeRequestRecord) -> Result<pb::ChangeRequest, ApiError> {
        let counts = self.store.change_requests.counts(record.request_id).await?;
        Ok(convert::request_to_proto(record, &counts))
    }

    /// The request already stored under this idempotency key, if any. The replaying caller's operator grants must
    /// cover its accounts too: a request id is not a way to read another team's request.
    async fn existing(
        &self,
        caller: &Caller,
        key: Option<&str>,
    ) -> Result<Option<pb::CreateChangeRequestResponse>, ApiError> {
        let Some(key) = key else { return Ok(None) };
        let Some(record) = self
            .store
            .change_requests
            .find_by_idempotency_key(key)
            .await?
        else {
            return Ok(None);
        };
        crate::authorization::check_request(
            &self.store,
            caller,
            Permission::Change,
            "CreateChangeRequest",
            record.request_id,
        )
        .await?;
        Ok(Some(self.created(&record).await?))
    }

    async fn created(
        &self,
        record: &ChangeRequestRecord,
    ) -> Result<pb::CreateChangeRequestResponse, ApiError> {
        let change_request = self.read(record).await?;
        let summary = self.stored_summary(record.request_id).await?;
        Ok(pb::CreateChangeRequestResponse {
            change_request: Some(change_request),
            summary: Some(summary),
            items: Vec::new(),
        })
    }

    /// The plan summary of a stored request, from its items.
    async fn stored_summary(&self, request_id: Uuid) -> Result<pb::PlanSummary, ApiError> {
        let items = self.store.change_items.all_of(request_id).await?;
        let mut summary = pb::PlanSummary::default();
        for item in items {
            match item.state.as_str() {
                "BLOCKED" => {
                    summary.blocked += 1;
                    *summary
                        .blocked_by_reason
                        .entry(item.reason.unwrap_or_default())
                        .or_insert(0) += 1;
                }
                "SKIPPED" if item.apply_time.is_none() && item.attempts == 0 => summary.skip += 1,
                _ => summary.change += 1,
            }
        }
        Ok(summary)
    }

    /// Plans, and unless `validate_only` stores the request with its items.
    #[allow(clippy::too_many_arguments)]
    async fn plan_and_store(
        &self,
        caller: &Caller,
        validated: Validated,
        validate_only: bool,
        rollback_of: Option<Uuid>,
        field: &str,
    ) -> Result<pb::CreateChangeRequestResponse, ApiError> {
        if !validate_only
            && let Some(existing) = self
                .existing(caller, validated.idempotency_key.as_deref())
                .await?
        {
            return Ok(existing);
        }
        let items = self
            .plan(
                &validated.targets,
                &validated.target,
                validated.canary_count,
                field,
            )
            .await?;
        // The caller's operator grants must cover every account the plan touches (a selector may reach further).
        crate::authorization::check_accounts(
            &self.store,
            caller,
            Permission::Change,
            "CreateChangeRequest",
            items
                .iter()
                .map(|i| i.account_id.to_string())
                .collect::<std::collections::BTreeSet<_>>(),
        )
        .await?;
        let (change, skip, blocked, by_reason) = summarize(&items);
        let n = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
        let summary = pb::PlanSummary {
            change: n(change),
            skip: n(skip),
            blocked: n(blocked),
            blocked_by_reason: by_reason.into_iter().map(|(k, v)| (k, n(v))).collect(),
        };
        let is_rollback = matches!(validated.targets, Targets::Rollback(_));
        let target_mode = (!is_rollback).then(|| validated.target.mode.as_str().to_owned());
        let target_key = if is_rollback {
            None
        } else {
            validated.target.key.as_ref().map(|k| k.as_str().to_owned())
        };
        if validate_only {
            let (tables, selector) = convert::targets_from_json(&validated.targets_json);
            return Ok(pb::CreateChangeRequestResponse {
                change_request: Some(pb::ChangeRequest {
                    description: validated.description,
                    tables,
                    selector,
                    target: target_mode.as_deref().map(|mode| pb::TargetEncryption {
                        mode: EncryptionMode::parse(mode).map_or(0, |m| {
                            crate::conversions::inventory::mode_to_proto(m) as i32
                        }),
                        kms_key: target_key.clone().unwrap_or_default(),
                    }),
                    options: Some(pb::ChangeOptions {
                        max_updates_per_second: validated.max_updates_per_second.unwrap_or(0.0),
                        max_in_flight: validated.max_in_flight.unwrap_or(0),
                        failure_threshold: validated.failure_threshold.unwrap_or(0),
                        canary_count: validated.canary_count,
                    }),
                    request_id: validated.idempotency_key.unwrap_or_default(),
                    rollback_of: rollback_of.map(|id| id.to_string()).unwrap_or_default(),
                    created_by: caller.identity.clone(),
                    ..Default::default()
                }),
                summary: Some(summary),
                items: items.iter().map(convert::planned_to_proto).collect(),
            });
        }
        let state = if self.settings.approval_required {
            RequestState::PendingApproval
        } else {
            RequestState::Queued
        };
        let new_items: Vec<NewChangeItem> = items
            .iter()
            .map(|item| NewChangeItem {
                account_id: item.account_id.to_string(),
                region: item.region.to_string(),
                table_name: item.table_name.to_string(),
                state: convert::planned_state(item).as_str().to_owned(),
                canary: item.canary,
                from_mode: item.from_mode.as_str().to_owned(),
                from_key_arn: item.from_key_arn.clone(),
                to_mode: item.to_mode.as_str().to_owned(),
                to_key_arn: item.to_key_arn.clone(),
                replicas: convert::replicas_to_json(item),
                reason: item.reason.map(|r| r.as_str().to_owned()),
                message: item.message.clone(),
                // A quota-blocked item keeps when its quota frees up, as the preview showed it.
                next_attempt_time: item.frees_at,
            })
            .collect();
        let new = NewChangeRequest {
            idempotency_key: validated.idempotency_key,
            state: state.as_str().to_owned(),
            description: validated.description,
            targets: validated.targets_json,
            target_mode,
            target_key,
            max_updates_per_second: validated.max_updates_per_second,
            max_in_flight: validated.max_in_flight,
            failure_threshold: validated.failure_threshold,
            canary_count: validated.canary_count,
            rollback_of,
            created_by: caller.identity.clone(),
        };
        let (record, _created) = self.store.change_requests.create(&new, &new_items).await?;
        tracing::info!(
            change_request = %record.request_id, created_by = %caller.identity, change, skip, blocked,
            "change request created"
        );
        let mut response = self.created(&record).await?;
        response.summary = Some(summary);
        Ok(response)
    }

    pub async fn create(
        &self,
        caller: &Caller,
        request: pb::CreateChangeRequestRequest,
    ) -> Result<pb::CreateChangeRequestResponse, ApiError> {
        let validated = self.validate(&request).await?;
        let field = if request.selector.is_some() {
            "selector"
        } else {
            "tables"
        };
        self.plan_and_store(caller, validated, request.validate_only, None, field)
            .await
    }

    /// One table: a change request of one item.
    pub async fn update_table(
        &self,
        caller: &Caller,
        request: pb::UpdateTableEncryptionRequest,
    ) -> Result<pb::CreateChangeRequestResponse, ApiError> {
        let mut errors = ValidationErrors::new();
        match &request.table {
            None => errors.add("table", "is required: account_id, region and table_name"),
            Some(t) => {
                errors.check("table.account_id", AccountId::parse(&t.account_id));
                errors.check("table.region", Region::parse(&t.region));
                errors.check("table.table_name", TableName::parse(&t.table_name));
            }
        }
        if !errors.is_empty() {
            return Err(errors.into());
        }
        self.create(
            caller,
            pb::CreateChangeRequestRequest {
                tables: request.table.map(|t| pb::TableList { tables: vec![t] }),
                selector: None,
                target: request.target,
                description: request.description,
                options: None,
                request_id: request.request_id,
                validate_only: request.validate_only,
            },
        )
        .await
    }

    /// A new request returning every table the given request changed to its earlier mode and key.
    pub async fn rollback(
        &self,
        caller: &Caller,
        request: pb::RollbackChangeRequestRequest,
    ) -> Result<pb::CreateChangeRequestResponse, ApiError> {
        let mut errors = ValidationErrors::new();
        let id = parse_id(&request.change_request_id, &mut errors);
        let idempotency_key = validate_request_id(&request.request_id, &mut errors);
        validate_description(&request.description, &mut errors);
        let Some(id) = id.filter(|_| errors.is_empty()) else {
            return Err(errors.into());
        };
        let original = self.store.change_requests.get(id).await?;
        let state = RequestState::parse(&original.state);
        if !state.is_some_and(RequestState::is_terminal) {
            return Err(ApiError::FailedPrecondition(format!(
                "change request {id} is {}: roll back a request once it has ended (cancel it first)",
                original.state
            )));
        }
        let rows: Vec<_> = self
            .store
            .change_items
            .all_of(id)
            .await?
            .into_iter()
            .filter(|item| item.state == "SUCCEEDED")
            .filter_map(rollback_row)
            .collect();
        if rows.is_empty() {
            return Err(ApiError::FailedPrecondition(format!(
                "change request {id} changed no table: nothing to roll back"
            )));
        }
        let tables = pb::TableList {
            tables: rows
                .iter()
                .map(|row| pb::TableRef {
                    account_id: row.account_id.to_string(),
                    region: row.region.to_string(),
                    table_name: row.table_name.to_string(),
                })
                .collect(),
        };
        let description = if request.description.is_empty() {
            format!("rollback of {id}")
        } else {
            request.description.clone()
        };
        let validated = Validated {
            targets: Targets::Rollback(rows),
            // Unused: each item has its own target.
            target: Target {
                mode: EncryptionMode::AwsOwned,
                key: None,
            },
            targets_json: convert::targets_to_json(Some(&tables), None),
            description,
            idempotency_key,
            max_updates_per_second: original.max_updates_per_second,
            max_in_flight: original.max_in_flight,
            failure_threshold: original.failure_threshold,
            canary_count: 0,
        };
        self.plan_and_store(
            caller,
            validated,
            request.validate_only,
            Some(id),
            "change_request_id",
        )
        .await
    }

    pub async fn get(
        &self,
        request: pb::GetChangeRequestRequest,
    ) -> Result<pb::ChangeRequest, ApiError> {
        let id = required_id(&request.change_request_id)?;
        let record = self.store.change_requests.get(id).await?;
        self.read(&record).await
    }

    pub async fn list(
        &self,
        request: pb::ListChangeRequestsRequest,
    ) -> Result<pb::ListChangeRequestsResponse, ApiError> {
        let mut errors = ValidationErrors::new();
        let page_size = errors.check("page_size", page_token::page_size(request.page_size));
        let states = enum_filter(
            &request.states,
            convert::request_state_from_proto,
            &mut errors,
        );
        let fingerprint = format!("states={:?}", request.states);
        let after = errors
            .check(
                "page_token",
                page_token::decode(&request.page_token, &fingerprint),
            )
            .flatten();
        let after = match after.map(|text| serde_json::from_str::<RequestPosition>(&text)) {
            None => None,
            Some(Ok(p)) => Some(RequestCursor {
                create_time: p.t,
                request_id: p.id,
            }),
            Some(Err(_)) => {
                errors.add("page_token", "is not a page token returned by this RPC");
                None
            }
        };
        let Some(page_size) = page_size.filter(|_| errors.is_empty()) else {
            return Err(errors.into());
        };
        let mut records = self
            .store
            .change_requests
            .list(&states, after.as_ref(), i64::from(page_size) + 1)
            .await?;
        let more = records.len() > page_size as usize;
        records.truncate(page_size as usize);
        let next_page_token = match (more, records.last()) {
            (true, Some(last)) => page_token::encode(
                &serde_json::to_string(&RequestPosition {
                    t: last.create_time,
                    id: last.request_id,
                })
                .unwrap_or_default(),
                &fingerprint,
            ),
            _ => String::new(),
        };
        let mut change_requests = Vec::with_capacity(records.len());
        for record in &records {
            change_requests.push(self.read(record).await?);
        }
        Ok(pb::ListChangeRequestsResponse {
            change_requests,
            next_page_token,
        })
    }

    pub async fn list_items(
        &self,
        request: pb::ListChangeItemsRequest,
    ) -> Result<pb::ListChangeItemsResponse, ApiError> {
        let mut errors = ValidationErrors::new();
        let id = parse_id(&request.change_request_id, &mut errors);
        let page_size = errors.check("page_size", page_token::page_size(request.page_size));
        let states = enum_filter(&request.states, convert::item_state_from_proto, &mut errors);
        let fingerprint = format!("{}/states={:?}", request.change_request_id, request.states);
        let after = match errors
            .check(
                "page_token",
                page_token::decode(&request.page_token, &fingerprint),
            )
            .flatten()
        {
            None => None,
            Some(text) => match text.parse::<i32>() {
                Ok(n) => Some(n),
                Err(_) => {
                    errors.add("page_token", "is not a page token returned by this RPC");
                    None
                }
            },
        };
        let (Some(id), Some(page_size)) = (id, page_size) else {
            return Err(errors.into());
        };
        if !errors.is_empty() {
            return Err(errors.into());
        }
        // NOT_FOUND for an unknown request rather than an empty page.
        self.store.change_requests.get(id).await?;
        let mut items = self
            .store
            .change_items
            .list(id, &states, after, i64::from(page_size) + 1)
            .await?;
        let more = items.len() > page_size as usize;
        items.truncate(page_size as usize);
        let next_page_token = match (more, items.last()) {
            (true, Some(last)) => page_token::encode(&last.ordinal.to_string(), &fingerprint),
            _ => String::new(),
        };
        Ok(pb::ListChangeItemsResponse {
            items: items.iter().map(convert::item_to_proto).collect(),
            next_page_token,
        })
    }

    pub async fn approve(
        &self,
        caller: &str,
        request: pb::ApproveChangeRequestRequest,
    ) -> Result<pb::ChangeRequest, ApiError> {
        let id = required_id(&request.change_request_id)?;
        let record = self.store.change_requests.approve(id, caller).await?;
        tracing::info!(change_request = %id, approved_by = caller, "change request approved");
        self.read(&record).await
    }

    pub async fn cancel(
        &self,
        caller: &str,
        request: pb::CancelChangeRequestRequest,
    ) -> Result<pb::ChangeRequest, ApiError> {
        let id = required_id(&request.change_request_id)?;
        let record = self.store.change_requests.cancel(id).await?;
        tracing::info!(change_request = %id, cancelled_by = caller, state = %record.state, "change request cancelled");
        self.read(&record).await
    }

    pub async fn pause(
        &self,
        caller: &str,
        request: pb::PauseChangeRequestRequest,
    ) -> Result<pb::ChangeRequest, ApiError> {
        let mut errors = ValidationErrors::new();
        let id = parse_id(&request.change_request_id, &mut errors);
        if request.reason.chars().count() > MAX_DESCRIPTION {
            errors.add(
                "reason",
                format!("must be at most {MAX_DESCRIPTION} characters"),
            );
        }
        let Some(id) = id.filter(|_| errors.is_empty()) else {
            return Err(errors.into());
        };
        let reason = if request.reason.is_empty() {
            format!("paused by {caller}")
        } else {
            format!("paused by {caller}: {}", request.reason)
        };
        let record = self.store.change_requests.pause(id, &reason).await?;
        tracing::info!(change_request = %id, paused_by = caller, "change request paused");
        self.read(&record).await
    }

    pub async fn resume(
        &self,
        caller: &str,
        request: pb::ResumeChangeRequestRequest,
    ) -> Result<pb::ChangeRequest, ApiError> {
        let id = required_id(&request.change_request_id)?;
        let record = self.store.change_requests.resume(id).await?;
        tracing::info!(change_request = %id, resumed_by = caller, "change request resumed");
        self.read(&record).await
    }

    pub async fn history(
        &self,
        request: pb::ListKeyRotationHistoryRequest,
    ) -> Result<pb::ListKeyRotationHistoryResponse, ApiError> {
        let mut errors = ValidationErrors::new();
        let page_size = errors.check("page_size", page_token::page_size(request.page_size));
        let optional = |text: &str| (!text.is_empty()).then(|| text.to_owned());
        if !request.account_id.is_empty() {
            errors.check("account_id", AccountId::parse(&request.account_id));
        }
        if !request.region.is_empty() {
            errors.check("region", Region::parse(&request.region));
        }
        if !request.table_name.is_empty() {
            errors.check("table_name", TableName::parse(&request.table_name));
        }
        let key = key_filter("kms_key_arn", &request.kms_key_arn, &mut errors);
        let request_id = if request.change_request_id.is_empty() {
            None
        } else {
            parse_id(&request.change_request_id, &mut errors)
        };
        let start = timestamp("start_time", request.start_time.as_ref(), &mut errors);
        let end = timestamp("end_time", request.end_time.as_ref(), &mut errors);
        if let (Some(s), Some(e)) = (start, end)
            && e <= s
        {
            errors.add("end_time", "must be after start_time");
        }
        let fingerprint = format!(
            "{}/{}/{}/{}/{}/{:?}/{:?}",
            request.account_id,
            request.region,
            request.table_name,
            request.kms_key_arn,
            request.change_request_id,
            request.start_time,
            request.end_time
        );
        let before = match errors
            .check(
                "page_token",
                page_token::decode(&request.page_token, &fingerprint),
            )
            .flatten()
        {
            None => None,
            Some(text) => match text.parse::<i64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    errors.add("page_token", "is not a page token returned by this RPC");
                    None
                }
            },
        };
        let Some(page_size) = page_size.filter(|_| errors.is_empty()) else {
            return Err(errors.into());
        };
        let key_arn = match key {
            None => None,
            Some(KeyReference::Arn(arn)) => Some(arn.to_string()),
            Some(KeyReference::AliasArn {
                arn,
                region,
                account_id,
            }) => {
                let account = self.store.accounts.get(&account_id).await?;
                Some(
                    self.fleet
                        .resolve_key(&access(&account), region, &arn)
                        .await?,
                )
            }
            Some(_) => None,
        };
        let filter = HistoryFilter {
            account_id: optional(&request.account_id),
            region: optional(&request.region),
            table_name: optional(&request.table_name),
            key_arn,
            request_id,
            finished_from: start,
            finished_before: end,
        };
        let mut rows = self
            .store
            .history
            .list(&filter, before, i64::from(page_size) + 1)
            .await?;
        let next_page_token = page_token::finish_page(&mut rows, page_size, &fingerprint, |r| {
            r.history_id.to_string()
        });
        Ok(pb::ListKeyRotationHistoryResponse {
            rotations: rows.iter().map(convert::rotation_to_proto).collect(),
            next_page_token,
        })
    }

    /// A snapshot (the request and every item), then each change as it happens, until the request ends.
    pub async fn watch(
        &self,
        request: pb::WatchChangeRequestRequest,
    ) -> Result<WatchStream, ApiError> {
        let id = required_id(&request.change_request_id)?;
        let record = self.store.change_requests.get(id).await?;
        let snapshot_time = Utc::now();
        let items = self.store.change_items.all_of(id).await?;
        let first = pb::WatchChangeRequestResponse {
            change_request: Some(self.read(&record).await?),
            items: items.iter().map(convert::item_to_proto).collect(),
        };
        let this = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            let mut seen: HashMap<i64, (String, DateTime<Utc>)> = items
                .iter()
                .map(|i| (i.item_id, (i.state.clone(), i.update_time)))
                .collect();
            let mut last_request = record.update_time;
            let mut last_counts = this.store.change_requests.counts(id).await.ok();
            // Look a little before the last check: a transaction may commit with an earlier timestamp.
            let mut since = snapshot_time - chrono::Duration::seconds(5);
            let mut done =
                RequestState::parse(&record.state).is_some_and(RequestState::is_terminal);
            while !done {
                tokio::select! {
                    () = tokio::time::sleep(this.settings.watch_interval) => {}
                    () = this.shutdown.cancelled() => return,
                    () = tx.closed() => return,
                }
                let checked_at = Utc::now();
                let update = this
                    .poll_watch(id, since, &mut seen, &mut last_request, &mut last_counts)
                    .await;
                match update {
                    Ok(Some((response, terminal))) => {
                        done = terminal;
                        if tx.send(Ok(response)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(error) => {
                        let _ = tx.send(Err(error.into())).await;
                        return;
                    }
                }
                since = checked_at - chrono::Duration::seconds(5);
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    /// One look for changes since the last: the items that changed and the request if it (or its counts) did.
    async fn poll_watch(
        &self,
        id: Uuid,
        since: DateTime<Utc>,
        seen: &mut HashMap<i64, (String, DateTime<Utc>)>,
        last_request: &mut DateTime<Utc>,
        last_counts: &mut Option<tablecrypt_store::ItemCounts>,
    ) -> Result<Option<(pb::WatchChangeRequestResponse, bool)>, ApiError> {
        let changed: Vec<ChangeItemRecord> = self
            .store
            .change_items
            .changed_since(id, since)
            .await?
            .into_iter()
            .filter(|item| {
                let now = (item.state.clone(), item.update_time);
                seen.insert(item.item_id, now.clone()) != Some(now)
            })
            .collect();
        let record = self.store.change_requests.get(id).await?;
        let counts = self.store.change_requests.counts(id).await?;
        let request_changed =
            record.update_time != *last_request || last_counts.as_ref() != Some(&counts);
        *last_request = record.update_time;
        *last_counts = Some(counts.clone());
        let terminal = RequestState::parse(&record.state).is_some_and(RequestState::is_terminal);
        if changed.is_empty() && !request_changed {
            return Ok(None);
        }
        Ok(Some((
            pb::WatchChangeRequestResponse {
                change_request: Some(convert::request_to_proto(&record, &counts)),
                items: changed.iter().map(convert::item_to_proto).collect(),
            },
            terminal,
        )))
    }
}

#[derive(Serialize, Deserialize)]
struct RequestPosition {
    t: DateTime<Utc>,
    id: Uuid,
}

/// A repeated enum filter (`states`), as stored names; each bad value is named by its index.
fn enum_filter(
    values: &[i32],
    parse: fn(i32) -> Result<&'static str, tablecrypt_core::InvalidValue>,
    errors: &mut ValidationErrors,
) -> Vec<String> {
    values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| errors.check(format!("states[{i}]"), parse(*v)))
        .map(str::to_owned)
        .collect()
}

fn parse_id(text: &str, errors: &mut ValidationErrors) -> Option<Uuid> {
    match Uuid::parse_str(text) {
        Ok(id) => Some(id),
        Err(_) => {
            errors.add(
                "change_request_id",
                if text.is_empty() {
                    "is required".to_owned()
                } else {
                    "is not a change request id (a UUID returned by CreateChangeRequest)".to_owned()
                },
            );
            None
        }
    }
}

fn required_id(text: &str) -> Result<Uuid, ApiError> {
    let mut errors = ValidationErrors::new();
    parse_id(text, &mut errors).ok_or_else(|| errors.into())
}

fn timestamp(
    field: &str,
    value: Option<&prost_types::Timestamp>,
    errors: &mut ValidationErrors,
) -> Option<DateTime<Utc>> {
    let value = value?;
    let time = u32::try_from(value.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(value.seconds, nanos));
    if time.is_none() {
        errors.add(field, "is not a valid timestamp");
    }
    time
}

/// A SUCCEEDED item's way back: the table and the mode and keys it had before (each replica's too).
fn rollback_row(item: ChangeItemRecord) -> Option<RollbackRow> {
    let replica_keys = item
        .replicas
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some((
                r.get("region")?.as_str()?.to_owned(),
                r.get("from_key_arn")?.as_str()?.to_owned(),
            ))
        })
        .collect();
    Some(RollbackRow {
        account_id: AccountId::parse(&item.account_id).ok()?,
        region: Region::parse(&item.region).ok()?,
        table_name: TableName::parse(&item.table_name).ok()?,
        mode: EncryptionMode::parse(&item.from_mode)?,
        key_arn: item.from_key_arn,
        replica_keys,
    })
}

/// The store-free part of CreateChangeRequest validation (request id, description, target, table names), for
/// the fuzz target: every violation must name a field.
#[doc(hidden)]
pub fn validate_fields_for_fuzzing(request: &pb::CreateChangeRequestRequest) -> ValidationErrors {
    let mut errors = ValidationErrors::new();
    validate_request_id(&request.request_id, &mut errors);
    validate_description(&request.description, &mut errors);
    validate_target(request.target.as_ref(), &mut errors);
    if let Some(list) = &request.tables {
        parse_table_refs(list, &mut errors);
    }
    errors
}
