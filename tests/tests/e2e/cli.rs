//! The `tablecrypt` CLI against the real server and the fleet emulator: the batch key migration with --yes, JSON
//! output parsed, exit codes, accounts import, the request lifecycle with Ctrl-C detaching, TLS and tokens.

use std::time::Duration;

use serde_json::Value;
use tablecrypt_proto::v1 as pb;
use tablecrypt_tests::changes::*;
use tablecrypt_tests::cli::{self, CliRun};
use tablecrypt_tests::security::{Pki, tokens_and_grants};
use tablecrypt_tests::{TestApp, TestDatabase};

fn server(app: &TestApp) -> String {
    format!("http://{}", app.addr)
}

fn names(tables: &Value) -> Vec<String> {
    tables["tables"]
        .as_array()
        .expect("tables array")
        .iter()
        .map(|t| t["tableName"].as_str().expect("tableName").to_owned())
        .collect()
}

/// The live key of a payments/eu-west-1 table, read through the CLI (GetTableEncryption: DescribeTable in AWS).
async fn live_key_via_cli(url: &str, table: &str) -> String {
    let run = cli::run(url, &["tables", "get", PAYMENTS, EU, table, "-o", "json"])
        .await
        .expect_code(0);
    run.json()["kmsKeyArn"]
        .as_str()
        .expect("kmsKeyArn")
        .to_owned()
}

