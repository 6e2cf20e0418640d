//! A 200-table batch key migration under the fleet emulator's `aws-observed` profile (a change shows the old key,
//! ACTIVE, for its first seconds; an encryption change must be the only operation of its call; AWS managed and
//! owned apply to every replica; a disabled old key is refused) across 4 account-regions, with two global tables,
//! one table whose old key is disabled during the run and one account whose role lacks kms:CreateGrant. Judged
//! from the emulator's request log and from DynamoDB as a member role reads it.

use std::collections::BTreeMap;

use fleet_emulator::{Emulator, FleetSpec};
use tablecrypt_proto::v1 as pb;
use tablecrypt_tests::changes::{FAST, items, update_log, wait_terminal};
use tablecrypt_tests::{TestApp, TestDatabase};

const A: &str = "111111111111";
const B: &str = "222222222222";
const C: &str = "333333333333";
/// An account whose member role may not describe KMS keys: planning's probe of the target key is refused.
const D: &str = "444444444444";
const EU: &str = "eu-west-1";
const US: &str = "us-east-1";
const ROLE: &str = "tablecrypt-member";
const GLOBALS: [&str; 2] = ["t-global-1", "t-global-2"];
const DOOMED: &str = "t-zz-doomed";
const DENIED: &str = "t-c-orders";

fn fleet() -> String {
    format!(
        r#"
hub: {{account_id: "000000000000", access_key_id: AKIAHUBTEST000000000, secret_access_key: hub-secret}}
settings: {{update_seconds: 1.0, inaccessible_after_seconds: 3600}}
behaviour: {{profile: aws-observed, old_key_visible_seconds: 3}}
accounts:
  - account_id: "{A}"
    roles: [{{name: {ROLE}}}]
    regions: [{EU}, {US}]
    keys:
      - {{region: {EU}, aliases: [alias/a]}}
      - {{region: {EU}, aliases: [alias/b]}}
      - {{region: {EU}, aliases: [alias/old]}}
      - {{region: {US}, aliases: [alias/a]}}
      - {{region: {US}, aliases: [alias/b]}}
    tables:
      - {{name: {g1}, region: {EU}, replicas: [{US}], encryption: alias/a}}
      - {{name: {g2}, region: {EU}, replicas: [{US}], encryption: alias/a}}
      - {{name: {DOOMED}, region: {EU}, encryption: alias/old}}
    generate:
      - {{count: 59, prefix: t-eu-, regions: [{EU}], mix: {{alias/a: 1}}}}
      - {{count: 60, prefix: t-us-, regions: [{US}], mix: {{alias/a: 1}}}}
  - account_id: "{B}"
    roles: [{{name: {ROLE}}}]
    regions: [{EU}]
    keys: [{{region: {EU}, aliases: [alias/a]}}, {{region: {EU}, aliases: [alias/b]}}]
    generate: [{{count: 77, prefix: t-b-, mix: {{alias/a: 1}}}}]
  - account_id: "{C}"
    roles: [{{name: {ROLE}, denied_actions: ["kms:CreateGrant"]}}]
    regions: [{EU}]
    keys: [{{region: {EU}, aliases: [alias/a]}}, {{region: {EU}, aliases: [alias/b]}}]
    tables: [{{name: {DENIED}, region: {EU}, encryption: alias/a}}]
  - account_id: "{D}"
    roles: [{{name: {ROLE}, denied_actions: ["kms:DescribeKey"]}}]
    regions: [{EU}]
    keys: [{{region: {EU}, aliases: [alias/a]}}, {{region: {EU}, aliases: [alias/b]}}]
    tables: [{{name: d-orders, region: {EU}, encryption: alias/a}}]
"#,
        g1 = GLOBALS[0],
        g2 = GLOBALS[1],
    )
}

async fn register(app: &TestApp) {
    let mut client = app.client.clone();
    for (account, regions) in [(A, vec![EU, US]), (B, vec![EU]), (C, vec![EU])] {
        client
            .register_account(pb::RegisterAccountRequest {
                account: Some(pb::Account {
                    account_id: account.into(),
                    role_arn: format!("arn:aws:iam::{account}:role/{ROLE}"),
                    regions: regions.into_iter().map(String::from).collect(),
                    ..Default::default()
                }),
            })
            .await
            .expect("register");
    }
    app.refresh_and_wait(pb::RefreshInventoryRequest::default())
        .await;
}

