//! Account discovery from AWS Organizations, end to end: the emulator answers Organizations and Account
//! Management (ListRegions) for an organization in its fleet file; the server reads it through a role in the
//! management account and writes the registry. Judged from the registry (GetAccount, ListAccounts), the audit
//! log in the database, and the emulator's request log.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use fleet_emulator::{Emulator, FleetSpec, RunningEmulator};
use tablecrypt_proto::v1 as pb;
use tablecrypt_proto::v1::discovered_account::Action;
use tablecrypt_tests::changes::{as_caller, field_violations};
use tablecrypt_tests::{TestApp, TestDatabase};

const MANAGEMENT: &str = "100000000000";
const PAYMENTS: &str = "111111111111";
const SEARCH: &str = "222222222222";
const SUSPENDED: &str = "333333333333";
const BY_HAND: &str = "444444444444";
const NEWCOMER: &str = "555555555555";
const LEAVER: &str = "666666666666";
const ADMIN: &str = "admin@example.com";

/// One organization account: (id, ou, state, tags, opted-in regions).
type OrgEntry<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);

/// The fleet: every account trusts the hub's `tablecrypt-member` role (the management account also
/// `tablecrypt-org-reader`), each with a table in eu-west-1; the organization holds `org`.
fn fleet(org: &[OrgEntry]) -> String {
    let accounts: String = [MANAGEMENT, PAYMENTS, SEARCH, SUSPENDED, BY_HAND, NEWCOMER, LEAVER]
        .iter()
        .map(|id| {
            format!(
                "  - account_id: \"{id}\"\n    roles: [{{name: tablecrypt-member}}, {{name: tablecrypt-org-reader}}]\n    \
                 regions: [eu-west-1]\n    tables: [{{name: orders, region: eu-west-1}}]\n"
            )
        })
        .collect();
    let members: String = org
        .iter()
        .map(|(id, ou, state, tags, opted)| {
            format!(
                "    - {{account_id: \"{id}\", name: acct-{id}, ou: \"{ou}\", state: {state}, tags: {{{tags}}}, \
                 opted_in_regions: [{opted}]}}\n"
            )
        })
        .collect();
    format!(
        "hub: {{account_id: \"000000000000\", access_key_id: AKIAHUBTEST000000000, secret_access_key: hub-secret}}\n\
         settings: {{update_seconds: 0.2}}\n\
         accounts:\n{accounts}\
         organization:\n  management_account_id: \"{MANAGEMENT}\"\n  accounts:\n{members}"
    )
}

fn first_org() -> String {
    fleet(&[
        (MANAGEMENT, "Root", "ACTIVE", "", ""),
        (
            PAYMENTS,
            "Root/Workloads/Payments",
            "ACTIVE",
            "team: Payments Team",
            "",
        ),
        (SEARCH, "Root/Workloads/Search", "ACTIVE", "", "eu-south-1"),
        (SUSPENDED, "Root/Workloads", "SUSPENDED", "", ""),
        (LEAVER, "Root/Workloads", "ACTIVE", "", ""),
    ])
}

/// PAYMENTS moved to the sandbox OU, SEARCH suspended, NEWCOMER joined, LEAVER left.
fn second_org() -> String {
    fleet(&[
        (MANAGEMENT, "Root", "ACTIVE", "", ""),
        (
            PAYMENTS,
            "Root/Sandbox",
            "ACTIVE",
            "team: Payments Team",
            "",
        ),
        (
            SEARCH,
            "Root/Workloads/Search",
            "SUSPENDED",
            "",
            "eu-south-1",
        ),
        (SUSPENDED, "Root/Workloads", "SUSPENDED", "", ""),
        (NEWCOMER, "Root/Workloads", "ACTIVE", "", ""),
    ])
}

const DISCOVERY: &str = "
approval_required = true
[discovery]
organization_role_arn = 'arn:aws:iam::100000000000:role/tablecrypt-org-reader'
regions = ['eu-west-1', 'eu-south-1']
tag_labels = ['team']
[[discovery.ou_labels]]
ou = 'Root/Workloads'
labels = { env = 'prod' }
[[discovery.ou_labels]]
ou = 'Root/Sandbox'
labels = { env = 'sandbox' }
";

async fn start(db: &TestDatabase, extra: &str) -> (RunningEmulator, TestApp) {
    let emulator = Emulator::spawn(FleetSpec::from_yaml(&first_org()).expect("fleet"))
        .await
        .expect("emulator");
    let app = TestApp::spawn_on(
        &db.url,
        &format!(
            "aws_endpoint_url = '{}'\nscan_describe_rate = 1000\n{extra}",
            emulator.endpoint()
        ),
    )
    .await
    .expect("server");
    (emulator, app)
}

