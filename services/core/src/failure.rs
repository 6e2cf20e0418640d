//! Why a call to AWS failed, classified so callers can decide: retry, defer, or fail with a reason.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// Request rate exceeded (ThrottlingException): retry with jittered backoff.
    Throttled,
    /// A quota (LimitExceededException: the switch quota, tables in flight): defer, never retry in a loop.
    QuotaExceeded,
    /// AssumeRole refused, or the role lacks a permission.
    AccessDenied,
    /// The table or key does not exist.
    NotFound,
    /// The key exists but cannot be used (disabled, pending deletion, asymmetric, elsewhere).
    InvalidKey,
    /// The resource is busy (ResourceInUseException, e.g. the table is UPDATING).
    InUse,
    /// A network error, timeout or 5xx: retry.
    Transient,
    /// The region cannot be used in the account: an opt-in region the account has not enabled (AWS does not
    /// recognize the role's session there), or a service control policy that denies it. A state of the account,
    /// not a failure of tablecrypt or of the role; nothing there to manage.
    RegionUnavailable,
    /// Anything else.
    Unknown,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Throttled => "THROTTLED",
            Self::QuotaExceeded => "QUOTA_EXCEEDED",
            Self::AccessDenied => "ACCESS_DENIED",
            Self::NotFound => "NOT_FOUND",
            Self::InvalidKey => "INVALID_KEY",
            Self::InUse => "IN_USE",
            Self::Transient => "TRANSIENT",
            Self::RegionUnavailable => "REGION_UNAVAILABLE",
            Self::Unknown => "UNKNOWN",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::Throttled,
            Self::QuotaExceeded,
            Self::AccessDenied,
            Self::NotFound,
            Self::InvalidKey,
            Self::InUse,
            Self::Transient,
            Self::RegionUnavailable,
            Self::Unknown,
        ]
        .into_iter()
        .find(|k| k.as_str() == value)
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
