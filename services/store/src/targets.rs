//! A request's targets as stored in `change_requests.targets`: `{"tables": [{account_id, region, table_name}]}` or
//! `{"selector": {...}}`, the selector's `current_mode` as the API's enum number (the format rows already hold).

use serde_json::{Value, json};
use tablecrypt_core::change::{RequestTargets, SelectorSpec, TableRef};
use tablecrypt_core::{AccountId, EncryptionMode, Region, TableName};

/// `current_mode` numbers, as the API's EncryptionMode enum (0: any).
const MODE_NUMBERS: [(i64, EncryptionMode); 3] = [
    (1, EncryptionMode::AwsOwned),
    (2, EncryptionMode::AwsManaged),
    (3, EncryptionMode::CustomerManaged),
];

pub fn to_json(targets: &RequestTargets) -> Value {
    match targets {
        RequestTargets::Tables(tables) => json!({
            "tables": tables.iter().map(|t| json!({
                "account_id": t.account_id.as_str(),
                "region": t.region.as_str(),
                "table_name": t.table_name.as_str(),
            })).collect::<Vec<_>>()
        }),
        RequestTargets::Selector(s) => json!({
            "selector": {
                "account_ids": s.account_ids,
                "account_label_selector": s.account_label_selector,
                "regions": s.regions,
                "current_mode": s.current_mode.map_or(0, |mode| {
                    MODE_NUMBERS.iter().find(|(_, m)| *m == mode).map_or(0, |(n, _)| *n)
                }),
                "current_kms_key": s.current_kms_key,
                "current_kms_keys": s.current_kms_keys,
                "table_name_prefix": s.table_name_prefix,
                "table_tag_selector": s.table_tag_selector,
            }
        }),
    }
}

fn text(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

pub fn from_json(value: &Value) -> Result<RequestTargets, String> {
    if let Some(tables) = value.get("tables").and_then(Value::as_array) {
        return tables
            .iter()
            .map(|t| {
                Ok(TableRef {
                    account_id: AccountId::parse(&text(t, "account_id")).map_err(|e| e.0)?,
                    region: Region::parse(&text(t, "region")).map_err(|e| e.0)?,
                    table_name: TableName::parse(&text(t, "table_name")).map_err(|e| e.0)?,
                })
            })
            .collect::<Result<_, String>>()
            .map(RequestTargets::Tables);
    }
    if let Some(s) = value.get("selector") {
        let mode = s["current_mode"].as_i64().unwrap_or(0);
        return Ok(RequestTargets::Selector(SelectorSpec {
            account_ids: strings(&s["account_ids"]),
            account_label_selector: text(s, "account_label_selector"),
            regions: strings(&s["regions"]),
            current_mode: MODE_NUMBERS
                .iter()
                .find(|(n, _)| *n == mode)
                .map(|(_, m)| *m),
            current_kms_key: text(s, "current_kms_key"),
            current_kms_keys: strings(&s["current_kms_keys"]),
            table_name_prefix: text(s, "table_name_prefix"),
            table_tag_selector: text(s, "table_tag_selector"),
        }));
    }
    Err(format!(
        "targets are neither tables nor a selector: {value}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_round_trip_in_the_stored_format() {
        let tables = RequestTargets::Tables(vec![TableRef {
            account_id: AccountId::parse("111111111111").expect("id"),
            region: Region::parse("eu-west-1").expect("region"),
            table_name: TableName::parse("orders").expect("name"),
        }]);
        assert_eq!(from_json(&to_json(&tables)), Ok(tables));
        let selector = RequestTargets::Selector(SelectorSpec {
            account_label_selector: "team=payments".into(),
            current_mode: Some(EncryptionMode::CustomerManaged),
            ..Default::default()
        });
        let stored = to_json(&selector);
        assert_eq!(stored["selector"]["current_mode"], 3);
        assert_eq!(from_json(&stored), Ok(selector));
        assert!(from_json(&json!({})).is_err());
    }
}
