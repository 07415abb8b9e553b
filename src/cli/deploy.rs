//! `kisumctl deploy ENV`: only `local` so far.

use super::output::{errln, out};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::Exit;
use super::output::table;
use crate::local::Context;
use crate::local::deploy::{self, Options, Outcome, Progress};
use crate::matrix::Environment;

/// Deploy the platform to an environment.
///
/// `local` runs the whole platform on this machine: a private PostgreSQL,
/// Redis and MongoDB-wire server, every database with its own login, the
/// migrations, generated keys and credentials (in the environment's secret
/// store, never printed), then Core, Auth, the module backends and Admin
/// as supervised processes in release order, each ready before the next;
/// finally the smoke fixtures are seeded and the smoke checks run. The
/// supervisor keeps running after the command returns, until `kisumctl
/// down local`. A second run converges: only what changed restarts.
///
/// Any other environment is deployed to its Kubernetes cluster (kubeconfig
/// and context from the matrix) under the environment's Lease: each
/// service's migrations as a Job, then server-side apply (field manager
/// `kisumctl`) wave by wave (Core, Auth, module backends, Admin), each
/// wave's rollouts waited for, then the smoke checks. A rollout timeout or
/// a failed smoke check rolls back to the previous release's stored
/// manifests. Then objects the matrix no longer names are pruned and the
/// release is recorded (`kisumctl history`). Production asks for
/// confirmation unless `--yes`.
///
/// Exit codes: 0 deployed and every check passed, 1 a check failed (or a
/// rollback was refused by the schema guard), 2 unusable input, 3 the
/// deploy failed (for `local`: rerun it to resume; otherwise: rolled back,
/// or stopped where it stood, as the report says), 4 the automatic rollback
/// failed too (its rollout or its smoke checks): neither release runs
/// cleanly and a person must step in.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment to deploy.
    pub(super) env: String,

    /// Directory of prebuilt service binaries (kisum-core, kisum-auth,
    /// kisum-module, kisum-admin); without it they are built with
    /// `cargo build --release` in the repository (`local` only).
    #[arg(long, env = "KISUM_SERVICE_BIN_DIR", value_name = "DIR")]
    bin_dir: Option<PathBuf>,

    #[command(flatten)]
    lock: super::LockWait,

    /// Send every change as a server-side dry run: the API server checks
    /// it and nothing is stored, no lock is taken, nothing is recorded
    /// (not for `local`).
    #[arg(long)]
    dry_run: bool,

    /// Seconds each rollout and migration Job may take, in place of the
    /// matrix's `kubernetes.rollout-timeout-seconds` and
    /// `rollout-timeouts` (not for `local`).
    #[arg(long, value_name = "SECONDS", value_parser = super::positive_seconds)]
    timeout: Option<u64>,

    /// Deploy production without asking.
    #[arg(long)]
    yes: bool,

    /// Roll back automatically even across a schema level the previous
    /// release's code may not run on.
    #[arg(long)]
    force: bool,

    #[command(flatten)]
    cluster: super::cluster::Common,
}

impl Args {
    /// The output format, for errors before the deploy starts.
    pub fn format(&self) -> super::OutputFormat {
        self.cluster.output
    }
}

pub fn run(dir: &Path, env: &Environment, args: Args) -> anyhow::Result<Exit> {
    let kubernetes_only = args.dry_run || args.timeout.is_some() || args.force;
    if kubernetes_only || args.cluster.output == super::OutputFormat::Json {
        let message = "`--dry-run`, `--timeout`, `--force` and `-o json` are for deploys to Kubernetes, not `deploy local`";
        return Ok(super::refuse(
            args.cluster.output,
            message,
            Exit::UnusableInput,
        ));
    }
    let context = Context::for_environment(env, dir)?;
    let options = Options {
        bin_dir: args.bin_dir.map(|d| std::path::absolute(&d).unwrap_or(d)),
        lock_timeout: args.lock.timeout(),
    };
    let progress = Bars::new();
    let runtime = tokio::runtime::Runtime::new()?;
    let outcome = runtime.block_on(deploy::deploy(env, &context, &options, &progress));
    progress.clear();
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            errln!("error: deploy local failed: {error:#}");
            if let Some(crate::local::lock::LockError::Held { .. }) = error.downcast_ref() {
                // Refused before its first step: nothing to resume.
                errln!("nothing was changed (exit 3)");
            } else {
                errln!(
                    "the platform may be partly deployed; `kisumctl deploy local` resumes, `kisumctl status local` shows what runs (exit 3)"
                );
            }
            return Ok(Exit::OperationFailed);
        }
    };
    out!("{}", report(&outcome));
    if outcome.passed() {
        errln!("deploy local: every check passed");
        Ok(Exit::Clean)
    } else {
        errln!("deploy local: deployed, but a check failed (exit 1)");
        Ok(Exit::CheckFailed)
    }
}

