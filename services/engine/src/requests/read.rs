//! Reading requests, their items and the key-rotation history, a page at a time (`limit` rows and whether more
//! follow; the API turns the last row into a page token).

use chrono::{DateTime, Utc};
use tablecrypt_core::change::{ChangeItem, ChangeRequest, ItemCounts, ItemState, KeyRotation};
use tablecrypt_core::{AccountId, KeyReference, Region, RequestState, TableName};
use tablecrypt_store::{HistoryFilter, RequestCursor};
use uuid::Uuid;

use super::ChangeRequests;
use crate::access::Visible;
use crate::error::EngineError;
use crate::keys::resolve_key;

/// A page of requests, each with its item counts.
#[derive(Debug, Clone)]
pub struct RequestPage {
    pub requests: Vec<(ChangeRequest, ItemCounts)>,
    pub more: bool,
}

/// A page of a request's items.
#[derive(Debug, Clone)]
pub struct ItemPage {
    pub items: Vec<ChangeItem>,
    pub more: bool,
}

/// Which history rows to read; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub account_id: Option<AccountId>,
    pub region: Option<Region>,
    pub table_name: Option<TableName>,
    /// Rows from or to this key (an ARN or alias ARN).
    pub key: Option<KeyReference>,
    pub request_id: Option<Uuid>,
    pub finished_from: Option<DateTime<Utc>>,
    pub finished_before: Option<DateTime<Utc>>,
}

/// `rows` fetched as `limit + 1`, trimmed to `limit`, and whether more follow.
fn page<T>(mut rows: Vec<T>, limit: u32) -> (Vec<T>, bool) {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    (rows, more)
}

impl ChangeRequests {
    /// A request with its item counts.
    pub async fn get(&self, id: Uuid) -> Result<(ChangeRequest, ItemCounts), EngineError> {
        let request = self.store.change_requests.get(id).await?;
        let counts = self.store.change_requests.counts(id).await?;
        Ok((request, counts))
    }

    /// Requests newest first after `after`, optionally only in `states`; only those whose every account is
    /// `visible`.
    pub async fn list(
        &self,
        states: &[RequestState],
        visible: &Visible,
        after: Option<&RequestCursor>,
        limit: u32,
    ) -> Result<RequestPage, EngineError> {
        let scope = visible.accounts();
        let rows = self
            .store
            .change_requests
            .list(states, scope.as_deref(), after, i64::from(limit) + 1)
            .await?;
        let (rows, more) = page(rows, limit);
        let mut requests = Vec::with_capacity(rows.len());
        for request in rows {
            let counts = self
                .store
                .change_requests
                .counts(request.request_id)
                .await?;
            requests.push((request, counts));
        }
        Ok(RequestPage { requests, more })
    }

    /// A request's items in plan order after `after_ordinal`; NOT_FOUND for an unknown request rather than an
    /// empty page.
    pub async fn list_items(
        &self,
        id: Uuid,
        states: &[ItemState],
        after_ordinal: Option<i32>,
        limit: u32,
    ) -> Result<ItemPage, EngineError> {
        self.store.change_requests.get(id).await?;
        let rows = self
            .store
            .change_items
            .list(id, states, after_ordinal, i64::from(limit) + 1)
            .await?;
        let (items, more) = page(rows, limit);
        Ok(ItemPage { items, more })
    }

    /// Key-rotation history newest first, before row `before_id`, of `visible` accounts only; an alias ARN
    /// filter is resolved first.
    pub async fn history(
        &self,
        query: HistoryQuery,
        visible: &Visible,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<(Vec<KeyRotation>, bool), EngineError> {
        let key_arn = match &query.key {
            None => None,
            Some(key) => Some(
                resolve_key(&self.store, &self.fleet, visible, key, None, "kms_key_arn").await?,
            ),
        };
        let filter = HistoryFilter {
            account_id: query.account_id.map(|a| a.to_string()),
            region: query.region.map(|r| r.to_string()),
            table_name: query.table_name.map(|t| t.to_string()),
            key_arn,
            request_id: query.request_id,
            finished_from: query.finished_from,
            finished_before: query.finished_before,
        };
        let rows = self
            .store
            .history
            .list(
                &filter,
                visible.accounts().as_deref(),
                before_id,
                i64::from(limit) + 1,
            )
            .await?;
        Ok(page(rows, limit))
    }
}
