//! The module backends end to end: the real `kisum_module::run` on
//! loopback ports, real PostgreSQL and the mongoeco MongoDB emulator from
//! `kisum-testkit`, and the real Auth and Platform Core (`platform/`):
//! tokens come from Auth's login, keys from Auth's JWKS, access contexts
//! from Auth's internal route, computed from auth_db (written with
//! `kisum_auth::directory`) and Core's entitlements.

mod platform;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kisum_auth::directory;
use kisum_common::jwt::TokenPolicy;
use kisum_common::keys::KeySet;
use kisum_module::{Config, Module};
use kisum_testkit::{Mongo, Postgres, Redis};
use platform::{AUDIENCE, ISSUER, KISUMCTL_SECRET, Platform, body, now};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::{OnceCell, oneshot};
use uuid::Uuid;

/// One module backend running on loopback ports against the real Auth.
struct Backend {
    public: SocketAddr,
    internal: SocketAddr,
    http: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

impl Backend {
    /// Migrates the database, starts the backend against the platform's
    /// Auth and waits until it is ready.
    async fn start(
        platform: &Platform,
        module: Module,
        database_url: &str,
        settings: &[(&str, &str)],
    ) -> Backend {
        let mut vars = platform::module_vars(module, platform, database_url);
        for (name, value) in settings {
            vars.set(*name, *value);
        }
        let config = Config::from_vars(&vars).unwrap();
        kisum_module::migrate(module, database_url).await.unwrap();
        let listeners = platform::loopback_listeners().await;
        let (public, internal) = listeners.addresses().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(kisum_module::run(config, listeners, async {
            let _ = stopped.await;
        }));
        let backend = Backend {
            public,
            internal,
            http: reqwest::Client::new(),
            _stop: stop,
        };
        backend.wait_ready().await;
        backend
    }

    /// A finance backend on a database of its own.
    async fn finance(platform: &Platform, settings: &[(&str, &str)]) -> Backend {
        let database = finance_database().await;
        Backend::start(platform, Module::Finance, &database, settings).await
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = self.http.get(self.url("/ready")).send().await;
            if ready.is_ok_and(|r| r.status() == StatusCode::OK) {
                return;
            }
            assert!(Instant::now() < deadline, "the backend never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    fn internal_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.internal)
    }

    fn get(&self, path: &str, token: &str, org: Option<&str>) -> reqwest::RequestBuilder {
        let request = self.http.get(self.url(path)).bearer_auth(token);
        match org {
            Some(org) => request.header("x-org", org),
            None => request,
        }
    }

    fn post(&self, path: &str, token: &str, org: &str, body: Value) -> reqwest::RequestBuilder {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .header("x-org", org)
            .json(&body)
    }

    /// An internal route, called as kisumctl.
    fn internal(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.internal_url(path))
            .header("x-kisum-caller", "kisumctl")
            .header("x-kisum-credential", KISUMCTL_SECRET)
    }

    /// An internal route's status and JSON answer, called as kisumctl.
    async fn internal_answer(&self, method: reqwest::Method, path: &str) -> (StatusCode, Value) {
        body(self.internal(method, path).send().await.unwrap()).await
    }

