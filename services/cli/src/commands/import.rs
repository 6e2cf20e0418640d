//! `tablecrypt accounts import FILE`: registers every account of a YAML file, or brings a registered one up to
//! date. The whole file is validated (with the same rules as the server) before anything is sent, so a bad file
//! changes nothing.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::Deserialize;
use tablecrypt_core::RawAccount;
use tablecrypt_proto::v1 as pb;

use super::Ctx;
use crate::error::{CliError, Result};
use crate::output::{print_table, table};

/// One account of the file. Unknown keys are refused, so a misspelt one is not silently dropped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub account_id: String,
    pub role_arn: String,
    pub regions: Vec<String>,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub labels: HashMap<String, String>,
    /// Sent to STS when the member role's trust policy demands it; never shown back.
    #[serde(default)]
    pub external_id: String,
    #[serde(default)]
    pub limits: Option<Limits>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default)]
    pub update_rate_per_second: f64,
    #[serde(default)]
    pub poll_rate_per_second: f64,
    #[serde(default)]
    pub max_tables_in_flight: i32,
    /// e.g. "2m"; absent: the service's worker_settle_timeout.
    #[serde(default, with = "humantime_serde")]
    pub settle_timeout: Option<std::time::Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    accounts: Vec<Entry>,
}

/// The file's accounts: a YAML list, or a mapping with an `accounts` list. Every problem is reported, each
/// named by its path (`accounts[2].role_arn`).
pub fn parse(text: &str) -> Result<Vec<Entry>> {
    let value: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| CliError::Usage(format!("not YAML: {e}")))?;
    // Parsed again from the text, not from the value: the error then names the entry's key and its line.
    let entries = if value.is_sequence() {
        serde_norway::from_str::<Vec<Entry>>(text)
    } else {
        serde_norway::from_str::<Document>(text).map(|d| d.accounts)
    }
    .map_err(|e| CliError::Usage(format!("not an account list: {e}")))?;
    let lines = entry_lines(text, entries.len());
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = lines
            .get(i)
            .map(|line| format!(" (line {line})"))
            .unwrap_or_default();
        if let Err(errors) = entry.raw().parse() {
            for violation in errors.violations() {
                problems.push(format!(
                    "accounts[{i}].{}{at}: {}",
                    violation.field, violation.description
                ));
            }
        }
        if !seen.insert(entry.account_id.as_str()) {
            problems.push(format!(
                "accounts[{i}].account_id{at}: {} appears more than once",
                entry.account_id
            ));
        }
    }
    if entries.is_empty() {
        problems.push("accounts: the file lists no account".to_owned());
    }
    if problems.is_empty() {
        Ok(entries)
    } else {
        Err(CliError::Usage(format!(
            "the file is invalid; nothing was changed:\n  {}",
            problems.join("\n  ")
        )))
    }
}

/// The line (from 1) of each entry's `account_id` key, if the file has exactly one per entry (else none: a line
/// that might name the wrong entry is worse than no line).
fn entry_lines(text: &str, entries: usize) -> Vec<usize> {
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| {
            let key = line.trim_start().trim_start_matches("- ").trim_start();
            let key = key.trim_start_matches('{').trim_start();
            key.trim_start_matches(['"', '\''])
                .strip_prefix("account_id")
                .is_some_and(|rest| {
                    rest.trim_start_matches(['"', '\''])
                        .trim_start()
                        .starts_with(':')
                })
        })
        .map(|(i, _)| i + 1)
        .collect();
    if lines.len() == entries {
        lines
    } else {
        Vec::new()
    }
}

impl Entry {
    fn raw(&self) -> RawAccount<'_> {
        RawAccount {
            account_id: &self.account_id,
            display_name: &self.display_name,
            role_arn: &self.role_arn,
            external_id: &self.external_id,
            regions: &self.regions,
            labels: &self.labels,
            limits: self.limits.map(|l| {
                (
                    l.update_rate_per_second,
                    l.poll_rate_per_second,
                    i64::from(l.max_tables_in_flight),
                    l.settle_timeout.map_or(0.0, |d| d.as_secs_f64()),
                )
            }),
        }
    }

    fn to_proto(&self) -> pb::Account {
        pb::Account {
            account_id: self.account_id.clone(),
            display_name: self.display_name.clone(),
            role_arn: self.role_arn.clone(),
            external_id: self.external_id.clone(),
            regions: self.regions.clone(),
            labels: self.labels.clone(),
            limits: self.limits_proto(),
            ..Default::default()
        }
    }

    fn limits_proto(&self) -> Option<pb::AccountLimits> {
        self.limits.map(|l| pb::AccountLimits {
            update_rate_per_second: l.update_rate_per_second,
            poll_rate_per_second: l.poll_rate_per_second,
            max_tables_in_flight: l.max_tables_in_flight,
            settle_timeout: l.settle_timeout.map(|d| prost_types::Duration {
                seconds: d.as_secs() as i64,
                nanos: d.subsec_nanos() as i32,
            }),
        })
    }

    /// The fields that visibly differ from the registered account (an external id is compared by the server:
    /// see [`external_id_differs`]).
    fn changed_fields(&self, registered: &pb::Account) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if self.display_name != registered.display_name {
            fields.push("display_name");
        }
        if self.role_arn != registered.role_arn {
            fields.push("role_arn");
        }
        if self.regions != registered.regions {
            fields.push("regions");
        }
        // Labels under the discovery prefix are the server's to keep (a caller can neither set nor drop them).
        let own_labels: HashMap<String, String> = registered
            .labels
            .iter()
            .filter(|(k, _)| !tablecrypt_core::discovery::is_discovered_label(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if self.labels != own_labels {
            fields.push("labels");
        }
        if self.limits_proto().unwrap_or_default() != registered.limits.unwrap_or_default() {
            fields.push("limits");
        }
        fields
    }
}

