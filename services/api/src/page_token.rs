//! Page tokens: opaque and tamper-evident. A token carries the last key of the previous page, signed (HMAC-SHA256)
//! together with the RPC, the caller and the filter it was made for, so a token is refused when it was changed,
//! made up, or replayed by another caller, on another RPC or under another filter. Every list RPC pages through
//! [`CallPages`].
//!
//! The keys are shared by every replica (a page may land on another one) and rotate without breaking pagination:
//! the first key signs, every key verifies (see the operator guide's "Page-token keys").

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use rand::RngCore as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::Sha256;
use tablecrypt_core::{InvalidValue, ValidationErrors};

/// The least key length: HMAC-SHA256's own block of strength (RFC 2104 recommends at least the hash's length).
pub const MIN_KEY_BYTES: usize = 32;
/// Most keys held at once: a rotation needs two (the signing key and the one before it); four leave room for a
/// rotation begun before the last one finished, while bounding the HMACs a refused token costs.
pub const MAX_KEYS: usize = 4;
/// Longest token decoded: ours are under 600 characters (a 255-character table name and a region in JSON); a
/// longer one is refused before any HMAC is computed over it.
const MAX_TOKEN_CHARS: usize = 2048;
/// The token's format, its first byte, so a later format can be told apart.
const VERSION: u8 = 1;
/// Bytes of the HMAC kept in a token: 128 bits are beyond guessing and keep tokens short.
const TAG_BYTES: usize = 16;
/// What a token signs besides its cursor, so a tablecrypt page token cannot pass for any other signed value.
const DOMAIN: &[u8] = b"tablecrypt.v1 page token";

/// The keys page tokens are signed with: the first signs, every one verifies.
#[derive(Clone)]
pub struct PageTokenKeys {
    keys: Arc<Vec<Vec<u8>>>,
}

impl std::fmt::Debug for PageTokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PageTokenKeys({} keys, redacted)", self.keys.len())
    }
}

impl PageTokenKeys {
    /// `keys[0]` signs; each must be at least [`MIN_KEY_BYTES`] long. Errors never show a key.
    pub fn new(keys: Vec<Vec<u8>>) -> Result<Self, String> {
        if keys.is_empty() {
            return Err("no page-token key".into());
        }
        if keys.len() > MAX_KEYS {
            return Err(format!(
                "{} page-token keys: at most {MAX_KEYS} (the signing key and those still accepted)",
                keys.len()
            ));
        }
        if let Some(i) = keys.iter().position(|k| k.len() < MIN_KEY_BYTES) {
            return Err(format!(
                "page-token key {} is shorter than {MIN_KEY_BYTES} bytes (make one with `openssl rand -hex 32`)",
                i + 1
            ));
        }
        Ok(Self {
            keys: Arc::new(keys),
        })
    }

    /// A key made at start: tokens work within this process only (not on another replica, not after a restart).
    pub fn random() -> Self {
        let mut key = vec![0u8; MIN_KEY_BYTES];
        rand::rng().fill_bytes(&mut key);
        Self {
            keys: Arc::new(vec![key]),
        }
    }

    /// The page tokens of one call of `rpc` by `caller` (its identity).
    pub fn for_call(&self, rpc: &'static str, caller: &str) -> CallPages {
        CallPages {
            keys: self.clone(),
            rpc,
            caller: caller.to_owned(),
        }
    }

    fn tag(key: &[u8], context: &[&[u8]], payload: &[u8]) -> Hmac<Sha256> {
        // Any key length is valid for HMAC; the constructor checked the length we require.
        let mut mac = Hmac::<Sha256>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
        mac.update(DOMAIN);
        for part in context {
            // Length-prefixed, so no two different contexts sign the same bytes.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.update(payload);
        mac
    }
}

/// The page tokens of one call: bound to its RPC and caller, and to each list's filter.
#[derive(Debug, Clone)]
pub struct CallPages {
    keys: PageTokenKeys,
    rpc: &'static str,
    caller: String,
}

impl CallPages {
    fn context<'a>(&'a self, filter: &'a str) -> [&'a [u8]; 3] {
        [
            self.rpc.as_bytes(),
            self.caller.as_bytes(),
            filter.as_bytes(),
        ]
    }

