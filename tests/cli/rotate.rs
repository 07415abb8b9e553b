//! `kisumctl rotate-jwt-key` against the real platform of `deploy local`
//! (the harness of `deploy_local.rs`: debug service binaries, a copy of the
//! matrix on free loopback ports), with short token lifetimes in that copy
//! (access tokens of 20 s, a 5 s JWKS cache, 5 s of clock skew) so that a
//! rotation waits seconds rather than a quarter of an hour.
//!
//! While keys rotate, a bounded load of authenticated requests runs: users
//! read finance invoices and `/auth/me`, a platform admin reads the catalog
//! through Platform Admin, each refreshing its access token before it
//! expires, as a client does. Every 401 is a failed verification.
//!
//! The second test keeps the key set in Secrets Manager (moto on loopback,
//! dummy credentials, AWS's own endpoints pointed at a dead port). A small
//! loop copies `AWSCURRENT` into the file Auth reads, standing in for the
//! secret sync of a cluster (External Secrets, the CSI driver).

use std::collections::BTreeMap;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use kisum_common::jwt::TokenPolicy;
use kisum_common::keys::{KeySet, KeyState};
use serde_json::{Value, json};

use crate::common::{Moto, SEALED_AWS, secret_at, stderr, stdout};
use crate::deploy_local::{Platform, assert_deployed};

/// One platform at a time: each test runs all of it under load.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ACCESS_TTL: i64 = 20;
const CLOCK_SKEW: i64 = 5;
/// A load worker refreshes its token when it has this little time left.
const REFRESH_BEFORE: i64 = 10;
/// Bounds of the load, whatever happens to the test.
const LOAD_LIMIT: Duration = Duration::from_secs(600);
const LOAD_MAX_REQUESTS: u64 = 50_000;

/// A deployed platform with short token lifetimes.
struct Site {
    platform: Platform,
    endpoints: Value,
    http: reqwest::Client,
}

