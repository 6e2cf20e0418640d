//! STS across accounts, and account isolation, through the real AWS SDK for Rust.

use crate::common::*;

const FLEET: &str = r#"
hub: {account_id: "000000000000", access_key_id: AKIAHUBTEST000000000, secret_access_key: hub-secret}
accounts:
  - account_id: "111111111111"
    roles: [{name: tablecrypt-member, external_id: ext-111}]
    regions: [eu-west-1]
    keys: [{region: eu-west-1, aliases: [alias/payments]}]
    tables: [{name: orders, region: eu-west-1, encryption: alias/payments}]
  - account_id: "222222222222"
    roles: [{name: tablecrypt-member}]
    regions: [eu-west-1]
    tables: [{name: secret-table, region: eu-west-1}]
"#;

#[tokio::test]
async fn assume_role_checks_role_and_external_id_and_sessions_act_in_their_account() {
    let emulator = start(FLEET).await;
    let sts =
        aws_sdk_sts::Client::new(&sdk_config(&emulator, hub_credentials(), "us-east-1").await);
    let me = sts
        .get_caller_identity()
        .send()
        .await
        .expect("hub identity");
    assert_eq!(me.account(), Some("000000000000"));

    let wrong = assume(&emulator, "111111111111", Some("wrong"))
        .await
        .expect_err("wrong external id");
    assert_eq!(
        wrong
            .as_service_error()
            .and_then(|e| aws_sdk_sts::error::ProvideErrorMetadata::code(e)),
        Some("AccessDenied")
    );
    let missing = assume(&emulator, "111111111111", None)
        .await
        .expect_err("missing external id");
    assert!(missing.as_service_error().is_some());
    let unknown = assume(&emulator, "333333333333", None)
        .await
        .expect_err("unknown account");
    assert_eq!(
        unknown
            .as_service_error()
            .and_then(|e| aws_sdk_sts::error::ProvideErrorMetadata::code(e)),
        Some("AccessDenied")
    );

    let creds = assume(&emulator, "111111111111", Some("ext-111"))
        .await
        .expect("assume 111");
    let sts_111 = aws_sdk_sts::Client::new(&sdk_config(&emulator, creds, "us-east-1").await);
    let identity = sts_111
        .get_caller_identity()
        .send()
        .await
        .expect("assumed identity");
    assert_eq!(identity.account(), Some("111111111111"));
    assert_eq!(
        identity.arn(),
        Some("arn:aws:sts::111111111111:assumed-role/tablecrypt-member/tablecrypt-test")
    );
    emulator.stop().await.expect("stop");
}

#[tokio::test]
async fn accounts_never_see_each_others_tables_or_keys() {
    let emulator = start(FLEET).await;
    let a = clients_in(&emulator, "111111111111", Some("ext-111"), "eu-west-1").await;
    let b = clients_in(&emulator, "222222222222", None, "eu-west-1").await;

    let a_tables = a
        .dynamodb
        .list_tables()
        .send()
        .await
        .expect("list a")
        .table_names
        .unwrap_or_default();
    let b_tables = b
        .dynamodb
        .list_tables()
        .send()
        .await
        .expect("list b")
        .table_names
        .unwrap_or_default();
    assert_eq!(a_tables, vec!["orders"]);
    assert_eq!(b_tables, vec!["secret-table"]);

    let err = b
        .dynamodb
        .describe_table()
        .table_name("orders")
        .send()
        .await
        .expect_err("other account's table");
    assert_eq!(code(&err), "ResourceNotFoundException");

    let key = a
        .kms
        .describe_key()
        .key_id("alias/payments")
        .send()
        .await
        .expect("own alias")
        .key_metadata
        .expect("meta");
    let err = b
        .kms
        .describe_key()
        .key_id(key.arn().expect("arn"))
        .send()
        .await
        .expect_err("other account's key");
    assert_eq!(
        err.as_service_error()
            .and_then(|e| aws_sdk_kms::error::ProvideErrorMetadata::code(e)),
        Some("NotFoundException")
    );
    let aliases = b
        .kms
        .list_aliases()
        .send()
        .await
        .expect("aliases")
        .aliases
        .unwrap_or_default();
    assert!(
        aliases
            .iter()
            .all(|a| a.alias_name() != Some("alias/payments"))
    );
    emulator.stop().await.expect("stop");
}

#[tokio::test]
async fn expired_sessions_are_refused() {
    let emulator = start(FLEET).await;
    let sts =
        aws_sdk_sts::Client::new(&sdk_config(&emulator, hub_credentials(), "us-east-1").await);
    let out = sts
        .assume_role()
        .role_arn("arn:aws:iam::222222222222:role/tablecrypt-member")
        .role_session_name("short")
        .duration_seconds(900)
        .send()
        .await
        .expect("assume");
    let c = out.credentials.expect("credentials");
    let creds = aws_credential_types::Credentials::new(
        c.access_key_id,
        c.secret_access_key,
        Some(c.session_token),
        None,
        "t",
    );
    let b = clients(&emulator, creds, "eu-west-1").await;
    b.dynamodb
        .list_tables()
        .send()
        .await
        .expect("fresh session works");
    advance_clock(&emulator, 901.0).await;
    let err = b.dynamodb.list_tables().send().await.expect_err("expired");
    assert_eq!(code(&err), "ExpiredTokenException");

    let err = sts
        .assume_role()
        .role_arn("arn:aws:iam::222222222222:role/tablecrypt-member")
        .role_session_name("too-long")
        .duration_seconds(43_201)
        .send()
        .await
        .expect_err("duration above 12 h");
    assert!(err.as_service_error().is_some());
    emulator.stop().await.expect("stop");
}
