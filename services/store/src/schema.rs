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
    known_migrations().into_iter().max().unwrap_or(0)
}

/// Every migration this binary embeds. The fence asks whether the database has one outside this set, not merely
/// a newer one: a migration merged late with an older timestamp is as unknown as a newer one.
pub fn known_migrations() -> Vec<i64> {
    migrator().iter().map(|m| m.version).collect()
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

/// Refuses (`StoreError::SchemaAhead`) when the database has a migration outside `known`, the migrations of the
/// binary that is about to claim work.
pub(crate) async fn fence<'c>(
    executor: impl PgExecutor<'c>,
    known: &[i64],
) -> Result<(), StoreError> {
    let unknown: Option<i64> = sqlx::query_scalar(
        "SELECT max(version) FROM _sqlx_migrations WHERE success AND NOT (version = ANY($1))",
    )
    .bind(known)
    .fetch_one(executor)
    .await?;
    match unknown {
        Some(database) => Err(StoreError::SchemaAhead {
            database,
            binary: known.iter().copied().max().unwrap_or(0),
        }),
        None => Ok(()),
    }
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

    /// Statements that may refuse what an older replica still writes, or drop what it still uses (a new CHECK,
    /// UNIQUE or foreign key, a column made NOT NULL, a new trigger, a dropped index, trigger or function).
    /// Allowed with a line starting `-- old replicas:` saying why the older binary is unaffected. Checked from the
    /// first migration written after rolling upgrades were supported (earlier ones are applied everywhere and
    /// cannot change).
    const NEEDS_A_REASON: [&str; 7] = [
        "ADD CONSTRAINT",
        "CREATE TRIGGER",
        "DROP CONSTRAINT",
        "SET NOT NULL",
        "DROP INDEX",
        "DROP TRIGGER",
        "DROP FUNCTION",
    ];
    const FIRST_CHECKED_FOR_OLD_REPLICAS: i64 = 20261204000000;

    #[test]
    fn migrations_are_additive_or_say_why_not() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).expect("the migrations folder") {
            let path = entry.expect("a migration").path();
            let text = std::fs::read_to_string(&path).expect("a readable migration");
            let version: i64 = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.split('_').next())
                .and_then(|v| v.parse().ok())
                .expect("a migration file named VERSION_description.sql");
            let code: String = text
                .lines()
                .map(|line| line.split("--").next().unwrap_or_default().trim_start())
                .collect::<Vec<_>>()
                .join("\n")
                .to_uppercase();
            let not_additive = text.lines().any(|l| l.starts_with("-- not additive:"));
            let old_replicas = text.lines().any(|l| l.starts_with("-- old replicas:"));
            for statement in DESTRUCTIVE {
                assert!(
                    not_additive || !code.contains(statement),
                    "{} contains {statement} without a `-- not additive:` line",
                    path.display()
                );
            }
            if version >= FIRST_CHECKED_FOR_OLD_REPLICAS {
                for statement in NEEDS_A_REASON {
                    assert!(
                        not_additive || old_replicas || !code.contains(statement),
                        "{} contains {statement} without a `-- old replicas:` line saying why an older replica \
                         still works",
                        path.display()
                    );
                }
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