/// Whether the file's external id differs from the registered one (`None`: the caller may not ask). The server
/// never returns it, so it is asked to validate the change without making it: the etag it answers stays the
/// current one when nothing would change.
async fn external_id_differs(
    client: &crate::client::Client,
    entry: &Entry,
    registered: &pb::Account,
) -> Result<Option<bool>> {
    if entry.external_id.is_empty() {
        return Ok(Some(false));
    }
    let mut account = entry.to_proto();
    account.etag = registered.etag.clone();
    let asked = client
        .call(
            pb::UpdateAccountRequest {
                account: Some(account),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["external_id".to_owned()],
                }),
                validate_only: true,
            },
            |mut api, request| async move { api.update_account(request).await },
        )
        .await;
    match asked {
        Ok(would_be) => Ok(Some(would_be.etag != registered.etag)),
        // A read-only caller (a CI token) may still check everything else.
        Err(CliError::Access(message)) if message.starts_with("PERMISSION_DENIED") => Ok(None),
        Err(error) => Err(error),
    }
}

/// Shown for an external id the caller may not have compared.
const EXTERNAL_ID_NOT_COMPARED: &str = "external_id (not compared: that needs the admin role)";

/// What happened to one account.
struct Outcome {
    account_id: String,
    action: &'static str,
    fields: Vec<&'static str>,
    error: Option<CliError>,
}

/// Imports `file`; with `dry_run` only reports; with `check` (a dry run too) fails when anything would change.
pub async fn run(ctx: &Ctx, file: &Path, dry_run: bool, check: bool) -> Result<()> {
    let dry_run = dry_run || check;
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
    let entries = parse(&text)?;
    let client = ctx.client().await?;
    let mut outcomes = Vec::new();
    for entry in &entries {
        let outcome = match apply(client, entry, dry_run).await {
            Ok((action, fields)) => Outcome {
                account_id: entry.account_id.clone(),
                action,
                fields,
                error: None,
            },
            // Nothing past this account can be reached either.
            Err(error @ CliError::Access(_)) => return Err(error),
            Err(error) => Outcome {
                account_id: entry.account_id.clone(),
                action: "failed",
                fields: Vec::new(),
                error: Some(error),
            },
        };
        outcomes.push(outcome);
    }
    report(ctx, &outcomes, dry_run);
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    if failed > 0 {
        return Err(CliError::Failed(format!(
            "{failed} of {} accounts could not be imported",
            outcomes.len()
        )));
    }
    let drifted = outcomes.iter().filter(|o| o.action != "unchanged").count();
    if check && drifted > 0 {
        return Err(CliError::Failed(format!(
            "{drifted} of {} accounts differ from {}",
            outcomes.len(),
            file.display()
        )));
    }
    Ok(())
}

async fn apply(
    client: &crate::client::Client,
    entry: &Entry,
    dry_run: bool,
) -> Result<(&'static str, Vec<&'static str>)> {
    let existing = client
        .call(
            pb::GetAccountRequest {
                account_id: entry.account_id.clone(),
            },
            |mut api, request| async move { api.get_account(request).await },
        )
        .await;
    let registered = match existing {
        Ok(account) => account,
        Err(CliError::Failed(message)) if message.starts_with("NOT_FOUND") => {
            if !dry_run {
                client
                    .call(
                        pb::RegisterAccountRequest {
                            account: Some(entry.to_proto()),
                        },
                        |mut api, request| async move { api.register_account(request).await },
                    )
                    .await?;
            }
            return Ok((
                if dry_run {
                    "would register"
                } else {
                    "registered"
                },
                Vec::new(),
            ));
        }
        Err(error) => return Err(error),
    };
    let mut fields = entry.changed_fields(&registered);
    let mut notes = Vec::new();
    match external_id_differs(client, entry, &registered).await? {
        Some(true) => fields.push("external_id"),
        Some(false) => {}
        // Sent anyway by a real import (which the server then refuses as for any update by this caller).
        None if !dry_run => fields.push("external_id"),
        None => notes.push(EXTERNAL_ID_NOT_COMPARED),
    }
    if fields.is_empty() {
        return Ok(("unchanged", notes));
    }
    if !dry_run {
        let mut account = entry.to_proto();
        account.etag = registered.etag;
        client
            .call(
                pb::UpdateAccountRequest {
                    account: Some(account),
                    update_mask: Some(prost_types::FieldMask {
                        paths: fields.iter().map(|f| (*f).to_owned()).collect(),
                    }),
                    validate_only: false,
                },
                |mut api, request| async move { api.update_account(request).await },
            )
            .await?;
    }
    fields.extend(notes);
    Ok((if dry_run { "would update" } else { "updated" }, fields))
}

