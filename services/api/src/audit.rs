//! ListAuditEvents: the audit log, newest first.

use tablecrypt_core::{InvalidValue, ValidationErrors};
use tablecrypt_proto::v1 as pb;
use tablecrypt_store::{AuditFilter, Store};

use crate::auth::audited_method;
use crate::conversions::timestamp;
use crate::error::ApiError;
use crate::page_token::{self, CallPages};

fn optional(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

/// What the server's own work records as its method: a notification's delivery (`notify/<sink>`), an account
/// discovery's change (`discovery/register`, `discovery/relabel`, `discovery/deregister`).
const SERVER_METHODS: &[&str] = &["notify/", "discovery/"];

/// The method as the audit log stores it, for a `method` filter: a path as the auth layer records it
/// ([`audited_method`]: the API's methods by name, so "/tablecrypt.v1.TableEncryption/CreateChangeRequest" and a
/// made-up name under that path are found by their full path too), a method of the API by its name, or one of
/// the server's own. A bare name that is none of these is refused, so a typo says so instead of matching nothing.
fn stored_method(method: &str) -> Result<String, InvalidValue> {
    if method.is_empty()
        || method.starts_with('/')
        || tablecrypt_proto::api_methods().contains(method)
        || SERVER_METHODS.iter().any(|p| method.starts_with(p))
    {
        return Ok(audited_method(method).to_owned());
    }
    Err(InvalidValue(format!(
        "`{method}` is not a method of tablecrypt.v1.TableEncryption; give its name (\"CreateChangeRequest\"), \
         a full path (\"/tablecrypt.v1.TableEncryption/Probe\", \"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo\"), \
         or the server's own (\"notify/<sink>\", \"discovery/register\")"
    )))
}

pub async fn list(
    store: &Store,
    pages: &CallPages,
    request: pb::ListAuditEventsRequest,
) -> Result<pb::ListAuditEventsResponse, ApiError> {
    let mut errors = ValidationErrors::new();
    let page_size = errors.check("page_size", page_token::page_size(request.page_size));
    for (field, value, max) in [
        ("caller", &request.caller, 512),
        ("method", &request.method, 128),
        ("outcome", &request.outcome, 32),
    ] {
        if value.chars().count() > max {
            errors.add(field, format!("at most {max} characters"));
        }
        errors.free_text(field, value);
    }
    if !request.outcome.is_empty()
        && !request
            .outcome
            .chars()
            .all(|c| c.is_ascii_uppercase() || c == '_')
    {
        errors.add(
            "outcome",
            "must be a gRPC status code name such as OK or PERMISSION_DENIED",
        );
    }
    let method = errors
        .check("method", stored_method(&request.method))
        .unwrap_or_default();
    // Unambiguous: no two filters give the same key, whatever characters they hold.
    let filter_key =
        serde_json::to_string(&(&request.caller, &method, &request.outcome)).unwrap_or_default();
    let before = errors
        .check("page_token", pages.decode(&request.page_token, &filter_key))
        .flatten();
    let before_id = match before.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            errors.add("page_token", "is not a page token returned by this RPC");
            None
        }
    };
    let Some(page_size) = page_size.filter(|_| errors.is_empty()) else {
        return Err(errors.into());
    };
    let filter = AuditFilter {
        caller: optional(&request.caller),
        method: optional(&method),
        outcome: optional(&request.outcome),
    };
    let mut rows = store
        .audit
        .list(&filter, before_id, i64::from(page_size) + 1)
        .await?;
    let next_page_token = pages.finish_page(&mut rows, page_size, &filter_key, |r| {
        r.event_id.to_string()
    });
    Ok(pb::ListAuditEventsResponse {
        events: rows
            .into_iter()
            .map(|r| pb::AuditEvent {
                event_id: r.event_id,
                event_time: Some(timestamp::to_proto(r.event_time)),
                caller: r.caller,
                authenticated_by: r.authenticated_by,
                method: r.method,
                target: r.target,
                outcome: r.outcome,
                message: r.message,
                call_count: r.call_count,
                peer: r.peer.unwrap_or_default(),
                first_time: r.first_time.map(timestamp::to_proto),
            })
            .collect(),
        next_page_token,
    })
}

#[cfg(test)]
mod tests {
    use super::stored_method;

    #[test]
    fn a_method_filter_takes_the_name_or_the_full_path() {
        let stored = |m: &str| stored_method(m).ok();
        let name = Some("CreateChangeRequest".to_owned());
        assert_eq!(stored("CreateChangeRequest"), name);
        assert_eq!(
            stored("/tablecrypt.v1.TableEncryption/CreateChangeRequest"),
            name
        );
        let other = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        assert_eq!(stored(other).as_deref(), Some(other));
        assert_eq!(stored("").as_deref(), Some(""));
        let typo = stored_method("CreateChangeReqest").expect_err("a typo is refused");
        assert!(typo.0.contains("CreateChangeReqest"), "{typo:?}");
        // A made-up method under the API's path is stored by its name: found by the full path, not by a bare name.
        assert_eq!(
            stored("/tablecrypt.v1.TableEncryption/Nope").as_deref(),
            Some("Nope")
        );
        assert!(stored_method("Nope").is_err());
        let nested = "/tablecrypt.v1.TableEncryption/a/b";
        assert_eq!(stored(nested).as_deref(), Some(nested));
    }
}
