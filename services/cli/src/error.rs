//! What can go wrong, and the exit code each kind means. The one place a gRPC status becomes an exit code.

use std::process::ExitCode;

use tablecrypt_proto::code_name;
use tonic::Code;
use tonic_types::StatusExt as _;

/// A failed command, with the message shown on stderr.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad flags, a bad file, or input the server refused as invalid: exit 2.
    #[error("{0}")]
    Usage(String),
    /// The server could not be reached, or refused the credentials or the caller's permissions: exit 3.
    #[error("{0}")]
    Access(String),
    /// AWS refused tablecrypt's role in a member account (or the organization): exit 4.
    #[error("{0}")]
    AwsDenied(String),
    /// The operation failed, or a change request ended with failed tables: exit 1.
    #[error("{0}")]
    Failed(String),
    /// Ctrl-C: the command stopped; a watched request keeps running: exit 130.
    #[error("{0}")]
    Interrupted(String),
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Self::Failed(_) => 1,
            Self::Usage(_) => 2,
            Self::Access(_) => 3,
            Self::AwsDenied(_) => 4,
            Self::Interrupted(_) => 130,
        })
    }
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        // A status made on this side of the connection (it broke, or TLS and plaintext disagree) carries the
        // transport or HTTP/2 error as its source; a status the server sent has none.
        if std::error::Error::source(&status).is_some() {
            return Self::Access(format!(
                "the connection to the server failed: {}",
                error_chain(&status)
            ));
        }
        let mut message = format!("{}: {}", code_name(status.code()), status.message());
        // INVALID_ARGUMENT carries one violation per bad field: show each, named.
        if let Some(bad) = status.get_details_bad_request() {
            for violation in bad.field_violations {
                message.push_str(&format!(
                    "\n  {}: {}",
                    violation.field, violation.description
                ));
            }
        }
        let aws_denied = status.get_details_error_info().is_some_and(|info| {
            info.domain == tablecrypt_proto::ERROR_DOMAIN
                && info.reason == tablecrypt_proto::AWS_ACCESS_DENIED_REASON
        });
        match status.code() {
            Code::PermissionDenied if aws_denied => Self::AwsDenied(message),
            Code::InvalidArgument | Code::OutOfRange => Self::Usage(message),
            Code::Unauthenticated | Code::PermissionDenied | Code::Unavailable => {
                Self::Access(message)
            }
            _ => Self::Failed(message),
        }
    }
}

/// An error with its causes, for transport errors whose top level says only "transport error".
pub use tablecrypt_core::error_chain::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(status: tonic::Status) -> ExitCode {
        CliError::from(status).exit_code()
    }

    #[test]
    fn statuses_map_to_the_documented_exit_codes() {
        assert_eq!(
            code_of(tonic::Status::invalid_argument("x")),
            ExitCode::from(2)
        );
        assert_eq!(
            code_of(tonic::Status::unauthenticated("x")),
            ExitCode::from(3)
        );
        assert_eq!(
            code_of(tonic::Status::permission_denied("x")),
            ExitCode::from(3)
        );
        assert_eq!(code_of(tonic::Status::unavailable("x")), ExitCode::from(3));
        assert_eq!(code_of(tonic::Status::not_found("x")), ExitCode::from(1));
        assert_eq!(
            code_of(tonic::Status::failed_precondition("x")),
            ExitCode::from(1)
        );
    }

    #[test]
    fn an_aws_denial_of_the_member_role_is_not_a_denial_of_the_caller() {
        let status = tonic::Status::with_error_details(
            Code::PermissionDenied,
            "AWS ACCESS_DENIED: not authorized",
            tonic_types::ErrorDetails::with_error_info(
                tablecrypt_proto::AWS_ACCESS_DENIED_REASON,
                tablecrypt_proto::ERROR_DOMAIN,
                [],
            ),
        );
        assert_eq!(code_of(status), ExitCode::from(4));
    }

    #[test]
    fn field_violations_are_named_in_the_message() {
        let status = tonic::Status::with_error_details(
            Code::InvalidArgument,
            "invalid argument",
            tonic_types::ErrorDetails::with_bad_request_violation("target.kms_key", "not a key"),
        );
        let message = CliError::from(status).to_string();
        assert!(message.contains("target.kms_key: not a key"), "{message}");
    }
}
