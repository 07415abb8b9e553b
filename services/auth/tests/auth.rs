//! Auth end to end: real PostgreSQL and Redis (kisum-testkit), the real
//! Platform Core (kisum-core) in-process, Auth served on loopback ports
//! and called over HTTP as the frontend, the module backends and Platform
//! Admin call it.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use kisum_auth::cache::{Cache, ROW_COPY_TTL, key};
use kisum_auth::directory::Directory;
use kisum_auth::metrics::AuthMetrics;
use kisum_auth::{Config, db, directory, password::Passwords};
use kisum_common::config::Vars;
use kisum_common::internal::Credential;
use kisum_common::jwt::TokenPolicy;
use kisum_common::keys::{Key, KeySet, KeyState};
use kisum_common::serve::Listeners;
use kisum_testkit::{Postgres, Redis};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

const ISSUER: &str = "https://auth.kisum.test";
const AUDIENCE: &str = "kisum-api";
const AUTH_TO_CORE: &str = "auth-to-core-credential-for-tests-0";
const ADMIN_SECRET: &str = "platform-admin-credential-for-tests";
const FINANCE_SECRET: &str = "finance-credential-for-tests-000000";
const KISUMCTL_SECRET: &str = "kisumctl-credential-for-tests-00000";
const PASSWORD: &str = "correct horse battery staple";

// ------------------------------------------------------------------ logs --

/// Every log line of this test process, as JSON text.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter("info")
            .with_writer(move || LogWriter(writer.clone()))
            .try_init();
        buffer
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs_text() -> String {
    String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned()
}

// -------------------------------------------------------------- harness --

/// A running Platform Core on a migrated database of its own.
struct Core {
    internal: SocketAddr,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Core {
    async fn start() -> Core {
        let url = Postgres::shared()
            .create_unique_database("core")
            .await
            .unwrap();
        let vars = Vars::from_pairs([
            ("SERVICE_NAME", "platform-core"),
            ("KISUM_ENVIRONMENT", "test"),
            ("HTTP_PORT", "0"),
            ("INTERNAL_PORT", "0"),
            ("CORE_DB_URL", url.as_str()),
            ("INTERNAL_ALLOWED_CALLERS", "auth,platform-admin"),
            ("INTERNAL_CALLER_AUTH", AUTH_TO_CORE),
            ("INTERNAL_CALLER_PLATFORM_ADMIN", ADMIN_SECRET),
            ("INTERNAL_CALLER_KISUMCTL", KISUMCTL_SECRET),
        ]);
        let config = kisum_core::Config::from_vars(&vars).unwrap();
        kisum_core::migrate(&config).await.unwrap();
        let listeners = loopback_listeners().await;
        let (_, internal) = listeners.addresses().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            kisum_core::run(config, listeners, shutdown).await.unwrap();
        });
        Core {
            internal,
            stop: Mutex::new(Some(stop)),
        }
    }

    /// Shuts Core down (graceful: it stops accepting at once).
    fn stop(&self) {
        if let Some(stop) = self.stop.lock().unwrap().take() {
            let _ = stop.send(());
        }
    }
}

async fn loopback_listeners() -> Listeners {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    Listeners::bind(loopback, loopback).await.unwrap()
}

/// Settings a test may change before Auth starts.
struct Options {
    per_ip: u32,
    per_email: u32,
    backoff_max_seconds: u32,
    refresh_per_session: u32,
    refresh_per_ip: u32,
    /// `TRUSTED_PROXIES`: with 127.0.0.1 trusted, a test chooses the client
    /// address through `X-Forwarded-For`.
    trusted_proxies: Option<&'static str>,
    /// `PASSWORD_RESET_*` variables.
    password_reset: &'static [(&'static str, &'static str)],
}

impl Default for Options {
    fn default() -> Self {
        Options {
            per_ip: 1000,
            per_email: 1000,
            backoff_max_seconds: 60,
            refresh_per_session: 1000,
            refresh_per_ip: 1000,
            trusted_proxies: None,
            password_reset: &[],
        }
    }
}

struct Harness {
    public: SocketAddr,
    internal: SocketAddr,
    core: Core,
    redis: Redis,
    db: PgPool,
    /// auth_db and Auth's Redis, as operators' tooling writes the
    /// directory (seen by Auth at once); `db` alone writes auth_db only.
    dir: Directory,
    /// Auth's Redis, read and written directly.
    cache: Cache,
    keys: KeySet,
    key_file: PathBuf,
    _key_dir: tempfile::TempDir,
    http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn now() -> i64 {
    kisum_auth::unix_now()
}

fn policy() -> TokenPolicy {
    TokenPolicy {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        leeway_seconds: 0,
    }
}

async fn auth_database() -> (String, PgPool) {
    let url = Postgres::shared()
        .create_unique_database("auth")
        .await
        .unwrap();
    let pool = db::connect(&url).await.unwrap();
    (url, pool)
}

fn auth_vars(
    db_url: &str,
    redis_url: &str,
    key_file: &str,
    core: SocketAddr,
    options: &Options,
) -> Vars {
    let (per_ip, per_email) = (options.per_ip.to_string(), options.per_email.to_string());
    let backoff_max = options.backoff_max_seconds.to_string();
    let refresh_per_session = options.refresh_per_session.to_string();
    let refresh_per_ip = options.refresh_per_ip.to_string();
    let mut vars = Vars::from_pairs([
        ("SERVICE_NAME", "auth"),
        ("KISUM_ENVIRONMENT", "test"),
        ("HTTP_PORT", "0"),
        ("INTERNAL_PORT", "0"),
        ("AUTH_DB_URL", db_url),
        ("REDIS_URL", redis_url),
        ("JWT_ISSUER", ISSUER),
        ("JWT_AUDIENCE", AUDIENCE),
        ("JWT_KEY_SET_FILE", key_file),
        ("ACCESS_TOKEN_TTL", "900"),
        ("REFRESH_TOKEN_TTL", "2592000"),
        ("CORE_INTERNAL_URL", &format!("http://{core}")),
        ("INTERNAL_CREDENTIAL", AUTH_TO_CORE),
        ("INTERNAL_CALLER_PLATFORM_ADMIN", ADMIN_SECRET),
        ("INTERNAL_CALLER_FINANCE", FINANCE_SECRET),
        ("INTERNAL_CALLER_KISUMCTL", KISUMCTL_SECRET),
        ("LOGIN_RATE_LIMIT_PER_IP", &per_ip),
        ("LOGIN_RATE_LIMIT_PER_EMAIL", &per_email),
        ("LOGIN_RATE_LIMIT_WINDOW_SECONDS", "900"),
        ("LOGIN_BACKOFF_MAX_SECONDS", &backoff_max),
        ("REFRESH_RATE_LIMIT_PER_SESSION", &refresh_per_session),
        ("REFRESH_RATE_LIMIT_PER_IP", &refresh_per_ip),
    ]);
    if let Some(proxies) = options.trusted_proxies {
        vars.set("TRUSTED_PROXIES", proxies);
    }
    for (name, value) in options.password_reset {
        vars.set(*name, *value);
    }
    vars
}

impl Harness {
    async fn start() -> Harness {
        Harness::with(Options::default()).await
    }

