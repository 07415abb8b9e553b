//! The schema migrations, embedded in the binary. `kisum-admin migrate`
//! applies them; `serve` refuses to start while any is pending, and
//! readiness fails while any is pending (a rollout of a newer image before
//! its migration Job ran).

use sqlx::PgPool;
use sqlx::migrate::Migrator;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

pub use kisum_common::schema::SchemaState;

/// Compares the applied migrations with the embedded ones, without writing.
pub async fn schema_state(pool: &PgPool) -> Result<SchemaState, sqlx::Error> {
    kisum_common::schema::state(pool, &MIGRATOR).await
}

/// This service's database, for the shared migrate and start-up checks.
pub const DATABASE: kisum_common::schema::Database = kisum_common::schema::Database {
    name: "platform_admin_db",
    binary: "kisum-admin",
    url_variable: "ADMIN_DB_URL",
    migrator: &MIGRATOR,
};
