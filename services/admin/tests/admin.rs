//! Platform Admin over HTTP, with its own real PostgreSQL database and the
//! REAL Platform Core and Auth (`kisum-core`, `kisum-auth`, in-process; see
//! the shared harness in `services/module/tests/platform/`). Users and
//! their platform roles live in auth_db, tokens come from Auth's login,
//! invalidations reach Auth. The one fake is [`InvalidationFaultProxy`], a
//! fault-injecting proxy in front of the real Auth.
//! `smoke_paths_of_the_platform` runs the platform's smoke checks against
//! Core, Auth, Admin and a module backend together.

#[path = "../../module/tests/platform/mod.rs"]
mod platform;
mod services;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use kisum_admin::rbac::Permission;
use kisum_admin::routes::ROUTES;
use kisum_common::jwt::TokenPolicy;
use kisum_common::keys::KeySet;
use platform::{
    ADMIN_SECRET, AUDIENCE, ISSUER, Platform, database, eventually, loopback, loopback_listeners,
    now, serve_until_dropped,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use services::{admin_vars, start_admin, start_finance};
use tokio::sync::{OnceCell, oneshot};
use uuid::Uuid;

const INVOICE_READ: &str = "finance.invoices.read";

/// A fault-injecting reverse proxy on loopback in front of the real Auth's
/// internal port. Every request goes through to Auth unchanged, except
/// that while [`refuse_invalidations`](Self::refuse_invalidations) is on
/// it answers `POST /internal/invalidate` with a 503 itself: Auth never
/// sees that call.
struct InvalidationFaultProxy {
    address: SocketAddr,
    refusing: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    refusing: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
}

impl InvalidationFaultProxy {
    async fn start(upstream: &str) -> InvalidationFaultProxy {
        let state = ProxyState {
            upstream: upstream.to_string(),
            http: reqwest::Client::new(),
            refusing: Arc::default(),
            refused: Arc::default(),
        };
        let (refusing, refused) = (state.refusing.clone(), state.refused.clone());
        let router = Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
        let address = listener.local_addr().unwrap();
        let stop = serve_until_dropped(|shutdown| async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
                .unwrap();
        });
        InvalidationFaultProxy {
            address,
            refusing,
            refused,
            _stop: stop,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn refuse_invalidations(&self, on: bool) {
        self.refusing.store(on, Ordering::SeqCst);
    }

    /// How many invalidations it answered itself.
    fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

async fn forward(State(proxy): State<ProxyState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if proxy.refusing.load(Ordering::SeqCst)
        && parts.method == Method::POST
        && parts.uri.path() == "/internal/invalidate"
    {
        proxy.refused.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "fault injected by the test proxy",
        )
            .into_response();
    }
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = parts.headers;
    headers.remove(header::HOST);
    let answer = proxy
        .http
        .request(parts.method, format!("{}{path}", proxy.upstream))
        .headers(headers)
        .body(bytes)
        .send()
        .await;
    let Ok(answer) = answer else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = answer.status();
    let mut headers = answer.headers().clone();
    for hop in [header::TRANSFER_ENCODING, header::CONNECTION] {
        headers.remove(hop);
    }
    match answer.bytes().await {
        Ok(bytes) => (status, headers, bytes).into_response(),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// Admin on its own database, with the real Core and Auth of `platform`.
struct Stack {
    platform: Platform,
    admin: SocketAddr,
    admin_pool: sqlx::PgPool,
    http: reqwest::Client,
    /// A `support` user for reading the audit log.
    reader: OnceCell<User>,
    _stop: oneshot::Sender<()>,
}

/// A signed-in admin-frontend user.
#[derive(Clone)]
struct User {
    id: String,
    session: String,
    token: String,
}

impl Stack {
    async fn start(prefix: &str) -> Stack {
        let platform = Platform::start().await;
        let (auth_internal, core) = (platform.auth_internal_url(), platform.core_url());
        Stack::with(prefix, platform, &auth_internal, &core).await
    }

    /// Admin calling Auth's internal routes at `auth_internal` and Core at
    /// `core` (the platform's own, or something in front of them).
    async fn with(prefix: &str, platform: Platform, auth_internal: &str, core: &str) -> Stack {
        let admin = start_admin(prefix, &platform, auth_internal, core).await;
        Stack {
            platform,
            admin: admin.address,
            admin_pool: admin.pool,
            http: reqwest::Client::new(),
            reader: OnceCell::new(),
            _stop: admin.stop,
        }
    }

    /// A new user in auth_db with `platform_roles`, signed in.
    async fn user(&self, platform_roles: &[&str]) -> User {
        let user = self.platform.user().await;
        for role in platform_roles {
            self.platform.grant_platform_role(user.id, role).await;
        }
        let session = self.platform.login(&user.email).await;
        User {
            id: session.user,
            session: session.session,
            token: session.access_token,
        }
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
        platform::body(request.send().await.unwrap()).await
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
        self.platform.core_get(path).await
    }

    /// How many invalidations Auth has received.
    async fn invalidations(&self) -> u64 {
        self.platform.auth_requests("/internal/invalidate").await
    }

    async fn audit(&self, target: &str) -> Vec<Value> {
        let reader = self.reader.get_or_init(|| self.user(&["support"])).await;
        let (status, body) = self
            .as_user(
                reader,
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
        .replace("{id}", &Uuid::new_v4().to_string())
        .replace("{membership}", &Uuid::new_v4().to_string())
        .replace("{module}", "finance")
        .replace("{permission}", INVOICE_READ)
        .replace("{role}", "rbac-role");
    let body = match (method, route) {
        ("PUT", "/admin/companies/{company}") => Some(
            json!({ "slug": format!("rbac-{}", company.simple()), "name": "RBAC test company" }),
        ),
        ("PUT", "/admin/memberships/{membership}/status") => Some(json!({ "active": false })),
        ("PUT", "/admin/roles/{role}") => Some(json!({ "permissions": [INVOICE_READ] })),
        ("PUT" | "DELETE", r) if r.contains("/grants/") => None,
        ("POST", "/admin/companies/{company}/memberships") => {
            Some(json!({ "email": "nobody-here@kisum.test", "role": "rbac-role" }))
        }
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
    let company = stack.platform.company("rbac").await.id;
    let admin = stack.user(&["platform-admin"]).await;
    let support = stack.user(&["support"]).await;
    // A company role, but no platform role.
    let nobody = stack.user(&[]).await;
    let acme = stack.platform.company("acme").await;
    let finance_manager = stack.platform.role(&[INVOICE_READ]).await;
    let nobody_id = Uuid::parse_str(&nobody.id).unwrap();
    stack
        .platform
        .membership(nobody_id, acme.id, &finance_manager, &["finance"])
        .await;
    // Signed out: Auth holds the session revoked.
    let revoked = stack.user(&["platform-admin"]).await;
    stack.platform.logout(&revoked.token).await;
    // Tokens signed with Auth's own key that are still wrong.
    let keys = stack.platform.keys();
    let policy = platform::policy();
    let stranger_keys = KeySet::generate(now()).unwrap();
    let forged = policy
        .sign(&stranger_keys, &admin.id, &admin.session, now(), 900)
        .unwrap();
    let wrong_issuer = TokenPolicy {
        issuer: "https://evil.test".into(),
        ..policy.clone()
    }
    .sign(&keys, &admin.id, &admin.session, now(), 900)
    .unwrap();
    let wrong_audience = TokenPolicy {
        audience: "other-api".into(),
        ..policy.clone()
    }
    .sign(&keys, &admin.id, &admin.session, now(), 900)
    .unwrap();
    let expired = policy
        .sign(&keys, &admin.id, &admin.session, now() - 3600, 900)
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
        // Unknown organizations, memberships and users.
        let expected_not_found = path.contains("/admin/organizations/")
            || path.contains("/admin/memberships/")
            || (method == Method::POST && path.ends_with("/memberships"));
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
    let admin = stack.user(&["platform-admin"]).await;
    let company = stack.platform.company("subscriber").await.id;
    let access_version = stack.platform.company_access_version(company).await;
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

    // Auth was told before Admin answered: it bumped the company's access
    // version, and logged both calls under the request's id.
    assert_eq!(stack.invalidations().await, 1);
    assert_eq!(
        stack.platform.company_access_version(company).await,
        access_version + 1
    );
    for route in ["/internal/platform-access", "/internal/invalidate"] {
        let logged = platform::auth_request_log(route, &request_id)
            .unwrap_or_else(|| panic!("Auth logged no {route} call for {request_id}"));
        assert_eq!(logged["status"], 200, "{logged}");
    }

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
    let admin = stack.user(&["platform-admin"]).await;
    let p = &stack.platform;
    let (first, second) = (p.company("first").await.id, p.company("second").await.id);
    // A member of the second company, with grants for every module of the
    // package as it will become.
    let role = p.role(&["basic.contacts.read", "venue.venues.read"]).await;
    let member = p.user().await;
    p.membership(member.id, second, &role, &["basic", "touring", "venue"])
        .await;
    let member = p.login(&member.email).await;

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
    // Auth has computed (and cached) the member's access before the change.
    let (status, access) = p.me_access(&member.access_token, &second.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{access}");
    assert_eq!(
        access["modules"],
        json!({ "basic": ["basic.contacts.read"], "touring": [] })
    );
    let invalidations = stack.invalidations().await;
    let versions = [
        p.company_access_version(first).await,
        p.company_access_version(second).await,
    ];
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
    // Auth was told about each of them, once, before Admin answered.
    assert_eq!(stack.invalidations().await, invalidations + 2);
    assert_eq!(
        [
            p.company_access_version(first).await,
            p.company_access_version(second).await,
        ],
        versions.map(|version| version + 1)
    );
    let (_, access) = p.me_access(&member.access_token, &second.to_string()).await;
    assert_eq!(
        access["modules"],
        json!({ "basic": ["basic.contacts.read"], "touring": [], "venue": ["venue.venues.read"] })
    );
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
    // Admin reaches Auth's internal port through the fault proxy.
    let platform = Platform::start().await;
    let proxy = InvalidationFaultProxy::start(&platform.auth_internal_url()).await;
    let core = platform.core_url();
    let stack = Stack::with("admin_invalidation", platform, &proxy.url(), &core).await;
    let admin = stack.user(&["platform-admin"]).await;
    let company = stack.platform.company("unlucky").await.id;
    let access_version = stack.platform.company_access_version(company).await;
    proxy.refuse_invalidations(true);
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
    assert_eq!(proxy.refused(), 1);
    assert_eq!(stack.invalidations().await, 0);
    assert_eq!(
        stack.platform.company_access_version(company).await,
        access_version
    );

    // Once Auth answers again, a retry settles it.
    proxy.refuse_invalidations(false);
    let (status, _) = stack
        .as_user(
            &admin,
            Method::PUT,
            &format!("/admin/companies/{company}/subscription"),
            Some(json!({ "package": "basic-standard", "status": "active" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stack.invalidations().await, 1);
    assert_eq!(
        stack.platform.company_access_version(company).await,
        access_version + 1
    );
    assert_eq!(proxy.refused(), 1);
}

#[tokio::test]
async fn core_refusals_are_passed_on_and_change_nothing() {
    let stack = Stack::start("admin_refusals").await;
    let admin = stack.user(&["platform-admin"]).await;
    // Core keeps entitlements for any id; a company Auth does not know is
    // refused before Core is asked.
    let stranger = Uuid::new_v4();
    for (method, path, body) in [
        (
            Method::PUT,
            format!("/admin/companies/{stranger}/subscription"),
            Some(json!({ "package": "basic-standard", "status": "active" })),
        ),
        (
            Method::PUT,
            format!("/admin/companies/{stranger}/add-ons/ai"),
            Some(json!({ "active": true })),
        ),
        (
            Method::GET,
            format!("/admin/companies/{stranger}/entitlements"),
            None,
        ),
    ] {
        let (status, answer) = stack.as_user(&admin, method, &path, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {answer}");
        assert_eq!(answer["error"], "not_found", "{path}: {answer}");
    }
    let company = stack.platform.company("refused").await.id;
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
    assert_eq!(stack.invalidations().await, 0);
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
    let platform = Platform::start().await;
    // A loopback port that nothing listens on any more.
    let closed = tokio::net::TcpListener::bind(loopback())
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let auth_internal = platform.auth_internal_url();
    let closed = format!("http://{closed}");
    let stack = Stack::with("admin_no_core", platform, &auth_internal, &closed).await;
    let admin = stack.user(&["platform-admin"]).await;
    let company = stack.platform.company("no-core").await.id;
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
    assert_eq!(stack.invalidations().await, 0);
}

#[tokio::test]
async fn organizations_are_created_pending_and_decided_once() {
    let stack = Stack::start("admin_organizations").await;
    let admin = stack.user(&["platform-admin"]).await;
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
    // Never called: the schema check comes first.
    let unused = format!("http://{}", loopback());
    let unused = unused.as_str();
    let vars = admin_vars(&url, unused, unused, unused);
    let config = kisum_admin::Config::from_vars(&vars).unwrap();
    let listeners = loopback_listeners().await;
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

// ------------------------------------------------------------------ smoke --

/// The module backends' access-context cache in the smoke test
/// (`ACCESS_CACHE_SECONDS`): how stale a module's view of a revoked
/// session or a removed module may be.
const MODULE_ACCESS_CACHE: Duration = Duration::from_secs(1);
/// Time for the requests themselves on top of that, on a loaded machine;
/// the sum stays below the default cache time (5 s), so a backend that
/// ignored `ACCESS_CACHE_SECONDS` would fail.
const SLACK: Duration = Duration::from_secs(2);

/// Section 25.3 of the platform plan, against Platform Core, Auth,
/// Platform Admin and a module backend (finance) running together.
#[tokio::test]
async fn smoke_paths_of_the_platform() {
    let mut stack = Stack::start("admin_smoke").await;
    let (finance, _stop_finance) = start_finance(&stack.platform, MODULE_ACCESS_CACHE).await;
    let http = stack.http.clone();
    let module = |method: Method, token: &str, org: &str| {
        let request = http
            .request(method.clone(), format!("http://{finance}/v1/invoices"))
            .bearer_auth(token)
            .header("x-org", org);
        let request = if method == Method::POST {
            request.json(&json!({"number": "INV-1", "customer": "Ada Music",
                "amount_cents": 125_000, "currency": "EUR"}))
        } else {
            request
        };
        async move { platform::body(request.send().await.unwrap()).await }
    };
    let p = &stack.platform;

    // The tenant: a company on Basic plus Finance, a member whose role may
    // read invoices but not write them; and a company, on the same
    // package, the member does not belong to.
    let company = p.company("smoke").await;
    p.subscribe(company.id, "basic-plus-finance", true).await;
    let role = p.role(&["basic.contacts.read", INVOICE_READ]).await;
    let member = p.user().await;
    p.membership(member.id, company.id, &role, &["basic", "finance"])
        .await;
    let elsewhere = p.company("elsewhere").await;
    p.subscribe(elsewhere.id, "basic-plus-finance", true).await;
    let admin = stack.user(&["platform-admin"]).await;
    let org = company.id.to_string();

    // Auth health and readiness; the other three are ready too.
    let (status, health) = p.auth_call(Method::GET, "/health", &[], None).await;
    assert_eq!((status, &health["status"]), (StatusCode::OK, &json!("ok")));
    let (status, ready) = p.auth_call(Method::GET, "/ready", &[], None).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(
        ready["checks"],
        json!({ "auth_db": "ok", "redis": "ok", "signing_keys": "ok" })
    );
    for service in [p.core_public, stack.admin, finance] {
        let ready = http
            .get(format!("http://{service}/ready"))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), StatusCode::OK, "{service}");
    }

    // Login.
    let (status, tokens) = p
        .auth_call(
            Method::POST,
            "/auth/login",
            &[],
            Some(json!({ "email": member.email, "password": platform::PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    let token = tokens["access_token"].as_str().unwrap().to_string();

    // /auth/me.
    let (status, me) = p.me(&token).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["user"], member.id.to_string());
    assert_eq!(me["email"], member.email);
    assert_eq!(me["companies"][0]["company"], org);
    assert_eq!(me["companies"][0]["slug"], company.slug);
    assert_eq!(me["companies"].as_array().unwrap().len(), 1);

    // /auth/me/access.
    let (status, access) = p.me_access(&token, &company.slug).await;
    assert_eq!(status, StatusCode::OK, "{access}");
    assert_eq!(access["company"], org);
    assert_eq!(access["session"], me["session"]);
    assert_eq!(access["core_app"], true);
    let entitled = json!({
        "basic": ["basic.contacts.read"],
        "finance": [INVOICE_READ],
    });
    assert_eq!(access["modules"], entitled);

    // A Core entitlement read, through Admin (Core is internal).
    let path = format!("/admin/companies/{org}/entitlements");
    let (status, entitlements) = stack.as_user(&admin, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{entitlements}");
    assert_eq!(entitlements["company"], org);
    assert_eq!(entitlements["core_app"], true);
    assert_eq!(entitlements["modules"], json!(["basic", "finance"]));

    // A module request allowed by permission, one denied by permission.
    let (status, listed) = module(Method::GET, &token, &org).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["items"], json!([]));
    let (status, denied) = module(Method::POST, &token, &org).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{denied}");
    assert_eq!(denied["message"], "access denied by permission");

    // An x-org for a company the user does not belong to.
    let (status, denied) = module(Method::GET, &token, &elsewhere.id.to_string()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{denied}");
    assert_eq!(denied["message"], "no membership in that company");

    // An admin subscription change: once Admin's PUT returns, the very
    // next /auth/me/access shows it (Auth had the old access cached).
    let subscription = format!("/admin/companies/{org}/subscription");
    let inactive = json!({ "package": "basic-plus-finance", "status": "inactive" });
    let (status, change) = stack
        .as_user(&admin, Method::PUT, &subscription, Some(inactive))
        .await;
    assert_eq!(status, StatusCode::OK, "{change}");
    assert_eq!(change["after"]["modules"], json!([]));
    let (status, changed) = p.me_access(&token, &company.slug).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["modules"], json!({}));
    assert_eq!(changed["core_app"], false);
    assert!(changed["entitlement_version"].as_i64() > access["entitlement_version"].as_i64());
    // The module follows within its cache time.
    let by_module = eventually(MODULE_ACCESS_CACHE + SLACK, || async {
        let (status, answer) = module(Method::GET, &token, &org).await;
        status == StatusCode::FORBIDDEN && answer["message"] == "access denied by module"
    })
    .await;
    assert!(by_module, "the module still allows finance");
    // Restored, the same way.
    let active = json!({ "package": "basic-plus-finance", "status": "active" });
    let (status, change) = stack
        .as_user(&admin, Method::PUT, &subscription, Some(active))
        .await;
    assert_eq!(status, StatusCode::OK, "{change}");
    let (_, restored) = p.me_access(&token, &company.slug).await;
    assert_eq!(restored["modules"], entitled);
    assert_eq!(restored["core_app"], true);
    let allowed_again = eventually(MODULE_ACCESS_CACHE + SLACK, || async {
        module(Method::GET, &token, &org).await.0 == StatusCode::OK
    })
    .await;
    assert!(allowed_again, "the module still refuses finance");

    // A revoked session: Auth refuses it at once, the module within
    // ACCESS_CACHE_SECONDS. Another session of the user stays valid.
    let kept = p.login(&member.email).await;
    assert_eq!(module(Method::GET, &token, &org).await.0, StatusCode::OK);
    p.logout(&token).await;
    assert_eq!(p.me(&token).await.0, StatusCode::UNAUTHORIZED);
    let revoked_at_module = eventually(MODULE_ACCESS_CACHE + SLACK, || async {
        let (status, answer) = module(Method::GET, &token, &org).await;
        status == StatusCode::UNAUTHORIZED && answer["message"] == "session revoked or unknown"
    })
    .await;
    assert!(
        revoked_at_module,
        "the module still accepts a revoked session"
    );
    assert_eq!(
        module(Method::GET, &kept.access_token, &org).await.0,
        StatusCode::OK
    );

    // Redis stopped: Auth falls back to auth_db, the revocation holds.
    stack.platform.redis.stop();
    let p = &stack.platform;
    let (status, ready) = p.auth_call(Method::GET, "/ready", &[], None).await;
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
    let (status, refused) = module(Method::GET, &token, &org).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");
    assert_eq!(refused["message"], "session revoked or unknown");
    // A session the module has never seen is checked by Auth, without
    // Redis, and admitted.
    let fresh = p.login(&member.email).await;
    let (status, listed) = module(Method::GET, &fresh.access_token, &org).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let metrics = p.auth_metrics().await;
    assert!(
        metrics.contains(r#"kisum_events_total{event="redis",outcome="unavailable"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"kisum_events_total{event="revoked_session_use",outcome="denied"}"#),
        "{metrics}"
    );
}

/// `GET /auth/me/access` of `session` in `company`: the modules, or the status.
async fn modules_of(
    stack: &Stack,
    session: &platform::Session,
    company: &str,
) -> Result<Value, StatusCode> {
    let (status, context) = stack
        .platform
        .me_access(&session.access_token, company)
        .await;
    if status == StatusCode::OK {
        Ok(context["modules"].clone())
    } else {
        Err(status)
    }
}

#[tokio::test]
async fn memberships_grants_and_roles_change_through_admin_show_at_once_and_are_audited() {
    let stack = Stack::start("admin_directory").await;
    let admin = stack.user(&["platform-admin"]).await;
    let support = stack.user(&["support"]).await;

    // A company Core knows, registered in Auth's directory through Admin.
    let company = Uuid::new_v4();
    let slug = format!("dir-{}", &company.simple().to_string()[..12]);
    let (status, created) = stack
        .as_user(
            &admin,
            Method::PUT,
            &format!("/admin/companies/{company}"),
            Some(json!({ "slug": slug, "name": "Directory Co" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["before"], Value::Null);
    assert_eq!(created["after"]["slug"], slug.as_str());
    stack.platform.add_on(company, "finance", true).await;

    // Roles: one holding the read permission, one that defines the write.
    let role = format!("clerk-{}", &Uuid::new_v4().simple().to_string()[..8]);
    for (name, permission) in [
        (role.clone(), INVOICE_READ),
        (format!("{role}-w"), "finance.invoices.write"),
    ] {
        let (status, answer) = stack
            .as_user(
                &admin,
                Method::PUT,
                &format!("/admin/roles/{name}"),
                Some(json!({ "permissions": [permission] })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    // A permission key outside the module's catalog: Auth's 400, naming it.
    let (status, answer) = stack
        .as_user(
            &admin,
            Method::PUT,
            &format!("/admin/roles/{role}-odd"),
            Some(json!({ "permissions": [INVOICE_READ, "finance.x.y"] })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("`finance.x.y`"),
        "{answer}"
    );
    let (status, roles) = stack
        .as_user(&support, Method::GET, "/admin/roles", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(roles["roles"][&role], json!([INVOICE_READ]));

    // A user joins the company with the role: no module granted yet.
    let member = stack.platform.user().await;
    let session = stack.platform.login(&member.email).await;
    let (status, added) = stack
        .as_user(
            &admin,
            Method::POST,
            &format!("/admin/companies/{company}/memberships"),
            Some(json!({ "email": member.email, "role": role })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    let membership = added["after"]["membership"].as_str().unwrap().to_string();
    assert_eq!(modules_of(&stack, &session, &slug).await, Ok(json!({})));

    let base = format!("/admin/memberships/{membership}/grants/finance");
    let write = format!("{base}/finance.invoices.write");
    let steps: [(Method, &str, Result<Value, StatusCode>); 4] = [
        (Method::PUT, &base, Ok(json!({ "finance": [INVOICE_READ] }))),
        (
            Method::PUT,
            &write,
            Ok(json!({ "finance": [INVOICE_READ, "finance.invoices.write"] })),
        ),
        (
            Method::DELETE,
            &write,
            Ok(json!({ "finance": [INVOICE_READ] })),
        ),
        (Method::DELETE, &base, Ok(json!({}))),
    ];
    for (method, path, expected) in steps {
        let (status, answer) = stack.as_user(&admin, method.clone(), path, None).await;
        assert_eq!(status, StatusCode::OK, "{method} {path}: {answer}");
        assert_eq!(
            modules_of(&stack, &session, &slug).await,
            expected,
            "after {method} {path}"
        );
    }
    let (status, answer) = stack.as_user(&admin, Method::PUT, &base, None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["after"]["grants"], json!({ "finance": [] }));

    // Suspended: no access in that company, at once.
    let (status, answer) = stack
        .as_user(
            &admin,
            Method::PUT,
            &format!("/admin/memberships/{membership}/status"),
            Some(json!({ "active": false })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["before"]["status"], "active");
    assert_eq!(answer["after"]["status"], "suspended");
    assert_eq!(
        modules_of(&stack, &session, &slug).await,
        Err(StatusCode::FORBIDDEN)
    );

    // Support reads the memberships; refusals of Auth are passed on.
    let (status, listed) = stack
        .as_user(
            &support,
            Method::GET,
            &format!("/admin/companies/{company}/memberships"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["memberships"][0]["email"], member.email.as_str());
    let unknown = format!("/admin/memberships/{}/grants/finance", Uuid::new_v4());
    let (status, answer) = stack.as_user(&admin, Method::PUT, &unknown, None).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, answer) = stack
        .as_user(
            &admin,
            Method::POST,
            &format!("/admin/companies/{company}/memberships"),
            Some(json!({ "email": member.email, "role": "no-such-role" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, _) = stack
        .as_user(
            &admin,
            Method::PUT,
            &format!("{base}/market.listings.read"),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a permission of another module"
    );

    // Every change is audited with its before and after.
    let audit = stack.audit(&format!("membership:{membership}")).await;
    let actions: Vec<&str> = audit
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "membership.status",
            "grant.module.put",
            "grant.module.delete",
            "grant.permission.delete",
            "grant.permission.put",
            "grant.module.put",
            "membership.put",
        ]
    );
    assert!(audit.iter().all(|e| e["actor"] == admin.id.as_str()));
    assert_eq!(audit[0]["after"]["status"], "suspended");
    assert_eq!(audit[6]["before"], Value::Null);
    let company_audit = stack.audit(&format!("company:{company}")).await;
    assert_eq!(company_audit[0]["action"], "company.put");
}

#[test]
fn the_same_port_for_http_port_and_internal_port_is_refused_naming_both_once() {
    let vars = [
        ("SERVICE_NAME", "platform-admin"),
        ("KISUM_ENVIRONMENT", "test"),
    ];
    let outcome = kisum_testkit::serve_on_one_port(env!("CARGO_BIN_EXE_kisum-admin"), &vars);
    kisum_testkit::assert_refused_one_port(outcome);
}
