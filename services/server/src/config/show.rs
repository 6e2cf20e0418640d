//! `check-config`: the effective configuration printed as TOML a file could hold, with every secret replaced by
//! `[redacted]` (token hashes, external ids, webhook URLs, page-token keys, the database password).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serializer;

/// What a secret prints as.
pub const REDACTED: &str = "[redacted]";

/// A secret: its presence, never its value.
pub fn redacted<S: Serializer, T>(_: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(REDACTED)
}

/// An optional secret: absent stays absent.
pub fn redacted_option<S: Serializer, T>(
    value: &Option<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => serializer.serialize_str(REDACTED),
        None => serializer.serialize_none(),
    }
}

/// A secret that may be empty (external ids): empty stays empty.
pub fn redacted_text<S: Serializer>(value: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(if value.is_empty() { "" } else { REDACTED })
}

/// A duration that may be "off", as the file writes it.
pub fn optional_duration<S: Serializer>(
    value: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(duration) => serializer
            .serialize_str(&humantime_serde::re::humantime::format_duration(*duration).to_string()),
        None => serializer.serialize_str("off"),
    }
}

/// An address that may be "off", as the file writes it.
pub fn optional_addr<S: Serializer>(
    value: &Option<SocketAddr>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(addr) => serializer.serialize_str(&addr.to_string()),
        None => serializer.serialize_str("off"),
    }
}
