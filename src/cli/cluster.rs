//! What `deploy`, `rollback`, `history` and `diff` share for an
//! environment on Kubernetes: the rendered release, the connection, the
//! smoke target, progress on stderr (a spinner on a terminal only), and
//! the report.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::output::{errln, outln};
use super::{Exit, OutputFormat};
use crate::cluster::api::Namespace;
use crate::cluster::manifest::Manifests;
use crate::cluster::release::{Conclusion, DeployError, Progress, Report, Target};
use crate::matrix::Environment;
use crate::render::templates::Templates;

/// Options every cluster command has.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// Directory of the tera templates the manifests are rendered with.
    #[arg(long, env = "KISUM_TEMPLATES", default_value = "templates")]
    pub templates: PathBuf,

    /// Output format of the result.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// The environment's manifests as `kisumctl render` makes them, refused
/// when the matrix breaks a rule.
pub fn manifests(
    matrix: &crate::matrix::Matrix,
    env: &Environment,
    templates: &Path,
) -> Result<(Manifests, serde_json::Value), (Exit, String)> {
    let violations = crate::matrix::rules::check(matrix)
        .into_iter()
        .filter(|f| f.level == crate::matrix::rules::Level::Error)
        .filter(|f| f.environment.as_deref().is_none_or(|e| e == env.name))
        .count();
    if violations > 0 {
        return Err((
            Exit::CheckFailed,
            format!(
                "the matrix violates {violations} rule(s) for {}: see `kisumctl validate {}`",
                env.name, env.name
            ),
        ));
    }
    let templates = Templates::load(templates).map_err(|e| (Exit::UnusableInput, e.to_string()))?;
    let files =
        crate::render::render(env, &templates).map_err(|e| (Exit::UnusableInput, e.to_string()))?;
    let manifests =
        Manifests::from_render(env, &files).map_err(|e| (Exit::UnusableInput, e.to_string()))?;
    let namespace = manifests
        .objects()
        .map_err(|e| (Exit::UnusableInput, e.to_string()))?
        .into_iter()
        .find(|o| o.kind() == "Namespace")
        .map(|o| o.value)
        .ok_or((
            Exit::UnusableInput,
            "no Namespace among the manifests".to_string(),
        ))?;
    Ok((manifests, namespace))
}

/// The smoke checks' URLs and credentials, read before anything changes
/// so that a deploy that could not check itself never starts.
pub fn smoke_target(
    dir: &Path,
    env: &Environment,
) -> Result<(crate::smoke::Target, crate::smoke::Credentials), (Exit, String)> {
    let urls =
        smoke_urls(dir, env).map_err(|e| (Exit::UnusableInput, format!("smoke checks: {e}")))?;
    let store = crate::secrets::for_environment(dir, env)
        .map_err(|e| (Exit::OperationFailed, format!("smoke checks: {e}")))?;
    let credentials = crate::smoke::Credentials::from_store(store.as_ref())
        .map_err(|e| (Exit::UnusableInput, format!("smoke checks: {e}")))?;
    Ok((urls, credentials))
}

/// The public URLs of an environment on Kubernetes: those of the file
/// `kubernetes.smoke-endpoints` names, else `https://<host>`.
pub fn smoke_urls(
    dir: &Path,
    env: &Environment,
) -> Result<crate::smoke::Target, crate::smoke::TargetError> {
    match &env.file.kubernetes.smoke_endpoints {
        Some(path) => {
            let path = crate::matrix::resolve_path(dir, path);
            crate::smoke::from_smoke_endpoints(env.name, &path)
        }
        None => crate::smoke::Target::from_hosts(env),
    }
}

/// The deploy target of an environment, connected.
pub async fn target<'a>(
    dir: &Path,
    env: &'a Environment<'a>,
    timeout: Option<u64>,
    smoke: Option<(crate::smoke::Target, crate::smoke::Credentials)>,
) -> Result<Target<'a>, (Exit, String)> {
    let client = crate::cluster::connect(dir, env)
        .await
        .map_err(|e| (Exit::UnusableInput, e.to_string()))?;
    let kubernetes = &env.file.kubernetes;
    let seconds = |s: u32| Duration::from_secs(timeout.unwrap_or(u64::from(s)));
    Ok(Target {
        environment: env.name,
        namespace: Namespace::new(client, &env.file.namespace),
        timeouts: kubernetes
            .rollout_timeouts
            .iter()
            .map(|(service, s)| (service.clone(), seconds(*s)))
            .collect::<BTreeMap<_, _>>(),
        default_timeout: seconds(kubernetes.rollout_timeout_seconds),
        history_limit: kubernetes.history_limit,
        smoke,
        who: crate::cluster::lease::identity(),
    })
}

/// An error of a cluster command: a message on stderr and, with `-o json`,
/// a document on stdout.
pub fn fail(format: OutputFormat, (exit, message): (Exit, String)) -> Exit {
    super::refuse(format, &message, exit)
}

/// The exit code and message of a failed deploy or rollback.
pub fn deploy_error(error: &DeployError) -> (Exit, String) {
    use crate::cluster::history::HistoryError;
    let exit = match error {
        DeployError::Guard { .. } => Exit::CheckFailed,
        DeployError::History(HistoryError::NoSuchRelease { .. }) => Exit::UnusableInput,
        _ => Exit::OperationFailed,
    };
    (exit, error.to_string())
}

