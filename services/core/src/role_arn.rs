//! IAM role ARNs that tablecrypt assumes in member accounts.

use std::fmt;

use crate::account_id::AccountId;
use crate::region::Partition;
use crate::validation::InvalidValue;

/// Longest role ARN IAM accepts (IAM API reference, Role.Arn: 20-2048 characters).
const MAX_ROLE_ARN_LEN: usize = 2048;
/// Longest role name (IAM quotas: role name 64 characters).
const MAX_ROLE_NAME_LEN: usize = 64;
/// Longest role path (IAM API reference, Path: 1-512 characters).
const MAX_ROLE_PATH_LEN: usize = 512;

/// `arn:<partition>:iam::<account>:role/<path/><name>`, parsed into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleArn {
    arn: String,
    partition: Partition,
    account_id: AccountId,
}

impl RoleArn {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        const EXPECTED: &str = "expected arn:aws:iam::<12-digit account>:role/<name>";
        if value.is_empty() {
            return Err(InvalidValue::new(format!("is required: {EXPECTED}")));
        }
        if value.len() > MAX_ROLE_ARN_LEN {
            return Err(InvalidValue::new(format!(
                "must be at most {MAX_ROLE_ARN_LEN} characters"
            )));
        }
        let parts: Vec<&str> = value.splitn(6, ':').collect();
        let [arn, partition, service, region, account, resource] = parts.as_slice() else {
            return Err(InvalidValue::new(format!("is not an ARN: {EXPECTED}")));
        };
        if *arn != "arn" {
            return Err(InvalidValue::new(format!("is not an ARN: {EXPECTED}")));
        }
        let partition = Partition::parse(partition)?;
        if *service != "iam" {
            return Err(InvalidValue::new(format!(
                "must be an IAM ARN (service iam, got {service:?})"
            )));
        }
        if !region.is_empty() {
            return Err(InvalidValue::new(
                "IAM ARNs have no region: expected arn:aws:iam::...",
            ));
        }
        let account_id = AccountId::parse(account)
            .map_err(|e| InvalidValue::new(format!("account part of the ARN {}", e.0)))?;
        let Some(path_and_name) = resource.strip_prefix("role/") else {
            return Err(InvalidValue::new(format!(
                "must name an IAM role: {EXPECTED}"
            )));
        };
        let (path, name) = match path_and_name.rfind('/') {
            Some(i) => (&path_and_name[..=i], &path_and_name[i + 1..]),
            None => ("", path_and_name),
        };
        if path.len() > MAX_ROLE_PATH_LEN
            || path.chars().any(|c| !('\u{21}'..='\u{7e}').contains(&c))
        {
            return Err(InvalidValue::new(
                "role path must be printable ASCII of at most 512 characters",
            ));
        }
        if name.is_empty() || name.len() > MAX_ROLE_NAME_LEN {
            return Err(InvalidValue::new("role name must be 1 to 64 characters"));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "_+=,.@-".contains(*c)))
        {
            return Err(InvalidValue::new(format!(
                "role name may contain only letters, digits and _+=,.@- (found {bad:?})"
            )));
        }
        Ok(Self {
            arn: value.to_owned(),
            partition,
            account_id,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.arn
    }

    pub fn partition(&self) -> Partition {
        self.partition
    }

    pub fn account_id(&self) -> &AccountId {
        &self.account_id
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_partitions_paths_and_accounts() {
        let arn =
            RoleArn::parse("arn:aws-us-gov:iam::123456789012:role/platform/tablecrypt-member")
                .expect("valid");
        assert_eq!(arn.partition(), Partition::AwsUsGov);
        assert_eq!(arn.account_id().as_str(), "123456789012");
        assert!(RoleArn::parse("arn:aws:iam::123456789012:role/TablecryptMember").is_ok());
        assert!(RoleArn::parse("arn:aws-cn:iam::123456789012:role/x").is_ok());
    }

    #[test]
    fn refuses_what_is_not_a_role_arn() {
        for bad in [
            "",
            "TablecryptMember",
            "arn:aws:iam::123456789012:user/alice",
            "arn:aws:s3:::bucket",
            "arn:aws:iam:us-east-1:123456789012:role/x",
            "arn:aws:iam::12345678901:role/x",
            "arn:azure:iam::123456789012:role/x",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role/has space",
        ] {
            assert!(RoleArn::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