fn report(ctx: &Ctx, outcomes: &[Outcome], dry_run: bool) {
    if ctx.out.is_json() {
        let accounts: Vec<serde_json::Value> = outcomes
            .iter()
            .map(|o| {
                serde_json::json!({
                    "accountId": o.account_id,
                    "action": o.action,
                    "changedFields": o.fields,
                    "error": o.error.as_ref().map(ToString::to_string),
                })
            })
            .collect();
        ctx.out
            .json(&serde_json::json!({ "dryRun": dry_run, "accounts": accounts }));
        return;
    }
    let mut rows = table(&["account", "action", "changed fields or error"]);
    for o in outcomes {
        rows.add_row(vec![
            o.account_id.clone(),
            o.action.to_owned(),
            o.error
                .as_ref()
                .map_or_else(|| o.fields.join(","), ToString::to_string),
        ]);
    }
    print_table(&rows);
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
accounts:
  - account_id: "111111111111"
    role_arn: arn:aws:iam::111111111111:role/tablecrypt-member
    regions: [eu-west-1, us-east-1]
    labels: {team: payments}
  - account_id: "222222222222"
    role_arn: arn:aws:iam::222222222222:role/tablecrypt-member
    regions: [eu-west-1]
    limits: {update_rate_per_second: 2, settle_timeout: 90s}
"#;

    #[test]
    fn a_good_file_parses_as_a_list_or_a_mapping() {
        let entries = parse(GOOD).expect("valid");
        assert_eq!(entries.len(), 2);
        let limits = entries[1].limits_proto().expect("limits");
        assert_eq!(limits.settle_timeout.map(|d| d.seconds), Some(90));
        let list = "- {account_id: '111111111111', role_arn: 'arn:aws:iam::111111111111:role/r', regions: [eu-west-1]}";
        assert_eq!(parse(list).expect("valid").len(), 1);
    }

    #[test]
    fn every_problem_is_named_by_its_path() {
        let bad = r#"
- account_id: "1234"
  role_arn: arn:aws:iam::111111111111:role/r
  regions: [mars-1]
- account_id: "111111111111"
  role_arn: arn:aws:iam::999999999999:role/r
  regions: [eu-west-1]
  labels: {"has space": x}
- account_id: "111111111111"
  role_arn: arn:aws:iam::111111111111:role/r
  regions: [eu-west-1]
"#;
        let message = parse(bad).expect_err("invalid").to_string();
        for path in [
            "accounts[0].account_id",
            "accounts[0].regions[0]",
            "accounts[1].labels",
            "accounts[2].account_id (line 9): 111111111111 appears more than once",
        ] {
            assert!(message.contains(path), "{path} missing from {message}");
        }
    }

    #[test]
    fn problems_name_their_lines_and_an_unquoted_id_keeps_its_zeros() {
        let bad = "accounts:\n  - account_id: \"111111111111\"\n    role_arn: arn:aws:iam::111111111111:role/r\n    \
                   regions: [eu-west-1]\n  - account_id: \"1234\"\n    role_arn: arn:aws:iam::111111111111:role/r\n    \
                   regions: [eu-west-1]\n";
        let message = parse(bad).expect_err("invalid").to_string();
        assert!(
            message.contains("accounts[1].account_id (line 5)"),
            "{message}"
        );
        // A label key that begins with account_id is not an entry's key.
        let labelled = bad.replacen(
            "regions: [eu-west-1]\n",
            "regions: [eu-west-1]\n    labels: {account_id_owner: x}\n",
            1,
        );
        let message = parse(&labelled).expect_err("invalid").to_string();
        assert!(
            message.contains("accounts[1].account_id (line 6)"),
            "{message}"
        );
        // An unquoted id keeps its leading zero (the parser reads a scalar as text where a string is wanted).
        let unquoted = "- account_id: 012345678901\n  role_arn: arn:aws:iam::012345678901:role/r\n  regions: [eu-west-1]\n";
        assert_eq!(
            parse(unquoted).expect("an unquoted id")[0].account_id,
            "012345678901"
        );
        let wrong_type = "- account_id: [1]\n  role_arn: arn:aws:iam::012345678901:role/r\n  regions: [eu-west-1]\n";
        let message = parse(wrong_type).expect_err("a list").to_string();
        assert!(message.contains("line 1"), "{message}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let typo = "- {account_id: '111111111111', role_arn: 'arn:aws:iam::111111111111:role/r', region: [eu-west-1]}";
        assert!(matches!(parse(typo), Err(CliError::Usage(_))));
    }
}