/// The key ARN DynamoDB reports for `table` in `region` of account A, and each replica's.
async fn keys_of(
    endpoint: &str,
    region: &str,
    table: &str,
) -> (Option<String>, Vec<(String, Option<String>)>) {
    let (dynamodb, _) = tablecrypt_tests::aws::member_clients(endpoint, A, ROLE, region).await;
    let description = dynamodb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .expect("describe")
        .table
        .expect("table");
    (
        description
            .sse_description
            .and_then(|s| s.kms_master_key_arn),
        description
            .replicas
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.region_name.unwrap_or_default(), r.kms_master_key_id))
            .collect(),
    )
}

#[tokio::test]
async fn a_200_table_migration_under_aws_observed_behaviour() {
    let db = TestDatabase::create().await.expect("db");
    let emulator = Emulator::spawn(FleetSpec::from_yaml(&fleet()).expect("fleet"))
        .await
        .expect("emulator");
    let endpoint = emulator.endpoint();
    let app = TestApp::spawn_on(
        &db.url,
        &format!("aws_endpoint_url = '{endpoint}'\nupdate_rate = 20.0\n{FAST}"),
    )
    .await
    .expect("server");
    register(&app).await;
    let created = app
        .client
        .clone()
        .create_change_request(tonic::Request::new(pb::CreateChangeRequestRequest {
            selector: Some(pb::TableSelector {
                table_name_prefix: "t-".into(),
                ..Default::default()
            }),
            target: Some(pb::TargetEncryption {
                mode: pb::EncryptionMode::CustomerManaged as i32,
                kms_key: "alias/b".into(),
            }),
            ..Default::default()
        }))
        .await
        .expect("create")
        .into_inner();
    // Each global table is one item, though it is listed in both of its regions.
    let summary = created.summary.expect("summary");
    assert_eq!(summary.change, 200, "{summary:?}");
    let id = created.change_request.expect("request").change_request_id;
    // The doomed table's old key is disabled once the run started: it is planned, then refused at its send.
    let (_, kms) = tablecrypt_tests::aws::member_clients(&endpoint, A, ROLE, EU).await;
    kms.disable_key()
        .key_id("alias/old")
        .send()
        .await
        .expect("disable the old key");

    let done = wait_terminal(&app, &id).await;
    let all = items(&app, &id).await;
    assert_eq!(
        done.state(),
        pb::ChangeRequestState::PartiallyFailed,
        "{:#?}",
        all.iter()
            .filter(|i| i.state() != pb::ChangeItemState::Succeeded)
            .collect::<Vec<_>>()
    );
    let failed: BTreeMap<String, &pb::ChangeItem> = all
        .iter()
        .filter(|i| i.state() == pb::ChangeItemState::Failed)
        .map(|i| (i.table_name.clone(), i))
        .collect();
    assert_eq!(
        failed.keys().cloned().collect::<Vec<_>>(),
        vec![DENIED.to_owned(), DOOMED.to_owned()],
        "{failed:#?}"
    );
    let doomed = failed[DOOMED];
    assert_eq!(
        doomed.reason(),
        pb::ItemReason::CurrentKeyUnusable,
        "{doomed:?}"
    );
    assert!(
        doomed.message.contains(":key/"),
        "the old key is named: {doomed:?}"
    );
    let denied = failed[DENIED];
    assert_eq!(denied.reason(), pb::ItemReason::AccessDenied, "{denied:?}");
    assert!(
        denied.message.contains("kms:CreateGrant") && denied.message.contains(ROLE),
        "the permission and the role are named: {denied:?}"
    );
    assert!(
        all.iter()
            .all(|i| !i.message.contains("settled on another key")),
        "a change was taken for lost and sent again"
    );

    // From the emulator's log: one accepted UpdateTable per changed table, two (one per concern) per global table,
    // each in the region and order the plan said.
    assert_eq!(summary.update_calls, 202, "{summary:?}");
    let mut accepted: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for update in update_log(&emulator).await.into_iter().filter(|u| u.ok) {
        accepted
            .entry((update.account_id, update.table))
            .or_default()
            .push(update.region);
    }
    assert_eq!(accepted.len(), 198, "{accepted:?}");
    let planned: BTreeMap<(String, String), Vec<String>> = all
        .iter()
        .map(|i| {
            let regions = i.planned_calls.iter().map(|c| c.region.clone()).collect();
            ((i.account_id.clone(), i.table_name.clone()), regions)
        })
        .collect();
    for ((account, table), regions) in &accepted {
        let expected = if GLOBALS.contains(&table.as_str()) {
            2
        } else {
            1
        };
        assert_eq!(regions.len(), expected, "{account}/{table}");
        assert_eq!(
            Some(regions),
            planned.get(&(account.clone(), table.clone())),
            "{account}/{table}: the calls made are the calls planned"
        );
    }
    for table in GLOBALS {
        let item = all.iter().find(|i| i.table_name == table).expect("item");
        let concerns: Vec<pb::UpdateConcern> =
            item.planned_calls.iter().map(|c| c.concern()).collect();
        assert_eq!(
            concerns,
            vec![pb::UpdateConcern::Sse, pb::UpdateConcern::ReplicaKeys],
            "{item:?}"
        );
        assert_eq!(item.planned_calls[1].regions_changed, vec![US.to_owned()]);
    }

    // Each global table on key B in both regions, as DynamoDB reports it from either.
    let (_, kms_us) = tablecrypt_tests::aws::member_clients(&endpoint, A, ROLE, US).await;
    let (_, kms_eu) = tablecrypt_tests::aws::member_clients(&endpoint, A, ROLE, EU).await;
    let arn = |kms: aws_sdk_kms::Client| async move {
        kms.describe_key()
            .key_id("alias/b")
            .send()
            .await
            .expect("key")
            .key_metadata
            .and_then(|m| m.arn)
    };
    let (b_eu, b_us) = (arn(kms_eu).await, arn(kms_us).await);
    for table in GLOBALS {
        let (eu_key, eu_replicas) = keys_of(&endpoint, EU, table).await;
        assert_eq!(eu_key, b_eu, "{table} in {EU}");
        assert_eq!(eu_replicas, vec![(US.to_owned(), b_us.clone())], "{table}");
        let (us_key, _) = keys_of(&endpoint, US, table).await;
        assert_eq!(us_key, b_us, "{table} in {US}");
    }
}

