//! Reading an AWS Organization for account discovery: its accounts, each one's OU path and tags, and the regions
//! it has enabled, through a role in the management (or a delegated administrator) account.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_account::types::RegionOptStatus;
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use tablecrypt_core::discovery::{OrgAccount, ROOT, path_segment};
use tablecrypt_core::{ExternalId, Partition, RoleArn};
use tokio::sync::Mutex;

use crate::clients::{AccountAccess, Fleet};
use crate::error::{FleetError, classify};

/// Accounts read at once. Organizations allows a few calls per second per API (ListParents,
/// ListTagsForResource); four in flight keep a 300-account read to a minute without leaning on the SDK's
/// throttling retries.
const READ_CONCURRENCY: usize = 4;

/// The role discovery reads the organization through.
#[derive(Debug, Clone)]
pub struct OrganizationAccess {
    pub role_arn: RoleArn,
    pub external_id: Option<ExternalId>,
}

/// The region Organizations and Account Management are called in: their endpoints live in one region of each
/// partition.
fn home_region(partition: Partition) -> &'static str {
    match partition {
        Partition::Aws => "us-east-1",
        Partition::AwsCn => "cn-northwest-1",
        Partition::AwsUsGov => "us-gov-west-1",
    }
}

/// The clients and the OU names already read (each OU is described once per discovery).
struct Reader {
    organizations: aws_sdk_organizations::Client,
    account: aws_sdk_account::Client,
    /// The account of the role: ListRegions is called without an account id for it.
    own_account: String,
    /// OU id -> (name, parent id).
    units: Mutex<HashMap<String, (String, String)>>,
}

impl Fleet {
    /// Every account of the organization, with its OU path, tags and enabled regions. An account whose enabled
    /// regions cannot be read (Account Management's trusted access is off) carries why instead; any other refusal
    /// fails the whole read, so discovery never acts on half an organization.
    pub async fn read_organization(
        &self,
        access: &OrganizationAccess,
    ) -> Result<Vec<OrgAccount>, FleetError> {
        let member = AccountAccess {
            account_id: access.role_arn.account_id().clone(),
            role_arn: access.role_arn.clone(),
            external_id: access.external_id.clone(),
        };
        let config = self
            .assumed_config(&member, home_region(access.role_arn.partition()))
            .await;
        let reader = Reader {
            organizations: aws_sdk_organizations::Client::new(&config),
            account: aws_sdk_account::Client::new(&config),
            own_account: member.account_id.to_string(),
            units: Mutex::new(HashMap::new()),
        };
        let named = |e| crate::clients::named_role(&member, e);
        let listed: Vec<aws_sdk_organizations::types::Account> = reader
            .organizations
            .list_accounts()
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(|e| named(classify(&e)))?
            .into_iter()
            .flat_map(|page| page.accounts.unwrap_or_default())
            .collect();
        let read: Vec<Option<OrgAccount>> = stream::iter(listed)
            .map(|account| reader.account(account))
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await
            .map_err(named)?;
        Ok(read.into_iter().flatten().collect())
    }
}

impl Reader {
    /// One account, or `None` if it left the organization while it was being read.
    async fn account(
        &self,
        account: aws_sdk_organizations::types::Account,
    ) -> Result<Option<OrgAccount>, FleetError> {
        match self.read_account(account).await {
            Err(e) if matches!(e.code.as_deref(), Some(GONE_CHILD | GONE_TARGET)) => Ok(None),
            other => other.map(Some),
        }
    }

