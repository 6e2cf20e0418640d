//! Global tables' per-replica keys, and injected faults as the SDK sees them.

use crate::common::*;
use aws_sdk_dynamodb::types::{ReplicationGroupUpdate, UpdateReplicationGroupMemberAction};
use serde_json::Value;

const FLEET: &str = r#"
hub: {account_id: "000000000000", access_key_id: AKIAHUBTEST000000000, secret_access_key: hub-secret}
settings: {update_seconds: 0.2}
accounts:
  - account_id: "111111111111"
    roles: [{name: tablecrypt-member}]
    regions: [eu-west-1, us-east-1]
    keys:
      - {region: eu-west-1, aliases: [alias/global]}
      - {region: us-east-1, aliases: [alias/global]}
    tables:
      - {name: sessions, region: eu-west-1, replicas: [us-east-1], encryption: managed}
      - {name: orders, region: eu-west-1}
  - account_id: "222222222222"
    roles: [{name: tablecrypt-member}]
    regions: [eu-west-1]
    tables:
      - {name: other, region: eu-west-1}
"#;

#[tokio::test]
async fn global_tables_take_a_key_per_replica_and_refuse_mixing() {
    let emulator = start(FLEET).await;
    let eu = clients_in(&emulator, "111111111111", None, "eu-west-1").await;
    let us = clients_in(&emulator, "111111111111", None, "us-east-1").await;
    let eu_key = eu
        .kms
        .describe_key()
        .key_id("alias/global")
        .send()
        .await
        .expect("eu")
        .key_metadata
        .expect("m");
    let us_key = us
        .kms
        .describe_key()
        .key_id("alias/global")
        .send()
        .await
        .expect("us")
        .key_metadata
        .expect("m");

    let table = eu
        .dynamodb
        .describe_table()
        .table_name("sessions")
        .send()
        .await
        .expect("d")
        .table
        .expect("t");
    assert_eq!(table.global_table_version(), Some("2019.11.21"));
    assert_eq!(table.replicas().len(), 1);
    assert_eq!(table.replicas()[0].region_name(), Some("us-east-1"));

    // Only the eu replica on a customer key, the us one still AWS managed: refused.
    let err = eu
        .dynamodb
        .update_table()
        .table_name("sessions")
        .sse_specification(sse_key("alias/global"))
        .send()
        .await
        .expect_err("mixed");
    assert_eq!(code(&err), "ValidationException");
    assert!(message(&err).contains("cannot mix"), "{}", message(&err));

    // Both replicas, each with a key of its own region: accepted.
    eu.dynamodb
        .update_table()
        .table_name("sessions")
        .sse_specification(sse_key("alias/global"))
        .replica_updates(
            ReplicationGroupUpdate::builder()
                .update(
                    UpdateReplicationGroupMemberAction::builder()
                        .region_name("us-east-1")
                        .kms_master_key_id("alias/global")
                        .build()
                        .expect("update"),
                )
                .build(),
        )
        .send()
        .await
        .expect("both replicas");
    let table = wait_active(&eu.dynamodb, "sessions").await;
    assert_eq!(
        table
            .sse_description
            .as_ref()
            .and_then(|s| s.kms_master_key_arn.as_deref()),
        eu_key.arn()
    );
    assert_eq!(table.replicas()[0].kms_master_key_id(), us_key.arn());
    let us_view = wait_active(&us.dynamodb, "sessions").await;
    assert_eq!(
        us_view
            .sse_description
            .and_then(|s| s.kms_master_key_arn)
            .as_deref(),
        us_key.arn()
    );
    emulator.stop().await.expect("stop");
}

#[tokio::test]
async fn injected_throttling_is_retried_by_the_sdk_and_scoped_to_its_account() {
    let emulator = start(FLEET).await;
    let a = clients_in(&emulator, "111111111111", None, "eu-west-1").await;
    let b = clients_in(&emulator, "222222222222", None, "eu-west-1").await;
    let (status, body) = admin(
        &emulator,
        "POST",
        "/faults",
        r#"{"type": "throttle", "rate": 1.0, "service": "dynamodb", "operation": "DescribeTable", "account_id": "111111111111"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let err = a
        .dynamodb
        .describe_table()
        .table_name("orders")
        .send()
        .await
        .expect_err("throttled");
    assert_eq!(code(&err), "ThrottlingException");
    b.dynamodb
        .describe_table()
        .table_name("other")
        .send()
        .await
        .expect("other account unaffected");

    // The SDK retried: three attempts (our retry config) reached the emulator, all throttled.
    let (_, body) = admin(
        &emulator,
        "GET",
        "/requests?operation=DescribeTable&account_id=111111111111",
        "",
    )
    .await;
    let log: Value = serde_json::from_str(&body).expect("json");
    let outcomes: Vec<&str> = log["requests"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    assert_eq!(outcomes, vec!["ThrottlingException"; 3]);

    // Server errors are retried too, and a ceiling lets the first requests of each second through.
    assert_eq!(admin(&emulator, "DELETE", "/faults", "").await.0, 204);
    admin(
        &emulator,
        "POST",
        "/faults",
        r#"{"type": "server_error", "rate": 1.0, "operation": "ListTables"}"#,
    )
    .await;
    let err = a.dynamodb.list_tables().send().await.expect_err("500");
    assert!(
        err.raw_response()
            .is_some_and(|r| r.status().as_u16() == 500),
        "{err:?}"
    );
    admin(&emulator, "DELETE", "/faults", "").await;
    admin(
        &emulator,
        "POST",
        "/faults",
        r#"{"type": "throttle_above", "requests_per_second": 2, "operation": "DescribeTable"}"#,
    )
    .await;
    let mut throttled = 0;
    for _ in 0..4 {
        let result = a
            .dynamodb
            .describe_table()
            .table_name("orders")
            .customize()
            .config_override(
                aws_sdk_dynamodb::config::Config::builder()
                    .retry_config(aws_config::retry::RetryConfig::disabled()),
            )
            .send()
            .await;
        if let Err(e) = result {
            assert_eq!(code(&e), "ThrottlingException");
            throttled += 1;
        }
    }
    assert!(
        throttled >= 1,
        "4 calls in well under a second against a ceiling of 2/s"
    );

    let (_, counters) = admin(&emulator, "GET", "/counters", "").await;
    let counters: Value = serde_json::from_str(&counters).expect("json");
    assert!(
        counters["DescribeTable"]["ThrottlingException"]
            .as_u64()
            .unwrap_or(0)
            >= 4
    );
    emulator.stop().await.expect("stop");
}
