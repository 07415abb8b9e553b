//! `kisumctl smoke local` against the real platform: Auth, Platform Core,
//! Platform Admin and the finance backend served in-process on free
//! loopback ports (the harness of `services/module/tests/platform/` and
//! `services/admin/tests/services/`), on the PostgreSQL and Redis of
//! kisum-testkit. The fixtures are seeded as `kisumctl deploy local` seeds
//! them: the directory through `kisum_auth::directory`, entitlements
//! through Core's API. The binary finds the services in the
//! `endpoints.json` and the credentials in the secret store of a scratch
//! copy of the matrix.

use crate::{platform, services};

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use kisum_auth::directory;
use kisum_auth::password::Passwords;
use platform::Platform;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::common::{SEALED_AWS, SMOKE_CHECKS, private_dir, scratch_copy, stderr, stdout};

const SECRET: &str = "smoke-test-credentials";
const ROLE: &str = "smoke-reader";
pub(crate) const INVOICES_READ: &str = "finance.invoices.read";
const INVOICES_WRITE: &str = "finance.invoices.write";
const LISTINGS_READ: &str = "market.listings.read";

/// The platform running, seeded, and a scratch matrix whose `local`
/// points at it. Fields drop in order: the services stop first.
pub(crate) struct Deployment {
    _finance: oneshot::Sender<()>,
    _admin: services::Admin,
    platform: Platform,
    company: Uuid,
    user_password: String,
    admin_password: String,
    matrix: tempfile::TempDir,
}

