//! The keys that sign page tokens: from a file (a mounted secret) or a variable, every replica the same.

use std::path::Path;

use secrecy::{ExposeSecret as _, SecretString};
use tablecrypt_api::page_token::PageTokenKeys;

/// Keys as written in the file or variable: one per line (or comma-separated), the first signs and the others
/// are still accepted, blank lines and `#` comments ignored. A key is its text's bytes (at least 32; `openssl
/// rand -hex 32` makes one).
fn parse(text: &str) -> Vec<Vec<u8>> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .map(|key| key.as_bytes().to_vec())
        .collect()
}

/// The configured keys: `inline` (`TABLECRYPT_PAGE_TOKEN_KEYS`) or `file` (`TABLECRYPT_PAGE_TOKEN_KEYS_FILE`),
/// not both; `None` when neither is set. Errors name the setting, never a key.
pub fn load(
    inline: Option<&SecretString>,
    file: Option<&Path>,
) -> Result<Option<PageTokenKeys>, String> {
    let (setting, text) = match (inline, file) {
        (Some(_), Some(_)) => {
            return Err(
                "invalid configuration: set page_token_keys or page_token_keys_file, not both"
                    .into(),
            );
        }
        (None, None) => return Ok(None),
        (Some(keys), None) => ("page_token_keys", keys.expose_secret().to_owned()),
        (None, Some(path)) => (
            "page_token_keys_file",
            std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "invalid configuration: page_token_keys_file {}: {e}",
                    path.display()
                )
            })?,
        ),
    };
    PageTokenKeys::new(parse(&text))
        .map(Some)
        .map_err(|e| format!("invalid configuration: {setting}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn keys_from_lines_or_commas_with_comments() {
        assert_eq!(parse(&format!("# signing\n{A}\n\n{B}\n")).len(), 2);
        assert_eq!(parse(&format!("{A}, {B}")).len(), 2);
        assert!(parse("  \n# none\n").is_empty());
    }

    #[test]
    fn one_source_at_most_and_errors_never_show_a_key() {
        let inline = SecretString::from(format!("{A},{B}"));
        assert!(load(Some(&inline), None).expect("keys").is_some());
        assert!(load(None, None).expect("none").is_none());
        let both = load(Some(&inline), Some(Path::new("/keys"))).expect_err("both");
        assert!(both.contains("not both"), "{both}");
        let short = load(
            Some(&SecretString::from("too-short-a-key".to_owned())),
            None,
        )
        .expect_err("short");
        assert!(
            short.contains("page_token_keys") && !short.contains("too-short-a-key"),
            "{short}"
        );
        let missing = load(None, Some(Path::new("/no/such/keys"))).expect_err("missing");
        assert!(missing.contains("/no/such/keys"), "{missing}");
    }
}
