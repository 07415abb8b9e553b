//! Deploy, rollback, prune and diff of one environment's namespace.
//!
//! A deploy takes the environment's Lease, runs each service's migrations
//! as a Job (in release order, each read back before the next), applies
//! the manifests wave by wave and waits for every Deployment of a wave
//! before the next starts, runs the smoke checks, then prunes what the
//! matrix no longer names and records the release. A rollout that times
//! out or a failed smoke check records the release as failed and applies
//! the previous release's stored manifests again (unless the schema guard
//! forbids it). Errors of the API itself (a refused apply, a lost
//! connection) stop the deploy where it stands, without a rollback: the
//! cluster's state is then unknown, and the report says what was applied.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use super::api::{ApiError, Namespace};
use super::history::{self, Crossing, HistoryError, Outcome, Record};
use super::job;
use super::lease::{self, Holder, LockError};
use super::manifest::{Manifests, Object};
use super::rollout::{self, Health};
use crate::smoke;

/// How often a wait reads the objects it waits for.
const POLL: Duration = Duration::from_millis(250);

/// How long the environment's Lease lasts without renewal.
pub const LOCK_DURATION: Duration = Duration::from_secs(60);

/// The ownership labels: objects carrying both are kisumctl's to prune.
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const ENVIRONMENT: &str = "kisum.io/environment";
const COMPONENT: &str = "app.kubernetes.io/component";

/// The kinds `render` emits inside the namespace, the ones prune looks at.
const PRUNED_KINDS: [(&str, &str); 11] = [
    ("v1", "ServiceAccount"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("policy/v1", "PodDisruptionBudget"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("networking.k8s.io/v1", "Ingress"),
    ("external-secrets.io/v1", "ExternalSecret"),
    ("batch/v1", "CronJob"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
];

/// What the library reports while it works; the CLI prints it.
pub trait Progress: Sync {
    /// A step started or ended: one line.
    fn step(&self, line: &str);
    /// What a wait is waiting for now (a spinner's text).
    fn waiting(&self, what: &str);
}

/// One environment, as a deploy or rollback needs it.
pub struct Target<'a> {
    pub environment: &'a str,
    pub namespace: Namespace,
    /// Rollout timeout per service id; `default_timeout` for the others.
    pub timeouts: BTreeMap<String, Duration>,
    pub default_timeout: Duration,
    pub history_limit: u32,
    /// Where and as whom the smoke checks run; `None` skips them.
    pub smoke: Option<(smoke::Target, smoke::Credentials)>,
    /// Who deploys, for the history and the Lease.
    pub who: String,
}

impl Target<'_> {
    fn timeout(&self, service: &str) -> Duration {
        self.timeouts
            .get(service)
            .copied()
            .unwrap_or(self.default_timeout)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Conclusion {
    Deployed,
    DryRun,
    /// The release failed and the previous one runs again.
    RolledBack,
    /// The release failed and could not be rolled back.
    Failed,
    /// The release failed, and so did the rollout of the automatic
    /// rollback: neither release runs cleanly.
    RollbackFailed,
}

/// Where a release stopped: the wave (none for the migrations, which run
/// before the waves) and the object that did not finish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoppedAt {
    pub wave: Option<u8>,
    pub object: String,
}

impl std::fmt::Display for StoppedAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.wave {
            Some(wave) => write!(f, "wave {wave}, {}", self.object),
            None => write!(f, "migrations, {}", self.object),
        }
    }
}

/// A wave as it was applied.
#[derive(Debug, Clone, Serialize)]
pub struct Wave {
    pub wave: u8,
    pub services: Vec<String>,
    pub objects: usize,
    #[serde(rename = "seconds")]
    pub seconds: f64,
}

/// A migration Job as it ended.
#[derive(Debug, Clone, Serialize)]
pub struct Migration {
    pub service: String,
    pub job: String,
    pub level: u32,
    /// The last lines of its log.
    pub log: String,
}

/// The outcome of a deploy or rollback.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub environment: String,
    pub result: Conclusion,
    /// The release recorded (for a failed deploy: the failed release).
    pub release: Option<u32>,
    pub digest: String,
    pub migrations: Vec<Migration>,
    pub waves: Vec<Wave>,
    /// Why the release failed.
    pub failure: Option<String>,
    /// Where the failed release stopped, when an object did not finish.
    pub stopped_at: Option<StoppedAt>,
    pub smoke: Option<smoke::Report>,
    pub rollback: Option<Rollback>,
    /// `Kind/name` of what was pruned (or, in a dry run, would be).
    pub pruned: Vec<String>,
    /// A stale holder whose lock was taken over.
    pub stale_lock: Option<Holder>,
    /// What a person does next, when the rollback failed too.
    pub next: Option<String>,
}

