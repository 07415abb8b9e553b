//! Platform Admin over HTTP, with its own real PostgreSQL database, a REAL
//! Platform Core (kisum-core on its own database) and, for Auth, the
//! in-test `auth_stand_in` below.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use kisum_admin::rbac::Permission;
use kisum_admin::routes::ROUTES;
use kisum_common::config::Vars;
use kisum_common::internal::{self, Allowlist, Credential};
use kisum_common::jwt::TokenPolicy;
use kisum_common::keys::KeySet;
use kisum_common::serve::Listeners;
use kisum_testkit::Postgres;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

const ADMIN_SECRET: &str = "admin-credential-for-tests";
const AUTH_SECRET: &str = "auth-credential-for-tests";
const ISSUER: &str = "https://auth.kisum.test";
const AUDIENCE: &str = "kisum-api";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn database(prefix: &str) -> String {
    Postgres::shared()
        .create_unique_database(prefix)
        .await
        .expect("a test database")
}

/// Runs a service until the sender is dropped or fired.
fn spawn_until_stopped<F>(serve: F) -> tokio::sync::oneshot::Sender<()>
where
    F: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> tokio::task::JoinHandle<()>,
{
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    serve(Box::pin(async {
        let _ = stopped.await;
    }));
    stop
}

/// A stand-in for Auth, limited to what Admin calls: the two internal
/// routes of the contract in docs/services.md (`POST
/// /internal/platform-access`, `POST /internal/invalidate`, behind the
/// internal credential check) and the public JWKS the tokens verify
/// against. It will be replaced by the real Auth (services/auth) when that
/// lands; everything else in these tests is real.
mod auth_stand_in {
    use super::*;

    #[derive(Clone, Default)]
    pub struct Shared {
        /// user id -> platform roles
        pub roles: Arc<Mutex<BTreeMap<String, Vec<String>>>>,
        pub revoked_sessions: Arc<Mutex<BTreeSet<String>>>,
        /// The bodies of the invalidations received, in order.
        pub invalidations: Arc<Mutex<Vec<Value>>>,
        /// The x-request-id of every internal call received.
        pub request_ids: Arc<Mutex<Vec<String>>>,
        pub fail_invalidations: Arc<AtomicBool>,
        pub jwks: Arc<Value>,
    }

    pub struct AuthStandIn {
        pub address: SocketAddr,
        pub keys: Arc<KeySet>,
        pub shared: Shared,
        _stop: tokio::sync::oneshot::Sender<()>,
    }

    impl AuthStandIn {
        pub async fn start() -> AuthStandIn {
            let keys = Arc::new(KeySet::generate(now()).unwrap());
            let shared = Shared {
                jwks: Arc::new(serde_json::to_value(keys.jwks().unwrap()).unwrap()),
                ..Shared::default()
            };
            let allowlist =
                Allowlist::from_pairs([("platform-admin".to_string(), ADMIN_SECRET.to_string())]);
            let internal = Router::new()
                .route("/internal/platform-access", post(platform_access))
                .route("/internal/invalidate", post(invalidate))
                .layer(middleware::from_fn_with_state(allowlist, internal::require));
            let router = Router::new()
                .route("/.well-known/jwks.json", get(jwks))
                .merge(internal)
                .with_state(shared.clone());
            let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
            let address = listener.local_addr().unwrap();
            let stop = spawn_until_stopped(|stopped| {
                tokio::spawn(async move {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(stopped)
                        .await
                        .unwrap();
                })
            });
            AuthStandIn {
                address,
                keys,
                shared,
                _stop: stop,
            }
        }

        pub fn grant(&self, user: &str, roles: &[&str]) {
            let roles = roles.iter().map(|r| r.to_string()).collect();
            self.shared
                .roles
                .lock()
                .unwrap()
                .insert(user.to_string(), roles);
        }

        pub fn revoke(&self, session: &str) {
            self.shared
                .revoked_sessions
                .lock()
                .unwrap()
                .insert(session.to_string());
        }

