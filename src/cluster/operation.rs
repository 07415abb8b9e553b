//! `backup`, `restore` and `drill` of an environment whose databases sit
//! on a private network, run as a Kubernetes Job in its namespace
//! (`operations.runner: job`): kisumctl's own image (`kisumctl.image`, the
//! one the CronJobs run) runs the same command with
//! `KISUM_OPERATIONS_RUNNER=host` (so that it runs there, not in yet
//! another Job) under the ServiceAccount `kisumctl.service-account`,
//! whose cloud identity reads the secret backend and the backup store. No
//! secret passes through the Job: the pod reads them as kisumctl on a host
//! would.
//!
//! kisumctl launches the Job, watches it to its end (or its timeout),
//! reads the pod's log, and takes the command's exit code from the last
//! result line the pod printed (`kisumctl-result: {"exit": N}`) and its
//! JSON report from the log. Log excerpts are masked before they are
//! shown.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use super::api::{ApiError, Namespace};
use super::job::{self, Ended};
use super::release::Progress;
use crate::matrix::Environment;
use crate::matrix::schema::{Operations, Runner};

/// The variable that makes kisumctl run an operation where it is (in the
/// Job's pod, or on a host with access) whatever the matrix says.
pub const RUNNER_VARIABLE: &str = "KISUM_OPERATIONS_RUNNER";

/// The variable that makes kisumctl end with a result line on stderr.
pub const RESULT_VARIABLE: &str = "KISUM_RESULT_LINE";

/// How a result line starts.
pub const RESULT_PREFIX: &str = "kisumctl-result: ";

/// How many lines of the pod's log kisumctl reads.
const LOG_LINES: usize = 200;

/// How many lines of it a failure shows.
const EXCERPT_LINES: usize = 15;

/// The operations settings of an environment that runs them as Jobs;
/// `None` when they run here (no `operations` block, `runner: host`, or
/// the override variable says `host`).
pub fn as_job<'e>(env: &'e Environment) -> Option<&'e Operations> {
    as_job_with(env, std::env::var(RUNNER_VARIABLE).ok().as_deref())
}

fn as_job_with<'e>(env: &'e Environment, variable: Option<&str>) -> Option<&'e Operations> {
    let here = variable.is_some_and(|v| v.trim() == "host");
    env.file
        .operations
        .as_ref()
        .filter(|o| o.runner == Runner::Job && !here)
}

/// The variables of a pod that runs kisumctl inside the cluster (an
/// operation Job or a CronJob): the matrix baked into the image, the
/// runner variable (the pod is already where the operation must run, and
/// has no API token to launch another Job with) and who asked.
pub fn pod_variables(env: &Environment, actor: String) -> Vec<(&'static str, String)> {
    vec![
        ("KISUM_MATRIX", env.base.kisumctl.matrix_dir.clone()),
        (RUNNER_VARIABLE, "host".to_string()),
        ("KISUM_ACTOR", actor),
    ]
}

/// `pod_variables` as a container's `env` list.
pub fn container_env(variables: &[(&str, String)]) -> Value {
    variables
        .iter()
        .map(|(k, v)| json!({ "name": k, "value": v }))
        .collect()
}

/// The name of this machine (`/proc/sys/kernel/hostname`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// True when `here` is the machine `host` names, fully or by its first
/// label.
pub fn names_this_machine(host: &str, here: &str) -> bool {
    let short = host.split('.').next().unwrap_or(host);
    here == host || here == short
}

/// Whether this machine reaches the environment's private network (its
/// databases and Redis): inside an operation Job (the runner variable says
/// `host`), or on the host that `operations.runner: host` names. `Err` is
/// why not, for a report.
pub fn operations_run_here(env: &Environment) -> Result<(), String> {
    let variable = std::env::var(RUNNER_VARIABLE).ok();
    operations_run_on(env, &hostname(), variable.as_deref())
}

