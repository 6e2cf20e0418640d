//! Change-request RPCs: each parses its call (`conversions::change_input`), makes one call into
//! `tablecrypt_engine::requests`, and converts the answer (`conversions::change`).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tablecrypt_core::Caller;
use tablecrypt_core::iac::IacOwnership;
use tablecrypt_engine::requests::{self, RequestSettings};
use tablecrypt_fleet::Fleet;
use tablecrypt_proto::v1 as pb;
use tablecrypt_store::Store;
use tokio_stream::{Stream, StreamExt as _};
use tokio_util::sync::CancellationToken;

use crate::conversions::change::{created_to_proto, shown, watch_update_to_proto};
use crate::conversions::change_input::{self as parse, RequestLimits};
use crate::conversions::change_lists::{self as lists, RequestPosition};
use crate::error::ApiError;
use crate::key_aliases;
use crate::page_token::CallPages;
use tablecrypt_engine::access::Visible;

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
    /// How long one watch stream lasts before it ends.
    pub watch_max_duration: Duration,
    /// Which table tags mark infrastructure-as-code ownership.
    pub iac: IacOwnership,
}

pub type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchChangeRequestResponse, tonic::Status>> + Send>>;

/// The change-request half of the service.
#[derive(Debug, Clone)]
pub struct ChangeRequests {
    requests: requests::ChangeRequests,
    limits: RequestLimits,
    /// For the keys' aliases in answers.
    store: Store,
}

impl ChangeRequests {
    pub fn new(
        store: Store,
        fleet: Arc<Fleet>,
        describes: tablecrypt_engine::DescribeLimiter,
        settings: ChangeSettings,
        shutdown: CancellationToken,
    ) -> Self {
        let request_settings = RequestSettings {
            approval_required: settings.approval_required,
            watch_interval: settings.watch_interval,
            watch_max_duration: settings.watch_max_duration,
            iac: settings.iac,
        };
        Self {
            store: store.clone(),
            requests: requests::ChangeRequests::new(
                store,
                fleet,
                describes,
                request_settings,
                shutdown,
            ),
            limits: RequestLimits {
                max_updates_per_second: settings.max_updates_per_second,
                max_in_flight: settings.max_in_flight,
            },
        }
    }

    /// Which table tags mark infrastructure-as-code ownership, as planning reads them.
    pub fn iac(&self) -> &IacOwnership {
        self.requests.iac()
    }

    pub async fn create(
        &self,
        caller: &Caller,
        request: pb::CreateChangeRequestRequest,
    ) -> Result<pb::CreateChangeRequestResponse, ApiError> {
        let new = parse::new_request(&request, self.limits)?;
        let created = self
            .requests
            .create(caller, new, request.validate_only)
            .await?;
        self.named(created_to_proto(&created)).await
    }

    /// A plan's answer with its keys' aliases.
    async fn named(
        &self,
        mut created: pb::CreateChangeRequestResponse,
    ) -> Result<pb::CreateChangeRequestResponse, ApiError> {
        created.key_aliases =
            key_aliases::lookup(&self.store, key_aliases::of_items(&created.items)).await?;
        Ok(created)
    }

    pub async fn update_table(
        &self,
        caller: &Caller,
        request: pb::UpdateTableEncryptionRequest,
    ) -> Result<pb::CreateChangeRequestResponse, ApiError> {
        self.create(caller, parse::one_table_request(request)?)
            .await
    }

    pub async fn rollback(
        &self,
        caller: &Caller,
        request: pb::RollbackChangeRequestRequest,
    ) -> Result<pb::CreateChangeRequestResponse, ApiError> {
        let rollback = parse::rollback_request(&request)?;
        let created = self
            .requests
            .rollback(caller, rollback, request.validate_only)
            .await?;
        self.named(created_to_proto(&created)).await
    }

    pub async fn get(
        &self,
        request: pb::GetChangeRequestRequest,
    ) -> Result<pb::ChangeRequest, ApiError> {
        let id = parse::required_id(&request.change_request_id)?;
        Ok(shown(self.requests.get(id).await?))
    }

    pub async fn list(
        &self,
        visible: &Visible,
        pages: &CallPages,
        request: pb::ListChangeRequestsRequest,
    ) -> Result<pb::ListChangeRequestsResponse, ApiError> {
        let (states, paging) = lists::request_list(&request, pages)?;
        let after = paging.after.as_ref().map(RequestPosition::cursor);
        let page = self
            .requests
            .list(&states, visible, after.as_ref(), paging.size)
            .await?;
        Ok(lists::request_page_to_proto(page, &paging))
    }

    pub async fn list_items(
        &self,
        pages: &CallPages,
        request: pb::ListChangeItemsRequest,
    ) -> Result<pb::ListChangeItemsResponse, ApiError> {
        let (id, states, paging) = lists::item_list(&request, pages)?;
        let page = self
            .requests
            .list_items(id, &states, paging.after, paging.size)
            .await?;
        let mut answer = lists::item_page_to_proto(&page, &paging);
        answer.key_aliases =
            key_aliases::lookup(&self.store, key_aliases::of_items(&answer.items)).await?;
        Ok(answer)
    }

    pub async fn approve(
        &self,
        caller: &str,
        request: pb::ApproveChangeRequestRequest,
    ) -> Result<pb::ChangeRequest, ApiError> {
        let id = parse::required_id(&request.change_request_id)?;
        Ok(shown(self.requests.approve(id, caller).await?))
    }

    pub async fn cancel(
        &self,
        caller: &str,
        request: pb::CancelChangeRequestRequest,
    ) -> Result<pb::ChangeRequest, ApiError> {
        let id = parse::required_id(&request.change_request_id)?;
        Ok(shown(self.requests.cancel(id, caller).await?))
    }

    pub async fn pause(
        &self,
        caller: &str,
        request: pb::PauseChangeRequestRequest,
    ) -> Result<pb::ChangeRequest, ApiError> {
        let (id, reason) = parse::pause_request(&request)?;
        Ok(shown(self.requests.pause(id, caller, reason).await?))
    }

    pub async fn resume(
        &self,
        caller: &str,
        request: pb::ResumeChangeRequestRequest,
    ) -> Result<pb::ChangeRequest, ApiError> {
        let id = parse::required_id(&request.change_request_id)?;
        Ok(shown(self.requests.resume(id, caller).await?))
    }

    pub async fn history(
        &self,
        visible: &Visible,
        pages: &CallPages,
        request: pb::ListKeyRotationHistoryRequest,
    ) -> Result<pb::ListKeyRotationHistoryResponse, ApiError> {
        let (query, paging) = lists::history_list(&request, pages)?;
        let (rows, more) = self
            .requests
            .history(query, visible, paging.after, paging.size)
            .await?;
        let mut answer = lists::history_page_to_proto(&rows, more, &paging);
        answer.key_aliases =
            key_aliases::lookup(&self.store, key_aliases::of_rotations(&answer.rotations)).await?;
        Ok(answer)
    }

    pub async fn watch(
        &self,
        request: pb::WatchChangeRequestRequest,
    ) -> Result<WatchStream, ApiError> {
        let id = parse::required_id(&request.change_request_id)?;
        let updates = self.requests.watch(id).await?;
        Ok(Box::pin(updates.map(|update| {
            update
                .map(|update| watch_update_to_proto(&update))
                .map_err(|e| ApiError::from(e).into())
        })))
    }
}