        pub fn invalidations(&self) -> Vec<Value> {
            self.shared.invalidations.lock().unwrap().clone()
        }
    }

    fn remember_request_id(shared: &Shared, headers: &HeaderMap) {
        if let Some(id) = headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
            shared.request_ids.lock().unwrap().push(id.to_string());
        }
    }

    async fn jwks(State(shared): State<Shared>) -> Json<Value> {
        Json((*shared.jwks).clone())
    }

    /// `{user, session}` -> `{platform_roles}`; 401 for a revoked session.
    async fn platform_access(
        State(shared): State<Shared>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> Response {
        remember_request_id(&shared, &headers);
        let (user, session) = (body["user"].as_str(), body["session"].as_str());
        let (Some(user), Some(session)) = (user, session) else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        if shared.revoked_sessions.lock().unwrap().contains(session) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let roles = shared
            .roles
            .lock()
            .unwrap()
            .get(user)
            .cloned()
            .unwrap_or_default();
        Json(json!({ "user": user, "session": session, "platform_roles": roles })).into_response()
    }

    /// `{company}` or `{user}`; answers 503 while failures are switched on.
    async fn invalidate(
        State(shared): State<Shared>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> Response {
        remember_request_id(&shared, &headers);
        if shared.fail_invalidations.load(Ordering::SeqCst) {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        shared.invalidations.lock().unwrap().push(body.clone());
        Json(body).into_response()
    }
}

use auth_stand_in::AuthStandIn;

/// Admin, a real Core and the Auth stand-in, each on loopback ports.
struct Stack {
    admin: SocketAddr,
    core: SocketAddr,
    auth: AuthStandIn,
    admin_pool: sqlx::PgPool,
    http: reqwest::Client,
    _stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

/// A signed-in admin-frontend user.
#[derive(Clone)]
struct User {
    id: String,
    session: String,
    token: String,
}

async fn start_core(prefix: &str) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let url = database(&format!("{prefix}_core")).await;
    let vars = Vars::from_pairs([
        ("SERVICE_NAME", "platform-core"),
        ("KISUM_ENVIRONMENT", "test"),
        ("HTTP_PORT", "0"),
        ("INTERNAL_PORT", "0"),
        ("CORE_DB_URL", url.as_str()),
        ("INTERNAL_ALLOWED_CALLERS", "auth,platform-admin"),
        ("INTERNAL_CALLER_AUTH", AUTH_SECRET),
        ("INTERNAL_CALLER_PLATFORM_ADMIN", ADMIN_SECRET),
    ]);
    let config = kisum_core::Config::from_vars(&vars).unwrap();
    kisum_core::migrate(&config).await.unwrap();
    let listeners = Listeners::bind(loopback(), loopback()).await.unwrap();
    let (_, internal) = listeners.addresses().unwrap();
    let stop = spawn_until_stopped(|stopped| {
        tokio::spawn(async move { kisum_core::run(config, listeners, stopped).await.unwrap() })
    });
    (internal, stop)
}

fn admin_vars(database_url: &str, auth: SocketAddr, core: SocketAddr) -> Vars {
    let auth_url = format!("http://{auth}");
    Vars::from_pairs([
        ("SERVICE_NAME", "platform-admin".to_string()),
        ("KISUM_ENVIRONMENT", "test".into()),
        ("HTTP_PORT", "0".into()),
        ("INTERNAL_PORT", "0".into()),
        ("ADMIN_DB_URL", database_url.into()),
        ("AUTH_URL", auth_url.clone()),
        ("AUTH_INTERNAL_URL", auth_url.clone()),
        ("CORE_INTERNAL_URL", format!("http://{core}")),
        ("JWT_ISSUER", ISSUER.into()),
        ("JWT_AUDIENCE", AUDIENCE.into()),
        ("JWKS_URL", format!("{auth_url}/.well-known/jwks.json")),
        ("INTERNAL_CREDENTIAL", ADMIN_SECRET.into()),
        (
            "INTERNAL_CALLER_KISUMCTL",
            "kisumctl-credential-for-tests".into(),
        ),
    ])
}

impl Stack {
    async fn start(prefix: &str) -> Stack {
        let auth = AuthStandIn::start().await;
        let (core, stop_core) = start_core(prefix).await;
        Stack::with(prefix, auth, core, vec![stop_core]).await
    }

    async fn with(
        prefix: &str,
        auth: AuthStandIn,
        core: SocketAddr,
        mut stops: Vec<tokio::sync::oneshot::Sender<()>>,
    ) -> Stack {
        let url = database(&format!("{prefix}_admin")).await;
        let config = kisum_admin::Config::from_vars(&admin_vars(&url, auth.address, core)).unwrap();
        kisum_admin::migrate(&config).await.unwrap();
        let admin_pool = kisum_admin::pool(&config).unwrap();
        let listeners = Listeners::bind(loopback(), loopback()).await.unwrap();
        let (admin, _) = listeners.addresses().unwrap();
        stops.push(spawn_until_stopped(|stopped| {
            tokio::spawn(async move { kisum_admin::run(config, listeners, stopped).await.unwrap() })
        }));
        Stack {
            admin,
            core,
            auth,
            admin_pool,
            http: reqwest::Client::new(),
            _stops: stops,
        }
    }

    fn policy(&self) -> TokenPolicy {
        TokenPolicy {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            leeway_seconds: 0,
        }
    }

    /// A user with `roles` and a token for a fresh session.
    fn user(&self, roles: &[&str]) -> User {
        let (id, session) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
        self.auth.grant(&id, roles);
        let token = self
            .policy()
            .sign(&self.auth.keys, &id, &session, now(), 900)
            .unwrap();
        User { id, session, token }
    }

    async fn call(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("http://{}{path}", self.admin))
            .header("x-request-id", format!("test-{}", Uuid::new_v4()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn as_user(
        &self,
        user: &User,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call(Some(&user.token), method, path, body).await
    }

    /// Core's own view, asked directly with Auth's credential.
    async fn core_get(&self, path: &str) -> Value {
        let mut headers = reqwest::header::HeaderMap::new();
        Credential::new("auth", AUTH_SECRET).apply(&mut headers);
        let response = self
            .http
            .get(format!("http://{}{path}", self.core))
            .headers(headers)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    async fn audit(&self, target: &str) -> Vec<Value> {
        let reader = self.user(&["support"]);
        let (status, body) = self
            .as_user(
                &reader,
                Method::GET,
                &format!("/admin/audit?target={target}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["entries"].as_array().unwrap().clone()
    }
}

/// A request each route accepts, with real ids in the path.
fn concrete(method: &str, route: &str, company: Uuid) -> (Method, String, Option<Value>) {
    let path = route
        .replace("{company}", &company.to_string())
        .replace("{add_on}", "finance")
        .replace("{id}", &Uuid::new_v4().to_string());
    let body = match (method, route) {
        ("PUT", r) if r.ends_with("/subscription") => {
            Some(json!({ "package": "basic-standard", "status": "active" }))
        }
        ("PUT", _) => Some(json!({ "active": true })),
        ("POST", "/admin/catalog/packages") => {
            Some(json!({ "key": "basic-standard", "name": "Basic Standard", "modules": ["basic"] }))
        }
        ("POST", "/admin/catalog/add-ons") => {
            Some(json!({ "key": "finance", "name": "Finance add-on", "module": "finance" }))
        }
        ("POST", "/admin/organizations") => Some(json!({ "name": "Acme Touring" })),
        _ => None,
    };
    (method.parse().unwrap(), path, body)
}

#[tokio::test]
async fn every_route_needs_a_valid_token_a_live_session_and_a_platform_role() {
    let stack = Stack::start("admin_rbac").await;
    let company = Uuid::new_v4();
    let admin = stack.user(&["platform-admin"]);
    let support = stack.user(&["support"]);
    let nobody = stack.user(&["finance-manager"]);
    let revoked = stack.user(&["platform-admin"]);
    stack.auth.revoke(&revoked.session);
    let policy = stack.policy();
    let stranger_keys = KeySet::generate(now()).unwrap();
    let forged = policy
        .sign(&stranger_keys, &admin.id, &admin.session, now(), 900)
        .unwrap();
    let wrong_issuer = TokenPolicy {
        issuer: "https://evil.test".into(),
        ..policy.clone()
    }
    .sign(&stack.auth.keys, &admin.id, &admin.session, now(), 900)
    .unwrap();
    let wrong_audience = TokenPolicy {
        audience: "other-api".into(),
        ..policy.clone()
    }
    .sign(&stack.auth.keys, &admin.id, &admin.session, now(), 900)
    .unwrap();
    let expired = policy
        .sign(
            &stack.auth.keys,
            &admin.id,
            &admin.session,
            now() - 3600,
            900,
        )
        .unwrap();

    for (method, route, permission) in ROUTES {
        let (method, path, body) = concrete(method, route, company);
        let unauthenticated = [
            None,
            Some("not-a-jwt"),
            Some(forged.as_str()),
            Some(wrong_issuer.as_str()),
            Some(wrong_audience.as_str()),
            Some(expired.as_str()),
            Some(revoked.token.as_str()),
        ];
        for token in unauthenticated {
            let (status, answer) = stack.call(token, method.clone(), &path, body.clone()).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path}: {answer}"
            );
            assert_eq!(answer["error"], "unauthenticated");
        }
        let (status, answer) = stack
            .as_user(&nobody, method.clone(), &path, body.clone())
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
        assert_eq!(answer["error"], "forbidden");

        let (status, answer) = stack
            .as_user(&support, method.clone(), &path, body.clone())
            .await;
        match permission {
            Permission::Read => assert!(status.is_success(), "support {method} {path}: {answer}"),
            Permission::Write => assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}"),
        }
        let (status, answer) = stack
            .as_user(&admin, method.clone(), &path, body.clone())
            .await;
        let expected_not_found = path.contains("/admin/organizations/");
        if expected_not_found {
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
        } else {
            assert!(
                status.is_success(),
                "admin {method} {path}: {status} {answer}"
            );
        }
    }
}

#[tokio::test]
async fn a_subscription_change_goes_through_core_then_auth_then_the_audit() {
    let stack = Stack::start("admin_subscription").await;
    let admin = stack.user(&["platform-admin"]);
    let company = Uuid::new_v4();
    let path = format!("/admin/companies/{company}/subscription");
    let request_id = format!("req-{}", Uuid::new_v4());
    let response = stack
        .http
        .put(format!("http://{}{path}", stack.admin))
        .bearer_auth(&admin.token)
        .header("x-request-id", &request_id)
        .json(&json!({ "package": "basic-plus-finance", "status": "active" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let change: Value = response.json().await.unwrap();
    assert_eq!(change["after"]["core_app"], true);
    assert_eq!(change["after"]["modules"], json!(["basic", "finance"]));
    assert_eq!(change["after"]["version"], 1);

    // Core has the change, made for the admin user by platform-admin.
    let entitlements = stack
        .core_get(&format!("/v1/companies/{company}/entitlements"))
        .await;
    assert_eq!(entitlements, change["after"]);
    let history = stack
        .core_get(&format!("/v1/companies/{company}/entitlements/history"))
        .await;
    let row = &history["history"][0];
    assert_eq!(
        (row["actor"].as_str(), row["caller"].as_str()),
        (Some(admin.id.as_str()), Some("platform-admin"))
    );
    assert_eq!(row["request_id"], request_id.as_str());

    // Auth was told before Admin answered.
    assert_eq!(stack.auth.invalidations(), [json!({ "company": company })]);
    assert!(
        stack
            .auth
            .shared
            .request_ids
            .lock()
            .unwrap()
            .contains(&request_id)
    );

    // Admin's read goes through Core too.
    let (status, read) = stack
        .as_user(
            &admin,
            Method::GET,
            &format!("/admin/companies/{company}/entitlements"),
            None,
        )
        .await;
    assert_eq!((status, &read), (StatusCode::OK, &change["after"]));

    let audit = stack.audit(&format!("company:{company}")).await;
    assert_eq!(audit.len(), 1);
    let entry = &audit[0];
    assert_eq!(entry["actor"], admin.id.as_str());
    assert_eq!(entry["action"], "subscription.set");
    assert_eq!(entry["outcome"], "ok");
    assert_eq!(entry["before"], change["before"]);
    assert_eq!(entry["after"], change["after"]);
    assert_eq!(entry["request_id"], request_id.as_str());
}

#[tokio::test]
async fn add_on_and_catalog_changes_invalidate_every_affected_company() {
    let stack = Stack::start("admin_catalog").await;
    let admin = stack.user(&["platform-admin"]);
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());

    let (status, change) = stack
        .as_user(
            &admin,
            Method::PUT,
            &format!("/admin/companies/{first}/add-ons/market"),
            Some(json!({ "active": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{change}");
    assert_eq!(
        (
            change["after"]["core_app"].as_bool(),
            &change["after"]["modules"]
        ),
        (Some(false), &json!(["market"]))
    );

    let package =
        json!({ "key": "tour-pack", "name": "Tour pack", "modules": ["basic", "touring"] });
    let (status, created) = stack
        .as_user(
            &admin,
            Method::POST,
            "/admin/catalog/packages",
            Some(package),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    for company in [first, second] {
        let path = format!("/admin/companies/{company}/subscription");
        let (status, _) = stack
            .as_user(
                &admin,
                Method::PUT,
                &path,
                Some(json!({ "package": "tour-pack", "status": "active" })),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let before_update = stack.auth.invalidations().len();
    let update = json!({ "key": "tour-pack", "name": "Tour pack", "modules": ["basic", "touring", "venue"] });
    let (status, updated) = stack
        .as_user(
            &admin,
            Method::POST,
            "/admin/catalog/packages",
            Some(update),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    let bumped: BTreeSet<String> = updated["bumped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["company"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        bumped,
        BTreeSet::from([first.to_string(), second.to_string()])
    );
    let told: BTreeSet<String> = stack.auth.invalidations()[before_update..]
        .iter()
        .map(|i| i["company"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(told, bumped);
    let modules = stack
        .core_get(&format!("/v1/companies/{second}/entitlements"))
        .await["modules"]
        .clone();
    assert_eq!(modules, json!(["basic", "touring", "venue"]));

    let audit = stack.audit("package:tour-pack").await;
    assert_eq!(audit.len(), 2);
    let (update_row, create_row) = (&audit[0], &audit[1]);
    assert_eq!(create_row["before"], Value::Null);
    assert_eq!(update_row["before"]["modules"], json!(["basic", "touring"]));
    assert_eq!(
        update_row["after"]["item"]["modules"],
        json!(["basic", "touring", "venue"])
    );
    assert_eq!(update_row["action"], "catalog.package");

    let add_on = json!({ "key": "ai-plus", "name": "AI plus", "module": "ai" });
    let (status, _) = stack
        .as_user(&admin, Method::POST, "/admin/catalog/add-ons", Some(add_on))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(stack.audit("add-on:ai-plus").await.len(), 1);
}

#[tokio::test]
async fn a_failed_invalidation_is_a_502_and_audited_as_invalidation_failed() {
    let stack = Stack::start("admin_invalidation").await;
    let admin = stack.user(&["platform-admin"]);
    let company = Uuid::new_v4();
    stack
        .auth
        .shared
        .fail_invalidations
        .store(true, Ordering::SeqCst);
    let (status, answer) = stack
        .as_user(
            &admin,
            Method::PUT,
            &format!("/admin/companies/{company}/subscription"),
            Some(json!({ "package": "basic-standard", "status": "active" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{answer}");
    assert_eq!(answer["error"], "invalidation_failed");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains(&company.to_string())
    );

    // The change is real in Core, and the audit says Auth was not told.
    let entitlements = stack
        .core_get(&format!("/v1/companies/{company}/entitlements"))
        .await;
    assert_eq!(entitlements["core_app"], true);
    let audit = stack.audit(&format!("company:{company}")).await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["outcome"], "invalidation-failed");
    assert_eq!(audit[0]["after"], entitlements);

    // Once Auth answers again, a retry settles it.
    stack
        .auth
        .shared
        .fail_invalidations
        .store(false, Ordering::SeqCst);
    let (status, _) = stack
        .as_user(
            &admin,
            Method::PUT,
            &format!("/admin/companies/{company}/subscription"),
            Some(json!({ "package": "basic-standard", "status": "active" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stack.auth.invalidations(), [json!({ "company": company })]);
}

#[tokio::test]
async fn core_refusals_are_passed_on_and_change_nothing() {
    let stack = Stack::start("admin_refusals").await;
    let admin = stack.user(&["platform-admin"]);
    let company = Uuid::new_v4();
    let cases = [
        (
            Method::PUT,
            format!("/admin/companies/{company}/subscription"),
            json!({ "package": "gold", "status": "active" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_package",
        ),
        (
            Method::PUT,
            format!("/admin/companies/{company}/subscription"),
            json!({ "package": "basic-standard", "status": "paused" }),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::PUT,
            format!("/admin/companies/{company}/add-ons/gold"),
            json!({ "active": true }),
            StatusCode::NOT_FOUND,
            "unknown_add_on",
        ),
        (
            Method::PUT,
            format!("/admin/companies/{company}/add-ons/a%2Fb"),
            json!({ "active": true }),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::PUT,
            "/admin/companies/not-a-uuid/subscription".to_string(),
            json!({ "package": "basic-standard", "status": "active" }),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::POST,
            "/admin/catalog/add-ons".to_string(),
            json!({ "key": "basic", "name": "Basic", "module": "basic" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "basic_is_not_an_add_on",
        ),
        (
            Method::POST,
            "/admin/catalog/packages".to_string(),
            json!({ "key": "p", "modules": ["basic"] }),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let (got, answer) = stack
            .as_user(&admin, method.clone(), &path, Some(body))
            .await;
        assert_eq!(
            (got, answer["error"].as_str()),
            (status, Some(code)),
            "{method} {path}: {answer}"
        );
    }
    assert!(stack.auth.invalidations().is_empty());
    let audit_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(&stack.admin_pool)
        .await
        .unwrap();
    assert_eq!(audit_rows, 0);
    let version = stack
        .core_get(&format!("/v1/companies/{company}/entitlements/version"))
        .await;
    assert_eq!(version["version"], 0);
}

#[tokio::test]
async fn an_unreachable_core_is_a_502() {
    let auth = AuthStandIn::start().await;
    // A loopback port that nothing listens on any more.
    let closed = tokio::net::TcpListener::bind(loopback())
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let stack = Stack::with("admin_no_core", auth, closed, Vec::new()).await;
    let admin = stack.user(&["platform-admin"]);
    let company = Uuid::new_v4();
    let (status, answer) = stack
        .as_user(
            &admin,
            Method::GET,
            &format!("/admin/companies/{company}/entitlements"),
            None,
        )
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::BAD_GATEWAY, Some("core_unavailable"))
    );
    let (status, _) = stack
        .as_user(
            &admin,
            Method::PUT,
            &format!("/admin/companies/{company}/subscription"),
            Some(json!({ "package": "basic-standard", "status": "active" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(stack.auth.invalidations().is_empty());
}

#[tokio::test]
async fn organizations_are_created_pending_and_decided_once() {
    let stack = Stack::start("admin_organizations").await;
    let admin = stack.user(&["platform-admin"]);
    let create = |name: &str| {
        let body = json!({ "name": name });
        stack.as_user(&admin, Method::POST, "/admin/organizations", Some(body))
    };
    let (status, acme) = create("Acme Touring").await;
    assert_eq!(status, StatusCode::CREATED, "{acme}");
    assert_eq!(acme["status"], "pending");
    let (_, globex) = create("Globex Venues").await;
    let (status, _) = create("   ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, pending) = stack
        .as_user(
            &admin,
            Method::GET,
            "/admin/organizations?status=pending",
            None,
        )
        .await;
    assert_eq!(pending["organizations"].as_array().unwrap().len(), 2);

    let acme_id = acme["id"].as_str().unwrap();
    let (status, approved) = stack
        .as_user(
            &admin,
            Method::POST,
            &format!("/admin/organizations/{acme_id}/approve"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(
        (approved["status"].as_str(), approved["decided_by"].as_str()),
        (Some("approved"), Some(admin.id.as_str()))
    );
    let (status, again) = stack
        .as_user(
            &admin,
            Method::POST,
            &format!("/admin/organizations/{acme_id}/reject"),
            None,
        )
        .await;
    assert_eq!(
        (status, again["error"].as_str()),
        (StatusCode::CONFLICT, Some("organization_already_decided"))
    );

    let globex_id = globex["id"].as_str().unwrap();
    let (status, rejected) = stack
        .as_user(
            &admin,
            Method::POST,
            &format!("/admin/organizations/{globex_id}/reject"),
            Some(json!({ "reason": "duplicate of an existing company" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        rejected["decision_reason"],
        "duplicate of an existing company"
    );

    let (_, pending) = stack
        .as_user(
            &admin,
            Method::GET,
            "/admin/organizations?status=pending",
            None,
        )
        .await;
    assert!(pending["organizations"].as_array().unwrap().is_empty());

    let audit = stack.audit(&format!("organization:{acme_id}")).await;
    let actions: Vec<&str> = audit
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["organization.approve", "organization.create"]);
    assert_eq!(audit[0]["before"]["status"], "pending");
    assert_eq!(audit[0]["after"]["status"], "approved");
    assert_eq!(audit[1]["before"], Value::Null);
    let rejections = stack.audit(&format!("organization:{globex_id}")).await;
    assert_eq!(rejections[0]["action"], "organization.reject");
}

#[tokio::test]
async fn migrations_are_idempotent_and_serve_refuses_to_start_while_any_is_pending() {
    let url = database("admin_migrations").await;
    let unused = loopback();
    let config = kisum_admin::Config::from_vars(&admin_vars(&url, unused, unused)).unwrap();
    let listeners = Listeners::bind(loopback(), loopback()).await.unwrap();
    let error = kisum_admin::run(config.clone(), listeners, std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("pending migration") && error.contains("kisum-admin migrate"),
        "{error}"
    );

    let binary = |command: &str| {
        let mut process = std::process::Command::new(env!("CARGO_BIN_EXE_kisum-admin"));
        process.arg(command).env_clear();
        for (name, value) in [
            ("SERVICE_NAME", "platform-admin"),
            ("KISUM_ENVIRONMENT", "test"),
            ("HTTP_PORT", "0"),
            ("INTERNAL_PORT", "0"),
            ("ADMIN_DB_URL", url.as_str()),
            ("AUTH_URL", "http://127.0.0.1:9"),
            ("AUTH_INTERNAL_URL", "http://127.0.0.1:9"),
            ("CORE_INTERNAL_URL", "http://127.0.0.1:9"),
            ("JWT_ISSUER", ISSUER),
            ("JWT_AUDIENCE", AUDIENCE),
            ("JWKS_URL", "http://127.0.0.1:9/.well-known/jwks.json"),
            ("INTERNAL_CREDENTIAL", ADMIN_SECRET),
            ("LOG_LEVEL", "warn"),
        ] {
            process.env(name, value);
        }
        process.output().unwrap()
    };
    let refused = binary("serve");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("pending migration"),
        "{stderr}"
    );
    assert!(!stderr.contains(ADMIN_SECRET));
    for _ in 0..2 {
        let migrated = binary("migrate");
        assert!(
            migrated.status.success(),
            "{}",
            String::from_utf8_lossy(&migrated.stderr)
        );
    }
    let pool = kisum_admin::pool(&config).unwrap();
    assert_eq!(
        kisum_admin::migrations::schema_state(&pool).await.unwrap(),
        kisum_admin::migrations::SchemaState::Current
    );
}
