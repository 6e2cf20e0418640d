//! `fleet-emulator calibrate`: the canary a user runs once in a sandbox account. It creates throwaway keys and
//! tables, performs each operation whose answer AWS's documentation leaves uncertain (`crate::behaviour`),
//! watches every change, writes a behaviour profile the emulator loads (`crate::profile`) and a report with every
//! answer, and deletes everything it created, even when interrupted (`--cleanup MANIFEST`).

pub mod cleanup;
pub mod experiments;
mod global;
pub mod infer;
pub mod manifest;
pub mod plan;
pub mod report;
pub mod resources;
pub mod session;
pub mod watch;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::profile::{BehaviourProfile, Provenance};
use manifest::{Manifest, ManifestFile};
use session::{Access, Session};

/// The shortest DescribeTable poll interval: a run polls at most 7 tables at once, 70 calls a second at this
/// interval, for runs against the emulator; on AWS keep the default second (7 calls a second).
const MIN_POLL_SECONDS: f64 = 0.1;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The region of the tables and keys.
    #[arg(long, required_unless_present = "cleanup")]
    pub region: Option<String>,
    /// A second region, for the global table's replica.
    #[arg(long, required_unless_present = "cleanup")]
    pub replica_region: Option<String>,
    /// Where the manifest, the profile and the report are written.
    #[arg(long, default_value = ".")]
    pub output_dir: PathBuf,
    /// One endpoint for DynamoDB, KMS and STS in both regions (the fleet emulator); AWS's own endpoints when
    /// absent.
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// A role to assume in the sandbox account; the default credential chain's identity otherwise.
    #[arg(long)]
    pub role_arn: Option<String>,
    #[arg(long, requires = "role_arn")]
    pub external_id: Option<String>,
    /// The account is a sandbox: run even though it has tables this tool did not create. Must be the account
    /// the credentials act in.
    #[arg(long, value_name = "ACCOUNT_ID")]
    pub sandbox_account: Option<String>,
    /// Go ahead and create the resources the plan lists (without it, the plan is printed and nothing is done).
    #[arg(long)]
    pub yes: bool,
    /// Stop starting experiments after this many minutes and clean up (cleanup has its own 30-minute limit). An
    /// hour is twice a typical run; ten hours stays inside the 12 h an assumed role's session can last.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub max_minutes: u64,
    /// DescribeTable poll interval through a change, in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub poll_seconds: f64,
    /// Seconds to wait after DisableKey before asking DynamoDB to switch away from the key: KMS changes a key's
    /// state "within seconds" (eventual consistency); five is a margin, not a measurement.
    #[arg(long, default_value_t = 5.0)]
    pub key_settle_seconds: f64,
    /// Finish the cleanup of an interrupted run from its manifest (nothing else is done).
    #[arg(long, value_name = "MANIFEST", conflicts_with_all = ["region", "replica_region", "yes"])]
    pub cleanup: Option<PathBuf>,
}

/// What a finished run wrote.
#[derive(Debug)]
pub struct Outcome {
    pub profile: PathBuf,
    pub report: PathBuf,
    pub manifest: PathBuf,
    pub behaviour: BehaviourProfile,
    /// Resources cleanup could not remove (empty when it removed everything).
    pub left: Vec<String>,
}

fn seconds(value: f64, field: &str, min: f64) -> anyhow::Result<Duration> {
    if !value.is_finite() || !(min..=3600.0).contains(&value) {
        anyhow::bail!("--{field} must be between {min} and 3600 seconds (got {value})");
    }
    Ok(Duration::from_secs_f64(value))
}

fn endpoint_name(url: Option<&String>) -> String {
    url.cloned().unwrap_or_else(|| "AWS".to_owned())
}

/// A run id: when, and six random hex digits (two runs in one second still differ).
fn new_run_id() -> String {
    format!(
        "{}-{:06x}",
        Utc::now().format("%Y%m%dt%H%M%S"),
        rand::random::<u32>() & 0x00ff_ffff
    )
}

