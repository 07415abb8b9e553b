//! Platform Core against a real PostgreSQL (kisum-testkit), over HTTP on
//! its two loopback ports, as Auth and Platform Admin call it.

use std::net::SocketAddr;
use std::process::Command;

use kisum_common::config::Vars;
use kisum_common::internal::Credential;
use kisum_common::serve::Listeners;
use kisum_core::model::{Catalog, EntitlementChange, Entitlements, History};
use kisum_core::routes::ROUTES;
use kisum_core::{Config, migrations};
use kisum_testkit::Postgres;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

const AUTH_SECRET: &str = "auth-credential-for-tests-32-bytes";
const ADMIN_SECRET: &str = "admin-credential-for-tests-32-bytes";
const KISUMCTL_SECRET: &str = "kisumctl-credential-for-tests-32-bytes";

fn vars(database_url: &str) -> Vars {
    Vars::from_pairs([
        ("SERVICE_NAME", "platform-core"),
        ("KISUM_ENVIRONMENT", "test"),
        ("HTTP_PORT", "0"),
        ("INTERNAL_PORT", "0"),
        ("CORE_DB_URL", database_url),
        ("INTERNAL_ALLOWED_CALLERS", "auth,platform-admin"),
        ("INTERNAL_CALLER_AUTH", AUTH_SECRET),
        ("INTERNAL_CALLER_PLATFORM_ADMIN", ADMIN_SECRET),
        ("INTERNAL_CALLER_KISUMCTL", KISUMCTL_SECRET),
    ])
}

async fn database(prefix: &str) -> String {
    Postgres::shared()
        .create_unique_database(prefix)
        .await
        .expect("a test database")
}

/// A running Platform Core on a migrated database of its own.
struct Core {
    public: SocketAddr,
    internal: SocketAddr,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Core {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Core {
    async fn start(prefix: &str) -> Core {
        Core::start_with(prefix, &[]).await
    }

    /// Core with `extra` variables set beside the usual ones.
    async fn start_with(prefix: &str, extra: &[(&str, &str)]) -> Core {
        let database_url = database(prefix).await;
        let mut vars = vars(&database_url);
        for (name, value) in extra {
            vars.set(*name, *value);
        }
        let config = Config::from_vars(&vars).unwrap();
        kisum_core::migrate(&config).await.unwrap();
        let loopback = "127.0.0.1:0".parse().unwrap();
        let listeners = Listeners::bind(loopback, loopback).await.unwrap();
        let (public, internal) = listeners.addresses().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            kisum_core::run(config, listeners, shutdown).await.unwrap();
        });
        Core {
            public,
            internal,
            http: reqwest::Client::new(),
            stop: Some(stop),
        }
    }

    /// A call as `caller` presenting `secret` (no credential when `None`).
    async fn call_as(
        &self,
        caller: Option<(&str, &str)>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("http://{}{path}", self.internal))
            .header("x-kisum-actor", "admin-user-1");
        if let Some((caller, secret)) = caller {
            let mut headers = reqwest::header::HeaderMap::new();
            Credential::new(caller, secret).apply(&mut headers);
            request = request.headers(headers);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(Some(("platform-admin", ADMIN_SECRET)), method, path, body)
            .await
    }