fn random_password() -> String {
    format!("pw-{}-{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

impl Deployment {
    pub(crate) async fn start() -> Deployment {
        let platform = Platform::start().await;
        let (auth_internal, core) = (platform.auth_internal_url(), platform.core_url());
        let admin = services::start_admin("smoke_cli", &platform, &auth_internal, &core).await;
        let (finance, stop_finance) =
            services::start_finance(&platform, Duration::from_secs(1)).await;
        let deployment = Deployment {
            _finance: stop_finance,
            company: Uuid::new_v4(),
            user_password: random_password(),
            admin_password: random_password(),
            matrix: scratch_copy(),
            _admin: admin,
            platform,
        };
        deployment.seed().await;
        let state = deployment.state_dir();
        let endpoints = json!({
            "auth": deployment.platform.auth_url(),
            "platform-admin": format!("http://{}", deployment._admin.address),
            "finance": format!("http://{finance}"),
            "internal": { "platform-core": core, "auth": auth_internal },
        });
        private_dir(&state);
        std::fs::write(state.join("endpoints.json"), endpoints.to_string()).unwrap();
        deployment.write_credentials();
        deployment
    }

    /// The contract's fixtures, as `deploy local` seeds them.
    async fn seed(&self) {
        let (db, passwords) = (&self.platform.db, Passwords::default());
        directory::upsert_company(db, self.company, "smoke-test", "Smoke test")
            .await
            .unwrap();
        directory::define_role(db, ROLE, &[INVOICES_READ, LISTINGS_READ])
            .await
            .unwrap();
        let hash = passwords.hash(self.user_password.clone()).await.unwrap();
        let user = directory::upsert_user(db, "smoke-user@kisum.localhost", &hash)
            .await
            .unwrap();
        let membership = directory::add_membership(db, user, self.company, ROLE)
            .await
            .unwrap();
        for module in ["finance", "market"] {
            directory::grant_module(db, membership, module)
                .await
                .unwrap();
        }
        let hash = passwords.hash(self.admin_password.clone()).await.unwrap();
        let admin = directory::upsert_user(db, "smoke-admin@kisum.localhost", &hash)
            .await
            .unwrap();
        directory::grant_platform_role(db, admin, "platform-admin")
            .await
            .unwrap();
        self.platform
            .subscribe(self.company, "basic-plus-finance", true)
            .await;
        self.platform.add_on(self.company, "market", false).await;
    }

    pub(crate) fn matrix_dir(&self) -> PathBuf {
        self.matrix.path().join("environments")
    }

    /// `state-dir` of local.yaml, relative to the matrix's parent.
    pub(crate) fn state_dir(&self) -> PathBuf {
        self.matrix.path().join(".kisum/local")
    }

    fn write_credentials(&self) {
        let company = self.company.to_string();
        for (key, value) in [
            ("user-email", "smoke-user@kisum.localhost"),
            ("user-password", self.user_password.as_str()),
            ("admin-email", "smoke-admin@kisum.localhost"),
            ("admin-password", self.admin_password.as_str()),
            ("company-id", company.as_str()),
            ("company-slug", "smoke-test"),
        ] {
            write_secret(&self.state_dir(), key, value);
        }
    }

    /// Runs `kisumctl --matrix <scratch>/environments smoke local ARGS`
    /// from an unrelated working directory.
    async fn smoke(&self, args: &[&str]) -> Output {
        smoke(&self.matrix_dir(), args).await
    }

    /// Runs the JSON form; the document and the whole output.
    async fn smoke_json(&self) -> (Option<i32>, Value, String) {
        let output = self.smoke(&["smoke", "local", "-o", "json"]).await;
        let document = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}{}", stdout(&output), stderr(&output));
        });
        let text = stdout(&output) + &stderr(&output);
        self.assert_no_secret(&text);
        (output.status.code(), document, text)
    }

    pub(crate) fn assert_no_secret(&self, text: &str) {
        assert!(!text.contains(&self.user_password), "{text}");
        assert!(!text.contains(&self.admin_password), "{text}");
        assert!(!text.contains("eyJ"), "a token leaked: {text}");
    }

    /// Core's own view of the company's modules.
    async fn core_modules(&self) -> Value {
        let path = format!("/v1/companies/{}/entitlements", self.company);
        self.platform.core_get(&path).await["modules"].clone()
    }

    /// The role without `permission`, through the directory Auth sees at
    /// once (as Admin's role route would change it).
    pub(crate) async fn remove_permission(&self, permission: &str) {
        sqlx::query("delete from role_permissions where role = $1 and permission = $2")
            .bind(ROLE)
            .bind(permission)
            .execute(&self.platform.db)
            .await
            .unwrap();
        // The same empty change through the directory bumps the epoch.
        directory::define_role(&self.platform.directory(), ROLE, &[])
            .await
            .unwrap();
    }

    pub(crate) async fn add_permission(&self, permission: &str) {
        directory::define_role(&self.platform.directory(), ROLE, &[permission])
            .await
            .unwrap();
    }
}

/// A value of the smoke-test credentials in the local-files secret store.
fn write_secret(state: &Path, key: &str, value: &str) {
    crate::common::write_secret(state, SECRET, key, value);
}

async fn smoke(matrix: &Path, args: &[&str]) -> Output {
    let elsewhere = tempfile::tempdir().unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kisumctl"))
        .arg("--matrix")
        .arg(matrix)
        .args(args)
        .current_dir(elsewhere.path())
        .env_remove("KISUM_MATRIX")
        .output()
        .await
        .unwrap()
}

/// name -> (status, detail) of every check in a document.
fn checks(document: &Value) -> Vec<(String, String, String)> {
    document["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let text = |f: &str| c[f].as_str().unwrap_or_default().to_string();
            (text("name"), text("status"), text("detail"))
        })
        .collect()
}

