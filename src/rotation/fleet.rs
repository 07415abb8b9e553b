//! The services that hold keys, as kisumctl sees them through their
//! internal routes: `GET /internal/diagnostics` (the kids a service would
//! verify with now and, for Auth, the kid it signs with) and
//! `POST /internal/keys/reload`, both with kisumctl's internal credential.
//!
//! Which services, from the matrix: a **signer** reads the JWT key set
//! (Auth); a **verifier** is configured with Auth's JWKS URL (the module
//! backends, Platform Admin); any other service whose internal routes
//! include the key reload is only told to reload in an emergency.
//!
//! Where they are: `local` at the internal URLs `deploy local` wrote to
//! `<state-dir>/endpoints.json`; any environment at the URLs of an
//! endpoints file given on the command line (one or several URLs per
//! service, one per instance); otherwise at each service's in-cluster
//! address, where every poll opens a new connection so the Service spreads
//! the polls over its pods, and a service counts as converged once as many
//! distinct instances as its replica count have answered, each with the
//! expected keys.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::local::checks::internal_headers;
use crate::local::probe::without_url;
use crate::matrix::Environment;
use crate::matrix::model::ConfigValue;
use crate::matrix::schema::Generation;
use crate::secrets::Secret;

pub const DIAGNOSTICS: &str = "/internal/diagnostics";
pub const RELOAD: &str = "/internal/keys/reload";
/// How often the services are asked again while waiting.
const POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Signs tokens with the active key and publishes the JWKS (Auth).
    Signer,
    /// Verifies tokens against Auth's JWKS.
    Verifier,
    /// Holds no keys but has the reload route.
    Reloadable,
}

/// One URL kisumctl polls.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub service: String,
    /// The internal base URL, without a trailing slash.
    pub url: String,
    pub role: Role,
    /// Distinct instances expected to answer at this URL.
    pub instances: u32,
}

/// What one instance reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    #[serde(default)]
    pub instance: String,
    #[serde(default)]
    pub kids: Vec<String>,
    #[serde(default)]
    pub signing_kid: Option<String>,
}

/// What the services must report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expect {
    /// Kids every signer and verifier must have.
    pub present: Vec<String>,
    /// Kids none may have.
    pub absent: Vec<String>,
    /// The kid every signer must sign with.
    pub signing: Option<String>,
}

impl Expect {
    fn met_by(&self, role: Role, report: &Report) -> bool {
        let kids: BTreeSet<&str> = report.kids.iter().map(String::as_str).collect();
        self.present.iter().all(|k| kids.contains(k.as_str()))
            && self.absent.iter().all(|k| !kids.contains(k.as_str()))
            && (role != Role::Signer
                || self.signing.is_none()
                || report.signing_kid == self.signing)
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.present.is_empty() {
            parts.push(format!("has {}", self.present.join(", ")));
        }
        if !self.absent.is_empty() {
            parts.push(format!("no longer has {}", self.absent.join(", ")));
        }
        if let Some(kid) = &self.signing {
            parts.push(format!("Auth signs with {kid}"));
        }
        parts.join("; ")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{path}: {message}")]
    Endpoints { path: String, message: String },
    #[error("{env} is not deployed: run `kisumctl deploy {env}` ({path} does not exist)")]
    NotDeployed { env: String, path: String },
    #[error(
        "after {waited} s not every service {expectation}:\n{}",
        lagging.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
    )]
    NotConverged {
        waited: u64,
        expectation: String,
        lagging: Vec<String>,
    },
}