    async fn with(options: Options) -> Harness {
        captured_logs();
        let core = Core::start().await;
        let redis = Redis::start().await.unwrap();
        let (db_url, db) = auth_database().await;
        db::migrate(&db).await.unwrap();
        let key_dir = tempfile::tempdir().unwrap();
        let key_file = key_dir.path().join("key-set.json");
        let keys = KeySet::generate(now()).unwrap();
        keys.save(&key_file).unwrap();
        let vars = auth_vars(
            &db_url,
            &redis.url(),
            key_file.to_str().unwrap(),
            core.internal,
            &options,
        );
        let config = Config::from_vars(&vars).unwrap();
        let listeners = loopback_listeners().await;
        let (public, internal) = listeners.addresses().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = kisum_auth::app(config).await.unwrap();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            app.serve(listeners, shutdown).await.unwrap();
        });
        let cache = Cache::new(&redis.url(), AuthMetrics::new("auth-test", "test")).unwrap();
        Harness {
            public,
            internal,
            core,
            redis,
            dir: Directory::new(db.clone(), cache.clone()),
            cache,
            db,
            keys,
            key_file,
            _key_dir: key_dir,
            http: reqwest::Client::new(),
            _stop: stop,
        }
    }

    async fn user(&self, email: &str) -> Uuid {
        let hash = Passwords::default().hash(PASSWORD.into()).await.unwrap();
        directory::upsert_user(&self.db, email, &hash)
            .await
            .unwrap()
    }

    async fn company(&self, slug: &str) -> Uuid {
        let id = Uuid::new_v4();
        directory::upsert_company(&self.db, id, slug, slug)
            .await
            .unwrap();
        id
    }

    async fn send(
        &self,
        method: Method,
        url: String,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self.http.request(method, url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, body)
    }

    async fn public_call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!("http://{}{path}", self.public);
        let (status, _, body) = self.send(method, url, headers, body).await;
        (status, body)
    }

    async fn login(&self, email: &str, password: &str) -> (StatusCode, Value) {
        self.public_call(
            Method::POST,
            "/auth/login",
            &[],
            Some(json!({ "email": email, "password": password })),
        )
        .await
    }

    /// A successful login's tokens.
    async fn tokens(&self, email: &str) -> Value {
        let (status, body) = self.login(email, PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    async fn refresh(&self, refresh_token: &Value) -> (StatusCode, Value) {
        self.public_call(
            Method::POST,
            "/auth/refresh",
            &[],
            Some(json!({ "refresh_token": refresh_token })),
        )
        .await
    }

    /// Neither the access nor the refresh token of `tokens` is accepted.
    async fn assert_session_ended(&self, tokens: &Value) {
        assert_eq!(
            self.me(str_of(&tokens["access_token"])).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            self.refresh(&tokens["refresh_token"]).await.0,
            StatusCode::UNAUTHORIZED
        );
    }

    /// The session of `tokens` ended, `PASSWORD` no longer signs `email`
    /// in, `new_password` does.
    async fn assert_password_changed(&self, tokens: &Value, email: &str, new_password: &str) {
        self.assert_session_ended(tokens).await;
        assert_eq!(
            self.login(email, PASSWORD).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(self.login(email, new_password).await.0, StatusCode::OK);
    }

    async fn me(&self, access_token: &str) -> StatusCode {
        let bearer = format!("Bearer {access_token}");
        self.public_call(Method::GET, "/auth/me", &[("authorization", &bearer)], None)
            .await
            .0
    }

    async fn me_access(&self, access_token: &str, org: &str) -> (StatusCode, Value) {
        let bearer = format!("Bearer {access_token}");
        self.public_call(
            Method::GET,
            "/auth/me/access",
            &[("authorization", &bearer), ("x-org", org)],
            None,
        )
        .await
    }

    /// An internal call as `caller` (no credential when `None`).
    async fn internal_call(
        &self,
        caller: Option<(&str, &str)>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some((caller, secret)) = caller {
            Credential::new(caller, secret).apply(&mut headers);
        }
        let mut request = self
            .http
            .request(method, format!("http://{}{path}", self.internal))
            .headers(headers);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Empties Auth's Redis, as a restarted cache would be.
    async fn redis_flush(&self) {
        let client = redis::Client::open(self.redis.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("FLUSHALL")
            .query_async(&mut connection)
            .await
            .unwrap();
    }

    async fn as_admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.internal_call(Some(("platform-admin", ADMIN_SECRET)), method, path, body)
            .await
    }

    /// A write to Platform Core as Platform Admin would make it.
    async fn core_write(&self, path: &str, body: Value) {
        let mut headers = reqwest::header::HeaderMap::new();
        Credential::new("platform-admin", ADMIN_SECRET).apply(&mut headers);
        let response = self
            .http
            .put(format!("http://{}{path}", self.core.internal))
            .headers(headers)
            .header("x-kisum-actor", "admin-1")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
    }

    async fn subscribe(&self, company: Uuid, package: &str, active: bool) {
        let status = if active { "active" } else { "inactive" };
        self.core_write(
            &format!("/v1/companies/{company}/subscription"),
            json!({ "package": package, "status": status }),
        )
        .await;
    }

    async fn add_on(&self, company: Uuid, add_on: &str, active: bool) {
        self.core_write(
            &format!("/v1/companies/{company}/add-ons/{add_on}"),
            json!({ "active": active }),
        )
        .await;
    }

    async fn invalidate(&self, body: Value) {
        let (status, answer) = self
            .as_admin(Method::POST, "/internal/invalidate", Some(body))
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }

    async fn audit_count(&self, action: &str) -> i64 {
        sqlx::query_scalar("select count(*) from audit_events where action = $1")
            .bind(action)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("http://{}/metrics", self.internal))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn str_of(value: &Value) -> &str {
    value.as_str().expect("a string")
}

/// The claims part of a JWT, decoded.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

// ---------------------------------------------------------------- login --

#[tokio::test]
async fn login_succeeds_only_with_the_right_password_of_a_known_user() {
    let h = Harness::start().await;
    let user = h.user("ada@example.com").await;

    let (status, body) = h.login("  Ada@Example.com ", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(str_of(&body["refresh_token"]).len(), 43);
    let access = str_of(&body["access_token"]);
    let claims = policy().verify_with_set(access, &h.keys).unwrap();
    assert_eq!(claims.sub, user.to_string());
    assert_eq!(claims_of(access).as_object().unwrap().len(), 7);
    assert_eq!(h.me(access).await, StatusCode::OK);

    let (status, wrong) = h.login("ada@example.com", "not the password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong["error"], "invalid_credentials");
    let (status, unknown) = h.login("nobody@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown, wrong, "unknown users are indistinguishable");

    directory::set_user_status(&h.dir, user, false)
        .await
        .unwrap();
    let (status, disabled) = h.login("ada@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(disabled, wrong);
    assert_eq!(
        h.me(access).await,
        StatusCode::UNAUTHORIZED,
        "a disabled user's sessions end"
    );

    let (status, bad) = h
        .public_call(
            Method::POST,
            "/auth/login",
            &[],
            Some(json!({ "email": 1 })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(bad["error"], "invalid_request");

    assert_eq!(h.audit_count("login.success").await, 1);
    assert_eq!(h.audit_count("login.failure").await, 3);
    let metrics = h.metrics().await;
    assert!(metrics.contains(r#"kisum_events_total{event="login",outcome="success"}"#));
    assert!(metrics.contains(r#"kisum_events_total{event="login",outcome="failure"}"#));
}

#[tokio::test]
async fn me_lists_identity_platform_roles_and_companies() {
    let h = Harness::start().await;
    let user = h.user("me@example.com").await;
    directory::grant_platform_role(&h.db, user, "support")
        .await
        .unwrap();
    let company = h.company("acme").await;
    directory::define_role(&h.db, "member", &[]).await.unwrap();
    directory::add_membership(&h.db, user, company, "member")
        .await
        .unwrap();
    let tokens = h.tokens("me@example.com").await;
    let bearer = format!("Bearer {}", str_of(&tokens["access_token"]));
    let (status, me) = h
        .public_call(Method::GET, "/auth/me", &[("authorization", &bearer)], None)
        .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["user"], user.to_string());
    assert_eq!(me["email"], "me@example.com");
    assert_eq!(me["platform_roles"], json!(["support"]));
    assert_eq!(me["companies"][0]["slug"], "acme");
    assert_eq!(me["companies"][0]["role"], "member");
}

// ------------------------------------------------------- refresh tokens --

#[tokio::test]
async fn refresh_rotates_the_refresh_token() {
    let h = Harness::start().await;
    h.user("rot@example.com").await;
    let first = h.tokens("rot@example.com").await;
    let (status, second) = h.refresh(&first["refresh_token"]).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(second["token_type"], "Bearer");
    let (a, b) = (
        str_of(&first["access_token"]),
        str_of(&second["access_token"]),
    );
    assert_eq!(claims_of(a)["sid"], claims_of(b)["sid"], "same session");
    assert_eq!(h.me(b).await, StatusCode::OK);
    let (status, third) = h.refresh(&second["refresh_token"]).await;
    assert_eq!(status, StatusCode::OK, "{third}");
    let stored: i64 =
        sqlx::query_scalar("select count(*) from refresh_tokens where used_at is not null")
            .fetch_one(&h.db)
            .await
            .unwrap();
    assert_eq!(stored, 2);
    let (status, body) = h.refresh(&json!("not-a-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_refresh_token");
}

/// A refresh from client address `ip` (Auth trusts the test's proxy).
async fn refresh_from(
    h: &Harness,
    ip: &str,
    token: &Value,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let url = format!("http://{}/auth/refresh", h.public);
    let body = json!({ "refresh_token": token });
    h.send(Method::POST, url, &[("x-forwarded-for", ip)], Some(body))
        .await
}

#[tokio::test]
async fn refreshes_are_throttled_per_session_and_per_address_and_not_without_redis() {
    let mut h = Harness::with(Options {
        refresh_per_session: 2,
        refresh_per_ip: 2,
        trusted_proxies: Some("127.0.0.1/32"),
        ..Options::default()
    })
    .await;
    h.user("loop@example.com").await;
    // One session refreshing in a loop: stopped after two, before rotating.
    let mut tokens = h.tokens("loop@example.com").await;
    for _ in 0..2 {
        let (status, _, next) = refresh_from(&h, "198.51.100.1", &tokens["refresh_token"]).await;
        assert_eq!(status, StatusCode::OK, "{next}");
        tokens = next;
    }
    let (status, headers, body) = refresh_from(&h, "198.51.100.2", &tokens["refresh_token"]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"], "rate_limited");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Another session is not affected, but one address is limited too.
    let other = h.tokens("loop@example.com").await;
    let (status, _, _) = refresh_from(&h, "198.51.100.1", &other["refresh_token"]).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the address's third refresh"
    );
    let (status, _, other) = refresh_from(&h, "203.0.113.5", &other["refresh_token"]).await;
    assert_eq!(status, StatusCode::OK, "{other}");

    // Without Redis: no throttling, and refreshes still work.
    h.redis.stop();
    let (status, _, body) = refresh_from(&h, "198.51.100.2", &tokens["refresh_token"]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"kisum_events_total{event="refresh_rate_limit",outcome="limited"}"#)
    );
    assert!(
        metrics.contains(r#"kisum_events_total{event="refresh_rate_limit",outcome="skipped"}"#)
    );
}

#[tokio::test]
async fn a_reused_refresh_token_revokes_the_whole_session_family() {
    let h = Harness::start().await;
    h.user("reuse@example.com").await;
    let first = h.tokens("reuse@example.com").await;
    let (status, second) = h.refresh(&first["refresh_token"]).await;
    assert_eq!(status, StatusCode::OK);

    // The first refresh token again: stolen or replayed.
    let (status, body) = h.refresh(&first["refresh_token"]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_refresh_token");

    let (status, _) = h.refresh(&second["refresh_token"]).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the new refresh token died too"
    );
    for tokens in [&first, &second] {
        assert_eq!(
            h.me(str_of(&tokens["access_token"])).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(h.audit_count("refresh.reuse_detected").await, 1);
    let reason: String = sqlx::query_scalar("select revoked_reason from sessions")
        .fetch_one(&h.db)
        .await
        .unwrap();
    assert_eq!(reason, "refresh_token_reuse");
    // Another login starts a fresh, unaffected family.
    let fresh = h.tokens("reuse@example.com").await;
    assert_eq!(h.me(str_of(&fresh["access_token"])).await, StatusCode::OK);
}

// --------------------------------------------------------------- logout --

#[tokio::test]
async fn logout_ends_one_session_and_logout_all_every_session() {
    let h = Harness::start().await;
    h.user("out@example.com").await;
    let a = h.tokens("out@example.com").await;
    let b = h.tokens("out@example.com").await;
    let c = h.tokens("out@example.com").await;

    let bearer_a = format!("Bearer {}", str_of(&a["access_token"]));
    let (status, _) = h
        .public_call(
            Method::POST,
            "/auth/logout",
            &[("authorization", &bearer_a)],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    h.assert_session_ended(&a).await;
    assert_eq!(h.me(str_of(&b["access_token"])).await, StatusCode::OK);

    // A client whose access token expired logs out with its refresh token.
    let (status, _) = h
        .public_call(
            Method::POST,
            "/auth/logout",
            &[],
            Some(json!({ "refresh_token": b["refresh_token"] })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        h.me(str_of(&b["access_token"])).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(h.me(str_of(&c["access_token"])).await, StatusCode::OK);

    // A stale access token beside a valid refresh token: the refresh token
    // names the session, and it ends.
    let (status, _) = h
        .public_call(
            Method::POST,
            "/auth/logout",
            &[("authorization", "Bearer stale.access.token")],
            Some(json!({ "refresh_token": c["refresh_token"] })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        h.refresh(&c["refresh_token"]).await.0,
        StatusCode::UNAUTHORIZED
    );

    let d = h.tokens("out@example.com").await;
    let bearer_d = format!("Bearer {}", str_of(&d["access_token"]));
    let (status, _) = h
        .public_call(
            Method::POST,
            "/auth/logout-all",
            &[("authorization", &bearer_d)],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for tokens in [&c, &d] {
        h.assert_session_ended(tokens).await;
    }
    let live: i64 = sqlx::query_scalar("select count(*) from sessions where revoked_at is null")
        .fetch_one(&h.db)
        .await
        .unwrap();
    assert_eq!(live, 0);

    // A session already ended is refused, as on every other route: by its
    // logout (access or refresh token) or by a logout-all.
    for (headers, body) in [
        (vec![("authorization", bearer_a.as_str())], None),
        (vec![], Some(json!({ "refresh_token": b["refresh_token"] }))),
        (vec![("authorization", bearer_d.as_str())], None),
    ] {
        let (status, answer) = h
            .public_call(Method::POST, "/auth/logout", &headers, body)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        assert_eq!(answer["error"], "session_revoked", "{answer}");
    }
    assert_eq!(h.audit_count("logout").await, 3);
    assert_eq!(h.audit_count("logout_all").await, 1);
    assert_eq!(
        h.me(str_of(&h.tokens("out@example.com").await["access_token"]))
            .await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn revocation_holds_with_redis_stopped_and_after_its_restart() {
    let mut h = Harness::start().await;
    h.user("red@example.com").await;
    let kept = h.tokens("red@example.com").await;
    let ended = h.tokens("red@example.com").await;

    h.redis.stop();
    let (status, ready) = h.public_call(Method::GET, "/ready", &[], None).await;
    // Degraded, not out of service: auth_db answers for Redis.
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert!(
        ready["checks"]["redis"]
            .as_str()
            .unwrap()
            .starts_with("degraded"),
        "{ready}"
    );
    assert_eq!(ready["checks"]["auth_db"], "ok");
    assert_eq!(ready["checks"]["signing_keys"], "ok");

    assert_eq!(h.me(str_of(&kept["access_token"])).await, StatusCode::OK);
    let bearer = format!("Bearer {}", str_of(&ended["access_token"]));
    let (status, _) = h
        .public_call(
            Method::POST,
            "/auth/logout",
            &[("authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        h.me(str_of(&ended["access_token"])).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(h.me(str_of(&kept["access_token"])).await, StatusCode::OK);
    // Logins and refreshes still work without Redis.
    let during = h.tokens("red@example.com").await;
    assert_eq!(h.refresh(&during["refresh_token"]).await.0, StatusCode::OK);

    // Back, empty: no revocation marker survived, auth_db still says no.
    h.redis.restart().await.unwrap();
    assert_eq!(
        h.me(str_of(&ended["access_token"])).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(h.me(str_of(&kept["access_token"])).await, StatusCode::OK);
    let ready_again = wait_until(Duration::from_secs(10), || async {
        h.public_call(Method::GET, "/ready", &[], None).await.0 == StatusCode::OK
    })
    .await;
    assert!(ready_again, "ready again once Redis is back");
    assert_eq!(
        h.me(str_of(&ended["access_token"])).await,
        StatusCode::UNAUTHORIZED
    );
    let metrics = h.metrics().await;
    assert!(metrics.contains(r#"kisum_events_total{event="redis",outcome="unavailable"}"#));
    assert!(
        metrics.contains(r#"kisum_events_total{event="revoked_session_use",outcome="denied"}"#)
    );
}

/// Polls `check` until it holds or `limit` passes.
async fn wait_until<F, Fut>(limit: Duration, check: F) -> bool
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

// ---------------------------------------------------------- rate limits --

/// A login from client address `ip` (Auth trusts the test's proxy).
async fn login_from(h: &Harness, ip: &str, email: &str, password: &str) -> (StatusCode, u64) {
    let url = format!("http://{}/auth/login", h.public);
    let body = json!({ "email": email, "password": password });
    let (status, headers, _) = h
        .send(Method::POST, url, &[("x-forwarded-for", ip)], Some(body))
        .await;
    let retry_after = headers
        .get("retry-after")
        .map_or(0, |v| v.to_str().unwrap().parse().unwrap());
    (status, retry_after)
}

#[tokio::test]
async fn wrong_passwords_slow_an_account_down_but_never_lock_its_owner_out() {
    let mut h = Harness::with(Options {
        per_email: 3,
        backoff_max_seconds: 2,
        trusted_proxies: Some("127.0.0.1/32"),
        ..Options::default()
    })
    .await;
    h.user("target@example.com").await;
    let attacker = "198.51.100.7";
    // Up to the limit, failures cost nothing but the failure.
    for _ in 0..3 {
        let (status, _) = login_from(&h, attacker, "target@example.com", "guess").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // The fourth starts a backoff: the next try is refused unchecked.
    let (status, _) = login_from(&h, attacker, "target@example.com", "guess").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, retry_after) = login_from(&h, attacker, "TARGET@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!((1..=2).contains(&retry_after), "{retry_after}");

    // The owner, from an address that has not failed: not slowed at all.
    let (status, _) = login_from(&h, "203.0.113.9", "target@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);

    // Further failures back off longer, but never past the cap: after it,
    // the right password goes through even from the guessing address.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let (status, _) = login_from(&h, attacker, "target@example.com", "guess").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, retry_after) = login_from(&h, attacker, "target@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!((1..=2).contains(&retry_after), "capped: {retry_after}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, _) = login_from(&h, attacker, "target@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    // Other accounts are not affected.
    h.user("other@example.com").await;
    assert_eq!(
        login_from(&h, attacker, "other@example.com", PASSWORD)
            .await
            .0,
        StatusCode::OK
    );

    // Without Redis nothing is throttled, and nothing fails.
    let (status, _) = login_from(&h, attacker, "target@example.com", "guess").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = login_from(&h, attacker, "target@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    h.redis.stop();
    for _ in 0..3 {
        let (status, _) = login_from(&h, attacker, "target@example.com", PASSWORD).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "no rate limit, no failure without Redis"
        );
    }
    let metrics = h.metrics().await;
    assert!(metrics.contains(r#"kisum_events_total{event="login_rate_limit",outcome="skipped"}"#));
    assert!(metrics.contains(r#"kisum_events_total{event="login_rate_limit",outcome="limited"}"#));
    let warnings = logs_text()
        .lines()
        .filter(|line| line.contains("Redis unavailable"))
        .count();
    assert!(warnings >= 1, "the degradation is logged");
}

#[tokio::test]
async fn guesses_from_rotating_addresses_never_hold_the_owner_past_the_cap() {
    let h = Harness::with(Options {
        per_email: 2,
        backoff_max_seconds: 2,
        trusted_proxies: Some("127.0.0.1/32"),
        ..Options::default()
    })
    .await;
    h.user("owner@example.com").await;
    let owner = "203.0.113.50";
    // Guesses push the account past its limit; then the owner mistypes.
    for n in 0..3 {
        let guesser = format!("198.51.100.{n}");
        let (status, _) = login_from(&h, &guesser, "owner@example.com", "guess").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = login_from(&h, owner, "owner@example.com", "typo").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mistyped = Instant::now();
    // Fresh addresses keep failing while the owner retries the right password.
    // A refusal is only checked against the time its request was sent: the
    // server decided no earlier than that, and the typo counted no later than
    // `mistyped`, so a load-slowed machine cannot make a correct cap fail.
    let mut signed_in = false;
    for n in 0..40u32 {
        let guesser = format!("198.51.101.{n}");
        let (status, _) = login_from(&h, &guesser, "owner@example.com", "guess").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let sent = mistyped.elapsed();
        let (status, retry_after) = login_from(&h, owner, "owner@example.com", PASSWORD).await;
        if status == StatusCode::OK {
            signed_in = true;
            break;
        }
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!((1..=2).contains(&retry_after), "{retry_after}");
        assert!(
            sent <= Duration::from_millis(2100),
            "the owner was still refused for a request sent {sent:?} after the typo (cap 2 s)"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(signed_in, "the owner gets in once the cap has passed");
    // The success cleared the owner's mark: a new guess elsewhere does not
    // hold the owner back.
    let (status, _) = login_from(&h, "198.51.102.1", "owner@example.com", "guess").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = login_from(&h, owner, "owner@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_address_limit_answers_429_and_a_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let mut h = Harness::with(Options {
        per_ip: 3,
        ..Options::default()
    })
    .await;
    h.user("ip@example.com").await;
    for n in 0..3 {
        // Spoofed X-Forwarded-For: the peer (127.0.0.1) is no trusted proxy.
        let spoofed = format!("198.51.100.{n}");
        let url = format!("http://{}/auth/login", h.public);
        let body = json!({ "email": format!("user{n}@example.com"), "password": "x" });
        let (status, _, _) = h
            .send(
                Method::POST,
                url,
                &[("x-forwarded-for", &spoofed)],
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _, _) = h
        .send(
            Method::POST,
            format!("http://{}/auth/login", h.public),
            &[("x-forwarded-for", "203.0.113.77")],
            Some(json!({ "email": "ip@example.com", "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    h.redis.stop();
    assert_eq!(h.login("ip@example.com", PASSWORD).await.0, StatusCode::OK);
}

// --------------------------------------------------------------- access --

/// A user with a `manager` membership in a company, granted `modules`.
async fn member(h: &Harness, email: &str, slug: &str, modules: &[&str]) -> (Uuid, Uuid, Uuid) {
    directory::define_role(
        &h.db,
        "manager",
        &[
            "basic.contacts.read",
            "finance.invoices.read",
            "finance.invoices.write",
            "market.listings.read",
        ],
    )
    .await
    .unwrap();
    let user = h.user(email).await;
    let company = h.company(slug).await;
    let membership = directory::add_membership(&h.db, user, company, "manager")
        .await
        .unwrap();
    for module in modules {
        directory::grant_module(&h.db, membership, module)
            .await
            .unwrap();
    }
    (user, company, membership)
}

#[tokio::test]
async fn the_access_context_follows_an_entitlement_change_right_after_invalidate() {
    let h = Harness::start().await;
    let (user, company, membership) =
        member(&h, "ent@example.com", "ent-co", &["basic", "finance"]).await;
    h.subscribe(company, "basic-standard", true).await;
    let tokens = h.tokens("ent@example.com").await;
    let access = str_of(&tokens["access_token"]);

    let (status, context) = h.me_access(access, "ent-co").await;
    assert_eq!(status, StatusCode::OK, "{context}");
    assert_eq!(context["user"], user.to_string());
    assert_eq!(context["session"], claims_of(access)["sid"]);
    assert_eq!(context["company"], company.to_string());
    assert_eq!(context["membership"], membership.to_string());
    assert_eq!(context["core_app"], true);
    assert_eq!(
        context["modules"],
        json!({ "basic": ["basic.contacts.read"] })
    );
    let first_version = context["entitlement_version"].as_i64().unwrap();

    // Served from the cache the second time; by id as well as by slug.
    let (_, again) = h.me_access(access, &company.to_string()).await;
    assert_eq!(again, context);
    assert!(
        h.metrics()
            .await
            .contains(r#"kisum_events_total{event="access_cache",outcome="hit"}"#)
    );

    h.add_on(company, "finance", true).await;
    h.invalidate(json!({ "company": company })).await;
    let (status, changed) = h.me_access(access, "ent-co").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        changed["modules"],
        json!({
            "basic": ["basic.contacts.read"],
            "finance": ["finance.invoices.read", "finance.invoices.write"],
        })
    );
    assert!(changed["entitlement_version"].as_i64().unwrap() > first_version);
    assert!(
        changed["access_version"].as_i64().unwrap() > context["access_version"].as_i64().unwrap()
    );

    // A grant change bumps the user's access version in auth_db itself
    // (and, written with Auth's Redis, the access epoch).
    directory::revoke_module(&h.dir, membership, "finance")
        .await
        .unwrap();
    let (_, regranted) = h.me_access(access, "ent-co").await;
    assert_eq!(
        regranted["modules"],
        json!({ "basic": ["basic.contacts.read"] })
    );

    // `{user}` invalidation is accepted too.
    h.invalidate(json!({ "user": user })).await;
    let (status, _) = h
        .as_admin(Method::POST, "/internal/invalidate", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn access_stays_correct_with_redis_down() {
    let mut h = Harness::start().await;
    let (_, company, _) = member(&h, "nored@example.com", "nored-co", &["basic", "market"]).await;
    h.subscribe(company, "basic-standard", true).await;
    let tokens = h.tokens("nored@example.com").await;
    let access = str_of(&tokens["access_token"]);
    let (_, cached) = h.me_access(access, "nored-co").await;
    assert_eq!(
        cached["modules"],
        json!({ "basic": ["basic.contacts.read"] })
    );

    h.redis.stop();
    let (status, uncached) = h.me_access(access, "nored-co").await;
    assert_eq!(status, StatusCode::OK, "{uncached}");
    assert_eq!(uncached, cached);
    // Core changes; Redis is down, so nothing is cached: seen at once.
    h.add_on(company, "market", true).await;
    h.invalidate(json!({ "company": company })).await;
    let (_, changed) = h.me_access(access, "nored-co").await;
    assert_eq!(
        changed["modules"],
        json!({ "basic": ["basic.contacts.read"], "market": ["market.listings.read"] })
    );
    // Back, empty: rebuilt from the databases.
    h.redis.restart().await.unwrap();
    let (_, rebuilt) = h.me_access(access, "nored-co").await;
    assert_eq!(rebuilt["modules"], changed["modules"]);
}

#[tokio::test]
async fn core_app_is_hidden_without_basic_while_an_add_on_module_stays() {
    let h = Harness::start().await;
    let (_, company, _) = member(&h, "addon@example.com", "addon-co", &["basic", "market"]).await;
    h.subscribe(company, "basic-standard", true).await;
    h.add_on(company, "market", true).await;
    h.subscribe(company, "basic-standard", false).await;
    let tokens = h.tokens("addon@example.com").await;
    let (status, context) = h
        .me_access(str_of(&tokens["access_token"]), "addon-co")
        .await;
    assert_eq!(status, StatusCode::OK, "{context}");
    assert_eq!(context["core_app"], false);
    assert_eq!(
        context["modules"],
        json!({ "market": ["market.listings.read"] })
    );
}

#[tokio::test]
async fn core_reachability_reports_whether_auth_reaches_core() {
    let h = Harness::start().await;
    let (status, body) = h
        .as_admin(Method::GET, "/internal/core-reachability", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["core"], "reachable");
    h.core.stop();
    let unreachable = wait_until(Duration::from_secs(10), || async {
        h.as_admin(Method::GET, "/internal/core-reachability", None)
            .await
            .0
            == StatusCode::BAD_GATEWAY
    })
    .await;
    assert!(unreachable, "a stopped Core is reported");
    let (_, body) = h
        .as_admin(Method::GET, "/internal/core-reachability", None)
        .await;
    assert_eq!(body["core"], "unreachable");
}

#[tokio::test]
async fn core_down_is_a_503_and_an_aggregation_failure_never_a_guess() {
    let h = Harness::start().await;
    let (_, company, _) = member(&h, "down@example.com", "down-co", &["basic"]).await;
    h.subscribe(company, "basic-standard", true).await;
    let tokens = h.tokens("down@example.com").await;
    let access = str_of(&tokens["access_token"]);
    assert_eq!(h.me_access(access, "down-co").await.0, StatusCode::OK);

    h.core.stop();
    h.invalidate(json!({ "company": company })).await;
    let stopped = wait_until(Duration::from_secs(10), || async {
        h.me_access(access, "down-co").await.0 == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert!(stopped, "no access context without Core");
    let (_, body) = h.me_access(access, "down-co").await;
    assert_eq!(body["error"], "access_unavailable");
    assert!(logs_text().contains("access aggregation failure"));
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"kisum_events_total{event="access_aggregation",outcome="failure"}"#)
    );
    assert!(metrics.contains("kisum_auth_core_entitlement_lookup_seconds_count"));
}

#[tokio::test]
async fn delegation_lends_the_lenders_permissions_of_one_module() {
    let h = Harness::start().await;
    let (_, company, lender) = member(&h, "lender@example.com", "del-co", &["finance"]).await;
    h.add_on(company, "finance", true).await;
    directory::define_role(&h.db, "viewer", &[]).await.unwrap();
    let borrower_user = h.user("borrower@example.com").await;
    let borrower = directory::add_membership(&h.db, borrower_user, company, "viewer")
        .await
        .unwrap();
    directory::grant_module(&h.db, borrower, "finance")
        .await
        .unwrap();
    let tokens = h.tokens("borrower@example.com").await;
    let access = str_of(&tokens["access_token"]);
    let (_, before) = h.me_access(access, "del-co").await;
    assert_eq!(before["modules"], json!({ "finance": [] }));

    directory::delegate(&h.dir, lender, borrower, "finance", 3600)
        .await
        .unwrap();
    let (_, after) = h.me_access(access, "del-co").await;
    assert_eq!(
        after["modules"],
        json!({ "finance": ["finance.invoices.read", "finance.invoices.write"] })
    );
}

#[tokio::test]
async fn a_disabled_user_lends_nothing_and_loses_every_access_at_once() {
    let h = Harness::start().await;
    let (lender_user, company, lender) =
        member(&h, "off-lender@example.com", "off-co", &["finance"]).await;
    h.add_on(company, "finance", true).await;
    directory::define_role(&h.db, "viewer", &[]).await.unwrap();
    let borrower_user = h.user("off-borrower@example.com").await;
    let borrower = directory::add_membership(&h.db, borrower_user, company, "viewer")
        .await
        .unwrap();
    directory::grant_module(&h.db, borrower, "finance")
        .await
        .unwrap();
    directory::delegate(&h.db, lender, borrower, "finance", 3600)
        .await
        .unwrap();
    let tokens = h.tokens("off-borrower@example.com").await;
    let access = str_of(&tokens["access_token"]);
    let lent = json!({ "finance": ["finance.invoices.read", "finance.invoices.write"] });
    let (_, first) = h.me_access(access, "off-co").await;
    assert_eq!(first["modules"], lent);
    // Cached now: the next answer comes from Redis.
    let (_, cached) = h.me_access(access, "off-co").await;
    assert_eq!(cached, first);

    // The lender is disabled: the cached context is unreachable at once and
    // the delegation lends nothing.
    directory::set_user_status(&h.dir, lender_user, false)
        .await
        .unwrap();
    let (status, after) = h.me_access(access, "off-co").await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["modules"], json!({ "finance": [] }));
    assert!(after["access_version"].as_i64() > first["access_version"].as_i64());
    directory::set_user_status(&h.dir, lender_user, true)
        .await
        .unwrap();
    assert_eq!(h.me_access(access, "off-co").await.1["modules"], lent);

    // The borrower is disabled: no access, no session use, no refresh.
    directory::set_user_status(&h.dir, borrower_user, false)
        .await
        .unwrap();
    // auth_db itself holds every session of the user revoked.
    let live: i64 = sqlx::query_scalar(
        "select count(*) from sessions where user_id = $1 and revoked_at is null",
    )
    .bind(borrower_user)
    .fetch_one(&h.db)
    .await
    .unwrap();
    assert_eq!(live, 0, "a disabled user keeps no live session");
    let (status, body) = h.me_access(access, "off-co").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(h.me(access).await, StatusCode::UNAUTHORIZED);
    let session = claims_of(access)["sid"].clone();
    let (status, _) = h
        .internal_call(
            Some(("finance", FINANCE_SECRET)),
            Method::POST,
            "/internal/access-context",
            Some(json!({ "user": borrower_user, "session": session, "org": "off-co" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        h.refresh(&tokens["refresh_token"]).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Enabled again (with SQL alone, past any Redis marker): the old
    // session stays ended; the user signs in anew.
    sqlx::query("update users set status = 'active' where id = $1")
        .bind(borrower_user)
        .execute(&h.db)
        .await
        .unwrap();
    h.redis_flush().await;
    assert_eq!(h.me(access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        h.refresh(&tokens["refresh_token"]).await.0,
        StatusCode::UNAUTHORIZED
    );
    h.tokens("off-borrower@example.com").await;
}

#[tokio::test]
async fn x_org_of_a_company_without_membership_is_forbidden() {
    let h = Harness::start().await;
    let (user, _, _) = member(&h, "own@example.com", "own-co", &["basic"]).await;
    let foreign = h.company("foreign-co").await;
    let tokens = h.tokens("own@example.com").await;
    let access = str_of(&tokens["access_token"]);
    for org in ["foreign-co", &foreign.to_string(), "no-such-company"] {
        let (status, body) = h.me_access(access, org).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{org}");
        assert_eq!(body["error"], "forbidden");
    }
    // Slugs are case-insensitive.
    for org in ["own-co", "Own-Co", "OWN-CO"] {
        let (status, body) = h.me_access(access, org).await;
        assert_eq!(status, StatusCode::OK, "{org}: {body}");
    }
    // A malformed x-org is a 400, as the module backends answer it.
    for org in ["own-co/../x", "own co", "", &"a".repeat(129)] {
        let (status, body) = h.me_access(access, org).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{org:?}: {body}");
    }
    let non_ascii = h
        .http
        .get(format!("http://{}/auth/me/access", h.public))
        .bearer_auth(access)
        .header(
            "x-org",
            reqwest::header::HeaderValue::from_bytes("own-c\u{f6}".as_bytes()).unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(non_ascii.status(), StatusCode::BAD_REQUEST);

    // The module backends' route: same answers, by user and session.
    let session = claims_of(access)["sid"].clone();
    let finance = Some(("finance", FINANCE_SECRET));
    let request = |org: &str| json!({ "user": user, "session": session, "org": org });
    let (status, context) = h
        .internal_call(
            finance,
            Method::POST,
            "/internal/access-context",
            Some(request("own-co")),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{context}");
    assert_eq!(context["session"], session);
    let (status, _) = h
        .internal_call(
            finance,
            Method::POST,
            "/internal/access-context",
            Some(request("foreign-co")),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let unknown = json!({ "user": user, "session": Uuid::new_v4(), "org": "own-co" });
    let (status, _) = h
        .internal_call(
            finance,
            Method::POST,
            "/internal/access-context",
            Some(unknown),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A suspended membership is denied like a missing one.
    let membership: Uuid = sqlx::query_scalar("select id from memberships where user_id = $1")
        .bind(user)
        .fetch_one(&h.db)
        .await
        .unwrap();
    directory::set_membership_active(&h.dir, membership, false)
        .await
        .unwrap();
    assert_eq!(h.me_access(access, "own-co").await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn platform_access_lists_platform_roles_of_a_live_session() {
    let h = Harness::start().await;
    let user = h.user("admin@example.com").await;
    directory::grant_platform_role(&h.db, user, "platform-admin")
        .await
        .unwrap();
    let tokens = h.tokens("admin@example.com").await;
    let session = claims_of(str_of(&tokens["access_token"]))["sid"].clone();
    let body = json!({ "user": user, "session": session });
    let (status, answer) = h
        .as_admin(
            Method::POST,
            "/internal/platform-access",
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["platform_roles"], json!(["platform-admin"]));
    let bearer = format!("Bearer {}", str_of(&tokens["access_token"]));
    h.public_call(
        Method::POST,
        "/auth/logout",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    let (status, _) = h
        .as_admin(Method::POST, "/internal/platform-access", Some(body))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

// ------------------------------------------------------- token attacks --

/// The public half of a key as a PEM, the "secret" of the HS256 confusion.
fn public_key_pem(key: &Key) -> String {
    use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
    use aws_lc_rs::signature::KeyPair as _;
    let body: String = key
        .private_key_pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(&der).unwrap();
    let public: PublicKeyX509Der = pair.public_key().as_der().unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(public.as_ref());
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

#[tokio::test]
async fn forged_expired_and_misdirected_access_tokens_are_all_401() {
    let h = Harness::start().await;
    let user = h.user("victim@example.com").await;
    let tokens = h.tokens("victim@example.com").await;
    let genuine = str_of(&tokens["access_token"]).to_string();
    let sid = str_of(&claims_of(&genuine)["sid"]).to_string();
    let (uid, t) = (user.to_string(), now());
    let kid = h.keys.active().kid.clone();
    let sign = |policy: &TokenPolicy, at: i64| policy.sign(&h.keys, &uid, &sid, at, 900).unwrap();
    let claims = json!({ "sub": uid, "sid": sid, "iss": ISSUER, "aud": AUDIENCE,
                         "exp": t + 900, "iat": t, "nbf": t });

    let none = format!(
        "{}.{}.",
        b64(json!({ "alg": "none", "typ": "JWT", "kid": kid })
            .to_string()
            .as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some(kid.clone());
    let hs256 = jsonwebtoken::encode(
        &hs_header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(public_key_pem(h.keys.active()).as_bytes())
            .unwrap(),
    )
    .unwrap();
    let expired = sign(&policy(), t - 1000);
    let not_yet = sign(&policy(), t + 600);
    let wrong_issuer = sign(
        &TokenPolicy {
            issuer: "https://evil.example".into(),
            ..policy()
        },
        t,
    );
    let wrong_audience = sign(
        &TokenPolicy {
            audience: "other-api".into(),
            ..policy()
        },
        t,
    );
    let stranger = KeySet::generate(t).unwrap();
    let unknown_kid = policy().sign(&stranger, &uid, &sid, t, 900).unwrap();
    let tampered = {
        let mut parts: Vec<String> = genuine.split('.').map(str::to_string).collect();
        let mut forged = claims_of(&genuine);
        forged["sub"] = json!(Uuid::new_v4().to_string());
        parts[1] = b64(forged.to_string().as_bytes());
        parts.join(".")
    };

    assert_eq!(
        h.me(&genuine).await,
        StatusCode::OK,
        "the genuine token works"
    );
    let attacks = [
        ("alg none", none),
        ("HS256 with the public key as secret", hs256),
        ("expired", expired),
        ("not yet valid", not_yet),
        ("wrong issuer", wrong_issuer),
        ("wrong audience", wrong_audience),
        ("unknown kid", unknown_kid),
        ("tampered payload", tampered),
        ("garbage", "a.b.c".to_string()),
    ];
    for (name, token) in &attacks {
        assert_eq!(h.me(token).await, StatusCode::UNAUTHORIZED, "{name}");
    }
    let (status, body) = h.public_call(Method::GET, "/auth/me", &[], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unauthenticated");

    let bearer = format!("Bearer {genuine}");
    h.public_call(
        Method::POST,
        "/auth/logout",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    let (status, body) = h.me_access(&genuine, "any").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked session");
    assert_eq!(body["error"], "session_revoked");
    assert_eq!(h.me(&genuine).await, StatusCode::UNAUTHORIZED);
}

// ----------------------------------------------------------------- keys --

async fn jwks_kids(h: &Harness) -> Vec<String> {
    let (status, jwks) = h
        .public_call(Method::GET, "/.well-known/jwks.json", &[], None)
        .await;
    assert_eq!(status, StatusCode::OK);
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| str_of(&k["kid"]).to_string())
        .collect()
}

#[tokio::test]
async fn jwks_publishes_next_active_and_retiring_keys_but_not_retired_ones() {
    let h = Harness::start().await;
    let t = now();
    let mut set = h.keys.clone();
    set.keys[0].state = KeyState::Retiring;
    set.keys.push(Key::generate(KeyState::Active, t).unwrap());
    set.keys.push(Key::generate(KeyState::Next, t).unwrap());
    set.keys.push(Key::generate(KeyState::Retired, t).unwrap());
    set.save(&h.key_file).unwrap();
    let (status, reloaded) = h
        .internal_call(
            Some(("kisumctl", KISUMCTL_SECRET)),
            Method::POST,
            "/internal/keys/reload",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reloaded}");
    let mut published = jwks_kids(&h).await;
    published.sort();
    let mut expected: Vec<String> = set.keys[..3].iter().map(|k| k.kid.clone()).collect();
    expected.sort();
    assert_eq!(published, expected);
    assert!(!published.contains(&set.keys[3].kid));
    let (_, jwks) = h
        .public_call(Method::GET, "/.well-known/jwks.json", &[], None)
        .await;
    for key in jwks["keys"].as_array().unwrap() {
        assert_eq!(key["alg"], "RS256");
        assert!(key.get("d").is_none(), "no private part");
    }
    let (status, diagnostics) = h
        .internal_call(
            Some(("kisumctl", KISUMCTL_SECRET)),
            Method::GET,
            "/internal/diagnostics",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(diagnostics["kids"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_changed_key_set_file_is_picked_up_without_a_restart() {
    let h = Harness::start().await;
    h.user("rotate@example.com").await;
    let before = h.tokens("rotate@example.com").await;
    let old_kid = h.keys.active().kid.clone();

    let mut rotated = h.keys.clone();
    rotated.keys[0].state = KeyState::Retiring;
    let new_key = Key::generate(KeyState::Active, now()).unwrap();
    let new_kid = new_key.kid.clone();
    rotated.keys.push(new_key);
    rotated.save(&h.key_file).unwrap();

    let picked_up = wait_until(Duration::from_secs(10), || async {
        jwks_kids(&h).await.contains(&new_kid)
    })
    .await;
    assert!(picked_up, "the new key was published without a restart");
    let after = h.tokens("rotate@example.com").await;
    let header = jsonwebtoken::decode_header(str_of(&after["access_token"])).unwrap();
    assert_eq!(header.kid.as_deref(), Some(new_kid.as_str()));
    // Tokens of the retiring key still verify.
    assert_eq!(h.me(str_of(&before["access_token"])).await, StatusCode::OK);
    assert!(jwks_kids(&h).await.contains(&old_kid));

    // A broken file changes nothing.
    std::fs::File::create(&h.key_file)
        .unwrap()
        .write_all(b"{ not json")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(jwks_kids(&h).await.contains(&new_kid));
    let (status, _) = h
        .internal_call(
            Some(("kisumctl", KISUMCTL_SECRET)),
            Method::POST,
            "/internal/keys/reload",
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_GATEWAY,
        "a bad set is refused, the old one kept"
    );
    assert_eq!(h.me(str_of(&after["access_token"])).await, StatusCode::OK);
}

// ------------------------------------------------------ internal routes --

#[tokio::test]
async fn internal_routes_require_an_allowed_caller_and_stay_off_the_public_port() {
    let h = Harness::start().await;
    let routes = [
        (Method::POST, "/internal/access-context"),
        (Method::POST, "/internal/invalidate"),
        (Method::POST, "/internal/platform-access"),
        (Method::GET, "/internal/core-reachability"),
        (Method::GET, "/internal/diagnostics"),
        (Method::POST, "/internal/keys/reload"),
    ];
    let body = json!({ "company": Uuid::new_v4() });
    for (method, path) in &routes {
        for caller in [
            None,
            Some(("platform-admin", "wrong")),
            Some(("finance", ADMIN_SECRET)),
            Some(("stranger", ADMIN_SECRET)),
        ] {
            let (status, _) = h
                .internal_call(caller, method.clone(), path, Some(body.clone()))
                .await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} as {caller:?}"
            );
        }
        let (status, _) = h
            .public_call(method.clone(), path, &[], Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path} on the public port");
    }
    let (status, _) = h
        .as_admin(Method::POST, "/internal/invalidate", Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::OK);
    // A module backend reads access contexts; it administers nothing, the
    // directory included.
    let finance = Some(("finance", FINANCE_SECRET));
    let company = Uuid::new_v4();
    let membership = Uuid::new_v4();
    let administration = [
        (Method::POST, "/internal/invalidate".to_string()),
        (Method::POST, "/internal/platform-access".to_string()),
        (Method::PUT, format!("/internal/companies/{company}")),
        (
            Method::GET,
            format!("/internal/companies/{company}/memberships"),
        ),
        (
            Method::POST,
            format!("/internal/companies/{company}/memberships"),
        ),
        (
            Method::PUT,
            format!("/internal/memberships/{membership}/status"),
        ),
        (
            Method::PUT,
            format!("/internal/memberships/{membership}/grants/finance"),
        ),
        (
            Method::DELETE,
            format!("/internal/memberships/{membership}/grants/finance/finance.invoices.read"),
        ),
        (Method::GET, "/internal/roles".to_string()),
        (Method::PUT, "/internal/roles/clerk".to_string()),
        (Method::GET, "/internal/core-reachability".to_string()),
    ];
    for (method, path) in administration {
        let (status, answer) = h
            .internal_call(finance, method.clone(), &path, Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(answer["error"], "forbidden");
    }
    let (status, answer) = h
        .public_call(
            Method::POST,
            "/auth/login",
            &[("content-type", "text/plain")],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
}

// ------------------------------------------------------- start and logs --

#[tokio::test]
async fn serve_refuses_pending_migrations_and_a_missing_key_set() {
    let core = Core::start().await;
    let redis = Redis::start().await.unwrap();
    let (db_url, db) = auth_database().await;
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("key-set.json");
    KeySet::generate(now()).unwrap().save(&key_file).unwrap();
    let vars = auth_vars(
        &db_url,
        &redis.url(),
        key_file.to_str().unwrap(),
        core.internal,
        &Options::default(),
    );

    let error = kisum_auth::app(Config::from_vars(&vars).unwrap())
        .await
        .err()
        .unwrap();
    assert!(
        format!("{error:#}").contains("pending migrations"),
        "{error:#}"
    );

    // `kisum-auth migrate`, then `seed-user` with the password on stdin.
    let binary = env!("CARGO_BIN_EXE_kisum-auth");
    let migrate = std::process::Command::new(binary)
        .arg("migrate")
        .env("AUTH_DB_URL", &db_url)
        .output()
        .unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    assert!(db::pending_migrations(&db).await.unwrap().is_empty());
    let mut seed = std::process::Command::new(binary)
        .args([
            "seed-user",
            "seeded@example.com",
            "--platform-role",
            "platform-admin",
        ])
        .env("AUTH_DB_URL", &db_url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    seed.stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .unwrap();
    let seeded = seed.wait_with_output().unwrap();
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    let user = Uuid::parse_str(String::from_utf8_lossy(&seeded.stdout).trim()).unwrap();
    assert_eq!(
        directory::platform_roles(&db, user).await.unwrap(),
        ["platform-admin"]
    );
    assert!(!String::from_utf8_lossy(&seeded.stderr).contains(PASSWORD));

    kisum_auth::app(Config::from_vars(&vars).unwrap())
        .await
        .unwrap();
    std::fs::write(&key_file, "{}").unwrap();
    let error = kisum_auth::app(Config::from_vars(&vars).unwrap())
        .await
        .err()
        .unwrap();
    assert!(
        format!("{error:#}").contains("no valid signing key set"),
        "{error:#}"
    );
}

#[tokio::test]
async fn seeding_a_new_password_ends_the_users_sessions_and_the_same_one_does_not() {
    let h = Harness::start().await;
    let passwords = Passwords::default();
    let email = "Seeded.Again@Example.com";
    let first = directory::seed_password(&h.dir, email, PASSWORD, &passwords)
        .await
        .unwrap();
    assert!(first.revoked.is_empty());
    let tokens = h.tokens("seeded.again@example.com").await;
    let access = str_of(&tokens["access_token"]);
    assert_eq!(h.me(access).await, StatusCode::OK);

    // The same password again (a rerun of the same deploy): nothing ends.
    let same = directory::seed_password(&h.dir, email, PASSWORD, &passwords)
        .await
        .unwrap();
    assert_eq!(same, first);
    assert_eq!(h.me(access).await, StatusCode::OK);

    // A new password: every session ends at once, as after a reset.
    let new_password = "a brand new seeded password";
    let changed = directory::seed_password(&h.dir, email, new_password, &passwords)
        .await
        .unwrap();
    assert_eq!(changed.user, first.user);
    assert_eq!(changed.revoked.len(), 1);
    h.assert_password_changed(&tokens, "seeded.again@example.com", new_password)
        .await;

    // Not an email address: refused, nothing written.
    let error = directory::seed_password(&h.dir, "not an email", PASSWORD, &passwords)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("not an email address"),
        "{error}"
    );
}

#[tokio::test]
async fn an_actor_longer_than_256_characters_is_refused_and_nothing_is_written() {
    let h = Harness::start().await;
    let company = Uuid::new_v4();
    let put = |actor: String| {
        let mut headers = reqwest::header::HeaderMap::new();
        Credential::new("platform-admin", ADMIN_SECRET).apply(&mut headers);
        h.http
            .put(format!(
                "http://{}/internal/companies/{company}",
                h.internal
            ))
            .headers(headers)
            .header("x-kisum-actor", actor)
            .json(&json!({ "slug": "actor-co", "name": "Actor" }))
            .send()
    };
    let refused = put("a".repeat(257)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let written: i64 = sqlx::query_scalar("select count(*) from companies where id = $1")
        .bind(company)
        .fetch_one(&h.db)
        .await
        .unwrap();
    assert_eq!(written, 0);
    let longest = "a".repeat(256);
    let created = put(longest.clone()).await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let actor: String = sqlx::query_scalar(
        "select detail->>'actor' from audit_events where company_id = $1 and action = 'company.put'",
    )
    .bind(company)
    .fetch_one(&h.db)
    .await
    .unwrap();
    assert_eq!(actor, longest);
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `kisum-auth serve` with auth_db at `db_url`, logging to a pipe.
fn auth_binary(db_url: &str, key_file: &str) -> std::process::Child {
    let dead = format!("127.0.0.1:{}", closed_port());
    std::process::Command::new(env!("CARGO_BIN_EXE_kisum-auth"))
        .arg("serve")
        .env_clear()
        .envs([
            ("BIND_ADDRESS", "127.0.0.1"),
            ("HTTP_PORT", "0"),
            ("INTERNAL_PORT", "0"),
            ("AUTH_DB_URL", db_url),
            ("REDIS_URL", &format!("redis://{dead}/")),
            ("JWT_ISSUER", ISSUER),
            ("JWT_AUDIENCE", AUDIENCE),
            ("JWT_KEY_SET_FILE", key_file),
            ("ACCESS_TOKEN_TTL", "900"),
            ("REFRESH_TOKEN_TTL", "2592000"),
            ("CORE_INTERNAL_URL", &format!("http://{dead}")),
            ("INTERNAL_CREDENTIAL", AUTH_TO_CORE),
            ("INTERNAL_CALLER_KISUMCTL", KISUMCTL_SECRET),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn serving_is_logged_only_once_auth_db_answered() {
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("key-set.json");
    KeySet::generate(now()).unwrap().save(&key_file).unwrap();
    let key_file = key_file.to_str().unwrap();

    // auth_db unreachable: the start fails, and says so, never `serving`.
    let unreachable = format!("postgres://auth@127.0.0.1:{}/auth_db", closed_port());
    let failed = tokio::task::spawn_blocking({
        let child = auth_binary(&unreachable, key_file);
        move || child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "{stderr}");
    assert!(stderr.contains("cannot connect to auth_db"), "{stderr}");
    assert!(!stderr.contains("serving"), "{stderr}");

    // auth_db up and migrated: `serving` once the ports serve.
    let (db_url, db) = auth_database().await;
    db::migrate(&db).await.unwrap();
    let mut child = auth_binary(&db_url, key_file);
    let stderr = child.stderr.take().unwrap();
    let serving = tokio::task::spawn_blocking(move || {
        use std::io::BufRead as _;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.contains("\"serving\""))
    });
    let line = tokio::time::timeout(Duration::from_secs(60), serving).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let line = line.expect("`serving` within 60 s").unwrap();
    assert!(line.is_some(), "Auth never logged `serving`");
}

#[tokio::test]
async fn logs_carry_ids_and_events_but_never_secrets() {
    let h = Harness::start().await;
    let user = h.user("quiet@example.com").await;
    let first = h.tokens("quiet@example.com").await;
    h.login("quiet@example.com", "a-wrong-password-123").await;
    let (_, second) = h.refresh(&first["refresh_token"]).await;
    h.refresh(&first["refresh_token"]).await;
    let logs = logs_text();
    let mine: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(&user.to_string()))
        .collect();
    assert!(
        mine.iter().all(|l| l.contains("\"request_id\"")),
        "event lines carry the request id"
    );
    for event in [
        "login success",
        "login failure",
        "refresh success",
        "session revoked: refresh token reused",
    ] {
        assert!(mine.iter().any(|l| l.contains(event)), "missing `{event}`");
    }
    for secret in [
        PASSWORD,
        "a-wrong-password-123",
        str_of(&first["access_token"]),
        str_of(&first["refresh_token"]),
        str_of(&second["refresh_token"]),
        "PRIVATE KEY",
        "$argon2id$",
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}

#[tokio::test]
async fn an_invalid_traceparent_is_replaced_by_a_fresh_trace_and_a_valid_one_continued() {
    let h = Harness::start().await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let cases = [
        (format!("00-{trace}-00f067aa0ba902b7-01"), true),
        (
            format!("00-{}-00f067aa0ba902b7-01", trace.to_uppercase()),
            false,
        ),
        (format!("ff-{trace}-00f067aa0ba902b7-01"), false),
        (format!("00-{trace}-0000000000000000-01"), false),
        (format!("00-{trace}-00f067aa0ba902b7-01-extra"), false),
    ];
    for (header, valid) in cases {
        let request_id = format!("trace-{}", Uuid::new_v4());
        let headers = [
            ("traceparent", header.as_str()),
            ("x-request-id", &request_id),
        ];
        let (status, _) = h
            .public_call(Method::GET, "/.well-known/jwks.json", &headers, None)
            .await;
        assert_eq!(status, StatusCode::OK);
        let logged = logs_text()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .map(|line| line["fields"].clone())
            .find(|fields| {
                fields["message"] == "request" && fields["request_id"] == request_id.as_str()
            })
            .unwrap_or_else(|| panic!("no request log line for {header}"));
        let trace_id = logged["trace_id"].as_str().unwrap();
        if valid {
            assert_eq!(trace_id, trace, "{header} continued");
        } else {
            assert_ne!(trace_id, trace, "{header} replaced");
            let fresh = format!("00-{trace_id}-00f067aa0ba902b7-01");
            assert!(
                kisum_common::telemetry::parse_traceparent(&fresh).is_some(),
                "{trace_id}"
            );
        }
    }
}

/// The credential Auth presents to the mailer (not its Core credential).
const MAILER_CREDENTIAL: &str = "mailer-credential-for-tests";

/// The mailer Auth hands reset tokens to: a capture server on loopback (no
/// email provider can run here); it keeps every body that came with the
/// mailer credential and answers 401 to any other.
struct Mailer {
    url: String,
    received: Arc<Mutex<Vec<Value>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Mailer {
    async fn start() -> Mailer {
        use axum::routing::post;
        let received: Arc<Mutex<Vec<Value>>> = Arc::default();
        let kept = received.clone();
        let router = axum::Router::new().route(
            "/password-reset",
            post(
                move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                    let kept = kept.clone();
                    async move {
                        // Only Auth's mailer credential opens the door.
                        let credential = headers
                            .get(kisum_common::internal::CREDENTIAL_HEADER)
                            .and_then(|v| v.to_str().ok());
                        if credential != Some(MAILER_CREDENTIAL) {
                            return axum::http::StatusCode::UNAUTHORIZED;
                        }
                        kept.lock().unwrap().push(body);
                        axum::http::StatusCode::ACCEPTED
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Mailer {
            url,
            received,
            _stop: stop,
        }
    }

    fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn a_password_reset_answers_alike_for_every_email_and_its_token_works_once() {
    let mailer = Mailer::start().await;
    let url: &'static str = Box::leak(mailer.url.clone().into_boxed_str());
    let settings: &'static [(&'static str, &'static str)] = Box::leak(Box::new([
        ("PASSWORD_RESET_MAILER_URL", url),
        ("PASSWORD_RESET_MAILER_CREDENTIAL", MAILER_CREDENTIAL),
        ("PASSWORD_RESET_RATE_LIMIT_PER_EMAIL", "2"),
        ("PASSWORD_RESET_RATE_LIMIT_PER_IP", "4"),
    ]));
    let h = Harness::with(Options {
        password_reset: settings,
        ..Options::default()
    })
    .await;
    let h = &h;
    h.user("reset@example.com").await;
    let before = h.tokens("reset@example.com").await;
    let ask = |email: &'static str| async move {
        h.public_call(
            Method::POST,
            "/auth/password-reset",
            &[],
            Some(json!({ "email": email })),
        )
        .await
    };

    // Known or not: the same answer.
    let known = ask("reset@example.com").await;
    let unknown = ask("nobody@example.com").await;
    assert_eq!(known.0, StatusCode::ACCEPTED);
    assert_eq!(known, unknown);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            mailer.received().len() == 1
        })
        .await
    );
    let message = mailer.received()[0].clone();
    assert_eq!(message["email"], "reset@example.com");
    let first = str_of(&message["token"]).to_string();
    // Only the token's SHA-256 is stored.
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("select token_hash from password_resets")
        .fetch_all(&h.db)
        .await
        .unwrap();
    use sha2::Digest as _;
    assert_eq!(stored, [sha2::Sha256::digest(first.as_bytes()).to_vec()]);

    // Throttled: past two per email the request is dropped unseen; past
    // four per address, a 429.
    assert_eq!(ask("reset@example.com").await.0, StatusCode::ACCEPTED);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            mailer.received().len() == 2
        })
        .await
    );
    let second = str_of(&mailer.received()[1]["token"]).to_string();
    assert_eq!(ask("reset@example.com").await.0, StatusCode::ACCEPTED);
    assert_eq!(
        ask("reset@example.com").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        mailer.received().len(),
        2,
        "the throttled requests sent nothing"
    );

    let confirm = |token: &str, password: &str| {
        let body = json!({ "token": token, "password": password });
        async move {
            h.public_call(
                Method::POST,
                "/auth/password-reset/confirm",
                &[],
                Some(body),
            )
            .await
        }
    };
    let (status, body) = confirm(&first, "short").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = confirm("not-a-token", "a long new password").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_reset_token"))
    );
    // An expired token is refused.
    sqlx::query(
        "update password_resets set expires_at = now() - interval '1 second' where token_hash = $1",
    )
    .bind(sha2::Sha256::digest(second.as_bytes()).to_vec())
    .execute(&h.db)
    .await
    .unwrap();
    assert_eq!(
        confirm(&second, "a long new password").await.0,
        StatusCode::BAD_REQUEST
    );

    let (status, body) = confirm(&first, "a long new password").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    // Every session ended; the old password is gone, the new one works.
    h.assert_password_changed(&before, "reset@example.com", "a long new password")
        .await;
    // Single use.
    assert_eq!(
        confirm(&first, "yet another password").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(h.audit_count("password_reset.done").await, 1);
}

// ----------------------------------------------------- warm access path --

use kisum_testkit::event_count;

/// A member of a subscribed company, signed in, whose access context was
/// asked for twice (computed, then remembered): the next ask is warm.
async fn warm_member(h: &Harness, email: &str, slug: &str) -> (Uuid, Uuid, Uuid, Value) {
    let (user, company, membership) = member(h, email, slug, &["basic", "finance"]).await;
    h.subscribe(company, "basic-standard", true).await;
    let tokens = h.tokens(email).await;
    for _ in 0..2 {
        let (status, body) = h.me_access(str_of(&tokens["access_token"]), slug).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    (user, company, membership, tokens)
}

#[tokio::test]
async fn a_warm_access_check_is_answered_from_one_redis_round_trip() {
    let h = Harness::start().await;
    let (user, company, membership, tokens) = warm_member(&h, "warm@example.com", "warm-co").await;
    let access = str_of(&tokens["access_token"]);
    let session: Uuid = claims_of(access)["sid"].as_str().unwrap().parse().unwrap();
    let before = h.metrics().await;
    let (status, first) = h.me_access(access, "warm-co").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    // By id as well as by slug, and on the module backends' route.
    let (status, by_id) = h.me_access(access, &company.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{by_id}");
    let (status, by_id_again) = h.me_access(access, &company.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    let request = json!({ "user": user, "session": session, "org": "warm-co" });
    let (status, internal) = h
        .internal_call(
            Some(("finance", FINANCE_SECRET)),
            Method::POST,
            "/internal/access-context",
            Some(request),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{internal}");
    for answer in [&by_id, &by_id_again, &internal] {
        assert_eq!(*answer, first);
    }
    assert_eq!(first["user"], user.to_string());
    assert_eq!(first["session"], session.to_string());
    assert_eq!(first["membership"], membership.to_string());
    assert_eq!(
        first["modules"],
        json!({ "basic": ["basic.contacts.read"] })
    );

    let after = h.metrics().await;
    let complete = |m: &str| event_count(m, "access_snapshot", "complete");
    assert!(
        complete(&after) >= complete(&before) + 3,
        "warm requests answered from one MGET"
    );
    assert_eq!(
        event_count(&after, "session_cache", "miss"),
        event_count(&before, "session_cache", "miss"),
        "no session was looked up in auth_db"
    );
    // What the one round trip read.
    assert_eq!(
        h.cache.get(&key::session(session)).await.unwrap(),
        Some(user.to_string())
    );
    let entry = h
        .cache
        .get(&key::membership(company, user))
        .await
        .unwrap()
        .unwrap();
    assert!(entry.contains(&membership.to_string()), "{entry}");
}

#[tokio::test]
async fn every_revocation_reaches_the_warm_path_at_once() {
    let h = Harness::start().await;
    let (user, _, _, a) = warm_member(&h, "rev@example.com", "rev-co").await;
    let b = h.tokens("rev@example.com").await;
    let c = h.tokens("rev@example.com").await;
    let d = h.tokens("rev@example.com").await;
    for tokens in [&b, &c, &d] {
        for _ in 0..2 {
            let (status, _) = h.me_access(str_of(&tokens["access_token"]), "rev-co").await;
            assert_eq!(status, StatusCode::OK);
        }
    }
    let access = |tokens: &Value| str_of(&tokens["access_token"]).to_string();

    // Logout: the very next request of the session is refused, on both
    // routes, while the user's other sessions stay.
    let bearer = format!("Bearer {}", access(&a));
    let (status, _) = h
        .public_call(
            Method::POST,
            "/auth/logout",
            &[("authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = h.me_access(&access(&a), "rev-co").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "session_revoked");
    let request =
        json!({ "user": user, "session": claims_of(&access(&a))["sid"], "org": "rev-co" });
    let (status, _) = h
        .internal_call(
            Some(("finance", FINANCE_SECRET)),
            Method::POST,
            "/internal/access-context",
            Some(request),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.me_access(&access(&b), "rev-co").await.0, StatusCode::OK);

    // A reused refresh token revokes its family at once.
    let (status, _) = h.refresh(&b["refresh_token"]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h.refresh(&b["refresh_token"]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        h.me_access(&access(&b), "rev-co").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(h.me_access(&access(&c), "rev-co").await.0, StatusCode::OK);

    // Logout-all: every other session too.
    let bearer = format!("Bearer {}", access(&d));
    let (status, _) = h
        .public_call(
            Method::POST,
            "/auth/logout-all",
            &[("authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for tokens in [&c, &d] {
        assert_eq!(
            h.me_access(&access(tokens), "rev-co").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    // Each revoked session has its marker and lost its session entry.
    for tokens in [&a, &b, &c, &d] {
        let session: Uuid = claims_of(&access(tokens))["sid"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            h.cache
                .exists(&key::revoked_session(session))
                .await
                .unwrap()
        );
        assert_eq!(h.cache.get(&key::session(session)).await.unwrap(), None);
    }
}

#[tokio::test]
async fn the_warm_path_reads_auth_db_while_redis_is_down() {
    let mut h = Harness::start().await;
    let (_, _, _, kept) = warm_member(&h, "down-warm@example.com", "down-warm-co").await;
    let ended = h.tokens("down-warm@example.com").await;
    let (_, warm) = h
        .me_access(str_of(&kept["access_token"]), "down-warm-co")
        .await;
    assert_eq!(
        h.me_access(str_of(&ended["access_token"]), "down-warm-co")
            .await
            .0,
        StatusCode::OK
    );

    h.redis.stop();
    let (status, cold) = h
        .me_access(str_of(&kept["access_token"]), "down-warm-co")
        .await;
    assert_eq!(status, StatusCode::OK, "{cold}");
    assert_eq!(cold, warm);
    // A revocation while Redis is down holds at once...
    let bearer = format!("Bearer {}", str_of(&ended["access_token"]));
    let (status, _) = h
        .public_call(
            Method::POST,
            "/auth/logout",
            &[("authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        h.me_access(str_of(&ended["access_token"]), "down-warm-co")
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    // ...and so does a directory change.
    let membership: Uuid = warm["membership"].as_str().unwrap().parse().unwrap();
    directory::revoke_module(&h.db, membership, "basic")
        .await
        .unwrap();
    let (_, changed) = h
        .me_access(str_of(&kept["access_token"]), "down-warm-co")
        .await;
    assert_eq!(changed["modules"], json!({}));
    assert!(event_count(&h.metrics().await, "access_snapshot", "unavailable") >= 2);

    // Back (empty): auth_db still says the session is revoked.
    h.redis.restart().await.unwrap();
    let back = wait_until(Duration::from_secs(10), || async {
        h.me_access(str_of(&kept["access_token"]), "down-warm-co")
            .await
            .0
            == StatusCode::OK
            && event_count(&h.metrics().await, "access_snapshot", "complete") > 0
    })
    .await;
    assert!(back);
    for _ in 0..3 {
        assert_eq!(
            h.me_access(str_of(&ended["access_token"]), "down-warm-co")
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn a_revocation_redis_missed_is_written_once_redis_is_back() {
    let mut h = Harness::start().await;
    let (user, _, _, tokens) = warm_member(&h, "missed@example.com", "missed-co").await;
    let access = str_of(&tokens["access_token"]);
    let session: Uuid = claims_of(access)["sid"].as_str().unwrap().parse().unwrap();

    h.redis.stop();
    let bearer = format!("Bearer {access}");
    let (status, _) = h
        .public_call(
            Method::POST,
            "/auth/logout",
            &[("authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    h.redis.restart().await.unwrap();
    // As if the session entry had outlived the outage (another replica
    // wrote it just before the logout): the marker still arrives.
    let entry = || async {
        let _ = h
            .cache
            .set(&key::session(session), &user.to_string(), ROW_COPY_TTL)
            .await;
    };
    entry().await;
    let marked = wait_until(ROW_COPY_TTL + Duration::from_secs(3), || async {
        h.cache.exists(&key::revoked_session(session)).await == Ok(true)
    })
    .await;
    assert!(marked, "the background retry wrote the marker");
    entry().await;
    assert_eq!(
        h.me_access(access, "missed-co").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert!(logs_text().contains("Redis write done after a retry"));
}

#[tokio::test]
async fn directory_changes_reach_the_warm_path_at_once_through_auth_redis() {
    let h = Harness::start().await;
    let (user, company, membership, tokens) = warm_member(&h, "dir@example.com", "dir-co").await;
    let access = str_of(&tokens["access_token"]);
    let modules = |body: &Value| body["modules"].clone();

    directory::revoke_module(&h.dir, membership, "basic")
        .await
        .unwrap();
    let (_, context) = h.me_access(access, "dir-co").await;
    assert_eq!(modules(&context), json!({}));
    directory::grant_module(&h.dir, membership, "basic")
        .await
        .unwrap();
    let (_, context) = h.me_access(access, "dir-co").await;
    assert_eq!(
        modules(&context),
        json!({ "basic": ["basic.contacts.read"] })
    );

    // A role's permissions (a company-wide bump).
    directory::define_role(&h.dir, "manager", &["basic.contacts.write"])
        .await
        .unwrap();
    let (_, context) = h.me_access(access, "dir-co").await;
    assert_eq!(
        modules(&context),
        json!({ "basic": ["basic.contacts.read", "basic.contacts.write"] })
    );

    // The company suspended, then the user disabled: refused at once.
    directory::set_company_active(&h.dir, company, false)
        .await
        .unwrap();
    assert_eq!(h.me_access(access, "dir-co").await.0, StatusCode::FORBIDDEN);
    directory::set_company_active(&h.dir, company, true)
        .await
        .unwrap();
    assert_eq!(h.me_access(access, "dir-co").await.0, StatusCode::OK);
    directory::set_user_status(&h.dir, user, false)
        .await
        .unwrap();
    assert_eq!(
        h.me_access(access, "dir-co").await.0,
        StatusCode::UNAUTHORIZED
    );
    // A disabled user's sessions end (as on every route); enabled again,
    // the user signs in anew.
    directory::set_user_status(&h.dir, user, true)
        .await
        .unwrap();
    assert_eq!(
        h.me_access(access, "dir-co").await.0,
        StatusCode::UNAUTHORIZED
    );
    let fresh = h.tokens("dir@example.com").await;
    assert_eq!(
        h.me_access(str_of(&fresh["access_token"]), "dir-co")
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_change_written_to_auth_db_alone_is_seen_within_seconds_or_at_invalidate() {
    let h = Harness::start().await;
    let (user, _, membership, tokens) = warm_member(&h, "sql@example.com", "sql-co").await;
    let access = str_of(&tokens["access_token"]);
    let basic = json!({ "basic": ["basic.contacts.read"] });

    // SQL alone (no Redis): Auth's copy of the membership row may answer
    // for at most ROW_COPY_TTL.
    directory::revoke_module(&h.db, membership, "basic")
        .await
        .unwrap();
    let started = Instant::now();
    let seen = wait_until(ROW_COPY_TTL + Duration::from_secs(2), || async {
        h.me_access(access, "sql-co").await.1["modules"] == json!({})
    })
    .await;
    assert!(seen, "not seen within {:?}", started.elapsed());
    assert!(started.elapsed() <= ROW_COPY_TTL + Duration::from_secs(2));

    // `POST /internal/invalidate {user}` after such a write: at once.
    directory::grant_module(&h.db, membership, "basic")
        .await
        .unwrap();
    h.invalidate(json!({ "user": user })).await;
    assert_eq!(h.me_access(access, "sql-co").await.1["modules"], basic);
    directory::revoke_module(&h.db, membership, "basic")
        .await
        .unwrap();
    h.invalidate(json!({ "user": user })).await;
    assert_eq!(h.me_access(access, "sql-co").await.1["modules"], json!({}));
}

#[tokio::test]
async fn redis_entries_that_are_stale_or_garbled_are_not_trusted() {
    let h = Harness::start().await;
    let (user, company, membership, tokens) = warm_member(&h, "junk@example.com", "junk-co").await;
    let access = str_of(&tokens["access_token"]);
    let (_, good) = h.me_access(access, "junk-co").await;
    let entry = key::membership(company, user);
    let current = h.cache.get(&entry).await.unwrap().unwrap();
    let (epoch, rest) = current.split_once(':').unwrap();

    // Garbled, or stamped with another epoch (read before a directory
    // write): auth_db is asked again.
    let other = Uuid::new_v4();
    let stale = format!("{}:{other}:999:111", epoch.parse::<u128>().unwrap() - 1);
    for junk in ["garbage", "1:2:3:4", stale.as_str()] {
        h.cache.set(&entry, junk, ROW_COPY_TTL).await.unwrap();
        let (status, answer) = h.me_access(access, "junk-co").await;
        assert_eq!(status, StatusCode::OK, "{junk}");
        assert_eq!(answer, good, "{junk}");
        assert_eq!(answer["membership"], membership.to_string());
    }
    assert!(rest.starts_with(&membership.to_string()));
    // The epoch gone (evicted): a new one starts, every entry is re-read.
    h.cache.delete(key::ACCESS_EPOCH).await.unwrap();
    assert_eq!(h.me_access(access, "junk-co").await.1, good);
    let new_epoch = h.cache.get(key::ACCESS_EPOCH).await.unwrap().unwrap();
    assert_ne!(new_epoch, epoch);
    // A session entry naming another user proves nothing.
    let session: Uuid = claims_of(access)["sid"].as_str().unwrap().parse().unwrap();
    h.cache
        .set(&key::session(session), &other.to_string(), ROW_COPY_TTL)
        .await
        .unwrap();
    assert_eq!(h.me_access(access, "junk-co").await.1, good);
    assert_eq!(
        h.cache.get(&key::session(session)).await.unwrap(),
        Some(user.to_string())
    );
}

#[tokio::test]
async fn directory_routes_refuse_ids_names_slugs_and_modules_that_cannot_work() {
    let h = Harness::start().await;
    let company = Uuid::new_v4();
    let nil = Uuid::nil();
    let refused = [
        (
            Method::PUT,
            format!("/internal/companies/{nil}"),
            Some(json!({ "slug": "nil-co", "name": "Nil" })),
            "nil UUID",
        ),
        (
            Method::PUT,
            format!("/internal/companies/{company}"),
            Some(json!({ "slug": "blank-co", "name": "  " })),
            "must not be empty",
        ),
        (
            Method::PUT,
            format!("/internal/companies/{company}"),
            Some(json!({ "slug": Uuid::new_v4().simple().to_string(), "name": "Hex" })),
            "reads as a company id",
        ),
        (
            Method::PUT,
            "/internal/roles/clerk".to_string(),
            Some(json!({ "permissions": ["billing.invoices.read"] })),
            "must start with its module",
        ),
        // A module's key that is not in its catalog.
        (
            Method::PUT,
            "/internal/roles/clerk".to_string(),
            Some(json!({ "permissions": ["finance.invoices.read", "finance.x.y"] })),
            "unknown permission `finance.x.y`",
        ),
    ];
    for (method, path, body, why) in refused {
        let (status, answer) = h.as_admin(method, &path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
        assert!(answer.to_string().contains(why), "{path}: {answer}");
    }
    // A real company and membership, then a grant of a module that is none.
    let (status, answer) = h
        .as_admin(
            Method::PUT,
            &format!("/internal/companies/{company}"),
            Some(json!({ "slug": "checked-co", "name": "Checked" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    h.user("checked@example.com").await;
    directory::define_role(&h.dir, "member", &[]).await.unwrap();
    let (status, answer) = h
        .as_admin(
            Method::POST,
            &format!("/internal/companies/{company}/memberships"),
            Some(json!({ "email": "checked@example.com", "role": "member" })),
        )
        .await;
    assert!(status.is_success(), "{answer}");
    let membership = answer["after"]["membership"].as_str().unwrap().to_string();
    let (status, answer) = h
        .as_admin(
            Method::PUT,
            &format!("/internal/memberships/{membership}/grants/billing"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"], "invalid_request", "{answer}");
    assert_eq!(
        answer["message"],
        "invalid request: `billing` is not a module; the modules are basic, finance, market, \
         touring, venue, ai"
    );
    let (status, answer) = h
        .as_admin(
            Method::PUT,
            &format!("/internal/memberships/{membership}/grants/finance"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // One permission beyond the role: only a key of the module's catalog,
    // even one no role holds yet.
    let grant = |permission: &str| {
        format!("/internal/memberships/{membership}/grants/finance/{permission}")
    };
    for (permission, why) in [
        ("finance.x.y", "unknown permission `finance.x.y`"),
        ("basic.contacts.read", "belongs to module `basic`"),
    ] {
        let (status, answer) = h.as_admin(Method::PUT, &grant(permission), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{permission}: {answer}");
        assert!(answer.to_string().contains(why), "{permission}: {answer}");
    }
    let (status, answer) = h
        .as_admin(Method::PUT, &grant("finance.invoices.write"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Nor can tooling define a role with a key outside the catalog.
    let error = directory::define_role(&h.dir, "odd", &["finance.x.y"]).await;
    assert!(error.unwrap_err().to_string().contains("finance.x.y"));
}

/// Redis that answers reads but refuses every write (as a full Redis with
/// `noeviction`, or a read-only one, does).
async fn refuse_redis_writes(h: &Harness, refuse: bool) {
    let client = redis::Client::open(h.redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let replicas = if refuse { "1" } else { "0" };
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("min-replicas-to-write")
        .arg(replicas)
        .query_async(&mut connection)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_logout_redis_refused_to_write_is_still_refused_by_this_replica() {
    let h = Harness::start().await;
    let (_, _, _, tokens) = warm_member(&h, "ro@example.com", "ro-co").await;
    let access = str_of(&tokens["access_token"]).to_string();
    assert_eq!(h.me_access(&access, "ro-co").await.0, StatusCode::OK);
    refuse_redis_writes(&h, true).await;
    let bearer = format!("Bearer {access}");
    let (status, _) = h
        .public_call(
            Method::POST,
            "/auth/logout",
            &[("authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Past the 1 s cool-down the session entry still reads from Redis; the
    // revocation Redis refused must win for the whole entry lifetime.
    let until = std::time::Instant::now() + Duration::from_millis(2500);
    let mut asked = 0;
    while std::time::Instant::now() < until {
        let (status, body) = h.me_access(&access, "ro-co").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "after {asked}: {body}");
        asked += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    refuse_redis_writes(&h, false).await;
    assert_eq!(
        h.me_access(&access, "ro-co").await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn the_same_port_for_http_port_and_internal_port_is_refused_naming_both_once() {
    let vars = [("SERVICE_NAME", "auth"), ("KISUM_ENVIRONMENT", "test")];
    let outcome = kisum_testkit::serve_on_one_port(env!("CARGO_BIN_EXE_kisum-auth"), &vars);
    kisum_testkit::assert_refused_one_port(outcome);
}
