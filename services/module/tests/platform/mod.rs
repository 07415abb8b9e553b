//! The real platform the integration tests of the module backends and of
//! Platform Admin talk to: Platform Core (`kisum-core`) and Auth
//! (`kisum-auth`) served in-process on free loopback ports, each on a
//! database of its own in the shared PostgreSQL of `kisum-testkit`, Auth
//! with a Redis of its own and a key-set file it watches.
//!
//! Users, companies, roles, memberships and module grants are written with
//! `kisum_auth::directory`; entitlements go through Core's internal API;
//! tokens come from a real `POST /auth/login`. Nothing here stands in for
//! a service.
//!
//! This file is used by `services/module/tests/module.rs` and (through a
//! `#[path]`) by `services/admin/tests/admin.rs`; each uses part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kisum_auth::{directory, password::Passwords};
use kisum_common::config::Vars;
use kisum_common::internal::Credential;
use kisum_common::jwt::TokenPolicy;
use kisum_common::keys::{Key, KeySet, KeyState};
use kisum_common::serve::Listeners;
use kisum_testkit::{Postgres, Redis};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::{OnceCell, oneshot};
use uuid::Uuid;

pub const ISSUER: &str = "https://auth.kisum.test";
pub const AUDIENCE: &str = "kisum-api";
pub const PASSWORD: &str = "correct horse battery staple";
/// What Auth presents to Core.
pub const AUTH_TO_CORE: &str = "auth-to-core-credential-for-tests-0";
/// What Platform Admin presents to Auth and Core.
pub const ADMIN_SECRET: &str = "platform-admin-credential-for-tests-0";
pub const KISUMCTL_SECRET: &str = "kisumctl-credential-for-tests-00000";
/// The module backends Auth admits on its internal port.
pub const MODULES: [&str; 6] = ["basic", "finance", "market", "touring", "venue", "ai"];

/// What module backend `module` presents to Auth.
pub fn module_credential(module: &str) -> String {
    format!("{module}-credential-for-tests-of-32-bytes")
}

pub fn now() -> i64 {
    kisum_auth::unix_now()
}

/// Auth's issuer and audience, no clock skew: for tokens a test signs itself.
pub fn policy() -> TokenPolicy {
    TokenPolicy {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        leeway_seconds: 0,
    }
}

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub async fn loopback_listeners() -> Listeners {
    Listeners::bind(loopback(), loopback()).await.unwrap()
}

/// A database of its own in the shared PostgreSQL.
pub async fn database(prefix: &str) -> String {
    Postgres::shared()
        .create_unique_database(prefix)
        .await
        .expect("a test database")
}

/// Spawns `serve(shutdown)`; the service stops when the returned sender is
/// dropped (or fired).
pub fn serve_until_dropped<F, Fut>(serve: F) -> oneshot::Sender<()>
where
    F: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(Box::pin(async {
        let _ = stopped.await;
    })));
    stop
}

/// Polls `check` every 50 ms until it holds; false once `limit` has passed.
pub async fn eventually<F, Fut>(limit: Duration, check: F) -> bool
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status and JSON body of a response (a string when it is not JSON).
pub async fn body(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

// ------------------------------------------------------------------ logs --

/// Every log line of this test process (all in-process services), as JSON
/// text: how a test sees what Auth itself logged about a request.
pub fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
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

/// The fields of the request log line Auth wrote for `route` and
/// `request_id` (its `x-request-id`), if any.
pub fn auth_request_log(route: &str, request_id: &str) -> Option<Value> {
    let logs = captured_logs();
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .map(|line| line["fields"].clone())
        .find(|fields| {
            fields["message"] == "request"
                && fields["service"] == "auth"
                && fields["route"] == route
                && fields["request_id"] == request_id
        })
}

// -------------------------------------------------------------- platform --

/// A company registered in Auth (Core knows it by the same id).
#[derive(Debug, Clone)]
pub struct Company {
    pub id: Uuid,
    pub slug: String,
}

/// A user in auth_db, password [`PASSWORD`].
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: Uuid,
    pub email: String,
}

/// A signed-in session, as `POST /auth/login` and `GET /auth/me` tell it.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub session: String,
    pub access_token: String,
    pub refresh_token: String,
}