    async fn entitlements(&self, company: Uuid) -> Entitlements {
        let path = format!("/v1/companies/{company}/entitlements");
        let (status, body) = self
            .call_as(Some(("auth", AUTH_SECRET)), Method::GET, &path, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_value(body).unwrap()
    }

    async fn version(&self, company: Uuid) -> i64 {
        let path = format!("/v1/companies/{company}/entitlements/version");
        let (status, body) = self
            .call_as(Some(("auth", AUTH_SECRET)), Method::GET, &path, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["company"], company.to_string());
        body["version"].as_i64().unwrap()
    }

    async fn history(&self, company: Uuid) -> History {
        let path = format!("/v1/companies/{company}/entitlements/history");
        let (status, body) = self.admin(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_value(body).unwrap()
    }

    async fn subscribe(&self, company: Uuid, package: &str, status: &str) -> EntitlementChange {
        let path = format!("/v1/companies/{company}/subscription");
        let body = json!({ "package": package, "status": status });
        let (code, body) = self.admin(Method::PUT, &path, Some(body)).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        serde_json::from_value(body).unwrap()
    }

    async fn set_add_on(&self, company: Uuid, add_on: &str, active: bool) -> EntitlementChange {
        let path = format!("/v1/companies/{company}/add-ons/{add_on}");
        let (code, body) = self
            .admin(Method::PUT, &path, Some(json!({ "active": active })))
            .await;
        assert_eq!(code, StatusCode::OK, "{body}");
        serde_json::from_value(body).unwrap()
    }
}

fn modules(list: &[&str]) -> Vec<String> {
    list.iter().map(|m| m.to_string()).collect()
}

/// A body each route accepts, with a real company and add-on in the path.
fn concrete(method: &str, route: &str, company: Uuid) -> (Method, String, Option<Value>) {
    let path = route
        .replace("{company}", &company.to_string())
        .replace("{add_on}", "finance");
    let body = match (method, route) {
        ("PUT", r) if r.ends_with("/subscription") => {
            Some(json!({ "package": "basic-standard", "status": "active" }))
        }
        ("PUT", _) => Some(json!({ "active": true })),
        ("POST", r) if r.ends_with("/packages") => {
            Some(json!({ "key": "basic-standard", "name": "Basic Standard", "modules": ["basic"] }))
        }
        ("POST", _) => {
            Some(json!({ "key": "finance", "name": "Finance add-on", "module": "finance" }))
        }
        _ => None,
    };
    (method.parse().unwrap(), path, body)
}

#[tokio::test]
async fn every_route_requires_an_admitted_caller_with_its_own_credential() {
    let core = Core::start("core_credentials").await;
    let company = Uuid::new_v4();
    for (method, route) in ROUTES {
        let (method, path, body) = concrete(method, route, company);
        // No valid credential: 401 with the code every internal port uses.
        let refusals = [
            None,
            Some(("finance", AUTH_SECRET)),
            Some(("auth", ADMIN_SECRET)),
            Some(("auth", "")),
        ];
        for caller in refusals {
            let (status, body) = core
                .call_as(caller, method.clone(), &path, body.clone())
                .await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} as {caller:?}"
            );
            assert_eq!(
                body["error"], "internal_credential_required",
                "{method} {path}: {body}"
            );
        }
        let call = |caller| core.call_as(Some(caller), method.clone(), &path, body.clone());
        // kisumctl proves its credential but may read diagnostics only: 403.
        let (status, answer) = call(("kisumctl", KISUMCTL_SECRET)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
        assert_eq!(answer["error"], "forbidden", "{method} {path}: {answer}");
        let (status, answer) = call(("platform-admin", ADMIN_SECRET)).await;
        assert!(
            status.is_success(),
            "{method} {path} as platform-admin: {status} {answer}"
        );
        // Auth reads entitlements; only Admin may change them.
        let (status, answer) = call(("auth", AUTH_SECRET)).await;
        if method == Method::GET {
            assert!(
                status.is_success(),
                "{method} {path} as auth: {status} {answer}"
            );
        } else {
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{method} {path} as auth: {answer}"
            );
        }
        let public = core
            .http
            .request(method.clone(), format!("http://{}{path}", core.public))
            .send()
            .await
            .unwrap();
        assert_eq!(
            public.status(),
            StatusCode::NOT_FOUND,
            "{method} {path} on the public port"
        );
    }
    let diagnostics = "/internal/diagnostics";
    let (status, body) = core
        .call_as(
            Some(("kisumctl", KISUMCTL_SECRET)),
            Method::GET,
            diagnostics,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["service"], "platform-core");
    assert_eq!(body["routes"].as_object().unwrap().len(), ROUTES.len());
    let (status, body) = core.call_as(None, Method::GET, diagnostics, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "internal_credential_required");
}

