//! What a calibration run creates, what it does with each resource, and what it tells the user before it starts.

/// Every table a run creates is named `tc-calibrate-<run id>-<label>`; tables without this prefix are not ours.
pub const TABLE_PREFIX: &str = "tc-calibrate-";
/// The tag every table of a run carries (value: the run id); cleanup deletes only a table that carries it.
pub const RUN_TAG: &str = "tablecrypt-calibrate-run";
/// KMS's shortest deletion waiting period: the keys are gone a week after the run.
pub const KEY_DELETION_DAYS: i32 = 7;
/// AWS's switch quota: 4 encryption changes per table in 24 h.
pub const SWITCHES_PER_TABLE: u32 = 4;

/// Where a key or table lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// `--region`.
    Main,
    /// `--replica-region`: the global table's second replica.
    Replica,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPlan {
    pub label: &'static str,
    pub place: Place,
    /// KMS KeySpec.
    pub spec: &'static str,
    pub purpose: &'static str,
}

pub const KEYS: [KeyPlan; 6] = [
    KeyPlan {
        label: "a",
        place: Place::Main,
        spec: "SYMMETRIC_DEFAULT",
        purpose: "the key tables start on",
    },
    KeyPlan {
        label: "b",
        place: Place::Main,
        spec: "SYMMETRIC_DEFAULT",
        purpose: "the key tables switch to; also named by an alias",
    },
    KeyPlan {
        label: "disabled",
        place: Place::Main,
        spec: "SYMMETRIC_DEFAULT",
        purpose: "disabled under a table, which then switches away from it; re-enabled at once",
    },
    KeyPlan {
        label: "asymmetric",
        place: Place::Main,
        spec: "RSA_2048",
        purpose: "a key DynamoDB cannot use",
    },
    KeyPlan {
        label: "replica-a",
        place: Place::Replica,
        spec: "SYMMETRIC_DEFAULT",
        purpose: "the replica's first key",
    },
    KeyPlan {
        label: "replica-b",
        place: Place::Replica,
        spec: "SYMMETRIC_DEFAULT",
        purpose: "the replica's second key",
    },
];

