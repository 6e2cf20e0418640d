//! Switching a table's encryption through the real AWS SDK: owned -> AWS managed -> customer key A -> B, the
//! asynchronous UPDATING phase, idempotency, the switch quota and the in-flight limit.

use crate::common::*;
use aws_sdk_dynamodb::types::{SseStatus, TableStatus};

const FLEET: &str = r#"
hub: {account_id: "000000000000", access_key_id: AKIAHUBTEST000000000, secret_access_key: hub-secret}
settings: {update_seconds: 0.3}
accounts:
  - account_id: "111111111111"
    roles: [{name: tablecrypt-member}]
    regions: [eu-west-1, us-east-1]
"#;

async fn setup() -> (fleet_emulator::RunningEmulator, Clients, String, String) {
    let emulator = start(FLEET).await;
    let c = clients_in(&emulator, "111111111111", None, "eu-west-1").await;
    let a = c
        .kms
        .create_key()
        .description("A")
        .send()
        .await
        .expect("key A")
        .key_metadata
        .expect("meta");
    let b = c
        .kms
        .create_key()
        .description("B")
        .send()
        .await
        .expect("key B")
        .key_metadata
        .expect("meta");
    c.kms
        .create_alias()
        .alias_name("alias/a")
        .target_key_id(a.key_id())
        .send()
        .await
        .expect("alias a");
    c.dynamodb
        .create_table()
        .table_name("orders")
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                .build()
                .expect("key schema"),
        )
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .expect("attribute"),
        )
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create table");
    (
        emulator,
        c,
        a.arn().expect("arn").to_owned(),
        b.arn().expect("arn").to_owned(),
    )
}

/// Sends an update, checks the table is UPDATING right after, waits for ACTIVE and returns the key ARN shown.
async fn switch(c: &Clients, sse: aws_sdk_dynamodb::types::SseSpecification) -> Option<String> {
    let out = c
        .dynamodb
        .update_table()
        .table_name("orders")
        .sse_specification(sse)
        .send()
        .await
        .expect("update");
    assert_eq!(
        out.table_description.and_then(|t| t.table_status),
        Some(TableStatus::Updating)
    );
    let described = c
        .dynamodb
        .describe_table()
        .table_name("orders")
        .send()
        .await
        .expect("describe")
        .table
        .expect("t");
    assert_eq!(described.table_status, Some(TableStatus::Updating));
    let table = wait_active(&c.dynamodb, "orders").await;
    table.sse_description.map(|sse| {
        assert_eq!(sse.status, Some(SseStatus::Enabled));
        sse.kms_master_key_arn.expect("key arn")
    })
}

#[tokio::test]
async fn owned_to_managed_to_customer_a_to_b_then_quota() {
    let (emulator, c, a_arn, b_arn) = setup().await;
    let table = c
        .dynamodb
        .describe_table()
        .table_name("orders")
        .send()
        .await
        .expect("describe")
        .table
        .expect("t");
    assert_eq!(table.table_status, Some(TableStatus::Active));
    assert!(
        table.sse_description.is_none(),
        "AWS owned key: no SSEDescription"
    );

    // 1: AWS managed key, created on first use.
    let managed = switch(&c, sse_managed()).await.expect("managed key arn");
    let meta = c
        .kms
        .describe_key()
        .key_id("alias/aws/dynamodb")
        .send()
        .await
        .expect("managed")
        .key_metadata
        .expect("m");
    assert_eq!(meta.arn(), Some(managed.as_str()));
    assert_eq!(
        meta.key_manager(),
        Some(&aws_sdk_kms::types::KeyManagerType::Aws)
    );

    // 2: customer key A by alias; 3: B by key id. The answer is always the full key ARN.
    assert_eq!(switch(&c, sse_key("alias/a")).await, Some(a_arn.clone()));
    let b_id = b_arn.rsplit('/').next().expect("id").to_owned();
    assert_eq!(switch(&c, sse_key(&b_id)).await, Some(b_arn.clone()));

    // Re-sending the current key is refused with AWS's message (tablecrypt treats it as success).
    let err = c
        .dynamodb
        .update_table()
        .table_name("orders")
        .sse_specification(sse_key(&b_arn))
        .send()
        .await
        .expect_err("same");
    assert_eq!(code(&err), "ValidationException");
    assert!(
        message(&err).contains("Table is already encrypted with given KMSMasterKeyId"),
        "{}",
        message(&err)
    );

    // 4: back to A. The 5th change within 24 h is refused.
    assert_eq!(switch(&c, sse_key(&a_arn)).await, Some(a_arn.clone()));
    let err = c
        .dynamodb
        .update_table()
        .table_name("orders")
        .sse_specification(sse_key(&b_arn))
        .send()
        .await
        .expect_err("5th");
    assert_eq!(code(&err), "LimitExceededException");
    assert!(
        message(&err).contains("Encryption mode changes are limited in the 24h window"),
        "{}",
        message(&err)
    );

    // Switching to the AWS owned key is always allowed.
    assert_eq!(switch(&c, sse_owned()).await, None);
    let err = c
        .dynamodb
        .update_table()
        .table_name("orders")
        .sse_specification(sse_key(&b_arn))
        .send()
        .await
        .expect_err("still");
    assert_eq!(code(&err), "LimitExceededException");

    // Six quiet hours allow one more change. (The 1 h session expired meanwhile: assume the role again.)
    advance_clock(&emulator, 6.0 * 3600.0 + 1.0).await;
    let c = clients_in(&emulator, "111111111111", None, "eu-west-1").await;
    assert_eq!(switch(&c, sse_key(&b_arn)).await, Some(b_arn.clone()));
    let err = c
        .dynamodb
        .update_table()
        .table_name("orders")
        .sse_specification(sse_key(&a_arn))
        .send()
        .await
        .expect_err("again");
    assert_eq!(code(&err), "LimitExceededException");

    // A full day later the window is clear.
    advance_clock(&emulator, 24.0 * 3600.0).await;
    let c = clients_in(&emulator, "111111111111", None, "eu-west-1").await;
    assert_eq!(switch(&c, sse_key(&a_arn)).await, Some(a_arn));
    emulator.stop().await.expect("stop");
}