#[tokio::test]
async fn the_catalog_is_seeded() {
    let core = Core::start("core_catalog").await;
    let (status, body) = core.admin(Method::GET, "/v1/catalog", None).await;
    assert_eq!(status, StatusCode::OK);
    let catalog: Catalog = serde_json::from_value(body).unwrap();
    let module_keys: Vec<String> = catalog.modules.iter().map(|m| m.key.clone()).collect();
    assert_eq!(
        module_keys,
        modules(&["ai", "basic", "finance", "market", "touring", "venue"])
    );
    let package = |key: &str| {
        catalog
            .packages
            .iter()
            .find(|p| p.key == key)
            .unwrap()
            .clone()
    };
    assert_eq!(package("basic-standard").modules, modules(&["basic"]));
    assert_eq!(
        package("basic-plus-finance").modules,
        modules(&["basic", "finance"])
    );
    let add_ons: Vec<(String, String)> = catalog
        .add_ons
        .iter()
        .map(|a| (a.key.clone(), a.module.clone()))
        .collect();
    for module in ["finance", "market", "touring", "venue", "ai"] {
        assert!(
            add_ons.contains(&(module.to_string(), module.to_string())),
            "{add_ons:?}"
        );
    }
    assert!(!add_ons.iter().any(|(_, module)| module == "basic"));
}

#[tokio::test]
async fn a_subscription_turns_the_core_app_and_its_modules_on_and_off() {
    let core = Core::start("core_subscription").await;
    let company = Uuid::new_v4();
    let unknown = core.entitlements(company).await;
    assert_eq!((unknown.version, unknown.core_app), (0, false));
    assert!(unknown.modules.is_empty());

    let on = core
        .subscribe(company, "basic-plus-finance", "active")
        .await;
    assert!(on.after.core_app);
    assert_eq!(on.after.modules, modules(&["basic", "finance"]));
    assert_eq!((on.before.version, on.after.version), (0, 1));
    assert_eq!(core.entitlements(company).await, on.after);

    let off = core
        .subscribe(company, "basic-plus-finance", "inactive")
        .await;
    assert!(!off.after.core_app);
    assert!(off.after.modules.is_empty());
    assert_eq!(off.before, on.after);

    let other_package = core.subscribe(company, "basic-standard", "active").await;
    assert!(other_package.after.core_app);
    assert_eq!(other_package.after.modules, modules(&["basic"]));
    assert_eq!(core.version(company).await, 3);
}

#[tokio::test]
async fn an_add_on_without_basic_gives_its_module_but_not_the_core_app() {
    let core = Core::start("core_add_on").await;
    let company = Uuid::new_v4();
    let market = core.set_add_on(company, "market", true).await;
    assert!(!market.after.core_app);
    assert_eq!(market.after.modules, modules(&["market"]));

    let with_basic = core.subscribe(company, "basic-standard", "active").await;
    assert!(with_basic.after.core_app);
    assert_eq!(with_basic.after.modules, modules(&["basic", "market"]));

    let basic_off = core.subscribe(company, "basic-standard", "inactive").await;
    assert!(!basic_off.after.core_app);
    assert_eq!(basic_off.after.modules, modules(&["market"]));

    let market_off = core.set_add_on(company, "market", false).await;
    assert!(market_off.after.modules.is_empty());
}