/// An automatic rollback after a failed release.
#[derive(Debug, Clone, Serialize)]
pub struct Rollback {
    /// The release applied again.
    pub to: Option<u32>,
    /// The release recorded for the rollback (as `failed` when its own
    /// rollout failed).
    pub release: Option<u32>,
    /// Whether its manifests were applied at all (not refused by the
    /// guard, and there was a release to go back to).
    pub attempted: bool,
    pub done: bool,
    pub detail: String,
    /// Where the rollback's own rollout stopped, when it failed there.
    pub stopped_at: Option<StoppedAt>,
    pub smoke_passed: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("{error}{}", applied_note(.applied))]
    Api {
        error: ApiError,
        /// `Kind/name` of what was applied before the error.
        applied: Vec<String>,
    },
    #[error("manifests: {0}")]
    Manifest(#[from] super::manifest::ManifestError),
    #[error(
        "rollback to release {target} refused: {}; rerun with --force if the older code is known to run on the newer schema",
        crossings.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Guard {
        target: u32,
        crossings: Vec<Crossing>,
    },
    #[error("rolling back to release {to} failed too: {why}")]
    Restore {
        to: u32,
        /// The release number the failed attempt is recorded under.
        recorded: Option<u32>,
        why: String,
    },
    #[error("{0}")]
    Failed(String),
}

fn applied_note(applied: &[String]) -> String {
    if applied.is_empty() {
        " (nothing was applied)".into()
    } else {
        format!(
            " (applied before it: {}; the namespace is partly updated: rerun the deploy, or `kisumctl rollback`)",
            applied.len()
        )
    }
}

/// Why a release failed while rolling out.
enum Failure {
    /// A rollout or Job did not finish in time, or failed: roll back.
    Rollout(String),
    /// The API refused or the connection failed: stop.
    Api(ApiError),
}

/// Applies objects and waits, remembering what was applied.
struct Applier<'a> {
    target: &'a Target<'a>,
    progress: &'a dyn Progress,
    applied: Vec<String>,
    dry_run: bool,
    /// The wave being applied; `None` before the waves (migrations).
    wave: Option<u8>,
    /// Where the last rollout failure happened.
    stopped_at: Option<StoppedAt>,
}

