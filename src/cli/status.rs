//! `kisumctl status ENV`: the processes of `local`, or the rollouts,
//! public endpoints and operations of an environment on Kubernetes.

use super::output::{out, outln};
use std::path::Path;

use super::output::table;
use super::{Exit, OutputFormat};
use crate::local::plan::Endpoints;
use crate::local::state::{DesiredState, read_json};
use crate::local::{Context, checks, probe, status};
use crate::matrix::Environment;
use crate::ops::{cluster_health, health, reachability};
use crate::secrets::SecretStore as _;

/// Show whether an environment is up, ready and looked after.
///
/// `local`: each data service and service with its supervisor state,
/// whether it is up and ready now, pid, ports, version and restarts.
/// Without a supervisor (it was killed), processes it started may still
/// run: they are shown as `unsupervised` (nothing restarts them).
///
/// An environment on Kubernetes: each Deployment's rollout, read through
/// the kubeconfig and context of the matrix; each public service's health
/// and readiness routes at `https://<host>` (or the URLs of
/// `kubernetes.smoke-endpoints`).
///
/// Then the operations: each database's newest backup against its RPO,
/// each database and Redis reachable (a trivial query, with its latency),
/// each PostgreSQL database's migrations against the services' files, each
/// public host's certificate against the renewal window and alert
/// threshold, the last restore drill's result (for an environment on
/// Kubernetes from the backup store, where every drill keeps its report,
/// wherever it ran), the JWT key set's state;
/// each ok, note (nothing to judge yet, slow, pending), unknown (out of
/// reach from here, with why: the databases of a cluster environment
/// unless this is its operations host) or red.
///
/// `local` never deployed (no deploy record and no desired state in its
/// state directory): one line saying so, with `kisumctl deploy local` as
/// the next step; nothing is probed, and the exit code is 1.
///
/// Exit codes: 0 nothing is red (and, for `local`, a supervisor runs and
/// everything is ready), 1 something is red (or a check of `--verify`
/// failed, or `local` is not deployed), 2 unusable input.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment.
    pub(super) env: String,

    /// Also run the deploy's quick checks (readiness, Auth reaches Core,
    /// the smoke user's login and a finance read); `local` only.
    #[arg(long)]
    verify: bool,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub(super) output: OutputFormat,
}

