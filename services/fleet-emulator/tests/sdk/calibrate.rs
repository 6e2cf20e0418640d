//! `fleet-emulator calibrate`, the real binary, against the emulator: each run must write back exactly the
//! behaviour it ran under, refuse what is not a sandbox, and leave nothing behind, even killed at any step.
//! Judged from the emulator's own state and request log, read through the SDK and the admin API.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use fleet_emulator::RunningEmulator;
use fleet_emulator::behaviour::{
    Behaviour, ChangeTableStatus, CurrentKeyResend, GlobalSseScope, IdenticalUpdate, KeyRefusal,
    MixedUpdate, Profile, QuotaCheck, SseStatusNames, UnusableOldKey,
};
use fleet_emulator::calibrate::manifest::Manifest;
use fleet_emulator::profile::BehaviourProfile;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::AsyncBufReadExt;

use super::common::{HUB_KEY, HUB_SECRET, admin, assume, clients, start};

const ACCOUNT: &str = "111111111111";
const MAIN: &str = "eu-west-1";
const REPLICA: &str = "us-east-1";
/// How long each change shows as under way after the old key stops showing: several polls, so it is seen.
const SHOWN_CHANGING_SECONDS: f64 = 3.0;
const POLL_SECONDS: &str = "0.5";

fn fleet(behaviour: &Behaviour, extra_tables: &str) -> String {
    format!(
        "hub: {{account_id: \"000000000000\", access_key_id: {HUB_KEY}, secret_access_key: {HUB_SECRET}}}\n\
         settings: {{update_seconds: {}}}\n\
         behaviour: {}\n\
         accounts:\n  - account_id: \"{ACCOUNT}\"\n    roles: [{{name: calibrate}}, {{name: tablecrypt-member}}]\n    regions: [{MAIN}, {REPLICA}]\n{extra_tables}",
        behaviour.old_key_visible_seconds() + SHOWN_CHANGING_SECONDS,
        serde_json::to_string(behaviour).expect("json is yaml")
    )
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("calibrate-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The calibrate command against `emulator`, assuming the `calibrate` role with the hub's key.
fn calibrate(emulator: &RunningEmulator, dir: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleet-emulator"));
    command
        .arg("calibrate")
        .args(["--endpoint-url", &emulator.endpoint()])
        .args([
            "--role-arn",
            &format!("arn:aws:iam::{ACCOUNT}:role/calibrate"),
        ])
        .args(["--poll-seconds", POLL_SECONDS, "--key-settle-seconds", "0"])
        .arg("--output-dir")
        .arg(dir)
        .env("AWS_ACCESS_KEY_ID", HUB_KEY)
        .env("AWS_SECRET_ACCESS_KEY", HUB_SECRET)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .kill_on_drop(true);
    command
}

fn run_args(command: &mut tokio::process::Command) -> &mut tokio::process::Command {
    command.args(["--region", MAIN, "--replica-region", REPLICA, "--yes"])
}

fn find(dir: &Path, suffix: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(suffix))
}

/// What the account holds afterwards: tables in both regions, aliases not AWS's, and keys not pending deletion.
async fn leftovers(emulator: &RunningEmulator) -> Vec<String> {
    let credentials = assume(emulator, ACCOUNT, None).await.expect("assume");
    let mut left = Vec::new();
    for region in [MAIN, REPLICA] {
        let c = clients(emulator, credentials.clone(), region).await;
        let tables = c.dynamodb.list_tables().send().await.expect("list tables");
        left.extend(
            tables
                .table_names()
                .iter()
                .map(|t| format!("table {t} ({region})")),
        );
        let aliases = c.kms.list_aliases().send().await.expect("list aliases");
        left.extend(
            aliases
                .aliases()
                .iter()
                .filter_map(|a| a.alias_name())
                .filter(|n| !n.starts_with("alias/aws/"))
                .map(|n| format!("alias {n} ({region})")),
        );
        let keys = c.kms.list_keys().send().await.expect("list keys");
        for key in keys.keys() {
            let metadata = c
                .kms
                .describe_key()
                .key_id(key.key_id().expect("id"))
                .send()
                .await
                .expect("describe key")
                .key_metadata
                .expect("metadata");
            let customer =
                metadata.key_manager() == Some(&aws_sdk_kms::types::KeyManagerType::Customer);
            let pending =
                metadata.key_state() == Some(&aws_sdk_kms::types::KeyState::PendingDeletion);
            if customer && !pending {
                left.push(format!("key {} ({region})", metadata.key_id()));
            }
        }
    }
    left
}

/// Every switch drawn at random (`old_key_visible_seconds` in whole seconds, as calibration measures it).
fn draw(rng: &mut StdRng) -> Behaviour {
    fn pick<T: Copy>(rng: &mut StdRng, values: &[T]) -> Option<T> {
        Some(values[rng.random_range(0..values.len())])
    }
    Behaviour {
        profile: if rng.random_bool(0.5) {
            Profile::Optimistic
        } else {
            Profile::AwsObserved
        },
        sse_change_table_status: pick(
            rng,
            &[ChangeTableStatus::Updating, ChangeTableStatus::Active],
        ),
        old_key_visible_seconds: pick(rng, &[0.0, 1.0, 2.0]),
        sse_status_names: pick(
            rng,
            &[
                SseStatusNames::EnablingDisabling,
                SseStatusNames::UpdatingOnly,
            ],
        ),
        identical_update_during_change: pick(
            rng,
            &[IdenticalUpdate::Refused, IdenticalUpdate::Accepted],
        ),
        sse_with_other_changes: pick(rng, &[MixedUpdate::Accepted, MixedUpdate::Refused]),
        global_sse_scope: pick(
            rng,
            &[GlobalSseScope::OneRegion, GlobalSseScope::AllReplicas],
        ),
        unusable_old_key: pick(rng, &[UnusableOldKey::Accepted, UnusableOldKey::Refused]),
        current_key_resend: pick(
            rng,
            &[
                CurrentKeyResend::AlwaysRefused,
                CurrentKeyResend::RefusedByArnOnly,
            ],
        ),
        quota_check: pick(
            rng,
            &[
                QuotaCheck::AfterKeyValidation,
                QuotaCheck::BeforeKeyValidation,
            ],
        ),
        key_refusal: pick(rng, &[KeyRefusal::Validation, KeyRefusal::AsObserved]),
    }
}

/// The seed of a test's random draws: `CALIBRATE_SEED` to replay a failure, else fixed; printed either way.
fn seed(default: u64) -> u64 {
    let seed = std::env::var("CALIBRATE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("seed {seed} (replay with CALIBRATE_SEED={seed})");
    seed
}

/// A calibration run started against `emulator`, and its stderr's lines (`step N: ...` as it goes).
fn start_run(
    emulator: &RunningEmulator,
    dir: &Path,
) -> (
    tokio::process::Child,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
) {
    let mut child = run_args(&mut calibrate(emulator, dir))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("calibrate starts");
    let lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    (child, lines)
}

/// `--cleanup MANIFEST` against `emulator`.
async fn run_cleanup(
    emulator: &RunningEmulator,
    dir: &Path,
    manifest: &Path,
) -> std::process::Output {
    calibrate(emulator, dir)
        .arg("--cleanup")
        .arg(manifest)
        .output()
        .await
        .expect("cleanup runs")
}

/// A whole calibration run against `emulator` that must succeed: the profile it wrote into `dir`.
async fn calibrate_to_the_end(emulator: &RunningEmulator, dir: &Path) -> BehaviourProfile {
    let out = run_args(&mut calibrate(emulator, dir))
        .output()
        .await
        .expect("calibrate runs");
    assert!(
        out.status.success(),
        "calibrate failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    BehaviourProfile::load(&find(dir, ".profile.yaml").expect("profile written"))
        .expect("profile loads")
}

/// Calibrates a fresh emulator running under `behaviour`; returns what the run wrote and what it left.
async fn round_trip(behaviour: Behaviour) -> (Behaviour, BehaviourProfile, Vec<String>) {
    let emulator = start(&fleet(&behaviour, "")).await;
    let dir = scratch_dir();
    let profile = calibrate_to_the_end(&emulator, &dir).await;
    assert!(find(&dir, ".report.md").is_some(), "report written");
    let left = leftovers(&emulator).await;
    let _ = std::fs::remove_dir_all(&dir);
    (behaviour, profile, left)
}

/// The switches only: a calibrated profile names `aws-observed` as the base of what it could not decide.
fn switches(behaviour: &Behaviour) -> Behaviour {
    Behaviour {
        profile: Profile::AwsObserved,
        ..behaviour.resolved()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calibration_writes_back_each_named_profile_and_20_seeded_combinations_and_leaves_nothing()
{
    let seed = seed(20261204);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut runs = vec![Behaviour::default(), Behaviour::aws_observed()];
    runs.extend((0..20).map(|_| draw(&mut rng)));
    let mut set = tokio::task::JoinSet::new();
    for (n, behaviour) in runs.into_iter().enumerate() {
        eprintln!(
            "run {n}: {}",
            serde_json::to_string(&behaviour).expect("json")
        );
        set.spawn(async move { (n, round_trip(behaviour).await) });
    }
    let mut failures = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (n, (ran_under, profile, left)) = joined.expect("run finished");
        if switches(&profile.behaviour) != switches(&ran_under) || !profile.undetermined.is_empty()
        {
            failures.push(format!(
                "run {n}: ran under {:?}\n wrote {:?} (undetermined {:?})",
                switches(&ran_under),
                profile.behaviour,
                profile.undetermined
            ));
        }
        if !left.is_empty() {
            failures.push(format!("run {n} left {left:?}"));
        }
        assert_eq!(profile.measured.account_id, ACCOUNT);
        assert_eq!(profile.measured.regions, [MAIN, REPLICA]);
        assert!(profile.measured.endpoint.starts_with("http://127.0.0.1:"));
    }
    assert!(failures.is_empty(), "seed {seed}:\n{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_at_a_random_step_leaves_nothing_after_cleanup() {
    let seed = seed(7);
    let mut rng = StdRng::seed_from_u64(seed);
    // A whole run makes about 52 steps: the kill lands among the creates, the experiments or the cleanup.
    let steps: Vec<u64> = vec![
        rng.random_range(1..=8),
        rng.random_range(9..=30),
        rng.random_range(31..=50),
    ];
    let mut set = tokio::task::JoinSet::new();
    for step in steps {
        set.spawn(async move {
            let emulator = start(&fleet(&Behaviour::aws_observed(), "")).await;
            let dir = scratch_dir();
            let (mut child, mut lines) = start_run(&emulator, &dir);
            let marker = format!("step {step}:");
            let mut reached = false;
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with(&marker) {
                    reached = true;
                    break;
                }
            }
            child.start_kill().expect("kill -9");
            let _ = child.wait().await;
            assert!(reached, "the run ended before step {step}");
            let manifest = find(&dir, ".manifest.json").expect("manifest written before step 1");
            let out = run_cleanup(&emulator, &dir, &manifest).await;
            assert!(
                out.status.success(),
                "cleanup after a kill at step {step} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let left = leftovers(&emulator).await;
            assert!(
                left.is_empty(),
                "killed at step {step}, cleanup left {left:?}"
            );
            let recorded = Manifest::load(&manifest).expect("manifest");
            assert!(recorded.cleaned_up.is_some(), "{recorded:?}");
            // A second cleanup finds nothing to do and says so.
            let again = run_cleanup(&emulator, &dir, &manifest).await;
            assert!(again.status.success());
            let _ = std::fs::remove_dir_all(&dir);
            step
        });
    }
    while let Some(joined) = set.join_next().await {
        let step = joined.expect("seed {seed}: a killed run was not cleaned up");
        eprintln!("killed at step {step}: nothing left");
    }
}

/// Operations that create or change something, from the emulator's request log.
async fn writes(emulator: &RunningEmulator) -> Vec<String> {
    let (status, body) = admin(emulator, "GET", "/requests", "").await;
    assert_eq!(status, 200, "{body}");
    let log: serde_json::Value = serde_json::from_str(&body).expect("json");
    log.as_array()
        .or_else(|| log["requests"].as_array())
        .expect("a list of requests")
        .iter()
        .filter_map(|r| r["operation"].as_str())
        .filter(|op| {
            [
                "Create", "Update", "Delete", "Disable", "Enable", "Schedule", "Tag",
            ]
            .iter()
            .any(|verb| op.starts_with(verb))
        })
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn it_refuses_without_yes_and_in_an_account_that_is_not_a_sandbox() {
    let foreign = format!("    tables: [{{name: payments, region: {MAIN}}}]\n");
    let emulator = start(&fleet(&Behaviour::aws_observed(), &foreign)).await;
    let dir = scratch_dir();

    let out = calibrate(&emulator, &dir)
        .args(["--region", MAIN, "--replica-region", REPLICA])
        .output()
        .await
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stdout.contains("Creates:") && stdout.contains("Costs:"),
        "{stdout}"
    );
    assert!(stderr.contains("pass --yes"), "{stderr}");

    let out = run_args(&mut calibrate(&emulator, &dir))
        .output()
        .await
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("1 tables this tool did not create (first: payments (eu-west-1))")
            && stderr.contains(&format!("--sandbox-account {ACCOUNT}")),
        "{stderr}"
    );

    let out = run_args(&mut calibrate(&emulator, &dir))
        .args(["--sandbox-account", "222222222222"])
        .output()
        .await
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("these credentials act in account 111111111111"),
        "{stderr}"
    );

    let out = run_args(&mut calibrate(&emulator, &dir))
        .args(["--replica-region", MAIN])
        .output()
        .await
        .expect("runs");
    assert!(!out.status.success());

    assert_eq!(writes(&emulator).await, Vec::<String>::new());
    assert!(
        find(&dir, ".manifest.json").is_none(),
        "nothing was started"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn cleanup_never_touches_a_table_of_the_same_name_that_is_not_the_runs() {
    let emulator = start(&fleet(&Behaviour::aws_observed(), "")).await;
    let dir = scratch_dir();
    let run_id = "20261204t000000-abcdef";
    let name = format!("tc-calibrate-{run_id}-owned");
    let credentials = assume(&emulator, ACCOUNT, None).await.expect("assume");
    let c = clients(&emulator, credentials, MAIN).await;
    c.dynamodb
        .create_table()
        .table_name(&name)
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .tags(
            aws_sdk_dynamodb::types::Tag::builder()
                .key("tablecrypt-calibrate-run")
                .value("another-run")
                .build()
                .expect("tag"),
        )
        .send()
        .await
        .expect("create");
    // Two keys: one with the run's description whose id the run never recorded (killed between CreateKey and
    // the manifest), and one of someone else.
    let description = format!("tablecrypt calibrate run {run_id} key a");
    let mut ids = Vec::new();
    for text in [description.as_str(), "payments key"] {
        let key = c
            .kms
            .create_key()
            .description(text)
            .send()
            .await
            .expect("create key");
        ids.push(key.key_metadata.expect("metadata").key_id);
    }
    // A table of the run that a kill left unrecorded (created: false), which cleanup must still delete.
    let unrecorded = format!("tc-calibrate-{run_id}-quota");
    c.dynamodb
        .create_table()
        .table_name(&unrecorded)
        .tags(
            aws_sdk_dynamodb::types::Tag::builder()
                .key("tablecrypt-calibrate-run")
                .value(run_id)
                .build()
                .expect("tag"),
        )
        .send()
        .await
        .expect("create");
    let manifest = dir.join("m.json");
    let mut recorded = serde_json::json!({
        "run_id": run_id, "account_id": ACCOUNT, "region": MAIN, "replica_region": REPLICA,
        "started": "2026-12-04T00:00:00Z",
        "resources": [
            {"kind": "table", "region": MAIN, "name": name, "created": true},
            {"kind": "table", "region": MAIN, "name": unrecorded, "created": false},
            {"kind": "key", "region": MAIN, "name": description, "created": false},
            {"kind": "key", "region": MAIN, "name": "tablecrypt calibrate run x key b", "id": ids[1], "created": true},
        ],
    });
    // A manifest of a run against AWS is not cleaned up at another endpoint with the same account id.
    std::fs::write(&manifest, recorded.to_string()).expect("manifest");
    let out = run_cleanup(&emulator, &dir, &manifest).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the run used the endpoint AWS, not http://127.0.0.1:"),
        "{stderr}"
    );
    recorded["endpoint_url"] = serde_json::json!(emulator.endpoint());
    std::fs::write(&manifest, recorded.to_string()).expect("manifest");
    let out = run_cleanup(&emulator, &dir, &manifest).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("does not carry the tag tablecrypt-calibrate-run=20261204t000000-abcdef"),
        "{stdout}{stderr}"
    );
    assert!(
        stdout.contains(
            "its description is not \"tablecrypt calibrate run x key b\": not this run's key"
        ),
        "{stdout}"
    );
    assert_eq!(
        writes(&emulator).await,
        [
            "CreateTable",
            "CreateKey",
            "CreateKey",
            "CreateTable",
            "DeleteTable",
            "ScheduleKeyDeletion"
        ]
    );
    let state = |id: String| {
        let kms = c.kms.clone();
        async move {
            kms.describe_key()
                .key_id(id)
                .send()
                .await
                .expect("describe")
                .key_metadata
                .expect("metadata")
                .key_state
                .expect("state")
        }
    };
    assert_eq!(
        state(ids[0].clone()).await,
        aws_sdk_kms::types::KeyState::PendingDeletion,
        "the run's unrecorded key is found by its description"
    );
    assert_eq!(
        state(ids[1].clone()).await,
        aws_sdk_kms::types::KeyState::Enabled
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn ctrl_c_stops_the_experiments_and_cleans_up_before_exiting() {
    let emulator = start(&fleet(&Behaviour::aws_observed(), "")).await;
    let dir = scratch_dir();
    let (mut child, mut lines) = start_run(&emulator, &dir);
    let mut seen = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        let interrupt = line.starts_with("step 20:");
        seen.push(line);
        if interrupt {
            let pid = child.id().expect("running").to_string();
            let status = std::process::Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .expect("kill -INT");
            assert!(status.success());
        }
    }
    let status = child.wait().await.expect("exits");
    let text = seen.join("\n");
    assert!(
        !status.success(),
        "an interrupted run does not claim success"
    );
    assert!(
        text.contains("cut short (interrupted); cleaning up"),
        "{text}"
    );
    assert!(text.contains("ScheduleKeyDeletion"), "{text}");
    assert_eq!(leftovers(&emulator).await, Vec::<String>::new());
    let profile = BehaviourProfile::load(&find(&dir, ".profile.yaml").expect("profile written"))
        .expect("loads");
    assert!(
        !profile.undetermined.is_empty(),
        "a run cut short names what it could not decide"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emulator_loaded_from_a_calibrated_profile_calibrates_back_to_it() {
    let seed = seed(42);
    let mut behaviour = draw(&mut StdRng::seed_from_u64(seed));
    behaviour.profile = Profile::AwsObserved;
    let dir = scratch_dir();
    let profile = BehaviourProfile {
        measured: fleet_emulator::profile::Provenance {
            account_id: "123456789012".to_owned(),
            regions: vec![MAIN.to_owned(), REPLICA.to_owned()],
            endpoint: "AWS".to_owned(),
            started: "2026-12-01T10:00:00Z".parse().expect("time"),
            finished: "2026-12-01T10:30:00Z".parse().expect("time"),
            run_id: "20261201t100000-000001".to_owned(),
            tool: "fleet-emulator calibrate".to_owned(),
        },
        behaviour: behaviour.resolved(),
        undetermined: vec![],
        observations: Default::default(),
    };
    // The profile was measured with the old key visible 8 s; the fleet file's own switch stays over it.
    let mut measured = profile.clone();
    measured.behaviour.old_key_visible_seconds = Some(8.0);
    std::fs::create_dir_all(dir.join("profiles")).expect("dir");
    std::fs::write(
        dir.join("profiles/sandbox.yaml"),
        measured.to_yaml().expect("yaml"),
    )
    .expect("write");
    let fleet_text = fleet(&behaviour, "").replace(
        &format!(
            "behaviour: {}",
            serde_json::to_string(&behaviour).expect("json")
        ),
        &format!(
            "behaviour_profile: profiles/sandbox.yaml\nbehaviour: {{old_key_visible_seconds: {}}}",
            behaviour.old_key_visible_seconds()
        ),
    );
    assert!(fleet_text.contains("behaviour_profile"), "{fleet_text}");
    std::fs::write(dir.join("fleet.yaml"), fleet_text).expect("write");
    let spec =
        fleet_emulator::FleetSpec::from_file(&dir.join("fleet.yaml"), None).expect("fleet loads");
    let emulator = fleet_emulator::Emulator::spawn(spec).await.expect("starts");
    let (status, body) = admin(&emulator, "GET", "/settings", "").await;
    assert_eq!(status, 200);
    let settings: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        settings["behaviour_measured"]["account_id"], "123456789012",
        "{body}"
    );
    assert_eq!(
        settings["behaviour"],
        serde_json::to_value(behaviour.resolved()).expect("json"),
        "{body}"
    );

    let out_dir = scratch_dir();
    let written = calibrate_to_the_end(&emulator, &out_dir).await;
    assert_eq!(
        switches(&written.behaviour),
        switches(&behaviour),
        "seed {seed}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&out_dir);
}