/// Platform Core and Auth, running.
pub struct Platform {
    /// Core's internal port (every Core API route is there).
    pub core: SocketAddr,
    pub core_public: SocketAddr,
    pub auth_public: SocketAddr,
    pub auth_internal: SocketAddr,
    /// Auth's Redis; a test may stop it.
    pub redis: Redis,
    /// auth_db, for `kisum_auth::directory`.
    pub db: PgPool,
    pub http: reqwest::Client,
    keys: Mutex<KeySet>,
    key_file: PathBuf,
    _stops: Vec<oneshot::Sender<()>>,
    // Last: removed once the servers are told to stop.
    _key_dir: tempfile::TempDir,
}

/// One Argon2id hash of [`PASSWORD`] for every user of the test process
/// (hashing is slow in a debug build; the hash is valid for any user).
async fn password_hash() -> String {
    static HASH: OnceCell<String> = OnceCell::const_new();
    HASH.get_or_init(|| async {
        Passwords::default()
            .hash(PASSWORD.into())
            .await
            .expect("hashing the test password")
    })
    .await
    .clone()
}

async fn start_core() -> (SocketAddr, SocketAddr, oneshot::Sender<()>) {
    let url = database("core").await;
    let config = kisum_core::Config::from_vars(&core_vars(&url)).unwrap();
    kisum_core::migrate(&config).await.unwrap();
    let listeners = loopback_listeners().await;
    let (public, internal) = listeners.addresses().unwrap();
    let stop = serve_until_dropped(|shutdown| async move {
        kisum_core::run(config, listeners, shutdown).await.unwrap();
    });
    (public, internal, stop)
}

/// Platform Core's settings with its database at `url`.
pub fn core_vars(url: &str) -> Vars {
    Vars::from_pairs([
        ("SERVICE_NAME", "platform-core"),
        ("KISUM_ENVIRONMENT", "test"),
        ("HTTP_PORT", "0"),
        ("INTERNAL_PORT", "0"),
        ("CORE_DB_URL", url),
        ("INTERNAL_ALLOWED_CALLERS", "auth,platform-admin"),
        ("INTERNAL_CALLER_AUTH", AUTH_TO_CORE),
        ("INTERNAL_CALLER_PLATFORM_ADMIN", ADMIN_SECRET),
        ("INTERNAL_CALLER_KISUMCTL", KISUMCTL_SECRET),
    ])
}

fn auth_vars(db_url: &str, redis_url: &str, key_file: &str, core: SocketAddr) -> Vars {
    let mut vars = Vars::from_pairs([
        ("SERVICE_NAME", "auth".to_string()),
        ("KISUM_ENVIRONMENT", "test".into()),
        ("HTTP_PORT", "0".into()),
        ("INTERNAL_PORT", "0".into()),
        ("AUTH_DB_URL", db_url.into()),
        ("REDIS_URL", redis_url.into()),
        ("JWT_ISSUER", ISSUER.into()),
        ("JWT_AUDIENCE", AUDIENCE.into()),
        ("JWT_KEY_SET_FILE", key_file.into()),
        ("ACCESS_TOKEN_TTL", "900".into()),
        ("REFRESH_TOKEN_TTL", "2592000".into()),
        ("CORE_INTERNAL_URL", format!("http://{core}")),
        ("INTERNAL_CREDENTIAL", AUTH_TO_CORE.into()),
        ("INTERNAL_CALLER_PLATFORM_ADMIN", ADMIN_SECRET.into()),
        ("INTERNAL_CALLER_KISUMCTL", KISUMCTL_SECRET.into()),
        // Every login of a test comes from 127.0.0.1.
        ("LOGIN_RATE_LIMIT_PER_IP", "10000".into()),
        ("LOGIN_RATE_LIMIT_PER_EMAIL", "1000".into()),
        ("LOGIN_RATE_LIMIT_WINDOW_SECONDS", "900".into()),
    ]);
    for module in MODULES {
        let name = format!("INTERNAL_CALLER_{}", module.to_ascii_uppercase());
        vars.set(name, module_credential(module));
    }
    vars
}

