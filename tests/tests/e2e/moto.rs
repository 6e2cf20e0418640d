//! The fleet reads (AssumeRole, ListTables, DescribeTable, KMS aliases) against moto's server: a second AWS
//! implementation no one here wrote, so the emulator's answers are not the only ones tablecrypt is tested on.
//!
//! The tables are made through the AWS SDK as the member account (moto maps an assumed role's credentials to
//! the role's account), then read back through the real tablecrypt server.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    SseSpecification, SseType,
};
use tablecrypt_proto::v1 as pb;
use tablecrypt_tests::moto::MotoServer;
use tablecrypt_tests::{TestApp, TestDatabase};

const PAYMENTS: &str = "111111111111";
const SEARCH: &str = "222222222222";
const ROLE: &str = "tablecrypt-member";

async fn member_clients(
    moto: &MotoServer,
    account: &str,
    region: &str,
) -> (aws_sdk_dynamodb::Client, aws_sdk_kms::Client) {
    tablecrypt_tests::aws::member_clients(&moto.endpoint(), account, ROLE, region).await
}

async fn create_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    name: &str,
    sse: Option<SseSpecification>,
) {
    dynamodb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .expect("key schema"),
        )
        .set_sse_specification(sse)
        .send()
        .await
        .expect("create table in moto");
}

/// payments: eu-west-1 holds `ledger` (customer key behind alias/payments), `sessions` (AWS managed key) and
/// `plain` (AWS owned); us-east-1 holds `audit` (AWS owned). search: eu-west-1 holds `index` (AWS owned).
/// Returns the customer key's ARN.
async fn seed(moto: &MotoServer) -> String {
    let (dynamodb, kms) = member_clients(moto, PAYMENTS, "eu-west-1").await;
    let key = kms
        .create_key()
        .description("payments data key")
        .send()
        .await
        .expect("create key")
        .key_metadata
        .expect("key metadata");
    kms.create_alias()
        .alias_name("alias/payments")
        .target_key_id(key.key_id())
        .send()
        .await
        .expect("create alias");
    let key_arn = key.arn.expect("key arn");
    let kms_sse = |key: Option<&str>| {
        SseSpecification::builder()
            .enabled(true)
            .sse_type(SseType::Kms)
            .set_kms_master_key_id(key.map(str::to_owned))
            .build()
    };
    create_table(&dynamodb, "ledger", Some(kms_sse(Some(&key_arn)))).await;
    create_table(&dynamodb, "sessions", Some(kms_sse(None))).await;
    create_table(&dynamodb, "plain", None).await;
    let (dynamodb, _) = member_clients(moto, PAYMENTS, "us-east-1").await;
    create_table(&dynamodb, "audit", None).await;
    let (dynamodb, _) = member_clients(moto, SEARCH, "eu-west-1").await;
    create_table(&dynamodb, "index", None).await;
    key_arn
}

struct Setup {
    _moto: MotoServer,
    _db: TestDatabase,
    app: TestApp,
    key_arn: String,
}

async fn setup() -> Setup {
    let moto = MotoServer::start().await.expect("moto server");
    let key_arn = seed(&moto).await;
    let db = TestDatabase::create().await.expect("db");
    let app = TestApp::spawn_with(&db, &format!("aws_endpoint_url = '{}'", moto.endpoint()))
        .await
        .expect("server");
    let mut client = app.client.clone();
    for (id, regions, team) in [
        (PAYMENTS, vec!["eu-west-1", "us-east-1"], "payments"),
        (SEARCH, vec!["eu-west-1"], "search"),
    ] {
        client
            .register_account(pb::RegisterAccountRequest {
                account: Some(pb::Account {
                    account_id: id.into(),
                    role_arn: format!("arn:aws:iam::{id}:role/{ROLE}"),
                    external_id: "ext-moto".into(),
                    regions: regions.into_iter().map(String::from).collect(),
                    labels: HashMap::from([("team".to_owned(), team.to_owned())]),
                    ..Default::default()
                }),
            })
            .await
            .expect("register");
    }
    Setup {
        _moto: moto,
        _db: db,
        app,
        key_arn,
    }
}

