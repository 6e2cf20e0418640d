//! Shared set-up for the SDK tests: an emulator on port 0 and real AWS SDK clients pointed at it.

#![allow(dead_code)]

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_credential_types::Credentials;
use aws_sdk_dynamodb::types::SseSpecification;
use fleet_emulator::{Emulator, FleetSpec, RunningEmulator};

pub const HUB_KEY: &str = "AKIAHUBTEST000000000";
pub const HUB_SECRET: &str = "hub-secret";
pub const ROLE: &str = "tablecrypt-member";

pub async fn start(fleet_yaml: &str) -> RunningEmulator {
    let spec = FleetSpec::from_yaml(fleet_yaml).expect("valid fleet");
    Emulator::spawn(spec).await.expect("emulator starts")
}

/// An SDK config for `region` at the emulator, with fast retries (3 attempts, 10 ms initial backoff).
pub async fn sdk_config(
    emulator: &RunningEmulator,
    credentials: Credentials,
    region: &str,
) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(emulator.endpoint())
        .region(aws_config::Region::new(region.to_owned()))
        .credentials_provider(credentials)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(10)),
        )
        .load()
        .await
}

pub fn hub_credentials() -> Credentials {
    Credentials::new(HUB_KEY, HUB_SECRET, None, None, "tests")
}

/// AssumeRole into `account` as the hub, returning temporary credentials.
pub async fn assume(
    emulator: &RunningEmulator,
    account: &str,
    external_id: Option<&str>,
) -> Result<
    Credentials,
    aws_sdk_sts::error::SdkError<aws_sdk_sts::operation::assume_role::AssumeRoleError>,
> {
    let sts = aws_sdk_sts::Client::new(&sdk_config(emulator, hub_credentials(), "us-east-1").await);
    let out = sts
        .assume_role()
        .role_arn(format!("arn:aws:iam::{account}:role/{ROLE}"))
        .role_session_name("tablecrypt-test")
        .set_external_id(external_id.map(str::to_owned))
        .send()
        .await?;
    let c = out.credentials.expect("credentials");
    Ok(Credentials::new(
        c.access_key_id,
        c.secret_access_key,
        Some(c.session_token),
        None,
        "assumed",
    ))
}

/// DynamoDB and KMS clients acting in one account-region.
pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub kms: aws_sdk_kms::Client,
}

pub async fn clients(
    emulator: &RunningEmulator,
    credentials: Credentials,
    region: &str,
) -> Clients {
    let config = sdk_config(emulator, credentials, region).await;
    Clients {
        dynamodb: aws_sdk_dynamodb::Client::new(&config),
        kms: aws_sdk_kms::Client::new(&config),
    }
}

pub async fn clients_in(
    emulator: &RunningEmulator,
    account: &str,
    external_id: Option<&str>,
    region: &str,
) -> Clients {
    let credentials = assume(emulator, account, external_id)
        .await
        .expect("assume role");
    clients(emulator, credentials, region).await
}

/// The error code of an SDK error (`ValidationException`, ...).
pub fn code<E, R>(error: &aws_sdk_dynamodb::error::SdkError<E, R>) -> String
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    error
        .as_service_error()
        .and_then(|e| e.code())
        .unwrap_or("not a service error")
        .to_owned()
}

pub fn message<E, R>(error: &aws_sdk_dynamodb::error::SdkError<E, R>) -> String
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    error
        .as_service_error()
        .and_then(|e| e.message())
        .unwrap_or_default()
        .to_owned()
}

pub fn sse_managed() -> SseSpecification {
    SseSpecification::builder().enabled(true).build()
}

pub fn sse_key(key: &str) -> SseSpecification {
    SseSpecification::builder()
        .enabled(true)
        .sse_type(aws_sdk_dynamodb::types::SseType::Kms)
        .kms_master_key_id(key)
        .build()
}

pub fn sse_owned() -> SseSpecification {
    SseSpecification::builder().enabled(false).build()
}

/// Polls DescribeTable until the table is ACTIVE (or the deadline passes), returning the last description.
pub async fn wait_active(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> aws_sdk_dynamodb::types::TableDescription {
    for _ in 0..200 {
        let table = dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .expect("describe")
            .table
            .expect("table");
        if table.table_status == Some(aws_sdk_dynamodb::types::TableStatus::Active) {
            return table;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("table {table} never became ACTIVE");
}

/// A call to the admin API; returns (status, body).
pub async fn admin(
    emulator: &RunningEmulator,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    emulator
        .admin(method, path, body)
        .await
        .expect("admin API answers")
}

pub async fn advance_clock(emulator: &RunningEmulator, seconds: f64) {
    let (status, body) = admin(
        emulator,
        "POST",
        "/clock/advance",
        &format!("{{\"seconds\": {seconds}}}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}