impl Site {
    fn deploy() -> Site {
        let platform = Platform::start();
        for (from, to) in [
            ("access-ttl-seconds: 900", "access-ttl-seconds: 20"),
            ("jwks-cache-seconds: 300", "jwks-cache-seconds: 5"),
            ("clock-skew-seconds: 60", "clock-skew-seconds: 5"),
        ] {
            platform.edit_matrix("base.yaml", from, to);
        }
        assert_deployed(&platform.deploy(&[]));
        let endpoints = std::fs::read_to_string(platform.state().join("endpoints.json")).unwrap();
        Site {
            endpoints: serde_json::from_str(&endpoints).unwrap(),
            platform,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    fn url(&self, service: &str) -> String {
        self.endpoints[service].as_str().unwrap().to_string()
    }

    fn secret(&self, secret: &str, key: &str) -> String {
        let path = self.platform.state().join("secrets").join(secret).join(key);
        std::fs::read_to_string(path).unwrap()
    }

    fn key_set_file(&self) -> std::path::PathBuf {
        self.platform
            .state()
            .join("secrets/jwt-signing-keys/key-set.json")
    }

    fn key_set(&self) -> KeySet {
        KeySet::load(&self.key_set_file()).unwrap()
    }

    fn rotate(&self, args: &[&str]) -> Output {
        self.rotate_with(args, &[])
    }

    /// `kisumctl rotate-jwt-key ARGS` with extra environment variables.
    fn rotate_with(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut all = vec!["rotate-jwt-key"];
        all.extend(args);
        self.platform
            .command(&all)
            .env_remove("AWS_PROFILE")
            .envs(envs.iter().copied())
            .output()
            .unwrap()
    }

    fn status(&self, env: &str) -> Value {
        let output = self.rotate(&[env, "--status", "-o", "json"]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        serde_json::from_slice(&output.stdout).unwrap()
    }

    fn user(&self) -> (String, String) {
        (
            self.secret("smoke-test-credentials", "user-email"),
            self.secret("smoke-test-credentials", "user-password"),
        )
    }

    fn admin(&self) -> (String, String) {
        (
            self.secret("smoke-test-credentials", "admin-email"),
            self.secret("smoke-test-credentials", "admin-password"),
        )
    }

    async fn login(&self, (email, password): &(String, String)) -> Session {
        let response = self
            .http
            .post(format!("{}/auth/login", self.url("auth")))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "login: {status} {body}");
        Session::from_answer(&body)
    }

    /// A request a user would make with `token`; answers its status.
    async fn call(&self, what: Call, token: &str) -> u16 {
        let company = self.secret("smoke-test-credentials", "company-id");
        let request = match what {
            Call::Invoices => self
                .http
                .get(format!("{}/v1/invoices", self.url("finance")))
                .header("x-org", company),
            Call::Me => self.http.get(format!("{}/auth/me", self.url("auth"))),
            Call::Catalog => self
                .http
                .get(format!("{}/admin/catalog", self.url("platform-admin"))),
        };
        match request.bearer_auth(token).send().await {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Call {
    /// Finance: verifies with its JWKS cache.
    Invoices,
    /// Auth: verifies with its own key set.
    Me,
    /// Platform Admin: verifies with its JWKS cache.
    Catalog,
}

#[derive(Debug, Clone)]
struct Session {
    access: String,
    refresh: String,
}

impl Session {
    fn from_answer(body: &Value) -> Session {
        Session {
            access: body["access_token"].as_str().unwrap().to_string(),
            refresh: body["refresh_token"].as_str().unwrap().to_string(),
        }
    }

    fn expires(&self) -> i64 {
        claims(&self.access)["exp"].as_i64().unwrap()
    }
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn kid(token: &str) -> String {
    TokenPolicy::kid_of(token).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token for `session`'s user and session, valid for the access-token
/// lifetime, signed with key `kid` of `set` (as someone holding that
/// private key could make it).
fn forged(set: &KeySet, kid: &str, session: &Session) -> String {
    let claims = claims(&session.access);
    let mut key = set.keys.iter().find(|k| k.kid == kid).unwrap().clone();
    key.state = KeyState::Active;
    let one = KeySet {
        format: set.format.clone(),
        keys: vec![key],
    };
    let policy = TokenPolicy {
        issuer: claims["iss"].as_str().unwrap().to_string(),
        audience: claims["aud"].as_str().unwrap().to_string(),
        leeway_seconds: 0,
    };
    let (user, sid) = (
        claims["sub"].as_str().unwrap(),
        claims["sid"].as_str().unwrap(),
    );
    policy.sign(&one, user, sid, now(), ACCESS_TTL).unwrap()
}

// ------------------------------------------------------------------ load --

/// What the load saw.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    /// 401s: tokens a service refused.
    rejected: Vec<String>,
    /// Anything else that was not a success.
    failures: Vec<String>,
    /// Successful requests per kid of the token used.
    by_kid: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.requests += other.requests;
        self.rejected.extend(other.rejected);
        self.failures.extend(other.failures);
        for (kid, count) in other.by_kid {
            *self.by_kid.entry(kid).or_default() += count;
        }
    }
}

/// Workers sending authenticated requests until stopped, for at most
/// [`LOAD_LIMIT`] and [`LOAD_MAX_REQUESTS`] each.
struct Load {
    stop: Arc<AtomicBool>,
    workers: tokio::task::JoinSet<Tally>,
}

impl Load {
    async fn start(site: &Arc<Site>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = tokio::task::JoinSet::new();
        let plan = [
            (site.user(), [Call::Invoices, Call::Me]),
            (site.user(), [Call::Invoices, Call::Me]),
            (site.admin(), [Call::Catalog, Call::Me]),
        ];
        for (who, calls) in plan {
            let session = site.login(&who).await;
            let (site, stop) = (site.clone(), stop.clone());
            workers.spawn(async move { work(&site, session, &calls, &stop).await });
        }
        Load { stop, workers }
    }

    async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = Tally::default();
        for tally in self.workers.join_all().await {
            total.add(tally);
        }
        total
    }
}

async fn work(site: &Site, mut session: Session, calls: &[Call], stop: &AtomicBool) -> Tally {
    let mut tally = Tally::default();
    let started = Instant::now();
    while !stop.load(Ordering::SeqCst)
        && started.elapsed() < LOAD_LIMIT
        && tally.requests < LOAD_MAX_REQUESTS
    {
        if session.expires() - now() <= REFRESH_BEFORE {
            match refresh(site, &session).await {
                Ok(next) => session = next,
                Err(error) => {
                    tally.failures.push(error);
                    break;
                }
            }
        }
        for call in calls {
            let status = site.call(*call, &session.access).await;
            tally.requests += 1;
            let kid = kid(&session.access);
            match status {
                200 => *tally.by_kid.entry(kid).or_default() += 1,
                401 => tally.rejected.push(format!("{call:?} with {kid}: 401")),
                other => tally.failures.push(format!("{call:?} with {kid}: {other}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tally
}

async fn refresh(site: &Site, session: &Session) -> Result<Session, String> {
    let response = site
        .http
        .post(format!("{}/auth/refresh", site.url("auth")))
        .json(&json!({ "refresh_token": session.refresh }))
        .send()
        .await
        .map_err(|e| format!("refresh: {e}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        return Err(format!("refresh: {status} {body}"));
    }
    Ok(Session::from_answer(&body))
}

fn assert_clean(tally: &Tally, kids: &[&str]) {
    assert!(tally.requests > 100, "too little load: {tally:?}");
    assert!(
        tally.rejected.is_empty(),
        "{} failed verifications during the rotation: {:?}",
        tally.rejected.len(),
        &tally.rejected[..tally.rejected.len().min(10)]
    );
    assert!(tally.failures.is_empty(), "{:?}", tally.failures);
    for kid in kids {
        assert!(
            tally.by_kid.get(*kid).copied().unwrap_or(0) > 0,
            "no request verified with key {kid}: {:?}",
            tally.by_kid
        );
    }
}

/// No private key, and no value of the key set, in the output.
fn assert_no_key_material(site: &Site, output: &Output) {
    let text = stdout(output) + &stderr(output);
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    for key in &site.key_set().keys {
        let line = key.private_key_pem.lines().nth(1).unwrap();
        assert!(
            !text.contains(line),
            "key material of {} in the output",
            key.kid
        );
    }
}

fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{}\n{}",
        stdout(output),
        stderr(output)
    );
}

fn events(status: &Value) -> Vec<(String, String)> {
    status["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["kid"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn state_of(set: &KeySet, kid: &str) -> Option<KeyState> {
    set.keys.iter().find(|k| k.kid == kid).map(|k| k.state)
}

/// `rotate-jwt-key ARGS` on a blocking thread, while the load goes on.
async fn run_blocking(site: &Arc<Site>, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let site = site.clone();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let envs: Vec<(String, String)> = envs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        site.rotate_with(&args, &envs)
    })
    .await
    .unwrap()
}

/// A routine `rotate-jwt-key local` started in the background and waited
/// for until it signs with a key not in `known`: it is then in its
/// token-expiry wait, holding the rotation lock.
async fn rotation_in_its_wait(site: &Site, known: &[&str]) -> std::process::Child {
    let child = site
        .platform
        .command(&["rotate-jwt-key", "local"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !events(&site.status("local"))
        .iter()
        .any(|e| e.0 == "signing" && !known.contains(&e.1.as_str()))
    {
        assert!(Instant::now() < deadline, "the rotation never activated");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_jwt_key_on_local_under_load_then_revoke_a_key() {
    let _one = ONE_AT_A_TIME.lock().await;
    let site = Arc::new(tokio::task::spawn_blocking(Site::deploy).await.unwrap());
    let old = site.key_set().active().kid.clone();

    // Status and a dry run change nothing and show no key material.
    let before = std::fs::read(site.key_set_file()).unwrap();
    let status = site.status("local");
    assert_eq!(status["stage"], "settled", "{status}");
    assert_eq!(status["keys"][0]["kid"], old.as_str());
    let text = site.rotate(&["local", "--status"]);
    assert_exit(&text, 0);
    assert!(stdout(&text).contains(&old), "{}", stdout(&text));
    assert_no_key_material(&site, &text);
    let dry = site.rotate(&["local", "--dry-run"]);
    assert_exit(&dry, 0);
    assert!(
        stdout(&dry).contains("generate a new RSA 2048 key"),
        "{}",
        stdout(&dry)
    );
    assert!(
        stdout(&dry).contains(&format!("make {old} retired")),
        "{}",
        stdout(&dry)
    );
    assert_eq!(std::fs::read(site.key_set_file()).unwrap(), before);
    // Out of order: nothing to activate.
    let early = site.rotate(&["local", "--phase", "activate"]);
    assert_exit(&early, 2);
    assert!(stderr(&early).contains("no next key"), "{}", stderr(&early));

    // The whole rotation under load: no request fails.
    let load = Load::start(&site).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let rotated = run_blocking(&site, &["local"], &[]).await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tally = load.stop().await;
    assert_exit(&rotated, 0);
    assert_no_key_material(&site, &rotated);
    let set = site.key_set();
    let new = set.active().kid.clone();
    assert_ne!(new, old);
    assert_eq!(state_of(&set, &old), Some(KeyState::Retired));
    assert_clean(&tally, &[&old, &new]);
    eprintln!("rotation under load: {tally:?} in {took:?}");
    assert!(
        took >= Duration::from_secs((ACCESS_TTL + CLOCK_SKEW) as u64),
        "retired after {took:?}, before the old tokens expired"
    );
    let progress = stderr(&rotated);
    for step in [
        "prepared key",
        "is active;",
        "every token signed with",
        "is retired",
    ] {
        assert!(progress.contains(step), "no `{step}` in:\n{progress}");
    }
    let status = site.status("local");
    let kinds: Vec<String> = events(&status).into_iter().map(|e| e.0).collect();
    assert_eq!(
        kinds,
        [
            "prepared",
            "published",
            "activated",
            "signing",
            "retired",
            "withdrawn"
        ],
        "{status}"
    );

    // A token signed with the retired key is refused everywhere; the same
    // token signed with the active key passes.
    let user = site.login(&site.user()).await;
    let admin = site.login(&site.admin()).await;
    assert_eq!(kid(&user.access), new);
    for (call, session) in [
        (Call::Invoices, &user),
        (Call::Me, &user),
        (Call::Catalog, &admin),
    ] {
        assert_eq!(
            site.call(call, &forged(&set, &new, session)).await,
            200,
            "{call:?}"
        );
        assert_eq!(
            site.call(call, &forged(&set, &old, session)).await,
            401,
            "{call:?}"
        );
    }

    // A rotation killed while it waits for old tokens to expire is
    // continued by the next run, with the key it had made active.
    let mut child = rotation_in_its_wait(&site, &[new.as_str()]).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let third = site.key_set().active().kid.clone();
    let status = site.status("local");
    assert_eq!(status["stage"], "activated", "{status}");
    assert!(status["retire_after"].is_string(), "{status}");
    let resumed = run_blocking(&site, &["local"], &[]).await;
    assert_exit(&resumed, 0);
    assert!(
        stderr(&resumed).contains(&format!("resuming the rotation to key {third}")),
        "{}",
        stderr(&resumed)
    );
    let set = site.key_set();
    assert_eq!(set.active().kid, third);
    assert_eq!(set.keys.len(), 3, "no other key was made");
    assert_eq!(state_of(&set, &new), Some(KeyState::Retired));

    // Emergency: the active key is revoked; its tokens are refused at once
    // and a new key signs.
    let user = site.login(&site.user()).await;
    let admin = site.login(&site.admin()).await;
    assert_eq!(kid(&user.access), third);
    let refused = site.rotate(&["local", "--emergency", third.as_str()]);
    assert_exit(&refused, 2);
    assert!(stderr(&refused).contains("--yes"), "{}", stderr(&refused));
    assert_eq!(site.key_set().active().kid, third, "nothing changed");
    let unknown = site.rotate(&["local", "--emergency", "0123456789abcdef", "--yes"]);
    assert_exit(&unknown, 2);

    let revoked = site.rotate(&[
        "local",
        "--emergency",
        third.as_str(),
        "--yes",
        "-o",
        "json",
    ]);
    assert_exit(&revoked, 0);
    for (call, session) in [
        (Call::Invoices, &user),
        (Call::Me, &user),
        (Call::Catalog, &admin),
    ] {
        assert_eq!(
            site.call(call, &session.access).await,
            401,
            "{call:?} right after"
        );
    }
    assert_no_key_material(&site, &revoked);
    let report: Value = serde_json::from_slice(&revoked.stdout).unwrap();
    let replacement = report["replacement"].as_str().unwrap().to_string();
    let reloaded: Vec<&str> = report["reloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["service"].as_str().unwrap())
        .collect();
    for service in [
        "auth",
        "platform-core",
        "platform-admin",
        "basic",
        "finance",
        "ai",
    ] {
        assert!(
            reloaded.contains(&service),
            "{service} not reloaded: {reloaded:?}"
        );
    }
    assert!(
        report["reloads"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["error"].is_null() && r["kids"].is_array()),
        "{report}"
    );
    let set = site.key_set();
    assert_eq!(set.active().kid, replacement);
    assert!(state_of(&set, &third).is_none(), "the revoked key is gone");
    let user = site.login(&site.user()).await;
    assert_eq!(kid(&user.access), replacement);
    assert_eq!(site.call(Call::Invoices, &user.access).await, 200);
    // Again: nothing left to remove; every service reloads once more.
    let again = site.rotate(&["local", "--emergency", third.as_str(), "--yes"]);
    assert_exit(&again, 0);
    assert!(stderr(&again).contains("revoked at"), "{}", stderr(&again));

    // An emergency does not wait behind a routine rotation sitting in its
    // token-expiry wait: it stops it, revokes, and says so.
    let mut routine =
        rotation_in_its_wait(&site, &[replacement.as_str(), third.as_str(), new.as_str()]).await;
    let started = Instant::now();
    let preempting = site.rotate(&["local", "--emergency", replacement.as_str(), "--yes"]);
    assert_exit(&preempting, 0);
    assert!(
        stderr(&preempting).contains("stopped the routine rotation"),
        "{}",
        stderr(&preempting)
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the emergency waited {:?}",
        started.elapsed()
    );
    let stopped = routine.wait().unwrap();
    assert!(
        !stopped.success(),
        "the routine rotation was stopped: {stopped:?}"
    );
    assert_eq!(site.call(Call::Invoices, &user.access).await, 401);
    assert!(state_of(&site.key_set(), &replacement).is_none());
}

// ----------------------------------------------------- Secrets Manager --

const KEY_SET_SECRET: &str = "kisum/staging/jwt-signing-keys";

/// The key set of a stage of the key-set secret.
async fn key_set_at(client: &aws_sdk_secretsmanager::Client, stage: &str) -> KeySet {
    let keys = secret_at(client, KEY_SET_SECRET, stage).await.unwrap();
    KeySet::from_json(&keys["key-set.json"]).unwrap()
}

/// Copies `AWSCURRENT` into Auth's key-set file every 200 ms until
/// stopped (at most [`LOAD_LIMIT`]).
fn sync_to_auth(
    client: aws_sdk_secretsmanager::Client,
    file: std::path::PathBuf,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        while !stop.load(Ordering::SeqCst) && started.elapsed() < LOAD_LIMIT {
            let current = key_set_at(&client, "AWSCURRENT").await;
            if KeySet::load(&file).map(|s| s.to_json()).ok() != Some(current.to_json()) {
                current.save(&file).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_jwt_key_with_the_key_set_in_secrets_manager() {
    let _one = ONE_AT_A_TIME.lock().await;
    let moto = Moto::start().await;
    let site = Arc::new(tokio::task::spawn_blocking(Site::deploy).await.unwrap());
    site.platform.edit_matrix(
        "staging.yaml",
        "  prefix: kisum/staging/\n",
        &format!(
            "  prefix: kisum/staging/\n  endpoint: {}\n",
            moto.endpoint()
        ),
    );
    // staging's key set and kisumctl's credential, as the platform uses them.
    let client = moto.secrets_manager();
    let old = site.key_set();
    for (name, key, value) in [
        (KEY_SET_SECRET, "key-set.json", old.to_json()),
        (
            "kisum/staging/internal-credential-kisumctl",
            "token",
            site.secret("internal-credential-kisumctl", "token"),
        ),
    ] {
        client
            .create_secret()
            .name(name)
            .secret_string(json!({ key: value }).to_string())
            .send()
            .await
            .unwrap();
    }
    let stop_sync = Arc::new(AtomicBool::new(false));
    let sync = sync_to_auth(client.clone(), site.key_set_file(), stop_sync.clone());
    let old = old.active().kid.clone();
    let endpoints = site.platform.state().join("endpoints.json");
    let endpoints = endpoints.to_str().unwrap().to_string();
    let staging_args = |args: &[&str]| {
        let mut all = vec!["staging", "--endpoints", endpoints.as_str()];
        all.extend(args);
        all.into_iter().map(str::to_string).collect::<Vec<String>>()
    };
    let staging = |args: &[&str]| {
        let all = staging_args(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        site.rotate_with(&all, &SEALED_AWS)
    };
    let status = |args: &[&str]| -> Value {
        let mut all = vec!["--status", "-o", "json"];
        all.extend(args);
        serde_json::from_slice(&staging(&all).stdout).unwrap()
    };
    let versions = |status: &Value| status["versions"].as_array().unwrap().len();

    let load = Load::start(&site).await;
    let all = staging_args(&["--phase", "prepare", "-o", "json"]);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let prepared = run_blocking(&site, &all, &SEALED_AWS).await;
    assert_exit(&prepared, 0);
    let next = serde_json::from_slice::<Value>(&prepared.stdout).unwrap()["prepared"]
        .as_str()
        .unwrap()
        .to_string();
    let after_prepare = versions(&status(&[]));
    assert_eq!(after_prepare, 2, "the first version and the prepared one");
    // Again: the same key, no new version.
    let again = staging(&["--phase", "prepare", "-o", "json"]);
    assert_exit(&again, 0);
    assert!(
        stderr(&again).contains("prepared already"),
        "{}",
        stderr(&again)
    );
    assert_eq!(versions(&status(&[])), after_prepare);

    let all = staging_args(&["--phase", "activate"]);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    assert_exit(&run_blocking(&site, &all, &SEALED_AWS).await, 0);
    let activated = key_set_at(&client, "AWSCURRENT").await;
    assert_eq!(activated.active().kid, next);
    assert_eq!(state_of(&activated, &old), Some(KeyState::Retiring));
    // While it retires, the old key still verifies.
    let user = site.login(&site.user()).await;
    assert_eq!(
        site.call(Call::Invoices, &forged(&activated, &old, &user))
            .await,
        200
    );

    // Retire alone asks for confirmation: without a terminal, --yes.
    assert_exit(&staging(&["--phase", "retire"]), 2);
    let all = staging_args(&["--phase", "retire", "--yes"]);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let retired = run_blocking(&site, &all, &SEALED_AWS).await;
    assert_exit(&retired, 0);
    assert_no_key_material(&site, &retired);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tally = load.stop().await;
    assert_clean(&tally, &[&old, &next]);
    eprintln!("rotation on Secrets Manager under load: {tally:?}");

    // AWSCURRENT holds the retired set, AWSPREVIOUS the activated one.
    let current = key_set_at(&client, "AWSCURRENT").await;
    let previous = key_set_at(&client, "AWSPREVIOUS").await;
    assert_eq!(current.active().kid, next);
    assert_eq!(state_of(&current, &old), Some(KeyState::Retired));
    assert_eq!(state_of(&previous, &old), Some(KeyState::Retiring));
    let status = status(&[]);
    let stages: Vec<&str> = status["versions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| v["stages"].as_array().unwrap())
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(stages.contains(&"AWSCURRENT"), "{status}");
    assert!(stages.contains(&"AWSPREVIOUS"), "{status}");
    let text = staging(&["--status"]);
    assert_exit(&text, 0);
    assert!(stdout(&text).contains("AWSCURRENT"), "{}", stdout(&text));
    assert_no_key_material(&site, &text);

    // The retired key is refused.
    assert_eq!(
        site.call(Call::Invoices, &forged(&current, &old, &user))
            .await,
        401
    );
    assert_eq!(
        site.call(Call::Me, &forged(&current, &old, &user)).await,
        401
    );
    stop_sync.store(true, Ordering::SeqCst);
    sync.await.unwrap();
}