/// The outcome of telling one service to reload.
#[derive(Debug, Clone, Serialize)]
pub struct Reloaded {
    pub service: String,
    pub url: String,
    /// The kids it reported after reloading.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kids: Option<Vec<String>>,
    /// Why it did not reload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone)]
pub struct Fleet {
    targets: Vec<Target>,
    client: reqwest::Client,
    token: Arc<Secret>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

/// The role of each service of the matrix that has one.
pub fn roles(env: &Environment) -> BTreeMap<String, Role> {
    let key_set = env
        .base
        .secrets
        .iter()
        .find(|(_, s)| s.generate == Generation::RsaKeySet)
        .map(|(id, _)| id.as_str());
    let mut roles = BTreeMap::new();
    for service in env.services.values() {
        let signs = service.config.values().any(|value| {
            matches!(value, ConfigValue::Secret { secret, .. } if Some(secret.as_str()) == key_set)
        });
        let verifies = service
            .config
            .iter()
            .any(|(name, value)| name.ends_with("JWKS_URL") && *value != ConfigValue::Unset);
        let reloads = service.spec.internal_routes.iter().any(|r| r == RELOAD);
        let role = if signs {
            Some(Role::Signer)
        } else if verifies {
            Some(Role::Verifier)
        } else if reloads {
            Some(Role::Reloadable)
        } else {
            None
        };
        if let Some(role) = role {
            roles.insert(service.id.to_string(), role);
        }
    }
    roles
}

/// The internal URLs of an endpoints file: `{"internal": {"auth": URL or
/// [URL, ...], ...}}` (the `endpoints.json` of `deploy local` is one).
fn endpoints_file(path: &Path) -> Result<BTreeMap<String, Vec<String>>, FleetError> {
    let bad = |message: String| FleetError::Endpoints {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Urls {
        One(String),
        Several(Vec<String>),
    }
    #[derive(Deserialize)]
    struct File {
        internal: BTreeMap<String, Urls>,
    }
    let file: File =
        serde_json::from_str(&text).map_err(|e| bad(format!("not an endpoints file: {e}")))?;
    let mut urls = BTreeMap::new();
    for (service, value) in file.internal {
        let list = match value {
            Urls::One(url) => vec![url],
            Urls::Several(list) => list,
        };
        for url in &list {
            let parsed =
                reqwest::Url::parse(url).map_err(|e| bad(format!("{service}: `{url}`: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(bad(format!("{service}: `{url}` is not an http(s) URL")));
            }
        }
        let list = list
            .into_iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect();
        urls.insert(service, list);
    }
    Ok(urls)
}

impl Fleet {
    /// The services of `env` that hold or reload keys, and where to reach
    /// them (see the module's documentation). `token` is kisumctl's
    /// internal credential.
    pub fn for_environment(
        env: &Environment,
        state_dir: &Path,
        endpoints: Option<&Path>,
        token: Secret,
    ) -> Result<Fleet, FleetError> {
        let local = crate::local::state::StateDir::new(state_dir.to_path_buf()).endpoints();
        let listed = match endpoints {
            Some(path) => Some((path.to_path_buf(), endpoints_file(path)?)),
            None if env.name == "local" => {
                if !local.exists() {
                    return Err(FleetError::NotDeployed {
                        env: env.name.to_string(),
                        path: local.display().to_string(),
                    });
                }
                Some((local.clone(), endpoints_file(&local)?))
            }
            None => None,
        };
        let mut targets = Vec::new();
        for (service, role) in roles(env) {
            let resolved = &env.services[service.as_str()];
            match &listed {
                Some((path, urls)) => {
                    let list = urls
                        .get(&service)
                        .filter(|l| !l.is_empty())
                        .ok_or_else(|| FleetError::Endpoints {
                            path: path.display().to_string(),
                            message: format!("no internal URL for `{service}`"),
                        })?;
                    targets.extend(list.iter().map(|url| Target {
                        service: service.clone(),
                        url: url.clone(),
                        role,
                        instances: 1,
                    }));
                }
                None => targets.push(Target {
                    url: format!(
                        "http://{service}.{}.svc:{}",
                        env.file.namespace, resolved.spec.ports.internal
                    ),
                    service: service.clone(),
                    role,
                    instances: resolved.replicas.max(1),
                }),
            }
        }
        targets.sort_by(|a, b| (a.role, &a.service, &a.url).cmp(&(b.role, &b.service, &b.url)));
        Ok(Fleet::new(targets, token))
    }

    pub fn new(targets: Vec<Target>, token: Secret) -> Fleet {
        // No idle connections: behind a Service, each poll may reach
        // another instance.
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Fleet {
            targets,
            client,
            token: Arc::new(token),
        }
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// The services that must confirm keys (signers and verifiers).
    pub fn holders(&self) -> impl Iterator<Item = &Target> {
        self.targets.iter().filter(|t| t.role != Role::Reloadable)
    }

    /// Calls an internal route of `target` as kisumctl; the JSON answer.
    async fn internal<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        target: &Target,
        path: &str,
    ) -> Result<T, String> {
        let response = self
            .client
            .request(method, format!("{}{path}", target.url))
            .headers(internal_headers(&self.token))
            .send()
            .await
            .map_err(|e| format!("unreachable: {}", without_url(&e)))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let body: String = body.chars().take(200).collect();
            return Err(format!("{path} answered {status}: {body}"));
        }
        response
            .json()
            .await
            .map_err(|e| format!("{path}: unreadable answer: {e}"))
    }

    async fn diagnostics(&self, target: &Target) -> Result<Report, String> {
        self.internal(reqwest::Method::GET, target, DIAGNOSTICS)
            .await
    }

    async fn reload(&self, target: &Target) -> Result<Vec<String>, String> {
        #[derive(Deserialize)]
        struct Kids {
            kids: Vec<String>,
        }
        let kids: Kids = self.internal(reqwest::Method::POST, target, RELOAD).await?;
        Ok(kids.kids)
    }

    /// Tells every service with the reload route to reload its keys: the
    /// signers first (verifiers fetch what they publish), then the others
    /// together.
    pub async fn reload_all(&self) -> Vec<Reloaded> {
        let mut results = Vec::new();
        for target in self.targets.iter().filter(|t| t.role == Role::Signer) {
            for _ in 0..target.instances {
                results.push(self.reloaded(target).await);
            }
        }
        let mut others = tokio::task::JoinSet::new();
        for target in self.targets.iter().filter(|t| t.role != Role::Signer) {
            for _ in 0..target.instances {
                let (fleet, target) = (self.clone(), target.clone());
                others.spawn(async move { fleet.reloaded(&target).await });
            }
        }
        let mut rest: Vec<Reloaded> = others.join_all().await;
        rest.sort_by(|a, b| (&a.service, &a.url).cmp(&(&b.service, &b.url)));
        results.extend(rest);
        results
    }

    async fn reloaded(&self, target: &Target) -> Reloaded {
        let (kids, error) = match self.reload(target).await {
            Ok(kids) => (Some(kids), None),
            Err(error) => (None, Some(error)),
        };
        Reloaded {
            service: target.service.clone(),
            url: target.url.clone(),
            kids,
            error,
        }
    }

    /// Polls the signers and verifiers until every instance meets `expect`
    /// or `timeout` passes. Laggards are told to reload: a signer at once
    /// (it re-reads the key set), a verifier once every signer is done (it
    /// fetches the JWKS they publish). `converged` hears each service's name
    /// once it has met the expectation.
    pub async fn converge(
        &self,
        expect: &Expect,
        timeout: Duration,
        converged: &(dyn Fn(&str) + Sync),
    ) -> Result<(), FleetError> {
        let started = Instant::now();
        let holders: Vec<Target> = self.holders().cloned().collect();
        // Per target: the latest report of every instance heard from.
        let mut heard: Vec<BTreeMap<String, Report>> = vec![BTreeMap::new(); holders.len()];
        let mut told: BTreeSet<String> = BTreeSet::new();
        loop {
            let errors = self.poll(&holders, &mut heard).await;
            let done: Vec<bool> = holders
                .iter()
                .zip(&heard)
                .zip(&errors)
                .map(|((target, reports), error)| {
                    error.is_none()
                        && reports.len() >= target.instances as usize
                        && reports.values().all(|r| expect.met_by(target.role, r))
                })
                .collect();
            for (target, _) in holders.iter().zip(&done).filter(|(_, done)| **done) {
                let all_of_service = holders
                    .iter()
                    .zip(&done)
                    .filter(|(t, _)| t.service == target.service)
                    .all(|(_, d)| *d);
                if all_of_service && told.insert(target.service.clone()) {
                    converged(&target.service);
                }
            }
            if done.iter().all(|d| *d) {
                return Ok(());
            }
            if started.elapsed() >= timeout {
                let lagging = holders
                    .iter()
                    .zip(&heard)
                    .zip(&errors)
                    .zip(&done)
                    .filter(|(_, done)| !**done)
                    .map(|(((target, reports), error), _)| lagging(target, reports, error))
                    .collect();
                return Err(FleetError::NotConverged {
                    waited: started.elapsed().as_secs(),
                    expectation: expect.describe(),
                    lagging,
                });
            }
            self.nudge(&holders, &done).await;
            tokio::time::sleep(POLL).await;
        }
    }

    /// One round of diagnostics from every target (as many polls as it has
    /// instances); answers each target's error of this round, if any.
    async fn poll(
        &self,
        holders: &[Target],
        heard: &mut [BTreeMap<String, Report>],
    ) -> Vec<Option<String>> {
        let mut polls = tokio::task::JoinSet::new();
        for (index, target) in holders.iter().enumerate() {
            for _ in 0..target.instances {
                let (fleet, target) = (self.clone(), target.clone());
                polls.spawn(async move { (index, fleet.diagnostics(&target).await) });
            }
        }
        let mut errors = vec![None; holders.len()];
        for (index, outcome) in polls.join_all().await {
            match outcome {
                Ok(report) => {
                    // A URL of one instance: only its latest answer counts
                    // (a restarted process answers under a new name).
                    if holders[index].instances == 1 {
                        heard[index].clear();
                    }
                    heard[index].insert(report.instance.clone(), report);
                }
                Err(error) => errors[index] = Some(error),
            }
        }
        errors
    }

    async fn nudge(&self, holders: &[Target], done: &[bool]) {
        let signers_done = holders
            .iter()
            .zip(done)
            .all(|(t, d)| t.role != Role::Signer || *d);
        let mut reloads = tokio::task::JoinSet::new();
        for (target, _) in holders.iter().zip(done).filter(|(_, d)| !**d) {
            if target.role == Role::Signer || signers_done {
                let (fleet, target) = (self.clone(), target.clone());
                reloads.spawn(async move {
                    let _ = fleet.reload(&target).await;
                });
            }
        }
        reloads.join_all().await;
    }
}

fn lagging(target: &Target, reports: &BTreeMap<String, Report>, error: &Option<String>) -> String {
    let mut text = format!("{} ({})", target.service, target.url);
    if let Some(error) = error {
        text.push_str(&format!(": {error}"));
    }
    if reports.len() < target.instances as usize {
        text.push_str(&format!(
            ": {} of {} instances answered",
            reports.len(),
            target.instances
        ));
    }
    for report in reports.values() {
        text.push_str(&format!(
            "; {} has [{}]",
            if report.instance.is_empty() {
                "?"
            } else {
                &report.instance
            },
            report.kids.join(", ")
        ));
        if let Some(kid) = &report.signing_kid {
            text.push_str(&format!(", signs with {kid}"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;

    fn matrix() -> Matrix {
        Matrix::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("environments")).unwrap()
    }

    #[test]
    fn roles_come_from_the_matrix() {
        let matrix = matrix();
        let env = matrix.environment("staging").unwrap();
        let roles = roles(&env);
        assert_eq!(roles["auth"], Role::Signer);
        for verifier in [
            "basic",
            "finance",
            "market",
            "touring",
            "venue",
            "ai",
            "platform-admin",
        ] {
            assert_eq!(roles[verifier], Role::Verifier, "{verifier}");
        }
        assert_eq!(roles["platform-core"], Role::Reloadable);
    }

    #[test]
    fn without_an_endpoints_file_the_in_cluster_addresses_are_used() {
        let matrix = matrix();
        let env = matrix.environment("staging").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let fleet = Fleet::for_environment(&env, dir.path(), None, Secret::new("t")).unwrap();
        let auth = fleet
            .targets()
            .iter()
            .find(|t| t.service == "auth")
            .unwrap();
        assert_eq!(auth.url, "http://auth.kisum-staging.svc:9101");
        assert_eq!(auth.instances, env.services["auth"].replicas);
        assert_eq!(fleet.targets()[0].role, Role::Signer);
    }

    #[test]
    fn an_endpoints_file_lists_one_or_several_urls_per_service() {
        let matrix = matrix();
        let env = matrix.environment("staging").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pods.json");
        let mut internal = serde_json::Map::new();
        for service in roles(&env).keys() {
            internal.insert(service.clone(), "http://127.0.0.1:1/".into());
        }
        internal.insert(
            "auth".into(),
            serde_json::json!(["http://127.0.0.1:2", "http://127.0.0.1:3"]),
        );
        let document = serde_json::json!({ "internal": internal });
        std::fs::write(&path, document.to_string()).unwrap();
        let fleet =
            Fleet::for_environment(&env, dir.path(), Some(&path), Secret::new("t")).unwrap();
        let auth: Vec<&str> = fleet
            .targets()
            .iter()
            .filter(|t| t.service == "auth")
            .map(|t| t.url.as_str())
            .collect();
        assert_eq!(auth, ["http://127.0.0.1:2", "http://127.0.0.1:3"]);
        assert!(fleet.targets().iter().all(|t| t.instances == 1));
        assert!(fleet.targets().iter().all(|t| !t.url.ends_with('/')));

        internal.remove("finance");
        let document = serde_json::json!({ "internal": internal });
        std::fs::write(&path, document.to_string()).unwrap();
        let error = Fleet::for_environment(&env, dir.path(), Some(&path), Secret::new("t"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("no internal URL for `finance`"), "{error}");
    }

    #[test]
    fn local_needs_a_deployment() {
        let matrix = matrix();
        let env = matrix.environment("local").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let error = Fleet::for_environment(&env, dir.path(), None, Secret::new("t"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("run `kisumctl deploy local`"), "{error}");
    }

    #[test]
    fn an_expectation_checks_kids_and_the_signing_kid_of_signers_only() {
        let expect = Expect {
            present: vec!["b".into()],
            absent: vec!["x".into()],
            signing: Some("b".into()),
        };
        let report = |kids: &[&str], signing: Option<&str>| Report {
            instance: "i".into(),
            kids: kids.iter().map(|k| k.to_string()).collect(),
            signing_kid: signing.map(str::to_string),
        };
        assert!(expect.met_by(Role::Signer, &report(&["a", "b"], Some("b"))));
        assert!(!expect.met_by(Role::Signer, &report(&["a", "b"], Some("a"))));
        assert!(expect.met_by(Role::Verifier, &report(&["a", "b"], None)));
        assert!(!expect.met_by(Role::Verifier, &report(&["a"], None)));
        assert!(!expect.met_by(Role::Verifier, &report(&["b", "x"], None)));
        assert_eq!(
            expect.describe(),
            "has b; no longer has x; Auth signs with b"
        );
    }
}