#[tokio::test]
async fn updates_in_flight_are_resource_in_use_and_limited_per_region() {
    let (emulator, c, a_arn, _) = setup().await;
    c.dynamodb
        .update_table()
        .table_name("orders")
        .sse_specification(sse_key(&a_arn))
        .send()
        .await
        .expect("first");
    let err = c
        .dynamodb
        .update_table()
        .table_name("orders")
        .sse_specification(sse_owned())
        .send()
        .await
        .expect_err("busy");
    assert_eq!(code(&err), "ResourceInUseException");
    let described = c
        .dynamodb
        .describe_table()
        .table_name("orders")
        .send()
        .await
        .expect("d")
        .table
        .expect("t");
    assert_eq!(
        described.sse_description.and_then(|s| s.status),
        Some(SseStatus::Enabling)
    );
    wait_active(&c.dynamodb, "orders").await;

    // With the limit at 1 table in flight per region, a second table's update is refused while one runs.
    let (status, body) = admin(
        &emulator,
        "PUT",
        "/settings",
        r#"{"update_seconds": 5, "inaccessible_after_seconds": 300, "max_updating_tables_per_region": 1, "request_log_capacity": 1000}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    c.dynamodb
        .create_table()
        .table_name("second")
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                .build()
                .expect("schema"),
        )
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .expect("attr"),
        )
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .send()
        .await
        .expect("second table");
    c.dynamodb
        .update_table()
        .table_name("orders")
        .sse_specification(sse_owned())
        .send()
        .await
        .expect("one in flight");
    let err = c
        .dynamodb
        .update_table()
        .table_name("second")
        .sse_specification(sse_managed())
        .send()
        .await
        .expect_err("limit");
    assert_eq!(code(&err), "LimitExceededException");
    assert!(message(&err).contains("Only 1 tables"), "{}", message(&err));
    emulator.stop().await.expect("stop");
}

#[tokio::test]
async fn list_tables_pages_with_exclusive_start_and_limit() {
    let emulator = start(
        r#"
hub: {account_id: "000000000000", access_key_id: AKIAHUBTEST000000000, secret_access_key: hub-secret}
accounts:
  - account_id: "111111111111"
    roles: [{name: tablecrypt-member}]
    regions: [eu-west-1]
    generate: [{count: 7, prefix: t-}]
"#,
    )
    .await;
    let c = clients_in(&emulator, "111111111111", None, "eu-west-1").await;
    let mut names = Vec::new();
    let mut start: Option<String> = None;
    let mut pages = 0;
    loop {
        let out = c
            .dynamodb
            .list_tables()
            .limit(3)
            .set_exclusive_start_table_name(start.clone())
            .send()
            .await
            .expect("page");
        pages += 1;
        names.extend(out.table_names.unwrap_or_default());
        match out.last_evaluated_table_name {
            Some(last) => start = Some(last),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        names,
        (0..7).map(|i| format!("t-{i:05}")).collect::<Vec<_>>()
    );
    let err = c
        .dynamodb
        .list_tables()
        .limit(101)
        .send()
        .await
        .expect_err("limit above 100");
    assert_eq!(code(&err), "ValidationException");
    emulator.stop().await.expect("stop");
}