/// Planning reads through the member role (KMS DescribeKey, for the table's key and the target): a role that may
/// not describe keys BLOCKS its tables with ACCESS_DENIED naming the permission and the role, and nothing is sent
/// to them.
#[tokio::test]
async fn a_role_that_may_not_describe_keys_blocks_its_tables_at_planning() {
    let db = TestDatabase::create().await.expect("db");
    let emulator = Emulator::spawn(FleetSpec::from_yaml(&fleet()).expect("fleet"))
        .await
        .expect("emulator");
    let endpoint = emulator.endpoint();
    let app = TestApp::spawn_on(&db.url, &format!("aws_endpoint_url = '{endpoint}'\n{FAST}"))
        .await
        .expect("server");
    let mut client = app.client.clone();
    client
        .register_account(pb::RegisterAccountRequest {
            account: Some(pb::Account {
                account_id: D.into(),
                role_arn: format!("arn:aws:iam::{D}:role/{ROLE}"),
                regions: vec![EU.into()],
                ..Default::default()
            }),
        })
        .await
        .expect("register");
    // Listed by name: the role cannot be scanned either (telling AWS managed from customer managed keys needs
    // kms:DescribeKey), so planning reads the table live through it.
    let created = client
        .create_change_request(pb::CreateChangeRequestRequest {
            tables: Some(pb::TableList {
                tables: vec![pb::TableRef {
                    account_id: D.into(),
                    region: EU.into(),
                    table_name: "d-orders".into(),
                }],
            }),
            target: Some(pb::TargetEncryption {
                mode: pb::EncryptionMode::CustomerManaged as i32,
                kms_key: "alias/b".into(),
            }),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    let id = created.change_request.expect("request").change_request_id;
    let all = items(&app, &id).await;
    assert_eq!(all.len(), 1, "{all:#?}");
    let item = &all[0];
    assert_eq!(item.action(), pb::PlanAction::Blocked, "{item:?}");
    assert_eq!(item.reason(), pb::ItemReason::AccessDenied, "{item:?}");
    assert!(
        item.message.contains("kms:DescribeKey") && item.message.contains(&format!("role/{ROLE}")),
        "the permission and the role are named: {item:?}"
    );
    assert!(
        update_log(&emulator).await.is_empty(),
        "nothing is sent to a blocked table"
    );
}
