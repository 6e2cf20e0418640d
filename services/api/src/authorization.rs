//! Who is calling, and the engine's scope checks in the API's error type.

use tablecrypt_core::Caller;
use tonic::Request;

use crate::error::ApiError;

pub use tablecrypt_engine::access::Visible;

/// The authenticated caller the auth layer attached to the request.
pub fn caller<T>(request: &Request<T>) -> Result<Caller, ApiError> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ApiError::Unauthenticated("no authenticated caller".into()))
}