/// How a table is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Owned,
    Managed,
    /// A customer managed key of `KEYS`, by label.
    Key(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TablePlan {
    pub label: &'static str,
    pub start: Start,
    /// A global table with a replica in `--replica-region` on key `replica-a`.
    pub global: bool,
    /// The most encryption changes AWS may accept on it (never above the quota).
    pub switches: u32,
    pub purpose: &'static str,
}

pub const TABLES: [TablePlan; 6] = [
    TablePlan {
        label: "resend",
        start: Start::Key("a"),
        global: false,
        switches: 3,
        purpose: "a -> b, with an identical and a different UpdateTable during it; then b re-sent by ARN, by key id \
                  and by alias",
    },
    TablePlan {
        label: "owned",
        start: Start::Owned,
        global: false,
        switches: 2,
        purpose: "{Enabled: false} on the owned key; owned -> a; a -> owned",
    },
    TablePlan {
        label: "managed",
        start: Start::Managed,
        global: false,
        switches: 1,
        purpose: "the asymmetric key; {Enabled: true} re-sent",
    },
    TablePlan {
        label: "disabled",
        start: Start::Key("disabled"),
        global: false,
        switches: 1,
        purpose: "its key disabled, then a switch away from it",
    },
    TablePlan {
        label: "quota",
        start: Start::Owned,
        global: false,
        switches: 4,
        purpose: "four switches, then a fifth to a missing key and one to a real key",
    },
    TablePlan {
        label: "global",
        start: Start::Key("a"),
        global: true,
        switches: 4,
        purpose: "SSE and ReplicaUpdates in one call; the replica's key by ReplicaUpdates and by SSESpecification \
                  in its region; AWS managed set on one replica",
    },
];

/// The alias (of key `b`) a run creates.
pub fn alias_name(run_id: &str) -> String {
    format!("alias/{TABLE_PREFIX}{run_id}/b")
}

/// An alias that never exists: a key DynamoDB cannot find.
pub fn missing_alias_name(run_id: &str) -> String {
    format!("alias/{TABLE_PREFIX}{run_id}/missing")
}

pub fn table_name(run_id: &str, label: &str) -> String {
    format!("{TABLE_PREFIX}{run_id}-{label}")
}

/// The description a run's key is created with: how cleanup finds a key whose id the run never recorded.
pub fn key_description(run_id: &str, label: &str) -> String {
    format!("tablecrypt calibrate run {run_id} key {label}")
}

/// What the run will do, printed before anything is created.
pub fn describe(
    run_id: &str,
    account_id: &str,
    region: &str,
    replica_region: &str,
    max_minutes: u64,
    manifest: &str,
) -> String {
    let keys_main = KEYS.iter().filter(|k| k.place == Place::Main).count();
    let keys_replica = KEYS.len() - keys_main;
    let switches: u32 = TABLES.iter().map(|t| t.switches).sum();
    let mut out = format!(
        "fleet-emulator calibrate: run {run_id} in account {account_id}, {region} (replica region {replica_region})\n\n\
         Creates:\n  {} DynamoDB tables (on-demand, no items), one of them global with a replica in {replica_region}:\n",
        TABLES.len()
    );
    for t in &TABLES {
        out.push_str(&format!(
            "    {} (at most {} switches of the {SWITCHES_PER_TABLE} AWS allows per 24 h): {}\n",
            table_name(run_id, t.label),
            t.switches,
            t.purpose
        ));
    }
    out.push_str(&format!(
        "  {} KMS keys ({keys_main} in {region}, {keys_replica} in {replica_region}):\n",
        KEYS.len()
    ));
    for k in &KEYS {
        out.push_str(&format!("    {} {}: {}\n", k.label, k.spec, k.purpose));
    }
    out.push_str(&format!(
        "  1 alias: {}\n\n\
         Does: at most {switches} accepted encryption changes, polling DescribeTable through each; every answer goes \
         into the report.\n\
         Takes: about 10-30 minutes on AWS (an encryption change takes about 20-25 s, a replica minutes); stops at \
         {max_minutes} minutes (--max-minutes) and cleans up.\n\
         Costs: KMS bills $1 per key-month, prorated hourly: {} keys for an hour is under $0.01, and under $1.40 \
         even if the {KEY_DELETION_DAYS}-day deletion wait were billed. On-demand tables with no items store nothing; \
         the few hundred requests are within the free tiers.\n\
         Leaves: the keys scheduled for deletion in {KEY_DELETION_DAYS} days (KMS's minimum wait); tables and the \
         alias deleted.\n\
         Cannot observe in that time (their switches keep the aws-observed values): a table turning \
         INACCESSIBLE_ENCRYPTION_CREDENTIALS 13-75 min after its key is disabled, its recovery after re-enabling, \
         archival after 7 days inaccessible, key deletion, another account's key (needs a second account).\n\
         Manifest: {manifest} (written before anything is created; `fleet-emulator calibrate --cleanup {manifest}` \
         finishes a broken run).\n",
        alias_name(run_id),
        KEYS.len()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_table_is_planned_above_the_switch_quota_and_names_stay_within_aws_limits() {
        for t in &TABLES {
            assert!(t.switches <= SWITCHES_PER_TABLE, "{}", t.label);
            let name = table_name("20261204t1630-ab12cd", t.label);
            assert!(name.len() <= 255 && name.len() >= 3, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            );
        }
        let alias = alias_name("20261204t1630-ab12cd");
        assert!(alias.len() <= 256);
        assert!(
            alias["alias/".len()..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c))
        );
    }

    #[test]
    fn the_plan_says_what_it_creates_costs_and_cannot_see() {
        let text = describe("r1", "123456789012", "eu-west-1", "us-east-1", 45, "m.json");
        for needle in [
            "6 DynamoDB tables",
            "6 KMS keys (4 in eu-west-1, 2 in us-east-1)",
            "stops at 45 minutes",
            "$1 per key-month",
            "scheduled for deletion in 7 days",
            "13-75 min",
            "--cleanup m.json",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }
}
