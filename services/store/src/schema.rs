//! The schema version a binary knows, and the fence that keeps an older worker from claiming work whose meaning a
//! newer schema may have changed.
//!
//! A release's migrations are additive (the test below refuses a destructive one without a stated reason), so
//! during a rolling upgrade old and new replicas serve the API side by side on one database. Only claiming is
//! fenced: a worker whose binary does not know the newest applied migration claims nothing until it is replaced,
//! so items are only ever worked by code that knows everything the database may have written into them.

use sqlx::PgExecutor;
use sqlx::migrate::Migrator;

use crate::error::StoreError;

/// The schema migrations, embedded in the binary from the top-level `migrations/` folder.
pub fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("../../migrations");
    // Migrations the database has but this binary does not know are left alone: during a rolling upgrade (or
    // after a rollback) an older replica that restarts starts against the newer schema instead of refusing, and
    // the fence below keeps its workers from claiming.
    migrator.set_ignore_missing(true);
    migrator
}

/// The newest migration this binary embeds: the schema version it understands.
pub fn known_version() -> i64 {
    migrator().iter().map(|m| m.version).max().unwrap_or(0)
}

/// The newest migration applied to the database (0 before any).
pub async fn applied_version<'c>(executor: impl PgExecutor<'c>) -> Result<i64, StoreError> {
    // Unchecked at compile time: `_sqlx_migrations` belongs to sqlx's migrator, not to our schema files.
    Ok(sqlx::query_scalar::<_, i64>(
        "SELECT coalesce(max(version), 0)::bigint FROM _sqlx_migrations WHERE success",
    )
    .fetch_one(executor)
    .await?)
}

/// Refuses (`StoreError::SchemaAhead`) when the database has a migration newer than `known`, the version of the
/// binary that is about to claim work.
pub(crate) async fn fence<'c>(executor: impl PgExecutor<'c>, known: i64) -> Result<(), StoreError> {
    let database = applied_version(executor).await?;
    if database > known {
        return Err(StoreError::SchemaAhead {
            database,
            binary: known,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Statements that change what existing rows or columns mean, or take them away: an older replica still
    /// running beside the new one would misread or fail. A release that needs one says why on a line starting
    /// `-- not additive:` and follows the operator guide's two-step upgrade (stop old workers first).
    /// (`BEFORE TRUNCATE` triggers are fine: a statement that truncates starts with the word.)
    const DESTRUCTIVE: [&str; 6] = [
        "DROP COLUMN",
        "DROP TABLE",
        "RENAME ",
        "ALTER COLUMN",
        "DROP TYPE",
        "\nTRUNCATE",
    ];

    #[test]
    fn migrations_are_additive_or_say_why_not() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).expect("the migrations folder") {
            let path = entry.expect("a migration").path();
            let text = std::fs::read_to_string(&path).expect("a readable migration");
            let code: String = text
                .lines()
                .map(|line| line.split("--").next().unwrap_or_default().trim_start())
                .collect::<Vec<_>>()
                .join("\n")
                .to_uppercase();
            let reasoned = text.lines().any(|l| l.starts_with("-- not additive:"));
            for statement in DESTRUCTIVE {
                assert!(
                    reasoned || !code.contains(statement),
                    "{} contains {statement} without a `-- not additive:` line",
                    path.display()
                );
            }
            checked += 1;
        }
        assert!(checked > 10, "only {checked} migrations found in {dir}");
    }

    #[test]
    fn the_binary_knows_its_newest_migration() {
        let newest = super::migrator()
            .iter()
            .map(|m| m.version)
            .max()
            .expect("migrations");
        assert_eq!(super::known_version(), newest);
        assert!(newest >= 20261203110000, "{newest}");
    }
}
