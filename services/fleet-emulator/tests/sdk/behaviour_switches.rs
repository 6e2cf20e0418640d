//! The `aws-observed` behaviour profile as the AWS SDK sees it: each switch of `crate::behaviour` (and the
//! member-role permissions and archival states both profiles share), answered as AWS is observed to answer.

use crate::common::*;
use aws_sdk_dynamodb::types::{
    ProvisionedThroughput, ReplicationGroupUpdate, UpdateReplicationGroupMemberAction,
};

/// The observed profile, except that a change shows at once and as UPDATING, so that it can be waited for; those
/// two switches have tests of their own (`tests/tests/e2e/change_aws_observed.rs`).
const FLEET: &str = r#"
hub: {account_id: "000000000000", access_key_id: AKIAHUBTEST000000000, secret_access_key: hub-secret}
settings: {update_seconds: 0.2}
behaviour: {profile: aws-observed, old_key_visible_seconds: 0, sse_change_table_status: UPDATING}
accounts:
  - account_id: "111111111111"
    roles: [{name: tablecrypt-member}]
    regions: [eu-west-1, us-east-1]
    keys:
      - {region: eu-west-1, aliases: [alias/a]}
      - {region: eu-west-1, aliases: [alias/b]}
      - {region: eu-west-1, aliases: [alias/rsa], spec: RSA_2048}
      - {region: eu-west-1, aliases: [alias/global]}
      - {region: us-east-1, aliases: [alias/global]}
    tables:
      - {name: orders, region: eu-west-1, encryption: alias/a}
      - {name: plain, region: eu-west-1}
      - {name: sessions, region: eu-west-1, replicas: [us-east-1], encryption: alias/global}
  - account_id: "222222222222"
    roles: [{name: tablecrypt-member, denied_actions: ["kms:CreateGrant", "kms:DescribeKey"]}]
    regions: [eu-west-1]
    keys:
      - {region: eu-west-1, aliases: [alias/a]}
      - {region: eu-west-1, aliases: [alias/b]}
    tables:
      - {name: orders, region: eu-west-1, encryption: alias/a}
"#;

async fn key_arn(clients: &Clients, alias: &str) -> String {
    clients
        .kms
        .describe_key()
        .key_id(alias)
        .send()
        .await
        .expect("key")
        .key_metadata
        .and_then(|m| m.arn)
        .expect("arn")
}

#[tokio::test]
async fn an_encryption_change_must_be_the_only_operation_of_its_call() {
    let emulator = start(FLEET).await;
    let eu = clients_in(&emulator, "111111111111", None, "eu-west-1").await;
    let replica_update = ReplicationGroupUpdate::builder()
        .update(
            UpdateReplicationGroupMemberAction::builder()
                .region_name("us-east-1")
                .kms_master_key_id("alias/global")
                .build()
                .expect("update"),
        )
        .build();
    let err = eu
        .dynamodb
        .update_table()
        .table_name("sessions")
        .sse_specification(sse_managed())
        .replica_updates(replica_update)
        .send()
        .await
        .expect_err("two concerns");
    assert_eq!(code(&err), "ValidationException");
    assert!(
        message(&err).contains("Replica modification must be the only operation in the request"),
        "{}",
        message(&err)
    );
    let err = eu
        .dynamodb
        .update_table()
        .table_name("orders")
        .sse_specification(sse_key("alias/b"))
        .provisioned_throughput(
            ProvisionedThroughput::builder()
                .read_capacity_units(5)
                .write_capacity_units(5)
                .build()
                .expect("throughput"),
        )
        .send()
        .await
        .expect_err("two concerns");
    assert!(
        message(&err).contains("must be the only operation in the request"),
        "{}",
        message(&err)
    );
}

/// AWS managed set on one replica applies to every replica, each with its own region's AWS managed key.
#[tokio::test]
async fn aws_managed_on_one_replica_applies_to_every_replica() {
    let emulator = start(FLEET).await;
    let eu = clients_in(&emulator, "111111111111", None, "eu-west-1").await;
    let us = clients_in(&emulator, "111111111111", None, "us-east-1").await;
    eu.dynamodb
        .update_table()
        .table_name("sessions")
        .sse_specification(sse_managed())
        .send()
        .await
        .expect("managed on a customer managed group");
    let table = wait_active(&eu.dynamodb, "sessions").await;
    let us_managed = key_arn(&us, "alias/aws/dynamodb").await;
    assert_eq!(
        table.replicas()[0].kms_master_key_id(),
        Some(us_managed.as_str())
    );
    let us_view = wait_active(&us.dynamodb, "sessions").await;
    assert_eq!(
        us_view.sse_description.and_then(|s| s.kms_master_key_arn),
        Some(us_managed)
    );
}

/// A table on a disabled key cannot be switched away from it: the refusal names the OLD key.
#[tokio::test]
async fn switching_away_from_a_disabled_key_is_refused_naming_it() {
    let emulator = start(FLEET).await;
    let eu = clients_in(&emulator, "111111111111", None, "eu-west-1").await;
    let old = key_arn(&eu, "alias/a").await;
    eu.kms
        .disable_key()
        .key_id(&old)
        .send()
        .await
        .expect("disable");
    let err = eu
        .dynamodb
        .update_table()
        .table_name("orders")
        .sse_specification(sse_key(&key_arn(&eu, "alias/b").await))
        .send()
        .await
        .expect_err("old key disabled");
    assert_eq!(code(&err), "ValidationException");
    assert!(message(&err).contains(&old), "{}", message(&err));
    eu.kms
        .enable_key()
        .key_id(&old)
        .send()
        .await
        .expect("enable");
    eu.dynamodb
        .update_table()
        .table_name("orders")
        .sse_specification(sse_key("alias/b"))
        .send()
        .await
        .expect("the old key enabled again");
}

