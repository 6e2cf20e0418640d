//! How the fleet layer reaches AWS.

use std::time::Duration;

/// Settings for every AWS client tablecrypt builds.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// Overrides every AWS endpoint (the fleet emulator or moto); `None` for real AWS.
    pub endpoint_url: Option<String>,
    /// The region STS is called in for AssumeRole.
    pub sts_region: String,
    /// `RoleSessionName` of every assumed-role session, so CloudTrail shows tablecrypt.
    pub session_name: String,
    /// How long assumed-role sessions last (STS allows 15 min to 12 h; the role's maximum applies).
    pub session_length: Duration,
    pub connect_timeout: Duration,
    /// Whole-operation timeout including retries.
    pub operation_timeout: Duration,
    /// Attempts per AWS call (first try included) for throttling and transient errors.
    pub max_attempts: u32,
    /// Identity cache partitions: one per (account, region) client. The SDK's default of 64 would evict
    /// credentials constantly across a large fleet.
    pub identity_cache_partitions: usize,
}

impl Default for FleetSettings {
    fn default() -> Self {
        Self {
            endpoint_url: None,
            sts_region: "us-east-1".to_owned(),
            session_name: "tablecrypt".to_owned(),
            session_length: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(30),
            max_attempts: 3,
            identity_cache_partitions: 4096,
        }
    }
}