#[tokio::test]
async fn verify_and_live_reads_agree_with_moto() {
    let s = setup().await;
    let mut client = s.app.client.clone();

    let verified = client
        .verify_account(pb::VerifyAccountRequest {
            account_id: PAYMENTS.into(),
            regions: vec![],
        })
        .await
        .expect("verify")
        .into_inner();
    let by_region: HashMap<_, _> = verified
        .regions
        .iter()
        .map(|r| (r.region.as_str(), r))
        .collect();
    assert!(verified.regions.iter().all(|r| r.ok), "{verified:?}");
    assert_eq!(by_region["eu-west-1"].table_count, 3);
    assert_eq!(by_region["us-east-1"].table_count, 1);
    assert!(
        by_region["eu-west-1"]
            .assumed_identity_arn
            .starts_with(&format!("arn:aws:sts::{PAYMENTS}:assumed-role/{ROLE}/")),
        "{verified:?}"
    );

    let get = |table: &str| {
        let mut client = s.app.client.clone();
        let table = table.to_owned();
        async move {
            client
                .get_table_encryption(pb::GetTableEncryptionRequest {
                    account_id: PAYMENTS.into(),
                    region: "eu-west-1".into(),
                    table_name: table,
                })
                .await
                .expect("get table encryption")
                .into_inner()
        }
    };
    let ledger = get("ledger").await;
    assert_eq!(ledger.mode(), pb::EncryptionMode::CustomerManaged);
    assert_eq!(ledger.kms_key_arn, s.key_arn);
    assert_eq!(ledger.sse_status, "ENABLED");
    assert_eq!(ledger.table_status, "ACTIVE");

    // moto creates alias/aws/dynamodb on first use, as AWS does; tablecrypt tells it apart from customer keys.
    let sessions = get("sessions").await;
    assert_eq!(
        sessions.mode(),
        pb::EncryptionMode::AwsManaged,
        "{sessions:?}"
    );
    assert!(
        sessions
            .kms_key_arn
            .starts_with("arn:aws:kms:eu-west-1:111111111111:key/")
    );
    assert_ne!(sessions.kms_key_arn, s.key_arn);

    let plain = get("plain").await;
    assert_eq!(plain.mode(), pb::EncryptionMode::AwsOwned);
    assert_eq!(plain.kms_key_arn, "");

    let missing = client
        .get_table_encryption(pb::GetTableEncryptionRequest {
            account_id: PAYMENTS.into(),
            region: "eu-west-1".into(),
            table_name: "no-such-table".into(),
        })
        .await
        .expect_err("a missing table is an error");
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
}

#[tokio::test]
async fn a_scan_of_moto_lists_and_resolves_aliases() {
    let s = setup().await;
    let scan = s
        .app
        .refresh_and_wait(pb::RefreshInventoryRequest::default())
        .await;
    assert_eq!(scan.state, "SUCCEEDED", "{scan:?}");
    assert_eq!(scan.targets_total, 3);
    assert_eq!(scan.tables_seen, 5);

    let all = s
        .app
        .list_tables(pb::ListTableEncryptionsRequest::default())
        .await;
    assert_eq!(all.len(), 5, "{all:?}");

    let customer = s
        .app
        .list_tables(pb::ListTableEncryptionsRequest {
            mode: pb::EncryptionMode::CustomerManaged.into(),
            ..Default::default()
        })
        .await;
    assert_eq!(customer, vec![format!("{PAYMENTS}/eu-west-1/ledger")]);

    let by_alias = s
        .app
        .list_tables(pb::ListTableEncryptionsRequest {
            kms_key: format!("arn:aws:kms:eu-west-1:{PAYMENTS}:alias/payments"),
            ..Default::default()
        })
        .await;
    assert_eq!(by_alias, vec![format!("{PAYMENTS}/eu-west-1/ledger")]);

    let search = s
        .app
        .list_tables(pb::ListTableEncryptionsRequest {
            account_label_selector: "team=search".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(search, vec![format!("{SEARCH}/eu-west-1/index")]);

    let mut client = s.app.client.clone();
    let usage = client
        .get_key_usage(pb::GetKeyUsageRequest {
            kms_key: "alias/payments".into(),
            account_id: PAYMENTS.into(),
            region: "eu-west-1".into(),
        })
        .await
        .expect("key usage")
        .into_inner();
    assert_eq!(usage.kms_key_arn, s.key_arn);
    assert!(!usage.unused);
    let tables: Vec<_> = usage.tables.iter().map(|t| t.table_name.as_str()).collect();
    assert_eq!(tables, vec!["ledger"]);
}
