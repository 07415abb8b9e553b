//! `kisumctl runbook run user-cannot-access-module local` against the real
//! platform with one fault injected per test: Auth, Platform Core,
//! Platform Admin and the finance and venue backends served in-process on
//! free loopback ports (the harness of `services/module/tests/platform/`),
//! once on a runtime of its own and shared by the tests of this file that
//! run at the same time (the last to finish stops it). Each
//! test makes its own company, user and scratch matrix (whose
//! `endpoints.json` and secret store point at the shared platform), so the
//! tests run in parallel without seeing each other's faults.

use crate::{platform, services};

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use kisum_common::jwt::TokenPolicy;
use kisum_common::keys::KeySet;
use kisum_module::Module;
use platform::{Company, KISUMCTL_SECRET, PASSWORD, Platform, Session};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::common::{private_dir, scratch_copy, stderr, stdout, write_secret};

/// A module backend serving: its public and internal addresses.
pub(crate) struct Backend {
    pub public: SocketAddr,
    pub internal: SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// The services every test of this file uses.
pub(crate) struct Parts {
    pub platform: Platform,
    pub admin: services::Admin,
    pub admin_email: String,
    pub finance: Backend,
    pub venue: Backend,
}

/// The platform the tests of this file share while any of them runs: the
/// last one to finish stops it (inside its runtime) and removes its files;
/// a test starting after that starts another.
pub(crate) struct Shared {
    pub runtime: tokio::runtime::Runtime,
    parts: Option<Parts>,
}

impl std::ops::Deref for Shared {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        self.parts.as_ref().unwrap()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let parts = self.parts.take();
        self.runtime.block_on(async move { drop(parts) });
    }
}

