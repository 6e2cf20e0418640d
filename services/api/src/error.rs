//! The one map from failures to gRPC status.

use tablecrypt_core::ValidationErrors;
use tablecrypt_core::error_chain::error_chain as cause_chain;
use tablecrypt_engine::EngineError;
use tablecrypt_store::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Every way an RPC can fail, classified by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is wrong; carries one violation per bad field.
    #[error(transparent)]
    InvalidArgument(#[from] ValidationErrors),
    #[error("{resource} {id} not found")]
    NotFound { resource: &'static str, id: String },
    #[error("{resource} {id} already exists")]
    AlreadyExists { resource: &'static str, id: String },
    /// A stale etag or a concurrent write: re-read and retry.
    #[error("{0}")]
    Aborted(String),
    /// The resource's state does not allow this (e.g. resuming a request that is not paused).
    #[error("{0}")]
    FailedPrecondition(String),
    /// No valid credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this (e.g. approve their own change request).
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller holds as much of a limited resource as it may (e.g. open watches): close some, retry later.
    #[error("{0}")]
    ResourceExhausted(String),
    /// AWS refused or failed, classified.
    #[error("AWS: {0}")]
    Aws(#[from] tablecrypt_fleet::FleetError),
    /// A dependency (Postgres) is not answering; retrying later may work.
    #[error("service temporarily unavailable")]
    Unavailable(#[source] StoreError),
    /// A bug or corrupt state; the cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] StoreError),
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound { resource, id } => Self::NotFound { resource, id },
            StoreError::AlreadyExists { resource, id } => Self::AlreadyExists { resource, id },
            StoreError::VersionConflict { resource, id } => Self::Aborted(format!(
                "{resource} {id} was changed since the given etag was read: read it again and retry"
            )),
            error @ StoreError::InvalidState { .. } => Self::FailedPrecondition(error.to_string()),
            StoreError::Forbidden { reason } => Self::PermissionDenied(reason),
            error @ StoreError::Unavailable(_) => Self::Unavailable(error),
            error @ (StoreError::Corrupt { .. }
            | StoreError::LeaseLost { .. }
            | StoreError::Database(_)
            | StoreError::Migrate(_)
            | StoreError::SchemaAhead { .. }) => Self::Internal(error),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Invalid(errors) => Self::InvalidArgument(errors),
            EngineError::NotFound { resource, id } => Self::NotFound { resource, id },
            EngineError::AlreadyExists { resource, id } => Self::AlreadyExists { resource, id },
            EngineError::FailedPrecondition(message) => Self::FailedPrecondition(message),
            EngineError::PermissionDenied(message) => Self::PermissionDenied(message),
            EngineError::Aws(error) => Self::Aws(error),
            EngineError::Store(error) => error.into(),
        }
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::InvalidArgument(errors) => {
                let mut details = ErrorDetails::new();
                for v in errors.violations() {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
                Status::with_error_details(Code::InvalidArgument, errors.to_string(), details)
            }
            ApiError::NotFound { .. } => Status::not_found(error.to_string()),
            ApiError::AlreadyExists { .. } => Status::already_exists(error.to_string()),
            ApiError::Aborted(message) => Status::aborted(message),
            ApiError::FailedPrecondition(message) => Status::failed_precondition(message),
            ApiError::PermissionDenied(message) => Status::permission_denied(message),
            ApiError::ResourceExhausted(message) => Status::resource_exhausted(message),
            ApiError::Unauthenticated(message) => Status::unauthenticated(message),
            ApiError::Aws(error) => {
                use tablecrypt_core::FailureKind;
                let message = format!("AWS {}: {}", error.kind, error.message);
                match error.kind {
                    // AWS refused tablecrypt's role, not the caller: the reason tells clients apart (the CLI
                    // exits 4 instead of 3).
                    FailureKind::AccessDenied => Status::with_error_details(
                        Code::PermissionDenied,
                        message,
                        ErrorDetails::with_error_info(
                            tablecrypt_proto::AWS_ACCESS_DENIED_REASON,
                            tablecrypt_proto::ERROR_DOMAIN,
                            [("role_refused".to_owned(), error.role_refused.to_string())],
                        ),
                    ),
                    FailureKind::NotFound => Status::not_found(message),
                    FailureKind::Throttled | FailureKind::Transient => Status::unavailable(message),
                    FailureKind::QuotaExceeded => Status::resource_exhausted(message),
                    // The region cannot be used in the account (not enabled, or an SCP): not the caller's doing.
                    FailureKind::InvalidKey
                    | FailureKind::InUse
                    | FailureKind::RegionUnavailable => Status::failed_precondition(message),
                    FailureKind::Unknown => Status::unknown(message),
                }
            }
            ApiError::Unavailable(ref cause) => {
                tracing::warn!(error = %cause_chain(cause), "dependency unavailable");
                Status::unavailable(error.to_string())
            }
            ApiError::Internal(ref cause) => {
                tracing::error!(error = %cause_chain(cause), "internal error");
                Status::internal(error.to_string())
            }
        }
    }
}
