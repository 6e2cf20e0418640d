//! How a use case fails, classified by what the caller should do about it; the API maps it to a gRPC status.

use tablecrypt_core::ValidationErrors;
use tablecrypt_fleet::FleetError;
use tablecrypt_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request is wrong, field by field.
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    #[error("{resource} {id} not found")]
    NotFound { resource: &'static str, id: String },
    #[error("{resource} {id} already exists")]
    AlreadyExists { resource: &'static str, id: String },
    /// The resource's state does not allow this, or there is nothing to do.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Outside the caller's role or scope.
    #[error("{0}")]
    PermissionDenied(String),
    /// AWS refused or failed, classified.
    #[error(transparent)]
    Aws(#[from] FleetError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EngineError {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::Invalid(ValidationErrors::single(field, description))
    }
}