    async fn read_account(
        &self,
        account: aws_sdk_organizations::types::Account,
    ) -> Result<OrgAccount, FleetError> {
        let account_id = account.id().unwrap_or_default().to_owned();
        // `State` replaced `Status` (2025); an organization answering only the old field is read from that.
        let state = account
            .state()
            .map(|s| s.as_str().to_owned())
            .or_else(|| account.status().map(|s| s.as_str().to_owned()))
            .unwrap_or_else(|| "ACTIVE".to_owned());
        let ou_path = self.ou_path(&account_id).await?;
        let tags: BTreeMap<String, String> = self
            .organizations
            .list_tags_for_resource()
            .resource_id(&account_id)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify(&e))?
            .into_iter()
            .map(|tag| (tag.key, tag.value))
            .collect();
        let enabled_regions = self.enabled_regions(&account_id).await?;
        Ok(OrgAccount {
            account_id,
            name: account.name().unwrap_or_default().to_owned(),
            state,
            ou_path,
            tags,
            enabled_regions,
        })
    }

    /// `Root/Workloads/Payments`: the names of the OUs above the account, from the root down.
    async fn ou_path(&self, account_id: &str) -> Result<String, FleetError> {
        let mut names = Vec::new();
        let mut child = account_id.to_owned();
        // An organization nests OUs at most five deep; the bound stops a malformed answer from looping.
        let mut reached_root = false;
        for _ in 0..=MAX_OU_DEPTH {
            let Some((parent, is_root)) = self.parent(&child).await? else {
                reached_root = true;
                break;
            };
            if is_root {
                reached_root = true;
                break;
            }
            names.push(path_segment(&self.unit_name(&parent).await?));
            child = parent;
        }
        if !reached_root {
            return Err(FleetError::new(
                tablecrypt_core::FailureKind::Unknown,
                format!("account {account_id}: no root within {MAX_OU_DEPTH} OUs above it"),
            ));
        }
        names.push(ROOT.to_owned());
        names.reverse();
        Ok(names.join("/"))
    }

    /// The parent of an account or OU, and whether it is the root.
    async fn parent(&self, child: &str) -> Result<Option<(String, bool)>, FleetError> {
        if let Some((_, parent)) = self.units.lock().await.get(child) {
            return Ok(Some((parent.clone(), parent.starts_with("r-"))));
        }
        let answer = self
            .organizations
            .list_parents()
            .child_id(child)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        Ok(answer.parents().first().map(|p| {
            (
                p.id().unwrap_or_default().to_owned(),
                p.r#type() == Some(&aws_sdk_organizations::types::ParentType::Root),
            )
        }))
    }

    async fn unit_name(&self, unit: &str) -> Result<String, FleetError> {
        if let Some((name, _)) = self.units.lock().await.get(unit) {
            return Ok(name.clone());
        }
        let described = self
            .organizations
            .describe_organizational_unit()
            .organizational_unit_id(unit)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        let name = described
            .organizational_unit()
            .and_then(|u| u.name())
            .unwrap_or(unit)
            .to_owned();
        let parent = self.parent(unit).await?.map(|(p, _)| p).unwrap_or_default();
        self.units
            .lock()
            .await
            .insert(unit.to_owned(), (name.clone(), parent));
        Ok(name)
    }

    /// The regions the account has enabled (opted in, or enabled by default); or, where Account Management
    /// refuses to say (its trusted access is off, or the account is the management account of an organization
    /// read through a delegated administrator), why not. Any other failure (throttling, an outage) fails the read:
    /// guessing would register regions the account never enabled.
    async fn enabled_regions(
        &self,
        account_id: &str,
    ) -> Result<Result<BTreeSet<String>, String>, FleetError> {
        let mut call = self
            .account
            .list_regions()
            .region_opt_status_contains(RegionOptStatus::Enabled)
            .region_opt_status_contains(RegionOptStatus::EnabledByDefault);
        // The management account's own regions are asked for without an account id.
        if account_id != self.own_account {
            call = call.account_id(account_id);
        }
        match call.into_paginator().items().send().try_collect().await {
            Ok(regions) => Ok(Ok(regions
                .into_iter()
                .filter_map(|r| r.region_name)
                .collect())),
            Err(e) => {
                let error = classify(&e);
                let refused = error.kind == tablecrypt_core::FailureKind::AccessDenied
                    || error.code.as_deref() == Some("ValidationException");
                if refused {
                    Ok(Err(error.to_string()))
                } else {
                    Err(error)
                }
            }
        }
    }
}

/// Organizations' answers for an account or OU that is no longer there (it left while being read).
const GONE_CHILD: &str = "ChildNotFoundException";
const GONE_TARGET: &str = "TargetNotFoundException";

/// How deep Organizations nests OUs (five levels below the root).
const MAX_OU_DEPTH: usize = 5;
