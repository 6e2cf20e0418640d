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

/// Longest region name accepted; AWS's longest today is 14 characters (`ap-southeast-5`).
const MAX_REGION_LEN: usize = 24;

/// An AWS region name such as `eu-west-1`, checked for its shape (two letters, words, a number:
/// `^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$`), not against a list: which regions exist, and which of them an account has
/// enabled, is AWS's to say (account discovery asks account:ListRegions; a verification shows a region AWS
/// refuses). Held inline, so it stays `Copy` and needs no allocation or global table.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Region {
    /// The name's bytes, zero-padded (so the derived order is the names' order).
    name: [u8; MAX_REGION_LEN],
    len: u8,
}

impl Region {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        let shape = || {
            InvalidValue::new(format!(
                "{value:?} is not an AWS region name (expected a name such as eu-west-1)"
            ))
        };
        if value.is_empty() || value.len() > MAX_REGION_LEN {
            return Err(shape());
        }
        let parts: Vec<&str> = value.split('-').collect();
        let [first, words @ .., last] = parts.as_slice() else {
            return Err(shape());
        };
        let shaped = !words.is_empty()
            && first.len() == 2
            && first.bytes().all(|b| b.is_ascii_lowercase())
            && words
                .iter()
                .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
            && (1..=2).contains(&last.len())
            && last.bytes().all(|b| b.is_ascii_digit());
        if !shaped {
            return Err(shape());
        }
        // The isolated partitions (us-iso-east-1, us-isob-east-1, eu-isoe-west-1, ...) are out of reach.
        if words.iter().any(|w| w.starts_with("iso")) {
            return Err(InvalidValue::new(format!(
                "{value:?} is in an isolated AWS partition, which tablecrypt does not reach (aws, aws-cn and \
                 aws-us-gov only)"
            )));
        }
        let mut name = [0u8; MAX_REGION_LEN];
        name[..value.len()].copy_from_slice(value.as_bytes());
        Ok(Self {
            name,
            len: value.len() as u8,
        })
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII was ever stored.
        std::str::from_utf8(&self.name[..usize::from(self.len)]).unwrap_or_default()
    }

    /// By the name's prefix: `cn-` China, `us-gov-` GovCloud (US), anything else the commercial partition.
    pub fn partition(&self) -> Partition {
        let name = self.as_str();
        if name.starts_with("cn-") {
            Partition::AwsCn
        } else if name.starts_with("us-gov-") {
            Partition::AwsUsGov
        } else {
            Partition::Aws
        }
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Region({:?})", self.as_str())
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
        // A region AWS opens after this release is accepted without a new release.
        assert_eq!(
            Region::parse("ap-southeast-9").map(|r| r.as_str().to_owned()),
            Ok("ap-southeast-9".to_owned())
        );
        for bad in [
            "",
            "eu-west-",
            "-west-1",
            "eu--1",
            "EU-WEST-1",
            "eu-west-100",
            "eu_west_1",
            "eu-west-1 ",
        ] {
            assert!(Region::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Region::parse("us-isob-east-1").is_err());
        assert!(Region::parse(&"a".repeat(30)).is_err());
    }

    #[test]
    fn regions_order_as_their_names() {
        let mut regions: Vec<Region> = ["eu-west-10", "eu-west-1", "ap-east-1"]
            .iter()
            .map(|r| Region::parse(r).expect("region"))
            .collect();
        regions.sort();
        let names: Vec<&str> = regions.iter().map(Region::as_str).collect();
        assert_eq!(names, ["ap-east-1", "eu-west-1", "eu-west-10"]);
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
