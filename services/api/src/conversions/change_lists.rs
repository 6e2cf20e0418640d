//! The change-request lists (requests, a request's items, the key-rotation history): their filters and paging
//! in, their pages out. Each page token is bound to its call (RPC, caller) and filter by the one `Paging` helper.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tablecrypt_core::change::ItemState;
use tablecrypt_core::{RequestState, ValidationErrors};
use tablecrypt_engine::requests::{HistoryQuery, ItemPage, RequestPage};
use tablecrypt_proto::v1 as pb;
use tablecrypt_store::RequestCursor;
use uuid::Uuid;

use super::change::{item_to_proto, rotation_to_proto, shown};
use super::change_input as parse;
use crate::page_token::{CallPages, Paging};

/// Where a page of requests ends, newest first: (create time, id).
#[derive(Serialize, Deserialize)]
pub struct RequestPosition {
    t: DateTime<Utc>,
    id: Uuid,
}

impl RequestPosition {
    pub fn cursor(&self) -> RequestCursor {
        RequestCursor {
            create_time: self.t,
            request_id: self.id,
        }
    }
}

/// ListChangeRequests' state filter and paging.
pub fn request_list(
    request: &pb::ListChangeRequestsRequest,
    pages: &CallPages,
) -> Result<(Vec<RequestState>, Paging<RequestPosition>), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    let states = parse::request_states(&request.states, &mut errors);
    let filter = format!("states={:?}", request.states);
    let paging = pages.paging(request.page_size, &request.page_token, filter, &mut errors);
    match paging {
        Some(paging) if errors.is_empty() => Ok((states, paging)),
        _ => Err(errors),
    }
}

pub fn request_page_to_proto(
    page: RequestPage,
    paging: &Paging<RequestPosition>,
) -> pb::ListChangeRequestsResponse {
    let next_page_token =
        paging.next_token(page.more, page.requests.last(), |(r, _)| RequestPosition {
            t: r.create_time.unwrap_or_default(),
            id: r.request_id,
        });
    pb::ListChangeRequestsResponse {
        change_requests: page.requests.into_iter().map(shown).collect(),
        next_page_token,
    }
}

/// ListChangeItems' request, state filter and paging (after an ordinal).
pub fn item_list(
    request: &pb::ListChangeItemsRequest,
    pages: &CallPages,
) -> Result<(Uuid, Vec<ItemState>, Paging<i32>), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    let (id, states) = parse::item_filter(request, &mut errors);
    let filter = format!("{:?}", (&request.change_request_id, &request.states));
    let paging = pages.paging(request.page_size, &request.page_token, filter, &mut errors);
    match (id, paging) {
        (Some(id), Some(paging)) if errors.is_empty() => Ok((id, states, paging)),
        _ => Err(errors),
    }
}

pub fn item_page_to_proto(page: &ItemPage, paging: &Paging<i32>) -> pb::ListChangeItemsResponse {
    pb::ListChangeItemsResponse {
        // Filled by the handler, which reads the aliases.
        key_aliases: Default::default(),
        next_page_token: paging.next_token(page.more, page.items.last(), |i| i.ordinal),
        items: page.items.iter().map(item_to_proto).collect(),
    }
}

/// ListKeyRotationHistory's filter and paging (before a row id).
pub fn history_list(
    request: &pb::ListKeyRotationHistoryRequest,
    pages: &CallPages,
) -> Result<(HistoryQuery, Paging<i64>), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    let query = parse::history_query(request, &mut errors);
    // Debug quotes and escapes each string, so no two filters give the same key.
    let filter = format!(
        "{:?}",
        (
            &request.account_id,
            &request.region,
            &request.table_name,
            &request.kms_key_arn,
            &request.change_request_id,
            &request.start_time,
            &request.end_time,
        )
    );
    let paging = pages.paging(request.page_size, &request.page_token, filter, &mut errors);
    match paging {
        Some(paging) if errors.is_empty() => Ok((query, paging)),
        _ => Err(errors),
    }
}

pub fn history_page_to_proto(
    rows: &[tablecrypt_core::change::KeyRotation],
    more: bool,
    paging: &Paging<i64>,
) -> pb::ListKeyRotationHistoryResponse {
    pb::ListKeyRotationHistoryResponse {
        // Filled by the handler, which reads the aliases.
        key_aliases: Default::default(),
        next_page_token: paging.next_token(more, rows.last(), |r| r.history_id),
        rotations: rows.iter().map(rotation_to_proto).collect(),
    }
}
