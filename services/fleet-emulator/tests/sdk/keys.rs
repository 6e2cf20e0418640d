//! KMS keys and aliases, and every reason DynamoDB refuses a key, through the real AWS SDK.

use crate::common::*;
use aws_sdk_dynamodb::types::TableStatus;
use aws_sdk_kms::error::ProvideErrorMetadata as _;
use aws_sdk_kms::types::{KeySpec, KeyState, KeyUsageType};

const FLEET: &str = r#"
hub: {account_id: "000000000000", access_key_id: AKIAHUBTEST000000000, secret_access_key: hub-secret}
settings: {update_seconds: 0.2, inaccessible_after_seconds: 60}
accounts:
  - account_id: "111111111111"
    roles: [{name: tablecrypt-member}]
    regions: [eu-west-1, us-east-1]
    keys:
      - {region: us-east-1, aliases: [alias/us-only]}
    tables:
      - {name: orders, region: eu-west-1}
  - account_id: "222222222222"
    roles: [{name: tablecrypt-member}]
    regions: [eu-west-1]
    keys:
      - {region: eu-west-1, aliases: [alias/theirs]}
"#;

#[tokio::test]
async fn keys_are_found_by_id_arn_alias_and_alias_arn() {
    let emulator = start(FLEET).await;
    let c = clients_in(&emulator, "111111111111", None, "eu-west-1").await;
    let key = c
        .kms
        .create_key()
        .description("payments")
        .send()
        .await
        .expect("create")
        .key_metadata
        .expect("m");
    assert_eq!(key.key_spec(), Some(&KeySpec::SymmetricDefault));
    assert_eq!(key.key_usage(), Some(&KeyUsageType::EncryptDecrypt));
    assert_eq!(key.key_state(), Some(&KeyState::Enabled));
    c.kms
        .create_alias()
        .alias_name("alias/payments")
        .target_key_id(key.key_id())
        .send()
        .await
        .expect("alias");
    let dup = c
        .kms
        .create_alias()
        .alias_name("alias/payments")
        .target_key_id(key.key_id())
        .send()
        .await
        .expect_err("dup");
    assert_eq!(dup.code(), Some("AlreadyExistsException"));
    let reserved = c
        .kms
        .create_alias()
        .alias_name("alias/aws/mine")
        .target_key_id(key.key_id())
        .send()
        .await
        .expect_err("aws/");
    assert!(reserved.code().is_some());

    let alias_arn = "arn:aws:kms:eu-west-1:111111111111:alias/payments";
    for reference in [
        key.key_id(),
        key.arn().expect("arn"),
        "alias/payments",
        alias_arn,
    ] {
        let found = c
            .kms
            .describe_key()
            .key_id(reference)
            .send()
            .await
            .expect(reference)
            .key_metadata
            .expect("m");
        assert_eq!(found.key_id(), key.key_id(), "{reference}");
    }
    let missing = c
        .kms
        .describe_key()
        .key_id("alias/nope")
        .send()
        .await
        .expect_err("missing");
    assert_eq!(missing.code(), Some("NotFoundException"));

    let other = c
        .kms
        .create_key()
        .send()
        .await
        .expect("other")
        .key_metadata
        .expect("m");
    c.kms
        .update_alias()
        .alias_name("alias/payments")
        .target_key_id(other.key_id())
        .send()
        .await
        .expect("update alias");
    let now = c
        .kms
        .describe_key()
        .key_id("alias/payments")
        .send()
        .await
        .expect("d")
        .key_metadata
        .expect("m");
    assert_eq!(now.key_id(), other.key_id());

    let keys = c.kms.list_keys().limit(1).send().await.expect("list keys");
    assert_eq!(keys.keys().len(), 1);
    assert!(keys.truncated());
    let next = c
        .kms
        .list_keys()
        .marker(keys.next_marker().expect("marker"))
        .send()
        .await
        .expect("page 2");
    assert_eq!(next.keys().len(), 1);
    let aliases = c.kms.list_aliases().send().await.expect("aliases");
    assert!(
        aliases
            .aliases()
            .iter()
            .any(|a| a.alias_name() == Some("alias/payments")
                && a.target_key_id() == Some(other.key_id()))
    );
    emulator.stop().await.expect("stop");
}

