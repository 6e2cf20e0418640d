//! AWS errors, classified.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use tablecrypt_core::FailureKind;

/// A failed AWS call: its class, the AWS error code if there was one, and a message fit for an operator (no
/// secrets: AWS messages name ARNs, never credentials).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct FleetError {
    pub kind: FailureKind,
    pub code: Option<String>,
    pub message: String,
    /// AssumeRole refused the member role (trust policy, external id): nothing in the account can be reached,
    /// as opposed to the role lacking a permission for the call.
    pub role_refused: bool,
}

impl FleetError {
    /// AWS answered with an internal error (HTTP 5xx): it may succeed if retried, but not forever (an asymmetric
    /// key answers UpdateTable with a 500 every time).
    pub fn is_server_error(&self) -> bool {
        // A service's answer (it has a code) classified transient: a 5xx, or a code AWS retries like one.
        self.kind == FailureKind::Transient && self.code.is_some()
    }

    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            code: None,
            message: message.into(),
            role_refused: false,
        }
    }
}

/// Classifies an AWS error code.
pub fn classify_code(code: &str, message: &str) -> FailureKind {
    match code {
        "ThrottlingException"
        | "Throttling"
        | "ThrottledException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "ProvisionedThroughputExceededException" => FailureKind::Throttled,
        "LimitExceededException" => FailureKind::QuotaExceeded,
        // The role's session works (AssumeRole succeeded) but this region does not know it: an opt-in region the
        // account has not enabled. (A failed AssumeRole is classified where credentials load, not here.)
        "UnrecognizedClientException" | "InvalidClientTokenId" | "AuthFailure" => {
            FailureKind::RegionUnavailable
        }
        // A service control policy denying the region (organizations fence regions with aws:RequestedRegion).
        "AccessDenied" | "AccessDeniedException"
            if message.contains("explicit deny in a service control policy") =>
        {
            FailureKind::RegionUnavailable
        }
        "AccessDenied"
        | "AccessDeniedException"
        | "ExpiredTokenException"
        | "ExpiredToken"
        | "NotAuthorizedException"
        | "UnauthorizedOperation"
        // Organizations: the role's account is not the organization's management or delegated administrator.
        | "AWSOrganizationsNotInUseException" => FailureKind::AccessDenied,
        "ResourceNotFoundException" | "NotFoundException" => FailureKind::NotFound,
        "DisabledException"
        | "KMSInvalidStateException"
        | "InvalidKeyUsageException"
        | "KeyUnavailableException" => FailureKind::InvalidKey,
        "ValidationException" if message.contains("KMS") || message.contains("KMSMasterKeyId") => {
            FailureKind::InvalidKey
        }
        "ResourceInUseException" => FailureKind::InUse,
        "InternalServerError"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "KMSInternalException"
        | "RequestTimeout"
        | "RequestTimeoutException" => FailureKind::Transient,
        _ => FailureKind::Unknown,
    }
}

/// Classifies any SDK error: a service error by its code; a failed AssumeRole (surfacing as a credentials
/// error) as access denied; timeouts and connection failures as transient.
pub fn classify<E>(error: &aws_sdk_dynamodb::error::SdkError<E, HttpResponse>) -> FleetError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_dynamodb::error::SdkError;
    let full = DisplayErrorContext(error).to_string();
    match error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("Unknown").to_owned();
            let message = service.err().message().unwrap_or_default().to_owned();
            let status = service.raw().status().as_u16();
            let kind = match classify_code(&code, &message) {
                FailureKind::Unknown if status >= 500 => FailureKind::Transient,
                kind => kind,
            };
            FleetError {
                kind,
                message: format!("{code}: {message}"),
                code: Some(code),
                role_refused: false,
            }
        }
        SdkError::TimeoutError(_) => {
            FleetError::new(FailureKind::Transient, format!("timed out: {full}"))
        }
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            credentials_or(full, FailureKind::Transient)
        }
        _ => credentials_or(full, FailureKind::Unknown),
    }
}

/// Errors from loading credentials (AssumeRole) arrive as construction or dispatch failures whose text carries
/// STS's answer.
fn credentials_or(full: String, otherwise: FailureKind) -> FleetError {
    let denied = [
        "AccessDenied",
        "not authorized to perform: sts:AssumeRole",
        "InvalidClientTokenId",
        "ExpiredToken",
    ];
    if denied.iter().any(|needle| full.contains(needle)) {
        return FleetError {
            kind: FailureKind::AccessDenied,
            code: Some("AccessDenied".to_owned()),
            message: sts_message(&full).unwrap_or(full),
            role_refused: true,
        };
    }
    if full.contains("Throttling") {
        return FleetError {
            kind: FailureKind::Throttled,
            code: Some("Throttling".to_owned()),
            message: full,
            role_refused: false,
        };
    }
    FleetError::new(otherwise, full)
}

/// STS's own sentence ("User: ... is not authorized to perform: sts:AssumeRole on resource: ...") out of the
/// SDK's nested error text, so operators read one line instead of a debug dump.
fn sts_message(full: &str) -> Option<String> {
    let start = full.find("User: ")?;
    let rest = &full[start..];
    let end = rest.find('"').unwrap_or(rest.len());
    Some(format!("AssumeRole denied: {}", &rest[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assume_role_denials_keep_only_the_sts_sentence() {
        let full = r#"dispatch failure: (AccessDenied): Error { code: "AccessDenied", message: "User: arn:aws:iam::0:user/hub is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::1:role/r", aws_request_id: "x" }"#;
        let error = credentials_or(full.to_owned(), FailureKind::Transient);
        assert_eq!(error.kind, FailureKind::AccessDenied);
        assert_eq!(
            error.message,
            "AssumeRole denied: User: arn:aws:iam::0:user/hub is not authorized to perform: sts:AssumeRole on \
             resource: arn:aws:iam::1:role/r"
        );
    }

    #[test]
    fn codes_are_classified() {
        assert_eq!(
            classify_code("ThrottlingException", ""),
            FailureKind::Throttled
        );
        assert_eq!(
            classify_code("LimitExceededException", ""),
            FailureKind::QuotaExceeded
        );
        assert_eq!(
            classify_code("ValidationException", "KMS key is disabled"),
            FailureKind::InvalidKey
        );
        assert_eq!(
            classify_code("ResourceNotFoundException", ""),
            FailureKind::NotFound
        );
    }
}