impl Applier<'_> {
    /// Notes where a release stopped; the failure to return.
    fn stop(&mut self, object: String, why: String) -> Failure {
        self.stopped_at = Some(StoppedAt {
            wave: self.wave,
            object,
        });
        Failure::Rollout(why)
    }

    async fn apply(&mut self, object: &Value) -> Result<(), ApiError> {
        self.target.namespace.apply(object, self.dry_run).await?;
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        self.applied.push(format!("{kind}/{name}"));
        Ok(())
    }

    /// Every wave: its objects applied, then its Deployments waited for.
    async fn waves(&mut self, manifests: &Manifests, waves: &mut Vec<Wave>) -> Result<(), Failure> {
        let objects = manifests
            .objects()
            .map_err(|e| Failure::Rollout(e.to_string()))?;
        for (wave, services) in manifests.waves() {
            let started = Instant::now();
            self.wave = Some(wave);
            let members: Vec<&Object> = objects.iter().filter(|o| o.wave == wave).collect();
            self.progress.step(&format!(
                "wave {wave}: {} ({} objects)",
                services.join(", "),
                members.len()
            ));
            for object in &members {
                self.apply(&object.value).await.map_err(Failure::Api)?;
            }
            if !self.dry_run {
                let deployments: Vec<&str> = members
                    .iter()
                    .filter(|o| o.kind() == "Deployment")
                    .map(|o| o.name())
                    .collect();
                self.wait_for_rollouts(&deployments).await?;
            }
            waves.push(Wave {
                wave,
                services,
                objects: members.len(),
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        self.wave = None;
        Ok(())
    }

    /// Waits until every Deployment has rolled out, each within its own
    /// timeout.
    async fn wait_for_rollouts(&mut self, names: &[&str]) -> Result<(), Failure> {
        let started = Instant::now();
        let mut pending: BTreeMap<&str, String> = names
            .iter()
            .map(|n| (*n, "not read yet".to_string()))
            .collect();
        while !pending.is_empty() {
            let mut done = Vec::new();
            for (name, last) in pending.iter_mut() {
                let live = self
                    .target
                    .namespace
                    .get("apps/v1", "Deployment", name)
                    .await
                    .map_err(Failure::Api)?;
                let health = match live {
                    Some(object) => rollout::deployment(&object),
                    None => Health::Waiting("not found".into()),
                };
                match health {
                    Health::Done => done.push(*name),
                    Health::Failed(why) => {
                        let why = format!("the rollout of Deployment/{name} failed: {why}");
                        return Err(self.stop(format!("Deployment/{name}"), why));
                    }
                    Health::Waiting(why) => *last = why,
                }
                let limit = self.target.timeout(name);
                if !done.contains(name) && started.elapsed() >= limit {
                    let why = format!(
                        "the rollout of Deployment/{name} timed out after {} s: {last}",
                        limit.as_secs()
                    );
                    return Err(self.stop(format!("Deployment/{name}"), why));
                }
            }
            for name in done {
                pending.remove(name);
                self.progress
                    .step(&format!("  Deployment/{name} rolled out"));
            }
            if let Some((name, why)) = pending.iter().next() {
                self.progress.waiting(&format!("Deployment/{name}: {why}"));
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(())
    }

    /// Each service's migrations as a Job, in release order; each must
    /// complete before the next starts.
    async fn migrations(
        &mut self,
        manifests: &Manifests,
        release: u32,
        found: &mut Vec<Migration>,
    ) -> Result<(), Failure> {
        let objects = manifests
            .objects()
            .map_err(|e| Failure::Rollout(e.to_string()))?;
        let mut services: Vec<(u8, &String)> = manifests
            .schema
            .keys()
            .map(|s| {
                (
                    manifests
                        .waves
                        .get(&format!("{s}.yaml"))
                        .copied()
                        .unwrap_or(0),
                    s,
                )
            })
            .collect();
        services.sort();
        for (_, service) in services {
            let Some(deployment) = objects
                .iter()
                .find(|o| o.kind() == "Deployment" && o.name() == service)
            else {
                continue;
            };
            let Some(policy) = objects
                .iter()
                .find(|o| o.kind() == "NetworkPolicy" && o.name() == service)
            else {
                continue;
            };
            let timeout = self.target.timeout(service);
            let (job, job_policy) = migration_job(deployment, policy, release, timeout);
            let job_name = job["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            self.progress.step(&format!("migrations: Job/{job_name}"));
            self.apply(&job_policy).await.map_err(Failure::Api)?;
            self.apply(&job).await.map_err(Failure::Api)?;
            let log = if self.dry_run {
                String::new()
            } else {
                self.wait_for_job(&job_name, timeout).await?
            };
            found.push(Migration {
                service: service.clone(),
                job: job_name,
                level: manifests.schema[service].level,
                log,
            });
        }
        Ok(())
    }

    /// Waits for a migration Job; the tail of its pod's log.
    async fn wait_for_job(&mut self, name: &str, timeout: Duration) -> Result<String, Failure> {
        let ended = job::watch(&self.target.namespace, name, timeout, 5, self.progress)
            .await
            .map_err(Failure::Api)?;
        let object = format!("Job/{name}");
        match ended {
            job::Ended::Complete { log } => Ok(log),
            job::Ended::Failed { why, log } => {
                let tail = if log.is_empty() {
                    String::new()
                } else {
                    format!("; its log ends with: {log}")
                };
                Err(self.stop(object, format!("migration Job/{name} failed: {why}{tail}")))
            }
            job::Ended::TimedOut { why } => {
                let why = format!(
                    "migration Job/{name} timed out after {} s: {why}",
                    timeout.as_secs()
                );
                Err(self.stop(object, why))
            }
        }
    }
}

/// The Job that runs a service's migrations with the service's own pod
/// (image, configuration, secrets), and the NetworkPolicy that lets it
/// reach what the service reaches. Its pods carry a label of their own,
/// so the service's Service never routes to them.
fn migration_job(
    deployment: &Object,
    policy: &Object,
    release: u32,
    timeout: Duration,
) -> (Value, Value) {
    let service = deployment.name();
    let label = format!("{service}-migrate");
    let mut labels = deployment.value["metadata"]["labels"].clone();
    labels["app.kubernetes.io/name"] = json!(label);
    labels[COMPONENT] = json!("migration");
    labels[history::RELEASE_LABEL] = json!(release.to_string());
    let mut pod = deployment.value["spec"]["template"].clone();
    pod["metadata"]["labels"] = json!({ "app.kubernetes.io/name": label, COMPONENT: "migration" });
    pod["spec"]["restartPolicy"] = json!("Never");
    if let Some(container) = pod["spec"]["containers"].get_mut(0) {
        container["args"] = json!(["migrate"]);
        if let Some(map) = container.as_object_mut() {
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                map.remove(probe);
            }
            map.remove("ports");
        }
    }
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": format!("{service}-migrate-{release}"),
            "namespace": deployment.value["metadata"]["namespace"],
            "labels": labels,
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": timeout.as_secs(),
            "ttlSecondsAfterFinished": 86400,
            "template": pod,
        },
    });
    let mut job_policy = policy.value.clone();
    job_policy["metadata"]["name"] = json!(label);
    job_policy["metadata"]["labels"][COMPONENT] = json!("migration");
    job_policy["spec"]["podSelector"] =
        json!({ "matchLabels": { "app.kubernetes.io/name": label } });
    job_policy["spec"]["policyTypes"] = json!(["Egress"]);
    if let Some(spec) = job_policy["spec"].as_object_mut() {
        spec.remove("ingress");
    }
    (job, job_policy)
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

fn record(
    target: &Target,
    number: u32,
    manifests: &Manifests,
    outcome: Outcome,
    note: String,
) -> Record {
    Record {
        number,
        outcome,
        digest: manifests.digest(),
        images: manifests.images.clone(),
        schema: manifests.schema.clone(),
        who: target.who.clone(),
        when: now(),
        note,
    }
}

/// Objects with kisumctl's ownership labels that `keep` does not name:
/// `Kind/name` with apiVersion. History, Leases, migration Jobs and the
/// operation Jobs' objects (component `operation`) are never candidates.
async fn prune_candidates(
    target: &Target<'_>,
    keep: &Manifests,
) -> Result<Vec<(String, String, String)>, DeployError> {
    let wanted: BTreeSet<(String, String)> = keep
        .objects()?
        .iter()
        .map(|o| (o.kind().to_string(), o.name().to_string()))
        .collect();
    let selector = format!(
        "{MANAGED_BY}={},{ENVIRONMENT}={}",
        super::FIELD_MANAGER,
        target.environment
    );
    let mut found = Vec::new();
    for (api_version, kind) in PRUNED_KINDS {
        let live = target
            .namespace
            .list(api_version, kind, &selector)
            .await
            .map_err(|error| DeployError::Api {
                error,
                applied: Vec::new(),
            })?;
        for object in live {
            let labels = &object["metadata"]["labels"];
            if labels.get(history::RELEASE_LABEL).is_some()
                || labels
                    .get(COMPONENT)
                    .is_some_and(|c| c == "migration" || c == "operation")
            {
                continue;
            }
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if !wanted.contains(&(kind.to_string(), name.clone())) {
                found.push((api_version.to_string(), kind.to_string(), name));
            }
        }
    }
    Ok(found)
}

async fn prune(
    target: &Target<'_>,
    keep: &Manifests,
    dry_run: bool,
    progress: &dyn Progress,
) -> Result<Vec<String>, DeployError> {
    let mut pruned = Vec::new();
    for (api_version, kind, name) in prune_candidates(target, keep).await? {
        target
            .namespace
            .delete(&api_version, &kind, &name, dry_run)
            .await
            .map_err(|error| DeployError::Api {
                error,
                applied: Vec::new(),
            })?;
        progress.step(&format!("pruned {kind}/{name} (no longer in the matrix)"));
        pruned.push(format!("{kind}/{name}"));
    }
    Ok(pruned)
}

async fn run_smoke(target: &Target<'_>, progress: &dyn Progress) -> Option<smoke::Report> {
    let (urls, credentials) = target.smoke.as_ref()?;
    progress.step(&format!("smoke checks against {}", urls.auth));
    Some(smoke::run(urls, credentials).await)
}

/// `kisumctl deploy ENV`.
pub async fn deploy(
    target: &Target<'_>,
    manifests: &Manifests,
    namespace_object: &Value,
    dry_run: bool,
    force: bool,
    progress: &dyn Progress,
) -> Result<Report, DeployError> {
    let mut report = Report {
        environment: target.environment.to_string(),
        result: Conclusion::DryRun,
        release: None,
        digest: manifests.digest(),
        migrations: Vec::new(),
        waves: Vec::new(),
        failure: None,
        stopped_at: None,
        smoke: None,
        rollback: None,
        pruned: Vec::new(),
        stale_lock: None,
        next: None,
    };
    let mut applier = Applier {
        target,
        progress,
        applied: Vec::new(),
        dry_run,
        wave: None,
        stopped_at: None,
    };
    if dry_run {
        let records = history::list(&target.namespace, target.environment)
            .await
            .unwrap_or_default();
        let next = records.last().map_or(1, |r| r.number + 1);
        applier
            .migrations(manifests, next, &mut report.migrations)
            .await
            .map_err(|f| into_error(f, &applier))?;
        applier
            .waves(manifests, &mut report.waves)
            .await
            .map_err(|f| into_error(f, &applier))?;
        for (_, kind, name) in prune_candidates(target, manifests).await? {
            report.pruned.push(format!("{kind}/{name}"));
        }
        return Ok(report);
    }

    applier
        .apply(namespace_object)
        .await
        .map_err(|error| DeployError::Api {
            error,
            applied: Vec::new(),
        })?;
    let (lock, stale) = lease::acquire(&target.namespace, &target.who, LOCK_DURATION).await?;
    if let Some(holder) = &stale {
        progress.step(&format!(
            "took over a stale environment lock held by {holder}"
        ));
    }
    report.stale_lock = stale;
    // Ctrl-C stops the deploy between two requests and still frees the
    // lock, saying what was applied; no release is recorded.
    let interrupted = tokio::select! {
        outcome = deploy_locked(&mut applier, manifests, force, &mut report) => Err(outcome),
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    let outcome = match interrupted {
        Err(outcome) => outcome,
        Ok(()) => Err(DeployError::Failed(format!(
            "interrupted (Ctrl-C); the lock is freed and no release is recorded{}",
            applied_note(&applier.applied)
        ))),
    };
    let released = lock.release().await;
    outcome?;
    released.map_err(|error| DeployError::Api {
        error,
        applied: Vec::new(),
    })?;
    Ok(report)
}

fn into_error(failure: Failure, applier: &Applier) -> DeployError {
    match failure {
        Failure::Api(error) => DeployError::Api {
            error,
            applied: applier.applied.clone(),
        },
        Failure::Rollout(message) => DeployError::Failed(message),
    }
}

async fn deploy_locked(
    applier: &mut Applier<'_>,
    manifests: &Manifests,
    force: bool,
    report: &mut Report,
) -> Result<(), DeployError> {
    let target = applier.target;
    let progress = applier.progress;
    let records = history::list(&target.namespace, target.environment).await?;
    let number = records.last().map_or(1, |r| r.number + 1);
    report.release = Some(number);
    progress.step(&format!(
        "release {number} of {} ({})",
        target.environment,
        manifests.digest()
    ));

    let rolled_out = match applier
        .migrations(manifests, number, &mut report.migrations)
        .await
    {
        Ok(()) => applier.waves(manifests, &mut report.waves).await,
        Err(failure) => Err(failure),
    };
    let failure = match rolled_out {
        Err(Failure::Api(error)) => {
            return Err(DeployError::Api {
                error,
                applied: applier.applied.clone(),
            });
        }
        Err(Failure::Rollout(why)) => Some(why),
        Ok(()) => {
            report.smoke = run_smoke(target, progress).await;
            match &report.smoke {
                Some(smoke) if !smoke.passed() => Some(format!(
                    "smoke checks failed: {}",
                    smoke
                        .checks
                        .iter()
                        .filter(|c| !c.passed)
                        .map(|c| c.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                _ => None,
            }
        }
    };

    let Some(why) = failure else {
        report.pruned = prune(target, manifests, false, progress).await?;
        let done = record(
            target,
            number,
            manifests,
            Outcome::Deployed,
            "deploy".into(),
        );
        history::store(&target.namespace, target.environment, &done, manifests).await?;
        let mut all = records;
        all.push(done);
        history::trim(&target.namespace, &all, target.history_limit, number).await?;
        report.result = Conclusion::Deployed;
        return Ok(());
    };

    report.failure = Some(why.clone());
    report.stopped_at = applier.stopped_at.take();
    report.result = Conclusion::Failed;
    let failed = record(target, number, manifests, Outcome::Failed, why.clone());
    history::store(&target.namespace, target.environment, &failed, manifests).await?;
    let mut all = records;
    all.push(failed);
    let rollback = automatic_rollback(applier, &all, force).await;
    report.result = if rollback.done && rollback.smoke_passed != Some(false) {
        Conclusion::RolledBack
    } else if rollback.attempted {
        report.next = Some(next_steps(
            report,
            &rollback,
            &applier.target.namespace.name,
        ));
        Conclusion::RollbackFailed
    } else {
        Conclusion::Failed
    };
    report.rollback = Some(rollback);
    Ok(())
}

/// What a person does when neither the failed release nor the release
/// its rollback went back to runs cleanly.
fn next_steps(report: &Report, rollback: &Rollback, namespace: &str) -> String {
    let env = &report.environment;
    let number = |n: Option<u32>| n.map_or("-".to_string(), |n| n.to_string());
    let look = match rollback.stopped_at.as_ref().or(report.stopped_at.as_ref()) {
        Some(at) => format!(
            "find out why {} does not finish (`kubectl -n {namespace} describe {}`, its pods' events and logs), ",
            at.object,
            at.object.to_lowercase()
        ),
        None => String::new(),
    };
    format!(
        "{env} runs neither release {} nor release {} cleanly and is partly updated: {look}then deploy a fixed release, or `kisumctl rollback {env} --to N` to a release known to work; `kisumctl history {env}` lists both failed attempts",
        number(report.release),
        number(rollback.to),
    )
}

/// After a failed release (the last of `records`): the previous deployed
/// release applied again, guard permitting. Whatever happens to it ends
/// up in the answer, so that the report of the failed release is never
/// lost to an error of its rollback.
async fn automatic_rollback(
    applier: &mut Applier<'_>,
    records: &[Record],
    force: bool,
) -> Rollback {
    let target = applier.target;
    let not_done = |to: Option<u32>, detail: String| Rollback {
        to,
        release: None,
        attempted: false,
        done: false,
        detail,
        stopped_at: None,
        smoke_passed: None,
    };
    let Some(previous) = history::current(records).cloned() else {
        let detail = "no earlier release is recorded: nothing to roll back to";
        return not_done(None, detail.into());
    };
    let crossings = history::crossings(records, &previous);
    if !crossings.is_empty() && !force {
        let error = DeployError::Guard {
            target: previous.number,
            crossings,
        };
        return not_done(Some(previous.number), error.to_string());
    }
    let failed = records.last().map_or(0, |r| r.number);
    applier.progress.step(&format!(
        "ROLLING BACK {} to release {} (release {failed} failed)",
        target.environment, previous.number
    ));
    let note = format!(
        "automatic rollback to release {} after release {failed} failed",
        previous.number
    );
    match restore(applier, records, previous.number, note).await {
        Ok(restored) => Rollback {
            to: Some(previous.number),
            release: Some(restored.release),
            attempted: true,
            done: true,
            detail: format!("release {} applied again and rolled out", previous.number),
            stopped_at: None,
            smoke_passed: restored.smoke.map(|s| s.passed()),
        },
        Err(error) => Rollback {
            to: Some(previous.number),
            release: match &error {
                DeployError::Restore { recorded, .. } => *recorded,
                _ => None,
            },
            attempted: true,
            done: false,
            detail: error.to_string(),
            stopped_at: applier.stopped_at.take(),
            smoke_passed: None,
        },
    }
}

/// Applies release `to`'s stored manifests in waves, waits, prunes what
/// it does not name, checks, and records it as a new release. When its
/// rollout fails, the attempt is recorded as a failed release and the
/// error says under which number.
async fn restore(
    applier: &mut Applier<'_>,
    records: &[Record],
    to: u32,
    note: String,
) -> Result<Restored, DeployError> {
    let target = applier.target;
    let (old, manifests) = history::load(&target.namespace, target.environment, to).await?;
    let number = records.last().map_or(1, |r| r.number + 1);
    let mut waves = Vec::new();
    match applier.waves(&manifests, &mut waves).await {
        Ok(()) => {}
        Err(Failure::Api(error)) => {
            return Err(DeployError::Api {
                error,
                applied: applier.applied.clone(),
            });
        }
        Err(Failure::Rollout(why)) => {
            let mut attempt = record(
                target,
                number,
                &manifests,
                Outcome::Failed,
                format!("{note}: failed: {why}"),
            );
            attempt.digest = old.digest;
            let stored =
                history::store(&target.namespace, target.environment, &attempt, &manifests).await;
            return Err(DeployError::Restore {
                to,
                recorded: stored.is_ok().then_some(number),
                why,
            });
        }
    }
    let pruned = prune(target, &manifests, false, applier.progress).await?;
    let smoke = run_smoke(target, applier.progress).await;
    // Applied again but failing its checks: recorded as failed, so that the
    // next automatic rollback never picks it as a release known to work.
    let (outcome, note) = match &smoke {
        Some(smoke) if !smoke.passed() => (Outcome::Failed, format!("{note}: smoke checks failed")),
        _ => (Outcome::Deployed, note),
    };
    let mut again = record(target, number, &manifests, outcome, note);
    again.digest = old.digest;
    history::store(&target.namespace, target.environment, &again, &manifests).await?;
    let mut all = records.to_vec();
    all.push(again);
    history::trim(&target.namespace, &all, target.history_limit, number).await?;
    Ok(Restored {
        release: number,
        smoke,
        waves,
        pruned,
    })
}

/// A recorded release applied again.
struct Restored {
    /// The number it is recorded under now.
    release: u32,
    smoke: Option<smoke::Report>,
    waves: Vec<Wave>,
    pruned: Vec<String>,
}

/// `kisumctl rollback ENV [--to N]`: release `to` (default: the deployed
/// release before the current one) applied again, guard permitting.
pub async fn rollback(
    target: &Target<'_>,
    to: Option<u32>,
    force: bool,
    progress: &dyn Progress,
) -> Result<Report, DeployError> {
    let (lock, stale) = lease::acquire(&target.namespace, &target.who, LOCK_DURATION).await?;
    if let Some(holder) = &stale {
        progress.step(&format!(
            "took over a stale environment lock held by {holder}"
        ));
    }
    let mut applier = Applier {
        target,
        progress,
        applied: Vec::new(),
        dry_run: false,
        wave: None,
        stopped_at: None,
    };
    let outcome = rollback_locked(&mut applier, to, force).await;
    let released = lock.release().await;
    let mut report = outcome?;
    released.map_err(|error| DeployError::Api {
        error,
        applied: Vec::new(),
    })?;
    report.stale_lock = stale;
    Ok(report)
}

async fn rollback_locked(
    applier: &mut Applier<'_>,
    to: Option<u32>,
    force: bool,
) -> Result<Report, DeployError> {
    let target = applier.target;
    let records = history::list(&target.namespace, target.environment).await?;
    let current = history::current(&records).map(|r| r.number);
    let wanted = match to {
        Some(n) => records.iter().find(|r| r.number == n),
        None => records
            .iter()
            .rev()
            .filter(|r| r.outcome == Outcome::Deployed && Some(r.number) < current)
            .find(|r| {
                Some(r.digest.as_str())
                    != records
                        .iter()
                        .find(|c| Some(c.number) == current)
                        .map(|c| c.digest.as_str())
            }),
    };
    let Some(wanted) = wanted.cloned() else {
        return Err(match to {
            Some(number) => HistoryError::NoSuchRelease {
                environment: target.environment.to_string(),
                number,
                known: records.iter().map(|r| r.number).collect(),
            }
            .into(),
            None => DeployError::Failed(format!(
                "{} has no earlier deployed release to roll back to (see `kisumctl history {}`)",
                target.environment, target.environment
            )),
        });
    };
    let crossings = history::crossings(&records, &wanted);
    if !crossings.is_empty() && !force {
        return Err(DeployError::Guard {
            target: wanted.number,
            crossings,
        });
    }
    applier.progress.step(&format!(
        "rolling back {} to release {}",
        target.environment, wanted.number
    ));
    let note = format!("rollback to release {}", wanted.number);
    let restored = restore(applier, &records, wanted.number, note).await?;
    let failed = restored.smoke.as_ref().is_some_and(|s| !s.passed());
    Ok(Report {
        environment: target.environment.to_string(),
        result: if failed {
            Conclusion::Failed
        } else {
            Conclusion::Deployed
        },
        release: Some(restored.release),
        digest: wanted.digest.clone(),
        migrations: Vec::new(),
        waves: restored.waves,
        failure: failed.then(|| format!("the smoke checks fail on release {}", wanted.number)),
        stopped_at: None,
        smoke: restored.smoke,
        rollback: None,
        pruned: restored.pruned,
        stale_lock: None,
        next: None,
    })
}

/// One object of `kisumctl diff`: rendered against live.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub object: String,
    /// `added` (not live yet), `changed`, `pruned` (live, no longer
    /// rendered).
    pub change: &'static str,
    /// A unified diff of the fields the manifests set.
    pub diff: String,
}

/// `kisumctl diff ENV`: every rendered object whose live copy differs in
/// the fields the manifests set, and what a deploy would prune. The values
/// of Secrets are masked on both sides.
pub async fn diff(
    target: &Target<'_>,
    manifests: &Manifests,
) -> Result<Vec<Difference>, DeployError> {
    let mut found = Vec::new();
    for object in manifests.objects()? {
        let live = target
            .namespace
            .get(object.api_version(), object.kind(), object.name())
            .await
            .map_err(|error| DeployError::Api {
                error,
                applied: Vec::new(),
            })?;
        let rendered = masked(&object.value);
        let (change, before) = match live {
            None => ("added", String::new()),
            Some(live) => ("changed", yaml(&masked(&project(&live, &object.value)))),
        };
        let after = yaml(&rendered);
        if before != after {
            found.push(Difference {
                object: object.reference(),
                change,
                diff: unified(&before, &after, &object.reference()),
            });
        }
    }
    for (_, kind, name) in prune_candidates(target, manifests).await? {
        found.push(Difference {
            object: format!("{kind}/{name}"),
            change: "pruned",
            diff: String::new(),
        });
    }
    Ok(found)
}

/// `live` reduced to the fields `shape` sets (what the field manager
/// owns), so that defaults and status do not show as differences.
fn project(live: &Value, shape: &Value) -> Value {
    match (live, shape) {
        (Value::Object(live), Value::Object(shape)) => Value::Object(
            shape
                .iter()
                .filter_map(|(k, v)| live.get(k).map(|l| (k.clone(), project(l, v))))
                .collect(),
        ),
        (Value::Array(live), Value::Array(shape)) if live.len() == shape.len() => {
            Value::Array(live.iter().zip(shape).map(|(l, s)| project(l, s)).collect())
        }
        (live, _) => live.clone(),
    }
}

/// Secret values replaced by a marker.
fn masked(object: &Value) -> Value {
    let mut object = object.clone();
    if object["kind"] == "Secret" {
        for field in ["data", "stringData"] {
            if let Some(map) = object.get_mut(field).and_then(Value::as_object_mut) {
                for value in map.values_mut() {
                    *value = json!("(masked)");
                }
            }
        }
    }
    object
}

fn yaml(value: &Value) -> String {
    serde_saphyr::to_string(value).unwrap_or_default()
}

fn unified(before: &str, after: &str, name: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .header(&format!("live/{name}"), &format!("rendered/{name}"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_masked_and_live_defaults_left_out_of_a_diff() {
        let secret = json!({ "kind": "Secret", "data": { "password": "c2VjcmV0" } });
        assert_eq!(masked(&secret)["data"]["password"], "(masked)");
        let live = json!({ "kind": "ConfigMap", "data": { "A": "1" }, "metadata": { "uid": "x", "name": "n" } });
        let shape =
            json!({ "kind": "ConfigMap", "data": { "A": "2" }, "metadata": { "name": "n" } });
        assert_eq!(
            project(&live, &shape),
            json!({ "kind": "ConfigMap", "data": { "A": "1" }, "metadata": { "name": "n" } })
        );
    }

    #[test]
    fn a_migration_job_runs_the_service_pod_with_migrate_and_its_own_label() {
        let deployment = Object {
            file: "auth.yaml".into(),
            wave: 2,
            value: json!({ "kind": "Deployment", "metadata": { "name": "auth", "namespace": "ns", "labels": {} },
                "spec": { "template": { "metadata": {}, "spec": { "containers": [
                    { "name": "auth", "image": "i", "readinessProbe": {}, "ports": [] }] } } } }),
        };
        let policy = Object {
            file: "auth.yaml".into(),
            wave: 2,
            value: json!({ "kind": "NetworkPolicy", "metadata": { "name": "auth", "labels": {} },
                "spec": { "podSelector": {}, "ingress": [{}], "egress": [{}] } }),
        };
        let (job, job_policy) = migration_job(&deployment, &policy, 7, Duration::from_secs(60));
        assert_eq!(job["metadata"]["name"], "auth-migrate-7");
        let container = &job["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["args"], json!(["migrate"]));
        assert!(container.get("readinessProbe").is_none());
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"],
            "auth-migrate"
        );
        assert_eq!(
            job_policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
            "auth-migrate"
        );
        assert!(job_policy["spec"].get("ingress").is_none());
    }
}
