//! `kisumctl backup`: back databases up, list, verify and prune backups.

use super::output::{errln, out, outln};
use std::path::Path;

use serde_json::json;

use super::{Exit, OutputFormat, refuse};
use crate::backup::store::BackupStore;
use crate::backup::{self, Context, Target, Trigger, connection, retention};
use crate::matrix::Environment;
use crate::matrix::load::printable;
use crate::secrets::SecretStore;

/// Back up databases of an environment into its backup store.
///
/// `kisumctl backup ENV DB...` dumps each database (PostgreSQL with
/// `pg_dump -Fc`, MongoDB through the driver, Redis as an RDB snapshot when
/// the matrix marks it persistent) and writes a manifest with row counts,
/// sizes and SHA-256 digests. Files are encrypted with age when the matrix
/// lists `backups.age-recipients`. The store is `backups.store` of the
/// environment file. With `operations.runner: job` in the environment
/// file, the backup runs as a Kubernetes Job in the environment's
/// namespace, which kisumctl launches, watches and reads the result of. Exit 0 on success, 1 when `verify` finds a problem, 2
/// for an unknown environment or database, 3 when an operation failed.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,

    /// Environment whose databases to back up.
    #[arg(required = true)]
    env: Option<String>,

    /// Database ids of the matrix (`auth-db`, `redis`, ...).
    #[arg(required_unless_present = "all")]
    databases: Vec<String>,

    /// Back up every database of the environment, in restore order.
    #[arg(long, conflicts_with = "databases")]
    all: bool,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    List(ListArgs),
    Verify(VerifyArgs),
    Prune(PruneArgs),
}

