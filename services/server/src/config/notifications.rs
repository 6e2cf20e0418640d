//! `[[notifications]]`: webhooks told when a change request waits for approval, pauses, fails or succeeds.

use std::collections::HashSet;
use std::path::PathBuf;

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use tablecrypt_core::LabelSelector;
use tablecrypt_core::notify::{BodyFormat, NotifyEvent, Route};
use tablecrypt_engine::Sink;

/// One webhook. Its URL is often a secret (a Slack incoming webhook's is): give it inline or, better, from a
/// mounted file; it never appears in logs, the audit log or errors.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationConfig {
    /// Names the sink in the logs, the audit log (`notify/<name>`) and the outbox; 1-64 characters of
    /// `[A-Za-z0-9._-]`, unique.
    pub name: String,
    /// The URL posted to: https, or http to a loopback address.
    #[serde(serialize_with = "super::show::redacted_option")]
    pub url: Option<SecretString>,
    /// A file holding the URL (read at start), instead of `url`.
    pub url_file: Option<PathBuf>,
    /// Or an SNS topic (`arn:aws:sns:REGION:ACCOUNT:NAME`) published to with the server's own AWS credentials;
    /// the message is the JSON body, with a message attribute `event` for subscription filter policies.
    pub sns_topic_arn: Option<String>,
    /// `json` (tablecrypt's body, the default) or `slack` (`{"text": ...}`).
    #[serde(default = "default_format")]
    pub format: String,
    /// Which of `approval_needed`, `paused`, `failed`, `succeeded` this sink hears of (default: all four).
    #[serde(default = "default_events")]
    pub events: Vec<String>,
    /// Requests touching an account these labels match (e.g. "team=payments"); empty: every request.
    #[serde(default)]
    pub selector: String,
}

fn default_format() -> String {
    "json".into()
}

fn default_events() -> Vec<String> {
    NotifyEvent::ALL.map(|e| e.as_str().to_owned()).to_vec()
}

/// The configured sinks, validated; errors name the entry and field.
pub fn sinks(entries: &[NotificationConfig]) -> anyhow::Result<Vec<Sink>> {
    let mut names = HashSet::new();
    let mut sinks = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let at = |field: &str| format!("invalid configuration: notifications[{i}].{field}");
        anyhow::ensure!(
            (1..=64).contains(&entry.name.len())
                && entry
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')),
            "{} must be 1-64 characters of letters, digits, '.', '_' or '-'",
            at("name")
        );
        anyhow::ensure!(
            names.insert(entry.name.clone()),
            "{} {:?} is used twice",
            at("name"),
            entry.name
        );
        let url = match (&entry.url, &entry.url_file, &entry.sns_topic_arn) {
            (Some(url), None, None) => Some(url.expose_secret().trim().to_owned()),
            (None, Some(file), None) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| {
                        anyhow::anyhow!("{}: cannot read {}: {e}", at("url_file"), file.display())
                    })?
                    .trim()
                    .to_owned(),
            ),
            (None, None, Some(_)) => None,
            _ => anyhow::bail!(
                "{}: give exactly one of url, url_file and sns_topic_arn",
                at("url")
            ),
        };
        let format = BodyFormat::parse(&entry.format)
            .map_err(|e| anyhow::anyhow!("{}: {}", at("format"), e.0))?;
        anyhow::ensure!(!entry.events.is_empty(), "{} is empty", at("events"));
        let events = entry
            .events
            .iter()
            .map(|e| {
                NotifyEvent::parse(e).map_err(|e| anyhow::anyhow!("{}: {}", at("events"), e.0))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let selector = LabelSelector::parse(&entry.selector)
            .map_err(|e| anyhow::anyhow!("{}: {}", at("selector"), e.0))?;
        let route = Route {
            sink: entry.name.clone(),
            events,
            selector,
        };
        let sink = match (url, &entry.sns_topic_arn) {
            (Some(url), _) => {
                Sink::new(route, &url, format).map_err(|e| anyhow::anyhow!("{}: {e}", at("url")))?
            }
            (None, Some(topic)) => Sink::sns(route, topic)
                .map_err(|e| anyhow::anyhow!("{}: {e}", at("sns_topic_arn")))?,
            (None, None) => {
                unreachable!("one of url, url_file and sns_topic_arn was checked above")
            }
        };
        sinks.push(sink);
    }
    Ok(sinks)
}
