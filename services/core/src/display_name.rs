//! Human-readable names shown in listings.

use std::fmt;

use crate::validation::InvalidValue;

/// Longest display name accepted, in characters: long enough for "Payments production (EU)", short enough for a
/// table column.
pub const MAX_DISPLAY_NAME_CHARS: usize = 256;

/// A free-text label for people; optional (empty allowed), no control characters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        let chars = value.chars().count();
        if chars > MAX_DISPLAY_NAME_CHARS {
            return Err(InvalidValue::new(format!(
                "must be at most {MAX_DISPLAY_NAME_CHARS} characters, got {chars}"
            )));
        }
        if value.chars().any(char::is_control) {
            return Err(InvalidValue::new("must not contain control characters"));
        }
        if value.trim() != value {
            return Err(InvalidValue::new("must not start or end with white space"));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