#[tokio::test]
async fn migrate_with_yes_moves_the_tables_and_rollback_brings_them_back() {
    let s = setup("").await;
    let url = server(&s.app);
    let key_a = payments_key(KEY_A);
    let key_b = payments_key(KEY_B);
    let migrate = [
        "migrate",
        "--account",
        PAYMENTS,
        "--prefix",
        "bulk-",
        "--from-key",
        key_a.as_str(),
        "--to-key",
        "alias/b",
        "--description",
        "retire key A",
    ];

    // The inventory, through the CLI.
    let bulk = cli::run(
        &url,
        &[
            "tables",
            "list",
            "--account",
            PAYMENTS,
            "--prefix",
            "bulk-",
            "-o",
            "json",
        ],
    )
    .await
    .expect_code(0);
    let bulk = names(&bulk.json());
    assert_eq!(bulk.len(), BULK);

    // A dry run shows the plan and stores nothing.
    let dry = cli::run(&url, &[&migrate[..], &["--dry-run", "-o", "json"]].concat())
        .await
        .expect_code(0);
    let plan = dry.json();
    assert_eq!(plan["plan"]["summary"]["change"], BULK as i64, "{plan}");
    assert_eq!(plan["plan"]["items"].as_array().expect("items").len(), BULK);
    assert_eq!(stored_requests(&s.app).await, 0);

    // The same plan as a table for people: counts per account-region.
    let text = cli::run(&url, &[&migrate[..], &["--dry-run"]].concat())
        .await
        .expect_code(0);
    assert!(
        text.stdout
            .contains(&format!("Plan: {BULK} tables to change")),
        "{text:?}"
    );
    assert!(
        text.stdout.contains(PAYMENTS) && text.stdout.contains("TOTAL"),
        "{text:?}"
    );

    // No terminal to confirm on and no --yes: refused as bad usage, nothing created.
    let unconfirmed = cli::run(&url, &migrate).await.expect_code(2);
    assert!(unconfirmed.stderr.contains("--yes"), "{unconfirmed:?}");
    assert_eq!(stored_requests(&s.app).await, 0);

    // --yes: created, watched to the end, summarized as JSON.
    let done = cli::run(
        &url,
        &[&migrate[..], &["--yes", "-o", "json", "--caller", "alice"]].concat(),
    )
    .await
    .expect_code(0);
    let report = done.json();
    let request = &report["changeRequest"];
    assert_eq!(
        request["state"], "CHANGE_REQUEST_STATE_SUCCEEDED",
        "{report}"
    );
    assert_eq!(request["counts"]["succeeded"], BULK as i64);
    assert_eq!(request["counts"]["failed"], 0);
    assert_eq!(request["createdBy"], "alice");
    assert_eq!(report["failedItems"], Value::Array(Vec::new()));
    assert_eq!(report["plan"]["summary"]["change"], BULK as i64);
    let id = request["changeRequestId"].as_str().expect("id").to_owned();
    // What AWS reports for every table: key B.
    for table in &bulk {
        assert_eq!(live_key_via_cli(&url, table).await, key_b, "{table}");
    }
    // The history, through the CLI.
    let history = cli::run(&url, &["history", "--request", &id, "-o", "json"])
        .await
        .expect_code(0)
        .json();
    let rotations = history["rotations"].as_array().expect("rotations");
    assert_eq!(rotations.len(), BULK);
    for rotation in rotations {
        assert_eq!(rotation["fromKmsKeyArn"], key_a.as_str());
        assert_eq!(rotation["toKmsKeyArn"], key_b.as_str());
        assert_eq!(rotation["requestedBy"], "alice");
    }
    // Keys by alias, as the scan listed them: in the history's JSON, its table, and in full with -o wide.
    assert_eq!(
        history["keyAliases"][key_b.as_str()],
        "alias/b",
        "{history}"
    );
    let table = cli::run(&url, &["history", "--request", &id])
        .await
        .expect_code(0);
    let row = table
        .stdout
        .lines()
        .find(|l| l.contains("bulk-"))
        .expect("a row");
    assert!(
        row.contains("alias/a") && row.contains("alias/b") && !row.contains("arn:aws:kms"),
        "{row}"
    );
    assert!(
        table.stdout.lines().all(|l| l.chars().count() <= 120),
        "{table:?}"
    );
    let items = cli::run(&url, &["requests", "get", &id, "--items"])
        .await
        .expect_code(0);
    assert!(items.stdout.contains("alias/b"), "{items:?}");
    assert!(
        items.stdout.lines().all(|l| l.chars().count() <= 120),
        "{items:?}"
    );
    let wide = cli::run(&url, &["history", "--request", &id, "-o", "wide"])
        .await
        .expect_code(0);
    assert!(
        wide.stdout.contains(&format!("alias/b {key_b}")),
        "{wide:?}"
    );
    let tables = cli::run(
        &url,
        &["tables", "list", "--account", PAYMENTS, "--prefix", "bulk-"],
    )
    .await
    .expect_code(0);
    assert!(
        tables
            .stdout
            .lines()
            .skip(1)
            .all(|l| l.contains("alias/b") && l.len() <= 120),
        "{tables:?}"
    );
    // The request list shows it, in both formats.
    let listed = cli::run(&url, &["requests", "list", "-o", "json"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(listed["changeRequests"][0]["changeRequestId"], id.as_str());
    let listed = cli::run(&url, &["requests", "list"]).await.expect_code(0);
    assert!(
        listed.stdout.contains(&id) && listed.stdout.contains("SUCCEEDED"),
        "{listed:?}"
    );
    // Key A is no longer used by the bulk tables (orders still is).
    let usage = cli::run(&url, &["keys", "usage", &key_a, "-o", "json"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(names(&usage), vec!["orders".to_owned()], "{usage}");

    // Rollback, as a second command: every bulk table back on key A.
    let back = cli::run(&url, &["requests", "rollback", &id, "--yes", "-o", "json"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(
        back["changeRequest"]["state"],
        "CHANGE_REQUEST_STATE_SUCCEEDED"
    );
    assert_eq!(back["changeRequest"]["rollbackOf"], id.as_str());
    for table in &bulk {
        assert_eq!(live_key_via_cli(&url, table).await, key_a, "{table}");
    }
}

#[tokio::test]
async fn exit_codes_say_what_went_wrong() {
    let s = setup("").await;
    let url = server(&s.app);

    // 3: nothing listens there.
    let unreachable = cli::run("http://127.0.0.1:1", &["accounts", "list"])
        .await
        .expect_code(3);
    assert!(
        unreachable.stderr.contains("cannot reach"),
        "{unreachable:?}"
    );
    // --version: the CLI's and the server's (asked without credentials); the CLI's even when the server is down.
    let version = cli::run(&url, &["--version"]).await.expect_code(0);
    let ours = env!("CARGO_PKG_VERSION");
    assert!(
        version.stdout.contains(&format!("tablecrypt {ours}"))
            && version.stdout.contains(&format!("server {ours} at {url}")),
        "{version:?}"
    );
    let alone = cli::run("http://127.0.0.1:1", &["-V"]).await.expect_code(0);
    assert!(alone.stdout.contains("not reached"), "{alone:?}");
    // 2: bad flags (clap), and input the server refuses, with the field named.
    cli::run(&url, &["migrate", "--no-such-flag"])
        .await
        .expect_code(2);
    cli::run(&url, &["migrate", "--account", PAYMENTS, "--yes"])
        .await
        .expect_code(2);
    let invalid = cli::run(
        &url,
        &[
            "migrate",
            "--account",
            "1234",
            "--to-key",
            "alias/b",
            "--yes",
        ],
    )
    .await
    .expect_code(2);
    assert!(
        invalid.stderr.contains("INVALID_ARGUMENT") && invalid.stderr.contains("account_ids"),
        "{invalid:?}"
    );
    assert_eq!(stored_requests(&s.app).await, 0);
    // 1: the operation failed (no such request).
    let missing = cli::run(
        &url,
        &["requests", "get", "6f1c1f3e-8f1e-4a55-9a55-000000000000"],
    )
    .await
    .expect_code(1);
    assert!(missing.stderr.contains("NOT_FOUND"), "{missing:?}");
    // 4: AWS refused the member role (sandbox refuses AssumeRole), not tablecrypt the caller: in a verification,
    // of one account or all of them, and in a live read.
    let verify = cli::run(&url, &["accounts", "verify", SANDBOX, "-o", "json"])
        .await
        .expect_code(4);
    assert_eq!(verify.json()["regions"][0]["ok"], false);
    cli::run(&url, &["accounts", "verify", PAYMENTS])
        .await
        .expect_code(0);
    let all = cli::run(&url, &["accounts", "verify", "--all"])
        .await
        .expect_code(4);
    assert!(
        all.stdout
            .contains("3 account(s) verified: 2 ok, 1 with failures"),
        "{all:?}"
    );
    assert!(
        all.stdout
            .lines()
            .any(|l| l.starts_with(SANDBOX) && l.contains("ACCESS_DENIED")),
        "{all:?}"
    );
    cli::run(&url, &["accounts", "verify", "--selector", "team=payments"])
        .await
        .expect_code(0);
    let typo = cli::run(&url, &["accounts", "verify", "--selector", "tema=payments"])
        .await
        .expect_code(1);
    assert!(
        typo.stderr.contains("no account matches `tema=payments`"),
        "{typo:?}"
    );
    let live = cli::run(&url, &["tables", "get", SANDBOX, EU, "sandbox-0"])
        .await
        .expect_code(4);
    assert!(live.stderr.contains("PERMISSION_DENIED"), "{live:?}");
    // 1: a scan that reaches the sandbox (some regions failed).
    let scan = cli::run(&url, &["inventory", "refresh", "-o", "json"])
        .await
        .expect_code(1);
    assert_eq!(scan.json()["state"], "PARTIALLY_FAILED", "{scan:?}");
    let scan = cli::run(
        &url,
        &["inventory", "refresh", "--account", PAYMENTS, "-o", "json"],
    )
    .await
    .expect_code(0);
    assert_eq!(scan.json()["state"], "SUCCEEDED", "{scan:?}");

    // 1: a migration with a failed table (the search account's role lost UpdateTable after planning).
    let (status, body) = s
        .emulator
        .admin(
            "POST",
            "/faults",
            &format!(
                r#"{{"type": "access_denied", "operation": "UpdateTable", "account_id": "{SEARCH}"}}"#
            ),
        )
        .await
        .expect("admin API");
    assert_eq!(status, 200, "{body}");
    let failed = cli::run(
        &url,
        &[
            "migrate",
            "--account",
            SEARCH,
            "--to-mode",
            "aws-managed",
            "--yes",
            "-o",
            "json",
        ],
    )
    .await
    .expect_code(1);
    let report = failed.json();
    assert_eq!(
        report["changeRequest"]["state"], "CHANGE_REQUEST_STATE_FAILED",
        "{report}"
    );
    assert_eq!(report["failedItems"][0]["tableName"], "orders");
    assert_eq!(
        report["failedItems"][0]["reason"],
        "ITEM_REASON_ACCESS_DENIED"
    );
    assert!(failed.stderr.contains("failed"), "{failed:?}");
}

#[tokio::test]
async fn accounts_import_checks_the_whole_file_first_then_registers_and_updates() {
    let db = TestDatabase::create().await.expect("db");
    // A low per-caller rate limit: the CLI backs off on RESOURCE_EXHAUSTED instead of failing.
    let app = TestApp::spawn_with(&db, "caller_rate_limit = 3")
        .await
        .expect("server");
    let url = server(&app);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("accounts.yaml");
    let account = |id: &str, team: &str| {
        format!(
            "  - account_id: \"{id}\"\n    role_arn: arn:aws:iam::{id}:role/tablecrypt-member\n    regions: [eu-west-1]\n    labels: {{team: {team}}}\n"
        )
    };
    let ids = [
        "100000000001",
        "100000000002",
        "100000000003",
        "100000000004",
        "100000000005",
    ];
    let good: String = ids.iter().map(|id| account(id, "payments")).collect();

    // A bad entry anywhere: exit 2, every problem named by its path, nothing registered.
    let bad = format!(
        "accounts:\n{good}  - account_id: \"100000000009\"\n    role_arn: arn:aws:iam::999999999999:role/x\n    regions: [mars-1]\n"
    );
    std::fs::write(&file, bad).expect("write");
    let path = file.to_str().expect("utf-8 path");
    let refused = cli::run(&url, &["accounts", "import", path])
        .await
        .expect_code(2);
    assert!(
        refused.stderr.contains("accounts[5].regions[0]"),
        "{refused:?}"
    );
    let listed = cli::run(&url, &["accounts", "list", "-o", "json"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(listed["accounts"], Value::Array(Vec::new()), "{listed}");

    // The good file: every account registered.
    std::fs::write(&file, format!("accounts:\n{good}")).expect("write");
    let imported = cli::run(&url, &["accounts", "import", path, "-o", "json"])
        .await
        .expect_code(0)
        .json();
    let actions: Vec<&str> = imported["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .map(|a| a["action"].as_str().expect("action"))
        .collect();
    assert_eq!(actions, vec!["registered"; ids.len()], "{imported}");

    // Changed labels on one account: a dry run says so and changes nothing; the import updates only it.
    let changed: String = ids
        .iter()
        .enumerate()
        .map(|(i, id)| account(id, if i == 0 { "search" } else { "payments" }))
        .collect();
    std::fs::write(&file, format!("accounts:\n{changed}")).expect("write");
    let dry = cli::run(
        &url,
        &["accounts", "import", path, "--dry-run", "-o", "json"],
    )
    .await
    .expect_code(0)
    .json();
    assert_eq!(dry["accounts"][0]["action"], "would update", "{dry}");
    let second = cli::run(&url, &["accounts", "import", path, "-o", "json"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(second["accounts"][0]["action"], "updated");
    assert_eq!(
        second["accounts"][0]["changedFields"],
        serde_json::json!(["labels"])
    );
    assert_eq!(second["accounts"][1]["action"], "unchanged");
    let listed = cli::run(
        &url,
        &[
            "accounts",
            "list",
            "--selector",
            "team=search",
            "-o",
            "json",
        ],
    )
    .await
    .expect_code(0)
    .json();
    assert_eq!(listed["accounts"][0]["accountId"], ids[0], "{listed}");
    assert_eq!(listed["accounts"].as_array().expect("list").len(), 1);

    // External ids, never shown back, are compared by the server: a dry run is a drift check.
    let with_external_id = |external_id: &str| {
        let mut text = format!("accounts:\n{changed}");
        text.push_str(&format!("    external_id: {external_id}\n"));
        text
    };
    std::fs::write(&file, with_external_id("first-secret")).expect("write");
    let set = cli::run(&url, &["accounts", "import", path, "-o", "json"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(
        set["accounts"][4]["changedFields"],
        serde_json::json!(["external_id"]),
        "{set}"
    );
    let action_of_last = |run: CliRun| run.json()["accounts"][4]["action"].clone();
    let again = cli::run(
        &url,
        &["accounts", "import", path, "--dry-run", "-o", "json"],
    )
    .await
    .expect_code(0);
    assert_eq!(
        action_of_last(again),
        "unchanged",
        "the same external id is no drift"
    );
    let again = cli::run(&url, &["accounts", "import", path, "-o", "json"])
        .await
        .expect_code(0);
    assert_eq!(action_of_last(again), "unchanged");
    cli::run(&url, &["accounts", "import", path, "--check"])
        .await
        .expect_code(0);
    std::fs::write(&file, with_external_id("rotated-secret")).expect("write");
    let drift = cli::run(
        &url,
        &["accounts", "import", path, "--dry-run", "-o", "json"],
    )
    .await
    .expect_code(0)
    .json();
    assert_eq!(drift["accounts"][4]["action"], "would update", "{drift}");
    let check = cli::run(&url, &["accounts", "import", path, "--check"])
        .await
        .expect_code(1);
    assert!(check.stderr.contains("1 of 5 accounts differ"), "{check:?}");
    assert_eq!(
        drift["accounts"][4]["changedFields"],
        serde_json::json!(["external_id"])
    );
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn requests_commands_drive_the_lifecycle_and_ctrl_c_only_detaches() {
    let s = setup("approval_required = true").await;
    let url = server(&s.app);
    let create = |caller: &'static str| {
        let url = url.clone();
        async move {
            cli::run(
                &url,
                &[
                    "migrate",
                    "--account",
                    PAYMENTS,
                    "--prefix",
                    "bulk-",
                    "--to-key",
                    "alias/b",
                    "--rate",
                    "1",
                    "--max-in-flight",
                    "1",
                    "--yes",
                    "--no-watch",
                    "-o",
                    "json",
                    "--caller",
                    caller,
                ],
            )
            .await
        }
    };
    let created = create("alice").await.expect_code(0).json();
    assert_eq!(
        created["changeRequest"]["state"],
        "CHANGE_REQUEST_STATE_PENDING_APPROVAL"
    );
    let id = created["changeRequest"]["changeRequestId"]
        .as_str()
        .expect("id")
        .to_owned();
    let request = |args: &[&str]| {
        let mut all = vec!["requests"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        all.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let url = url.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli::run(&url, &args).await
        }
    };

    // The creator may not approve (PERMISSION_DENIED: exit 3); someone else may.
    let own = run(request(&["approve", &id, "--caller", "alice"]))
        .await
        .expect_code(3);
    assert!(own.stderr.contains("PERMISSION_DENIED"), "{own:?}");
    let approved = run(request(&["approve", &id, "--caller", "bob"]))
        .await
        .expect_code(0)
        .json();
    assert_eq!(approved["approvedBy"], "bob");

    // Ctrl-C while watching: exit 130, and the request keeps running.
    let mut watch = cli::command(&url, &["requests", "watch", &id]);
    let child = watch.spawn().expect("spawn watch");
    let pid = child.id().expect("pid");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill -INT");
    assert!(killed.success());
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("the watch stopped")
        .expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("keeps running"), "{stderr}");
    let state = get(&s.app, &id).await.state();
    assert!(
        matches!(
            state,
            pb::ChangeRequestState::Queued | pb::ChangeRequestState::Running
        ),
        "{state:?}"
    );

    // Pause, resume, cancel; the watch then ends CANCELLED, which is not success (exit 1).
    let paused = run(request(&["pause", &id, "--reason", "change freeze"]))
        .await
        .expect_code(0)
        .json();
    assert_eq!(paused["state"], "CHANGE_REQUEST_STATE_PAUSED");
    let shown = run(request(&["get", &id, "--items"]))
        .await
        .expect_code(0)
        .json();
    assert!(
        shown["pauseReason"]
            .as_str()
            .is_some_and(|r| r.ends_with("change freeze")),
        "{shown}"
    );
    assert_eq!(shown["items"].as_array().expect("items").len(), BULK);
    // Resuming a request that is not paused is refused (FAILED_PRECONDITION: exit 1).
    run(request(&["resume", &id])).await.expect_code(0);
    run(request(&["resume", &id])).await.expect_code(1);
    run(request(&["cancel", &id])).await.expect_code(0);
    let watched: CliRun = run(request(&["watch", &id])).await.expect_code(1);
    assert_eq!(
        watched.json()["changeRequest"]["state"],
        "CHANGE_REQUEST_STATE_CANCELLED"
    );
}

#[tokio::test]
async fn tls_tokens_and_client_certificates_through_the_cli() {
    let db = TestDatabase::create().await.expect("db");
    let pki = Pki::new();
    let toml = format!(
        "insecure = false\n{}\n{}",
        tokens_and_grants(&[
            ("ops-admin", "admin", ""),
            ("spiffe://tablecrypt/ci", "viewer", ""),
        ]),
        pki.tls_and_jwt_toml()
    );
    let app = TestApp::spawn_tls(&db.url, &toml, pki.client_tls(None))
        .await
        .expect("TLS server");
    let url = format!("https://127.0.0.1:{}", app.addr.port());
    let ca = pki.path("ca.pem");
    let tls = [
        "--ca-cert",
        ca.to_str().expect("path"),
        "--tls-domain",
        "localhost",
    ];
    fn join<'a>(first: &[&'a str], then: &[&'a str]) -> Vec<&'a str> {
        [first, then].concat()
    }

    // A token: allowed. No credentials, or a wrong token: UNAUTHENTICATED, exit 3.
    cli::run(
        &url,
        &join(
            &tls,
            &[
                "--token",
                "token-ops-admin",
                "accounts",
                "list",
                "-o",
                "json",
            ],
        ),
    )
    .await
    .expect_code(0);
    let anonymous = cli::run(&url, &join(&tls, &["accounts", "list"]))
        .await
        .expect_code(3);
    assert!(
        anonymous.stderr.contains("UNAUTHENTICATED"),
        "{anonymous:?}"
    );
    let wrong = cli::run(&url, &join(&tls, &["--token", "nope", "accounts", "list"]))
        .await
        .expect_code(3);
    assert!(
        !wrong.stderr.contains("nope"),
        "the token is echoed: {wrong:?}"
    );
    // The token from the environment.
    let mut from_env = cli::command(&url, &join(&tls, &["accounts", "list", "-o", "json"]));
    from_env.env("TABLECRYPT_TOKEN", "token-ops-admin");
    cli::finish(from_env).await.expect_code(0);

    // Mutual TLS: the certificate's identity is a viewer, so reads work and registering is refused (exit 3).
    let (cert, key) = pki.client_certificate("spiffe://tablecrypt/ci");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_path, key_path) = (dir.path().join("client.pem"), dir.path().join("client.key"));
    std::fs::write(&cert_path, cert).expect("write");
    std::fs::write(&key_path, key).expect("write");
    let mtls = [
        "--cert",
        cert_path.to_str().expect("path"),
        "--key",
        key_path.to_str().expect("path"),
    ];
    cli::run(
        &url,
        &join(&tls, &[&mtls[..], &["accounts", "list"]].concat()),
    )
    .await
    .expect_code(0);
    let denied = cli::run(
        &url,
        &join(
            &tls,
            &[
                &mtls[..],
                &[
                    "accounts",
                    "register",
                    "--account-id",
                    PAYMENTS,
                    "--role-arn",
                    "arn:aws:iam::111111111111:role/tablecrypt-member",
                    "--region",
                    EU,
                ],
            ]
            .concat(),
        ),
    )
    .await
    .expect_code(3);
    assert!(denied.stderr.contains("PERMISSION_DENIED"), "{denied:?}");
    // Plaintext against a TLS server fails to connect (exit 3).
    cli::run(
        &format!("http://127.0.0.1:{}", app.addr.port()),
        &["--token", "token-ops-admin", "accounts", "list"],
    )
    .await
    .expect_code(3);
    app.stop().await.expect("stop");
}

/// The server binary is killed (SIGKILL) and restarted while the CLI watches a migration: the CLI reopens the
/// watch and still reports the request's true end, and every table reaches the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_survives_a_server_restart() {
    use fleet_emulator::{Emulator, FleetSpec};
    use tablecrypt_tests::process::{ServerProcess, emulator_env, free_addr};

    let emulator = Emulator::spawn(FleetSpec::from_yaml(&fleet()).expect("fleet"))
        .await
        .expect("emulator");
    let db = TestDatabase::create().await.expect("db");
    let mut env = emulator_env(&db.url, emulator.endpoint());
    env.extend([
        ("TABLECRYPT_LOG_FILTER", "warn".into()),
        ("TABLECRYPT_WORKER_LEASE", "2s".into()),
        ("TABLECRYPT_WORKER_CLAIM_INTERVAL", "100ms".into()),
        ("TABLECRYPT_WORKER_POLL_INITIAL", "100ms".into()),
        ("TABLECRYPT_WORKER_POLL_MAX", "200ms".into()),
        ("TABLECRYPT_WATCH_INTERVAL", "100ms".into()),
        ("TABLECRYPT_SHUTDOWN_GRACE_PERIOD", "1s".into()),
    ]);
    let mut server = ServerProcess::start(free_addr(), &env).await;
    let url = format!("http://{}", server.addr);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("accounts.yaml");
    std::fs::write(
        &file,
        format!(
            "- {{account_id: '{PAYMENTS}', role_arn: 'arn:aws:iam::{PAYMENTS}:role/{ROLE}', regions: [{EU}, {US}]}}\n"
        ),
    )
    .expect("write");
    cli::run(&url, &["accounts", "import", file.to_str().expect("path")])
        .await
        .expect_code(0);
    cli::run(&url, &["inventory", "refresh", "--account", PAYMENTS])
        .await
        .expect_code(0);
    // 12 tables at 2 UpdateTable/s: about 6 s of work, so the kill lands in the middle.
    let created = cli::run(
        &url,
        &[
            "migrate",
            "--account",
            PAYMENTS,
            "--prefix",
            "bulk-",
            "--to-key",
            "alias/b",
            "--rate",
            "2",
            "--yes",
            "--no-watch",
            "-o",
            "json",
        ],
    )
    .await
    .expect_code(0)
    .json();
    let id = created["changeRequest"]["changeRequestId"]
        .as_str()
        .expect("id")
        .to_owned();
    let watch = cli::command(&url, &["requests", "watch", &id, "-o", "json"])
        .spawn()
        .expect("spawn watch");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    server.restart().await;
    let output = tokio::time::timeout(Duration::from_secs(90), watch.wait_with_output())
        .await
        .expect("the watch ended")
        .expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("reconnecting"), "{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        report["changeRequest"]["state"], "CHANGE_REQUEST_STATE_SUCCEEDED",
        "{report}"
    );
    assert_eq!(report["changeRequest"]["counts"]["succeeded"], BULK as i64);
    let usage = cli::run(&url, &["keys", "usage", &payments_key(KEY_B), "-o", "json"])
        .await
        .expect_code(0)
        .json();
    let on_b = names(&usage)
        .into_iter()
        .filter(|n| n.starts_with("bulk-"))
        .count();
    assert_eq!(on_b, BULK, "{usage}");
}

#[tokio::test]
async fn grpcurl_style_addresses_alias_from_keys_tags_and_completions() {
    let s = setup("").await;
    // HOST:PORT as grpcurl takes it: plain HTTP on this machine.
    let host_port = s.app.addr.to_string();
    let listed = cli::run(&host_port, &["accounts", "list", "-o", "json"])
        .await
        .expect_code(0);
    assert!(listed.stdout.contains(PAYMENTS), "{listed:?}");
    let refused = cli::run("grpc://127.0.0.1:1", &["accounts", "list"])
        .await
        .expect_code(2);
    assert!(refused.stderr.contains("HOST:PORT"), "{refused:?}");

    // An alias name as the from-key, resolved in every account-region of the selector: payments' key A tables.
    let plan = cli::run(
        &host_port,
        &[
            "migrate",
            "--selector",
            "team=payments",
            "--from-key",
            "alias/a",
            "--to-key",
            "alias/b",
            "--dry-run",
            "-o",
            "json",
        ],
    )
    .await
    .expect_code(0);
    let items = plan.json()["plan"]["items"]
        .as_array()
        .expect("items")
        .len();
    assert_eq!(
        items,
        BULK + 1,
        "orders and the bulk tables on key A: {}",
        plan.stdout
    );
    // A tag selector that matches nothing leaves nothing to plan.
    let none = cli::run(
        &host_port,
        &[
            "migrate",
            "--selector",
            "team=payments",
            "--from-key",
            "alias/a",
            "--to-key",
            "alias/b",
            "--tag",
            "app=nothing",
            "--dry-run",
        ],
    )
    .await;
    assert_eq!(none.code, 1, "{none:?}");
    assert!(none.stderr.contains("match no table"), "{none:?}");
    // A label typo says so.
    let typo = cli::run(
        &host_port,
        &[
            "migrate",
            "--selector",
            "tema=payments",
            "--to-key",
            "alias/b",
            "--dry-run",
        ],
    )
    .await;
    assert!(
        typo.stderr
            .contains("no registered account matches `tema=payments`"),
        "{typo:?}"
    );

    // A refresh lists only the account-regions that need a look (the sandbox refuses AssumeRole); -v lists all.
    let refresh = cli::run(&host_port, &["inventory", "refresh"])
        .await
        .expect_code(1);
    assert!(refresh.stdout.contains(SANDBOX), "{refresh:?}");
    assert!(!refresh.stdout.contains(PAYMENTS), "{refresh:?}");
    assert!(
        refresh
            .stdout
            .contains("account-regions succeeded; -v lists them"),
        "{refresh:?}"
    );
    let all = cli::run(&host_port, &["inventory", "refresh", "-v"])
        .await
        .expect_code(1);
    assert!(
        all.stdout.contains(PAYMENTS) && all.stdout.contains(SANDBOX),
        "{all:?}"
    );

    // Lists take --limit; a request's items filter by state.
    let two = cli::run(
        &host_port,
        &["tables", "list", "--limit", "2", "-o", "json"],
    )
    .await
    .expect_code(0);
    assert_eq!(names(&two.json()).len(), 2, "{two:?}");
    let one = cli::run(
        &host_port,
        &["accounts", "list", "--limit", "1", "-o", "json"],
    )
    .await
    .expect_code(0);
    assert_eq!(
        one.json()["accounts"].as_array().map(Vec::len),
        Some(1),
        "{one:?}"
    );
    let done = cli::run(
        &host_port,
        &[
            "migrate",
            "--account",
            PAYMENTS,
            "--prefix",
            "bulk-",
            "--from-key",
            "alias/a",
            "--to-key",
            "alias/b",
            "--yes",
            "-o",
            "json",
        ],
    )
    .await
    .expect_code(0);
    let id = done.json()["changeRequest"]["changeRequestId"]
        .as_str()
        .expect("id")
        .to_owned();
    let items_in = |state: &'static str, limit: &'static str| {
        let (url, id) = (host_port.clone(), id.clone());
        async move {
            let run = cli::run(
                &url,
                &[
                    "requests", "get", &id, "--items", "--state", state, "--limit", limit, "-o",
                    "json",
                ],
            )
            .await
            .expect_code(0);
            run.json()["items"].as_array().cloned().unwrap_or_default()
        }
    };
    let succeeded = items_in("succeeded", "3").await;
    assert_eq!(succeeded.len(), 3);
    assert!(
        succeeded
            .iter()
            .all(|i| i["state"] == "CHANGE_ITEM_STATE_SUCCEEDED"),
        "{succeeded:?}"
    );
    assert!(items_in("failed", "100").await.is_empty());

    // Completions need no server.
    for shell in ["bash", "zsh", "fish"] {
        let script = cli::run("127.0.0.1:1", &["completion", shell])
            .await
            .expect_code(0);
        assert!(
            script.stdout.contains("migrate") && script.stdout.contains("from-key"),
            "{shell}"
        );
    }
}
