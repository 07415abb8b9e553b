//! `kisumctl status local`.

use super::output::{out, outln};
use std::path::Path;

use super::output::table;
use super::{Exit, OutputFormat};
use crate::local::plan::Endpoints;
use crate::local::state::{DesiredState, read_json};
use crate::local::{Context, checks, probe, status};
use crate::matrix::Environment;
use crate::ops::{health, reachability};
use crate::secrets::SecretStore as _;

/// Show the processes of a local environment and whether they are ready.
///
/// Each data service and service with its supervisor state, whether it is
/// up and ready now, pid, ports, version and restarts.
///
/// Without a supervisor (it was killed), processes it started may still
/// run: they are shown as `unsupervised` (nothing restarts them).
///
/// Then the operations: each database's newest backup against its RPO,
/// each database and Redis reachable (a trivial query, with its latency),
/// each PostgreSQL database's migrations against the services' files, each
/// public host's certificate against the renewal window and alert
/// threshold, the last restore drill's result, the JWT key set's state;
/// each ok, note (nothing to judge yet, slow, pending) or red.
///
/// Exit codes: 0 a supervisor runs, everything is ready and nothing is red,
/// 1 something is not (or a check of `--verify` failed), 2 unusable input
/// or an environment other than `local`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment (only `local` runs processes).
    pub(super) env: String,

    /// Also run the deploy's quick checks (readiness, Auth reaches Core,
    /// the smoke user's login and a finance read).
    #[arg(long)]
    verify: bool,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub(super) output: OutputFormat,
}

pub fn run(dir: &Path, env: &Environment, args: Args) -> anyhow::Result<Exit> {
    let context = Context::for_environment(env, dir)?;
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
        print_operations(&operations);
    }
    Ok(if passed {
        Exit::Clean
    } else {
        Exit::CheckFailed
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
    let mut items = Vec::new();
    if env.file.backups.enabled {
        let listed = match crate::secrets::for_environment(dir, env) {
            Ok(secrets) => match crate::backup::Context::new(dir, env, secrets).await {
                Ok(cx) => cx.store.list().await.map(|(manifests, _)| manifests),
                Err(error) => Err(error),
            },
            Err(error) => Err(error.into()),
        };
        match listed {
            Ok(manifests) => {
                let now = jiff::Timestamp::now().as_second();
                items.extend(health::backups(env, &manifests, now));
            }
            Err(error) => items.push(health::Item {
                name: "backups".into(),
                light: health::Light::Red,
                detail: format!("the backup store cannot be listed: {error:#}"),
            }),
        }
    }
    items.extend(reachability::databases(env, &context.store).await);
    items.extend(reachability::migrations(dir, env, &context.store).await);
    let now = jiff::Timestamp::now().as_second();
    items.extend(reachability::certificates(env, &context.store, now));
    items.push(health::last_drill(&context.state.root().join("drills")));
    let keys = crate::rotation::store::KeyStore::new(env.base, &context.store)
        .and_then(|store| store.load())
        .map_err(|e| e.to_string());
    items.push(health::key_set(keys));
    items
}

fn print_operations(items: &[health::Item]) {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            let light = match i.light {
                health::Light::Green => "ok",
                health::Light::Yellow => "note",
                health::Light::Red => "RED",
            };
            vec![i.name.clone(), light.to_string(), i.detail.clone()]
        })
        .collect();
    out!("\n{}", table(&["OPERATIONS", "STATE", "DETAIL"], &rows));
}
