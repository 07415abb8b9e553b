//! Platform Core: the catalog of modules, packages and add-ons, and what
//! each company is entitled to (`docs/services.md`). Internal only: every
//! API route is on the internal port, for Auth and Platform Admin; Core
//! calls no other service.

pub mod catalog;
pub mod config;
pub mod entitlements;
pub mod error;
pub mod migrations;
pub mod model;
pub mod routes;
pub mod subscriptions;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use kisum_common::serve::{self, Diagnostics, Listeners};
use kisum_common::telemetry::Metrics;
use sqlx::PgPool;

pub use config::Config;

/// The request body limit of the environment matrix (`request-body-limit`).
const BODY_LIMIT_BYTES: usize = 256 * 1024;

/// The two routers and the pool they share.
pub use kisum_common::schema::App;

/// A pool that connects on first use, so a service whose database is down
/// still starts and reports not-ready.
pub fn pool(config: &Config) -> anyhow::Result<PgPool> {
    migrations::DATABASE.lazy_pool(&config.database_url)
}

pub async fn app(config: Config) -> anyhow::Result<App> {
    let pool = pool(&config)?;
    Ok(app_with_pool(&config, pool))
}

pub fn app_with_pool(config: &Config, pool: PgPool) -> App {
    let metrics = Metrics::new(&config.common.service, &config.common.environment);
    let state = routes::AppState::new(pool.clone(), metrics.clone());
    let api = routes::router(
        state,
        config.diagnostics_callers.clone(),
        config.api_callers.clone(),
    );
    let internal = serve::internal_router(
        Router::new(),
        diagnostics(config),
        config.diagnostics_callers.clone(),
    )
    .merge(api)
    .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES));
    App {
        // Ready when the database answers and every migration is applied.
        public: serve::probes(
            migrations::DATABASE
                .readiness(pool.clone())
                .reported_in(&metrics),
        ),
        internal,
        metrics,
        pool,
    }
}

fn diagnostics(config: &Config) -> Diagnostics {
    Diagnostics {
        service: config.common.service.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        config_digest: config.digest.clone(),
        routes: routes::route_permissions(&config.api_callers),
        // Core verifies no tokens: it has no keys to list or reload.
        kids: Arc::new(|| Box::pin(async { Vec::new() })),
        signing: None,
        reload: Arc::new(|| Box::pin(async { Ok(Vec::new()) })),
    }
}

/// `kisum-core migrate`: applies the pending migrations.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    migrations::DATABASE.migrate_and_close(pool(config)?).await
}

/// The start-up check alone, before any port is bound.
pub async fn check_schema(config: &Config) -> anyhow::Result<()> {
    migrations::DATABASE.check_and_close(pool(config)?).await
}

/// Serves until `shutdown` resolves; refuses to start while the database
/// has pending migrations.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let server = config.common.server;
    let app = app(config).await?;
    migrations::DATABASE
        .serve(app, listeners, server, shutdown)
        .await
}
