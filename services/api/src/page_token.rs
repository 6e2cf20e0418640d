//! Opaque page tokens: the last key of the previous page, tied to the filter it was produced under so a token
//! cannot be replayed against another filter and silently skip rows.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tablecrypt_core::{InvalidValue, ValidationErrors};

#[derive(Serialize, Deserialize)]
struct PageToken {
    /// The last key returned; the next page starts after it.
    after: String,
    /// A short hash of the request's filter.
    filter: String,
}

fn filter_hash(filter: &str) -> String {
    let digest = Sha256::digest(filter.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

pub fn encode(after: &str, filter: &str) -> String {
    let token = PageToken {
        after: after.to_owned(),
        filter: filter_hash(filter),
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

/// The key to continue after, `None` for the first page.
pub fn decode(token: &str, filter: &str) -> Result<Option<String>, InvalidValue> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || InvalidValue::new("is not a page token returned by this RPC");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let token: PageToken = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if token.filter != filter_hash(filter) {
        return Err(InvalidValue::new(
            "was issued for a different filter: repeat the original filter or start over",
        ));
    }
    Ok(Some(token.after))
}

/// Default and largest page sizes (AIP-158: a size above the maximum is lowered to it, not refused).
pub const DEFAULT_PAGE_SIZE: u32 = 100;
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Trims `rows`, fetched as `page_size + 1` to learn whether more follow, to the page, and returns the token
/// for the next page: the key of the page's last row, or empty on the last page.
pub fn finish_page<T>(
    rows: &mut Vec<T>,
    page_size: u32,
    filter: &str,
    key: impl Fn(&T) -> String,
) -> String {
    let more = rows.len() > page_size as usize;
    rows.truncate(page_size as usize);
    match (more, rows.last()) {
        (true, Some(last)) => encode(&key(last), filter),
        _ => String::new(),
    }
}

/// One list call's paging: the page size, where the page starts (a cursor of type `C`, stored in the token as
/// JSON) and the filter its tokens are bound to. Every list RPC pages through this.
#[derive(Debug)]
pub struct Paging<C> {
    pub size: u32,
    pub after: Option<C>,
    filter: String,
}

/// The paging of a list call from its `page_size` and `page_token`, each problem added to `errors` under its
/// field. `filter` is the call's filter, so a token cannot be replayed under another one.
pub fn paging<C: DeserializeOwned>(
    requested_size: i32,
    token: &str,
    filter: String,
    errors: &mut ValidationErrors,
) -> Option<Paging<C>> {
    let size = errors.check("page_size", page_size(requested_size));
    let after = match errors.check("page_token", decode(token, &filter)).flatten() {
        None => None,
        Some(text) => match serde_json::from_str::<C>(&text) {
            Ok(cursor) => Some(cursor),
            Err(_) => {
                errors.add("page_token", "is not a page token returned by this RPC");
                None
            }
        },
    };
    Some(Paging {
        size: size?,
        after,
        filter,
    })
}

impl<C: Serialize> Paging<C> {
    /// The token of the page after this one: the cursor of its `last` row if `more` follow, else empty.
    pub fn next_token<T>(&self, more: bool, last: Option<&T>, cursor: impl Fn(&T) -> C) -> String {
        match (more, last) {
            (true, Some(last)) => encode(
                &serde_json::to_string(&cursor(last)).unwrap_or_default(),
                &self.filter,
            ),
            _ => String::new(),
        }
    }
}

pub fn page_size(requested: i32) -> Result<u32, InvalidValue> {
    match requested {
        n if n < 0 => Err(InvalidValue::new("must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok(u32::try_from(n).unwrap_or(MAX_PAGE_SIZE).min(MAX_PAGE_SIZE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_foreign_or_mangled_tokens() {
        let token = encode("123456789012", "team=a");
        assert_eq!(decode(&token, "team=a"), Ok(Some("123456789012".into())));
        assert!(decode(&token, "team=b").is_err());
        assert!(decode("not-a-token!", "").is_err());
        assert_eq!(decode("", "x"), Ok(None));
    }

    #[test]
    fn paging_reads_back_the_cursor_it_wrote() {
        let mut errors = ValidationErrors::new();
        let first = paging::<i32>(2, "", "f".into(), &mut errors).expect("paging");
        assert!(errors.is_empty() && first.after.is_none());
        let token = first.next_token(true, Some(&7), |n| *n);
        let second = paging::<i32>(2, &token, "f".into(), &mut errors).expect("paging");
        assert_eq!(second.after, Some(7));
        assert!(first.next_token(false, Some(&7), |n| *n).is_empty());
        paging::<i32>(2, &token, "g".into(), &mut errors);
        assert!(!errors.is_empty(), "another filter's token is refused");
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(5000), Ok(MAX_PAGE_SIZE));
        assert!(page_size(-1).is_err());
    }
}
