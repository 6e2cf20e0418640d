//! AWS partitions and regions.

use std::fmt;

use crate::validation::{InvalidValue, ValidationErrors};

/// The AWS partitions tablecrypt can reach: commercial, China and GovCloud (US).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Partition {
    Aws,
    AwsCn,
    AwsUsGov,
}

impl Partition {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        match value {
            "aws" => Ok(Self::Aws),
            "aws-cn" => Ok(Self::AwsCn),
            "aws-us-gov" => Ok(Self::AwsUsGov),
            other => Err(InvalidValue::new(format!(
                "unknown partition {other:?}: expected aws, aws-cn or aws-us-gov"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aws => "aws",
            Self::AwsCn => "aws-cn",
            Self::AwsUsGov => "aws-us-gov",
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every public AWS region with its partition, from AWS's "Regions and Availability Zones" list and the SDKs'
/// partition metadata (endpoints.json) as of late 2026. A region not listed here is refused, so a typo such as
/// `us-east1` is caught at registration rather than on the first AssumeRole. Add new regions here when AWS opens them.
const KNOWN_REGIONS: &[(&str, Partition)] = &[
    ("af-south-1", Partition::Aws),
    ("ap-east-1", Partition::Aws),
    ("ap-east-2", Partition::Aws),
    ("ap-northeast-1", Partition::Aws),
    ("ap-northeast-2", Partition::Aws),
    ("ap-northeast-3", Partition::Aws),
    ("ap-south-1", Partition::Aws),
    ("ap-south-2", Partition::Aws),
    ("ap-southeast-1", Partition::Aws),
    ("ap-southeast-2", Partition::Aws),
    ("ap-southeast-3", Partition::Aws),
    ("ap-southeast-4", Partition::Aws),
    ("ap-southeast-5", Partition::Aws),
    ("ap-southeast-6", Partition::Aws),
    ("ap-southeast-7", Partition::Aws),
    ("ca-central-1", Partition::Aws),
    ("ca-west-1", Partition::Aws),
    ("eu-central-1", Partition::Aws),
    ("eu-central-2", Partition::Aws),
    ("eu-north-1", Partition::Aws),
    ("eu-south-1", Partition::Aws),
    ("eu-south-2", Partition::Aws),
    ("eu-west-1", Partition::Aws),
    ("eu-west-2", Partition::Aws),
    ("eu-west-3", Partition::Aws),
    ("il-central-1", Partition::Aws),
    ("me-central-1", Partition::Aws),
    ("me-south-1", Partition::Aws),
    ("mx-central-1", Partition::Aws),
    ("sa-east-1", Partition::Aws),
    ("us-east-1", Partition::Aws),
    ("us-east-2", Partition::Aws),
    ("us-west-1", Partition::Aws),
    ("us-west-2", Partition::Aws),
    ("cn-north-1", Partition::AwsCn),
    ("cn-northwest-1", Partition::AwsCn),
    ("us-gov-east-1", Partition::AwsUsGov),
    ("us-gov-west-1", Partition::AwsUsGov),
];

/// A known AWS region name such as `eu-west-1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Region(&'static str);

impl Region {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        if value.is_empty() {
            return Err(InvalidValue::new(
                "must be an AWS region name such as eu-west-1",
            ));
        }
        KNOWN_REGIONS
            .iter()
            .find(|(name, _)| *name == value)
            .map(|(name, _)| Self(name))
            .ok_or_else(|| {
                InvalidValue::new(format!(
                    "{value:?} is not an AWS region (expected a name such as eu-west-1)"
                ))
            })
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }

    pub fn partition(&self) -> Partition {
        KNOWN_REGIONS
            .iter()
            .find(|(name, _)| *name == self.0)
            .map(|(_, p)| *p)
            .unwrap_or(Partition::Aws)
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The regions an account is used in: at least one, no duplicates, order kept as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regions(Vec<Region>);

impl Regions {
    /// Validates each name; violations are reported per index (`[2]`), relative to the regions field.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        if values.is_empty() {
            errors.add("", "must list at least one AWS region");
        }
        let mut regions = Vec::with_capacity(values.len());
        for (i, value) in values.iter().enumerate() {
            let value = value.as_ref();
            if let Some(region) = errors.check(format!("[{i}]"), Region::parse(value)) {
                if regions.contains(&region) {
                    errors.add(
                        format!("[{i}]"),
                        format!("{region} is listed more than once"),
                    );
                } else {
                    regions.push(region);
                }
            }
        }
        errors.into_result(|| Self(regions))
    }

    pub fn as_slice(&self) -> &[Region] {
        &self.0
    }

    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|r| r.as_str().to_owned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_regions_and_their_partitions() {
        assert_eq!(
            Region::parse("eu-west-1").map(|r| r.partition()),
            Ok(Partition::Aws)
        );
        assert_eq!(
            Region::parse("cn-north-1").map(|r| r.partition()),
            Ok(Partition::AwsCn)
        );
        assert_eq!(
            Region::parse("us-gov-west-1").map(|r| r.partition()),
            Ok(Partition::AwsUsGov)
        );
        assert!(Region::parse("us-east1").is_err());
        assert!(Region::parse("mars-north-1").is_err());
    }

    #[test]
    fn regions_must_be_non_empty_and_unique() {
        let empty: [&str; 0] = [];
        assert!(Regions::parse(&empty).is_err());
        let dup = Regions::parse(&["eu-west-1", "eu-west-1"]).expect_err("duplicate");
        assert_eq!(dup.violations()[0].field, "[1]");
        assert_eq!(
            Regions::parse(&["eu-west-1", "us-east-1"]).map(|r| r.names().len()),
            Ok(2)
        );
    }
}
