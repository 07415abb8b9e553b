//! Auth: identity, sessions, memberships, roles, permissions, delegation
//! and access aggregation for the Kisum platform (docs/services.md).
//!
//! `Config::from_vars` reads the environment, [`app`] builds the public
//! and internal routers, [`run`] serves them until `shutdown` resolves.

pub mod access;
pub mod administration;
pub mod audit;
pub mod cache;
pub mod client_ip;
pub mod config;
pub mod core_client;
pub mod db;
pub mod directory;
pub mod error;
pub mod keys;
pub mod login;
pub mod metrics;
pub mod password;
pub mod ratelimit;
pub mod reset;
pub mod routes;
pub mod sessions;
pub mod state;
pub mod tokens;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use axum::{Router, middleware};
use kisum_common::serve::{
    Diagnostics, Listeners, Readiness, ServerSettings, internal_router, probes,
};
use kisum_common::telemetry::{self, Metrics};
use tower_http::limit::RequestBodyLimitLayer;

pub use config::Config;
pub use state::unix_now;

use crate::cache::Cache;
use crate::core_client::CoreClient;
use crate::keys::KeyStore;
use crate::metrics::AuthMetrics;
use crate::password::Passwords;
use crate::state::{AppState, Shared};

/// `services.auth.request-body-limit`.
const BODY_LIMIT: usize = 64 * 1024;

/// Aborts the background tasks (the key-set watcher) when dropped.
struct Background(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The two routers, ready to serve.
pub struct App {
    pub public: Router,
    pub internal: Router,
    pub metrics: Metrics,
    pub server: ServerSettings,
    background: Background,
}

/// Loads the key set (refusing to start without a valid one), connects to
/// auth_db (refusing to start with pending migrations) and builds the
/// routers. Redis is connected lazily: Auth starts without it, not ready.
pub async fn app(config: Config) -> anyhow::Result<App> {
    let metrics = AuthMetrics::new(&config.service, &config.environment);
    let keys = KeyStore::load(config.keys.clone()).map_err(|e| {
        anyhow::anyhow!(
            "no valid signing key set (JWT_KEY_SET_FILE or JWT_KEY_SET): {}",
            keys::safe_message(&e)
        )
    })?;
    let db = db::connect(&config.database_url).await?;
    db::require_migrated(&db).await?;
    let cache = Cache::new(&config.redis_url, metrics.clone())?;
    let core = CoreClient::new(
        config.core_url.clone(),
        config.credential.clone(),
        metrics.clone(),
    );
    let passwords = Passwords::default();
    let warm = passwords.clone();
    tokio::task::spawn_blocking(move || warm.warm_up())
        .await
        .context("computing the dummy password hash")?;
    let state = AppState(Arc::new(Shared {
        config,
        db,
        cache,
        keys,
        passwords,
        metrics,
        core,
    }));
    let background = Background(state.keys.watch().into_iter().collect());
    let limits = |router: Router| {
        router
            .layer(middleware::from_fn(request_span))
            .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
    };
    let public = limits(
        routes::public(state.clone())
            .merge(probes(readiness(&state).reported_in(&state.metrics.shared))),
    );
    let internal = limits(internal_router(
        routes::internal(state.clone()),
        diagnostics(&state),
        state.config.allowlist.clone(),
    ));
    Ok(App {
        public,
        internal,
        metrics: state.metrics.shared.clone(),
        server: state.config.server,
        background,
    })
}

/// Puts every log line of a request under its request and trace ids (the
/// tracking middleware of `kisum-common` runs first and sets them).
async fn request_span(
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument as _;
    let span = match request.extensions().get::<telemetry::RequestContext>() {
        Some(context) => tracing::info_span!(
            "request",
            request_id = %context.request_id,
            trace_id = %context.trace_id,
        ),
        None => tracing::Span::none(),
    };
    next.run(request).instrument(span).await
}

/// auth_db reachable, signing keys loaded, Redis reachable: each named.
fn readiness(state: &AppState) -> Readiness {
    let db = state.db.clone();
    let keys = state.keys.clone();
    let cache = state.cache.clone();
    Readiness::default()
        .check("auth_db", move || {
            let db = db.clone();
            async move { db::ping(&db).await }
        })
        .check("signing_keys", move || {
            let count = keys.current().published_kids().len();
            async move {
                if count > 0 {
                    Ok(())
                } else {
                    Err("no published signing key".to_string())
                }
            }
        })
        // Auth answers correctly from auth_db without Redis (slower, no
        // login rate limits): reported, but not a reason to stop serving.
        .degrading("redis", move || {
            let cache = cache.clone();
            async move { cache.ping().await }
        })
}

fn diagnostics(state: &AppState) -> Diagnostics {
    let kids = state.keys.clone();
    let signing = state.keys.clone();
    let reload = state.keys.clone();
    Diagnostics {
        service: state.config.service.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        config_digest: state.config.config_digest.clone(),
        routes: routes::route_requirements(),
        kids: Arc::new(move || {
            let kids = kids.current().published_kids();
            Box::pin(async move { kids })
        }),
        signing: Some(Arc::new(move || signing.current().set.active().kid.clone())),
        reload: Arc::new(move || {
            let store = reload.clone();
            Box::pin(async move {
                tokio::task::spawn_blocking(move || store.reload())
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| keys::safe_message(&e))
            })
        }),
    }
}

impl App {
    /// Serves both routers until `shutdown` resolves, then drains and stops
    /// the background tasks (key-set polling).
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let App {
            public,
            internal,
            metrics,
            server,
            background,
        } = self;
        let served =
            kisum_common::serve::serve(listeners, public, internal, metrics, server, shutdown)
                .await;
        drop(background);
        served
    }
}

/// Builds the app and serves it on the listeners until `shutdown`.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let service = config.service.clone();
    // auth_db answered and its schema is current, the key set loaded:
    // only now is Auth serving (readiness then follows `/ready`).
    let app = app(config).await?;
    let (public, internal) = listeners.addresses()?;
    tracing::info!(%service, %public, %internal, "serving");
    app.serve(listeners, shutdown).await.context("serving Auth")
}
