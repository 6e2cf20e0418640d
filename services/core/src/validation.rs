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
    /// Violations past [`MAX_VIOLATIONS`], counted but not kept.
    more: usize,
}

/// Most violations one error keeps and reports: a request with 70,000 bad entries gets the first ones and a
/// count, not 70,000 lines of trailers no client can read.
pub const MAX_VIOLATIONS: usize = 50;
/// Most characters of a field path or description echoed back: a 1 MiB value is not sent back whole.
pub const MAX_ECHO_CHARS: usize = 200;

/// `text` cut to [`MAX_ECHO_CHARS`] characters, saying how much was left out.
fn capped(text: String) -> String {
    let count = text.chars().count();
    if count <= MAX_ECHO_CHARS {
        return text;
    }
    let kept: String = text.chars().take(MAX_ECHO_CHARS).collect();
    format!("{kept}… ({} more characters)", count - MAX_ECHO_CHARS)
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .violations
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect();
        write!(f, "invalid argument: {}", parts.join("; "))?;
        if self.more > 0 {
            write!(f, "; and {} more", self.more)?;
        }
        Ok(())
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
        self.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    fn push(&mut self, violation: FieldViolation) {
        if self.violations.len() >= MAX_VIOLATIONS {
            self.more += 1;
            return;
        }
        self.violations.push(FieldViolation {
            field: capped(violation.field),
            description: capped(violation.description),
        });
    }

    /// Free text (a description, a name prefix, a filter): refused if it holds a NUL, which PostgreSQL cannot store
    /// or compare (it used to come back as INTERNAL).
    pub fn free_text(&mut self, field: impl Into<String>, text: &str) {
        if text.contains('\0') {
            self.add(field, "must not contain a NUL character");
        }
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
            self.push(FieldViolation {
                field,
                description: v.description,
            });
        }
        self.more += other.more;
    }

    pub fn is_empty(&self) -> bool {
        self.violations.is_empty() && self.more == 0
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

#[cfg(test)]
mod echo_tests {
    use super::*;

    /// Bad input is named, not echoed whole: values are cut, and violations past the cap are only counted.
    #[test]
    fn huge_or_numerous_bad_values_are_not_echoed_whole() {
        let mut errors = ValidationErrors::new();
        let huge = "x".repeat(1 << 20);
        errors.add("description", format!("{huge:?} is too long"));
        assert!(
            errors.to_string().len() < 400,
            "{}",
            errors.to_string().len()
        );
        for i in 0..70_000 {
            errors.add(format!("tables[{i}]"), "is not a table");
        }
        assert_eq!(errors.violations().len(), MAX_VIOLATIONS);
        assert!(
            errors
                .to_string()
                .ends_with(&format!("and {} more", 70_001 - MAX_VIOLATIONS))
        );
        assert!(errors.to_string().len() < 10_000);
        let mut outer = ValidationErrors::new();
        outer.extend_prefixed("request", errors);
        assert!(!outer.is_empty());
        assert!(outer.to_string().contains("more"));
    }
}
