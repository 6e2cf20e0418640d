//! The AWS wire protocols and the operations of each service.

pub mod dynamodb;
pub mod error;
pub mod kms;
pub mod organizations;
pub mod permissions;
pub mod protocol;
pub mod sigv4;
pub mod sns;
pub mod sts;
pub mod tagging;
mod update_table;

pub use error::AwsError;
