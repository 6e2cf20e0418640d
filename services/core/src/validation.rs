//! Field-level validation errors, so every edge can tell a caller exactly which field is wrong.

use std::fmt;

/// Why one value is unacceptable, without saying which field it came from: the caller (an edge that knows the
/// field path) attaches that.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

impl InvalidValue {
    pub fn new(description: impl Into<String>) -> Self {
        Self(description.into())
    }
}

/// One bad field: `field` is a dotted path relative to the message being validated (e.g. `role_arn`,
/// `labels["team"]`); edges prefix it (`account.role_arn`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// All the field violations of one request. Validation collects every problem rather than stopping at the first,
/// so a caller can fix them in one go.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors {
    violations: Vec<FieldViolation>,
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .violations
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect();
        write!(f, "invalid argument: {}", parts.join("; "))
    }
}

impl ValidationErrors {
    pub fn new() -> Self {
        Self::default()
    }

    /// A single violation.
    pub fn single(field: impl Into<String>, description: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.add(field, description);
        errors
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.violations.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Records the error of `result` under `field` and returns the value if it was valid.
    pub fn check<T>(
        &mut self,
        field: impl Into<String>,
        result: Result<T, InvalidValue>,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(InvalidValue(description)) => {
                self.add(field, description);
                None
            }
        }
    }

    /// Parses every entry of a repeated field, recording each bad one as `field[i]`; returns the valid ones.
    pub fn check_each<S, T>(
        &mut self,
        field: &str,
        values: &[S],
        parse: impl Fn(&str) -> Result<T, InvalidValue>,
    ) -> Vec<T>
    where
        S: AsRef<str>,
    {
        values
            .iter()
            .enumerate()
            .filter_map(|(i, value)| self.check(format!("{field}[{i}]"), parse(value.as_ref())))
            .collect()
    }

    /// Moves the violations of `other` in, with `prefix` in front of each field: `prefix.name` for a named
    /// field, `prefix[i]` for an entry, `prefix` itself for the whole.
    pub fn extend_prefixed(&mut self, prefix: &str, other: ValidationErrors) {
        for v in other.violations {
            let field = if prefix.is_empty() {
                v.field
            } else if v.field.is_empty() || v.field.starts_with('[') {
                format!("{prefix}{}", v.field)
            } else {
                format!("{prefix}.{}", v.field)
            };
            self.violations.push(FieldViolation {
                field,
                description: v.description,
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn violations(&self) -> &[FieldViolation] {
        &self.violations
    }

    /// `Ok(value)` when nothing was recorded, else the collected errors.
    pub fn into_result<T>(self, value: impl FnOnce() -> T) -> Result<T, ValidationErrors> {
        if self.is_empty() {
            Ok(value())
        } else {
            Err(self)
        }
    }

    /// Prefixes every field with `prefix.`.
    pub fn prefixed(self, prefix: &str) -> Self {
        let mut out = Self::new();
        out.extend_prefixed(prefix, self);
        out
    }
}
