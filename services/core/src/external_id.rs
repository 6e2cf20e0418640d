//! The STS external id a member account's role trust policy may require.

use std::fmt;

use crate::validation::InvalidValue;

/// An `sts:ExternalId` value. AWS allows 2 to 1224 characters of `[\w+=,.@:/-]`
/// (STS AssumeRole API reference, ExternalId). It is stored and sent to STS but never returned by the API, and
/// its `Debug` never prints it, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ExternalId(String);

impl ExternalId {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        let len = value.chars().count();
        if !(2..=1224).contains(&len) {
            return Err(InvalidValue::new(format!(
                "must be 2 to 1224 characters, got {len}"
            )));
        }
        if let Some(bad) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(*c)))
        {
            return Err(InvalidValue::new(format!(
                "may contain only letters, digits and _+=,.@:/- (found {:?})",
                if bad.is_control() { '?' } else { bad }
            )));
        }
        Ok(Self(value.to_owned()))
    }

    /// The secret itself, for STS and for storage only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ExternalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExternalId([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_value() {
        let id = ExternalId::parse("s3cr3t-value").expect("valid");
        assert!(!format!("{id:?}").contains("s3cr3t"));
    }

    #[test]
    fn refuses_short_long_and_odd_characters() {
        assert!(ExternalId::parse("a").is_err());
        assert!(ExternalId::parse(&"a".repeat(1225)).is_err());
        assert!(ExternalId::parse("has space").is_err());
        assert!(ExternalId::parse("ok_+=,.@:/-09").is_ok());
    }
}
