//! Caller identities, prefixed by how they were proven so that one kind of credential can never pose as another
//! (a client certificate whose URI SAN is `root-admin` was given the grants of the static token named
//! `root-admin`), and the person behind an identity, for the two-person rule.
//!
//! | credential | identity |
//! | --- | --- |
//! | static bearer token configured as `NAME` | `token:NAME` |
//! | JWT from issuer `ISS` with subject `SUB` | `jwt:ISS:SUB` |
//! | client certificate with a `spiffe://` URI SAN | the SPIFFE id as it is |
//! | client certificate with another URI SAN | `cert-uri:URI` |
//! | client certificate without a URI SAN | `cert-cn:CN` (its subject common name) |
//!
//! Grants name the prefixed form. A development server (no authentication configured) records the name callers
//! give themselves, unprefixed: it grants everyone admin anyway.

use crate::validation::InvalidValue;

/// The prefix of a static bearer token's identity.
pub const TOKEN: &str = "token:";
/// The prefix of a JWT's identity, followed by `ISS:SUB`.
pub const JWT: &str = "jwt:";
/// SPIFFE ids (URI SANs) are kept whole: the scheme is their prefix.
pub const SPIFFE: &str = "spiffe://";
/// The prefix of a client certificate's other URI SAN.
pub const CERT_URI: &str = "cert-uri:";
/// The prefix of a client certificate's subject common name.
pub const CERT_CN: &str = "cert-cn:";

const KINDS: [&str; 5] = [TOKEN, JWT, SPIFFE, CERT_URI, CERT_CN];

/// The identity a client certificate's URI SAN gives.
pub fn of_certificate_uri(uri: &str) -> String {
    if uri.starts_with(SPIFFE) {
        uri.to_owned()
    } else {
        format!("{CERT_URI}{uri}")
    }
}

/// The identity a JWT gives.
pub fn of_jwt(issuer: &str, subject: &str) -> String {
    format!("{JWT}{issuer}:{subject}")
}

/// Checks an identity a grant names: it must carry one of the prefixes, so a grant cannot silently match nothing
/// (or, as before prefixes, whichever credential kind happens to carry the name).
pub fn parse_granted(identity: &str) -> Result<String, InvalidValue> {
    let Some(kind) = KINDS.iter().find(|kind| identity.starts_with(**kind)) else {
        return Err(InvalidValue::new(format!(
            "{identity:?} names no credential kind: write token:NAME, jwt:ISSUER:SUBJECT, spiffe://..., \
             cert-uri:URI or cert-cn:NAME"
        )));
    };
    if identity.len() == kind.len() {
        return Err(InvalidValue::new(format!(
            "{identity:?} has nothing after {kind}"
        )));
    }
    Ok(identity.to_owned())
}

/// The person behind an identity, for "a second person must approve": the name without its credential kind (for a
/// JWT, the subject), trimmed and lowercased. Deliberately coarse: `token:alice`, `cert-cn:Alice` and a JWT whose
/// subject is `ALICE` are one person, so a second credential or a differently cased name under the same name does
/// not make a second person. Credentials under different names (`token:alice-ci` and a JWT with an opaque
/// subject) are different persons to this rule: give one person's credentials one name. The cost of coarseness:
/// two different people sharing a name cannot approve each other.
pub fn person(identity: &str) -> String {
    let name = if let Some(rest) = identity.strip_prefix(JWT) {
        // ISS may contain ':' (https://...); SUB is what follows the last one.
        rest.rsplit_once(':').map_or(rest, |(_, subject)| subject)
    } else if let Some(path) = identity.strip_prefix(SPIFFE) {
        path
    } else {
        [TOKEN, CERT_URI, CERT_CN]
            .iter()
            .find_map(|kind| identity.strip_prefix(*kind))
            .unwrap_or(identity)
    };
    name.trim().to_lowercase()
}

/// Whether two identities are the same person (see [`person`]).
pub fn same_person(a: &str, b: &str) -> bool {
    person(a) == person(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_never_collide() {
        assert_eq!(of_certificate_uri("root-admin"), "cert-uri:root-admin");
        assert_eq!(
            of_certificate_uri("token:root-admin"),
            "cert-uri:token:root-admin"
        );
        assert_eq!(
            of_certificate_uri("spiffe://corp/ns/platform/sa/tablecrypt"),
            "spiffe://corp/ns/platform/sa/tablecrypt"
        );
        assert_eq!(
            of_jwt("https://idp.corp", "alice"),
            "jwt:https://idp.corp:alice"
        );
    }

    #[test]
    fn grants_name_a_kind() {
        for good in [
            "token:ci",
            "jwt:https://idp.corp:alice",
            "spiffe://corp/sa/x",
            "cert-uri:urn:x",
            "cert-cn:ops",
        ] {
            assert_eq!(parse_granted(good).as_deref(), Ok(good));
        }
        for bad in ["root-admin", "Token:ci", "token:", "cert-cn:", "", "urn:x"] {
            assert!(parse_granted(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn one_person_whatever_the_credential_or_case() {
        assert!(same_person("token:Op-Payments", "token:op-payments"));
        assert!(same_person("token:alice", "cert-cn:Alice"));
        assert!(same_person("jwt:https://idp.corp:ALICE", "token:alice"));
        assert!(same_person("alice", "Alice "));
        assert!(!same_person("token:alice", "token:bob"));
        assert!(!same_person(
            "jwt:https://idp.corp:alice",
            "jwt:https://idp.corp:bob"
        ));
    }
}
