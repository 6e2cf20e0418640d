//! Tables owned by infrastructure as code (CloudFormation, CDK, Terraform): the next apply of their template puts
//! back the encryption it declares, reverting a change made here and spending one of the table's 4 switches per
//! 24 hours. Ownership is read from the table's tags.

use crate::table::TableTags;
use crate::validation::InvalidValue;

/// The tag CloudFormation (and so CDK) puts on every resource of a stack.
pub const CLOUDFORMATION_STACK_TAG: &str = "aws:cloudformation:stack-id";

/// One tag that marks ownership: `key` (any value) or `key=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerTag {
    key: String,
    value: Option<String>,
}

impl OwnerTag {
    /// `ManagedBy=terraform` or `terraform:workspace` (present with any value).
    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        let (key, value) = match text.split_once('=') {
            Some((key, value)) => (key.trim(), Some(value.trim().to_owned())),
            None => (text.trim(), None),
        };
        crate::labels::validate_tag_key(key)?;
        if let Some(value) = &value {
            crate::labels::validate_tag_value(value)?;
        }
        Ok(Self {
            key: key.to_owned(),
            value,
        })
    }

    fn matched(&self, tags: &TableTags) -> Option<String> {
        let value = tags.get(&self.key)?;
        match &self.value {
            Some(wanted) if wanted != value => None,
            _ => Some(format!("{}={value}", self.key)),
        }
    }
}

/// Whether a table belongs to infrastructure as code, as far as its tags tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IacOwner {
    /// The tag that says so (`key=value`).
    Owned(String),
    NotOwned,
    /// Its tags could not be read: ownership cannot be ruled out.
    Unknown,
}

/// Which tags mark a table as owned by infrastructure as code: CloudFormation's stack tag always, and the
/// configured ones (`iac_owner_tags`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IacOwnership {
    configured: Vec<OwnerTag>,
}

impl IacOwnership {
    pub fn new(configured: Vec<OwnerTag>) -> Self {
        Self { configured }
    }

    /// The first tag marking the table as owned (`key=value`), CloudFormation's first.
    pub fn owner(&self, tags: &TableTags) -> Option<String> {
        let stack = OwnerTag {
            key: CLOUDFORMATION_STACK_TAG.to_owned(),
            value: None,
        };
        std::iter::once(&stack)
            .chain(&self.configured)
            .find_map(|rule| rule.matched(tags))
    }

    /// Whether a table with these tags (`None`: they could not be read) belongs to infrastructure as code.
    pub fn judge(&self, tags: Option<&TableTags>) -> IacOwner {
        match tags {
            None => IacOwner::Unknown,
            Some(tags) => self.owner(tags).map_or(IacOwner::NotOwned, IacOwner::Owned),
        }
    }
}

/// Why a change to an owned table is blocked, naming the tag that says so.
pub fn owned_message(owner: &str) -> String {
    format!(
        "owned by infrastructure as code ({owner}): its next apply would revert this change and spend one of the \
         table's 4 encryption switches per 24 h. Change the template's SSESpecification first and let tablecrypt \
         verify, or set options.include_iac_owned if the template ignores encryption changes"
    )
}

/// Why a change to a table whose tags could not be read is blocked.
pub fn unknown_message() -> String {
    "its tags could not be read (the member role needs dynamodb:ListTagsOfResource; refresh the inventory), so \
     it may belong to infrastructure as code whose next apply would revert this change: set \
     options.include_iac_owned to change it anyway"
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> TableTags {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn cloudformation_stacks_are_always_owners() {
        let ownership = IacOwnership::default();
        let stack = "arn:aws:cloudformation:eu-west-1:111111111111:stack/payments/1";
        assert_eq!(
            ownership.owner(&tags(&[(CLOUDFORMATION_STACK_TAG, stack)])),
            Some(format!("{CLOUDFORMATION_STACK_TAG}={stack}"))
        );
        assert_eq!(ownership.owner(&tags(&[("team", "payments")])), None);
        assert_eq!(
            ownership.judge(Some(&tags(&[(CLOUDFORMATION_STACK_TAG, stack)]))),
            IacOwner::Owned(format!("{CLOUDFORMATION_STACK_TAG}={stack}"))
        );
        assert_eq!(ownership.judge(Some(&tags(&[]))), IacOwner::NotOwned);
        assert_eq!(ownership.judge(None), IacOwner::Unknown);
    }

    #[test]
    fn configured_tags_match_by_key_or_key_and_value() {
        let ownership = IacOwnership::new(vec![
            OwnerTag::parse("ManagedBy=terraform").expect("valid"),
            OwnerTag::parse("pulumi:project").expect("valid"),
        ]);
        assert_eq!(
            ownership
                .owner(&tags(&[("ManagedBy", "terraform")]))
                .as_deref(),
            Some("ManagedBy=terraform")
        );
        assert_eq!(ownership.owner(&tags(&[("ManagedBy", "hand")])), None);
        assert_eq!(
            ownership
                .owner(&tags(&[("pulumi:project", "p")]))
                .as_deref(),
            Some("pulumi:project=p")
        );
        assert!(OwnerTag::parse("").is_err());
        assert!(OwnerTag::parse("a,b").is_err());
    }
}