async fn start_backend(platform: &Platform, module: Module) -> Backend {
    let database_url = platform::database(&format!("runbook_{}", module.name())).await;
    let vars = platform::module_vars(module, platform, &database_url);
    let config = kisum_module::Config::from_vars(&vars).unwrap();
    kisum_module::migrate(module, &database_url).await.unwrap();
    let listeners = platform::loopback_listeners().await;
    let (public, internal) = listeners.addresses().unwrap();
    let stop = platform::serve_until_dropped(|shutdown| async move {
        kisum_module::run(config, listeners, shutdown)
            .await
            .unwrap();
    });
    let http = reqwest::Client::new();
    let ready = platform::eventually(Duration::from_secs(20), || async {
        let ready = http.get(format!("http://{public}/ready")).send().await;
        ready.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    assert!(ready, "the {module} backend never became ready");
    Backend {
        public,
        internal,
        _stop: stop,
    }
}

pub(crate) fn shared() -> Arc<Shared> {
    static SHARED: Mutex<Weak<Shared>> = Mutex::new(Weak::new());
    let mut current = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(shared) = current.upgrade() {
        return shared;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let parts = runtime.block_on(async {
        let platform = Platform::start().await;
        let (auth_internal, core) = (platform.auth_internal_url(), platform.core_url());
        let admin = services::start_admin("runbook", &platform, &auth_internal, &core).await;
        let operator = platform.user().await;
        platform
            .grant_platform_role(operator.id, "platform-admin")
            .await;
        let finance = start_backend(&platform, Module::Finance).await;
        let venue = start_backend(&platform, Module::Venue).await;
        Parts {
            platform,
            admin,
            admin_email: operator.email,
            finance,
            venue,
        }
    });
    let shared = Arc::new(Shared {
        runtime,
        parts: Some(parts),
    });
    *current = Arc::downgrade(&shared);
    shared
}

/// One test's company, user and scratch matrix.
struct Case {
    shared: Arc<Shared>,
    company: Company,
    user: Uuid,
    membership: Uuid,
    session: Session,
    matrix: tempfile::TempDir,
}

/// What a case starts from: the company entitled to `module` in Core, and
/// a member whose role reads it and whose membership grants it.
struct Setup {
    module: &'static str,
    entitled: bool,
    granted: bool,
    permissions: &'static [&'static str],
}

const FINANCE: Setup = Setup {
    module: "finance",
    entitled: true,
    granted: true,
    permissions: &["finance.invoices.read"],
};

impl Case {
    fn new(setup: Setup) -> Case {
        let shared = shared();
        let platform = &shared.platform;
        let (company, user, membership, session) = shared.runtime.block_on(async {
            let company = platform.company("runbook").await;
            if setup.entitled {
                platform.entitle(company.id, setup.module).await;
            }
            let user = platform.user().await;
            // A key outside the catalog can only be in a role written
            // before the catalog existed.
            let legacy = setup
                .permissions
                .iter()
                .any(|key| kisum_common::modules::known_permission(key).is_err());
            let role = if legacy {
                platform.legacy_role(setup.permissions).await
            } else {
                platform.role(setup.permissions).await
            };
            let granted: &[&str] = if setup.granted { &[setup.module] } else { &[] };
            let membership = platform
                .membership(user.id, company.id, &role, granted)
                .await;
            let session = platform.login(&user.email).await;
            (company, user.id, membership, session)
        });
        let matrix = scratch_copy();
        let case = Case {
            shared,
            company,
            user,
            membership,
            session,
            matrix,
        };
        // The backends verify tokens of issuer https://auth.kisum.test.
        let local = case.matrix.path().join("environments/local.yaml");
        let text = std::fs::read_to_string(&local).unwrap();
        let edited = text.replace("kisum-io: kisum.localhost", "kisum-io: kisum.test");
        assert_ne!(text, edited);
        std::fs::write(&local, edited).unwrap();
        // Redis and PostgreSQL: the shared platform's.
        case.point_redis_at(case.shared.platform.redis.port());
        case.point_postgres_at(kisum_testkit::Postgres::shared().port());
        case.write_endpoints(&[]);
        case.write_secrets();
        case
    }

    fn state(&self) -> std::path::PathBuf {
        self.matrix.path().join(".kisum/local")
    }

    /// Points the scratch matrix's Redis endpoint at `port` of loopback.
    fn point_redis_at(&self, port: u16) {
        self.point_port_after("\nredis:\n", port);
    }

    /// Points the scratch matrix's PostgreSQL servers at `port` of loopback.
    fn point_postgres_at(&self, port: u16) {
        self.point_port_after("&local-postgres {", port);
    }

    /// Rewrites the first `port: N` after `marker` in the scratch matrix's
    /// local file.
    fn point_port_after(&self, marker: &str, port: u16) {
        let local = self.matrix.path().join("environments/local.yaml");
        let text = std::fs::read_to_string(&local).unwrap();
        let start = text.find(marker).unwrap();
        let at = start + text[start..].find("port: ").unwrap() + "port: ".len();
        let end = at + text[at..].find(',').unwrap();
        let edited = format!("{}{port}{}", &text[..at], &text[end..]);
        std::fs::write(&local, edited).unwrap();
    }

    /// `endpoints.json` of the shared platform; `dead` services answer on
    /// ports nothing listens on, as after their process was killed.
    fn write_endpoints(&self, dead: &[&str]) {
        let dead_port = free_port();
        let moved: Vec<(&str, SocketAddr)> = dead.iter().map(|s| (*s, dead_port)).collect();
        self.write_endpoints_moved(&moved);
    }

    /// `endpoints.json` of the shared platform with the `moved` services at
    /// other addresses.
    fn write_endpoints_moved(&self, moved: &[(&str, SocketAddr)]) {
        let shared = &self.shared;
        let url = |service: &str, address: SocketAddr| {
            let address = moved
                .iter()
                .find(|(s, _)| *s == service)
                .map_or(address, |(_, a)| *a);
            format!("http://{address}")
        };
        let p = &shared.platform;
        let endpoints = json!({
            "auth": url("auth", p.auth_public),
            "platform-core": url("platform-core", p.core_public),
            "platform-admin": url("platform-admin", shared.admin.address),
            "finance": url("finance", shared.finance.public),
            "venue": url("venue", shared.venue.public),
            "internal": {
                "auth": url("auth", p.auth_internal),
                "platform-core": url("platform-core", p.core),
                "finance": url("finance", shared.finance.internal),
                "venue": url("venue", shared.venue.internal),
            },
        });
        private_dir(&self.state());
        std::fs::write(self.state().join("endpoints.json"), endpoints.to_string()).unwrap();
    }

    fn write_secrets(&self) {
        let company = self.company.id.to_string();
        write_secret(
            &self.state(),
            "internal-credential-kisumctl",
            "token",
            KISUMCTL_SECRET,
        );
        for (key, value) in [
            ("user-email", "nobody@kisum.test"),
            ("user-password", "unused-password"),
            ("admin-email", self.shared.admin_email.as_str()),
            ("admin-password", PASSWORD),
            ("company-id", company.as_str()),
            ("company-slug", self.company.slug.as_str()),
        ] {
            write_secret(&self.state(), "smoke-test-credentials", key, value);
        }
    }

    fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        self.shared.runtime.block_on(future)
    }

    fn platform(&self) -> &Platform {
        &self.shared.platform
    }

    /// Runs the runbook for this case's user, company and `module` with
    /// the access token `token` (the session's unless given); answers the
    /// exit code and the JSON document.
    fn run(&self, module: &str, token: Option<&str>, extra: &[&str]) -> (Option<i32>, Value) {
        self.run_runbook("user-cannot-access-module", module, token, extra)
    }

    /// Runs runbook `name` as [`Case::run`] does.
    fn run_runbook(
        &self,
        name: &str,
        module: &str,
        token: Option<&str>,
        extra: &[&str],
    ) -> (Option<i32>, Value) {
        let token_file = self.matrix.path().join("token");
        let token = token.unwrap_or(&self.session.access_token);
        std::fs::write(&token_file, token).unwrap();
        let token_file = token_file.to_str().unwrap();
        let company = self.company.id.to_string();
        let user = self.user.to_string();
        let mut args = vec![
            "runbook",
            "run",
            name,
            "local",
            "--company",
            &company,
            "--user",
            &user,
            "--module",
            module,
            "-o",
            "json",
        ];
        if !token.is_empty() {
            args.extend(["--token-file", token_file]);
        }
        args.extend(extra);
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_kisumctl"))
            .arg("--matrix")
            .arg(self.matrix.path().join("environments"))
            .args(&args)
            .current_dir(self.matrix.path())
            .env_remove("KISUM_MATRIX")
            .output()
            .unwrap();
        let text = stdout(&output) + &stderr(&output);
        for secret in [token, &self.session.access_token] {
            assert!(
                secret.is_empty() || !text.contains(secret),
                "a token leaked: {text}"
            );
        }
        assert!(!text.contains(PASSWORD), "a password leaked: {text}");
        let document: Value =
            serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {text}"));
        (output.status.code(), document)
    }

    /// Asserts that the run named `check` as the cause, with every check
    /// before it passing (or skipped for want of an input), and answers the
    /// cause.
    fn expect_cause(
        &self,
        module: &str,
        token: Option<&str>,
        extra: &[&str],
        check: &str,
    ) -> Value {
        let (code, document) = self.run(module, token, extra);
        let pretty = serde_json::to_string_pretty(&document).unwrap();
        assert_eq!(code, Some(1), "{pretty}");
        assert_eq!(document["cause"]["check"], check, "{pretty}");
        let findings = document["findings"].as_array().unwrap();
        assert_eq!(findings.last().unwrap()["check"], check, "{pretty}");
        for finding in &findings[..findings.len() - 1] {
            assert!(
                finding["verdict"] == "ok" || finding["verdict"] == "skipped",
                "{pretty}"
            );
        }
        assert!(document["cause"]["fix"].is_string(), "{pretty}");
        document["cause"].clone()
    }
}

/// A loopback address nothing listens on.
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn summary(cause: &Value) -> String {
    cause["summary"].as_str().unwrap().to_string()
}

#[test]
fn a_user_with_access_gets_no_cause_after_all_nine_checks() {
    let case = Case::new(FINANCE);
    let (code, document) = case.run("finance", None, &["--org", &case.company.slug.clone()]);
    let pretty = serde_json::to_string_pretty(&document).unwrap();
    assert_eq!(code, Some(0), "{pretty}");
    let checks: Vec<&str> = document["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["verdict"], "ok", "{pretty}");
            f["check"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        checks,
        [
            "auth-healthy",
            "core-healthy",
            "jwt-valid",
            "session-live",
            "x-org",
            "core-entitlement",
            "module-grant",
            "access-cache",
            "permission-key"
        ]
    );
    assert_eq!(document["cause"], Value::Null);
}

#[test]
fn auth_down_is_named() {
    let case = Case::new(FINANCE);
    case.write_endpoints(&["auth"]);
    let cause = case.expect_cause("finance", None, &[], "auth-healthy");
    assert_eq!(summary(&cause), "Auth is down or not ready");
    assert!(
        cause["fix"]
            .as_str()
            .unwrap()
            .starts_with("kisumctl deploy local")
    );
}

#[test]
fn a_hung_auth_is_named_within_one_timeout() {
    // A listening socket nobody reads: the kernel accepts connections and
    // nothing answers, as with a stopped (SIGSTOP) Auth.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let case = Case::new(FINANCE);
    let address = hung.local_addr().unwrap();
    case.write_endpoints_moved(&[("auth", address)]);
    let started = std::time::Instant::now();
    let cause = case.expect_cause("finance", None, &[], "auth-healthy");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(
        summary(&cause).starts_with("Auth is not answering"),
        "{cause}"
    );
    assert!(
        cause["fix"].as_str().unwrap().contains("kill -CONT"),
        "{cause}"
    );
    drop(hung);
}

#[test]
fn redis_down_is_named_by_its_runbook() {
    let case = Case::new(FINANCE);
    let (code, document) = case.run_runbook("redis-down", "finance", None, &[]);
    assert_eq!(code, Some(0), "{document:#}");
    assert_eq!(document["findings"][0]["check"], "redis-reachable");
    assert_eq!(document["findings"][0]["verdict"], "ok", "{document:#}");

    let dead = free_port();
    case.point_redis_at(dead.port());
    let (code, document) = case.run_runbook("redis-down", "finance", None, &[]);
    assert_eq!(code, Some(1), "{document:#}");
    let cause = &document["cause"];
    assert_eq!(cause["check"], "redis-reachable", "{document:#}");
    assert_eq!(summary(cause), "Redis is down: it does not answer a PING");
    assert!(
        cause["evidence"].to_string().contains(&dead.to_string()),
        "{cause}"
    );
    assert!(
        cause["fix"]
            .as_str()
            .unwrap()
            .starts_with("kisumctl deploy local"),
        "{cause}"
    );
}

#[test]
fn core_down_is_named() {
    let case = Case::new(FINANCE);
    case.write_endpoints(&["platform-core"]);
    let cause = case.expect_cause("finance", None, &[], "core-healthy");
    assert_eq!(summary(&cause), "Platform Core is down or not ready");
    let evidence = cause["evidence"].to_string();
    assert!(
        evidence.contains("/ready: connection refused"),
        "{evidence}"
    );
}

#[test]
fn a_token_signed_with_an_unknown_key_is_an_invalid_jwt() {
    let case = Case::new(FINANCE);
    let foreign = KeySet::generate(platform::now()).unwrap();
    let token = platform::policy()
        .sign(
            &foreign,
            &case.user.to_string(),
            &case.session.session,
            platform::now(),
            900,
        )
        .unwrap();
    let cause = case.expect_cause("finance", Some(&token), &[], "jwt-valid");
    let kid = TokenPolicy::kid_of(&token).unwrap();
    assert_eq!(
        summary(&cause),
        format!("signed with kid {kid}, which Auth does not publish")
    );
}

#[test]
fn a_revoked_session_is_named() {
    let case = Case::new(FINANCE);
    case.block_on(case.platform().logout(&case.session.access_token));
    let cause = case.expect_cause("finance", None, &[], "session-live");
    assert!(
        summary(&cause).starts_with(&format!("session {} of user", case.session.session)),
        "{cause}"
    );
}

#[test]
fn a_wrong_x_org_is_named() {
    let case = Case::new(FINANCE);
    let other = case.block_on(case.platform().company("elsewhere"));
    let cause = case.expect_cause("finance", None, &["--org", &other.slug], "x-org");
    assert!(
        summary(&cause).contains("names no company this user belongs to"),
        "{cause}"
    );
}

#[test]
fn a_company_auth_does_not_know_is_named_instead_of_the_x_org() {
    let mut case = Case::new(FINANCE);
    let slug = case.company.slug.clone();
    let real = case.company.id;
    let unknown = Uuid::new_v4();
    case.company.id = unknown;
    let cause = case.expect_cause("finance", None, &["--org", &slug], "x-org");
    assert_eq!(
        summary(&cause),
        format!("company {unknown} is unknown to Auth (and so to Core's entitlements)"),
        "{cause}"
    );
    let fix = cause["fix"].as_str().unwrap();
    assert!(fix.starts_with("run again with --company"), "{fix}");
    assert!(!fix.contains(&unknown.to_string()), "{fix}");
    // A known company the x-org does not name is still the x-org's fault.
    let other = case.block_on(case.platform().company("elsewhere"));
    case.company.id = other.id;
    let cause = case.expect_cause("finance", None, &["--org", &slug], "x-org");
    assert!(
        summary(&cause).contains(&format!("names company {real}, not {}", other.id))
            || summary(&cause).contains("names no company this user belongs to"),
        "{cause}"
    );
}

#[test]
fn a_company_without_the_module_in_core_is_named() {
    let case = Case::new(Setup {
        entitled: false,
        ..FINANCE
    });
    let cause = case.expect_cause("finance", None, &[], "core-entitlement");
    assert_eq!(
        summary(&cause),
        format!("company {} does not own finance in Core", case.company.id)
    );
}

#[test]
fn a_missing_module_grant_is_named() {
    let case = Case::new(Setup {
        granted: false,
        ..FINANCE
    });
    let cause = case.expect_cause("finance", None, &[], "module-grant");
    assert_eq!(
        summary(&cause),
        format!("membership {} has no grant of finance", case.membership)
    );
    assert!(cause["fix"].as_str().unwrap().contains(&format!(
        "/admin/memberships/{}/grants/finance",
        case.membership
    )));
}

#[test]
fn a_stale_access_cache_is_named() {
    let case = Case::new(Setup {
        entitled: false,
        ..FINANCE
    });
    // Auth caches the company's entitlement version (30 s) with the
    // context; then Core gains the module without anyone telling Auth.
    let (status, _) = case.block_on(
        case.platform()
            .me_access(&case.session.access_token, &case.company.id.to_string()),
    );
    assert_eq!(status, StatusCode::OK);
    case.block_on(case.platform().add_on(case.company.id, "finance", true));
    let cause = case.expect_cause("finance", None, &[], "access-cache");
    assert!(
        summary(&cause).starts_with("Auth's cached access is stale"),
        "{cause}"
    );
    let fix = format!(
        "kisumctl access invalidate local --company {}",
        case.company.id
    );
    assert_eq!(cause["fix"], fix.as_str());

    // The fix it names works.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kisumctl"))
        .arg("--matrix")
        .arg(case.matrix.path().join("environments"))
        .args(fix.split(' ').skip(1))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    // Without --org, x-org is not checked: the run is inconclusive.
    let (code, document) = case.run("finance", None, &[]);
    assert_eq!(code, Some(1), "{document}");
    assert_eq!(document["inconclusive"], true, "{document}");
    assert_eq!(
        document["not_made"],
        serde_json::json!(["x-org"]),
        "{document}"
    );
    let org = case.company.slug.clone();
    let (code, document) = case.run("finance", None, &["--org", &org]);
    assert_eq!(code, Some(0), "{document}");
    // The fix is in the journal; the diagnosis, which changes nothing, is not.
    let journal = std::fs::read_to_string(case.state().join("journal.jsonl")).unwrap();
    let records: Vec<Value> = journal
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{journal}");
    assert_eq!(records[0]["command"], "access invalidate");
    assert_eq!(records[0]["result"], "ok");
}

#[test]
fn a_role_spelling_a_key_outside_the_catalog_is_blamed_not_the_backend() {
    // The role (written before the permission catalog) spells the venue key
    // `venue.venue.read`; the venue backend enforces the catalog's
    // `venue.venues.read`: the role is wrong, not the backend.
    let case = Case::new(Setup {
        module: "venue",
        entitled: true,
        granted: true,
        permissions: &["venue.venue.read"],
    });
    let cause = case.expect_cause("venue", None, &[], "permission-key");
    let text = summary(&cause);
    assert!(text.starts_with("the user's role role-"), "{cause}");
    assert!(
        text.contains("GET /v1/venues requires venue.venues.read"),
        "{cause}"
    );
    let fix = cause["fix"].as_str().unwrap();
    assert!(
        fix.starts_with("Platform Admin: PUT /admin/roles/role-"),
        "{fix}"
    );
    assert!(
        fix.contains(r#"{"permissions":["venue.venues.read"]}"#),
        "{fix}"
    );
}

#[test]
fn a_role_without_the_enforced_key_is_named_with_the_role() {
    let case = Case::new(Setup {
        permissions: &["market.listings.read"],
        ..FINANCE
    });
    let cause = case.expect_cause("finance", None, &[], "permission-key");
    let text = summary(&cause);
    assert!(text.starts_with("the user's role role-"), "{cause}");
    assert!(text.contains("requires finance.invoices.read"), "{cause}");
    assert!(
        !text.contains("backend enforces a permission key"),
        "{cause}"
    );
    let fix = cause["fix"].as_str().unwrap();
    assert!(
        fix.contains(r#"{"permissions":["market.listings.read","finance.invoices.read"]}"#),
        "{fix}"
    );
    assert!(!fix.contains("deploy"), "{fix}");
}

/// For [`Case::run`]: no `--token-file` at all.
const NO_TOKEN: Option<&str> = Some("");

#[test]
fn a_key_granted_to_the_membership_itself_is_held_with_or_without_a_token() {
    let case = Case::new(Setup {
        permissions: &["market.listings.read"],
        ..FINANCE
    });
    case.block_on(async {
        let db = &case.platform().db;
        sqlx::query(
            "insert into permissions (key, module) values ('finance.invoices.read', 'finance') \
             on conflict do nothing",
        )
        .execute(db)
        .await
        .unwrap();
        sqlx::query(
            "insert into membership_permissions (membership_id, module, permission) \
             values ($1, 'finance', 'finance.invoices.read')",
        )
        .bind(case.membership)
        .execute(db)
        .await
        .unwrap();
    });
    let org = case.company.slug.clone();
    let (code, document) = case.run("finance", None, &["--org", &org]);
    assert_eq!(code, Some(0), "{document:#}");
    // Without the token, the membership's own grant is read beside its
    // role's keys: no false cause; the checks needing the token are not
    // made, so the run is inconclusive.
    let (code, document) = case.run("finance", NO_TOKEN, &[]);
    assert_eq!(code, Some(1), "{document:#}");
    assert!(document["cause"].is_null(), "{document:#}");
    assert_eq!(document["inconclusive"], true, "{document:#}");
    let permission = document["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "permission-key")
        .unwrap();
    assert_eq!(permission["verdict"], "ok", "{document:#}");
    let not_made = document["not_made"].as_array().unwrap();
    assert!(not_made.contains(&json!("jwt-valid")), "{document:#}");
    assert!(!not_made.contains(&json!("permission-key")), "{document:#}");
}

#[test]
fn the_outage_runbooks_name_the_service_that_is_not_ready() {
    let case = Case::new(FINANCE);
    case.write_endpoints(&["finance"]);
    let (code, document) = case.run_runbook("database-outage", "finance", None, &[]);
    assert_eq!(code, Some(1), "{document:#}");
    assert_eq!(document["cause"]["check"], "services-ready", "{document:#}");
    assert_eq!(
        document["cause"]["summary"], "not ready: finance",
        "{document:#}"
    );
}

/// Platform Core serving with its database at a loopback `port` nothing
/// listens on, as after PostgreSQL stopped.
async fn core_without_database(port: u16) -> (SocketAddr, oneshot::Sender<()>) {
    let url = format!("postgres://core:pw@127.0.0.1:{port}/platform_core_db");
    let config = kisum_core::Config::from_vars(&platform::core_vars(&url)).unwrap();
    let app = kisum_core::app(config).await.unwrap();
    let listeners = platform::loopback_listeners().await;
    let (public, _) = listeners.addresses().unwrap();
    let stop = platform::serve_until_dropped(|shutdown| async move {
        let settings = kisum_common::serve::ServerSettings::default();
        let served = kisum_common::serve::serve(
            listeners,
            app.public,
            app.internal,
            app.metrics,
            settings,
            shutdown,
        );
        served.await.unwrap();
    });
    (public, stop)
}

#[test]
fn a_stopped_postgresql_is_named_with_its_address_and_the_way_back() {
    let case = Case::new(FINANCE);
    let dead = free_port();
    let (core, _stop) = case.block_on(core_without_database(dead.port()));
    case.write_endpoints_moved(&[("platform-core", core)]);
    case.point_postgres_at(dead.port());
    let started = std::time::Instant::now();
    let (code, document) = case.run_runbook("database-outage", "finance", None, &[]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(code, Some(1), "{document:#}");
    let cause = &document["cause"];
    assert_eq!(cause["check"], "services-ready", "{document:#}");
    assert_eq!(
        summary(cause),
        format!(
            "not ready: platform-core: PostgreSQL is unreachable (connection refused at {dead})"
        ),
        "{document:#}"
    );
    let fix = cause["fix"].as_str().unwrap();
    assert!(fix.starts_with("kisumctl deploy local"), "{fix}");
    assert!(fix.contains("kisumctl logs local postgres"), "{fix}");
    assert!(!fix.contains("platform-core"), "{fix}");
}

#[test]
fn the_jwt_runbook_finds_every_verifier_knowing_the_signing_kid() {
    let case = Case::new(FINANCE);
    let (code, document) = case.run_runbook("jwt-verification-failing", "finance", None, &[]);
    assert_eq!(code, Some(0), "{document:#}");
    let checks: Vec<&str> = document["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["verdict"], "ok", "{document:#}");
            f["check"].as_str().unwrap()
        })
        .collect();
    assert_eq!(checks, ["auth-healthy", "jwks-propagated", "jwt-valid"]);
    assert!(document["manual"].as_array().unwrap().len() >= 3);
}

#[test]
fn a_malformed_id_names_the_flag_and_asks_for_a_uuid() {
    let output = crate::common::kisumctl(
        &crate::common::root(),
        &[
            "runbook",
            "run",
            "user-cannot-access-module",
            "local",
            "--company",
            "x",
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("--company expects a UUID") && message.contains("not `x`"),
        "{message}"
    );
    let list = stdout(&crate::common::kisumctl(
        &crate::common::root(),
        &["runbook", "list"],
    ));
    assert!(list.contains(" 1 check\n"), "{list}");
    assert!(!list.contains(" 1 checks"), "{list}");
}

#[test]
fn invalidating_a_company_auth_does_not_know_says_so() {
    let case = Case::new(FINANCE);
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kisumctl"))
            .arg("--matrix")
            .arg(case.matrix.path().join("environments"))
            .args(args)
            .output()
            .unwrap()
    };
    let unknown = Uuid::new_v4().to_string();
    let output = run(&["access", "invalidate", "local", "--company", &unknown]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("Auth knows no company {unknown}")),
        "{}",
        stderr(&output)
    );
    assert!(!stdout(&output).contains('{'), "{}", stdout(&output));
    let known = case.company.id.to_string();
    let output = run(&["access", "invalidate", "local", "--company", &known]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("access version now"),
        "{}",
        stdout(&output)
    );
    let output = run(&["access", "invalidate", "local"]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("--company") && message.contains("--user"),
        "{message}"
    );
}