pub fn run(dir: &Path, env: &Environment, args: Args) -> anyhow::Result<Exit> {
    let context = Context::for_environment(env, dir)?;
    if !deployed(&context) {
        return not_deployed(env.name, &context, args.output);
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(status::collect(env.name, &context))?;
    let verified = if args.verify {
        Some(runtime.block_on(verify(&context))?)
    } else {
        None
    };
    let operations = runtime.block_on(operations(dir, env, &context));
    let red = operations.iter().any(|i| i.light == health::Light::Red);
    let passed =
        report.all_ready() && !red && verified.as_ref().is_none_or(|c| c.iter().all(|c| c.passed));

    if args.output == OutputFormat::Json {
        let mut document = serde_json::to_value(&report)?;
        if let Some(checks) = &verified {
            document["checks"] = serde_json::to_value(checks)?;
        }
        document["operations"] = serde_json::to_value(&operations)?;
        outln!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        print_text(&report, verified.as_deref());
        print_items("OPERATIONS", &operations);
    }
    Ok(if passed {
        Exit::Clean
    } else {
        Exit::CheckFailed
    })
}

/// A deploy has run here (even one that stopped part way): its record or
/// the desired state it wrote is in the state directory.
fn deployed(context: &Context) -> bool {
    let state = &context.state;
    state.deploy_record().exists() || state.desired().exists()
}

/// The one line (or document) of a `local` never deployed: nothing to
/// probe, since nothing was started.
fn not_deployed(env: &str, context: &Context, format: OutputFormat) -> anyhow::Result<Exit> {
    let state_dir = context.state.root().display().to_string();
    let next = format!("kisumctl deploy {env}");
    let line = format!("{env} is not deployed (no deploy record in {state_dir}): run `{next}`");
    if format == OutputFormat::Json {
        let document = serde_json::json!({
            "environment": env,
            "state_dir": state_dir,
            "deployed": false,
            "detail": line,
            "next": next,
        });
        outln!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        outln!("{line}");
    }
    Ok(Exit::CheckFailed)
}

/// `status` of an environment on Kubernetes.
pub fn run_cluster(dir: &Path, env: &Environment, args: Args) -> anyhow::Result<Exit> {
    if args.verify {
        let message = format!(
            "`status {} --verify` is not supported: the quick checks are those of `local`; run `kisumctl smoke {}`",
            env.name, env.name
        );
        return Ok(super::refuse(args.output, &message, Exit::UnusableInput));
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(cluster_health::collect(dir, env));
    if args.output == OutputFormat::Json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!(
            "environment {}  namespace {}",
            report.environment,
            report.namespace
        );
        print_items("ROLLOUTS", &report.rollouts);
        print_items("ENDPOINTS", &report.endpoints);
        print_items("OPERATIONS", &report.operations);
    }
    Ok(if report.red() {
        Exit::CheckFailed
    } else {
        Exit::Clean
    })
}

fn print_text(report: &status::Report, verified: Option<&[checks::QuickCheck]>) {
    let supervisor = report
        .supervisor
        .map_or("not running".to_string(), |pid| format!("pid {pid}"));
    outln!(
        "environment {}  state {}  supervisor {supervisor}",
        report.environment,
        report.state_dir
    );
    if report.processes.is_empty() {
        outln!(
            "nothing deployed; run `kisumctl deploy {}`",
            report.environment
        );
        return;
    }
    let unsupervised = report.unsupervised();
    if unsupervised > 0 {
        outln!(
            "the supervisor is gone, but {unsupervised} of its processes still run: nothing restarts them; \
             `kisumctl deploy {env}` starts a supervisor that takes over, `kisumctl down {env}` stops them",
            env = report.environment
        );
    }
    let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
    let rows: Vec<Vec<String>> = report
        .processes
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.kind.to_string(),
                p.state.clone(),
                yes(p.up),
                yes(p.ready),
                p.pid.map_or("-".into(), |pid| pid.to_string()),
                p.ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                p.version.clone().unwrap_or_else(|| "-".into()),
                p.restarts.to_string(),
                p.detail.clone(),
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &[
                "NAME", "KIND", "STATE", "UP", "READY", "PID", "PORTS", "VERSION", "RESTARTS",
                "DETAIL"
            ],
            &rows
        )
    );
    if let Some(keys) = report.redis_keys {
        outln!("redis keys: {keys}");
    }
    if let Some(checks) = verified {
        let rows: Vec<Vec<String>> = checks
            .iter()
            .map(|c| {
                vec![
                    c.name.to_string(),
                    if c.passed { "pass" } else { "FAIL" }.to_string(),
                    format!("{:.2}", c.duration.as_secs_f64()),
                    c.detail.clone(),
                ]
            })
            .collect();
        out!(
            "\n{}",
            table(&["CHECK", "RESULT", "SECONDS", "DETAIL"], &rows)
        );
    }
}

async fn verify(context: &Context) -> anyhow::Result<Vec<checks::QuickCheck>> {
    let state = &context.state;
    let desired: DesiredState = read_json(&state.desired())?.unwrap_or_default();
    let endpoints: Endpoints = read_json(&state.endpoints())?.unwrap_or_default();
    let fixtures = crate::smoke::Credentials::from_store(&context.store)?;
    let kisumctl = context
        .store
        .read("internal-credential-kisumctl", "token")?
        .ok_or_else(|| anyhow::anyhow!("the secret internal-credential-kisumctl is missing"))?;
    let client = probe::http_client();
    // A process stopped on purpose (`down --only`) is not expected ready.
    let expected: Vec<_> = desired
        .processes
        .iter()
        .filter(|p| !desired.held.contains(&p.name))
        .cloned()
        .collect();
    Ok(checks::run(&client, &endpoints, &expected, &kisumctl, &fixtures).await)
}

/// Backups against their RPO, reachability, migrations, certificates, the
/// last drill, the key set.
async fn operations(dir: &Path, env: &Environment<'_>, context: &Context) -> Vec<health::Item> {
    let mut items = health::backups_in_store(dir, env, health::Light::Red).await;
    items.extend(reachability::databases(env, &context.store).await);
    items.extend(reachability::migrations(dir, env, &context.store).await);
    let now = jiff::Timestamp::now().as_second();
    items.extend(reachability::certificates(
        env,
        &context.store,
        now,
        health::Light::Red,
    ));
    items.push(health::last_drill(&context.state.root().join("drills")));
    items.push(health::key_set_in(
        env.base,
        &context.store,
        health::Light::Red,
    ));
    items
}

fn print_items(title: &str, items: &[health::Item]) {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| vec![i.name.clone(), i.light.word().to_string(), i.detail.clone()])
        .collect();
    out!("\n{}", table(&[title, "STATE", "DETAIL"], &rows));
}