/// Prints a deploy's or rollback's report; its exit code.
pub fn report(report: &Report, format: OutputFormat, command: &str) -> Exit {
    let exit = match report.result {
        Conclusion::Deployed | Conclusion::DryRun => Exit::Clean,
        Conclusion::RolledBack | Conclusion::Failed => Exit::OperationFailed,
        Conclusion::RollbackFailed => Exit::RollbackFailed,
    };
    if format == OutputFormat::Json {
        outln!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
    } else {
        outln!("{}", text(report));
    }
    if let Some(failure) = &report.failure {
        errln!(
            "error: {command} {}: release {} FAILED: {failure}",
            report.environment,
            report.release.unwrap_or(0)
        );
    }
    if let Some(rollback) = &report.rollback {
        if rollback.attempted && !rollback.done {
            errln!(
                "ROLLBACK FAILED: {}{}",
                rollback.detail,
                rollback
                    .stopped_at
                    .as_ref()
                    .map_or(String::new(), |at| format!(" (stopped at {at})"))
            );
            if let Some(next) = &report.next {
                errln!("NEXT: {next}");
            }
        } else if rollback.done {
            errln!(
                "ROLLED BACK: {} runs release {} again (recorded as release {}); the failed release is kept in `kisumctl history {}`",
                report.environment,
                rollback.to.unwrap_or(0),
                rollback.release.unwrap_or(0),
                report.environment
            );
            if rollback.smoke_passed == Some(false) {
                errln!(
                    "ROLLBACK FAILED: the smoke checks fail after the rollback too (release {} is recorded as failed)",
                    rollback.release.unwrap_or(0)
                );
                if let Some(next) = &report.next {
                    errln!("NEXT: {next}");
                }
            }
        } else {
            errln!(
                "ROLLBACK NOT DONE: {}; the failed release is still live",
                rollback.detail
            );
        }
    }
    match report.result {
        Conclusion::Deployed => errln!("{command} {}: done", report.environment),
        Conclusion::DryRun => errln!("{command} {}: dry run, nothing changed", report.environment),
        Conclusion::RollbackFailed => errln!(
            "{command} {}: failed, and so did the rollback (exit 4)",
            report.environment
        ),
        _ => errln!("{command} {}: failed (exit 3)", report.environment),
    }
    exit
}

fn text(report: &Report) -> String {
    let mut lines = vec![format!(
        "environment: {}\nresult:      {}\nrelease:     {}\ndigest:      {}",
        report.environment,
        serde_json::to_value(report.result)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        report.release.map_or("-".to_string(), |n| n.to_string()),
        report.digest
    )];
    let rows: Vec<Vec<String>> = report
        .migrations
        .iter()
        .map(|m| vec![m.service.clone(), m.job.clone(), m.level.to_string()])
        .collect();
    if !rows.is_empty() {
        lines.push(super::output::table(&["MIGRATED", "JOB", "LEVEL"], &rows));
    }
    let rows: Vec<Vec<String>> = report
        .waves
        .iter()
        .map(|w| {
            vec![
                w.wave.to_string(),
                w.services.join(", "),
                w.objects.to_string(),
                format!("{:.2}", w.seconds),
            ]
        })
        .collect();
    if !rows.is_empty() {
        lines.push(super::output::table(
            &["WAVE", "SERVICES", "OBJECTS", "SECONDS"],
            &rows,
        ));
    }
    if let Some(smoke) = &report.smoke {
        let rows: Vec<Vec<String>> = smoke
            .checks
            .iter()
            .map(|c| {
                vec![
                    c.name.to_string(),
                    format!("{:?}", c.status()).to_uppercase(),
                    c.detail.clone().unwrap_or_default(),
                ]
            })
            .collect();
        lines.push(super::output::table(&["SMOKE", "RESULT", "DETAIL"], &rows));
    }
    if !report.pruned.is_empty() {
        lines.push(format!("pruned: {}", report.pruned.join(", ")));
    }
    if let Some(failure) = &report.failure {
        lines.push(format!("failure:     {failure}"));
    }
    if let Some(at) = &report.stopped_at {
        lines.push(format!("stopped at:  {at}"));
    }
    if let Some(rollback) = &report.rollback {
        let state = match (rollback.attempted, rollback.done) {
            (_, true) => "done",
            (true, false) => "FAILED",
            (false, false) => "not done",
        };
        lines.push(format!("rollback:    {state}: {}", rollback.detail));
        if let Some(at) = &rollback.stopped_at {
            lines.push(format!("rollback stopped at: {at}"));
        }
        if let Some(next) = &report.next {
            lines.push(format!("next:        {next}"));
        }
    }
    lines.join("\n")
}

/// Progress on stderr: one line per step; on a terminal, a spinner shows
/// what a wait is waiting for.
pub struct Spinner {
    bar: Mutex<Option<ProgressBar>>,
    quiet: bool,
}

impl Spinner {
    pub fn new(quiet: bool) -> Spinner {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>4} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Spinner {
            bar: Mutex::new(bar),
            quiet,
        }
    }

    pub fn clear(&self) {
        if let Some(bar) = self.bar.lock().ok().and_then(|mut b| b.take()) {
            bar.finish_and_clear();
        }
    }
}

impl Progress for Spinner {
    fn step(&self, line: &str) {
        let line = crate::matrix::load::printable(line);
        let loud = line.starts_with("ROLLING BACK");
        if self.quiet && !loud {
            return;
        }
        match self.bar.lock().ok().and_then(|b| b.clone()) {
            Some(bar) => bar.println(line),
            None => errln!("{line}"),
        }
    }

    fn waiting(&self, what: &str) {
        if let Some(bar) = self.bar.lock().ok().and_then(|b| b.clone()) {
            bar.set_message(crate::matrix::load::printable(what));
        }
    }
}

/// Runs a release future on a fresh runtime, with the spinner cleared
/// after.
pub fn block_on<T>(
    spinner: &Spinner,
    future: impl std::future::Future<Output = T>,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Runtime::new()?;
    let value = runtime.block_on(future);
    spinner.clear();
    Ok(value)
}
