//! One long-lived set of AWS clients per (account, region).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_config::identity::IdentityCache;
use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::retry::RetryPartition;
use tablecrypt_core::{Account, AccountId, ExternalId, Region as AwsRegion, RoleArn};

use crate::error::FleetError;
use crate::settings::FleetSettings;

/// What tablecrypt needs to act in an account: the role to assume and the external id its trust policy wants.
#[derive(Debug, Clone)]
pub struct AccountAccess {
    pub account_id: AccountId,
    pub role_arn: RoleArn,
    pub external_id: Option<ExternalId>,
}

impl AccountAccess {
    /// How to reach a registered account.
    pub fn of(account: &Account) -> Self {
        Self {
            account_id: account.account_id.clone(),
            role_arn: account.spec.role_arn.clone(),
            external_id: account.spec.external_id.clone(),
        }
    }
}

/// The clients of one account-region, sharing one assumed-role credentials provider.
#[derive(Debug)]
pub struct RegionClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub kms: aws_sdk_kms::Client,
    pub sts: aws_sdk_sts::Client,
    /// The AWS managed DynamoDB key's ARN, once looked up (it never changes for an account-region).
    pub managed_key_arn: std::sync::OnceLock<String>,
}

/// A cached client set and the access it was built for (rebuilt if the account's role or external id change).
struct CachedClients {
    role_arn: String,
    external_id: Option<String>,
    clients: Arc<RegionClients>,
}

/// The fleet: base credentials from the default chain, and client sets per account-region built on demand.
pub struct Fleet {
    base: SdkConfig,
    settings: FleetSettings,
    /// Shared by every client, sized for the fleet (see [`FleetSettings::identity_cache_partitions`]).
    identity_cache: SharedCache,
    clients: Mutex<HashMap<(String, String), CachedClients>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

type SharedCache = aws_sdk_dynamodb::config::SharedIdentityCache;

impl Fleet {
    /// Loads base credentials from the default chain (environment, profile, web identity / IRSA, instance role).
    pub async fn new(settings: FleetSettings) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(settings.sts_region.clone()));
        if let Some(endpoint) = &settings.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        let base = loader.load().await;
        Self::with_base_config(base, settings)
    }

    /// The hub's own configuration: its credentials, the endpoint override.
    pub(crate) fn base(&self) -> &SdkConfig {
        &self.base
    }

    /// For tests and tools that bring their own base configuration.
    pub fn with_base_config(base: SdkConfig, settings: FleetSettings) -> Self {
        let identity_cache = IdentityCache::lazy()
            .max_partitions(settings.identity_cache_partitions)
            .build();
        Self {
            base,
            settings,
            identity_cache,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// An expired session token (the cached assumed-role credentials outlived their session, e.g. after clock
    /// skew) is not a denial: forget this account-region's clients so the next call assumes the role afresh, and
    /// call it transient so callers retry. A real denial names the member role (see [`named_role`]).
    pub(crate) fn expired_or(
        &self,
        access: &AccountAccess,
        region: AwsRegion,
        error: FleetError,
    ) -> FleetError {
        let expired = matches!(
            error.code.as_deref(),
            Some("ExpiredToken" | "ExpiredTokenException" | "RequestExpired")
        );
        if !expired {
            return named_role(access, error);
        }
        self.clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&(access.account_id.to_string(), region.to_string()));
        tracing::warn!(account_id = %access.account_id, %region, "assumed-role credentials expired; renewing");
        FleetError {
            kind: tablecrypt_core::FailureKind::Transient,
            ..error
        }
    }

    /// The clients for `access` in `region`, built once and reused.
    pub async fn clients(&self, access: &AccountAccess, region: AwsRegion) -> Arc<RegionClients> {
        let key = (access.account_id.to_string(), region.to_string());
        let external_id = access.external_id.as_ref().map(|e| e.expose().to_owned());
        {
            let cache = self
                .clients
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(cached) = cache.get(&key)
                && cached.role_arn == access.role_arn.as_str()
                && cached.external_id == external_id
            {
                return cached.clients.clone();
            }
        }
        let clients = Arc::new(self.build(access, region).await);
        let mut cache = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.insert(
            key,
            CachedClients {
                role_arn: access.role_arn.to_string(),
                external_id,
                clients: clients.clone(),
            },
        );
        clients
    }

    async fn build(&self, access: &AccountAccess, region: AwsRegion) -> RegionClients {
        let config = self.assumed_config(access, region.as_str()).await;
        // One retry partition per account-region: throttling in one account must not spend another's retries.
        let partition = RetryPartition::new(format!("tablecrypt-{}-{}", access.account_id, region));
        RegionClients {
            dynamodb: aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(&config)
                    .retry_partition(partition.clone())
                    .build(),
            ),
            kms: aws_sdk_kms::Client::from_conf(
                aws_sdk_kms::config::Builder::from(&config)
                    .retry_partition(partition.clone())
                    .build(),
            ),
            sts: aws_sdk_sts::Client::from_conf(
                aws_sdk_sts::config::Builder::from(&config)
                    .retry_partition(partition)
                    .build(),
            ),
            managed_key_arn: std::sync::OnceLock::new(),
        }
    }

    /// The SDK configuration for acting through `access`'s role in `region`: assumed-role credentials from the
    /// hub's, the shared identity cache, timeouts and retries.
    pub(crate) async fn assumed_config(&self, access: &AccountAccess, region: &str) -> SdkConfig {
        let mut provider = AssumeRoleProvider::builder(access.role_arn.as_str())
            .session_name(&self.settings.session_name)
            .session_length(self.settings.session_length)
            .region(Region::new(self.settings.sts_region.clone()))
            .configure(&self.base);
        if let Some(external_id) = &access.external_id {
            provider = provider.external_id(external_id.expose());
        }
        let provider = provider.build().await;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(self.settings.connect_timeout)
            .operation_timeout(self.settings.operation_timeout)
            .build();
        let retry = RetryConfig::standard().with_max_attempts(self.settings.max_attempts);
        self.base
            .to_builder()
            .region(Region::new(region.to_owned()))
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(provider),
            )
            .identity_cache(self.identity_cache.clone())
            .timeout_config(timeouts)
            .retry_config(retry)
            .build()
    }
}

/// An access denial names the member role it came through, whatever AWS's text says (an IAM-style message names
/// the assumed-role session; a KMS key policy's denial may name nothing): the operator must know which role lacks
/// the permission.
pub(crate) fn named_role(access: &AccountAccess, mut error: FleetError) -> FleetError {
    let role = access.role_arn.as_str();
    if error.kind == tablecrypt_core::FailureKind::AccessDenied && !error.message.contains(role) {
        error.message = format!("{} (through the member role {role})", error.message);
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use tablecrypt_core::FailureKind;

    #[test]
    fn a_denial_names_the_member_role_once() {
        let access = AccountAccess {
            account_id: AccountId::parse("111111111111").expect("id"),
            role_arn: RoleArn::parse("arn:aws:iam::111111111111:role/tablecrypt-member")
                .expect("arn"),
            external_id: None,
        };
        let denied = named_role(
            &access,
            FleetError::new(
                FailureKind::AccessDenied,
                "AccessDeniedException: not authorized: kms:CreateGrant",
            ),
        );
        assert!(denied.message.ends_with(
            "(through the member role arn:aws:iam::111111111111:role/tablecrypt-member)"
        ));
        let again = named_role(&access, denied.clone());
        assert_eq!(again.message, denied.message);
        let other = named_role(
            &access,
            FleetError::new(FailureKind::Throttled, "slow down"),
        );
        assert_eq!(other.message, "slow down");
    }
}