fn operations_run_on(env: &Environment, here: &str, variable: Option<&str>) -> Result<(), String> {
    if variable.is_some_and(|v| v.trim() == "host") {
        return Ok(());
    }
    let here = crate::matrix::load::printable(here);
    let Some(operations) = &env.file.operations else {
        return Err(format!(
            "private network: the matrix names no operations host (`operations`); run from a machine inside it with {RUNNER_VARIABLE}=host"
        ));
    };
    match (&operations.runner, &operations.host) {
        (Runner::Host, Some(host)) if names_this_machine(host, &here) => Ok(()),
        (Runner::Host, Some(host)) => Err(format!(
            "private network: run from the operations host {host} (operations.host), this is {here}"
        )),
        (Runner::Host, None) => Err(format!(
            "private network: run from the operations host, with {RUNNER_VARIABLE}=host"
        )),
        (Runner::Job, _) => Err(
            "private network: operations run as Jobs in the cluster (operations.runner: job); run there, or from the operations host with KISUM_OPERATIONS_RUNNER=host".to_string(),
        ),
    }
}

/// A Job name for `command`: `kisumctl-<command>-<UTC time>-<4 hex>`,
/// within the 63 characters of a label value. The random part keeps two
/// launches in the same second apart; `run` refuses a name already taken.
pub fn job_name(command: &str, at: jiff::Timestamp) -> String {
    let stamp = at.strftime("%Y%m%d-%H%M%S").to_string();
    let suffix = format!("-{stamp}-{:04x}", rand::random::<u16>());
    let mut name = format!("kisumctl-{command}");
    name.truncate(63 - suffix.len());
    name + &suffix
}

/// The Job that runs `kisumctl <args>` in the environment's namespace,
/// and the NetworkPolicy that lets its pod reach the databases.
pub fn job(
    env: &Environment,
    operations: &Operations,
    name: &str,
    args: &[String],
    who: &str,
) -> (Value, Value) {
    use crate::render::schedules::{image, scratch_mounts, scratch_volumes, work_dir};
    let kisumctl = &env.base.kisumctl;
    let label = crate::render::KISUMCTL_LABEL;
    let mut labels = json!(crate::render::labels(env, label.1));
    labels["app.kubernetes.io/component"] = json!("operation");
    let user = env.base.platform.run_as_user;
    let mut variables = pod_variables(env, format!("{who} (Job/{name})"));
    variables.push((RESULT_VARIABLE, "1".to_string()));
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": name, "namespace": env.file.namespace, "labels": labels },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": operations.job_timeout_seconds,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": { "labels": { label.0: label.1, "app.kubernetes.io/component": "operation" } },
                "spec": {
                    "serviceAccountName": kisumctl.service_account,
                    // The command reads no cluster object: its secrets come
                    // from the secret backend and its backups go to the
                    // store, through the account's cloud identity; kisumctl
                    // outside watches the Job. So no API token in the pod.
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "restartPolicy": "Never",
                    "securityContext": {
                        "runAsNonRoot": true, "runAsUser": user, "runAsGroup": user, "fsGroup": user,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "containers": [{
                        "name": "kisumctl",
                        "image": image(env),
                        "workingDir": work_dir(env),
                        "args": args,
                        "env": container_env(&variables),
                        "securityContext": {
                            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "capabilities": { "drop": ["ALL"] },
                        },
                        "resources": {
                            "requests": { "cpu": "250m", "memory": "512Mi" },
                            "limits": { "memory": "2Gi" },
                        },
                        "volumeMounts": scratch_mounts(env),
                    }],
                    "volumes": scratch_volumes(),
                },
            },
        },
    });
    let mut policy =
        serde_json::to_value(crate::render::operations_policy(env, label.1)).unwrap_or_default();
    policy["apiVersion"] = json!("networking.k8s.io/v1");
    policy["kind"] = json!("NetworkPolicy");
    policy["metadata"]["labels"]["app.kubernetes.io/component"] = json!("operation");
    (job, policy)
}

/// How an operation Job ended, as kisumctl read it.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub job: String,
    /// `complete`, `failed` or `timed-out`.
    pub state: &'static str,
    /// The command's exit code from the result line, when the pod printed
    /// one.
    pub exit: Option<u8>,
    /// The command's JSON report from the log, when it printed one.
    pub report: Option<Value>,
    /// The last lines of the log (masked), without the report.
    pub log: String,
    /// Why it failed or what it was still waiting for.
    pub detail: Option<String>,
}