    /// The token of the page after the row whose key is `after`.
    pub fn encode(&self, after: &str, filter: &str) -> String {
        let payload = after.as_bytes();
        let tag = PageTokenKeys::tag(&self.keys.keys[0], &self.context(filter), payload).finalize();
        let mut token = Vec::with_capacity(1 + TAG_BYTES + payload.len());
        token.push(VERSION);
        token.extend_from_slice(&tag.into_bytes()[..TAG_BYTES]);
        token.extend_from_slice(payload);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// The key to continue after, `None` for the first page (an empty token). A token this server did not make
    /// for this caller, RPC and filter is refused, whichever of them differs.
    pub fn decode(&self, token: &str, filter: &str) -> Result<Option<String>, InvalidValue> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = || {
            InvalidValue::new(
                "is not a page token this RPC returned for this caller and filter: repeat the original \
                 filter or start over",
            )
        };
        if token.len() > MAX_TOKEN_CHARS {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        let Some((&VERSION, rest)) = bytes.split_first() else {
            return Err(invalid());
        };
        if rest.len() < TAG_BYTES {
            return Err(invalid());
        }
        let (tag, payload) = rest.split_at(TAG_BYTES);
        let context = self.context(filter);
        let genuine = self.keys.keys.iter().any(|key| {
            PageTokenKeys::tag(key, &context, payload)
                .verify_truncated_left(tag)
                .is_ok()
        });
        if !genuine {
            return Err(invalid());
        }
        String::from_utf8(payload.to_vec())
            .map(Some)
            .map_err(|_| invalid())
    }

    /// Trims `rows`, fetched as `page_size + 1` to learn whether more follow, to the page, and returns the token
    /// for the next page: the key of the page's last row, or empty on the last page.
    pub fn finish_page<T>(
        &self,
        rows: &mut Vec<T>,
        page_size: u32,
        filter: &str,
        key: impl Fn(&T) -> String,
    ) -> String {
        let more = rows.len() > page_size as usize;
        rows.truncate(page_size as usize);
        match (more, rows.last()) {
            (true, Some(last)) => self.encode(&key(last), filter),
            _ => String::new(),
        }
    }

    /// The paging of a list call from its `page_size` and `page_token`, each problem added to `errors` under its
    /// field. `filter` is the call's filter, so a token cannot be replayed under another one.
    pub fn paging<C: DeserializeOwned>(
        &self,
        requested_size: i32,
        token: &str,
        filter: String,
        errors: &mut ValidationErrors,
    ) -> Option<Paging<C>> {
        let size = errors.check("page_size", page_size(requested_size));
        let after = match errors
            .check("page_token", self.decode(token, &filter))
            .flatten()
        {
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
            pages: self.clone(),
        })
    }
}

/// Default and largest page sizes (AIP-158: a size above the maximum is lowered to it, not refused).
pub const DEFAULT_PAGE_SIZE: u32 = 100;
pub const MAX_PAGE_SIZE: u32 = 1000;

/// One list call's paging: the page size, where the page starts (a cursor of type `C`, stored in the token as
/// JSON) and the filter its tokens are bound to.
#[derive(Debug)]
pub struct Paging<C> {
    pub size: u32,
    pub after: Option<C>,
    filter: String,
    pages: CallPages,
}

