//! `kisumctl restore`: replace a live database with one of its backups.

use super::output::{errln, outln};
use std::path::Path;

use serde_json::json;

use super::backup::{chosen, with_context};
use super::{Exit, OutputFormat, refuse};
use crate::backup::{self, Context, Corrupt, Target, restore};
use crate::matrix::load::printable;

/// Restore databases of an environment from their backups.
///
/// For each database: verify the backup (checksums, decryption, manifest),
/// take a safety backup of the live data, restore into a new place beside
/// it, check its counts against the manifest, then swap it in, in one
/// atomic step. PostgreSQL: the live database is renamed to
/// `<name>_previous_<time>` and the new one takes its name, in one
/// transaction. MongoDB (which cannot rename a database): the service's
/// credentials secret is repointed at the new `<name>_restored_<time>` and
/// the service restarted. Redis (when the matrix keeps it): `SWAPDB` with
/// the staging index. Until the swap the live data keeps serving; after a
/// crash or SIGKILL, the next run finds the journal and cleans up. The
/// previous data stays until `--cleanup`. `--all` follows the restore order
/// of the matrix (section 22.4), stopping at the first failure; Redis as a
/// pure cache is left to refill. Asks for confirmation on a terminal;
/// `--yes` skips it. With `operations.runner: job` in the environment
/// file, the restore runs as a Kubernetes Job in the environment's
/// namespace, launched only once confirmed, then watched and read back. Exit 0 on success, 1 when a backup fails verification
/// (nothing changed), 2 for bad input or a refused confirmation, 3 when an
/// operation failed or another restore of the database is running (that
/// refusal changes nothing, as a deploy's whose lock is held). The restore
/// id and its journal are said first, before the safety backup.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment to restore into.
    env: String,

    /// Database id of the matrix (`auth-db`, ...).
    #[arg(required_unless_present_any = ["all"])]
    database: Option<String>,

    /// Every database of the environment, in restore order.
    #[arg(long, conflicts_with_all = ["database", "backup"])]
    all: bool,

    /// Backup id to restore (`<YYYYMMDDTHHMMSSZ>-<database>-<4 hex>`, as
    /// `kisumctl backup list` shows); default: the newest that is not a
    /// safety backup.
    #[arg(long)]
    backup: Option<String>,

    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,

    /// Print what would be done, and do nothing.
    #[arg(long)]
    dry_run: bool,

    /// Drop the previous databases (Redis: keys) kept by earlier restores,
    /// and what an interrupted restore left, instead of restoring. Asks
    /// for confirmation on a terminal, listing what goes; `--yes` skips it.
    #[arg(long, conflicts_with_all = ["backup", "dry_run"])]
    cleanup: bool,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

pub fn run(dir: &Path, args: Args) -> anyhow::Result<Exit> {
    let env = args.env.clone();
    if let (Some(id), Some(database)) = (&args.backup, &args.database)
        && let Err(message) = check_backup_id(id, database)
    {
        return Ok(refuse(args.output, &message, Exit::UnusableInput));
    }
    if let Some(exit) = super::operation::in_cluster(dir, as_job(&args))? {
        return Ok(exit);
    }
    with_context(dir, &env, args.output, async |cx| {
        restore_command(cx, args).await
    })
}

/// `--backup ID` has the shape backup ids have and names `database`:
/// checked before anything is read or launched.
fn check_backup_id(id: &str, database: &str) -> Result<(), String> {
    match backup::id_database(id) {
        Some(named) if named == database => Ok(()),
        Some(named) => Err(format!(
            "--backup `{}` is a backup of {named}, not of {database}; `kisumctl backup list ENV` shows the backups",
            printable(id)
        )),
        None => Err(format!(
            "--backup `{}` is not a backup id: ids look like {} (e.g. 20261205T061500Z-{database}-0a1f); `kisumctl backup list ENV` shows them",
            printable(id),
            backup::ID_SHAPE
        )),
    }
}