    async fn metrics(&self) -> String {
        let response = self
            .http
            .get(self.internal_url("/metrics"))
            .send()
            .await
            .unwrap();
        response.text().await.unwrap()
    }
}

/// A user signed in to Auth with a membership in a company of their own.
struct Member {
    user: String,
    session: String,
    email: String,
    company: Uuid,
    token: String,
}

impl Member {
    fn org(&self) -> String {
        self.company.to_string()
    }
}

/// A new company, and a user who is a member of it with a role holding
/// `permissions` and a grant for `module`, signed in. With `None` the
/// company is not entitled to the module in Core (the user's role and
/// grant would allow its read permission): Auth leaves the module out.
async fn new_member(platform: &Platform, module: Module, permissions: Option<&[&str]>) -> Member {
    let company = platform.company(module.name()).await;
    let read = format!("{module}.{}.read", module.resource());
    let role = platform.role(permissions.unwrap_or(&[read.as_str()])).await;
    let user = platform.user().await;
    platform
        .membership(user.id, company.id, &role, &[module.name()])
        .await;
    if permissions.is_some() {
        platform.entitle(company.id, module.name()).await;
    }
    let session = platform.login(&user.email).await;
    assert_eq!(session.user, user.id.to_string());
    Member {
        user: session.user,
        session: session.session,
        email: user.email,
        company: company.id,
        token: session.access_token,
    }
}

async fn finance_database() -> String {
    Postgres::shared()
        .create_unique_database("finance")
        .await
        .unwrap()
}

/// One emulator for the whole test binary (it exits with the process);
/// every test uses a database of its own in it.
async fn mongo_url(database: &str) -> String {
    static MONGO: OnceCell<Mongo> = OnceCell::const_new();
    let mongo = MONGO
        .get_or_init(|| async { Mongo::start().await.unwrap() })
        .await;
    let unique = format!("{database}_{}", Uuid::new_v4().simple());
    mongo.url().replacen("/?", &format!("/{unique}?"), 1)
}

const INVOICE_READ: &str = "finance.invoices.read";
const INVOICE_WRITE: &str = "finance.invoices.write";
const ACCESS_CONTEXT_ROUTE: &str = "/internal/access-context";

fn invoice(number: &str) -> Value {
    json!({"number": number, "customer": "Ada Music", "amount_cents": 125_000, "currency": "EUR"})
}

fn assert_error(outcome: &(StatusCode, Value), status: StatusCode, message: &str) {
    assert_eq!(outcome.0, status, "{}", outcome.1);
    assert_eq!(outcome.1["message"], message, "{}", outcome.1);
}

#[tokio::test]
async fn an_entitled_member_creates_lists_and_reads_invoices_on_postgres() {
    let platform = Platform::start().await;
    let backend = Backend::start(&platform, Module::Finance, &finance_database().await, &[]).await;
    let member = new_member(
        &platform,
        Module::Finance,
        Some(&[INVOICE_READ, INVOICE_WRITE]),
    )
    .await;
    let token = &member.token;

    let created = body(
        backend
            .post("/v1/invoices", token, &member.org(), invoice("INV-1"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(created.0, StatusCode::CREATED, "{}", created.1);
    assert_eq!(created.1["company"], member.org());
    assert_eq!(created.1["status"], "draft");

    let listed = body(
        backend
            .get("/v1/invoices", token, Some(&member.org()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed.0, StatusCode::OK);
    assert_eq!(listed.1["items"].as_array().unwrap().len(), 1);

    let id = created.1["id"].as_str().unwrap();
    let one = body(
        backend
            .get(&format!("/v1/invoices/{id}"), token, Some(&member.org()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((one.0, &one.1["number"]), (StatusCode::OK, &json!("INV-1")));

    let again = backend
        .post("/v1/invoices", token, &member.org(), invoice("INV-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn the_access_context_is_fetched_with_the_credential_and_trace_and_cached() {
    let platform = Platform::start().await;
    let backend = Backend::start(&platform, Module::Finance, &finance_database().await, &[]).await;
    let member = new_member(&platform, Module::Finance, Some(&[INVOICE_READ])).await;
    let request_id = format!("req-module-{}", Uuid::new_v4());
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    for _ in 0..3 {
        let response = backend
            .get("/v1/invoices", &member.token, Some(&member.org()))
            .header("x-request-id", &request_id)
            .header("traceparent", traceparent)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    // Auth answered one access-context call (its own request counter),
    // admitting the module's credential: cached within ACCESS_CACHE_SECONDS.
    assert_eq!(
        platform.auth_requests(ACCESS_CONTEXT_ROUTE).await,
        1,
        "cached within ACCESS_CACHE_SECONDS"
    );
    // Auth logged that call under the client's request id and trace.
    let logged = platform::auth_request_log(ACCESS_CONTEXT_ROUTE, &request_id)
        .expect("Auth logged the access-context call under the request id");
    assert_eq!(logged["status"], 200, "{logged}");
    assert_eq!(logged["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    let metrics = backend.metrics().await;
    assert!(
        metrics.contains("kisum_access_context_fetch_duration_seconds_count 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_company_without_the_module_is_denied_by_module() {
    let platform = Platform::start().await;
    let backend = Backend::start(&platform, Module::Finance, &finance_database().await, &[]).await;
    let member = new_member(&platform, Module::Finance, None).await;

    let outcome = body(
        backend
            .get("/v1/invoices", &member.token, Some(&member.org()))
            .send()
            .await
            .unwrap(),
    )
    .await;

    assert_error(&outcome, StatusCode::FORBIDDEN, "access denied by module");
    assert_eq!(outcome.1["error"], "forbidden");
    let metrics = backend.metrics().await;
    assert!(
        metrics
            .contains(r#"kisum_events_total{event="access_denied_by_module",outcome="finance"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_member_without_the_permission_is_denied_by_permission() {
    let platform = Platform::start().await;
    let backend = Backend::start(&platform, Module::Finance, &finance_database().await, &[]).await;
    let member = new_member(&platform, Module::Finance, Some(&[INVOICE_READ])).await;
    let token = &member.token;

    let read = backend
        .get("/v1/invoices", token, Some(&member.org()))
        .send()
        .await
        .unwrap();
    let write = body(
        backend
            .post("/v1/invoices", token, &member.org(), invoice("INV-9"))
            .send()
            .await
            .unwrap(),
    )
    .await;

    assert_eq!(read.status(), StatusCode::OK);
    assert_error(&write, StatusCode::FORBIDDEN, "access denied by permission");
    let metrics = backend.metrics().await;
    let counter = r#"kisum_events_total{event="access_denied_by_permission",outcome="finance.invoices.write"} 1"#;
    assert!(metrics.contains(counter), "{metrics}");
}

#[tokio::test]
async fn x_org_is_read_as_auth_reads_it_urn_and_upper_case_ids_included() {
    let platform = Platform::start().await;
    let backend = Backend::start(&platform, Module::Finance, &finance_database().await, &[]).await;
    let member = new_member(&platform, Module::Finance, Some(&[INVOICE_READ])).await;
    let id = member.company.to_string();
    let slug: String = sqlx::query_scalar("select slug from companies where id = $1")
        .bind(member.company)
        .fetch_one(&platform.db)
        .await
        .unwrap();
    let forms = [
        id.clone(),
        id.to_uppercase(),
        format!("urn:uuid:{id}"),
        format!("URN:UUID:{}", id.to_uppercase()),
        // Slugs are case-insensitive.
        slug.to_uppercase(),
        slug,
    ];
    for org in forms {
        // The module backend and Auth's own route agree on every form.
        let outcome = body(
            backend
                .get("/v1/invoices", &member.token, Some(&org))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(outcome.0, StatusCode::OK, "{org}: {}", outcome.1);
        let (status, context) = platform.me_access(&member.token, &org).await;
        assert_eq!(status, StatusCode::OK, "{org}: {context}");
        assert_eq!(context["company"], id.as_str());
    }
    for org in ["urn:uuid:not-an-id", "acme/../x"] {
        let outcome = body(
            backend
                .get("/v1/invoices", &member.token, Some(org))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(outcome.0, StatusCode::BAD_REQUEST, "{org}");
        assert_eq!(outcome.1["error"], "invalid_request", "{org}");
        let (status, answer) = platform.me_access(&member.token, org).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{org}: malformed for Auth too"
        );
        assert_eq!(answer["error"], "invalid_request", "{org}: the same code");
    }
}

/// A status of `GET /v1/invoices` as `member`, in `org`.
async fn list_status(backend: &Backend, member: &Member, org: &str) -> StatusCode {
    backend
        .get("/v1/invoices", &member.token, Some(org))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_moved_slug_stops_naming_the_company_at_once() {
    let platform = Platform::start().await;
    // A cache far longer than the test: only keying by company id (and
    // asking Auth for every slug) makes the move visible.
    let settings = [("ACCESS_CACHE_SECONDS", "60")];
    let backend = Backend::finance(&platform, &settings).await;
    let member = new_member(&platform, Module::Finance, Some(&[INVOICE_READ])).await;
    let old: String = sqlx::query_scalar("select slug from companies where id = $1")
        .bind(member.company)
        .fetch_one(&platform.db)
        .await
        .unwrap();
    for org in [old.as_str(), &member.org(), old.as_str()] {
        assert_eq!(
            list_status(&backend, &member, org).await,
            StatusCode::OK,
            "{org}"
        );
    }

    // The company takes a new slug, as Admin renames it through Auth.
    let new = format!("{old}-moved");
    let (status, answer) = platform
        .auth_internal_call(
            reqwest::Method::PUT,
            &format!("/internal/companies/{}", member.company),
            Some(json!({ "slug": new, "name": "Moved" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        list_status(&backend, &member, &old).await,
        StatusCode::FORBIDDEN,
        "the old slug names no company any more"
    );
    assert_eq!(list_status(&backend, &member, &new).await, StatusCode::OK);
    // The id still answers from the cache.
    assert_eq!(
        list_status(&backend, &member, &member.org()).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_grant_right_after_a_denial_is_seen_at_once() {
    let platform = Platform::start().await;
    let settings = [("ACCESS_CACHE_SECONDS", "60")];
    let backend = Backend::finance(&platform, &settings).await;
    // Entitled to finance, a member whose role reads invoices, but no
    // module granted: the context holds no module at all.
    let company = platform.company("grant").await;
    platform.entitle(company.id, "finance").await;
    let reader = platform.role(&[INVOICE_READ]).await;
    let writer = platform.role(&[INVOICE_READ, INVOICE_WRITE]).await;
    let user = platform.user().await;
    let membership = platform.membership(user.id, company.id, &reader, &[]).await;
    let session = platform.login(&user.email).await;
    let member = Member {
        user: session.user,
        session: session.session,
        email: user.email,
        company: company.id,
        token: session.access_token,
    };
    let org = member.org();
    let (status, context) = platform.me_access(&member.token, &org).await;
    assert_eq!((status, &context["modules"]), (StatusCode::OK, &json!({})));
    assert_eq!(
        list_status(&backend, &member, &org).await,
        StatusCode::FORBIDDEN
    );

    // The module is granted: the very next request is let in.
    let directory = platform.directory();
    directory::grant_module(&directory, membership, "finance")
        .await
        .unwrap();
    assert_eq!(list_status(&backend, &member, &org).await, StatusCode::OK);

    // The read left a context in the cache; a write is denied, then let
    // in right after the role gains the permission.
    let write = || async {
        backend
            .post("/v1/invoices", &member.token, &org, invoice("INV-G"))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(write().await, StatusCode::FORBIDDEN);
    directory::add_membership(&directory, user.id, company.id, &writer)
        .await
        .unwrap();
    assert_eq!(write().await, StatusCode::CREATED);
}

#[tokio::test]
async fn an_x_org_of_another_company_is_forbidden() {
    let platform = Platform::start().await;
    let backend = Backend::start(&platform, Module::Finance, &finance_database().await, &[]).await;
    let member = new_member(&platform, Module::Finance, Some(&[INVOICE_READ])).await;
    // A real company, entitled to finance, with members of its own; and a
    // company id nobody registered.
    let neighbour = new_member(&platform, Module::Finance, Some(&[INVOICE_READ])).await;
    let unknown = Uuid::new_v4().to_string();

    for org in [neighbour.org(), unknown] {
        let outcome = body(
            backend
                .get("/v1/invoices", &member.token, Some(&org))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_error(
            &outcome,
            StatusCode::FORBIDDEN,
            "no membership in that company",
        );
    }
    let metrics = backend.metrics().await;
    assert!(
        metrics.contains(
            r#"kisum_events_total{event="x_org_resolution_failure",outcome="forbidden"} 2"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_request_without_x_org_is_refused() {
    let platform = Platform::start().await;
    let backend = Backend::start(&platform, Module::Finance, &finance_database().await, &[]).await;
    let member = new_member(&platform, Module::Finance, Some(&[INVOICE_READ])).await;

    let outcome = body(
        backend
            .get("/v1/invoices", &member.token, None)
            .send()
            .await
            .unwrap(),
    )
    .await;

    assert_error(&outcome, StatusCode::BAD_REQUEST, "x-org required");
    assert_eq!(platform.auth_requests(ACCESS_CONTEXT_ROUTE).await, 0);
}

/// Tokens an attacker could present, each with what makes it invalid. The
/// ones signed with Auth's own key (wrong issuer, audience, expired) prove
/// the module checks more than the signature.
fn forged_tokens(platform: &Platform, member: &Member) -> Vec<(&'static str, String)> {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let now = now();
    let keys = platform.keys();
    let kid = keys.active().kid.clone();
    let claims = json!({"sub": member.user, "sid": member.session, "iss": ISSUER,
        "aud": AUDIENCE, "exp": now + 900, "iat": now, "nbf": now});

    let none_header = json!({"alg": "none", "typ": "JWT", "kid": kid});
    let alg_none = format!(
        "{}.{}.",
        b64(none_header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );

    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some(kid.clone());
    let public_pem = public_key_pem(&keys);
    let hs256 = jsonwebtoken::encode(
        &hs_header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(public_pem.as_bytes()).unwrap(),
    )
    .unwrap();

    let policy = platform::policy();
    let sign = |policy: &TokenPolicy, at: i64| {
        policy
            .sign(&keys, &member.user, &member.session, at, 900)
            .unwrap()
    };
    let wrong_issuer = TokenPolicy {
        issuer: "https://evil.test".into(),
        ..policy.clone()
    };
    let wrong_audience = TokenPolicy {
        audience: "another-api".into(),
        ..policy.clone()
    };
    let stranger = KeySet::generate(now).unwrap();
    // Auth's own token for this session, with its payload rewritten.
    let mut tampered: Vec<String> = member.token.split('.').map(str::to_string).collect();
    let mut raised = claims.clone();
    raised["sub"] = json!(Uuid::new_v4().to_string());
    tampered[1] = b64(raised.to_string().as_bytes());

    vec![
        ("alg none", alg_none),
        ("HS256 keyed with the public key", hs256),
        ("expired", sign(&policy, now - 1000)),
        ("wrong issuer", sign(&wrong_issuer, now)),
        ("wrong audience", sign(&wrong_audience, now)),
        (
            "unknown kid",
            policy
                .sign(&stranger, &member.user, &member.session, now, 900)
                .unwrap(),
        ),
        ("tampered payload", tampered.join(".")),
        ("not a JWT", "not-a-token".into()),
    ]
}

/// The active key's public half as PEM: what an attacker would use as an
/// HMAC secret.
fn public_key_pem(keys: &KeySet) -> String {
    use aws_lc_rs::signature::KeyPair as _;
    use base64::Engine as _;
    let pem = &keys.active().private_key_pem;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(&der).unwrap();
    let public = base64::engine::general_purpose::STANDARD.encode(pair.public_key().as_ref());
    format!("-----BEGIN RSA PUBLIC KEY-----\n{public}\n-----END RSA PUBLIC KEY-----\n")
}

#[tokio::test]
async fn invalid_tokens_are_refused_before_auth_is_asked() {
    let platform = Platform::start().await;
    let backend = Backend::start(&platform, Module::Finance, &finance_database().await, &[]).await;
    let member = new_member(&platform, Module::Finance, Some(&[INVOICE_READ])).await;

    for (what, token) in forged_tokens(&platform, &member) {
        let outcome = body(
            backend
                .get("/v1/invoices", &token, Some(&member.org()))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(outcome.0, StatusCode::UNAUTHORIZED, "{what}: {}", outcome.1);
        assert_eq!(outcome.1["error"], "unauthorized", "{what}");
    }
    let unauthenticated = backend
        .http
        .get(backend.url("/v1/invoices"))
        .header("x-org", member.org())
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unauthenticated.headers()["www-authenticate"], "Bearer");

    assert_eq!(platform.auth_requests(ACCESS_CONTEXT_ROUTE).await, 0);
    let metrics = backend.metrics().await;
    assert!(
        metrics.contains(r#"event="auth_verification_failure",outcome="unknown_kid""#),
        "{metrics}"
    );
    // The genuine token still works: the refusals were the forgeries'.
    let genuine = backend
        .get("/v1/invoices", &member.token, Some(&member.org()))
        .send()
        .await
        .unwrap();
    assert_eq!(genuine.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_revoked_session_is_refused_once_its_cached_context_expires() {
    let settings = [("ACCESS_CACHE_SECONDS", "1")];
    let platform = Platform::start().await;
    let backend = Backend::finance(&platform, &settings).await;
    let member = new_member(&platform, Module::Finance, Some(&[INVOICE_READ])).await;
    let list = || {
        backend
            .get("/v1/invoices", &member.token, Some(&member.org()))
            .send()
    };
    assert_eq!(list().await.unwrap().status(), StatusCode::OK);

    platform.logout(&member.token).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let outcome = body(list().await.unwrap()).await;

    assert_error(
        &outcome,
        StatusCode::UNAUTHORIZED,
        "session revoked or unknown",
    );
}

/// A token naming a random kid (its signature is never checked: the kid
/// is unknown).
fn unknown_kid_token(member: &Member) -> String {
    use base64::Engine as _;
    let b64 = |value: Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string().as_bytes())
    };
    let now = now();
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": Uuid::new_v4().simple().to_string()});
    let claims = json!({"sub": member.user, "sid": member.session, "iss": ISSUER,
        "aud": AUDIENCE, "exp": now + 900, "iat": now, "nbf": now});
    format!("{}.{}.c2lnbmF0dXJl", b64(header), b64(claims))
}

#[tokio::test]
async fn a_new_kid_is_fetched_on_first_use_but_unknown_kids_are_rate_limited() {
    let settings = [("JWKS_MIN_REFETCH_SECONDS", "2")];
    let platform = Platform::start().await;
    let backend = Backend::start(
        &platform,
        Module::Finance,
        &finance_database().await,
        &settings,
    )
    .await;
    let member = new_member(&platform, Module::Finance, Some(&[INVOICE_READ])).await;
    assert_eq!(platform.jwks_fetches().await, 1, "the first load at start");

    // Auth rotates its keys after the backend started; a token it signs
    // with the new key triggers one fetch on first use.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let new_kid = platform.rotate_keys().await;
    let rotated = platform.login(&member.email).await.access_token;
    assert_eq!(TokenPolicy::kid_of(&rotated).unwrap(), new_kid);
    let response = backend
        .get("/v1/invoices", &rotated, Some(&member.org()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(platform.jwks_fetches().await, 2);

    // A flood of kids nobody published, at once: at most one more fetch
    // per interval, however many requests.
    let started = Instant::now();
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let request = backend.get(
            "/v1/invoices",
            &unknown_kid_token(&member),
            Some(&member.org()),
        );
        flood.spawn(async move { request.send().await.unwrap().status() });
    }
    while let Some(status) = flood.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::UNAUTHORIZED);
    }
    let allowed = 1 + started.elapsed().as_secs() / 2;
    let flood_fetches = platform.jwks_fetches().await - 2;
    assert!(
        flood_fetches <= allowed,
        "{flood_fetches} fetches for the flood, at most {allowed} allowed"
    );
}

#[tokio::test]
async fn a_key_reload_bypasses_the_minimum_interval() {
    let platform = Platform::start().await;
    let backend = Backend::start(&platform, Module::Finance, &finance_database().await, &[]).await;
    let member = new_member(&platform, Module::Finance, Some(&[INVOICE_READ])).await;
    let new_kid = platform.rotate_keys().await;
    let rotated = platform.login(&member.email).await.access_token;
    assert_eq!(TokenPolicy::kid_of(&rotated).unwrap(), new_kid);
    let list = || {
        backend
            .get("/v1/invoices", &rotated, Some(&member.org()))
            .send()
    };

    // Within the 60 s interval since the start, the new kid stays unknown.
    assert_eq!(list().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(platform.jwks_fetches().await, 1);

    let anonymous = backend
        .http
        .post(backend.internal_url("/internal/keys/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let reloaded = backend
        .internal_answer(reqwest::Method::POST, "/internal/keys/reload")
        .await;
    assert_eq!(reloaded.0, StatusCode::OK);
    assert!(
        reloaded.1["kids"]
            .as_array()
            .unwrap()
            .contains(&json!(new_kid))
    );
    assert_eq!(platform.jwks_fetches().await, 2);
    assert_eq!(list().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn an_idle_backend_reports_a_new_kid_within_its_cache_lifetime() {
    // What kisumctl's key rotation waits on: no request reaches the
    // backend, yet once its cache has aged its diagnostics show the key
    // Auth published since, fetched as a request would fetch it.
    let settings = [
        ("JWKS_CACHE_SECONDS", "1"),
        ("JWKS_MIN_REFETCH_SECONDS", "1"),
    ];
    let platform = Platform::start().await;
    let backend = Backend::finance(&platform, &settings).await;
    let kids = || async {
        let (status, report) = backend
            .internal_answer(reqwest::Method::GET, "/internal/diagnostics")
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(report["instance"].is_string(), "{report}");
        assert!(report.get("signing_kid").is_none(), "{report}");
        report["kids"].clone()
    };
    let first = kids().await;
    let new_kid = platform.rotate_keys().await;
    let seen = platform::eventually(Duration::from_secs(10), || async {
        kids().await.as_array().unwrap().contains(&json!(new_kid))
    })
    .await;
    assert!(seen, "the backend still reports {first} only");
    assert_eq!(
        platform.jwks_fetches().await,
        2,
        "one fetch at start, one after"
    );
}

#[tokio::test]
async fn a_company_never_sees_another_companys_invoices() {
    let platform = Platform::start().await;
    let backend = Backend::start(&platform, Module::Finance, &finance_database().await, &[]).await;
    let both: &[&str] = &[INVOICE_READ, INVOICE_WRITE];
    let acme = new_member(&platform, Module::Finance, Some(both)).await;
    let globex = new_member(&platform, Module::Finance, Some(both)).await;
    let (acme_token, globex_token) = (&acme.token, &globex.token);
    let created = body(
        backend
            .post("/v1/invoices", acme_token, &acme.org(), invoice("INV-1"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = created.1["id"].as_str().unwrap().to_string();
    // The same number in another company is another invoice.
    let same_number = backend
        .post(
            "/v1/invoices",
            globex_token,
            &globex.org(),
            invoice("INV-1"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(same_number.status(), StatusCode::CREATED);

    let globex_list = body(
        backend
            .get("/v1/invoices", globex_token, Some(&globex.org()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let acme_invoice_from_globex = backend
        .get(
            &format!("/v1/invoices/{id}"),
            globex_token,
            Some(&globex.org()),
        )
        .send()
        .await
        .unwrap();
    let acme_x_org_with_globex_token = backend
        .get("/v1/invoices", globex_token, Some(&acme.org()))
        .send()
        .await
        .unwrap();

    let items = globex_list.1["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["company"], globex.org());
    assert_ne!(items[0]["id"], json!(id));
    assert_eq!(acme_invoice_from_globex.status(), StatusCode::NOT_FOUND);
    assert_eq!(acme_x_org_with_globex_token.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn contacts_round_trip_through_mongodb_with_a_limit_and_per_company() {
    let platform = Platform::start().await;
    let backend = Backend::start(&platform, Module::Basic, &mongo_url("basic").await, &[]).await;
    let permissions: &[&str] = &["basic.contacts.read", "basic.contacts.write"];
    let member = new_member(&platform, Module::Basic, Some(permissions)).await;
    let outsider = new_member(&platform, Module::Basic, Some(permissions)).await;
    let token = &member.token;

    let mut first_id = String::new();
    for n in 0..200 {
        let contact = json!({"name": format!("Contact {n}"), "email": format!("c{n}@example.org")});
        let created = body(
            backend
                .post("/v1/contacts", token, &member.org(), contact)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(created.0, StatusCode::CREATED, "{}", created.1);
        if n == 0 {
            first_id = created.1["id"].as_str().unwrap().to_string();
        }
    }

    let page = body(
        backend
            .get("/v1/contacts?limit=50", token, Some(&member.org()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let all = body(
        backend
            .get("/v1/contacts?limit=200", token, Some(&member.org()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let too_many = backend
        .get("/v1/contacts?limit=201", token, Some(&member.org()))
        .send()
        .await
        .unwrap();
    let first = body(
        backend
            .get(
                &format!("/v1/contacts/{first_id}"),
                token,
                Some(&member.org()),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    let outsider_token = &outsider.token;
    let outsider_list = body(
        backend
            .get("/v1/contacts", outsider_token, Some(&outsider.org()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let outsider_lookup = backend
        .get(
            &format!("/v1/contacts/{first_id}"),
            outsider_token,
            Some(&outsider.org()),
        )
        .send()
        .await
        .unwrap();

    let page = page.1["items"].as_array().unwrap().clone();
    assert_eq!(page.len(), 50);
    assert_eq!(page[0]["name"], "Contact 199", "newest first");
    assert_eq!(all.1["items"].as_array().unwrap().len(), 200);
    assert_eq!(too_many.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        (first.0, &first.1["email"]),
        (StatusCode::OK, &json!("c0@example.org"))
    );
    assert_eq!(outsider_list.1["items"].as_array().unwrap().len(), 0);
    assert_eq!(outsider_lookup.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn market_and_touring_keep_their_records_in_mongodb() {
    let platform = Platform::start().await;
    for (module, path, record) in [
        (
            Module::Market,
            "/v1/listings",
            json!({"title": "Backline", "price_cents": 9900, "currency": "EUR"}),
        ),
        (
            Module::Touring,
            "/v1/tours",
            json!({"name": "Spring", "artist": "Ada", "starts_on": "2027-03-01"}),
        ),
    ] {
        let url = mongo_url(module.name()).await;
        let backend = Backend::start(&platform, module, &url, &[]).await;
        let resource = module.resource();
        let read = format!("{module}.{resource}.read");
        let write = format!("{module}.{resource}.write");
        let member = new_member(&platform, module, Some(&[read.as_str(), write.as_str()])).await;

        let created = backend
            .post(path, &member.token, &member.org(), record)
            .send()
            .await
            .unwrap();
        let listed = body(
            backend
                .get(path, &member.token, Some(&member.org()))
                .send()
                .await
                .unwrap(),
        )
        .await;

        assert_eq!(created.status(), StatusCode::CREATED, "{module}");
        assert_eq!(listed.1["items"].as_array().unwrap().len(), 1, "{module}");
        kisum_module::migrate(module, &url)
            .await
            .expect("creating the indexes again is a no-op");
    }
}

#[tokio::test]
async fn venue_and_ai_keep_their_records_in_postgres() {
    let platform = Platform::start().await;
    let postgres = Postgres::shared();
    let cases = [
        (
            Module::Venue,
            "/v1/venues",
            json!({"name": "Hall", "city": "Oslo", "capacity": 1200}),
        ),
        (Module::Ai, "/v1/prompts", json!({"prompt": "plan a tour"})),
    ];
    for (module, path, record) in cases {
        let url = postgres
            .create_unique_database(module.name())
            .await
            .unwrap();
        let backend = Backend::start(&platform, module, &url, &[]).await;
        let resource = module.resource();
        let read = format!("{module}.{resource}.read");
        let write = format!("{module}.{resource}.write");
        let member = new_member(&platform, module, Some(&[read.as_str(), write.as_str()])).await;

        let created = body(
            backend
                .post(path, &member.token, &member.org(), record)
                .send()
                .await
                .unwrap(),
        )
        .await;
        let listed = body(
            backend
                .get(path, &member.token, Some(&member.org()))
                .send()
                .await
                .unwrap(),
        )
        .await;

        assert_eq!(created.0, StatusCode::CREATED, "{module}: {}", created.1);
        assert_eq!(listed.1["items"].as_array().unwrap().len(), 1, "{module}");
        if module == Module::Ai {
            assert_eq!(created.1["model"], "canned");
        }
        kisum_module::migrate(module, &url)
            .await
            .expect("migrating again is a no-op");
    }
}

#[tokio::test]
async fn the_internal_port_reports_keys_routes_and_dependencies() {
    let platform = Platform::start().await;
    let backend = Backend::start(&platform, Module::Finance, &finance_database().await, &[]).await;

    let anonymous = backend
        .http
        .get(backend.internal_url("/internal/diagnostics"))
        .send()
        .await
        .unwrap();
    let diagnostics = body(
        backend
            .internal(reqwest::Method::GET, "/internal/diagnostics")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let dependencies = body(
        backend
            .internal(reqwest::Method::GET, "/internal/dependencies")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let ready = body(
        backend
            .http
            .get(backend.url("/ready"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let on_public = backend
        .http
        .get(backend.url("/internal/diagnostics"))
        .send()
        .await
        .unwrap();

    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(diagnostics.1["service"], "finance");
    assert_eq!(diagnostics.1["kids"], json!([platform.keys().active().kid]));
    assert_eq!(
        diagnostics.1["routes"]["POST /v1/invoices"],
        "finance.invoices.write"
    );
    assert_eq!(dependencies.1["database"]["status"], "ok");
    assert_eq!(ready.1["checks"], json!({"database": "ok", "jwks": "ok"}));
    assert_eq!(on_public.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn basic_reports_an_unreachable_redis_but_stays_ready() {
    let platform = Platform::start().await;
    // The backend's own Redis, not Auth's.
    let mut redis = Redis::start().await.unwrap();
    let settings = [("REDIS_URL", redis.url())];
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let backend = Backend::start(
        &platform,
        Module::Basic,
        &mongo_url("basic").await,
        &settings,
    )
    .await;
    let dependencies = || async {
        body(
            backend
                .internal(reqwest::Method::GET, "/internal/dependencies")
                .send()
                .await
                .unwrap(),
        )
        .await
        .1
    };
    assert_eq!(
        dependencies().await["redis"],
        json!({"required": false, "status": "ok"})
    );

    redis.stop();
    let report = dependencies().await;
    let ready = backend
        .http
        .get(backend.url("/ready"))
        .send()
        .await
        .unwrap();

    assert_eq!(report["redis"]["required"], false);
    assert_ne!(report["redis"]["status"], "ok");
    assert_eq!(ready.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_backend_without_its_database_starts_but_is_not_ready() {
    // A "database" that hangs up on every connection.
    let hang_up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = hang_up.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((connection, _)) = hang_up.accept().await {
            drop(connection);
        }
    });
    let url = format!("postgres://kisum@127.0.0.1:{port}/finance_db?sslmode=disable");
    let platform = Platform::start().await;
    let config =
        Config::from_vars(&platform::module_vars(Module::Finance, &platform, &url)).unwrap();
    let app = kisum_module::app(config).await.unwrap();
    let listeners = platform::loopback_listeners().await;
    let (public, _) = listeners.addresses().unwrap();
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(kisum_common::serve::serve(
        listeners,
        app.public,
        app.internal,
        app.metrics,
        kisum_common::serve::ServerSettings::default(),
        async {
            let _ = stopped.await;
        },
    ));

    let ready = body(
        reqwest::get(format!("http://{public}/ready"))
            .await
            .unwrap(),
    )
    .await;

    assert_eq!(ready.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.1["checks"]["jwks"], "ok");
    assert_ne!(ready.1["checks"]["database"], "ok");
}

#[tokio::test]
async fn serve_refuses_a_database_with_pending_migrations() {
    let platform = Platform::start().await;
    let url = kisum_testkit::Postgres::shared()
        .create_unique_database("finance_unmigrated")
        .await
        .unwrap();
    let config =
        Config::from_vars(&platform::module_vars(Module::Finance, &platform, &url)).unwrap();
    let listeners = platform::loopback_listeners().await;
    let refused = kisum_module::run(config, listeners, std::future::pending::<()>()).await;
    let message = format!("{:#}", refused.expect_err("serve must refuse"));
    assert!(message.contains("pending migration"), "{message}");
    assert!(message.contains("kisum-module migrate"), "{message}");
}

#[tokio::test]
async fn an_unserved_method_on_a_business_route_is_405_not_500() {
    let platform = Platform::start().await;
    let backend = Backend::start(&platform, Module::Finance, &finance_database().await, &[]).await;
    for path in [
        "/v1/invoices",
        "/v1/invoices/00000000-0000-4000-8000-000000000000",
    ] {
        let outcome = body(backend.http.delete(backend.url(path)).send().await.unwrap()).await;
        assert_eq!(
            outcome.0,
            StatusCode::METHOD_NOT_ALLOWED,
            "{path}: {:?}",
            outcome.1
        );
    }
}

// ------------------------------------------------------------ read cache --

use kisum_testkit::event_count;

/// Polls `check` until it holds or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, check: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// An invoice written to finance_db by someone else than this backend:
/// another replica, or SQL.
async fn insert_elsewhere(db: &sqlx::PgPool, company: Uuid, number: &str) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO invoices (id, company, number, customer, amount_cents, currency)
         VALUES ($1, $2, $3, 'Elsewhere', 1, 'EUR')",
    )
    .bind(id)
    .bind(company)
    .bind(number)
    .execute(db)
    .await
    .unwrap();
    id
}

#[tokio::test]
async fn reads_are_cached_until_any_write_to_the_table_from_anywhere() {
    let platform = Platform::start().await;
    let database = finance_database().await;
    let backend = Backend::start(&platform, Module::Finance, &database, &[]).await;
    let db = sqlx::PgPool::connect(&database).await.unwrap();
    let both: &[&str] = &[INVOICE_READ, INVOICE_WRITE];
    let member = new_member(&platform, Module::Finance, Some(both)).await;
    let other = new_member(&platform, Module::Finance, Some(both)).await;
    let (token, org) = (&member.token, member.org());
    let numbers = |listed: &Value| -> Vec<String> {
        let items = listed["items"].as_array().unwrap();
        items
            .iter()
            .map(|i| i["number"].as_str().unwrap().to_string())
            .collect()
    };
    let list = || async {
        body(
            backend
                .get("/v1/invoices", token, Some(&org))
                .send()
                .await
                .unwrap(),
        )
        .await
    };

    let created = body(
        backend
            .post("/v1/invoices", token, &org, invoice("INV-1"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(created.0, StatusCode::CREATED);
    let id = created.1["id"].as_str().unwrap().to_string();
    let hits = || async { event_count(&backend.metrics().await, "record_cache", "hit") };
    // The creation's own invalidation may arrive after the first list has
    // been cached (it travels through PostgreSQL's notifications): a
    // second list is a hit once the cache has settled, within a few tries.
    let mut cached = false;
    let mut first = list().await;
    for _ in 0..10 {
        assert_eq!(numbers(&first.1), ["INV-1"]);
        let before = hits().await;
        let second = list().await;
        assert_eq!(second, first);
        if hits().await == before + 1 {
            cached = true;
            break;
        }
        first = second;
    }
    assert!(cached, "the second list never came from the cache");
    // The answer is the JSON of before, header included.
    let raw = backend
        .get("/v1/invoices", token, Some(&org))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["content-type"], "application/json");

    // Written here: listed at once.
    backend
        .post("/v1/invoices", token, &org, invoice("INV-2"))
        .send()
        .await
        .unwrap();
    assert_eq!(numbers(&list().await.1), ["INV-2", "INV-1"]);

    // Written elsewhere (another replica, SQL): the trigger's NOTIFY
    // reaches this backend and the next read sees it.
    insert_elsewhere(&db, member.company, "INV-3").await;
    let seen = eventually(Duration::from_secs(3), || async {
        numbers(&list().await.1).contains(&"INV-3".to_string())
    })
    .await;
    assert!(seen, "a write elsewhere invalidated the cached list");

    // One record, changed elsewhere.
    let one = || async {
        body(
            backend
                .get(&format!("/v1/invoices/{id}"), token, Some(&org))
                .send()
                .await
                .unwrap(),
        )
        .await
    };
    assert_eq!(one().await.1["status"], "draft");
    assert_eq!(one().await.1["status"], "draft");
    sqlx::query("UPDATE invoices SET status = 'paid' WHERE id = $1")
        .bind(Uuid::parse_str(&id).unwrap())
        .execute(&db)
        .await
        .unwrap();
    let paid = eventually(Duration::from_secs(3), || async {
        one().await.1["status"] == "paid"
    })
    .await;
    assert!(paid, "a change elsewhere invalidated the cached record");

    // Another company's reads are its own, cached or not.
    let theirs = body(
        backend
            .get("/v1/invoices", &other.token, Some(&other.org()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(theirs.0, StatusCode::OK);
    assert!(numbers(&theirs.1).is_empty());
    let mine_from_them = backend
        .get(
            &format!("/v1/invoices/{id}"),
            &other.token,
            Some(&other.org()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(mine_from_them.status(), StatusCode::NOT_FOUND);
    // A TRUNCATE drops everything.
    sqlx::query("TRUNCATE invoices").execute(&db).await.unwrap();
    let emptied = eventually(Duration::from_secs(3), || async {
        numbers(&list().await.1).is_empty()
    })
    .await;
    assert!(emptied);
}

#[tokio::test]
async fn the_read_cache_is_off_while_its_listener_is_disconnected() {
    let platform = Platform::start().await;
    let database = finance_database().await;
    let backend = Backend::start(&platform, Module::Finance, &database, &[]).await;
    let db = sqlx::PgPool::connect(&database).await.unwrap();
    let member = new_member(&platform, Module::Finance, Some(&[INVOICE_READ])).await;
    let (token, org) = (&member.token, member.org());
    let count = || async {
        let listed = body(
            backend
                .get("/v1/invoices", token, Some(&org))
                .send()
                .await
                .unwrap(),
        )
        .await;
        listed.1["items"].as_array().unwrap().len()
    };
    let hits = || async { event_count(&backend.metrics().await, "record_cache", "hit") };
    let cached = eventually(Duration::from_secs(5), || async {
        let before = hits().await;
        count().await;
        count().await;
        hits().await > before
    })
    .await;
    assert!(cached, "the cache serves once its listener listens");

    // Cut the listener's connection: notifications sent meanwhile are lost,
    // so nothing may be served from the cache until it listens again.
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
          WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(cut, 1, "one listener connection");
    tokio::time::sleep(Duration::from_millis(300)).await;
    insert_elsewhere(&db, member.company, "INV-LOST").await;
    assert_eq!(count().await, 1, "read from the database, not the cache");
    assert_eq!(count().await, 1);

    let back = eventually(Duration::from_secs(10), || async {
        let before = hits().await;
        count().await;
        count().await;
        hits().await > before
    })
    .await;
    assert!(back, "the cache serves again once the listener is back");
    insert_elsewhere(&db, member.company, "INV-NEW").await;
    let seen = eventually(Duration::from_secs(3), || async { count().await == 2 }).await;
    assert!(seen);
}

#[test]
fn the_same_port_for_http_port_and_internal_port_is_refused_naming_both_once() {
    let vars = [("MODULE_NAME", "finance"), ("KISUM_ENVIRONMENT", "test")];
    let outcome = kisum_testkit::serve_on_one_port(env!("CARGO_BIN_EXE_kisum-module"), &vars);
    kisum_testkit::assert_refused_one_port(outcome);
}