async fn discover(
    app: &TestApp,
    dry_run: bool,
    prune: bool,
) -> BTreeMap<String, pb::DiscoveredAccount> {
    app.client
        .clone()
        .discover_accounts(as_caller(
            ADMIN,
            pb::DiscoverAccountsRequest { dry_run, prune },
        ))
        .await
        .expect("discover")
        .into_inner()
        .accounts
        .into_iter()
        .map(|a| (a.account_id.clone(), a))
        .collect()
}

fn actions(lines: &BTreeMap<String, pb::DiscoveredAccount>) -> Vec<(&str, Action)> {
    lines
        .values()
        .map(|a| (a.account_id.as_str(), a.action()))
        .collect()
}

async fn registered(app: &TestApp) -> Vec<String> {
    app.client
        .clone()
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .accounts
        .into_iter()
        .map(|a| a.account_id)
        .collect()
}

async fn account(app: &TestApp, id: &str) -> pb::Account {
    app.client
        .clone()
        .get_account(pb::GetAccountRequest {
            account_id: id.into(),
        })
        .await
        .expect("get")
        .into_inner()
}

fn sorted_labels(account: &pb::Account) -> Vec<String> {
    let mut labels: Vec<String> = account
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    labels.sort();
    labels
}

async fn audited(db: &TestDatabase, method: &str) -> Vec<(String, String, String)> {
    let pool = sqlx::PgPool::connect(&db.url).await.expect("db");
    sqlx::query_as::<_, (String, String, String)>(
        "SELECT caller, target, outcome FROM audit_log WHERE method = $1 ORDER BY event_id",
    )
    .bind(method)
    .fetch_all(&pool)
    .await
    .expect("audit")
}

