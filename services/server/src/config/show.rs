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

/// Query parameters whose values may be secrets (`password=`, `sslpassword=`, a signed URL's `X-Amz-Signature`,
/// `token=`, `api_key=`): matched as substrings of the lower-cased name.
const SECRET_QUERY_NAMES: [&str; 6] = [
    "password",
    "secret",
    "token",
    "signature",
    "key",
    "credential",
];

/// A URL with its userinfo password and any secret-looking query value replaced by `[redacted]`.
pub fn redact_url(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let head = match head.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(end);
            match authority.rsplit_once('@') {
                Some((userinfo, host)) if userinfo.contains(':') => {
                    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                    format!("{scheme}://{user}:{REDACTED}@{host}{path}")
                }
                _ => head.to_owned(),
            }
        }
        None => head.to_owned(),
    };
    let Some(query) = query else {
        return head;
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _))
                if SECRET_QUERY_NAMES
                    .iter()
                    .any(|secret| name.to_ascii_lowercase().contains(secret)) =>
            {
                format!("{name}={REDACTED}")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{head}?{}", query.join("&"))
}

/// A URL setting, printed through [`redact_url`].
pub fn url<S: Serializer>(value: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redact_url(value))
}

/// An optional URL setting, printed through [`redact_url`].
pub fn optional_url<S: Serializer>(
    value: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.serialize_str(&redact_url(value)),
        None => serializer.serialize_none(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords_and_secret_query_values() {
        assert_eq!(
            redact_url(
                "postgres://app:hunter2@db:5432/tc?sslmode=verify-full&password=x&sslpassword=y"
            ),
            "postgres://app:[redacted]@db:5432/tc?sslmode=verify-full&password=[redacted]&sslpassword=[redacted]"
        );
        assert_eq!(
            redact_url("http://u:otelsecret@otel:4317"),
            "http://u:[redacted]@otel:4317"
        );
        assert_eq!(
            redact_url("https://idp.example/jwks?api_key=k"),
            "https://idp.example/jwks?api_key=[redacted]"
        );
        assert_eq!(redact_url("http://127.0.0.1:4566"), "http://127.0.0.1:4566");
    }
}
