//! The access context of a request: which company `x-org` resolves to for
//! this user and session, and which modules and permissions the user has
//! there. Auth computes it (`POST /internal/access-context`); this module
//! asks on the user's behalf and keeps each answer for a few seconds
//! (`ACCESS_CACHE_SECONDS`), so a revoked session or a removed permission
//! takes effect within that time.
//!
//! Answers are kept by (user, session, company id), never by slug: only
//! Auth knows when a company's slug moves, so an `x-org` slug is resolved
//! by Auth on every request (the answer then refreshes the entry of the
//! company it names) and a slug that moved stops naming the company at
//! once. An `x-org` id is answered from the cache while it is fresh.
//!
//! Denials are never cached: a revoked session is asked about again on its
//! next request, and a context without this module (which denies every
//! route) is not kept, so a grant made right after is seen at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kisum_common::internal::Credential;
use kisum_common::telemetry::{Metrics, RequestContext};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::module::Module;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Past this many cached contexts, expired ones are dropped, then all.
const MAX_CACHED: usize = 10_000;

/// The part of Auth's access context the module backends use; the other
/// fields (membership, core_app, versions) are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct AccessContext {
    pub user: String,
    pub session: String,
    /// The company `x-org` resolved to: the owner of every record the
    /// request reads or writes.
    pub company: Uuid,
    #[serde(default)]
    pub modules: BTreeMap<String, Vec<String>>,
}

impl AccessContext {
    /// The permissions held in `module`, or `None` when the company's
    /// entitlements or the user's roles do not include the module at all.
    pub fn permissions(&self, module: Module) -> Option<&[String]> {
        self.modules.get(module.name()).map(Vec::as_slice)
    }
}

/// Who asks, in which company (`x-org` in its canonical form): the
/// request body.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct AccessRequest {
    pub user: String,
    pub session: String,
    pub org: String,
}

impl AccessRequest {
    /// The cache key of the answer: the company Auth resolved.
    fn key(&self, company: Uuid) -> CacheKey {
        CacheKey {
            user: self.user.clone(),
            session: self.session.clone(),
            company,
        }
    }
}

/// A cached context's key: never the slug, which may move to another
/// company.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    user: String,
    session: String,
    company: Uuid,
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("Auth reports the session revoked or unknown")]
    SessionRevoked,
    #[error("Auth reports no membership in that company")]
    NotAMember,
    #[error("Auth refused this module's internal credential")]
    CredentialRefused,
    #[error("Auth did not answer usably: {0}")]
    Unavailable(String),
}

impl AccessError {
    /// The outcome label of the fetch counter.
    fn outcome(&self) -> &'static str {
        match self {
            AccessError::SessionRevoked => "revoked",
            AccessError::NotAMember => "forbidden",
            AccessError::CredentialRefused => "credential_refused",
            AccessError::Unavailable(_) => "error",
        }
    }
}

/// Asks Auth for access contexts and keeps them briefly.
#[derive(Clone)]
pub struct AccessClient {
    module: Module,
    url: String,
    credential: Credential,
    http: reqwest::Client,
    cache: AccessCache,
    metrics: Metrics,
    fetch_latency: Histogram,
}

impl AccessClient {
    pub fn new(
        module: Module,
        auth_internal_url: &str,
        credential: Credential,
        cache_ttl: Duration,
        metrics: &Metrics,
    ) -> AccessClient {
        let fetch_latency = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        metrics.register(
            "access_context_fetch_duration_seconds",
            "Latency of Auth's internal access-context route as seen by this backend",
            fetch_latency.clone(),
        );
        AccessClient {
            module,
            url: format!("{auth_internal_url}/internal/access-context"),
            credential,
            http: reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(REQUEST_TIMEOUT)
                .build()
                .unwrap_or_default(),
            cache: AccessCache::new(cache_ttl),
            metrics: metrics.clone(),
            fetch_latency,
        }
    }

    /// The context for `request`: for a company id, from the cache while
    /// it is fresh; for a slug (which only Auth can resolve truthfully),
    /// always from Auth. The flag says whether it came from the cache.
    pub async fn context(
        &self,
        request: &AccessRequest,
        trace: Option<&RequestContext>,
    ) -> Result<(Arc<AccessContext>, bool), AccessError> {
        let company = Uuid::parse_str(&request.org).ok();
        if let Some(context) = company.and_then(|id| self.cache.get(&request.key(id))) {
            self.metrics.event("access_context_cache", "hit");
            return Ok((context, true));
        }
        self.metrics.event("access_context_cache", "miss");
        self.fresh(request, trace)
            .await
            .map(|context| (context, false))
    }

    /// The context for `request` from Auth, cached by the company it
    /// names when it includes this module.
    pub async fn fresh(
        &self,
        request: &AccessRequest,
        trace: Option<&RequestContext>,
    ) -> Result<Arc<AccessContext>, AccessError> {
        let started = Instant::now();
        let fetched = self.fetch(request, trace).await;
        self.fetch_latency.observe(started.elapsed().as_secs_f64());
        let outcome = fetched.as_ref().map_or_else(AccessError::outcome, |_| "ok");
        self.metrics.event("access_context_fetch", outcome);
        let context = Arc::new(fetched?);
        let key = request.key(context.company);
        if context.permissions(self.module).is_some() {
            self.cache.put(key, context.clone());
        } else {
            // Denied by module: not kept, and no older answer outlives it.
            self.cache.forget(&key);
        }
        Ok(context)
    }

