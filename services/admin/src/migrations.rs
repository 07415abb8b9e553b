//! The schema migrations, embedded in the binary. `kisum-admin migrate`
//! applies them; `serve` refuses to start while any is pending, and
//! readiness fails while any is pending (a rollout of a newer image before
//! its migration Job ran).

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Applies every pending migration; a no-op when none is.
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}

/// What is wrong with the database's schema, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaState {
    Current,
    /// Versions this binary has that the database has not applied.
    Pending(Vec<i64>),
    /// An applied migration whose text differs from this binary's, or one
    /// that failed half-way.
    Diverged(i64),
}

impl SchemaState {
    /// `Err` with a message for operators unless the schema is current.
    pub fn require_current(&self) -> Result<(), String> {
        match self {
            SchemaState::Current => Ok(()),
            SchemaState::Pending(versions) => Err(format!(
                "{} pending migration(s) {versions:?}; run `kisum-admin migrate` first",
                versions.len()
            )),
            SchemaState::Diverged(version) => Err(format!(
                "migration {version} was changed after it was applied, or failed"
            )),
        }
    }
}

/// Compares the applied migrations with the embedded ones, without writing.
pub async fn schema_state(pool: &PgPool) -> Result<SchemaState, sqlx::Error> {
    let applied = applied_migrations(pool).await?;
    for migration in MIGRATOR.iter() {
        match applied
            .iter()
            .find(|(version, ..)| *version == migration.version)
        {
            Some((_, checksum, success)) if *success && *checksum == *migration.checksum => {}
            Some((version, ..)) => return Ok(SchemaState::Diverged(*version)),
            None => {}
        }
    }
    let pending: Vec<i64> = MIGRATOR
        .iter()
        .map(|migration| migration.version)
        .filter(|version| !applied.iter().any(|(applied, ..)| applied == version))
        .collect();
    Ok(if pending.is_empty() {
        SchemaState::Current
    } else {
        SchemaState::Pending(pending)
    })
}

/// (version, checksum, success) of every applied migration; none when the
/// bookkeeping table does not exist yet.
async fn applied_migrations(pool: &PgPool) -> Result<Vec<(i64, Vec<u8>, bool)>, sqlx::Error> {
    let table_exists: bool =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await?;
    if !table_exists {
        return Ok(Vec::new());
    }
    sqlx::query_as("SELECT version, checksum, success FROM _sqlx_migrations")
        .fetch_all(pool)
        .await
}
