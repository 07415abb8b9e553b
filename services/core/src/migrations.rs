//! The schema migrations, embedded in the binary. `kisum-core migrate`
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

pub use kisum_common::schema::SchemaState;

/// Compares the applied migrations with the embedded ones, without writing.
pub async fn schema_state(pool: &PgPool) -> Result<SchemaState, sqlx::Error> {
    kisum_common::schema::state(pool, &MIGRATOR).await
}

/// The command that applies this service's migrations.
pub const MIGRATE_COMMAND: &str = "kisum-core";
