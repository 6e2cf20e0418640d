//! Entry points for the fuzz target (`fuzz/fuzz_targets/request_validation.rs`): request validation and page
//! tokens, fed arbitrary bytes. Each asserts the properties that must hold for any input: no panic, every
//! violation names a field, and a page token this service encoded decodes to what was encoded.

use prost::Message as _;
use tablecrypt_core::{
    AccountId, AccountLimits, KeyReference, LabelSelector, Region, Role, RoleArn, TableName,
};
use tablecrypt_proto::v1 as pb;

use crate::conversions::account;
use crate::page_token;

/// Runs every validator over `data`, read both as protobuf messages and as text.
pub fn validate_everything(data: &[u8]) {
    if let Ok(request) = pb::RegisterAccountRequest::decode(data)
        && let Some(acct) = &request.account
        && let Err(errors) = account::parse_new(acct)
    {
        assert!(errors.violations().iter().all(|v| !v.field.is_empty()));
    }
    if let Ok(request) = pb::UpdateAccountRequest::decode(data)
        && let Some(acct) = &request.account
        && let Err(errors) = account::parse_update(acct, request.update_mask.as_ref())
    {
        assert!(errors.violations().iter().all(|v| !v.field.is_empty()));
    }
    if let Ok(request) = pb::CreateChangeRequestRequest::decode(data) {
        let errors = crate::conversions::change_input::validate_fields_for_fuzzing(&request);
        assert!(errors.violations().iter().all(|v| !v.field.is_empty()));
    }
    if data.len() >= 24 {
        let (a, b) = data.split_at(8);
        let (c, d) = b.split_at(8);
        let number = |bytes: &[u8]| f64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]));
        let _ = AccountLimits::from_raw(
            number(a),
            number(c),
            i64::from_le_bytes(d[..8].try_into().unwrap_or([0; 8])),
            number(&d[d.len() - 8..]),
        );
    }
    let text = String::from_utf8_lossy(data);
    let _ = AccountId::parse(&text);
    let _ = Region::parse(&text);
    let _ = RoleArn::parse(&text);
    let _ = TableName::parse(&text);
    let _ = KeyReference::parse(&text);
    let _ = Role::parse(&text);
    if let Ok(selector) = LabelSelector::parse(&text) {
        // A selector's canonical form parses back to the same selector.
        let again = LabelSelector::parse(&selector.canonical()).expect("canonical form parses");
        assert_eq!(again, selector);
    }
    // Page tokens: arbitrary text never panics; an encoded key decodes to itself under its filter only.
    let pages = page_token::PageTokenKeys::new(vec![vec![1; page_token::MIN_KEY_BYTES]])
        .expect("key")
        .for_call("ListAccounts", "fuzzer");
    let _ = pages.decode(&text, "filter");
    let token = pages.encode(&text, "filter");
    assert_eq!(
        pages.decode(&token, "filter").ok().flatten().as_deref(),
        Some(&*text)
    );
    assert!(pages.decode(&token, "another filter").is_err());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz target's properties on a few inputs, so they are checked on every test run too.
    #[test]
    fn seeds_hold_the_properties() {
        let register = pb::RegisterAccountRequest {
            account: Some(pb::Account {
                account_id: "12345678901x".into(),
                role_arn: "arn:aws:iam::123456789012:role/x".into(),
                regions: vec!["mars-east-1".into()],
                ..Default::default()
            }),
        }
        .encode_to_vec();
        for seed in [
            &register[..],
            b"",
            b"team=payments,!sandbox,env!=dev",
            b"\xff\xfe%%==,,!",
            b"eyJhZnRlciI6IngiLCJmaWx0ZXIiOiIwMDAwMDAwMDAwMDAwMDAwIn0",
        ] {
            validate_everything(seed);
        }
    }
}
