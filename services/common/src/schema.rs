//! Whether a PostgreSQL database has every migration a binary embeds.
//! A service refuses to serve, and reports not ready, while the schema is
//! behind it or differs from it (an edited or half-applied migration).

use std::future::Future;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

use crate::serve::{self, Listeners, Readiness, ServerSettings};
use crate::telemetry::Metrics;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaState {
    Current,
    /// Versions the binary embeds that the database has not applied.
    Pending(Vec<i64>),
    /// An applied migration whose text differs from the binary's, or one
    /// that failed half-way.
    Diverged(i64),
}

impl SchemaState {
    /// `Err` with a message for operators unless the schema is current;
    /// `binary` names the command that migrates (`kisum-core`).
    pub fn require_current(&self, binary: &str) -> Result<(), String> {
        match self {
            SchemaState::Current => Ok(()),
            SchemaState::Pending(versions) => Err(format!(
                "{} pending migration(s) {versions:?}; run `{binary} migrate` first",
                versions.len()
            )),
            SchemaState::Diverged(version) => Err(format!(
                "migration {version} was changed after it was applied, or failed"
            )),
        }
    }
}

/// Compares the applied migrations with `migrator`'s, without writing.
pub async fn state(pool: &PgPool, migrator: &Migrator) -> Result<SchemaState, sqlx::Error> {
    let applied = applied(pool).await?;
    let embedded = migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration());
    for migration in embedded.clone() {
        let found = applied
            .iter()
            .find(|(version, ..)| *version == migration.version);
        match found {
            Some((_, checksum, success)) if *success && *checksum == *migration.checksum => {}
            Some((version, ..)) => return Ok(SchemaState::Diverged(*version)),
            None => {}
        }
    }
    let pending: Vec<i64> = embedded
        .map(|migration| migration.version)
        .filter(|version| !applied.iter().any(|(done, ..)| done == version))
        .collect();
    Ok(if pending.is_empty() {
        SchemaState::Current
    } else {
        SchemaState::Pending(pending)
    })
}

/// (version, checksum, success) of every applied migration; none when the
/// bookkeeping table does not exist yet.
async fn applied(pool: &PgPool) -> Result<Vec<(i64, Vec<u8>, bool)>, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    sqlx::query_as("SELECT version, checksum, success FROM _sqlx_migrations")
        .fetch_all(pool)
        .await
}

/// The migrations of one database, as the binary that owns it sees them.
#[derive(Clone, Copy)]
pub struct Database {
    /// e.g. `platform_core_db`.
    pub name: &'static str,
    /// The binary whose `migrate` command applies them, e.g. `kisum-core`.
    pub binary: &'static str,
    /// The variable holding its URL, e.g. `CORE_DB_URL`.
    pub url_variable: &'static str,
    pub migrator: &'static Migrator,
}

/// The routers of a database-backed service, ready to serve.
pub struct App {
    pub public: axum::Router,
    pub internal: axum::Router,
    pub metrics: Metrics,
    pub pool: PgPool,
}

impl Database {
    /// A pool that connects on first use, so a service whose database is
    /// down still starts and reports not ready.
    pub fn lazy_pool(&self, url: &str) -> anyhow::Result<PgPool> {
        PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy(url)
            .map_err(|_| anyhow::anyhow!("{} is not a valid PostgreSQL URL", self.url_variable))
    }

    /// Ready when the database answers and every migration is applied.
    pub fn readiness(self, pool: PgPool) -> Readiness {
        let database = pool.clone();
        Readiness::default()
            .check("database", move || {
                let pool = database.clone();
                async move {
                    sqlx::query("SELECT 1")
                        .execute(&pool)
                        .await
                        .map(|_| ())
                        .map_err(|error| format!("database unreachable: {error}"))
                }
            })
            .check("migrations", move || {
                let pool = pool.clone();
                async move {
                    state(&pool, self.migrator)
                        .await
                        .map_err(|error| format!("cannot read the migrations: {error}"))?
                        .require_current(self.binary)
                }
            })
    }

    /// Serves `app` until `shutdown` resolves, refusing to start while the
    /// schema is behind the binary; closes the pool afterwards.
    pub async fn serve(
        &self,
        app: App,
        listeners: Listeners,
        settings: ServerSettings,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            public,
            internal,
            metrics,
            pool,
        } = app;
        self.require_current(&pool).await?;
        let (public_address, internal_address) = listeners.addresses()?;
        tracing::info!(
            service = %metrics.service,
            public = %public_address,
            internal = %internal_address,
            "serving"
        );
        serve::serve(listeners, public, internal, metrics, settings, shutdown).await?;
        pool.close().await;
        Ok(())
    }

    /// Applies the pending migrations; a no-op when none is.
    pub async fn migrate(&self, pool: &PgPool) -> anyhow::Result<()> {
        self.migrator
            .run(pool)
            .await
            .map_err(|e| anyhow::anyhow!("applying the {} migrations: {e}", self.name))
    }

    /// `migrate` on a pool opened for it alone, closed afterwards.
    pub async fn migrate_and_close(&self, pool: PgPool) -> anyhow::Result<()> {
        let outcome = self.migrate(&pool).await;
        pool.close().await;
        outcome
    }

    /// The start-up check on a pool opened for it alone, before any port
    /// is bound; the pool is closed afterwards.
    pub async fn check_and_close(&self, pool: PgPool) -> anyhow::Result<()> {
        let outcome = self.require_current(&pool).await;
        pool.close().await;
        outcome
    }

    /// `Err` naming the pending or changed migrations unless current.
    pub async fn require_current(&self, pool: &PgPool) -> anyhow::Result<()> {
        state(pool, self.migrator)
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot reach {} to check its migrations: {e}", self.name)
            })?
            .require_current(self.binary)
            .map_err(|reason| anyhow::anyhow!("refusing to start: {reason}"))
    }
}

/// The database cannot be reached (as opposed to a query that failed).
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    )
}