#[tokio::test]
async fn discovery_registers_relabels_and_prunes_an_organization() {
    let db = TestDatabase::create().await.expect("db");
    let (emulator, app) = start(&db, DISCOVERY).await;
    let mut client = app.client.clone();

    // An account registered by hand, outside the organization; callers may not write discovery's labels.
    let by_hand = |labels: HashMap<String, String>| pb::RegisterAccountRequest {
        account: Some(pb::Account {
            account_id: BY_HAND.into(),
            role_arn: format!("arn:aws:iam::{BY_HAND}:role/tablecrypt-member"),
            regions: vec!["eu-west-1".into()],
            labels,
            ..Default::default()
        }),
    };
    let refused = client
        .register_account(by_hand(HashMap::from([(
            "org.tablecrypt/team".to_owned(),
            "payments".to_owned(),
        )])))
        .await
        .expect_err("a reserved label");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        field_violations(&refused),
        ["account.labels[\"org.tablecrypt/team\"]"]
    );
    assert!(registered(&app).await.is_empty(), "nothing written");
    client
        .register_account(by_hand(HashMap::from([(
            "owner".to_owned(),
            "bob".to_owned(),
        )])))
        .await
        .expect("register by hand");

    // A dry run reads the organization and writes nothing.
    let dry = discover(&app, true, false).await;
    assert_eq!(
        actions(&dry),
        [
            (MANAGEMENT, Action::Register),
            (PAYMENTS, Action::Register),
            (SEARCH, Action::Register),
            (SUSPENDED, Action::Skipped),
            (LEAVER, Action::Register),
        ]
    );
    assert_eq!(registered(&app).await, [BY_HAND]);

    let applied = discover(&app, false, false).await;
    assert_eq!(actions(&applied), actions(&dry));
    assert_eq!(
        registered(&app).await,
        [MANAGEMENT, PAYMENTS, SEARCH, BY_HAND, LEAVER]
    );
    let payments = account(&app, PAYMENTS).await;
    assert_eq!(
        payments.role_arn,
        format!("arn:aws:iam::{PAYMENTS}:role/tablecrypt-member")
    );
    assert_eq!(payments.display_name, format!("acct-{PAYMENTS}"));
    // eu-south-1 is an opt-in region this account never enabled; SEARCH did.
    assert_eq!(payments.regions, ["eu-west-1"]);
    assert_eq!(
        account(&app, SEARCH).await.regions,
        ["eu-west-1", "eu-south-1"]
    );
    assert!(
        applied[PAYMENTS]
            .notes
            .iter()
            .any(|n| n == "not enabled in the account: eu-south-1"),
        "{:?}",
        applied[PAYMENTS].notes
    );
    assert_eq!(
        sorted_labels(&payments),
        [
            "org.tablecrypt/discovered=true",
            "org.tablecrypt/env=prod",
            "org.tablecrypt/team=Payments-Team"
        ]
    );
    // The management account's own regions are read without an account id (AWS refuses one).
    assert_eq!(account(&app, MANAGEMENT).await.regions, ["eu-west-1"]);
    // A discovered account is reachable through the pattern's role.
    let verified = client
        .verify_account(pb::VerifyAccountRequest {
            account_id: PAYMENTS.into(),
            regions: Vec::new(),
        })
        .await
        .expect("verify")
        .into_inner();
    assert!(verified.regions.iter().all(|r| r.ok), "{verified:?}");
    let registrations = audited(&db, "discovery/register").await;
    assert_eq!(registrations.len(), 4, "{registrations:?}");
    assert!(
        registrations
            .iter()
            .all(|(caller, _, outcome)| caller == ADMIN && outcome == "OK")
    );

    // A caller's relabel keeps discovery's labels.
    client
        .update_account(pb::UpdateAccountRequest {
            account: Some(pb::Account {
                account_id: PAYMENTS.into(),
                labels: HashMap::from([("owner".to_owned(), "alice".to_owned())]),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["labels".into()],
            }),
            validate_only: false,
        })
        .await
        .expect("relabel");
    assert!(
        sorted_labels(&account(&app, PAYMENTS).await)
            .contains(&"org.tablecrypt/env=prod".to_owned())
    );

    // A change request touching SEARCH stays in flight (awaiting approval).
    app.refresh_and_wait(pb::RefreshInventoryRequest::default())
        .await;
    let request = client
        .create_change_request(as_caller(
            ADMIN,
            pb::CreateChangeRequestRequest {
                tables: Some(pb::TableList {
                    tables: vec![pb::TableRef {
                        account_id: SEARCH.into(),
                        region: "eu-west-1".into(),
                        table_name: "orders".into(),
                    }],
                }),
                target: Some(pb::TargetEncryption {
                    mode: pb::EncryptionMode::AwsManaged.into(),
                    kms_key: String::new(),
                }),
                ..Default::default()
            },
        ))
        .await
        .expect("create")
        .into_inner();
    let request_id = request.change_request.expect("request").change_request_id;

    // The organization changes.
    let (status, body) = emulator
        .admin("PUT", "/fleet", &second_org())
        .await
        .expect("load");
    assert_eq!(status, 200, "{body}");
    let without_prune = discover(&app, false, false).await;
    assert_eq!(
        actions(&without_prune),
        [
            (MANAGEMENT, Action::Unchanged),
            (PAYMENTS, Action::Relabel),
            (SEARCH, Action::Left),
            (SUSPENDED, Action::Skipped),
            (NEWCOMER, Action::Register),
            (LEAVER, Action::Left),
        ]
    );
    assert_eq!(
        without_prune[PAYMENTS].notes,
        ["org.tablecrypt/env: prod -> sandbox"]
    );
    assert_eq!(
        sorted_labels(&account(&app, PAYMENTS).await),
        [
            "org.tablecrypt/discovered=true",
            "org.tablecrypt/env=sandbox",
            "org.tablecrypt/team=Payments-Team",
            "owner=alice"
        ]
    );
    assert!(
        registered(&app).await.contains(&LEAVER.to_owned()),
        "never deregistered without prune"
    );

    let pruned = discover(&app, false, true).await;
    assert_eq!(pruned[SEARCH].action(), Action::InFlight);
    assert_eq!(pruned[LEAVER].action(), Action::Deregister);
    assert_eq!(pruned[PAYMENTS].action(), Action::Unchanged);
    assert_eq!(
        registered(&app).await,
        [MANAGEMENT, PAYMENTS, SEARCH, BY_HAND, NEWCOMER],
        "the account in flight and the one registered by hand stay"
    );

    // Once its request is over, the suspended account is pruned too.
    client
        .cancel_change_request(as_caller(
            ADMIN,
            pb::CancelChangeRequestRequest {
                change_request_id: request_id,
            },
        ))
        .await
        .expect("cancel");
    let mut last = BTreeMap::new();
    for _ in 0..50 {
        last = discover(&app, false, true).await;
        if last[SEARCH].action() == Action::Deregister {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        last[SEARCH].action(),
        Action::Deregister,
        "{:?}",
        last[SEARCH]
    );
    assert!(!registered(&app).await.contains(&SEARCH.to_owned()));
    assert_eq!(audited(&db, "discovery/deregister").await.len(), 2);

    // The CLI shows the same, and a server without [discovery] refuses it, saying what to set.
    let cli = tablecrypt_tests::cli::run(
        &format!("http://{}", app.addr),
        &["accounts", "discover", "--dry-run"],
    )
    .await
    .expect_code(0);
    assert!(
        cli.stdout.contains("dry run: nothing was changed"),
        "{}",
        cli.stdout
    );
    assert!(cli.stdout.contains("Root/Sandbox"), "{}", cli.stdout);
    let plain = TestApp::spawn_on(&db.url, "").await.expect("server");
    let refused = plain
        .client
        .clone()
        .discover_accounts(pb::DiscoverAccountsRequest::default())
        .await
        .expect_err("not configured");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("[discovery]"),
        "{}",
        refused.message()
    );
    plain.stop().await.expect("stop");
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn periodic_discovery_registers_and_never_prunes() {
    let db = TestDatabase::create().await.expect("db");
    let emulator = Emulator::spawn(FleetSpec::from_yaml(&first_org()).expect("fleet"))
        .await
        .expect("emulator");
    let app = TestApp::spawn_edited(
        &db.url,
        &format!(
            "aws_endpoint_url = '{}'\n[discovery]\norganization_role_arn = \
             'arn:aws:iam::100000000000:role/tablecrypt-org-reader'\nregions = ['eu-west-1']\n",
            emulator.endpoint()
        ),
        // Below the configuration's one-minute floor, so the test does not wait minutes.
        |config| {
            config.discovery.as_mut().expect("discovery").interval =
                Some(Duration::from_millis(300));
        },
    )
    .await
    .expect("server");
    let mut found = Vec::new();
    for _ in 0..100 {
        found = registered(&app).await;
        if found.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(found, [MANAGEMENT, PAYMENTS, SEARCH, LEAVER]);
    let registrations = audited(&db, "discovery/register").await;
    assert_eq!(registrations.len(), 4, "{registrations:?}");
    assert!(
        registrations
            .iter()
            .all(|(caller, _, _)| caller == "tablecrypt:discovery")
    );

    // LEAVER leaves and SEARCH is suspended: several background runs later, both are still registered.
    let (status, body) = emulator
        .admin("PUT", "/fleet", &second_org())
        .await
        .expect("load");
    assert_eq!(status, 200, "{body}");
    let list_calls = || async {
        let (_, log) = emulator
            .admin("GET", "/requests?operation=ListAccounts", "")
            .await
            .expect("log");
        serde_json::from_str::<serde_json::Value>(&log)
            .ok()
            .and_then(|v| v["requests"].as_array().map(Vec::len))
            .unwrap_or(0)
    };
    let before = list_calls().await;
    let mut newcomer = false;
    for _ in 0..100 {
        if registered(&app).await.contains(&NEWCOMER.to_owned()) && list_calls().await >= before + 3
        {
            newcomer = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(newcomer, "the newcomer is registered by a later run");
    let after = registered(&app).await;
    assert!(
        after.contains(&LEAVER.to_owned()) && after.contains(&SEARCH.to_owned()),
        "{after:?}"
    );
    assert!(audited(&db, "discovery/deregister").await.is_empty());
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn discovery_needs_admin_everywhere_and_grants_scoped_on_discovered_labels_work() {
    use tablecrypt_tests::security::{Pki, as_token, tokens_and_grants};
    let pki = Pki::new();
    let db = TestDatabase::create().await.expect("db");
    let emulator = Emulator::spawn(FleetSpec::from_yaml(&first_org()).expect("fleet"))
        .await
        .expect("emulator");
    let discovery = DISCOVERY.replace("approval_required = true\n", "");
    let toml = format!(
        "insecure = false\naws_endpoint_url = '{}'\n{}{}{discovery}",
        emulator.endpoint(),
        tokens_and_grants(&[
            ("org-admin", "admin", ""),
            (
                "payments-admin",
                "admin",
                "org.tablecrypt/team=Payments-Team"
            ),
        ]),
        pki.tls_and_jwt_toml()
    );
    let app = TestApp::spawn_tls(&db.url, &toml, pki.client_tls(None))
        .await
        .expect("TLS server");
    let mut client = app.client.clone();

    let refused = client
        .discover_accounts(as_token(
            "payments-admin",
            pb::DiscoverAccountsRequest::default(),
        ))
        .await
        .expect_err("scoped admin");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("every account"),
        "{}",
        refused.message()
    );
    client
        .discover_accounts(as_token(
            "org-admin",
            pb::DiscoverAccountsRequest::default(),
        ))
        .await
        .expect("discover");

    // Scoped on a discovered label, the payments admin may relabel its account: the labels it will carry
    // (its own and the discovered ones kept) are in scope.
    let relabel = |id: &str| pb::UpdateAccountRequest {
        account: Some(pb::Account {
            account_id: id.into(),
            labels: HashMap::from([("owner".to_owned(), "alice".to_owned())]),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["labels".into()],
        }),
        validate_only: false,
    };
    let updated = client
        .update_account(as_token("payments-admin", relabel(PAYMENTS)))
        .await
        .expect("relabel within scope")
        .into_inner();
    assert_eq!(
        updated.labels.get("owner").map(String::as_str),
        Some("alice")
    );
    assert_eq!(
        updated
            .labels
            .get("org.tablecrypt/team")
            .map(String::as_str),
        Some("Payments-Team")
    );
    let refused = client
        .update_account(as_token("payments-admin", relabel(SEARCH)))
        .await
        .expect_err("outside scope");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    app.stop().await.expect("stop");
}