fn report(outcome: &Outcome) -> String {
    let total: Duration = outcome.steps.iter().map(|(_, d)| *d).sum();
    let mut rows: Vec<Vec<String>> = outcome
        .steps
        .iter()
        .map(|(name, took)| vec![name.clone(), format!("{:.2}", took.as_secs_f64())])
        .collect();
    rows.push(vec!["total".into(), format!("{:.2}", total.as_secs_f64())]);
    let mut out = table(&["STEP", "SECONDS"], &rows);
    out.push('\n');
    out += &format!(
        "changed: {}\n\n",
        if outcome.changed.is_empty() {
            "nothing".to_string()
        } else {
            outcome.changed.join(", ")
        }
    );
    let checks: Vec<Vec<String>> = outcome
        .checks
        .iter()
        .map(|c| (c.name.to_string(), c.passed, c.duration, c.detail.clone()))
        .chain(outcome.smoke.checks.iter().map(|c| {
            (
                format!("smoke/{}", c.name),
                c.passed,
                c.duration,
                c.detail.clone().unwrap_or_default(),
            )
        }))
        .map(|(name, passed, took, detail)| {
            vec![
                name,
                if passed { "pass" } else { "FAIL" }.to_string(),
                format!("{:.2}", took.as_secs_f64()),
                detail,
            ]
        })
        .collect();
    out + &table(&["CHECK", "RESULT", "SECONDS", "DETAIL"], &checks)
}

/// A spinner per step on a terminal (indicatif), with the step's latest
/// detail (cargo's progress, a wait); plain lines otherwise, one per
/// detail, so that a log or CI shows the build advancing too.
struct Bars {
    terminal: bool,
    current: Mutex<Option<ProgressBar>>,
    /// The step under way, for the plain lines.
    step: Mutex<String>,
}

impl Bars {
    fn new() -> Bars {
        Bars {
            terminal: std::io::stderr().is_terminal(),
            current: Mutex::new(None),
            step: Mutex::new(String::new()),
        }
    }

    fn clear(&self) {
        if let Some(bar) = self.current.lock().ok().and_then(|mut c| c.take()) {
            bar.finish_and_clear();
        }
    }
}

impl Progress for Bars {
    fn step(&self, name: &str) {
        if let Ok(mut step) = self.step.lock() {
            *step = name.to_string();
        }
        if !self.terminal {
            errln!("deploy: {name} ...");
            return;
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix:18} {elapsed:>4} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(name.to_string());
        bar.enable_steady_tick(Duration::from_millis(100));
        if let Ok(mut current) = self.current.lock() {
            *current = Some(bar);
        }
    }

    fn detail(&self, text: &str) {
        let text = crate::matrix::load::printable(text);
        if !self.terminal {
            let step = self.step.lock().map(|s| s.clone()).unwrap_or_default();
            errln!("deploy: {step}: {text}");
            return;
        }
        if let Some(bar) = self.current.lock().ok().and_then(|c| c.clone()) {
            bar.set_message(text.chars().take(100).collect::<String>());
        }
    }

    fn done(&self, name: &str, took: Duration, summary: &str) {
        let line = format!("{name:18} {:>6.2} s  {summary}", took.as_secs_f64());
        match self.current.lock().ok().and_then(|mut c| c.take()) {
            Some(bar) => {
                bar.set_style(
                    ProgressStyle::with_template("✓ {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.finish_with_message(line);
            }
            None => errln!("deploy: {line}"),
        }
    }

    fn note(&self, text: &str) {
        match self.current.lock().ok().and_then(|c| c.clone()) {
            Some(bar) => bar.println(format!("note: {text}")),
            None => errln!("note: {text}"),
        }
    }
}

/// `kisumctl deploy ENV` for an environment on Kubernetes.
pub fn run_cluster(
    dir: &Path,
    matrix: &crate::matrix::Matrix,
    env: &Environment,
    args: Args,
) -> anyhow::Result<Exit> {
    use super::cluster;
    let format = args.cluster.output;
    let (manifests, namespace) = match cluster::manifests(matrix, env, &args.cluster.templates) {
        Ok(found) => found,
        Err(failure) => return Ok(cluster::fail(format, failure)),
    };
    let unpinned: Vec<&str> = manifests
        .images
        .values()
        .filter(|image| !image.contains("@sha256:"))
        .map(String::as_str)
        .collect();
    if env.is_production() && !unpinned.is_empty() {
        errln!(
            "warning: {} images of {} are not pinned by digest (such as {}): a tag can move under a rollback",
            unpinned.len(),
            env.name,
            unpinned[0]
        );
    }
    if env.is_production() && !args.dry_run && !args.yes {
        let lines = [format!(
            "deploy {} to namespace {} of context {} (digest {})",
            env.name,
            env.file.namespace,
            env.file.kubernetes.context,
            manifests.digest()
        )];
        if !super::confirm_by_typing("deploy production", &lines, env.name)? {
            let message = format!(
                "not deploying {}: not confirmed (pass --yes to deploy without asking)",
                env.name
            );
            return Ok(super::refuse(format, &message, Exit::UnusableInput));
        }
    }
    let smoke = if args.dry_run {
        None
    } else {
        match cluster::smoke_target(dir, env) {
            Ok(smoke) => Some(smoke),
            Err(failure) => return Ok(cluster::fail(format, failure)),
        }
    };
    let spinner = cluster::Spinner::new(false);
    let outcome = cluster::block_on(&spinner, async {
        let target = cluster::target(dir, env, args.timeout, smoke).await?;
        crate::cluster::release::deploy(
            &target,
            &manifests,
            &namespace,
            args.dry_run,
            args.force,
            &spinner,
        )
        .await
        .map_err(|e| cluster::deploy_error(&e))
    })?;
    Ok(match outcome {
        Ok(report) => cluster::report(&report, format, "deploy"),
        Err(failure) => cluster::fail(format, failure),
    })
}
