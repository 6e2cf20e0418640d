//! AWS Organizations (awsJson1_1, `X-Amz-Target: AWSOrganizationsV20161128.<Op>`) and Account Management's
//! `ListRegions` (restJson1, `POST /listRegions`), as far as account discovery reads them: `ListAccounts`,
//! `ListParents`, `DescribeOrganizationalUnit`, `ListTagsForResource`, from the fleet file's `organization`.
//!
//! As AWS: only sessions of the management account or of a delegated administrator may read the organization
//! (others get AccessDeniedException; without an organization, AWSOrganizationsNotInUseException); ListAccounts
//! pages hold at most 20 accounts; ids look like AWS's (`r-` root, `ou-` units). A role in the management account
//! may lack an action (`denied_actions: [organizations:ListAccounts]`, `account:ListRegions`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{AwsError, permissions};
use crate::fleet_file::OrganizationSpec;
use crate::world::{Caller, World, lock};

/// The root's id.
const ROOT_ID: &str = "r-root";
/// The organization's id, in every ARN.
const ORG_ID: &str = "o-emulator";
/// ListAccounts' largest page.
const MAX_ACCOUNTS_PAGE: usize = 20;
/// Regions enabled in every account; the rest of [`OPT_IN`] must be opted into.
const BY_DEFAULT: [&str; 17] = [
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-north-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-south-1",
    "sa-east-1",
];
/// Opt-in regions (launched after March 2019).
const OPT_IN: [&str; 12] = [
    "af-south-1",
    "ap-east-1",
    "ap-south-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ca-west-1",
    "eu-central-2",
    "eu-south-1",
    "eu-south-2",
    "il-central-1",
    "me-central-1",
    "me-south-1",
];

/// The OU tree: id -> (name, parent id), and path -> id.
struct Tree {
    units: BTreeMap<String, (String, String)>,
    by_path: BTreeMap<String, String>,
}

impl Tree {
    /// Every OU named by `units` or an account's `ou`, with the OUs above it. Ids are stable for a path.
    fn of(org: &OrganizationSpec) -> Self {
        let mut tree = Self {
            units: BTreeMap::new(),
            by_path: BTreeMap::from([("Root".to_owned(), ROOT_ID.to_owned())]),
        };
        let paths = org
            .units
            .iter()
            .cloned()
            .chain(org.accounts.iter().map(|a| a.ou.clone()));
        for path in paths {
            let mut parent = ROOT_ID.to_owned();
            let mut so_far = "Root".to_owned();
            for name in path
                .trim_matches('/')
                .split('/')
                .skip_while(|n| *n == "Root")
            {
                if name.is_empty() {
                    continue;
                }
                so_far = format!("{so_far}/{name}");
                let id = tree
                    .by_path
                    .entry(so_far.clone())
                    .or_insert_with(|| format!("ou-root-{:08x}", fnv(&so_far)))
                    .clone();
                tree.units
                    .entry(id.clone())
                    .or_insert_with(|| (name.to_owned(), parent.clone()));
                parent = id;
            }
        }
        tree
    }

    fn unit_of(&self, path: &str) -> String {
        let path = path.trim_matches('/');
        let path = if path.is_empty() { "Root" } else { path };
        self.by_path
            .get(path)
            .or_else(|| self.by_path.get(&format!("Root/{path}")))
            .cloned()
            .unwrap_or_else(|| ROOT_ID.to_owned())
    }
}

/// A stable short hash for OU ids.
fn fnv(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn string<'a>(input: &'a Value, field: &str) -> Option<&'a str> {
    input.get(field).and_then(Value::as_str)
}

/// The organization the caller may read, or AWS's refusal.
fn readable(world: &World, caller: &Caller, action: &str) -> Result<OrganizationSpec, AwsError> {
    let Some(org) = world.organization() else {
        return Err(AwsError::new(
            400,
            "AWSOrganizationsNotInUseException",
            "Your account is not a member of an organization.",
        ));
    };
    let member = caller.account_id == org.management_account_id
        || org.delegated_administrators.contains(&caller.account_id);
    if !member {
        return Err(AwsError::new(
            400,
            "AccessDeniedException",
            "You don't have permissions to access this resource.",
        ));
    }
    let account = world.account(&caller.account_id);
    permissions::require(
        &lock(&account),
        caller,
        action,
        &format!(
            "arn:aws:organizations::{}:organization/{ORG_ID}",
            org.management_account_id
        ),
    )?;
    Ok(org)
}

