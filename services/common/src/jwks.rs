//! The backends' cache of Auth's JWKS: refreshed when it ages, refetched
//! at once for an unknown kid but never more often than a minimum interval,
//! and reloadable on demand (key rotation and emergency revocation).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use tokio::sync::Mutex;

use crate::jwt::{Claims, TokenError, TokenPolicy};

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot fetch the JWKS from {url}: {reason}")]
    Fetch { url: String, reason: String },
}

struct Cached {
    keys: BTreeMap<String, DecodingKey>,
    fetched: Option<Instant>,
    attempted: Option<Instant>,
}

#[derive(Clone)]
pub struct JwksCache {
    url: String,
    client: reqwest::Client,
    max_age: Duration,
    min_refetch: Duration,
    cached: Arc<Mutex<Cached>>,
}

impl JwksCache {
    pub fn new(url: String, max_age: Duration, min_refetch: Duration) -> Self {
        JwksCache {
            url,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            max_age,
            min_refetch,
            cached: Arc::new(Mutex::new(Cached {
                keys: BTreeMap::new(),
                fetched: None,
                attempted: None,
            })),
        }
    }

    async fn fetch(&self) -> Result<BTreeMap<String, DecodingKey>, JwksError> {
        let error = |reason: String| JwksError::Fetch {
            url: self.url.clone(),
            reason,
        };
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| error(e.to_string()))?;
        if !response.status().is_success() {
            return Err(error(format!("status {}", response.status())));
        }
        let set: JwkSet = response.json().await.map_err(|e| error(e.to_string()))?;
        Ok(set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                DecodingKey::from_jwk(jwk).ok().map(|key| (kid, key))
            })
            .collect())
    }

    /// The key for `kid`, fetching when the cache is stale or the kid is
    /// new (at most once per minimum interval).
    pub async fn key(&self, kid: &str) -> Result<Option<DecodingKey>, JwksError> {
        let mut cached = self.cached.lock().await;
        let stale = cached.fetched.is_none_or(|at| at.elapsed() >= self.max_age);
        let known = cached.keys.contains_key(kid);
        let may_refetch = cached
            .attempted
            .is_none_or(|at| at.elapsed() >= self.min_refetch);
        if (stale || !known) && may_refetch {
            cached.attempted = Some(Instant::now());
            match self.fetch().await {
                Ok(keys) => {
                    cached.keys = keys;
                    cached.fetched = Some(Instant::now());
                }
                // Keep serving the keys we have; a fresh kid stays unknown.
                Err(error) if !cached.keys.is_empty() => {
                    tracing::warn!(error = %error, "jwks refresh failed; keeping cached keys");
                }
                Err(error) => return Err(error),
            }
        }
        Ok(cached.keys.get(kid).cloned())
    }

    /// Fetches now, ignoring the minimum interval; returns the kids.
    pub async fn reload(&self) -> Result<Vec<String>, JwksError> {
        let keys = self.fetch().await?;
        let mut cached = self.cached.lock().await;
        cached.keys = keys;
        cached.fetched = Some(Instant::now());
        cached.attempted = cached.fetched;
        Ok(cached.keys.keys().cloned().collect())
    }

    pub async fn kids(&self) -> Vec<String> {
        self.cached.lock().await.keys.keys().cloned().collect()
    }

    /// Verifies a token with the cached keys.
    pub async fn verify(&self, policy: &TokenPolicy, token: &str) -> Result<Claims, VerifyError> {
        let kid = TokenPolicy::kid_of(token).map_err(VerifyError::Token)?;
        let key = self
            .key(&kid)
            .await
            .map_err(VerifyError::Jwks)?
            .ok_or(VerifyError::Token(TokenError::UnknownKid(kid)))?;
        policy.verify(token, &key).map_err(VerifyError::Token)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Token(TokenError),
    #[error(transparent)]
    Jwks(JwksError),
}