impl<C: Serialize> Paging<C> {
    /// The token of the page after this one: the cursor of its `last` row if `more` follow, else empty.
    pub fn next_token<T>(&self, more: bool, last: Option<&T>, cursor: impl Fn(&T) -> C) -> String {
        match (more, last) {
            (true, Some(last)) => self.pages.encode(
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

    fn keys(seeds: &[u8]) -> PageTokenKeys {
        PageTokenKeys::new(seeds.iter().map(|s| vec![*s; MIN_KEY_BYTES]).collect()).expect("keys")
    }

    #[test]
    fn round_trips_and_refuses_foreign_or_mangled_tokens() {
        let pages = keys(&[1]).for_call("ListAccounts", "alice");
        let token = pages.encode("123456789012", "team=a");
        assert_eq!(
            pages.decode(&token, "team=a"),
            Ok(Some("123456789012".into()))
        );
        assert!(pages.decode(&token, "team=b").is_err(), "another filter");
        assert!(pages.decode("not-a-token!", "").is_err());
        assert!(
            pages.decode(&"A".repeat(1 << 20), "").is_err(),
            "a 1 MiB token"
        );
        assert_eq!(pages.decode("", "x"), Ok(None));
    }

    #[test]
    fn a_token_is_bound_to_its_caller_rpc_and_key() {
        let keys = keys(&[1]);
        let token = keys
            .for_call("ListAccounts", "alice")
            .encode("123456789012", "");
        let refused = |pages: CallPages| pages.decode(&token, "").is_err();
        assert!(
            refused(keys.for_call("ListAccounts", "bob")),
            "another caller"
        );
        assert!(
            refused(keys.for_call("ListInventory", "alice")),
            "another RPC"
        );
        assert!(
            refused(super::tests::keys(&[2]).for_call("ListAccounts", "alice")),
            "another key"
        );
        // Caller and filter cannot trade characters: caller "a" with filter "bc" is not "ab" with "c".
        let shifted = keys.for_call("ListAccounts", "a").encode("x", "bc");
        assert!(
            keys.for_call("ListAccounts", "ab")
                .decode(&shifted, "c")
                .is_err()
        );
    }

    #[test]
    fn a_changed_cursor_is_refused() {
        let pages = keys(&[1]).for_call("ListAccounts", "alice");
        let mut bytes = URL_SAFE_NO_PAD
            .decode(pages.encode("111111111111", ""))
            .expect("base64");
        let last = bytes.len() - 1;
        bytes[last] = b'2';
        let forged = URL_SAFE_NO_PAD.encode(&bytes);
        assert!(pages.decode(&forged, "").is_err());
    }

    #[test]
    fn rotation_keeps_tokens_of_the_previous_key() {
        let old = keys(&[1]).for_call("ListAccounts", "alice");
        let token = old.encode("123456789012", "");
        // Step 1 of a rotation: the new key added as accepted; step 2: it signs, the old one still accepted.
        for rotated in [keys(&[1, 2]), keys(&[2, 1])] {
            let pages = rotated.for_call("ListAccounts", "alice");
            assert_eq!(pages.decode(&token, ""), Ok(Some("123456789012".into())));
        }
        // Step 3: the old key dropped; its tokens are refused.
        assert!(
            keys(&[2])
                .for_call("ListAccounts", "alice")
                .decode(&token, "")
                .is_err()
        );
    }

    #[test]
    fn short_missing_or_too_many_keys_are_refused() {
        assert!(PageTokenKeys::new(vec![]).is_err());
        assert!(PageTokenKeys::new(vec![vec![7; MIN_KEY_BYTES - 1]]).is_err());
        assert!(PageTokenKeys::new(vec![vec![7; MIN_KEY_BYTES]; MAX_KEYS + 1]).is_err());
        let error = PageTokenKeys::new(vec![b"short-secret".to_vec()]).expect_err("short");
        assert!(!error.contains("short-secret"), "{error}");
    }

    #[test]
    fn paging_reads_back_the_cursor_it_wrote() {
        let pages = keys(&[1]).for_call("ListChangeItems", "alice");
        let mut errors = ValidationErrors::new();
        let first = pages
            .paging::<i32>(2, "", "f".into(), &mut errors)
            .expect("paging");
        assert!(errors.is_empty() && first.after.is_none());
        let token = first.next_token(true, Some(&7), |n| *n);
        let second = pages
            .paging::<i32>(2, &token, "f".into(), &mut errors)
            .expect("paging");
        assert_eq!(second.after, Some(7));
        assert!(first.next_token(false, Some(&7), |n| *n).is_empty());
        pages.paging::<i32>(2, &token, "g".into(), &mut errors);
        assert!(!errors.is_empty(), "another filter's token is refused");
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(5000), Ok(MAX_PAGE_SIZE));
        assert!(page_size(-1).is_err());
    }
}