/// Organizations operations.
pub fn handle(
    world: &World,
    caller: &Caller,
    _region: &str,
    operation: &str,
    input: &Value,
) -> Result<Value, AwsError> {
    let org = readable(world, caller, &format!("organizations:{operation}"))?;
    let tree = Tree::of(&org);
    let invalid = |message: String| AwsError::new(400, "InvalidInputException", message);
    match operation {
        "ListAccounts" => {
            let size = match input.get("MaxResults").and_then(Value::as_u64) {
                None => MAX_ACCOUNTS_PAGE,
                Some(n @ 1..=20) => n as usize,
                Some(n) => return Err(invalid(format!("MaxResults {n} is not between 1 and 20"))),
            };
            let start: usize = match string(input, "NextToken") {
                None => 0,
                Some(token) => token
                    .parse()
                    .map_err(|_| invalid("The NextToken is not valid.".into()))?,
            };
            let page: Vec<Value> = org
                .accounts
                .iter()
                .skip(start)
                .take(size)
                .map(|a| {
                    let state = if a.state.is_empty() { "ACTIVE" } else { a.state.as_str() };
                    // The deprecated Status has no CLOSED.
                    let status = if state == "CLOSED" { "SUSPENDED" } else { state };
                    json!({
                        "Id": a.account_id,
                        "Arn": format!("arn:aws:organizations::{}:account/{ORG_ID}/{}", org.management_account_id, a.account_id),
                        "Email": format!("aws+{}@example.com", a.account_id),
                        "Name": a.name,
                        "Status": status,
                        "State": state,
                        "JoinedMethod": "CREATED",
                        "JoinedTimestamp": 1_700_000_000,
                    })
                })
                .collect();
            let mut answer = json!({ "Accounts": page });
            if start + size < org.accounts.len() {
                answer["NextToken"] = json!((start + size).to_string());
            }
            Ok(answer)
        }
        "ListParents" => {
            let child = string(input, "ChildId").unwrap_or_default();
            let parent = if let Some(account) = org.accounts.iter().find(|a| a.account_id == child)
            {
                tree.unit_of(&account.ou)
            } else if let Some((_, parent)) = tree.units.get(child) {
                parent.clone()
            } else {
                return Err(AwsError::new(
                    400,
                    "ChildNotFoundException",
                    "We can't find an organizational unit (OU) or AWS account with the ChildId that you specified.",
                ));
            };
            let kind = if parent == ROOT_ID {
                "ROOT"
            } else {
                "ORGANIZATIONAL_UNIT"
            };
            Ok(json!({ "Parents": [{ "Id": parent, "Type": kind }] }))
        }
        "DescribeOrganizationalUnit" => {
            let id = string(input, "OrganizationalUnitId").unwrap_or_default();
            let Some((name, _)) = tree.units.get(id) else {
                return Err(AwsError::new(
                    400,
                    "OrganizationalUnitNotFoundException",
                    "We can't find an organizational unit (OU) with the OrganizationalUnitId that you specified.",
                ));
            };
            Ok(json!({ "OrganizationalUnit": {
                "Id": id,
                "Arn": format!("arn:aws:organizations::{}:ou/{ORG_ID}/{id}", org.management_account_id),
                "Name": name,
            }}))
        }
        "ListTagsForResource" => {
            let id = string(input, "ResourceId").unwrap_or_default();
            let Some(account) = org.accounts.iter().find(|a| a.account_id == id) else {
                return Err(AwsError::new(
                    400,
                    "TargetNotFoundException",
                    "We can't find a root, OU, account, or policy with the TargetId that you specified.",
                ));
            };
            let tags: Vec<Value> = account
                .tags
                .iter()
                .map(|(k, v)| json!({ "Key": k, "Value": v }))
                .collect();
            Ok(json!({ "Tags": tags }))
        }
        other => Err(AwsError::new(
            400,
            "UnknownOperationException",
            format!("The emulator does not implement Organizations {other}"),
        )),
    }
}

/// Account Management's `ListRegions`: for the caller's own account, or (from the management account or a
/// delegated administrator) for a member account. Regions by default are ENABLED_BY_DEFAULT; opt-in regions are
/// ENABLED when the account opted in, else DISABLED.
pub fn list_regions(world: &World, caller: &Caller, input: &Value) -> Result<Value, AwsError> {
    let target = string(input, "AccountId")
        .unwrap_or(&caller.account_id)
        .to_owned();
    let account = world.account(&caller.account_id);
    permissions::require(
        &lock(&account),
        caller,
        "account:ListRegions",
        &format!("arn:aws:account::{target}:account"),
    )?;
    let org = world.organization().unwrap_or_default();
    if target != caller.account_id {
        if target == org.management_account_id {
            return Err(AwsError::new(
                400,
                "ValidationException",
                "The management account can only be managed using the standalone context from the management account.",
            ));
        }
        let may = caller.account_id == org.management_account_id
            || org.delegated_administrators.contains(&caller.account_id);
        if !may {
            return Err(AwsError::new(
                403,
                "AccessDeniedException",
                format!(
                    "User: {} is not authorized to perform: account:ListRegions on resource: arn:aws:account::{target}:account",
                    caller.arn
                ),
            ));
        }
    }
    let opted_in: Vec<String> = org
        .accounts
        .iter()
        .find(|a| a.account_id == target)
        .map(|a| a.opted_in_regions.clone())
        .unwrap_or_default();
    let wanted: Vec<&str> = input
        .get("RegionOptStatusContains")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let regions: Vec<Value> = BY_DEFAULT
        .iter()
        .map(|r| (*r, "ENABLED_BY_DEFAULT"))
        .chain(OPT_IN.iter().map(|r| {
            (
                *r,
                if opted_in.iter().any(|o| o == r) {
                    "ENABLED"
                } else {
                    "DISABLED"
                },
            )
        }))
        .filter(|(_, status)| wanted.is_empty() || wanted.contains(status))
        .map(|(name, status)| json!({ "RegionName": name, "RegionOptStatus": status }))
        .collect();
    Ok(json!({ "Regions": regions }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet_file::OrgAccountSpec;

    #[test]
    fn units_are_made_for_every_path_with_their_parents() {
        let org = OrganizationSpec {
            management_account_id: "100000000000".into(),
            units: vec!["Root/Workloads".into()],
            accounts: vec![OrgAccountSpec {
                account_id: "111111111111".into(),
                ou: "Root/Workloads/Payments".into(),
                ..OrgAccountSpec::default()
            }],
            ..OrganizationSpec::default()
        };
        let tree = Tree::of(&org);
        let payments = tree.unit_of("Root/Workloads/Payments");
        let (name, parent) = &tree.units[&payments];
        assert_eq!(name, "Payments");
        assert_eq!(parent, &tree.unit_of("Workloads"));
        assert_eq!(tree.units[parent].1, ROOT_ID);
        assert_eq!(tree.unit_of(""), ROOT_ID);
    }
}