/// Why an operation Job did not run to an end.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The Job was never created: nothing runs in the cluster.
    #[error("Job/{job} could not be created, nothing was launched: {}", error.reason())]
    NotLaunched { job: String, error: ApiError },
    /// The Job was created; watching it failed.
    #[error(transparent)]
    Watching(#[from] ApiError),
}

/// Applies the Job and its NetworkPolicy, then watches the Job for up to
/// `timeout`; `launched` is called once the Job exists.
pub async fn run(
    namespace: &Namespace,
    job: &Value,
    policy: &Value,
    timeout: Duration,
    progress: &dyn Progress,
    launched: &dyn Fn(&str),
) -> Result<Outcome, RunError> {
    let name = job["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let not_launched = |error: ApiError| RunError::NotLaunched {
        job: name.clone(),
        error,
    };
    let existing = namespace.get("batch/v1", "Job", &name).await;
    if existing.map_err(not_launched)?.is_some() {
        return Err(not_launched(ApiError::Refused {
            action: "launching",
            object: format!("Job/{name}"),
            code: 409,
            reason: "AlreadyExists".into(),
            message: "a Job of this name exists already; rerun".into(),
        }));
    }
    namespace.apply(policy, false).await.map_err(not_launched)?;
    namespace.apply(job, false).await.map_err(not_launched)?;
    launched(&name);
    progress.step(&format!(
        "launched Job/{name} in namespace {}",
        namespace.name
    ));
    let ended = job::watch(namespace, &name, timeout, LOG_LINES, progress).await?;
    let (state, log, detail) = match ended {
        Ended::Complete { log } => ("complete", log, None),
        Ended::Failed { why, log } => ("failed", log, Some(why)),
        Ended::TimedOut { why } => {
            let log = job::log_tail(namespace, &name, LOG_LINES)
                .await
                .unwrap_or_default();
            ("timed-out", log, Some(why))
        }
    };
    let (exit, report, rest) = read_log(&log);
    Ok(Outcome {
        job: name,
        state,
        exit,
        report,
        log: excerpt(&rest, EXCERPT_LINES),
        detail,
    })
}

/// The exit code of the last result line, the last JSON document
/// printed (a `{` line to the next `}` line), and the other lines.
fn read_log(log: &str) -> (Option<u8>, Option<Value>, Vec<&str>) {
    let lines: Vec<&str> = log.lines().collect();
    let exit = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix(RESULT_PREFIX))
        .and_then(|r| serde_json::from_str::<Value>(r).ok())
        .and_then(|r| r["exit"].as_u64())
        .and_then(|e| u8::try_from(e).ok());
    let mut report = None;
    let mut span = None;
    if let Some(end) = lines.iter().rposition(|l| *l == "}")
        && let Some(start) = lines[..end].iter().rposition(|l| *l == "{")
    {
        report = serde_json::from_str(&lines[start..=end].join("\n")).ok();
        span = report.as_ref().map(|_| start..=end);
    }
    let rest = lines
        .iter()
        .enumerate()
        .filter(|(n, l)| {
            !span.as_ref().is_some_and(|s| s.contains(n)) && !l.starts_with(RESULT_PREFIX)
        })
        .map(|(_, l)| *l)
        .collect();
    (exit, report, rest)
}

