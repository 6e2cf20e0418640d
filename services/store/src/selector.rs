//! Label selectors as SQL arguments, shared by every query that filters by account labels or table tags.

use serde_json::Value;
use tablecrypt_core::LabelSelector;
use tablecrypt_core::labels::LabelRequirement;

/// A label selector split into SQL arguments: labels that must be equal (a JSON object), keys that must exist,
/// keys that must be absent, and [key, value] pairs that must differ. See `queries/list_accounts.sql`.
pub(crate) struct SelectorArgs {
    pub equals: Value,
    pub exists: Vec<String>,
    pub absent: Vec<String>,
    pub not_equals: Value,
    /// Two `key=value` terms with the same key and different values: nothing can match.
    pub contradictory: bool,
}

impl SelectorArgs {
    pub fn from(selector: &LabelSelector) -> Self {
        let mut equals = serde_json::Map::new();
        let mut not_equals = Vec::new();
        let mut exists = Vec::new();
        let mut absent = Vec::new();
        let mut contradictory = false;
        for requirement in selector.requirements() {
            match requirement {
                LabelRequirement::Equals(k, v) => {
                    if let Some(Value::String(previous)) =
                        equals.insert(k.clone(), Value::String(v.clone()))
                    {
                        contradictory |= previous != *v;
                    }
                }
                LabelRequirement::NotEquals(k, v) => not_equals.push(serde_json::json!([k, v])),
                LabelRequirement::Exists(k) => exists.push(k.clone()),
                LabelRequirement::NotExists(k) => absent.push(k.clone()),
            }
        }
        Self {
            equals: Value::Object(equals),
            exists,
            absent,
            not_equals: Value::Array(not_equals),
            contradictory,
        }
    }
}