async fn restore_command(cx: &Context<'_>, args: Args) -> anyhow::Result<Exit> {
    let names: Vec<String> = args.database.iter().cloned().collect();
    let targets = match chosen(cx, &names, args.all) {
        Ok(targets) => targets,
        Err(message) => return Ok(refuse(args.output, &message, Exit::UnusableInput)),
    };
    if args.cleanup {
        if !args.yes && !cleanup_confirmed(cx, &targets).await? {
            let message = "restore --cleanup not confirmed; nothing was dropped (pass --yes to skip the \
                 question)";
            return Ok(refuse(args.output, message, Exit::UnusableInput));
        }
        return cleanup(cx, &targets, args.output).await;
    }

    if args.all
        && let Ok(redis) = backup::connection::target(cx.env, backup::connection::REDIS_ID)
        && !redis.persistent
    {
        errln!(
            "restore {}: redis is a pure cache (redis.persistence: none): nothing to restore, it \
             refills from the databases",
            cx.env.name
        );
    }
    let mut plans = Vec::new();
    for target in &targets {
        match restore::plan(cx, target, args.backup.as_deref()).await {
            Ok(plan) => plans.push((target.clone(), plan)),
            Err(error) => {
                let message = format!("{}: {error:#}", target.id);
                let exit = match error.is::<restore::WrongInput>() {
                    true => Exit::UnusableInput,
                    false => Exit::OperationFailed,
                };
                return Ok(refuse(args.output, &message, exit));
            }
        }
    }
    if args.dry_run {
        print_plans(cx, &plans, args.output)?;
        return Ok(Exit::Clean);
    }
    if !args.yes && !confirmed(cx, &plans)? {
        let message =
            "restore not confirmed; nothing was changed (pass --yes to skip the question)";
        return Ok(refuse(args.output, message, Exit::UnusableInput));
    }

    // From here on SIGINT and SIGTERM stop the restore where it stands
    // (never during its swap) and settle what it built.
    if let Err(error) = backup::interrupt::listen() {
        return Ok(refuse(
            args.output,
            &format!("{error:#}"),
            Exit::OperationFailed,
        ));
    }
    let mut outcomes = Vec::new();
    let mut exit = Exit::Clean;
    for (target, plan) in &plans {
        match execute(cx, target, plan, args.output).await {
            Ok(outcome) => outcomes.push(json!(outcome)),
            Err((error, failure)) => {
                outcomes.push(json!({ "database": target.id, "error": error }));
                exit = failure;
                break;
            }
        }
    }
    if args.output == OutputFormat::Json {
        let document =
            json!({ "environment": cx.env.name, "restores": outcomes, "exit": exit as u8 });
        outln!("{}", serde_json::to_string_pretty(&document)?);
    }
    Ok(exit)
}

async fn execute(
    cx: &Context<'_>,
    target: &Target,
    plan: &restore::Plan,
    format: OutputFormat,
) -> Result<restore::Outcome, (String, Exit)> {
    let name = cx.env.name;
    let mut progress = |line: &str| errln!("restore {name} {}: {}", target.id, printable(line));
    match restore::run(cx, target, plan, &mut progress).await {
        Ok(outcome) => {
            errln!(
                "restore {name} {}: backup {} is live (restore and verify {:.1} s, safety backup {:.1} s); \
                 previous database: {}",
                target.id,
                outcome.backup_id,
                outcome.restore_seconds,
                outcome.safety_backup_seconds,
                outcome.previous.as_deref().unwrap_or("none")
            );
            if let Some(note) = &outcome.repointed {
                errln!("restore {name} {}: {}", target.id, printable(note));
            }
            if format == OutputFormat::Text {
                outln!("{}", outcome.restore_id);
            }
            Ok(outcome)
        }
        Err(failure) => {
            let message = format!("{:#}", failure.error);
            if failure.error.downcast_ref::<restore::Busy>().is_some() {
                errln!("error: {}", printable(&message));
                return Err((message, Exit::OperationFailed));
            }
            let interrupted = failure.error.is::<backup::interrupt::Interrupted>();
            let signal = match interrupted {
                true => None,
                false => backup::interrupt::behind_failure().await,
            };
            let message = match signal {
                Some(signal) => format!("interrupted by {signal}: {message}"),
                None => message,
            };
            if interrupted || signal.is_some() {
                super::journal::note_interrupted();
                errln!("restore {name} {}: {}", target.id, printable(&message));
            } else {
                errln!(
                    "error: restore of {} failed: {}",
                    target.id,
                    printable(&message)
                );
            }
            for line in &failure.aftermath {
                errln!("restore {name} {}: {}", target.id, printable(line));
            }
            errln!("restore {name} {}: next: {}", target.id, failure.next);
            let unverifiable = failure.error.downcast_ref::<Corrupt>().is_some()
                || failure.error.downcast_ref::<backup::NoIdentity>().is_some();
            let exit = if unverifiable {
                Exit::CheckFailed
            } else {
                Exit::OperationFailed
            };
            Err((message, exit))
        }
    }
}