#[tokio::test]
async fn every_write_bumps_the_version_exactly_once_and_writes_history() {
    let core = Core::start("core_history").await;
    let company = Uuid::new_v4();
    let bystander = Uuid::new_v4();
    core.set_add_on(bystander, "ai", true).await;

    core.subscribe(company, "basic-standard", "active").await;
    assert_eq!(core.version(company).await, 1);
    core.set_add_on(company, "touring", true).await;
    assert_eq!(core.version(company).await, 2);
    core.set_add_on(company, "touring", false).await;
    assert_eq!(core.version(company).await, 3);

    // A catalog write bumps the companies it affects, once each.
    let (status, body) = core
        .admin(
            Method::POST,
            "/v1/catalog/packages",
            Some(json!({ "key": "basic-standard", "name": "Basic Standard", "modules": ["basic", "venue"] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["created"], false);
    assert_eq!(
        body["bumped"],
        json!([{ "company": company, "version": 4 }])
    );
    assert_eq!(core.version(company).await, 4);
    assert_eq!(
        core.version(bystander).await,
        1,
        "not subscribed: not bumped"
    );
    assert_eq!(
        core.entitlements(company).await.modules,
        modules(&["basic", "venue"])
    );

    // Rejected writes change nothing.
    let path = format!("/v1/companies/{company}/subscription");
    let (status, body) = core
        .admin(
            Method::PUT,
            &path,
            Some(json!({ "package": "nope", "status": "active" })),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_package"))
    );
    assert_eq!(core.version(company).await, 4);

    let history = core.history(company).await;
    let versions: Vec<i64> = history.history.iter().map(|h| h.version).collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    let actions: Vec<&str> = history.history.iter().map(|h| h.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "subscription.set",
            "add-on.set",
            "add-on.set",
            "catalog.package"
        ]
    );
    let first = &history.history[0];
    assert_eq!(
        (first.actor.as_str(), first.caller.as_str()),
        ("admin-user-1", "platform-admin")
    );
    assert_eq!(first.before, json!({ "core_app": false, "modules": [] }));
    assert_eq!(
        first.after,
        json!({ "core_app": true, "modules": ["basic"] })
    );
    assert_eq!(
        first.detail,
        json!({ "package": "basic-standard", "status": "active" })
    );
    assert!(first.at.ends_with('Z') && first.request_id.is_some());
    let last = &history.history[3];
    assert_eq!(
        last.after,
        json!({ "core_app": true, "modules": ["basic", "venue"] })
    );
}

#[tokio::test]
async fn catalog_writes_create_items_and_bump_only_the_companies_they_affect() {
    let core = Core::start("core_catalog_writes").await;
    let (active, inactive, add_on_user) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let package =
        json!({ "key": "touring-pack", "name": "Touring pack", "modules": ["basic", "touring"] });
    let (status, body) = core
        .admin(Method::POST, "/v1/catalog/packages", Some(package))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["bumped"], json!([]));
    core.subscribe(active, "touring-pack", "active").await;
    core.subscribe(inactive, "touring-pack", "inactive").await;

    let changed = json!({ "key": "touring-pack", "name": "Touring pack", "modules": ["basic", "market", "touring"] });
    let (status, body) = core
        .admin(Method::POST, "/v1/catalog/packages", Some(changed))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["bumped"], json!([{ "company": active, "version": 2 }]));
    assert_eq!(core.version(inactive).await, 1);

    core.set_add_on(add_on_user, "venue", true).await;
    let add_on = json!({ "key": "venue", "name": "Venue and AI", "module": "ai" });
    let (status, body) = core
        .admin(Method::POST, "/v1/catalog/add-ons", Some(add_on))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["bumped"],
        json!([{ "company": add_on_user, "version": 2 }])
    );
    assert_eq!(
        core.entitlements(add_on_user).await.modules,
        modules(&["ai"])
    );

    let new_add_on = json!({ "key": "ai-plus", "name": "AI plus", "module": "ai" });
    let (status, _) = core
        .admin(Method::POST, "/v1/catalog/add-ons", Some(new_add_on))
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let refusals = [
        (
            "/v1/catalog/add-ons",
            json!({ "key": "basic", "name": "Basic", "module": "basic" }),
            "basic_is_not_an_add_on",
        ),
        (
            "/v1/catalog/add-ons",
            json!({ "key": "x", "name": "X", "module": "nope" }),
            "unknown_module",
        ),
        (
            "/v1/catalog/packages",
            json!({ "key": "Bad Key", "name": "X", "modules": ["basic"] }),
            "invalid_request",
        ),
        (
            "/v1/catalog/packages",
            json!({ "key": "empty", "name": "X", "modules": [] }),
            "invalid_request",
        ),
        (
            "/v1/catalog/packages",
            json!({ "key": "p", "name": "X", "modules": ["basic"], "extra": 1 }),
            "invalid_request",
        ),
    ];
    for (path, body, code) in refusals {
        let (status, answer) = core.admin(Method::POST, path, Some(body.clone())).await;
        assert!(status.is_client_error(), "{body}: {status}");
        assert_eq!(answer["error"], code, "{body}: {answer}");
        assert!(answer["message"].is_string());
    }
    // An unknown module is named, with the modules the catalog has.
    let (_, answer) = core
        .admin(
            Method::POST,
            "/v1/catalog/add-ons",
            Some(json!({ "key": "x", "name": "X", "module": "nope" })),
        )
        .await;
    assert_eq!(
        answer["message"],
        "`nope` is not a module; the modules are ai, basic, finance, market, touring, venue"
    );
}

