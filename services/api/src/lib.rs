//! The `tablecrypt.v1.TableEncryption` gRPC service.
//!
//! Requests are converted to validated domain types at this edge (`conversions`), handled per resource
//! (`accounts`, `inventory`, `change_requests`), and every failure goes through the one error map in `error`.

mod accounts;
mod audit;
pub mod auth;
mod authorization;
pub mod change_requests;
mod conversions;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod inventory;
mod key_aliases;
pub mod page_token;
mod service;
mod watch_slots;

pub use auth::CALLER_HEADER;
pub use change_requests::{ChangeRequests, ChangeSettings};
pub use error::ApiError;
pub use service::TableEncryptionService;
