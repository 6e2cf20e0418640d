//! Change-request calls in: every field checked, each problem named by its proto path, into the engine's inputs.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use tablecrypt_core::account_limits::MIN_RATE_PER_SECOND;
use tablecrypt_core::change::{ChangeOptions, SelectorSpec, TableRef};
use tablecrypt_core::{
    AccountId, EncryptionMode, InventoryFilter, ItemState, KeyReference, LabelSelector, Region,
    RequestState, TableName, ValidationErrors,
};
use tablecrypt_engine::MAX_ITEMS;
use tablecrypt_engine::planner::Target;
use tablecrypt_engine::requests::{HistoryQuery, NewRequest, RollbackRequest, Selection};
use tablecrypt_proto::v1 as pb;
use uuid::Uuid;

use super::change::{item_state_from_proto, request_state_from_proto};

/// Most characters in a description or a pause reason.
const MAX_DESCRIPTION: usize = 1024;
/// Most characters in an idempotency key (the schema's limit).
const MAX_REQUEST_ID: usize = 128;
/// Most canaries a request may ask for: canaries are a first look, not a second request.
const MAX_CANARIES: i32 = 100;
/// Longest table-name prefix: DynamoDB table names are at most 255 characters.
const MAX_PREFIX: usize = 255;

/// The service's limits a request may only lower; from the server's configuration.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_updates_per_second: f64,
    pub max_in_flight: u32,
}

pub fn mode_from_proto(value: i32) -> Result<Option<EncryptionMode>, String> {
    match pb::EncryptionMode::try_from(value) {
        Ok(pb::EncryptionMode::Unspecified) => Ok(None),
        Ok(pb::EncryptionMode::AwsOwned) => Ok(Some(EncryptionMode::AwsOwned)),
        Ok(pb::EncryptionMode::AwsManaged) => Ok(Some(EncryptionMode::AwsManaged)),
        Ok(pb::EncryptionMode::CustomerManaged) => Ok(Some(EncryptionMode::CustomerManaged)),
        Err(_) => Err(format!("{value} is not an EncryptionMode")),
    }
}

