//! Platform Admin (`docs/services.md`): the API of the admin frontend.
//! Platform roles come from Auth; subscription, add-on and catalog changes
//! go through Platform Core and are followed by an invalidation in Auth;
//! organizations are approved or rejected here; every change is audited in
//! `platform_admin_db`.

pub mod audit;
pub mod changes;
pub mod clients;
pub mod config;
pub mod directory;
pub mod error;
pub mod migrations;
pub mod organizations;
pub mod rbac;
pub mod routes;
pub mod state;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use kisum_common::jwks::JwksCache;
use kisum_common::serve::{self, Diagnostics, Listeners};
use kisum_common::telemetry::Metrics;
use sqlx::PgPool;

use crate::clients::{AuthClient, CoreClient};
pub use crate::config::Config;
use crate::state::AppState;

/// The request body limit of the environment matrix (`request-body-limit`).
const BODY_LIMIT_BYTES: usize = 1024 * 1024;
/// How often an unknown kid may cause a refetch of Auth's keys.
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(10);

/// The two routers and the pool they share.
pub use kisum_common::schema::App;

/// A pool that connects on first use, so a service whose database is down
/// still starts and reports not-ready.
pub fn pool(config: &Config) -> anyhow::Result<PgPool> {
    migrations::DATABASE.lazy_pool(&config.database_url)
}

pub async fn app(config: Config) -> anyhow::Result<App> {
    let pool = pool(&config)?;
    let metrics = Metrics::new(&config.common.service, &config.common.environment);
    let jwks = JwksCache::new(config.jwks_url.clone(), config.jwks_cache, JWKS_MIN_REFETCH);
    let state = AppState {
        pool: pool.clone(),
        core: CoreClient::new(&config.core_internal_url, &config.credential),
        auth: AuthClient::new(&config.auth_internal_url, &config.credential),
        jwks: jwks.clone(),
        token_policy: config.token_policy.clone(),
        metrics: metrics.clone(),
    };
    let public = routes::router(state)
        // Ready when the database answers and every migration is applied.
        // Auth and Core are not checked: their outage shows as 502s, not as
        // a restart loop.
        .merge(serve::probes(
            migrations::DATABASE
                .readiness(pool.clone())
                .reported_in(&metrics),
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES));
    let internal = serve::internal_router(
        Router::new(),
        diagnostics(&config, jwks),
        config.diagnostics_callers.clone(),
    );
    Ok(App {
        public,
        internal,
        metrics,
        pool,
    })
}

fn diagnostics(config: &Config, jwks: JwksCache) -> Diagnostics {
    let kids = jwks.clone();
    Diagnostics {
        service: config.common.service.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        config_digest: config.digest.clone(),
        routes: routes::route_permissions(),
        kids: Arc::new(move || {
            let jwks = kids.clone();
            Box::pin(async move { jwks.current_kids().await })
        }),
        signing: None,
        reload: Arc::new(move || {
            let jwks = jwks.clone();
            Box::pin(async move { jwks.reload().await.map_err(|error| error.to_string()) })
        }),
    }
}

/// `kisum-admin migrate`: applies the pending migrations.
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
