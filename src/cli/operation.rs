//! `backup`, `restore` and `drill` of an environment whose matrix says
//! `operations.runner: job`: the same command launched as a Job in the
//! environment's namespace, watched, and its result read back (see
//! `crate::cluster::operation`). Anywhere else they run here.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::output::{errln, outln};
use super::{Exit, OutputFormat, refuse};
use crate::cluster::api::Namespace;
use crate::cluster::operation;

/// One command to run as a Job.
pub struct Request<'a> {
    /// `backup`, `restore`, `drill`.
    pub command: &'static str,
    pub env: &'a str,
    /// Database ids the command names (checked before any launch).
    pub databases: &'a [String],
    /// The command's own arguments after the environment, `-o` left out.
    pub args: Vec<String>,
    /// For a destructive run: what the confirmation shows. It is asked
    /// before the Job is launched; the Job itself then runs with `--yes`.
    pub confirm: Option<Vec<String>>,
    /// The backup id the command names (`restore --backup`): one the
    /// store does not hold launches nothing.
    pub backup: Option<&'a str>,
    pub format: OutputFormat,
}

/// Runs `request` as a Job when the environment's operations run as
/// Jobs: `None` when they run here (or the matrix cannot be read: the
/// command itself then reports it).
pub fn in_cluster(dir: &Path, request: Request) -> anyhow::Result<Option<Exit>> {
    let Ok(matrix) = crate::matrix::Matrix::load(dir) else {
        return Ok(None);
    };
    let Ok(env) = matrix.environment(request.env) else {
        return Ok(None);
    };
    let Some(operations) = operation::as_job(&env) else {
        warn_off_host(&env);
        return Ok(None);
    };
    let format = request.format;
    for database in request.databases {
        if let Err(error) = crate::backup::connection::target(&env, database) {
            return Ok(Some(refuse(
                format,
                &error.to_string(),
                Exit::UnusableInput,
            )));
        }
    }
    if let Some(id) = request.backup {
        let checked = tokio::runtime::Runtime::new()?.block_on(backup_in_store(dir, &env, id));
        if let Err(message) = checked {
            return Ok(Some(refuse(format, &message, Exit::UnusableInput)));
        }
    }
    let mut args = vec![request.command.to_string(), env.name.to_string()];
    args.extend(request.args.iter().cloned());
    if let Some(lines) = &request.confirm {
        let what = format!("{} {}", request.command, env.name);
        if !super::confirm_by_typing(&what, lines, env.name)? {
            let message = format!(
                "{what} not confirmed; no Job was launched (pass --yes to go ahead without asking)"
            );
            return Ok(Some(refuse(format, &message, Exit::UnusableInput)));
        }
        args.push("--yes".into());
    }
    args.extend(["-o".to_string(), "json".to_string()]);

    let name = operation::job_name(request.command, jiff::Timestamp::now());
    let who = crate::ops::journal::who();
    let (job, policy) = operation::job(&env, operations, &name, &args, &who);
    let timeout = Duration::from_secs(u64::from(operations.job_timeout_seconds));
    let spinner = super::cluster::Spinner::new(false);
    let outcome = super::cluster::block_on(&spinner, async {
        let client = crate::cluster::connect(dir, &env)
            .await
            .map_err(|e| (Exit::UnusableInput, e.to_string()))?;
        let namespace = Namespace::new(client, &env.file.namespace);
        // The journal names the Job once it exists, not before.
        let launched = |job: &str| super::journal::note_job(job);
        operation::run(&namespace, &job, &policy, timeout, &spinner, &launched)
            .await
            .map_err(|e| (Exit::OperationFailed, e.to_string()))
    })?;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err((exit, message)) => return Ok(Some(refuse(format, &message, exit))),
    };
    if request.command == "drill"
        && let Some(document) = &outcome.report
    {
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(keep_drill_report(dir, &env, document));
    }
    Ok(Some(report(&env.file.namespace, &outcome, timeout, format)))
}

/// Keeps the drill report a Job printed where `status` reads the last
/// drill: the backup store (where the Job's kisumctl also keeps it, when
/// it can) and this machine's `<state-dir>/drills`. A document that is
/// not a drill report of this environment is left alone.
async fn keep_drill_report(dir: &Path, env: &crate::matrix::Environment<'_>, document: &Value) {
    use crate::backup::store::{BackupStore as _, Store};
    let (Some(at), Some(_)) = (document["at"].as_str(), document["databases"].as_array()) else {
        return;
    };
    if document["environment"] != env.name {
        return;
    }
    let name = format!("drill-{}.json", at.replace(':', ""));
    let json = serde_json::to_string_pretty(document).unwrap_or_default();
    let local = crate::matrix::resolve_path(dir, &env.file.state_dir).join("drills");
    let written =
        std::fs::create_dir_all(&local).and_then(|_| std::fs::write(local.join(&name), &json));
    if let Err(error) = written {
        errln!(
            "warning: the Job's drill report could not be kept in {}: {error}",
            local.display()
        );
    }
    let store = Store::for_environment(dir, env).await;
    match store.put_drill_report(&name, &json).await {
        Ok(()) => errln!(
            "drill {}: the Job's report {name} is kept in the backup store ({}) for `kisumctl status {}`",
            env.name,
            store.describe(),
            env.name
        ),
        Err(error) => errln!(
            "warning: the Job's drill report could not be kept in the backup store ({error:#}); `kisumctl status {}` sees it on this machine only",
            env.name
        ),
    }
}