    async fn fetch(
        &self,
        request: &AccessRequest,
        trace: Option<&RequestContext>,
    ) -> Result<AccessContext, AccessError> {
        let mut headers = trace.map(RequestContext::outgoing).unwrap_or_default();
        self.credential.apply(&mut headers);
        let response = self
            .http
            .post(&self.url)
            .headers(headers)
            .json(request)
            .send()
            .await
            .map_err(|e| AccessError::Unavailable(e.without_url().to_string()))?;
        match response.status() {
            StatusCode::OK => {
                let context: AccessContext = response
                    .json()
                    .await
                    .map_err(|e| AccessError::Unavailable(format!("malformed context: {e}")))?;
                ensure_same_session(request, context)
            }
            StatusCode::UNAUTHORIZED => Err(unauthorized(response).await),
            StatusCode::FORBIDDEN => Err(AccessError::NotAMember),
            status => Err(AccessError::Unavailable(format!("status {status}"))),
        }
    }
}

/// Auth's 401 means a revoked session, unless it is the credential check
/// in front of Auth's internal routes refusing this module.
async fn unauthorized(response: reqwest::Response) -> AccessError {
    // Auth refusing this module's own credential is a 401 like a revoked
    // session, but a fault here: the error code tells them apart.
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if body["error"] == kisum_common::internal::CREDENTIAL_REQUIRED {
        AccessError::CredentialRefused
    } else {
        AccessError::SessionRevoked
    }
}

/// A context for some other user or session is never used.
fn ensure_same_session(
    request: &AccessRequest,
    context: AccessContext,
) -> Result<AccessContext, AccessError> {
    if context.user == request.user && context.session == request.session {
        Ok(context)
    } else {
        Err(AccessError::Unavailable(
            "the context names another user or session".into(),
        ))
    }
}

/// Access contexts by (user, session, company id), each kept for `ttl`.
#[derive(Clone)]
struct AccessCache {
    ttl: Duration,
    entries: Arc<Mutex<HashMap<CacheKey, Cached>>>,
}

struct Cached {
    stored: Instant,
    context: Arc<AccessContext>,
}

impl AccessCache {
    fn new(ttl: Duration) -> AccessCache {
        AccessCache {
            ttl,
            entries: Arc::default(),
        }
    }

    fn get(&self, key: &CacheKey) -> Option<Arc<AccessContext>> {
        let entries = self.entries.lock().ok()?;
        let cached = entries.get(key)?;
        (cached.stored.elapsed() < self.ttl).then(|| cached.context.clone())
    }

    fn forget(&self, key: &CacheKey) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(key);
        }
    }

    fn put(&self, key: CacheKey, context: Arc<AccessContext>) {
        if self.ttl.is_zero() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= MAX_CACHED {
            entries.retain(|_, cached| cached.stored.elapsed() < self.ttl);
        }
        if entries.len() >= MAX_CACHED {
            entries.clear();
        }
        let stored = Instant::now();
        entries.insert(key, Cached { stored, context });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(company: u128) -> CacheKey {
        CacheKey {
            user: "u".into(),
            session: "s".into(),
            company: Uuid::from_u128(company),
        }
    }

    fn request(org: &str) -> AccessRequest {
        AccessRequest {
            user: "u".into(),
            session: "s".into(),
            org: org.into(),
        }
    }

    fn context() -> Arc<AccessContext> {
        Arc::new(AccessContext {
            user: "u".into(),
            session: "s".into(),
            company: Uuid::nil(),
            modules: BTreeMap::new(),
        })
    }

    #[test]
    fn a_cached_context_is_reused_only_for_the_same_company() {
        let cache = AccessCache::new(Duration::from_secs(5));
        cache.put(key(1), context());
        assert!(cache.get(&key(1)).is_some());
        assert!(cache.get(&key(2)).is_none());
        cache.forget(&key(1));
        assert!(cache.get(&key(1)).is_none());
        let id = Uuid::from_u128(1);
        assert_eq!(request(&id.to_string()).key(id), key(1));
    }

    #[test]
    fn a_cache_of_zero_seconds_keeps_nothing() {
        let cache = AccessCache::new(Duration::ZERO);
        cache.put(key(1), context());
        assert!(cache.get(&key(1)).is_none());
    }

    #[test]
    fn a_context_for_another_session_is_refused() {
        let mut other = (*context()).clone();
        other.session = "s2".into();
        assert!(ensure_same_session(&request("acme"), other).is_err());
    }

    #[test]
    fn the_context_ignores_fields_it_does_not_use() {
        let body = r#"{"user":"u","session":"s","company":"00000000-0000-0000-0000-000000000001",
            "membership":{"role":"owner"},"core_app":true,"modules":{"finance":["finance.invoices.read"]},
            "access_version":3,"entitlement_version":7}"#;
        let context: AccessContext = serde_json::from_str(body).unwrap();
        assert_eq!(
            context.permissions(Module::Finance).unwrap(),
            ["finance.invoices.read"]
        );
        assert!(context.permissions(Module::Venue).is_none());
    }
}