/// Re-sending the current key: refused only as its exact ARN; as an alias it re-encrypts and spends a switch.
/// `{Enabled: false}` on a table already on the AWS owned key is refused in AWS's words.
#[tokio::test]
async fn the_current_key_is_refused_only_by_its_exact_arn() {
    let emulator = start(FLEET).await;
    let eu = clients_in(&emulator, "111111111111", None, "eu-west-1").await;
    let a = key_arn(&eu, "alias/a").await;
    let err = eu
        .dynamodb
        .update_table()
        .table_name("orders")
        .sse_specification(sse_key(&a))
        .send()
        .await
        .expect_err("exact ARN");
    assert!(
        message(&err).contains("already encrypted with given KMSMasterKeyId"),
        "{}",
        message(&err)
    );
    // As an alias: accepted, and a switch of the quota (4 per 24 h): the fifth is refused.
    for _ in 0..4 {
        eu.dynamodb
            .update_table()
            .table_name("orders")
            .sse_specification(sse_key("alias/a"))
            .send()
            .await
            .expect("alias of the current key");
        wait_active(&eu.dynamodb, "orders").await;
    }
    let err = eu
        .dynamodb
        .update_table()
        .table_name("orders")
        .sse_specification(sse_key("alias/b"))
        .send()
        .await
        .expect_err("quota spent by re-sends");
    assert_eq!(code(&err), "LimitExceededException");
    // Checked before the key, and naming when the next change is allowed.
    assert!(
        message(&err).contains("is allowed after"),
        "{}",
        message(&err)
    );
    let err = eu
        .dynamodb
        .update_table()
        .table_name("orders")
        .sse_specification(sse_key("alias/does-not-exist"))
        .send()
        .await
        .expect_err("quota first");
    assert_eq!(code(&err), "LimitExceededException", "{}", message(&err));
    let err = eu
        .dynamodb
        .update_table()
        .table_name("plain")
        .sse_specification(sse_owned())
        .send()
        .await
        .expect_err("already owned");
    assert!(
        message(&err).contains("already encrypted by default"),
        "{}",
        message(&err)
    );
}

#[tokio::test]
async fn an_asymmetric_key_is_a_500_and_another_accounts_key_access_denied() {
    let emulator = start(FLEET).await;
    let eu = clients_in(&emulator, "111111111111", None, "eu-west-1").await;
    let err = eu
        .dynamodb
        .update_table()
        .table_name("plain")
        .sse_specification(sse_key("alias/rsa"))
        .send()
        .await
        .expect_err("asymmetric");
    assert_eq!(code(&err), "InternalServerError");
    let foreign = "arn:aws:kms:eu-west-1:222222222222:key/aaaaaaaa-0000-4000-8000-000000000000";
    let err = eu
        .dynamodb
        .update_table()
        .table_name("plain")
        .sse_specification(sse_key(foreign))
        .send()
        .await
        .expect_err("another account's key");
    assert_eq!(code(&err), "AccessDeniedException", "{}", message(&err));
}

/// A member role without kms:CreateGrant or kms:DescribeKey is refused as IAM refuses, naming the action.
#[tokio::test]
async fn a_role_lacking_a_permission_is_refused_naming_it() {
    let emulator = start(FLEET).await;
    let denied = clients_in(&emulator, "222222222222", None, "eu-west-1").await;
    let err = denied
        .kms
        .describe_key()
        .key_id("alias/b")
        .send()
        .await
        .expect_err("no kms:DescribeKey");
    assert_eq!(
        err.as_service_error()
            .and_then(|e| aws_sdk_kms::error::ProvideErrorMetadata::code(e)),
        Some("AccessDeniedException")
    );
    let err = denied
        .dynamodb
        .update_table()
        .table_name("orders")
        .sse_specification(sse_key("alias/b"))
        .send()
        .await
        .expect_err("no kms:CreateGrant");
    assert_eq!(code(&err), "AccessDeniedException");
    assert!(
        message(&err).contains("kms:") && message(&err).contains("assumed-role/tablecrypt-member"),
        "{}",
        message(&err)
    );
}

/// ARCHIVING / ARCHIVED, set through the admin API: shown by DescribeTable, and no update is accepted.
#[tokio::test]
async fn an_archived_table_is_shown_archived_and_refuses_updates() {
    let emulator = start(FLEET).await;
    let (status, body) = admin(
        &emulator,
        "PUT",
        "/tables/111111111111/eu-west-1/orders",
        r#"{"archival": "ARCHIVED"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let eu = clients_in(&emulator, "111111111111", None, "eu-west-1").await;
    let table = eu
        .dynamodb
        .describe_table()
        .table_name("orders")
        .send()
        .await
        .expect("describe")
        .table
        .expect("table");
    assert_eq!(table.table_status().map(|s| s.as_str()), Some("ARCHIVED"));
    assert!(table.archival_summary().is_some());
    let err = eu
        .dynamodb
        .update_table()
        .table_name("orders")
        .sse_specification(sse_key("alias/b"))
        .send()
        .await
        .expect_err("archived");
    assert!(message(&err).contains("ARCHIVED"), "{}", message(&err));
    let (status, _) = admin(
        &emulator,
        "PUT",
        "/tables/111111111111/eu-west-1/orders",
        r#"{"archival": "GONE"}"#,
    )
    .await;
    assert_eq!(status, 400);
}
