//! What every handler shares.

use std::ops::Deref;
use std::sync::Arc;

use sqlx::PgPool;

use crate::cache::Cache;
use crate::config::Config;
use crate::core_client::CoreClient;
use crate::keys::KeyStore;
use crate::metrics::AuthMetrics;
use crate::password::Passwords;

pub struct Shared {
    pub config: Config,
    pub db: PgPool,
    pub cache: Cache,
    pub keys: KeyStore,
    pub passwords: Passwords,
    pub metrics: AuthMetrics,
    pub core: CoreClient,
}

#[derive(Clone)]
pub struct AppState(pub Arc<Shared>);

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}