#[tokio::test]
async fn dynamodb_refuses_every_kind_of_unusable_key() {
    let emulator = start(FLEET).await;
    let c = clients_in(&emulator, "111111111111", None, "eu-west-1").await;
    let disabled = c
        .kms
        .create_key()
        .send()
        .await
        .expect("k")
        .key_metadata
        .expect("m");
    c.kms
        .disable_key()
        .key_id(disabled.key_id())
        .send()
        .await
        .expect("disable");
    let deleting = c
        .kms
        .create_key()
        .send()
        .await
        .expect("k")
        .key_metadata
        .expect("m");
    let scheduled = c
        .kms
        .schedule_key_deletion()
        .key_id(deleting.key_id())
        .pending_window_in_days(7)
        .send()
        .await
        .expect("sched");
    assert_eq!(scheduled.key_state(), Some(&KeyState::PendingDeletion));
    let asymmetric = c
        .kms
        .create_key()
        .key_spec(KeySpec::Rsa2048)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .expect("rsa")
        .key_metadata
        .expect("m");
    let us = clients_in(&emulator, "111111111111", None, "us-east-1").await;
    let us_key = us
        .kms
        .describe_key()
        .key_id("alias/us-only")
        .send()
        .await
        .expect("us key")
        .key_metadata
        .expect("m");
    let theirs = clients_in(&emulator, "222222222222", None, "eu-west-1").await;
    let their_key = theirs
        .kms
        .describe_key()
        .key_id("alias/theirs")
        .send()
        .await
        .expect("theirs")
        .key_metadata
        .expect("m");

    let cases = [
        (
            "unknown key id",
            "00000000-0000-0000-0000-000000000000".to_owned(),
            "does not exist",
        ),
        ("unknown alias", "alias/nope".to_owned(), "does not exist"),
        ("disabled", disabled.key_id().to_owned(), "disabled"),
        (
            "pending deletion",
            deleting.arn().expect("arn").to_owned(),
            "pending deletion",
        ),
        ("asymmetric", asymmetric.key_id().to_owned(), "symmetric"),
        (
            "other region",
            us_key.arn().expect("arn").to_owned(),
            "region",
        ),
        (
            "other account",
            their_key.arn().expect("arn").to_owned(),
            "another account",
        ),
    ];
    for (case, key, expected) in cases {
        let err = c
            .dynamodb
            .update_table()
            .table_name("orders")
            .sse_specification(sse_key(&key))
            .send()
            .await
            .expect_err(case);
        assert_eq!(code(&err), "ValidationException", "{case}");
        assert!(
            message(&err).contains(expected),
            "{case}: {}",
            message(&err)
        );
    }
    // A key id without SSEType KMS.
    let spec = aws_sdk_dynamodb::types::SseSpecification::builder()
        .enabled(true)
        .kms_master_key_id(disabled.key_id())
        .build();
    let err = c
        .dynamodb
        .update_table()
        .table_name("orders")
        .sse_specification(spec)
        .send()
        .await
        .expect_err("no SSEType");
    assert_eq!(code(&err), "ValidationException");
    assert!(message(&err).contains("SSEType"), "{}", message(&err));

    // Nothing changed.
    let table = c
        .dynamodb
        .describe_table()
        .table_name("orders")
        .send()
        .await
        .expect("d")
        .table
        .expect("t");
    assert_eq!(table.table_status, Some(TableStatus::Active));
    assert!(table.sse_description.is_none());
    emulator.stop().await.expect("stop");
}

#[tokio::test]
async fn disabling_a_key_makes_its_tables_inaccessible_after_the_delay() {
    let emulator = start(FLEET).await;
    let c = clients_in(&emulator, "111111111111", None, "eu-west-1").await;
    let key = c
        .kms
        .create_key()
        .send()
        .await
        .expect("k")
        .key_metadata
        .expect("m");
    c.dynamodb
        .update_table()
        .table_name("orders")
        .sse_specification(sse_key(key.key_id()))
        .send()
        .await
        .expect("switch");
    wait_active(&c.dynamodb, "orders").await;

    c.kms
        .disable_key()
        .key_id(key.key_id())
        .send()
        .await
        .expect("disable");
    let table = c
        .dynamodb
        .describe_table()
        .table_name("orders")
        .send()
        .await
        .expect("d")
        .table
        .expect("t");
    assert_eq!(
        table.table_status,
        Some(TableStatus::Active),
        "not yet: the delay has not passed"
    );

    advance_clock(&emulator, 61.0).await;
    let table = c
        .dynamodb
        .describe_table()
        .table_name("orders")
        .send()
        .await
        .expect("d")
        .table
        .expect("t");
    assert_eq!(
        table.table_status,
        Some(TableStatus::InaccessibleEncryptionCredentials)
    );
    let sse = table.sse_description.expect("sse");
    assert!(sse.inaccessible_encryption_date_time.is_some());
    assert_eq!(sse.kms_master_key_arn.as_deref(), key.arn());

    c.kms
        .enable_key()
        .key_id(key.key_id())
        .send()
        .await
        .expect("enable");
    let table = c
        .dynamodb
        .describe_table()
        .table_name("orders")
        .send()
        .await
        .expect("d")
        .table
        .expect("t");
    assert_eq!(table.table_status, Some(TableStatus::Active));
    emulator.stop().await.expect("stop");
}
