//! Kubernetes-style labels on accounts, and selectors over them.

use std::collections::BTreeMap;

use crate::validation::{InvalidValue, ValidationErrors};

/// Most labels one account may carry; enough for ownership, environment and cost tags, small enough to index.
pub const MAX_LABELS: usize = 64;
/// Longest label name or value (Kubernetes: 63 characters).
const MAX_NAME_LEN: usize = 63;
/// Longest label key prefix (Kubernetes: a DNS subdomain of at most 253 characters).
const MAX_PREFIX_LEN: usize = 253;
/// Most requirements in one selector, so one query stays cheap.
pub const MAX_SELECTOR_REQUIREMENTS: usize = 32;

/// A validated label map, ordered by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// Validates every key and value. Violations name the entry (`["team"]`), relative to the labels field.
    pub fn parse<'a>(
        entries: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let mut labels = BTreeMap::new();
        for (key, value) in entries {
            let field = format!("[{key:?}]");
            if let Err(e) = validate_key(key) {
                errors.add(field.clone(), format!("key {}", e.0));
            }
            if let Err(e) = validate_value(value) {
                errors.add(field, format!("value {}", e.0));
            }
            labels.insert(key.clone(), value.clone());
        }
        if labels.len() > MAX_LABELS {
            errors.add(
                "",
                format!("at most {MAX_LABELS} labels, got {}", labels.len()),
            );
        }
        errors.into_result(|| Self(labels))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

/// A label key: `[prefix/]name`. The prefix is a DNS subdomain; the name is 1-63 characters of
/// `[A-Za-z0-9_.-]` beginning and ending with a letter or digit.
pub fn validate_key(key: &str) -> Result<(), InvalidValue> {
    if key.is_empty() {
        return Err(InvalidValue::new("must not be empty"));
    }
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let dns_ok = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX_LEN
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !dns_ok {
            return Err(InvalidValue::new(format!(
                "{key:?} has an invalid prefix: it must be a lowercase DNS subdomain such as example.com"
            )));
        }
    }
    if name.is_empty() {
        return Err(InvalidValue::new(format!("{key:?} has an empty name")));
    }
    check_name(name).map_err(|why| InvalidValue::new(format!("{key:?} {why}")))
}

/// A label value: empty, or 1-63 characters like a key's name part.
pub fn validate_value(value: &str) -> Result<(), InvalidValue> {
    if value.is_empty() {
        return Ok(());
    }
    check_name(value).map_err(|why| InvalidValue::new(format!("{value:?} {why}")))
}

fn check_name(name: &str) -> Result<(), &'static str> {
    if name.len() > MAX_NAME_LEN {
        return Err("is longer than 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("may contain only letters, digits, '-', '_' and '.'");
    }
    let first_last_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    if !first_last_ok(name.bytes().next()) || !first_last_ok(name.bytes().last()) {
        return Err("must begin and end with a letter or digit");
    }
    Ok(())
}

/// Longest tag key AWS allows.
const MAX_TAG_KEY_LEN: usize = 128;
/// Longest tag value AWS allows.
const MAX_TAG_VALUE_LEN: usize = 256;

/// Whether `c` may appear in a tag key or value as selected on: AWS's tag characters (letters, digits, spaces,
/// `_.:/=+-@`) without the selector's delimiters `=` (and so `!=`) and `,`.
fn tag_char(c: char) -> bool {
    c.is_alphanumeric() || c == ' ' || "_.:/+-@".contains(c)
}

/// A tag key in a selector: 1-128 tag characters.
pub fn validate_tag_key(key: &str) -> Result<(), InvalidValue> {
    if key.is_empty() || key.chars().count() > MAX_TAG_KEY_LEN {
        return Err(InvalidValue::new(format!(
            "{key:?} must be 1 to {MAX_TAG_KEY_LEN} characters"
        )));
    }
    if let Some(bad) = key.chars().find(|c| !tag_char(*c)) {
        return Err(InvalidValue::new(format!(
            "{key:?} may contain only letters, digits, spaces and _.:/+-@ (found {bad:?})"
        )));
    }
    Ok(())
}

/// A tag value in a selector: 0-256 tag characters.
pub fn validate_tag_value(value: &str) -> Result<(), InvalidValue> {
    if value.chars().count() > MAX_TAG_VALUE_LEN {
        return Err(InvalidValue::new(format!(
            "{value:?} is longer than {MAX_TAG_VALUE_LEN} characters"
        )));
    }
    if let Some(bad) = value.chars().find(|c| !tag_char(*c)) {
        return Err(InvalidValue::new(format!(
            "{value:?} may contain only letters, digits, spaces and _.:/+-@ (found {bad:?})"
        )));
    }
    Ok(())
}

/// One term of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelRequirement {
    /// `key=value` (or `key==value`): the label is present with this value.
    Equals(String, String),
    /// `key!=value`: the label is absent, or present with another value.
    NotEquals(String, String),
    /// `key`: the label is present, with any value.
    Exists(String),
    /// `!key`: the label is absent.
    NotExists(String),
}

