//! The backends' cache of Auth's JWKS: refreshed when it ages, refetched
//! at once for an unknown kid but never more often than a minimum interval,
//! and reloadable on demand (key rotation and emergency revocation).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
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

/// The keys of one successful fetch. Replaced whole, never changed, so a
/// request verifies against a snapshot without holding any lock.
#[derive(Default)]
struct Snapshot {
    keys: BTreeMap<String, DecodingKey>,
    fetched: Option<Instant>,
}

#[derive(Clone)]
pub struct JwksCache {
    url: String,
    client: reqwest::Client,
    max_age: Duration,
    min_refetch: Duration,
    /// What requests read: a read lock held only to clone the `Arc`.
    current: Arc<RwLock<Arc<Snapshot>>>,
    /// Serializes fetches; holds when the last one was attempted.
    attempted: Arc<Mutex<Option<Instant>>>,
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
            current: Arc::default(),
            attempted: Arc::default(),
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        let guard = self.current.read().unwrap_or_else(|p| p.into_inner());
        Arc::clone(&guard)
    }

    fn install(&self, keys: BTreeMap<String, DecodingKey>) -> Arc<Snapshot> {
        let snapshot = Arc::new(Snapshot {
            keys,
            fetched: Some(Instant::now()),
        });
        let mut guard = self.current.write().unwrap_or_else(|p| p.into_inner());
        *guard = Arc::clone(&snapshot);
        snapshot
    }

    fn usable(&self, snapshot: &Snapshot, kid: &str) -> bool {
        let fresh = snapshot
            .fetched
            .is_some_and(|at| at.elapsed() < self.max_age);
        fresh && snapshot.keys.contains_key(kid)
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

    /// The keys to verify a token of `kid` with: the current snapshot while
    /// it is fresh and knows the kid, else after a fetch (when the cache is
    /// stale or the kid is new, at most once per minimum interval).
    async fn keys_for(&self, kid: &str) -> Result<Arc<Snapshot>, JwksError> {
        let current = self.snapshot();
        if self.usable(&current, kid) {
            return Ok(current);
        }
        let mut attempted = self.attempted.lock().await;
        // Another request may have fetched while this one waited.
        let current = self.snapshot();
        if self.usable(&current, kid) {
            return Ok(current);
        }
        if attempted.is_some_and(|at| at.elapsed() < self.min_refetch) {
            return Ok(current);
        }
        *attempted = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => Ok(self.install(keys)),
            // Keep serving the keys we have; a fresh kid stays unknown.
            Err(error) if !current.keys.is_empty() => {
                tracing::warn!(error = %error, "jwks refresh failed; keeping cached keys");
                Ok(current)
            }
            Err(error) => Err(error),
        }
    }

    /// The key for `kid`, fetching when the cache is stale or the kid is
    /// new (at most once per minimum interval).
    pub async fn key(&self, kid: &str) -> Result<Option<DecodingKey>, JwksError> {
        Ok(self.keys_for(kid).await?.keys.get(kid).cloned())
    }

    /// Fetches now, ignoring the minimum interval; returns the kids.
    pub async fn reload(&self) -> Result<Vec<String>, JwksError> {
        let mut attempted = self.attempted.lock().await;
        let keys = self.fetch().await?;
        let snapshot = self.install(keys);
        *attempted = snapshot.fetched;
        Ok(snapshot.keys.keys().cloned().collect())
    }

    pub async fn kids(&self) -> Vec<String> {
        self.snapshot().keys.keys().cloned().collect()
    }

    /// The kids the next request would be verified with: the cached ones,
    /// refreshed first when the cache has aged past its lifetime (at most
    /// once per minimum interval), as a request would. This is what
    /// `/internal/diagnostics` reports, so an idle backend shows a key
    /// Auth published within one cache lifetime, like a busy one.
    pub async fn current_kids(&self) -> Vec<String> {
        let current = self.snapshot();
        let fresh = current
            .fetched
            .is_some_and(|at| at.elapsed() < self.max_age);
        if fresh {
            return current.keys.keys().cloned().collect();
        }
        match self.keys_for("").await {
            Ok(snapshot) => snapshot.keys.keys().cloned().collect(),
            Err(_) => current.keys.keys().cloned().collect(),
        }
    }

    /// Verifies a token with the cached keys: the header is decoded once,
    /// and no lock is held (nor any key copied) while the signature is
    /// checked.
    pub async fn verify(&self, policy: &TokenPolicy, token: &str) -> Result<Claims, VerifyError> {
        let kid = TokenPolicy::kid_of(token).map_err(VerifyError::Token)?;
        let snapshot = self.keys_for(&kid).await.map_err(VerifyError::Jwks)?;
        let key = snapshot
            .keys
            .get(&kid)
            .ok_or(VerifyError::Token(TokenError::UnknownKid(kid.clone())))?;
        policy
            .verify_checked_header(token, key)
            .map_err(VerifyError::Token)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Token(TokenError),
    #[error(transparent)]
    Jwks(JwksError),
}