/// `Err` when the environment's backup store, read from here, holds no
/// backup `id`; a store this machine cannot read is left to the Job.
async fn backup_in_store(
    dir: &Path,
    env: &crate::matrix::Environment<'_>,
    id: &str,
) -> Result<(), String> {
    use crate::backup::store::{BackupStore as _, Store};
    let store = Store::for_environment(dir, env).await;
    match store.ids().await {
        Ok(ids) if ids.iter().any(|known| known == id) => Ok(()),
        Ok(_) => Err(format!(
            "no backup `{}` in {}; nothing was launched (`kisumctl backup list {}` shows the backups)",
            crate::matrix::load::printable(id),
            store.describe(),
            env.name
        )),
        Err(error) => {
            errln!(
                "warning: the backup store cannot be read from here ({error:#}); the Job checks that backup {} exists",
                crate::matrix::load::printable(id)
            );
            Ok(())
        }
    }
}

/// Prints how the Job ended; the exit code of the command it ran.
fn report(
    namespace: &str,
    outcome: &operation::Outcome,
    timeout: Duration,
    format: OutputFormat,
) -> Exit {
    let job = &outcome.job;
    let exit = match (outcome.state, outcome.exit) {
        // Complete without a result line: the command's outcome is unknown.
        ("complete", Some(exit)) => exit_of(exit),
        (_, Some(exit)) if exit != 0 => exit_of(exit),
        _ => Exit::OperationFailed,
    };
    if format == OutputFormat::Json {
        let document = json!({
            "runner": "job",
            "namespace": namespace,
            "job": job,
            "state": outcome.state,
            "exit": exit as u8,
            "detail": outcome.detail,
            "report": outcome.report,
            "log": outcome.log,
        });
        outln!(
            "{}",
            serde_json::to_string_pretty(&document).unwrap_or_default()
        );
    } else if let Some(report) = &outcome.report {
        outln!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
    }
    let printable = crate::matrix::load::printable;
    match outcome.state {
        "complete" if outcome.exit.is_none() => errln!(
            "error: Job/{job} completed but its log has no `kisumctl-result:` line, so the command's outcome is unknown; read it with `kubectl -n {namespace} logs job/{job}` (exit 3)"
        ),
        "complete" => errln!("Job/{job} completed (exit {})", exit as u8),
        "failed" => {
            errln!(
                "error: Job/{job} failed: {} (exit {})",
                printable(outcome.detail.as_deref().unwrap_or("no reason given")),
                exit as u8
            );
            if !outcome.log.is_empty() {
                errln!("its log ends with (credentials masked):");
                for line in outcome.log.lines() {
                    errln!("  {}", printable(line));
                }
            }
            errln!(
                "the Job stays in namespace {namespace} for a day: `kubectl -n {namespace} logs job/{job}`"
            );
        }
        _ => {
            errln!(
                "error: Job/{job} did not finish within {} s ({}); it is left in namespace {namespace}, still running, with its NetworkPolicy `kisumctl`: Kubernetes stops it at its deadline (activeDeadlineSeconds {}) and deletes it a day after it ends. Follow it with `kubectl -n {namespace} logs -f job/{job}`, or stop it with `kubectl -n {namespace} delete job {job}` (exit 3)",
                timeout.as_secs(),
                printable(outcome.detail.as_deref().unwrap_or("")),
                timeout.as_secs()
            );
        }
    }
    exit
}

fn exit_of(code: u8) -> Exit {
    match code {
        0 => Exit::Clean,
        1 => Exit::CheckFailed,
        2 => Exit::UnusableInput,
        4 => Exit::RollbackFailed,
        _ => Exit::OperationFailed,
    }
}

/// With `runner: host`, a warning when this machine is not the one the
/// matrix names: the databases are likely out of its reach.
fn warn_off_host(env: &crate::matrix::Environment) {
    let Some(operations) = &env.file.operations else {
        return;
    };
    let Some(host) = &operations.host else {
        return;
    };
    let here = operation::hostname();
    if !operation::names_this_machine(host, &here) {
        errln!(
            "warning: {} runs its operations on {host} (operations.host), and this is {}: its private network may be out of reach",
            env.name,
            crate::matrix::load::printable(&here)
        );
    }
}
