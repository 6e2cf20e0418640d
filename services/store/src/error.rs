//! What can go wrong in the store, classified for the API's one error map.

/// A store failure. `NotFound`, `AlreadyExists` and `VersionConflict` are outcomes a caller can act on; the rest
/// are internal and must never reach a caller verbatim (they may contain SQL).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{resource} {id} not found")]
    NotFound { resource: &'static str, id: String },
    #[error("{resource} {id} already exists")]
    AlreadyExists { resource: &'static str, id: String },
    #[error("{resource} {id} changed since it was read")]
    VersionConflict { resource: &'static str, id: String },
    /// The resource is in a state that does not allow the operation.
    #[error("{resource} {id} is {state}: {reason}")]
    InvalidState {
        resource: &'static str,
        id: String,
        state: String,
        reason: String,
    },
    /// The caller may not do this to the resource (e.g. approve their own request).
    #[error("{reason}")]
    Forbidden { reason: String },
    /// Another worker reclaimed the item: this worker must write nothing more about it.
    #[error("lease on change item {item_id} lost")]
    LeaseLost { item_id: i64 },
    /// A stored row that no longer passes domain validation (hand edits, or a rule tightened since).
    #[error("stored {resource} {id} is invalid: {reason}")]
    Corrupt {
        resource: &'static str,
        id: String,
        reason: String,
    },
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The database has a migration this binary does not know (a rolling upgrade under way): claim nothing.
    #[error(
        "the database has migration {database}, which this binary (newest migration {binary}) does not know; \
         upgrade this replica"
    )]
    SchemaAhead { database: i64, binary: i64 },
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Self::Unavailable(error)
            }
            other => Self::Database(other),
        }
    }
}
