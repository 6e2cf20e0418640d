//! A region an account cannot use (an opt-in region it has not enabled, or one a service control policy denies)
//! is the region's state, not a failure: VerifyAccount says so per region, a scan that meets it still succeeds,
//! and the CLI exits 0. Judged from the API's answers and the CLI's exit code, against an emulator whose account
//! refuses those regions as AWS does.

use fleet_emulator::{Emulator, FleetSpec};
use tablecrypt_proto::v1 as pb;
use tablecrypt_tests::{TestApp, TestDatabase};

const ACCOUNT: &str = "111111111111";

const FLEET: &str = r#"
hub: {account_id: "000000000000", access_key_id: AKIAHUBTEST000000000, secret_access_key: hub-secret}
accounts:
  - account_id: "111111111111"
    roles: [{name: tablecrypt-member}]
    regions: [eu-west-1]
    disabled_regions: [ap-east-1]
    scp_denied_regions: [eu-central-1]
    tables: [{name: orders, region: eu-west-1}]
"#;

#[tokio::test]
async fn a_region_the_account_cannot_use_is_its_state_not_a_failure() {
    let db = TestDatabase::create().await.expect("db");
    let emulator = Emulator::spawn(FleetSpec::from_yaml(FLEET).expect("fleet"))
        .await
        .expect("emulator");
    let app = TestApp::spawn_on(
        &db.url,
        &format!(
            "aws_endpoint_url = '{}'\nscan_describe_rate = 1000\n",
            emulator.endpoint()
        ),
    )
    .await
    .expect("server");
    let mut client = app.client.clone();
    client
        .register_account(pb::RegisterAccountRequest {
            account: Some(pb::Account {
                account_id: ACCOUNT.into(),
                role_arn: format!("arn:aws:iam::{ACCOUNT}:role/tablecrypt-member"),
                regions: vec![
                    "eu-west-1".into(),
                    "ap-east-1".into(),
                    "eu-central-1".into(),
                ],
                ..Default::default()
            }),
        })
        .await
        .expect("register");

    let verified = client
        .verify_account(pb::VerifyAccountRequest {
            account_id: ACCOUNT.into(),
            regions: Vec::new(),
        })
        .await
        .expect("verify")
        .into_inner();
    let kind = |region: &str| {
        let r = verified
            .regions
            .iter()
            .find(|r| r.region == region)
            .expect("the region");
        (r.ok, r.failure.as_ref().map(|f| f.kind()))
    };
    assert_eq!(kind("eu-west-1"), (true, None));
    assert_eq!(
        kind("ap-east-1"),
        (false, Some(pb::FailureKind::RegionUnavailable)),
        "{verified:?}"
    );
    assert_eq!(
        kind("eu-central-1"),
        (false, Some(pb::FailureKind::RegionUnavailable)),
        "{verified:?}"
    );

    // A scan meets them and still succeeds; the table of the usable region is inventoried.
    let scan = app
        .refresh_and_wait(pb::RefreshInventoryRequest::default())
        .await;
    assert_eq!(
        (scan.state.as_str(), scan.targets_failed),
        ("SUCCEEDED", 0),
        "{scan:?}"
    );
    let unavailable: Vec<&str> = scan
        .targets
        .iter()
        .filter(|t| {
            t.failure
                .as_ref()
                .is_some_and(|f| f.kind() == pb::FailureKind::RegionUnavailable)
        })
        .map(|t| t.region.as_str())
        .collect();
    assert_eq!(unavailable.len(), 2, "{scan:?}");
    assert_eq!(
        app.list_tables(pb::ListTableEncryptionsRequest::default())
            .await,
        ["111111111111/eu-west-1/orders"]
    );

    // The CLI: verification passes (exit 0), naming the regions unavailable.
    let url = format!("http://{}", app.addr);
    let cli = tablecrypt_tests::cli::run(&url, &["accounts", "verify", ACCOUNT])
        .await
        .expect_code(0);
    assert_eq!(cli.stdout.matches("unavailable").count(), 2, "{cli:?}");
    tablecrypt_tests::cli::run(&url, &["accounts", "verify", "--all"])
        .await
        .expect_code(0);
    app.stop().await.expect("stop");
}