/// A filter's key, which must name one key unambiguously without an account-region: an ARN or an alias ARN.
pub fn key_filter(field: &str, text: &str, errors: &mut ValidationErrors) -> Option<KeyReference> {
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

/// Most current keys one selector names: each alias name or key id is one KMS DescribeKey per account-region
/// covered, so a 300-account, 4-region fleet pays 1,200 lookups per key.
const MAX_CURRENT_KEYS: usize = 20;

/// A selector's current keys (`current_kms_key` and `current_kms_keys`), any reference form, each once.
fn current_keys(s: &pb::TableSelector, errors: &mut ValidationErrors) -> Vec<KeyReference> {
    let mut keys: Vec<KeyReference> = Vec::new();
    let given = std::iter::once(("selector.current_kms_key".to_owned(), &s.current_kms_key))
        .filter(|(_, text)| !text.is_empty())
        .chain(
            s.current_kms_keys
                .iter()
                .enumerate()
                .map(|(i, text)| (format!("selector.current_kms_keys[{i}]"), text)),
        );
    for (field, text) in given {
        match KeyReference::parse(text) {
            Ok(key) if keys.contains(&key) => errors.add(field, "names a key already given"),
            Ok(key) => keys.push(key),
            Err(e) => errors.add(field, e.0),
        }
    }
    if keys.len() > MAX_CURRENT_KEYS {
        errors.add(
            "selector.current_kms_keys",
            format!("at most {MAX_CURRENT_KEYS} keys, got {}", keys.len()),
        );
    }
    keys
}

/// The tables of an explicit list, each field checked (`tables.tables[i].account_id`, ...); refs with a bad field
/// are left out.
fn table_refs(list: &pb::TableList, errors: &mut ValidationErrors) -> Vec<TableRef> {
    let mut refs = Vec::with_capacity(list.tables.len());
    for (i, t) in list.tables.iter().enumerate() {
        let field = |name: &str| format!("tables.tables[{i}].{name}");
        let a = errors.check(field("account_id"), AccountId::parse(&t.account_id));
        let r = errors.check(field("region"), Region::parse(&t.region));
        let n = errors.check(field("table_name"), TableName::parse(&t.table_name));
        if let (Some(account_id), Some(region), Some(table_name)) = (a, r, n) {
            refs.push(TableRef {
                account_id,
                region,
                table_name,
            });
        }
    }
    refs
}

fn request_id(text: &str, errors: &mut ValidationErrors) -> Option<String> {
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

fn description(field: &str, text: &str, errors: &mut ValidationErrors) {
    errors.free_text(field, text);
    if text.chars().count() > MAX_DESCRIPTION {
        errors.add(
            field,
            format!("must be at most {MAX_DESCRIPTION} characters"),
        );
    }
}

fn target(target: Option<&pb::TargetEncryption>, errors: &mut ValidationErrors) -> Option<Target> {
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

fn options(
    options: Option<&pb::ChangeOptions>,
    limits: RequestLimits,
    errors: &mut ValidationErrors,
) -> ChangeOptions {
    let Some(o) = options else {
        return ChangeOptions::default();
    };
    let rate = o.max_updates_per_second;
    let max_rate = limits.max_updates_per_second;
    let max_updates_per_second = if rate == 0.0 {
        None
    } else if !rate.is_finite() || rate < 0.0 {
        errors.add(
            "options.max_updates_per_second",
            "must be a positive number (0: the service's)",
        );
        None
    } else if rate < MIN_RATE_PER_SECOND {
        errors.add(
            "options.max_updates_per_second",
            format!("must be at least {MIN_RATE_PER_SECOND} per second (one table every 100 s; 0: the service's)"),
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
    let max_in_flight_limit = i32::try_from(limits.max_in_flight).unwrap_or(i32::MAX);
    let max_in_flight = match o.max_in_flight {
        0 => None,
        n if n < 0 => {
            errors.add(
                "options.max_in_flight",
                "must not be negative (0: the service's)",
            );
            None
        }
        n if n > max_in_flight_limit => {
            errors.add(
                "options.max_in_flight",
                format!(
                    "may only lower the service's limit of {max_in_flight_limit} tables per account-region"
                ),
            );
            None
        }
        n => Some(n),
    };
    let failure_threshold = match o.failure_threshold {
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
    ChangeOptions {
        max_updates_per_second,
        max_in_flight,
        failure_threshold,
        canary_count: o.canary_count.clamp(0, MAX_CANARIES),
        include_iac_owned: o.include_iac_owned,
    }
}

fn selection(
    tables: Option<&pb::TableList>,
    selector: Option<&pb::TableSelector>,
    errors: &mut ValidationErrors,
) -> Option<Selection> {
    match (tables, selector) {
        (Some(_), Some(_)) => {
            errors.add("selector", "give either tables or selector, not both");
            None
        }
        (None, None) => {
            errors.add(
                "tables",
                "is required (or a selector): which tables to change",
            );
            None
        }
        (Some(list), None) => {
            if list.tables.is_empty() {
                errors.add("tables.tables", "must name at least one table");
            } else if list.tables.len() > MAX_ITEMS {
                errors.add(
                    "tables.tables",
                    format!("may name at most {MAX_ITEMS} tables"),
                );
            }
            let refs = table_refs(list, errors);
            let mut seen = HashSet::new();
            for (i, table) in refs.iter().enumerate() {
                if !seen.insert(table) {
                    errors.add(
                        format!("tables.tables[{i}]"),
                        "names a table already listed",
                    );
                }
            }
            Some(Selection::Tables(refs))
        }
        (None, Some(s)) => {
            let account_ids =
                errors.check_each("selector.account_ids", &s.account_ids, AccountId::parse);
            let account_selector = errors.check(
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
            let current_keys = current_keys(s, errors);
            let table_tags = errors.check(
                "selector.table_tag_selector",
                LabelSelector::parse_tags(&s.table_tag_selector),
            );
            errors.free_text("selector.table_name_prefix", &s.table_name_prefix);
            if s.table_name_prefix.len() > MAX_PREFIX {
                errors.add(
                    "selector.table_name_prefix",
                    format!("must be at most {MAX_PREFIX} characters"),
                );
            }
            let spec = SelectorSpec {
                account_ids: s.account_ids.clone(),
                account_label_selector: s.account_label_selector.clone(),
                regions: s.regions.clone(),
                current_mode: mode,
                current_kms_key: s.current_kms_key.clone(),
                current_kms_keys: s.current_kms_keys.clone(),
                table_name_prefix: s.table_name_prefix.clone(),
                table_tag_selector: s.table_tag_selector.clone(),
            };
            let (Some(account_selector), Some(table_tags)) = (account_selector, table_tags) else {
                return None;
            };
            Some(Selection::Selector {
                spec,
                filter: InventoryFilter {
                    account_ids,
                    account_selector,
                    table_tags,
                    regions,
                    mode,
                    key_arns: Vec::new(),
                    name_prefix: (!s.table_name_prefix.is_empty())
                        .then(|| s.table_name_prefix.clone()),
                    inaccessible_only: false,
                    include_gone: false,
                },
                current_keys,
            })
        }
    }
}

/// A CreateChangeRequestRequest, checked.
pub fn new_request(
    request: &pb::CreateChangeRequestRequest,
    limits: RequestLimits,
) -> Result<NewRequest, ValidationErrors> {
    let mut errors = ValidationErrors::new();
    let idempotency_key = request_id(&request.request_id, &mut errors);
    description("description", &request.description, &mut errors);
    let target = target(request.target.as_ref(), &mut errors);
    let options = options(request.options.as_ref(), limits, &mut errors);
    let selection = selection(
        request.tables.as_ref(),
        request.selector.as_ref(),
        &mut errors,
    );
    match (selection, target) {
        (Some(selection), Some(target)) if errors.is_empty() => Ok(NewRequest {
            selection,
            target,
            description: request.description.clone(),
            idempotency_key,
            options,
        }),
        _ => Err(errors),
    }
}

/// An UpdateTableEncryptionRequest as the one-table CreateChangeRequestRequest it is.
pub fn one_table_request(
    request: pb::UpdateTableEncryptionRequest,
) -> Result<pb::CreateChangeRequestRequest, ValidationErrors> {
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
        return Err(errors);
    }
    Ok(pb::CreateChangeRequestRequest {
        tables: request.table.map(|t| pb::TableList { tables: vec![t] }),
        selector: None,
        target: request.target,
        description: request.description,
        options: None,
        request_id: request.request_id,
        validate_only: request.validate_only,
    })
}

/// A RollbackChangeRequestRequest, checked.
pub fn rollback_request(
    request: &pb::RollbackChangeRequestRequest,
) -> Result<RollbackRequest, ValidationErrors> {
    let mut errors = ValidationErrors::new();
    let id = change_request_id(&request.change_request_id, &mut errors);
    let idempotency_key = request_id(&request.request_id, &mut errors);
    description("description", &request.description, &mut errors);
    match id {
        Some(of) if errors.is_empty() => Ok(RollbackRequest {
            of,
            description: (!request.description.is_empty()).then(|| request.description.clone()),
            idempotency_key,
        }),
        _ => Err(errors),
    }
}

/// A PauseChangeRequestRequest's request and reason, checked.
pub fn pause_request(
    request: &pb::PauseChangeRequestRequest,
) -> Result<(Uuid, &str), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    let id = change_request_id(&request.change_request_id, &mut errors);
    description("reason", &request.reason, &mut errors);
    match id {
        Some(id) if errors.is_empty() => Ok((id, request.reason.as_str())),
        _ => Err(errors),
    }
}

fn change_request_id(text: &str, errors: &mut ValidationErrors) -> Option<Uuid> {
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

/// A change request id, or INVALID_ARGUMENT naming `change_request_id`.
pub fn required_id(text: &str) -> Result<Uuid, ValidationErrors> {
    let mut errors = ValidationErrors::new();
    change_request_id(text, &mut errors).ok_or(errors)
}

/// A repeated `states` filter, each bad value named by its index.
pub fn request_states(values: &[i32], errors: &mut ValidationErrors) -> Vec<RequestState> {
    values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| errors.check(format!("states[{i}]"), request_state_from_proto(*v)))
        .collect()
}

/// A repeated `states` filter of items, each bad value named by its index.
pub fn item_states(values: &[i32], errors: &mut ValidationErrors) -> Vec<ItemState> {
    values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| errors.check(format!("states[{i}]"), item_state_from_proto(*v)))
        .collect()
}

/// A ListChangeItemsRequest's request id and states.
pub fn item_filter(
    request: &pb::ListChangeItemsRequest,
    errors: &mut ValidationErrors,
) -> (Option<Uuid>, Vec<ItemState>) {
    let id = change_request_id(&request.change_request_id, errors);
    (id, item_states(&request.states, errors))
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

/// A ListKeyRotationHistoryRequest's filter.
pub fn history_query(
    request: &pb::ListKeyRotationHistoryRequest,
    errors: &mut ValidationErrors,
) -> HistoryQuery {
    let optional = |text: &str| !text.is_empty();
    let account_id = optional(&request.account_id)
        .then(|| errors.check("account_id", AccountId::parse(&request.account_id)))
        .flatten();
    let region = optional(&request.region)
        .then(|| errors.check("region", Region::parse(&request.region)))
        .flatten();
    let table_name = optional(&request.table_name)
        .then(|| errors.check("table_name", TableName::parse(&request.table_name)))
        .flatten();
    let key = key_filter("kms_key_arn", &request.kms_key_arn, errors);
    let request_id = optional(&request.change_request_id)
        .then(|| change_request_id(&request.change_request_id, errors))
        .flatten();
    let finished_from = timestamp("start_time", request.start_time.as_ref(), errors);
    let finished_before = timestamp("end_time", request.end_time.as_ref(), errors);
    if let (Some(s), Some(e)) = (finished_from, finished_before)
        && e <= s
    {
        errors.add("end_time", "must be after start_time");
    }
    HistoryQuery {
        account_id,
        region,
        table_name,
        key,
        request_id,
        finished_from,
        finished_before,
    }
}

/// The store-free part of CreateChangeRequest validation (request id, description, target, table names), for
/// the fuzz target: every violation must name a field.
pub fn validate_fields_for_fuzzing(request: &pb::CreateChangeRequestRequest) -> ValidationErrors {
    let mut errors = ValidationErrors::new();
    request_id(&request.request_id, &mut errors);
    description("description", &request.description, &mut errors);
    target(request.target.as_ref(), &mut errors);
    if let Some(list) = &request.tables {
        table_refs(list, &mut errors);
    }
    errors
}