#[tokio::test]
async fn malformed_requests_get_a_json_error() {
    let core = Core::start("core_malformed").await;
    let company = Uuid::new_v4();
    let cases = [
        (
            Method::GET,
            "/v1/companies/not-a-uuid/entitlements".to_string(),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::PUT,
            format!("/v1/companies/{company}/add-ons/nope"),
            Some(json!({ "active": true })),
            StatusCode::NOT_FOUND,
            "unknown_add_on",
        ),
        (
            Method::PUT,
            format!("/v1/companies/{company}/subscription"),
            Some(json!({ "package": "basic-standard", "status": "paused" })),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::GET,
            format!("/v1/companies/{company}/entitlements/history?limit=0"),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let (got, answer) = core.admin(method.clone(), &path, body).await;
        assert_eq!(
            (got, answer["error"].as_str()),
            (status, Some(code)),
            "{method} {path}: {answer}"
        );
    }
    assert_eq!(core.version(company).await, 0);
}

#[tokio::test]
async fn concurrent_writes_do_not_lose_a_bump() {
    let core = std::sync::Arc::new(Core::start("core_concurrency").await);
    let company = Uuid::new_v4();
    const WRITES: usize = 24;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..WRITES {
        let core = core.clone();
        tasks.spawn(async move {
            match n % 4 {
                0 => {
                    core.subscribe(company, "basic-standard", "active").await;
                }
                1 => {
                    core.set_add_on(company, "finance", n % 8 == 1).await;
                }
                2 => {
                    core.set_add_on(company, "market", true).await;
                }
                _ => {
                    let package = json!({ "key": "basic-standard", "name": "Basic Standard", "modules": ["basic"] });
                    let (status, body) = core.admin(Method::POST, "/v1/catalog/packages", Some(package)).await;
                    assert_eq!(status, StatusCode::OK, "{body}");
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    // Catalog writes bump the company only once its subscription exists.
    let history = core.history(company).await.history;
    let version = core.version(company).await;
    assert_eq!(history.len() as i64, version);
    let versions: Vec<i64> = history.iter().map(|h| h.version).collect();
    assert_eq!(versions, (1..=version).collect::<Vec<_>>());
    let company_writes = history
        .iter()
        .filter(|h| !h.action.starts_with("catalog."))
        .count();
    assert_eq!(company_writes, WRITES / 4 * 3);
    // Each row's `before` is the previous row's `after`: no write saw stale state.
    for pair in history.windows(2) {
        assert_eq!(pair[1].before, pair[0].after, "version {}", pair[1].version);
    }
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let database_url = database("core_migrations").await;
    let config = Config::from_vars(&vars(&database_url)).unwrap();
    let pool = kisum_core::pool(&config).unwrap();
    assert!(matches!(
        migrations::schema_state(&pool).await.unwrap(),
        migrations::SchemaState::Pending(_)
    ));
    kisum_core::migrate(&config).await.unwrap();
    kisum_core::migrate(&config).await.unwrap();
    assert_eq!(
        migrations::schema_state(&pool).await.unwrap(),
        migrations::SchemaState::Current
    );
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied as usize, migrations::MIGRATOR.iter().count());
    let modules: i64 = sqlx::query_scalar("SELECT count(*) FROM modules")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(modules, 6);
}

#[tokio::test]
async fn serve_refuses_to_start_with_pending_migrations() {
    let database_url = database("core_pending").await;
    let config = Config::from_vars(&vars(&database_url)).unwrap();

    // The library: `run` returns the reason instead of serving.
    let loopback = "127.0.0.1:0".parse().unwrap();
    let listeners = Listeners::bind(loopback, loopback).await.unwrap();
    let error = kisum_core::run(config.clone(), listeners, std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("pending migration"), "{error}");
    assert!(error.contains("kisum-core migrate"), "{error}");

    // Readiness says the same while an older schema is in place.
    let app = kisum_core::app(config.clone()).await.unwrap();
    let listeners = Listeners::bind(loopback, loopback).await.unwrap();
    let (public, _) = listeners.addresses().unwrap();
    let stop = kisum_common::serve::spawn_app(app, listeners);
    let ready = reqwest::get(format!("http://{public}/ready"))
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "ok");
    assert!(
        body["checks"]["migrations"]
            .as_str()
            .unwrap()
            .contains("pending")
    );

    // The binary: `serve` exits non-zero naming the fix; `migrate` applies.
    let binary = |command: &str| {
        let mut process = Command::new(env!("CARGO_BIN_EXE_kisum-core"));
        process.arg(command).env_clear();
        for (name, value) in [
            ("SERVICE_NAME", "platform-core"),
            ("KISUM_ENVIRONMENT", "test"),
            ("HTTP_PORT", "0"),
            ("INTERNAL_PORT", "0"),
            ("CORE_DB_URL", database_url.as_str()),
            ("INTERNAL_ALLOWED_CALLERS", "auth,platform-admin"),
            ("INTERNAL_CALLER_AUTH", AUTH_SECRET),
            ("INTERNAL_CALLER_PLATFORM_ADMIN", ADMIN_SECRET),
            ("LOG_LEVEL", "warn"),
        ] {
            process.env(name, value);
        }
        process.output().unwrap()
    };
    let refused = binary("serve");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("pending migration"), "{stderr}");
    assert!(!stderr.contains(AUTH_SECRET) && !stderr.contains(ADMIN_SECRET));
    let migrated = binary("migrate");
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );

    let ready = reqwest::get(format!("http://{public}/ready"))
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let _ = stop.send(());
}

#[tokio::test]
async fn ready_answers_503_in_time_when_the_database_is_refused_or_frozen() {
    let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    // A port nothing listens on (the pool retries it until its acquire
    // timeout) and one that accepts and never answers (a stopped server).
    let closed = std::net::TcpListener::bind(loopback).unwrap();
    let refused = closed.local_addr().unwrap().port();
    drop(closed);
    let frozen = tokio::net::TcpListener::bind(loopback).await.unwrap();
    let silent = frozen.local_addr().unwrap().port();
    for port in [refused, silent] {
        let url = format!("postgres://core:pw@127.0.0.1:{port}/platform_core_db");
        let config = Config::from_vars(&vars(&url)).unwrap();
        let app = kisum_core::app(config).await.unwrap();
        let listeners = Listeners::bind(loopback, loopback).await.unwrap();
        let (public, _) = listeners.addresses().unwrap();
        let stop = kisum_common::serve::spawn_app(app, listeners);
        let started = std::time::Instant::now();
        let ready = reqwest::get(format!("http://{public}/ready"))
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            took < std::time::Duration::from_secs(3),
            "port {port}: {took:?}"
        );
        let body: Value = ready.json().await.unwrap();
        assert_ne!(body["checks"]["database"], "ok", "{body}");
        assert_ne!(body["checks"]["migrations"], "ok", "{body}");
        let _ = stop.send(());
    }
    drop(frozen);
}

#[tokio::test]
async fn metrics_count_version_bumps_and_catalog_mutations() {
    let core = Core::start("core_metrics").await;
    let company = Uuid::new_v4();
    core.subscribe(company, "basic-standard", "active").await;
    core.entitlements(company).await;
    let package =
        json!({ "key": "basic-standard", "name": "Basic Standard", "modules": ["basic"] });
    core.admin(Method::POST, "/v1/catalog/packages", Some(package))
        .await;
    let metrics = reqwest::get(format!("http://{}/metrics", core.internal))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"kisum_events_total{event="entitlement_version_bump",outcome="subscription.set"} 1"#,
        r#"kisum_events_total{event="entitlement_version_bump",outcome="catalog.package"} 1"#,
        r#"kisum_events_total{event="catalog_mutation",outcome="package"} 1"#,
        r#"kisum_events_total{event="subscription_change",outcome="ok"} 1"#,
        "kisum_entitlement_lookup_duration_seconds_count 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_disconnected_on_both_ports() {
    let core = Core::start_with("core_slow", &[("HEADER_READ_TIMEOUT_SECONDS", "1")]).await;
    for port in [core.public, core.internal] {
        let started = std::time::Instant::now();
        let closed = kisum_testkit::trickle_headers(port, std::time::Duration::from_secs(10)).await;
        assert!(closed, "{port}: still open after 10 s of trickled headers");
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_secs(4),
            "{port}: closed after {took:?}"
        );
    }
    // A prompt client is served as before.
    let health = reqwest::get(format!("http://{}/health", core.public))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn metrics_enabled_false_removes_the_metrics_route() {
    let core = Core::start_with("core_nometrics", &[("METRICS_ENABLED", "false")]).await;
    let metrics = reqwest::get(format!("http://{}/metrics", core.internal))
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::NOT_FOUND);
    // The rest of the internal port is unchanged.
    let (status, _) = core
        .call_as(
            Some(("kisumctl", KISUMCTL_SECRET)),
            Method::GET,
            "/internal/diagnostics",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn log_format_chooses_json_or_text_lines_and_refuses_anything_else() {
    let database_url = database("core_logformat").await;
    let migrate = |format: &str| {
        let mut process = Command::new(env!("CARGO_BIN_EXE_kisum-core"));
        process.arg("migrate").env_clear();
        for (name, value) in [
            ("SERVICE_NAME", "platform-core"),
            ("KISUM_ENVIRONMENT", "test"),
            ("HTTP_PORT", "0"),
            ("INTERNAL_PORT", "0"),
            ("CORE_DB_URL", database_url.as_str()),
            ("INTERNAL_ALLOWED_CALLERS", "auth"),
            ("INTERNAL_CALLER_AUTH", AUTH_SECRET),
            ("LOG_LEVEL", "info"),
            ("LOG_FORMAT", format),
        ] {
            process.env(name, value);
        }
        let output = process.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), stderr)
    };
    let (ok, json) = migrate("json");
    assert!(ok, "{json}");
    let line = json.lines().find(|l| l.contains("up to date")).unwrap();
    let parsed: Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(parsed["fields"]["event"], "migrations_applied");

    let (ok, text) = migrate("text");
    assert!(ok, "{text}");
    let line = text.lines().find(|l| l.contains("up to date")).unwrap();
    assert!(serde_json::from_str::<Value>(line).is_err(), "{line}");
    assert!(
        line.contains("INFO") && line.contains("event=\"migrations_applied\""),
        "{line}"
    );

    let (ok, refused) = migrate("xml");
    assert!(!ok);
    assert!(refused.contains("LOG_FORMAT is invalid"), "{refused}");
}

