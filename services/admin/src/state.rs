//! What every handler shares.

use kisum_common::jwks::JwksCache;
use kisum_common::jwt::TokenPolicy;
use kisum_common::telemetry::Metrics;
use sqlx::PgPool;

use crate::clients::{AuthClient, CoreClient};

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub core: CoreClient,
    pub auth: AuthClient,
    pub jwks: JwksCache,
    pub token_policy: TokenPolicy,
    pub metrics: Metrics,
}
