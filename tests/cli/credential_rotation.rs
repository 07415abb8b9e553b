//! `kisumctl secrets rotate local internal-credential-<service>` against
//! the real platform of `deploy local` (the harness of `deploy_local.rs`):
//! requests that need the rotated credential keep succeeding while it
//! rotates, the old credential passes while it is the previous one, and
//! is refused once the rotation has retired it. No service restarts.
//! Then the smoke fixtures' passwords rotate through Auth's `seed-user`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{stderr, stdout};
use crate::deploy_local::{Platform, assert_deployed};

/// Bounds of the request loop, whatever happens to the test.
const LOOP_LIMIT: Duration = Duration::from_secs(180);
const LOOP_MAX_REQUESTS: u64 = 20_000;

struct Site {
    platform: Platform,
    endpoints: Value,
    http: reqwest::Client,
}

impl Site {
    fn secret(&self, secret: &str, key: &str) -> String {
        let path = self.platform.state().join("secrets").join(secret).join(key);
        std::fs::read_to_string(path).unwrap()
    }

    fn public(&self, service: &str) -> String {
        self.endpoints[service].as_str().unwrap().to_string()
    }

    /// Auth's internal access-context route called as `finance` with
    /// `credential`: its status.
    async fn as_finance(&self, credential: &str) -> u16 {
        let url = format!(
            "{}/internal/access-context",
            self.endpoints["internal"]["auth"].as_str().unwrap()
        );
        self.http
            .post(url)
            .header("x-kisum-caller", "finance")
            .header("x-kisum-credential", credential)
            .json(&json!({}))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// The status of a login as `email` with `password`, and its token.
    async fn login_as(&self, email: &str, password: &str) -> (u16, Option<String>) {
        let body = json!({ "email": email, "password": password });
        let response = self
            .http
            .post(format!("{}/auth/login", self.public("auth")))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or_default();
        (status, body["access_token"].as_str().map(str::to_string))
    }

    /// The smoke user's access token.
    async fn login(&self) -> String {
        let email = self.secret("smoke-test-credentials", "user-email");
        let password = self.secret("smoke-test-credentials", "user-password");
        let (status, token) = self.login_as(&email, &password).await;
        assert_eq!(status, 200, "login");
        token.unwrap()
    }
}

/// Finance's invoices by company slug: Finance asks Auth's internal
/// access-context route, with its internal credential, on every request.
async fn invoices(site: &Site, token: &str, slug: &str) -> u16 {
    site.http
        .get(format!("{}/v1/invoices", site.public("finance")))
        .header("x-org", slug)
        .bearer_auth(token)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_credential_rotates_on_local_while_requests_keep_succeeding() {
    let platform = tokio::task::spawn_blocking(|| {
        let platform = Platform::start();
        assert_deployed(&platform.deploy(&[]));
        platform
    })
    .await
    .unwrap();
    let endpoints = std::fs::read_to_string(platform.state().join("endpoints.json")).unwrap();
    let site = Arc::new(Site {
        endpoints: serde_json::from_str(&endpoints).unwrap(),
        platform,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
    });
    let old = site.secret("internal-credential-finance", "token");
    assert_ne!(
        site.as_finance(&old).await,
        401,
        "the current credential passes"
    );
    let pids_before = site.platform.pids();

    // A bounded loop of user requests that need Finance's credential.
    let token = site.login().await;
    let slug = site.secret("smoke-test-credentials", "company-slug");
    assert_eq!(invoices(&site, &token, &slug).await, 200);
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let worker = {
        let (site, stop, done, failed) = (site.clone(), stop.clone(), done.clone(), failed.clone());
        let slug = slug.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed)
                && started.elapsed() < LOOP_LIMIT
                && done.load(Ordering::Relaxed) < LOOP_MAX_REQUESTS
            {
                let status = invoices(&site, &token, &slug).await;
                done.fetch_add(1, Ordering::Relaxed);
                if status != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                    statuses.push(status);
                }
            }
            statuses
        })
    };

    // The rotation, its previous value kept for 8 s.
    let mut command = site.platform.command(&[
        "secrets",
        "rotate",
        "local",
        "internal-credential-finance",
        "--retire-after",
        "8",
    ]);
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let waiting = site
        .platform
        .state()
        .join("secrets/internal-credential-finance/.previous/token");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !waiting.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(waiting.exists(), "the rotation never kept a previous value");
    // Promoted: the old credential is the previous one and still passes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let new = site.secret("internal-credential-finance", "token");
    assert_ne!(new, old);
    assert_ne!(
        site.as_finance(&old).await,
        401,
        "the previous credential passes"
    );
    assert_ne!(
        site.as_finance(&new).await,
        401,
        "the new credential passes"
    );

    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let statuses = worker.await.unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("rotated internal-credential-finance"),
        "{}",
        stdout(&output)
    );
    for value in [&old, &new] {
        assert!(!stdout(&output).contains(value.as_str()));
        assert!(!stderr(&output).contains(value.as_str()));
    }

    assert!(
        done.load(Ordering::Relaxed) >= 20,
        "too few requests to tell"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the rotation: {statuses:?}"
    );
    assert!(!waiting.exists(), "the previous value is retired");
    assert_eq!(
        site.as_finance(&old).await,
        401,
        "the old credential is refused"
    );
    assert_ne!(site.as_finance(&new).await, 401);
    assert_eq!(invoices(&site, &site.login().await, &slug).await, 200);
    assert_eq!(site.platform.pids(), pids_before, "no service restarted");

    // The smoke fixtures: new passwords through Auth, the old ones refused.
    let accounts = [
        ("user-email", "user-password"),
        ("admin-email", "admin-password"),
    ];
    let before: Vec<(String, String)> = accounts
        .iter()
        .map(|(e, p)| {
            (
                site.secret("smoke-test-credentials", e),
                site.secret("smoke-test-credentials", p),
            )
        })
        .collect();
    let rotated = {
        let site = site.clone();
        tokio::task::spawn_blocking(move || {
            site.platform
                .run(&["secrets", "rotate", "local", "smoke-test-credentials"])
        })
        .await
        .unwrap()
    };
    assert_eq!(rotated.status.code(), Some(0), "{}", stderr(&rotated));
    let mut values = vec![old.clone(), new.clone()];
    for ((email, old_password), (_, key)) in before.iter().zip(accounts) {
        let password = site.secret("smoke-test-credentials", key);
        assert_ne!(&password, old_password, "{key}");
        assert_eq!(site.login_as(email, &password).await.0, 200, "{email}");
        assert_eq!(site.login_as(email, old_password).await.0, 401, "{email}");
        values.extend([password, old_password.clone()]);
    }
    let smoke = {
        let site = site.clone();
        tokio::task::spawn_blocking(move || site.platform.run(&["smoke", "local"]))
            .await
            .unwrap()
    };
    assert_eq!(smoke.status.code(), Some(0), "{}", stdout(&smoke));
    for output in [&rotated, &smoke] {
        for value in &values {
            assert!(!stdout(output).contains(value.as_str()));
            assert!(!stderr(output).contains(value.as_str()));
        }
    }
}