#[tokio::test]
async fn an_actor_longer_than_256_characters_is_refused_and_nothing_changes() {
    let core = Core::start("core_actor").await;
    let company = Uuid::new_v4();
    let path = format!("/v1/companies/{company}/add-ons/finance");
    let put = |actor: String| {
        let mut headers = reqwest::header::HeaderMap::new();
        Credential::new("platform-admin", ADMIN_SECRET).apply(&mut headers);
        core.http
            .put(format!("http://{}{path}", core.internal))
            .headers(headers)
            .header("x-kisum-actor", actor)
            .json(&json!({ "active": true }))
            .send()
    };
    let refused = put("a".repeat(257)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("1 to 256"),
        "{body}"
    );
    assert!(core.history(company).await.history.is_empty());
    let longest = "a".repeat(256);
    let accepted = put(longest.clone()).await.unwrap();
    assert_eq!(accepted.status(), StatusCode::OK);
    let history = core.history(company).await;
    assert_eq!(history.history.len(), 1);
    assert_eq!(history.history[0].actor, longest);
}

#[test]
fn the_same_port_for_http_port_and_internal_port_is_refused_naming_both_once() {
    let vars = [
        ("SERVICE_NAME", "platform-core"),
        ("KISUM_ENVIRONMENT", "test"),
    ];
    let outcome = kisum_testkit::serve_on_one_port(env!("CARGO_BIN_EXE_kisum-core"), &vars);
    kisum_testkit::assert_refused_one_port(outcome);
}
