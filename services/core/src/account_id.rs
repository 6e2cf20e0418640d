//! AWS account ids.

use std::fmt;

use crate::validation::InvalidValue;

/// A 12-digit AWS account id, kept as text so leading zeros survive.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(String);

impl AccountId {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        if value.is_empty() {
            return Err(InvalidValue::new("is required: a 12-digit AWS account id"));
        }
        if value.len() != 12 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidValue::new(format!(
                "must be exactly 12 digits (an AWS account id), got {} characters",
                value.chars().count()
            )));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_twelve_digits_with_leading_zeros() {
        assert_eq!(
            AccountId::parse("012345678901").map(|a| a.to_string()),
            Ok("012345678901".into())
        );
    }

    #[test]
    fn refuses_wrong_lengths_and_non_digits() {
        for bad in [
            "",
            "12345678901",
            "1234567890123",
            "12345678901a",
            " 12345678901",
            "１２３４５６７８９０１２",
        ] {
            assert!(AccountId::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
