//! The readable report of a calibration run: what it decided and why, what it could not decide, and every call
//! it made with AWS's answer.

use super::infer::Inference;
use super::session::Entry;
use crate::profile::Provenance;

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

pub fn render(
    measured: &Provenance,
    plan: &str,
    inference: &Inference,
    cut_short: Option<&str>,
    cleanup: &str,
    transcript: &[Entry],
) -> String {
    let mut out = format!(
        "# Calibration run {}\n\n\
         - account: {}\n- regions: {}\n- endpoint: {}\n- started: {}\n- finished: {}\n- tool: {}\n",
        measured.run_id,
        measured.account_id,
        measured.regions.join(", "),
        measured.endpoint,
        measured.started.to_rfc3339(),
        measured.finished.to_rfc3339(),
        measured.tool,
    );
    if let Some(why) = cut_short {
        out.push_str(&format!("- **cut short**: {why}\n"));
    }
    out.push_str("\n## Behaviour switches\n\n| switch | value | evidence |\n| --- | --- | --- |\n");
    let values = serde_json::to_value(&inference.behaviour).unwrap_or_default();
    for (switch, evidence) in &inference.evidence {
        let value = match values.get(*switch) {
            Some(serde_json::Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let value = if inference.undetermined.iter().any(|u| u == switch) {
            format!("undetermined (kept {value})")
        } else {
            value
        };
        out.push_str(&format!(
            "| `{switch}` | {} | {} |\n",
            cell(&value),
            cell(evidence)
        ));
    }
    out.push_str("\n## Observations without a switch\n\n");
    for (key, value) in &inference.observations {
        out.push_str(&format!("- `{key}`: {value}\n"));
    }
    out.push_str(&format!(
        "\n## Cleanup\n\n{cleanup}\n\n## Plan\n\n```text\n{plan}```\n"
    ));
    out.push_str(
        "\n## Every call and answer\n\n| +s | region | operation | request | answer |\n| --- | --- | --- | --- | --- |\n",
    );
    for entry in transcript {
        out.push_str(&format!(
            "| {:.1} | {} | {} | {} | {} |\n",
            entry.at,
            entry.region,
            entry.operation,
            cell(&entry.request),
            cell(&entry.answer)
        ));
    }
    out
}
