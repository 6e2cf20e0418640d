//! AWS errors as the services return them; each protocol renders them its own way.

/// One AWS error: HTTP status, error code (`ResourceNotFoundException`, `AccessDenied`, ...) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl AwsError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(400, "ValidationException", message)
    }

    pub fn resource_not_found(message: impl Into<String>) -> Self {
        Self::new(400, "ResourceNotFoundException", message)
    }

    pub fn resource_in_use(message: impl Into<String>) -> Self {
        Self::new(400, "ResourceInUseException", message)
    }

    pub fn limit_exceeded(message: impl Into<String>) -> Self {
        Self::new(400, "LimitExceededException", message)
    }

    pub fn throttling(message: impl Into<String>) -> Self {
        Self::new(400, "ThrottlingException", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalServerError", message)
    }
}
