//! What the backend depends on, and how each dependency is checked:
//! its own database and Auth's signing keys always; Redis only where the
//! module uses it. `/ready` fails on a required dependency only; the
//! internal `GET /internal/dependencies` reports every one, optional ones
//! included.

use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use kisum_common::jwks::JwksCache;
use kisum_common::serve::Readiness;
use serde::Serialize;

use crate::module::RedisUse;
use crate::store::Database;

const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest wait between two attempts at a first JWKS load.
const MAX_KEY_RETRY_DELAY: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Dependencies {
    pub database: Database,
    pub jwks: JwksCache,
    pub redis: Option<RedisProbe>,
}

/// Redis as a module uses it: a client (nothing connects until checked)
/// and whether readiness depends on it.
#[derive(Clone)]
pub struct RedisProbe {
    client: redis::Client,
    required: bool,
}

impl RedisProbe {
    /// `None` when the module does not use Redis or `REDIS_URL` is unset.
    pub fn new(redis_use: RedisUse, url: Option<&str>) -> Result<Option<RedisProbe>, String> {
        let Some(url) = url else {
            return Ok(None);
        };
        let required = match redis_use {
            RedisUse::None => {
                tracing::warn!("REDIS_URL is set but this module does not use Redis; ignored");
                return Ok(None);
            }
            RedisUse::Optional => false,
            RedisUse::Required => true,
        };
        let client = redis::Client::open(url).map_err(|e| format!("REDIS_URL: {e}"))?;
        Ok(Some(RedisProbe { client, required }))
    }

    async fn ping(&self) -> Result<(), String> {
        let ping = async {
            let mut connection = self.client.get_multiplexed_async_connection().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        };
        match tokio::time::timeout(REDIS_TIMEOUT, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("redis unreachable: {error}")),
            Err(_) => Err(format!("redis did not answer within {REDIS_TIMEOUT:?}")),
        }
    }
}

impl Dependencies {
    async fn database_check(&self) -> Result<(), String> {
        self.database.ping().await.map_err(|e| e.to_string())
    }

    async fn keys_check(&self) -> Result<(), String> {
        if self.jwks.kids().await.is_empty() {
            Err("no signing keys loaded from AUTH_JWKS_URL yet; retrying".into())
        } else {
            Ok(())
        }
    }

    async fn redis_check(&self) -> Option<Result<(), String>> {
        let probe = self.redis.as_ref()?;
        let outcome = probe.ping().await;
        if let Err(reason) = &outcome {
            tracing::warn!(required = probe.required, reason, "redis check failed");
        }
        Some(outcome)
    }

    /// The readiness checks: database, keys, and Redis where required.
    pub fn readiness(&self) -> Readiness {
        let (database, keys) = (self.clone(), self.clone());
        let mut readiness = Readiness::default()
            .check("database", move || {
                let database = database.clone();
                async move { database.database_check().await }
            })
            .check("jwks", move || {
                let keys = keys.clone();
                async move { keys.keys_check().await }
            });
        if self.redis.as_ref().is_some_and(|r| r.required) {
            let redis = self.clone();
            readiness = readiness.check("redis", move || {
                let redis = redis.clone();
                async move { redis.redis_check().await.unwrap_or(Ok(())) }
            });
        }
        readiness
    }

    /// `GET /internal/dependencies`, for the internal router.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/internal/dependencies", get(report))
            .with_state(self.clone())
    }
}

#[derive(Serialize)]
struct Status {
    required: bool,
    status: String,
}

fn status(required: bool, outcome: Result<(), String>) -> Status {
    Status {
        required,
        status: outcome.err().unwrap_or_else(|| "ok".into()),
    }
}

async fn report(State(dependencies): State<Dependencies>) -> Json<serde_json::Value> {
    let mut report = serde_json::json!({
        "database": status(true, dependencies.database_check().await),
        "jwks": status(true, dependencies.keys_check().await),
    });
    if let Some(outcome) = dependencies.redis_check().await {
        let required = dependencies.redis.as_ref().is_some_and(|r| r.required);
        report["redis"] = serde_json::json!(status(required, outcome));
    }
    Json(report)
}

/// Loads Auth's keys once now; when that fails (Auth not up yet), keeps
/// retrying in the background until keys are loaded. The task stops when
/// the returned guard is dropped.
pub async fn load_keys(jwks: &JwksCache) -> Option<KeyLoader> {
    match jwks.reload().await {
        Ok(kids) => {
            tracing::info!(?kids, "signing keys loaded");
            None
        }
        Err(error) => {
            tracing::warn!(error = %error, "cannot load signing keys yet; retrying");
            Some(KeyLoader(tokio::spawn(retry_key_load(jwks.clone()))))
        }
    }
}

async fn retry_key_load(jwks: JwksCache) {
    let mut delay = Duration::from_secs(1);
    loop {
        tokio::time::sleep(delay).await;
        // A request may have loaded them meanwhile.
        if !jwks.kids().await.is_empty() {
            return;
        }
        match jwks.reload().await {
            Ok(kids) => {
                tracing::info!(?kids, "signing keys loaded");
                return;
            }
            Err(error) => tracing::warn!(error = %error, "cannot load signing keys yet; retrying"),
        }
        delay = (delay * 2).min(MAX_KEY_RETRY_DELAY);
    }
}

/// The background JWKS loader; aborted on drop.
pub struct KeyLoader(tokio::task::JoinHandle<()>);

impl Drop for KeyLoader {
    fn drop(&mut self) {
        self.0.abort();
    }
}