/// Refuses an account with tables this tool did not create, unless it was named as a sandbox.
async fn ensure_sandbox(session: &Session, options: &Options) -> anyhow::Result<()> {
    if let Some(sandbox) = &options.sandbox_account
        && *sandbox != session.account_id
    {
        anyhow::bail!(
            "--sandbox-account {sandbox}, but these credentials act in account {}: refusing",
            session.account_id
        );
    }
    let mut foreign = Vec::new();
    for at in [&session.main, &session.replica] {
        let mut start: Option<String> = None;
        loop {
            let result = at
                .dynamodb
                .list_tables()
                .set_exclusive_start_table_name(start.clone())
                .send()
                .await;
            let answer = session::answer_of(&result);
            let page = result
                .map_err(|_| anyhow::anyhow!("ListTables in {}: {}", at.region, answer.text()))?;
            foreign.extend(
                page.table_names()
                    .iter()
                    .filter(|n| !n.starts_with(plan::TABLE_PREFIX))
                    .map(|n| format!("{} ({})", n, at.region)),
            );
            start = page.last_evaluated_table_name().map(str::to_owned);
            if start.is_none() {
                break;
            }
        }
    }
    if !foreign.is_empty() && options.sandbox_account.is_none() {
        anyhow::bail!(
            "account {} has {} tables this tool did not create (first: {}): refusing to run in an account that may \
             not be a sandbox; pass --sandbox-account {} if it is one",
            session.account_id,
            foreign.len(),
            foreign[0],
            session.account_id
        );
    }
    Ok(())
}

/// Runs a calibration (or, with `--cleanup`, finishes one). `cancel` (Ctrl-C) stops the experiments; cleanup
/// still runs.
pub async fn run(options: Options, cancel: CancellationToken) -> anyhow::Result<Option<Outcome>> {
    let poll = seconds(options.poll_seconds, "poll-seconds", MIN_POLL_SECONDS)?;
    let key_settle = seconds(options.key_settle_seconds, "key-settle-seconds", 0.0)?;
    if let Some(path) = &options.cleanup {
        return cleanup_only(&options, path, poll, cancel)
            .await
            .map(|()| None);
    }
    let (Some(region), Some(replica_region)) = (&options.region, &options.replica_region) else {
        anyhow::bail!("--region and --replica-region are required");
    };
    if region == replica_region {
        anyhow::bail!("--replica-region must differ from --region (both {region})");
    }
    let access = Access {
        endpoint_url: options.endpoint_url.clone(),
        role_arn: options.role_arn.clone(),
        external_id: options.external_id.clone(),
    };
    let session = Session::connect(&access, region, replica_region, cancel).await?;
    let run_id = new_run_id();
    let file = |suffix: &str| {
        options
            .output_dir
            .join(format!("calibration-{run_id}.{suffix}"))
    };
    let manifest_path = file("manifest.json");
    let plan_text = plan::describe(
        &run_id,
        &session.account_id,
        region,
        replica_region,
        options.max_minutes,
        &manifest_path.display().to_string(),
    );
    println!("{plan_text}");
    if !options.yes {
        anyhow::bail!("nothing was created: pass --yes to create the resources above and run");
    }
    ensure_sandbox(&session, &options).await?;

    let started = Utc::now();
    let manifest = ManifestFile::create(
        manifest_path.clone(),
        Manifest {
            run_id: run_id.clone(),
            account_id: session.account_id.clone(),
            region: region.clone(),
            replica_region: replica_region.clone(),
            endpoint_url: options.endpoint_url.clone(),
            role_arn: options.role_arn.clone(),
            external_id: options.external_id.clone(),
            started,
            resources: Vec::new(),
            cleaned_up: None,
        },
    )?;
    session.set_deadline(Instant::now() + Duration::from_secs(options.max_minutes * 60));
    let run = resources::Run::new(&session, &manifest, &run_id, poll, key_settle);
    // No call is dropped half-way: Ctrl-C and the deadline stop new steps, so what exists is in the manifest.
    let outcome = async {
        run.create_resources().await?;
        run.experiments().await
    }
    .await;
    let cut_short = match (outcome, session.stopped()) {
        (Ok(()), _) => None,
        (Err(_), Some(why)) => Some(why.to_owned()),
        (Err(error), None) => Some(format!("{error:#}")),
    };
    if let Some(why) = &cut_short {
        eprintln!("calibration cut short ({why}); cleaning up");
    }
    let inference = infer::infer(&run.observations());
    let measured = Provenance {
        account_id: session.account_id.clone(),
        regions: vec![region.clone(), replica_region.clone()],
        endpoint: endpoint_name(options.endpoint_url.as_ref()),
        started,
        finished: Utc::now(),
        run_id: run_id.clone(),
        tool: format!("fleet-emulator {} calibrate", env!("CARGO_PKG_VERSION")),
    };
    let profile = BehaviourProfile {
        measured: measured.clone(),
        behaviour: inference.behaviour.clone(),
        undetermined: inference.undetermined.clone(),
        observations: inference.observations.clone(),
    };
    let profile_path = file("profile.yaml");
    // Written before cleanup (a crash in cleanup keeps it), but a failure to write it never skips cleanup.
    let written = profile
        .to_yaml()
        .and_then(|text| Ok(std::fs::write(&profile_path, text)?))
        .with_context(|| format!("failed to write {}", profile_path.display()));

    let summary = cleanup::cleanup(&session, &manifest, poll).await;
    let report_path = file("report.md");
    let report = report::render(
        &measured,
        &plan_text,
        &inference,
        cut_short.as_deref(),
        &summary.text(),
        &session.transcript(),
    );
    std::fs::write(&report_path, report)
        .with_context(|| format!("failed to write {}", report_path.display()))?;
    println!(
        "profile: {}\nreport: {}\ncleanup: {}",
        profile_path.display(),
        report_path.display(),
        summary.text()
    );
    if !summary.left.is_empty() {
        anyhow::bail!(
            "some resources were not removed; finish with `fleet-emulator calibrate --cleanup {}`",
            manifest_path.display()
        );
    }
    written?;
    if let Some(why) = cut_short {
        anyhow::bail!(
            "calibration cut short ({why}); the profile holds what was observed, undetermined: {}",
            profile.undetermined.join(", ")
        );
    }
    Ok(Some(Outcome {
        profile: profile_path,
        report: report_path,
        manifest: manifest_path,
        behaviour: profile,
        left: summary.left,
    }))
}