/// A comma-separated conjunction of requirements, in Kubernetes' equality-based selector syntax:
/// `team=payments,env!=dev,pci,!sandbox`. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    /// A selector over account labels (Kubernetes keys and values).
    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        Self::parse_with(text, validate_key, validate_value)
    }

    /// A selector over table tags, in the same syntax: keys and values as AWS allows them in tags (keys 1-128,
    /// values 0-256 characters of letters, digits, spaces and `_.:/+-@`), except that `,`, `=` and `!` cannot be
    /// selected on since they delimit terms.
    pub fn parse_tags(text: &str) -> Result<Self, InvalidValue> {
        Self::parse_with(text, validate_tag_key, validate_tag_value)
    }

    fn parse_with(
        text: &str,
        validate_key: fn(&str) -> Result<(), InvalidValue>,
        validate_value: fn(&str) -> Result<(), InvalidValue>,
    ) -> Result<Self, InvalidValue> {
        let mut requirements = Vec::new();
        if text.trim().is_empty() {
            return Ok(Self { requirements });
        }
        for term in text.split(',') {
            let term = term.trim();
            let requirement = if let Some((key, value)) = term.split_once("!=") {
                LabelRequirement::NotEquals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, value)) =
                term.split_once("==").or_else(|| term.split_once('='))
            {
                LabelRequirement::Equals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some(key) = term.strip_prefix('!') {
                LabelRequirement::NotExists(key.trim().to_owned())
            } else {
                LabelRequirement::Exists(term.to_owned())
            };
            let (key, value) = match &requirement {
                LabelRequirement::Equals(k, v) | LabelRequirement::NotEquals(k, v) => (k, Some(v)),
                LabelRequirement::Exists(k) | LabelRequirement::NotExists(k) => (k, None),
            };
            validate_key(key)
                .map_err(|e| InvalidValue::new(format!("term {term:?}: key {}", e.0)))?;
            if let Some(value) = value {
                validate_value(value)
                    .map_err(|e| InvalidValue::new(format!("term {term:?}: value {}", e.0)))?;
            }
            requirements.push(requirement);
        }
        if requirements.len() > MAX_SELECTOR_REQUIREMENTS {
            return Err(InvalidValue::new(format!(
                "at most {MAX_SELECTOR_REQUIREMENTS} requirements, got {}",
                requirements.len()
            )));
        }
        Ok(Self { requirements })
    }

    pub fn requirements(&self) -> &[LabelRequirement] {
        &self.requirements
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_map(labels.as_map())
    }

    /// Whether a plain map (a table's tags) matches.
    pub fn matches_map(&self, map: &BTreeMap<String, String>) -> bool {
        let get = |k: &String| map.get(k).map(String::as_str);
        self.requirements.iter().all(|r| match r {
            LabelRequirement::Equals(k, v) => get(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::NotExists(k) => get(k).is_none(),
        })
    }

    /// A canonical text form (terms in the order given), used to tie page tokens to the selector they came from.
    pub fn canonical(&self) -> String {
        self.requirements
            .iter()
            .map(|r| match r {
                LabelRequirement::Equals(k, v) => format!("{k}={v}"),
                LabelRequirement::NotEquals(k, v) => format!("{k}!={v}"),
                LabelRequirement::Exists(k) => k.clone(),
                LabelRequirement::NotExists(k) => format!("!{k}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Result<Labels, ValidationErrors> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Labels::parse(owned.iter().map(|(k, v)| (k, v)))
    }

    #[test]
    fn accepts_kubernetes_style_labels() {
        assert!(
            labels(&[
                ("team", "payments"),
                ("example.com/env", "prod"),
                ("empty", "")
            ])
            .is_ok()
        );
    }

    #[test]
    fn refuses_bad_keys_and_values_naming_the_entry() {
        let err = labels(&[("has space", "x")]).expect_err("space in key");
        assert_eq!(err.violations()[0].field, "[\"has space\"]");
        assert!(labels(&[("-lead", "x")]).is_err());
        assert!(labels(&[("Upper.Case/x", "x")]).is_err());
        assert!(labels(&[("ok", "bad value")]).is_err());
        assert!(labels(&[("ok", &"v".repeat(64))]).is_err());
    }

    #[test]
    fn selectors_parse_and_match() {
        let l = labels(&[("team", "payments"), ("env", "prod")]).expect("valid");
        let matches = |s: &str| LabelSelector::parse(s).expect("valid selector").matches(&l);
        assert!(matches(""));
        assert!(matches("team=payments"));
        assert!(matches("team==payments,env"));
        assert!(matches("env!=dev,!sandbox"));
        assert!(!matches("team=search"));
        assert!(!matches("!env"));
        assert!(LabelSelector::parse("bad key=x").is_err());
        assert!(LabelSelector::parse("a=,").is_err());
    }

    #[test]
    fn tag_selectors_take_aws_tag_keys() {
        let tags: BTreeMap<String, String> = [
            (
                "aws:cloudformation:stack-id",
                "arn:aws:cloudformation:eu-west-1:1:stack/x/y",
            ),
            ("Cost Center", "42"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let matches = |s: &str| {
            LabelSelector::parse_tags(s)
                .expect("valid")
                .matches_map(&tags)
        };
        assert!(matches("aws:cloudformation:stack-id"));
        assert!(matches("Cost Center=42,!ManagedBy"));
        assert!(!matches("Cost Center!=42"));
        // Kubernetes label rules would refuse these keys; account selectors still do.
        assert!(LabelSelector::parse("aws:cloudformation:stack-id").is_err());
        assert!(LabelSelector::parse_tags("a\u{0}b").is_err());
        assert!(LabelSelector::parse_tags(&"k".repeat(129)).is_err());
        assert!(LabelSelector::parse_tags(&format!("k={}", "v".repeat(257))).is_err());
    }
}