/// A module backend's settings against the platform's Auth, on
/// `database_url`.
pub fn module_vars(module: kisum_module::Module, platform: &Platform, database_url: &str) -> Vars {
    Vars::from_pairs([
        ("MODULE_NAME", module.name().to_string()),
        ("KISUM_ENVIRONMENT", "test".into()),
        ("AUTH_JWKS_URL", platform.jwks_url()),
        ("AUTH_INTERNAL_URL", platform.auth_internal_url()),
        ("JWT_ISSUER", ISSUER.into()),
        ("JWT_AUDIENCE", AUDIENCE.into()),
        ("JWKS_CACHE_SECONDS", "300".into()),
        ("JWKS_MIN_REFETCH_SECONDS", "60".into()),
        ("X_ORG_POLICY", "required".into()),
        ("DATABASE_URL", database_url.into()),
        ("INTERNAL_CREDENTIAL", module_credential(module.name())),
        ("INTERNAL_CALLER_KISUMCTL", KISUMCTL_SECRET.into()),
    ])
}

impl Platform {
    /// auth_db with Auth's Redis: a directory write through it is seen by
    /// the running Auth at once (a bare `db` write within 5 s).
    #[allow(dead_code)]
    pub fn directory(&self) -> directory::Directory {
        let metrics = kisum_auth::metrics::AuthMetrics::new("platform-test", "test");
        let cache = kisum_auth::cache::Cache::new(&self.redis.url(), metrics).unwrap();
        directory::Directory::new(self.db.clone(), cache)
    }

    /// Core, then Redis and Auth (migrated auth_db, a fresh key set in a
    /// file), each on free loopback ports.
    pub async fn start() -> Platform {
        captured_logs();
        let mut stops = Vec::new();
        let (core_public, core, stop_core) = start_core().await;
        stops.push(stop_core);
        let redis = Redis::start().await.unwrap();
        let db_url = database("auth").await;
        let db = kisum_auth::db::connect(&db_url).await.unwrap();
        kisum_auth::db::migrate(&db).await.unwrap();
        let key_dir = tempfile::tempdir().unwrap();
        let key_file = key_dir.path().join("key-set.json");
        let keys = KeySet::generate(now()).unwrap();
        keys.save(&key_file).unwrap();
        let vars = auth_vars(&db_url, &redis.url(), key_file.to_str().unwrap(), core);
        let config = kisum_auth::Config::from_vars(&vars).unwrap();
        let app = kisum_auth::app(config).await.unwrap();
        let listeners = loopback_listeners().await;
        let (auth_public, auth_internal) = listeners.addresses().unwrap();
        stops.push(serve_until_dropped(|shutdown| async move {
            app.serve(listeners, shutdown).await.unwrap();
        }));
        Platform {
            core,
            core_public,
            auth_public,
            auth_internal,
            redis,
            db,
            http: reqwest::Client::new(),
            keys: Mutex::new(keys),
            key_file,
            _stops: stops,
            _key_dir: key_dir,
        }
    }

    pub fn auth_url(&self) -> String {
        format!("http://{}", self.auth_public)
    }