/// The last `count` lines, masked.
fn excerpt(lines: &[&str], count: usize) -> String {
    lines[lines.len().saturating_sub(count)..]
        .iter()
        .map(|l| mask(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A log line with what could be a credential replaced: the userinfo of
/// URLs, and the value after `password=`, `secret=`, `token=` (or `:`).
pub fn mask(line: &str) -> String {
    const NAMES: [&str; 5] = ["password", "passwd", "pwd", "secret", "token"];
    line.split(' ')
        .map(|word| {
            let word = kisum_common::config::redact_userinfo(word);
            let lower = word.to_ascii_lowercase();
            let at = NAMES.iter().find_map(|name| {
                let start = lower.find(name)?;
                let rest = &word[start + name.len()..];
                let sep = rest.find(['=', ':']).filter(|i| *i <= 1)?;
                Some(start + name.len() + sep + 1)
            });
            match at {
                Some(at) if at < word.len() => format!("{}***", &word[..at]),
                _ => word,
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_private_network_is_reached_on_the_named_host_or_inside_a_job_only() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("environments");
        let matrix = crate::matrix::Matrix::load(&dir).unwrap();
        let dev = matrix.environment("dev").unwrap();
        assert_eq!(dev.file.operations.as_ref().unwrap().runner, Runner::Host);
        assert!(operations_run_on(&dev, "ops-runner", None).is_ok());
        assert!(operations_run_on(&dev, "ops-runner.dev.kisum.internal", None).is_ok());
        let elsewhere = operations_run_on(&dev, "laptop", None).unwrap_err();
        assert!(
            elsewhere.contains("ops-runner.dev.kisum.internal") && elsewhere.contains("laptop"),
            "{elsewhere}"
        );

        let staging = matrix.environment("staging").unwrap();
        let job = operations_run_on(&staging, "ops-runner", None).unwrap_err();
        assert!(job.contains("operations.runner: job"), "{job}");
        assert!(operations_run_on(&staging, "pod-x", Some("host")).is_ok());
    }

    /// A CronJob's pod is already inside the private network and has no
    /// API token: by its own variables, its backup or drill runs there
    /// and launches no Job of its own.
    #[test]
    fn a_scheduled_operation_runs_in_its_own_pod() {
        let matrix = crate::matrix::shipped();
        for name in ["staging", "production"] {
            let env = matrix.environment(name).unwrap();
            assert!(as_job_with(&env, None).is_some(), "{name} runs Jobs");
            let jobs = crate::render::schedules::documents(&env).unwrap().unwrap();
            let mut operations = 0;
            for document in jobs.iter().filter(|d| d.contains("kind: CronJob")) {
                let cron: Value = serde_saphyr::from_str(document).unwrap();
                let container =
                    &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
                if !matches!(container["args"][0].as_str(), Some("backup" | "drill")) {
                    continue;
                }
                operations += 1;
                let variable = container["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["name"] == RUNNER_VARIABLE)
                    .and_then(|v| v["value"].as_str());
                assert!(
                    as_job_with(&env, variable).is_none()
                        && operations_run_on(&env, "cronjob-pod", variable).is_ok(),
                    "{name}: {}",
                    container["args"]
                );
            }
            assert!(operations >= 2, "{name}: {operations} scheduled operations");
        }
    }

    #[test]
    fn credentials_in_a_log_line_are_masked() {
        let line = "error: connecting to postgresql://backup:hunter2@10.0.0.5:5432/auth_db failed: password=hunter2 token: x";
        let masked = mask(line);
        assert!(!masked.contains("hunter2"), "{masked}");
        assert!(
            masked.contains("postgresql://***@10.0.0.5:5432/auth_db"),
            "{masked}"
        );
        assert!(masked.contains("password=***"), "{masked}");
        assert_eq!(
            mask("backup staging: auth-db done"),
            "backup staging: auth-db done"
        );
    }

    #[test]
    fn the_log_gives_the_exit_code_and_the_report() {
        let log = "backup staging: auth-db\n{\n  \"environment\": \"staging\",\n  \"failed\": []\n}\nbackup staging: done\nkisumctl-result: {\"exit\": 0}";
        let (exit, report, rest) = read_log(log);
        assert_eq!(exit, Some(0));
        assert_eq!(report.unwrap()["environment"], "staging");
        assert_eq!(rest, ["backup staging: auth-db", "backup staging: done"]);
        let (exit, report, _) = read_log("error: no such database\n");
        assert_eq!((exit, report), (None, None));
    }

    #[test]
    fn a_job_name_fits_a_label_value() {
        let at: jiff::Timestamp = "2026-12-05T06:15:00Z".parse().unwrap();
        let name = job_name("backup", at);
        assert!(
            name.starts_with("kisumctl-backup-20261205-061500-"),
            "{name}"
        );
        assert_eq!(name.len(), "kisumctl-backup-20261205-061500-0000".len());
        assert_ne!(
            (0..8)
                .map(|_| job_name("backup", at))
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            1
        );
        let long = job_name(&"x".repeat(80), at);
        assert_eq!(long.len(), 63);
        assert!(long.contains("-20261205-061500-"), "{long}");
    }
}
