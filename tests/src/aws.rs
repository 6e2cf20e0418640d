//! AWS SDK clients acting as a member account, for tests that seed or change a fleet (the emulator's or
//! moto's) behind tablecrypt's back.

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;

/// The hub's long-term key, as in the test fleets and `.cargo/config.toml`.
pub const HUB_ACCESS_KEY_ID: &str = "AKIAHUBTEST000000000";
pub const HUB_SECRET_ACCESS_KEY: &str = "hub-secret";

pub async fn sdk_config(
    endpoint: &str,
    credentials: Credentials,
    region: &str,
) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(region.to_owned()))
        .credentials_provider(credentials)
        .load()
        .await
}

/// DynamoDB and KMS clients acting as `account` in `region`, through `role` assumed with the hub's key.
pub async fn member_clients(
    endpoint: &str,
    account: &str,
    role: &str,
    region: &str,
) -> (aws_sdk_dynamodb::Client, aws_sdk_kms::Client) {
    let hub = Credentials::new(HUB_ACCESS_KEY_ID, HUB_SECRET_ACCESS_KEY, None, None, "hub");
    let sts = aws_sdk_sts::Client::new(&sdk_config(endpoint, hub, region).await);
    let assumed = sts
        .assume_role()
        .role_arn(format!("arn:aws:iam::{account}:role/{role}"))
        .role_session_name("test-seed")
        .send()
        .await
        .expect("assume the member role")
        .credentials
        .expect("credentials");
    let credentials = Credentials::new(
        assumed.access_key_id,
        assumed.secret_access_key,
        Some(assumed.session_token),
        None,
        "assumed",
    );
    let config = sdk_config(endpoint, credentials, region).await;
    (
        aws_sdk_dynamodb::Client::new(&config),
        aws_sdk_kms::Client::new(&config),
    )
}