    pub fn auth_internal_url(&self) -> String {
        format!("http://{}", self.auth_internal)
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.auth_url())
    }

    pub fn core_url(&self) -> String {
        format!("http://{}", self.core)
    }

    /// The key set Auth signs with (as last written to its file).
    pub fn keys(&self) -> KeySet {
        self.keys.lock().unwrap().clone()
    }

    // ------------------------------------------------------- directory --

    /// A company with a unique slug starting with `label`.
    pub async fn company(&self, label: &str) -> Company {
        let id = Uuid::new_v4();
        let slug = format!("{label}-{}", &id.simple().to_string()[..12]);
        directory::upsert_company(&self.db, id, &slug, &slug)
            .await
            .unwrap();
        Company { id, slug }
    }

    pub async fn user(&self) -> NewUser {
        let email = format!("user-{}@kisum.test", Uuid::new_v4().simple());
        let id = directory::upsert_user(&self.db, &email, &password_hash().await)
            .await
            .unwrap();
        NewUser { id, email }
    }

    /// A role written straight into auth_db, as one defined before the
    /// permission catalog existed could be: its keys are not checked.
    pub async fn legacy_role(&self, permissions: &[&str]) -> String {
        let role = format!("role-{}", Uuid::new_v4().simple());
        sqlx::query("insert into roles (key) values ($1)")
            .bind(&role)
            .execute(&self.db)
            .await
            .unwrap();
        for permission in permissions {
            let module = permission.split('.').next().unwrap_or_default();
            sqlx::query(
                "insert into permissions (key, module) values ($1, $2) on conflict do nothing",
            )
            .bind(permission)
            .bind(module)
            .execute(&self.db)
            .await
            .unwrap();
            sqlx::query("insert into role_permissions (role, permission) values ($1, $2)")
                .bind(&role)
                .bind(permission)
                .execute(&self.db)
                .await
                .unwrap();
        }
        role
    }

    /// A new role holding exactly `permissions`; returns its key.
    pub async fn role(&self, permissions: &[&str]) -> String {
        let role = format!("role-{}", Uuid::new_v4().simple());
        directory::define_role(&self.db, &role, permissions)
            .await
            .unwrap();
        role
    }

    /// Adds the user to the company with `role`, granted `modules`.
    pub async fn membership(
        &self,
        user: Uuid,
        company: Uuid,
        role: &str,
        modules: &[&str],
    ) -> Uuid {
        let membership = directory::add_membership(&self.db, user, company, role)
            .await
            .unwrap();
        for module in modules {
            directory::grant_module(&self.db, membership, module)
                .await
                .unwrap();
        }
        membership
    }

    pub async fn grant_platform_role(&self, user: Uuid, role: &str) {
        directory::grant_platform_role(&self.db, user, role)
            .await
            .unwrap();
    }

    /// The company's access version in auth_db (bumped by every
    /// `POST /internal/invalidate {company}` Auth receives).
    pub async fn company_access_version(&self, company: Uuid) -> i64 {
        sqlx::query_scalar("select access_version from companies where id = $1")
            .bind(company)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    // ------------------------------------------------------------ core --

    /// A write to Core's internal API as Platform Admin makes it.
    pub async fn core_put(&self, path: &str, payload: Value) -> Value {
        let mut headers = reqwest::header::HeaderMap::new();
        Credential::new("platform-admin", ADMIN_SECRET).apply(&mut headers);
        let response = self
            .http
            .put(format!("{}{path}", self.core_url()))
            .headers(headers)
            .header("x-kisum-actor", "test-operator")
            .json(&payload)
            .send()
            .await
            .unwrap();
        let (status, answer) = body(response).await;
        assert!(status.is_success(), "PUT {path}: {status} {answer}");
        answer
    }

    /// Core's own view, asked with Auth's credential.
    pub async fn core_get(&self, path: &str) -> Value {
        let mut headers = reqwest::header::HeaderMap::new();
        Credential::new("auth", AUTH_TO_CORE).apply(&mut headers);
        let response = self
            .http
            .get(format!("{}{path}", self.core_url()))
            .headers(headers)
            .send()
            .await
            .unwrap();
        let (status, answer) = body(response).await;
        assert!(status.is_success(), "GET {path}: {status} {answer}");
        answer
    }

    pub async fn subscribe(&self, company: Uuid, package: &str, active: bool) {
        let status = if active { "active" } else { "inactive" };
        self.core_put(
            &format!("/v1/companies/{company}/subscription"),
            json!({ "package": package, "status": status }),
        )
        .await;
    }

    pub async fn add_on(&self, company: Uuid, add_on: &str, active: bool) {
        self.core_put(
            &format!("/v1/companies/{company}/add-ons/{add_on}"),
            json!({ "active": active }),
        )
        .await;
    }

    /// Entitles the company to `module` in Core: Basic through the
    /// `basic-standard` package, any other module through its add-on.
    pub async fn entitle(&self, company: Uuid, module: &str) {
        if module == "basic" {
            self.subscribe(company, "basic-standard", true).await;
        } else {
            self.add_on(company, module, true).await;
        }
    }

    // ----------------------------------------------------- auth public --

    pub async fn auth_call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        payload: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.auth_url()));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(payload) = payload {
            request = request.json(&payload);
        }
        body(request.send().await.unwrap()).await
    }

    /// A real login, then `GET /auth/me` for the user and session ids.
    pub async fn login(&self, email: &str) -> Session {
        let (status, tokens) = self
            .auth_call(
                Method::POST,
                "/auth/login",
                &[],
                Some(json!({ "email": email, "password": PASSWORD })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login {email}: {tokens}");
        let access_token = tokens["access_token"].as_str().unwrap().to_string();
        let (status, me) = self.me(&access_token).await;
        assert_eq!(status, StatusCode::OK, "{me}");
        Session {
            user: me["user"].as_str().unwrap().to_string(),
            session: me["session"].as_str().unwrap().to_string(),
            access_token,
            refresh_token: tokens["refresh_token"].as_str().unwrap().to_string(),
        }
    }

    pub async fn me(&self, access_token: &str) -> (StatusCode, Value) {
        let bearer = format!("Bearer {access_token}");
        self.auth_call(Method::GET, "/auth/me", &[("authorization", &bearer)], None)
            .await
    }

    pub async fn me_access(&self, access_token: &str, org: &str) -> (StatusCode, Value) {
        let bearer = format!("Bearer {access_token}");
        self.auth_call(
            Method::GET,
            "/auth/me/access",
            &[("authorization", &bearer), ("x-org", org)],
            None,
        )
        .await
    }

    /// `POST /auth/logout` for the access token's session.
    pub async fn logout(&self, access_token: &str) {
        let bearer = format!("Bearer {access_token}");
        let (status, answer) = self
            .auth_call(
                Method::POST,
                "/auth/logout",
                &[("authorization", &bearer)],
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    }

    // --------------------------------------------------- auth internal --

    /// An internal route of Auth, called as kisumctl.
    pub async fn auth_internal_call(
        &self,
        method: Method,
        path: &str,
        payload: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut headers = reqwest::header::HeaderMap::new();
        Credential::new("kisumctl", KISUMCTL_SECRET).apply(&mut headers);
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.auth_internal_url()))
            .headers(headers);
        if let Some(payload) = payload {
            request = request.json(&payload);
        }
        body(request.send().await.unwrap()).await
    }

    /// Auth's Prometheus exposition (internal port).
    pub async fn auth_metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.auth_internal_url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// How many requests Auth has answered on `route` (any method and
    /// status), from its own `kisum_http_requests_total`.
    pub async fn auth_requests(&self, route: &str) -> u64 {
        let label = format!("route=\"{route}\"");
        self.auth_metrics()
            .await
            .lines()
            .filter(|line| line.starts_with("kisum_http_requests_total{") && line.contains(&label))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// How often Auth served its JWKS.
    pub async fn jwks_fetches(&self) -> u64 {
        self.auth_requests("/.well-known/jwks.json").await
    }

    /// Writes `keys` to Auth's key-set file and has Auth reload it now
    /// (`POST /internal/keys/reload`, as kisumctl does after a rotation);
    /// returns the kids Auth then publishes.
    pub async fn install_keys(&self, keys: KeySet) -> Vec<String> {
        keys.save(&self.key_file).unwrap();
        *self.keys.lock().unwrap() = keys;
        let (status, answer) = self
            .auth_internal_call(Method::POST, "/internal/keys/reload", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer["kids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|kid| kid.as_str().unwrap().to_string())
            .collect()
    }

    /// A key rotation as kisumctl does it: a new key is published as
    /// `next`, then becomes `active` while the old one is `retiring`.
    /// From then on Auth signs with the new key; returns its kid.
    pub async fn rotate_keys(&self) -> String {
        let mut keys = self.keys();
        let next = Key::generate(KeyState::Next, now()).unwrap();
        let kid = next.kid.clone();
        keys.keys.push(next);
        let published = self.install_keys(keys.clone()).await;
        assert!(published.contains(&kid), "{published:?}");
        for key in &mut keys.keys {
            key.state = match key.state {
                KeyState::Active => KeyState::Retiring,
                KeyState::Next => KeyState::Active,
                other => other,
            };
        }
        let published = self.install_keys(keys).await;
        assert!(published.contains(&kid), "{published:?}");
        kid
    }
}
