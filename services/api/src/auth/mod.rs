//! Authentication and the audit trail at the gRPC edge. Authorization (roles and scopes) is checked by each
//! RPC in `crate::authorization`, since it needs the accounts a call touches.

mod authenticator;
mod layer;
mod repeats;

pub use authenticator::{
    ANONYMOUS, AuthError, AuthSettings, Authenticator, CALLER_HEADER, IdentityGrant, JwksSource,
    JwtSettings, StaticToken, token_sha256_hex,
};
pub use layer::{
    AuditTarget, AuthLayer, AuthLimits, MUTATING_METHODS, PeerInfo, audited_method, note_target,
};
pub use repeats::OTHER_PATHS;
