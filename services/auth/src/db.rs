//! auth_db: the pool, the embedded migrations, and the start-up check
//! that refuses to serve a schema that is behind the binary.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

pub async fn connect(url: &str) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        // The URL is not repeated: it holds the password.
        .map_err(|e| match e {
            sqlx::Error::Configuration(_) => {
                anyhow::anyhow!("AUTH_DB_URL is not a valid PostgreSQL URL")
            }
            e => anyhow::anyhow!("cannot connect to auth_db (AUTH_DB_URL): {e}"),
        })
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .map_err(|e| anyhow::anyhow!("auth_db migration failed: {e}"))
}

/// The embedded migrations auth_db has not applied (or applied with other
/// content), by version.
pub async fn pending_migrations(pool: &PgPool) -> anyhow::Result<Vec<String>> {
    use kisum_common::schema::{self, SchemaState};
    Ok(match schema::state(pool, &MIGRATOR).await? {
        SchemaState::Current => Vec::new(),
        SchemaState::Pending(versions) => versions.iter().map(i64::to_string).collect(),
        SchemaState::Diverged(version) => vec![format!("{version} (changed after it was applied)")],
    })
}

/// `serve` refuses to start unless every migration is applied.
pub async fn require_migrated(pool: &PgPool) -> anyhow::Result<()> {
    let pending = pending_migrations(pool).await?;
    if pending.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "auth_db has pending migrations ({}); run `kisum-auth migrate` first",
            pending.join(", ")
        )
    }
}

/// `/ready`: auth_db answers a trivial query in time.
pub async fn ping(pool: &PgPool) -> Result<(), String> {
    let query = sqlx::query_scalar::<_, i32>("select 1").fetch_one(pool);
    match tokio::time::timeout(Duration::from_secs(2), query).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("auth_db unreachable: {error}")),
        Err(_) => Err("auth_db unreachable: timed out".into()),
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_bad_database_url_is_named_by_its_variable_without_its_password() {
        let error = super::connect("postgres://svc:authS3cretPW@db.invalid:notaport/x")
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("AUTH_DB_URL is not a valid"), "{error}");
        assert!(!error.contains("authS3cretPW"), "{error}");
    }
}
