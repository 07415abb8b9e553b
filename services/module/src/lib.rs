//! The Kisum module backends: basic, finance, market, touring, venue and
//! ai, one binary configured by `MODULE_NAME`.
//!
//! Every business request passes the [`guard`]: a bearer JWT verified
//! against Auth's JWKS, an `x-org` header, the access context Auth computes
//! for that user, session and company, then the module and the route's
//! permission. Records belong to the company Auth resolved; no query can
//! reach another company's rows.
//!
//! Public port: the business routes, `/health`, `/ready`. Internal port
//! (credential required): `/internal/diagnostics`, `/internal/keys/reload`,
//! `/internal/dependencies`; and `/metrics`.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use kisum_common::jwks::JwksCache;
use kisum_common::serve::{self, Diagnostics, Listeners};
use kisum_common::telemetry::Metrics;

pub mod access;
pub mod config;
pub mod dependencies;
pub mod error;
pub mod guard;
pub mod module;
pub mod record_cache;
pub mod records;
pub mod routes;
pub mod store;

pub use config::Config;
pub use module::Module;

use crate::access::AccessClient;
use crate::dependencies::{Dependencies, KeyLoader, RedisProbe};
use crate::guard::Guard;
use crate::module::Engine;
use crate::record_cache::{ListenerTask, RecordCache};
use crate::routes::Endpoint;
use crate::store::{Database, Resource};

/// A configured backend, ready to serve.
pub struct App {
    pub public: Router,
    pub internal: Router,
    pub metrics: Metrics,
    database: Database,
    /// Retries the first JWKS load while Auth is unreachable.
    _key_loader: Option<KeyLoader>,
    /// Feeds the PostgreSQL modules' read cache with change notifications.
    _record_listener: Option<ListenerTask>,
}

/// Builds the backend. Neither the database nor Auth has to be up: the
/// service starts and reports itself unready until they are.
pub async fn app(config: Config) -> anyhow::Result<App> {
    let module = config.module;
    let metrics = Metrics::new(module.name(), &config.environment);
    let database = Database::open(module, &config.database_url)
        .await
        .context("opening DATABASE_URL")?;
    let jwks = JwksCache::new(
        config.auth_jwks_url.clone(),
        config.jwks_cache,
        config.jwks_min_refetch,
    );
    let key_loader = dependencies::load_keys(&jwks).await;
    let endpoints: Arc<[Endpoint]> = routes::endpoints(module).into();
    let dependencies = Dependencies {
        database: database.clone(),
        jwks: jwks.clone(),
        redis: RedisProbe::new(module.redis_use(), config.redis_url.as_deref())
            .map_err(anyhow::Error::msg)?,
    };

    let guard = Guard {
        module,
        jwks: jwks.clone(),
        policy: config.token_policy.clone(),
        access: AccessClient::new(
            module,
            &config.auth_internal_url,
            config.credential.clone(),
            config.access_cache,
            &metrics,
        ),
        endpoints: endpoints.clone(),
        metrics: metrics.clone(),
    };
    let resource = Resource::of(module, &database)?;
    // PostgreSQL modules cache their reads while a listener hears of every
    // change; MongoDB modules read the database every time.
    let cache = RecordCache::default();
    let record_listener = (module.engine() == Engine::Postgres).then(|| {
        record_cache::listen(
            cache.clone(),
            config.database_url.clone(),
            module.resource(),
        )
    });
    let public = routes::business_router(module, resource, guard, cache).merge(serve::probes(
        dependencies.readiness().reported_in(&metrics),
    ));
    let internal = serve::internal_router(
        dependencies.router(),
        diagnostics(&config, &jwks, &endpoints, &metrics),
        config.allowlist.clone(),
    );
    Ok(App {
        public,
        internal,
        metrics,
        database,
        _key_loader: key_loader,
        _record_listener: record_listener,
    })
}

/// Serves both ports until `shutdown` resolves, lets running requests
/// finish, then closes the database pool.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (module, server) = (config.module, config.server);
    let App {
        public,
        internal,
        metrics,
        database,
        _key_loader,
        _record_listener,
    } = app(config).await?;
    // A schema behind the binary refuses the start, so no request meets a
    // missing table; an unreachable database only makes the service unready.
    match database.require_current(module).await {
        Err(error @ store::StoreError::Migration(_)) => {
            return Err(anyhow::anyhow!("refusing to start: {error}"));
        }
        Err(error) => {
            tracing::warn!(%module, error = %error, "schema not checked: database unreachable")
        }
        Ok(()) => {}
    }
    let (public_addr, internal_addr) = listeners.addresses()?;
    tracing::info!(%module, %public_addr, %internal_addr, "serving");
    serve::serve(listeners, public, internal, metrics, server, shutdown)
        .await
        .context("serving")?;
    database.close().await;
    tracing::info!(%module, "stopped");
    Ok(())
}

/// PostgreSQL modules: applies the embedded migrations. MongoDB modules:
/// creates the indexes. Safe to run again. Needs only `MODULE_NAME` and
/// `DATABASE_URL`.
pub async fn migrate(module: Module, database_url: &str) -> anyhow::Result<()> {
    let database = Database::open(module, database_url)
        .await
        .context("opening DATABASE_URL")?;
    database
        .migrate(module)
        .await
        .with_context(|| format!("migrating the {module} database"))?;
    database.close().await;
    tracing::info!(%module, "database migrated");
    Ok(())
}

fn diagnostics(
    config: &Config,
    jwks: &JwksCache,
    endpoints: &[Endpoint],
    metrics: &Metrics,
) -> Diagnostics {
    let (kids_from, reload_with) = (jwks.clone(), jwks.clone());
    let metrics = metrics.clone();
    Diagnostics {
        service: config.module.name().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        config_digest: config.digest.clone(),
        routes: routes::permission_map(endpoints),
        kids: Arc::new(move || {
            let jwks = kids_from.clone();
            Box::pin(async move { jwks.current_kids().await })
        }),
        signing: None,
        reload: Arc::new(move || {
            let (jwks, metrics) = (reload_with.clone(), metrics.clone());
            Box::pin(async move { reload_keys(&jwks, &metrics).await })
        }),
    }
}

/// `POST /internal/keys/reload`: fetches the JWKS now, whatever the
/// minimum refetch interval says.
async fn reload_keys(jwks: &JwksCache, metrics: &Metrics) -> Result<Vec<String>, String> {
    match jwks.reload().await {
        Ok(kids) => {
            metrics.event("jwks_reload", "success");
            tracing::info!(?kids, "signing keys reloaded on request");
            Ok(kids)
        }
        Err(error) => {
            metrics.event("jwks_reload", "failure");
            tracing::warn!(error = %error, "signing key reload failed");
            Err(error.to_string())
        }
    }
}