/// `--cleanup MANIFEST`: removes what an interrupted run left, in the account and at the endpoint the manifest
/// names.
async fn cleanup_only(
    options: &Options,
    path: &std::path::Path,
    poll: Duration,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let recorded = Manifest::load(path)?;
    if options.endpoint_url.is_some() && options.endpoint_url != recorded.endpoint_url {
        anyhow::bail!(
            "the run used the endpoint {}, not {}: refusing (the same account id at another endpoint is not the \
             same account)",
            endpoint_name(recorded.endpoint_url.as_ref()),
            endpoint_name(options.endpoint_url.as_ref())
        );
    }
    let access = Access {
        endpoint_url: recorded.endpoint_url.clone(),
        role_arn: options.role_arn.clone().or(recorded.role_arn.clone()),
        external_id: options.external_id.clone().or(recorded.external_id.clone()),
    };
    let session =
        Session::connect(&access, &recorded.region, &recorded.replica_region, cancel).await?;
    if session.account_id != recorded.account_id {
        anyhow::bail!(
            "the manifest is of account {}, but these credentials act in account {}: refusing",
            recorded.account_id,
            session.account_id
        );
    }
    let manifest = ManifestFile::create(path.to_path_buf(), recorded)?;
    let summary = cleanup::cleanup(&session, &manifest, poll).await;
    println!("cleanup of {}: {}", path.display(), summary.text());
    if !summary.left.is_empty() {
        anyhow::bail!("some resources were not removed; run --cleanup again once they can be");
    }
    Ok(())
}
