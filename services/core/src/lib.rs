//! The tablecrypt domain: validated newtypes and the rules that hold whatever the transport or storage.
//!
//! Everything here is plain Rust. Transport (`tonic`), storage (`sqlx`) and AWS access convert *into* these
//! types at their edge; once a value is one of these types it has been validated.

pub mod access;
pub mod account;
pub mod account_id;
pub mod account_limits;
pub mod change;
pub mod discovery;
pub mod display_name;
pub mod error_chain;
pub mod external_id;
pub mod failure;
pub mod filter;
pub mod iac;
pub mod identity;
pub mod labels;
pub mod loopback;
pub mod notify;
pub mod region;
pub mod role_arn;
pub mod scan;
pub mod switch_quota;
pub mod table;
pub mod validation;

pub use access::{Caller, Grant, Permission, Role, Scope};
pub use account::{
    Account, AccountChanges, AccountSpec, RawAccount, parse_external_id, parse_labels,
    parse_limits, parse_regions,
};
pub use account_id::AccountId;
pub use account_limits::{AccountLimits, PerSecond};
pub use change::{ApplyTarget, ItemReason, ItemState, PlanAction, RequestState};
pub use display_name::DisplayName;
pub use external_id::ExternalId;
pub use failure::FailureKind;
pub use filter::InventoryFilter;
pub use labels::{LabelSelector, Labels};
pub use region::{Partition, Region, Regions};
pub use role_arn::RoleArn;
pub use table::{
    EncryptionMode, KeyArn, KeyReference, ReplicaEncryption, TableEncryption, TableName, TableTags,
};
pub use validation::{FieldViolation, InvalidValue, ValidationErrors};