fn print_plans(
    cx: &Context<'_>,
    plans: &[(Target, restore::Plan)],
    format: OutputFormat,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => {
            let plans: Vec<_> = plans.iter().map(|(_, p)| p).collect();
            let document = json!({ "environment": cx.env.name, "dry_run": true, "plans": plans });
            outln!("{}", serde_json::to_string_pretty(&document)?);
        }
        OutputFormat::Text => {
            for (target, plan) in plans {
                outln!(
                    "restore {} {} from backup {} (dry run):",
                    cx.env.name,
                    target.id,
                    plan.backup.id
                );
                for (n, step) in plan.steps.iter().enumerate() {
                    outln!("  {}. {step}", n + 1);
                }
            }
        }
    }
    Ok(())
}

/// Asks on the terminal; without one, refuses (the caller names `--yes`).
fn confirmed(cx: &Context<'_>, plans: &[(Target, restore::Plan)]) -> anyhow::Result<bool> {
    let mut lines = Vec::new();
    for (target, plan) in plans {
        lines.push(format!(
            "restore {} {} from backup {}:",
            cx.env.name, target.id, plan.backup.id
        ));
        lines.extend(plan.steps.iter().map(|step| format!("  - {step}")));
    }
    super::confirm_by_typing("restore", &lines, cx.env.name)
}

/// Asks on the terminal before `--cleanup` drops what restores kept,
/// listing it; without a terminal, refuses (the caller names `--yes`).
async fn cleanup_confirmed(cx: &Context<'_>, targets: &[Target]) -> anyhow::Result<bool> {
    let mut lines = Vec::new();
    for target in targets {
        lines.push(format!(
            "restore {} {} --cleanup, for good:",
            cx.env.name, target.id
        ));
        let preview = restore::cleanup_preview(cx, target).await?;
        lines.extend(
            preview
                .iter()
                .map(|line| format!("  - {}", printable(line))),
        );
        lines.push("  - drop the scratch databases of stopped drills, if any".into());
    }
    super::confirm_by_typing("restore --cleanup", &lines, cx.env.name)
}

async fn cleanup(
    cx: &Context<'_>,
    targets: &[Target],
    format: OutputFormat,
) -> anyhow::Result<Exit> {
    let mut dropped = Vec::new();
    for target in targets {
        match restore::cleanup(cx, target).await {
            Ok((recovered, names)) => {
                if let Some(note) = recovered {
                    errln!(
                        "restore {} {}: {}",
                        cx.env.name,
                        target.id,
                        printable(&note)
                    );
                }
                dropped.extend(names);
            }
            Err(error) => {
                return Ok(refuse(
                    format,
                    &format!("{}: {error:#}", target.id),
                    Exit::OperationFailed,
                ));
            }
        }
        match crate::backup::drill::drop_stopped_scratch(cx, target).await {
            Ok(notes) => {
                for (name, note) in notes {
                    errln!("restore {} {}: {note}", cx.env.name, target.id);
                    dropped.push(name);
                }
            }
            Err(error) => {
                return Ok(refuse(
                    format,
                    &format!("{}: {error:#}", target.id),
                    Exit::OperationFailed,
                ));
            }
        }
    }
    match format {
        OutputFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&json!({ "dropped": dropped }))?
        ),
        OutputFormat::Text => dropped.iter().for_each(|name| outln!("dropped {name}")),
    }
    Ok(Exit::Clean)
}

/// The restore as a Job: its arguments, and the confirmation asked
/// before the Job is launched (not for a dry run).
fn as_job(args: &Args) -> super::operation::Request<'_> {
    let databases: &[String] = args.database.as_slice();
    let mut rest: Vec<String> = databases.to_vec();
    let flags = [
        (args.all, "--all"),
        (args.dry_run, "--dry-run"),
        (args.cleanup, "--cleanup"),
        (args.yes, "--yes"),
    ];
    rest.extend(
        flags
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, f)| f.to_string()),
    );
    if let Some(id) = &args.backup {
        rest.extend(["--backup".to_string(), id.clone()]);
    }
    let destructive = !args.dry_run && !args.yes;
    let which = match (&args.database, &args.backup) {
        (Some(db), Some(id)) => format!("{db} from backup {id}"),
        (Some(db), None) => format!("{db} from its newest backup"),
        _ => "every database from its newest backup, in restore order".to_string(),
    };
    let what = match args.cleanup {
        true => format!(
            "restore --cleanup of {} in {}: a Job in its cluster drops, for good, the previous \
             data earlier restores kept and what a stopped restore left",
            args.database.as_deref().unwrap_or("every database"),
            args.env
        ),
        false => format!(
            "restore {which} in {}: a Job in its cluster takes a safety backup, then replaces the live data",
            args.env
        ),
    };
    super::operation::Request {
        command: "restore",
        backup: args.backup.as_deref(),
        env: &args.env,
        databases,
        args: rest,
        confirm: destructive.then(|| vec![what]),
        format: args.output,
    }
}
