//! The operator's transitions: approve (never by the creator), cancel, pause (with why) and resume.

use tablecrypt_core::change::{ChangeRequest, ItemCounts};
use uuid::Uuid;

use super::ChangeRequests;
use crate::error::EngineError;

impl ChangeRequests {
    /// PENDING_APPROVAL -> QUEUED, by someone other than the creator.
    pub async fn approve(
        &self,
        id: Uuid,
        approver: &str,
    ) -> Result<(ChangeRequest, ItemCounts), EngineError> {
        self.store.change_requests.approve(id, approver).await?;
        tracing::info!(change_request = %id, approved_by = approver, "change request approved");
        self.get(id).await
    }

    /// Stops new applies; tables already being changed finish and are recorded.
    pub async fn cancel(
        &self,
        id: Uuid,
        caller: &str,
    ) -> Result<(ChangeRequest, ItemCounts), EngineError> {
        let request = self.store.change_requests.cancel(id).await?;
        tracing::info!(
            change_request = %id, cancelled_by = caller,
            state = request.state.map(|s| s.as_str()).unwrap_or_default(), "change request cancelled"
        );
        self.get(id).await
    }

    /// QUEUED or RUNNING -> PAUSED, recording who paused it and why.
    pub async fn pause(
        &self,
        id: Uuid,
        caller: &str,
        reason: &str,
    ) -> Result<(ChangeRequest, ItemCounts), EngineError> {
        let reason = if reason.is_empty() {
            format!("paused by {caller}")
        } else {
            format!("paused by {caller}: {reason}")
        };
        self.store.change_requests.pause(id, &reason).await?;
        tracing::info!(change_request = %id, paused_by = caller, "change request paused");
        self.get(id).await
    }

    /// PAUSED -> RUNNING (or QUEUED if nothing was claimed yet).
    pub async fn resume(
        &self,
        id: Uuid,
        caller: &str,
    ) -> Result<(ChangeRequest, ItemCounts), EngineError> {
        self.store.change_requests.resume(id).await?;
        tracing::info!(change_request = %id, resumed_by = caller, "change request resumed");
        self.get(id).await
    }
}