fn check<'a>(document: &'a [(String, String, String)], name: &str) -> &'a (String, String, String) {
    document.iter().find(|c| c.0 == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_local_passes_every_check_against_the_seeded_platform() {
    let deployment = Deployment::start().await;

    let (code, document, text) = deployment.smoke_json().await;
    assert_eq!(code, Some(0), "{text}");
    let names: Vec<String> = checks(&document).into_iter().map(|c| c.0).collect();
    assert_eq!(names, SMOKE_CHECKS, "{text}");
    assert!(checks(&document).iter().all(|c| c.1 == "pass"), "{text}");
    assert_eq!(document["passed"], true);
    assert_eq!(document["summary"]["passed"], 9);
    assert_eq!(document["repairs"], json!([]));
    // The add-on change was undone.
    assert_eq!(deployment.core_modules().await, json!(["basic", "finance"]));

    let output = deployment.smoke(&["smoke", "local"]).await;
    let text = stdout(&output) + &stderr(&output);
    deployment.assert_no_secret(&text);
    assert_eq!(output.status.code(), Some(0), "{text}");
    let printed = stdout(&output);
    let lines: Vec<&str> = printed.lines().take(9).collect();
    for (line, name) in lines.iter().zip(SMOKE_CHECKS) {
        assert!(line.starts_with(&format!("PASS  {name} ")), "{line}");
        assert!(line.ends_with(" ms)"), "{line}");
    }
    assert!(
        stdout(&output).contains("smoke local passed: 9 passed, 0 failed, 0 skipped"),
        "{text}"
    );
    assert_eq!(deployment.core_modules().await, json!(["basic", "finance"]));

    // Each run toggles the company's add-on: a run waits while another
    // holds the smoke lock, so runs side by side both pass.
    let lock = std::fs::File::create(deployment.state_dir().join("smoke.lock")).unwrap();
    lock.try_lock().unwrap();
    let dir = deployment.matrix_dir();
    let waiting = tokio::spawn(async move { smoke(&dir, &["smoke", "local"]).await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!waiting.is_finished(), "a smoke run went ahead of the lock");
    drop(lock);
    let (first, second) = tokio::join!(waiting, deployment.smoke(&["smoke", "local"]));
    let first = first.unwrap();
    for output in [&first, &second] {
        let text = stdout(output) + &stderr(output);
        assert_eq!(output.status.code(), Some(0), "{text}");
    }
    assert!(stderr(&first).contains("waiting for"), "{}", stderr(&first));
    assert_eq!(deployment.core_modules().await, json!(["basic", "finance"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_changes_fail_the_module_check_they_break() {
    let deployment = Deployment::start().await;

    deployment.remove_permission(INVOICES_READ).await;
    let (code, document, text) = deployment.smoke_json().await;
    assert_eq!(code, Some(1), "{text}");
    let outcome = checks(&document);
    let allowed = check(&outcome, "module-allowed");
    assert_eq!(allowed.1, "fail", "{text}");
    assert!(allowed.2.starts_with("expected 2xx, got 403"), "{text}");
    assert_eq!(check(&outcome, "module-denied").1, "pass", "{text}");
    assert_eq!(check(&outcome, "login").1, "pass", "{text}");

    deployment.add_permission(INVOICES_READ).await;
    deployment.add_permission(INVOICES_WRITE).await;
    let (code, document, text) = deployment.smoke_json().await;
    assert_eq!(code, Some(1), "{text}");
    let outcome = checks(&document);
    let denied = check(&outcome, "module-denied");
    assert_eq!(denied.1, "fail", "{text}");
    assert!(denied.2.starts_with("expected 403, got 400"), "{text}");
    assert!(denied.2.contains("let the write through"), "{text}");
    assert_eq!(check(&outcome, "module-allowed").1, "pass", "{text}");
    assert_eq!(
        check(&outcome, "subscription-invalidates-access").1,
        "pass",
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_login_and_skips_what_needs_the_token() {
    let deployment = Deployment::start().await;
    let wrong = random_password();
    write_secret(&deployment.state_dir(), "user-password", &wrong);

    let (code, document, text) = deployment.smoke_json().await;
    assert!(!text.contains(&wrong), "{text}");
    assert_eq!(code, Some(1), "{text}");
    let outcome = checks(&document);
    let login = check(&outcome, "login");
    assert_eq!(login.1, "fail");
    assert!(login.2.starts_with("expected 200, got 401"), "{text}");
    for name in ["auth-health", "auth-ready", "core-entitlements"] {
        assert_eq!(check(&outcome, name).1, "pass", "{name}: {text}");
    }
    for name in [
        "auth-me",
        "auth-me-access",
        "module-allowed",
        "module-denied",
        "subscription-invalidates-access",
    ] {
        let (_, status, detail) = check(&outcome, name);
        assert_eq!(status, "skip", "{name}: {text}");
        assert!(detail.contains("no access token"), "{name}: {detail}");
    }
    assert_eq!(
        document["summary"],
        json!({"passed": 3, "failed": 1, "skipped": 5})
    );

    let output = deployment.smoke(&["smoke", "local"]).await;
    let text = stdout(&output) + &stderr(&output);
    deployment.assert_no_secret(&text);
    assert!(!text.contains(&wrong), "{text}");
    assert!(text.contains("FAIL  login "), "{text}");
    assert!(text.contains("SKIP  auth-me "), "{text}");
    // Nothing was changed: the add-on check never ran.
    assert_eq!(deployment.core_modules().await, json!(["basic", "finance"]));
}

#[tokio::test]
async fn local_without_endpoints_is_not_deployed() {
    let matrix = scratch_copy();
    let dir = matrix.path().join("environments");
    let output = smoke(&dir, &["smoke", "local"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("local is not deployed: run `kisumctl deploy local`"),
        "{}",
        stderr(&output)
    );
    let output = smoke(&dir, &["smoke", "local", "-o", "json"]).await;
    assert_eq!(output.status.code(), Some(2));
    let document: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        document["error"]
            .as_str()
            .unwrap()
            .starts_with("local is not deployed")
    );
}

#[tokio::test]
async fn an_unreachable_secret_backend_fails_before_any_request() {
    // dev keeps its secrets in AWS Secrets Manager; here its endpoint is a
    // dead loopback port.
    let matrix = scratch_copy();
    let elsewhere = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kisumctl"))
        .arg("--matrix")
        .arg(matrix.path().join("environments"))
        .args(["smoke", "dev"])
        .current_dir(elsewhere.path())
        .env_remove("KISUM_MATRIX")
        .env_remove("AWS_PROFILE")
        .envs(SEALED_AWS)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("AWS Secrets Manager"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn an_unknown_environment_is_unusable_input() {
    let matrix = scratch_copy();
    let output = smoke(&matrix.path().join("environments"), &["smoke", "qa"]).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_lets_the_checks_finish_and_switch_the_add_on_back() {
    use tokio::io::AsyncBufReadExt as _;
    let deployment = Deployment::start().await;
    let elsewhere = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kisumctl"))
        .arg("--matrix")
        .arg(deployment.matrix_dir())
        .args(["smoke", "local"])
        .current_dir(elsewhere.path())
        .env_remove("KISUM_MATRIX")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let header = lines.next_line().await.unwrap().unwrap();
    assert!(header.starts_with("smoke local: auth "), "{header}");
    // The run has begun: Ctrl-C now.
    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let mut rest = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push(line);
    }
    let status = child.wait().await.unwrap();
    let text = rest.join("\n");
    assert_eq!(status.code(), Some(3), "{text}");
    assert!(text.contains("smoke local: interrupted"), "{text}");
    assert!(!text.contains("REPAIR NEEDED"), "{text}");
    assert_eq!(deployment.core_modules().await, json!(["basic", "finance"]));
    // Journaled as interrupted.
    let journal = std::fs::read_to_string(deployment.state_dir().join("journal.jsonl")).unwrap();
    let last: Value = serde_json::from_str(journal.lines().last().unwrap()).unwrap();
    assert_eq!(last["result"], "interrupted", "{journal}");
}