/// List the backups of an environment, oldest first.
#[derive(Debug, clap::Args)]
struct ListArgs {
    env: String,
    /// Only the backups of this database.
    #[arg(long)]
    database: Option<String>,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

/// Verify backups; exit 1 when one fails.
///
/// Checks the manifest's consistency, the size and SHA-256 of every file,
/// and, for encrypted backups, that each file decrypts with the identity of
/// the secret store to the recorded content.
#[derive(Debug, clap::Args)]
struct VerifyArgs {
    env: String,
    /// Backup ids; none verifies every backup of the store.
    ids: Vec<String>,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

/// Delete the backups the retention policy no longer keeps.
///
/// Per database, every backup that finished less than `retention-days` ago
/// stays, and so does the newest backup that is not a safety backup.
#[derive(Debug, clap::Args)]
struct PruneArgs {
    env: String,
    /// Show what would be deleted and delete nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

pub fn run(dir: &Path, args: Args) -> anyhow::Result<Exit> {
    match args.action {
        Some(Action::List(a)) => {
            with_context(dir, &a.env.clone(), a.output, async |cx| list(cx, a).await)
        }
        Some(Action::Verify(a)) => with_context(dir, &a.env.clone(), a.output, async |cx| {
            verify(cx, a).await
        }),
        Some(Action::Prune(a)) => match retention_refused(dir, &a.env, a.output)? {
            Exit::Clean => {
                with_context(dir, &a.env.clone(), a.output, async |cx| prune(cx, a).await)
            }
            refused => Ok(refused),
        },
        None => {
            let env = args.env.clone().unwrap_or_default();
            let mut rest = args.databases.clone();
            if args.all {
                rest.push("--all".into());
            }
            let request = super::operation::Request {
                command: "backup",
                env: &env,
                databases: &args.databases,
                args: rest,
                confirm: None,
                backup: None,
                format: args.output,
            };
            if let Some(exit) = super::operation::in_cluster(dir, request)? {
                return Ok(exit);
            }
            with_context(dir, &env, args.output, async |cx| back_up(cx, args).await)
        }
    }
}

/// Loads the matrix, resolves `env`, opens its secret and backup stores,
/// and runs `command` in a Tokio runtime.
pub(super) fn with_context<F>(
    dir: &Path,
    env: &str,
    format: OutputFormat,
    command: F,
) -> anyhow::Result<Exit>
where
    F: AsyncFnOnce(&Context<'_>) -> anyhow::Result<Exit>,
{
    super::with_environment(dir, env, format, |_, env| {
        with_secrets(dir, env, format, async |secrets| {
            let cx = match Context::new(dir, env, secrets).await {
                Ok(cx) => cx,
                Err(error) => {
                    return Ok(refuse(format, &format!("{error:#}"), Exit::UnusableInput));
                }
            };
            command(&cx).await
        })
    })
}

/// Opens the secret store of `env` (refusing a backend kisumctl has no
/// client for) and runs `command` in a Tokio runtime.
pub(super) fn with_secrets<F>(
    dir: &Path,
    env: &Environment,
    format: OutputFormat,
    command: F,
) -> anyhow::Result<Exit>
where
    F: AsyncFnOnce(Box<dyn SecretStore>) -> anyhow::Result<Exit>,
{
    let secrets = match secret_store(dir, env) {
        Ok(secrets) => secrets,
        Err(message) => return Ok(refuse(format, &message, Exit::OperationFailed)),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(command(secrets))
}

/// The environment's secret store.
pub(super) fn secret_store(dir: &Path, env: &Environment) -> Result<Box<dyn SecretStore>, String> {
    crate::secrets::for_environment(dir, env).map_err(|e| e.to_string())
}

/// The targets named on the command line (all with `all`), in restore
/// order; `Err` is an unknown name.
pub(super) fn chosen(cx: &Context<'_>, names: &[String], all: bool) -> Result<Vec<Target>, String> {
    if all {
        return Ok(connection::targets(cx.env)
            .into_iter()
            .filter(|t| t.engine != backup::EngineKind::Redis || t.persistent)
            .collect());
    }
    let mut targets = names
        .iter()
        .map(|name| connection::target(cx.env, name).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    targets.sort_by_key(|t| t.restore_priority);
    Ok(targets)
}

async fn back_up(cx: &Context<'_>, args: Args) -> anyhow::Result<Exit> {
    let targets = match chosen(cx, &args.databases, args.all) {
        Ok(targets) => targets,
        Err(message) => return Ok(refuse(args.output, &message, Exit::UnusableInput)),
    };
    if let Err(error) = backup::interrupt::listen() {
        return Ok(refuse(
            args.output,
            &format!("{error:#}"),
            Exit::OperationFailed,
        ));
    }
    sweep_unfinished(cx).await;
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for target in &targets {
        errln!(
            "backup {}: {} into {}",
            cx.env.name,
            target.id,
            cx.store.describe()
        );
        let started = std::time::Instant::now();
        let outcome = match backup::backup(cx, target, Trigger::Manual).await {
            Err(error) if !error.is::<backup::interrupt::Interrupted>() => {
                match backup::interrupt::behind_failure().await {
                    Some(signal) => Err(anyhow::Error::from(backup::interrupt::Interrupted {
                        signal,
                    })),
                    None => Err(error),
                }
            }
            outcome => outcome,
        };
        match outcome {
            Ok(manifest) => {
                errln!(
                    "backup {}: {} done in {:.1} s, {} bytes",
                    cx.env.name,
                    manifest.id,
                    started.elapsed().as_secs_f64(),
                    manifest.total_size()
                );
                done.push((manifest, started.elapsed().as_secs_f64()));
            }
            Err(error) if error.is::<backup::interrupt::Interrupted>() => {
                super::journal::note_interrupted();
                errln!(
                    "backup {}: {error}: the unfinished backup of {} was removed{}; rerun \
                     `kisumctl backup {} {}`",
                    cx.env.name,
                    target.id,
                    if done.is_empty() {
                        String::new()
                    } else {
                        format!(", the {} finished before it were kept", done.len())
                    },
                    cx.env.name,
                    target.id
                );
                failed.push(json!({ "database": target.id, "error": format!("{error:#}") }));
                break;
            }
            Err(error) => {
                errln!(
                    "error: backup of {} failed: {}",
                    target.id,
                    printable(&format!("{error:#}"))
                );
                failed.push(json!({ "database": target.id, "error": format!("{error:#}") }));
            }
        }
    }
    match args.output {
        OutputFormat::Json => {
            let backups: Vec<_> = done
                .iter()
                .map(|(m, seconds)| json!({ "manifest": m, "seconds": seconds }))
                .collect();
            let document =
                json!({ "environment": cx.env.name, "backups": backups, "failed": failed });
            outln!("{}", serde_json::to_string_pretty(&document)?);
        }
        OutputFormat::Text => {
            for (manifest, _) in &done {
                outln!("{}", manifest.id);
            }
        }
    }
    Ok(if failed.is_empty() {
        Exit::Clean
    } else {
        Exit::OperationFailed
    })
}

/// Removes the staged backups stopped runs left, saying so on stderr.
async fn sweep_unfinished(cx: &Context<'_>) {
    let (removed, problems) = backup::sweep_unfinished(cx).await;
    for problem in problems {
        errln!(
            "warning: an unfinished backup could not be removed: {}",
            printable(&problem)
        );
    }
    for removed in removed {
        let by = match (removed.pid, &removed.host) {
            (Some(pid), Some(host)) if host != &crate::ops::journal::host() => {
                format!(" (pid {pid} on {host}, over 24 h ago)")
            }
            (Some(pid), _) => format!(" (pid {pid}, no longer running)"),
            (None, _) => String::new(),
        };
        errln!(
            "removed the unfinished backup {} a stopped run left{by}",
            printable(&removed.id)
        );
    }
}

async fn list(cx: &Context<'_>, args: ListArgs) -> anyhow::Result<Exit> {
    let (mut manifests, problems) = cx.store.list().await?;
    if let Some(database) = &args.database {
        manifests.retain(|m| &m.database == database);
    }
    for (id, problem) in &problems {
        errln!("warning: {id}: {}", printable(problem));
    }
    let unfinished = backup::unfinished(cx).await?;
    for staged in &unfinished {
        let on = staged
            .host
            .as_ref()
            .map_or(String::new(), |host| format!(" on {host}"));
        let state = match (staged.abandoned, staged.pid) {
            (false, Some(pid)) => format!("being written by pid {pid}{on}"),
            (false, None) => "being written".to_string(),
            (true, _) => {
                "left by a stopped run; the next backup or `backup prune` removes it".to_string()
            }
        };
        errln!(
            "note: unfinished backup {} in {} ({state})",
            printable(&staged.id),
            printable(&staged.path)
        );
    }
    match args.output {
        OutputFormat::Json => {
            let unreadable: Vec<_> = problems
                .iter()
                .map(|(id, p)| json!({ "id": id, "problem": p }))
                .collect();
            let document = json!({
                "environment": cx.env.name,
                "store": cx.store.describe(),
                "backups": manifests,
                "unreadable": unreadable,
                "unfinished": unfinished,
            });
            outln!("{}", serde_json::to_string_pretty(&document)?);
        }
        OutputFormat::Text => {
            let rows: Vec<Vec<String>> = manifests
                .iter()
                .map(|m| {
                    vec![
                        m.id.clone(),
                        m.database.clone(),
                        format!("{:?}", m.trigger).to_lowercase(),
                        m.finished_at.clone(),
                        m.total_size().to_string(),
                        m.counts.values().sum::<u64>().to_string(),
                        if m.encrypted() { "age" } else { "no" }.to_string(),
                    ]
                })
                .collect();
            let header = [
                "ID",
                "DATABASE",
                "TRIGGER",
                "FINISHED",
                "BYTES",
                "ROWS",
                "ENCRYPTED",
            ];
            out!("{}", super::output::table(&header, &rows));
        }
    }
    Ok(Exit::Clean)
}

async fn verify(cx: &Context<'_>, args: VerifyArgs) -> anyhow::Result<Exit> {
    let ids = if args.ids.is_empty() {
        let (manifests, problems) = cx.store.list().await?;
        let mut ids: Vec<String> = manifests.into_iter().map(|m| m.id).collect();
        ids.extend(problems.into_iter().map(|(id, _)| id));
        ids
    } else {
        args.ids.clone()
    };
    if ids.is_empty() {
        // Nothing verified is a failed check, not a pass.
        let message = format!(
            "no backups of {} in {}",
            cx.env.name,
            printable(&cx.store.describe())
        );
        match args.output {
            OutputFormat::Text => outln!("{message}"),
            OutputFormat::Json => {
                let document = json!({ "environment": cx.env.name, "verified": [],
                    "passed": false, "error": message });
                outln!("{}", serde_json::to_string_pretty(&document)?);
            }
        }
        return Ok(Exit::CheckFailed);
    }
    let mut results = Vec::new();
    for id in &ids {
        let scratch = cx.scratch()?;
        let now = jiff::Timestamp::now().as_second();
        let (ok, detail) = match backup::prepare(cx, id, scratch.path()).await {
            Ok(prepared) => match backup::dated_in_the_future(&prepared.manifest, now) {
                Some(why) => (false, format!("{why}; its files match")),
                None => (
                    true,
                    format!("{} file(s) match", prepared.manifest.files.len()),
                ),
            },
            Err(error) => (false, format!("{error:#}")),
        };
        if args.output == OutputFormat::Text {
            let status = if ok { "OK  " } else { "FAIL" };
            outln!("{status}  {id}: {}", printable(&detail));
        }
        results.push(json!({ "id": id, "ok": ok, "detail": detail }));
    }
    let passed = results.iter().all(|r| r["ok"] == true);
    if args.output == OutputFormat::Json {
        let document = json!({ "environment": cx.env.name, "verified": results, "passed": passed });
        outln!("{}", serde_json::to_string_pretty(&document)?);
    }
    Ok(if passed {
        Exit::Clean
    } else {
        Exit::CheckFailed
    })
}

/// `backup prune` acts on no retention that `kisumctl validate` rejects
/// for `env` (rule `backups-complete`, e.g. `retention-days: 0`): each
/// finding is named with its file, line and field, and the answer is
/// `UnusableInput`; `Clean` when the retention is valid.
fn retention_refused(dir: &Path, env: &str, format: OutputFormat) -> anyhow::Result<Exit> {
    use crate::matrix::rules;
    super::with_environment(dir, env, format, |matrix, env| {
        let findings: Vec<_> = rules::check(matrix)
            .into_iter()
            .filter(|f| f.rule == "backups-complete" && f.level == rules::Level::Error)
            .filter(|f| f.field.ends_with("retention-days"))
            .filter(|f| f.environment.as_deref().is_none_or(|e| e == env.name))
            .collect();
        if findings.is_empty() {
            return Ok(Exit::Clean);
        }
        let mut message = format!(
            "backup prune {}: the retention fails validation, so nothing was pruned; fix it \
             (see `kisumctl validate {}`):",
            env.name, env.name
        );
        for finding in &findings {
            message += &format!("\n  {}", super::validate::finding_line(finding));
        }
        Ok(refuse(format, &message, Exit::UnusableInput))
    })
}

async fn prune(cx: &Context<'_>, args: PruneArgs) -> anyhow::Result<Exit> {
    let (manifests, _) = cx.store.list().await?;
    let now = jiff::Timestamp::now().as_second();
    let mut decisions = Vec::new();
    for target in connection::targets(cx.env) {
        decisions.extend(retention::decide(
            &manifests,
            &target.id,
            target.retention_days,
            now,
        ));
    }
    if !args.dry_run {
        sweep_unfinished(cx).await;
    }
    let mut failed = false;
    for decision in decisions.iter().filter(|d| !d.keep) {
        if args.dry_run {
            continue;
        }
        if let Err(error) = cx.store.delete(&decision.id).await {
            errln!(
                "error: deleting {}: {}",
                decision.id,
                printable(&format!("{error:#}"))
            );
            failed = true;
        }
    }
    match args.output {
        OutputFormat::Json => {
            let document = json!({ "environment": cx.env.name, "dry_run": args.dry_run, "decisions": decisions });
            outln!("{}", serde_json::to_string_pretty(&document)?);
        }
        OutputFormat::Text => {
            for d in &decisions {
                let verb = match (d.keep, args.dry_run) {
                    (true, _) => "keep  ",
                    (false, true) => "would delete",
                    (false, false) => "delete",
                };
                outln!("{verb}  {}  ({})", d.id, d.reason);
            }
        }
    }
    Ok(if failed {
        Exit::OperationFailed
    } else {
        Exit::Clean
    })
}
