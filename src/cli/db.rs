//! `kisumctl db`: provision databases, apply and inspect migrations.

use std::path::Path;

use serde_json::json;

use super::backup::with_secrets;
use super::output::{errln, outln};
use super::{Exit, OutputFormat, refuse};
use crate::db::migrate::{self, Stop};
use crate::db::provision::{self, Admin, Outcome};
use crate::matrix::Environment;
use crate::matrix::load::printable;
use crate::secrets::SecretStore;

/// Provision databases and apply the services' schema migrations.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    Provision(ProvisionArgs),
    Migrate(MigrateArgs),
    Status(StatusArgs),
}

/// Create or converge every database's roles, users and privileges.
///
/// PostgreSQL, per database: a migration role that owns the database and
/// its objects; a group role without login holding CONNECT on that database
/// only, USAGE on the service's own schema and DML on its tables (no
/// superuser, no CREATE on public); two login roles in the group, so that a
/// password rotates by switching between them. MongoDB: one user per
/// service with a role limited to its own database (skipped on a server
/// without user management, such as the local emulator). Prints the plan
/// first; a second run changes nothing. Passwords come from and go to the
/// environment's secret store and are never printed. Exit 0 when done, 2
/// for an unknown environment or database, 3 when a step failed or the
/// secret backend is not available.
#[derive(Debug, clap::Args)]
struct ProvisionArgs {
    /// Environment whose databases to provision.
    env: String,
    /// One database id of the matrix (`auth-db`); default: all.
    database: Option<String>,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

/// Apply the services' pending PostgreSQL migrations, in release order.
///
/// Core, then Auth, then the module backends, then Admin (the matrix's
/// `release-wave`), each database under the advisory lock its service's
/// own `migrate` takes, logged in as its migration role. An applied
/// migration whose file changed stops the run, naming the file and both
/// checksums (exit 1, nothing applied); a failing migration is rolled back
/// and reported (exit 3), and the next run starts again from it. MongoDB
/// databases have no migrations (their services create their indexes).
#[derive(Debug, clap::Args)]
struct MigrateArgs {
    /// Environment whose databases to migrate.
    env: String,
    /// Only this service's database (`auth`, `finance`, ...).
    service: Option<String>,
    /// List what would be applied, and apply nothing.
    #[arg(long)]
    dry_run: bool,
    /// Seconds to wait for another migration of the same database.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    lock_timeout: u64,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

/// Show, per database, the applied, pending and changed migrations.
///
/// Exit 0 when every database is current, 1 when one has pending, changed,
/// failed or missing migrations or cannot be read.
#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// Environment whose databases to inspect.
    env: String,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

pub fn run(dir: &Path, args: Args) -> anyhow::Result<Exit> {
    match args.action {
        Action::Provision(a) => {
            let (name, format) = (a.env.clone(), a.output);
            super::with_environment(dir, &name, format, |_, env| provision(dir, env, a))
        }
        Action::Migrate(a) => {
            let (name, format) = (a.env.clone(), a.output);
            super::with_environment(dir, &name, format, |_, env| migrate(dir, env, a))
        }
        Action::Status(a) => {
            let (name, format) = (a.env.clone(), a.output);
            super::with_environment(dir, &name, format, |_, env| status(dir, env, a))
        }
    }
}

fn provision(dir: &Path, env: &Environment, args: ProvisionArgs) -> anyhow::Result<Exit> {
    let plan = match provision::plan(env, args.database.as_deref()) {
        Ok(plan) => plan,
        Err(error) => {
            return Ok(refuse(
                args.output,
                &format!("{error:#}"),
                Exit::UnusableInput,
            ));
        }
    };
    if args.output == OutputFormat::Text {
        outln!(
            "db provision {}{}:",
            env.name,
            if args.dry_run { " (dry run)" } else { "" }
        );
        for db in &plan.databases {
            outln!(
                "{} ({:?} {} on {}:{}, service {})",
                db.id,
                db.engine,
                db.name,
                db.host,
                db.port,
                db.service
            );
            for step in db.steps() {
                outln!("  - {step}");
            }
        }
    }
    if args.dry_run {
        if args.output == OutputFormat::Json {
            let document = json!({ "environment": env.name, "dry_run": true, "plan": plan });
            outln!("{}", serde_json::to_string_pretty(&document)?);
        }
        return Ok(Exit::Clean);
    }
    let format = args.output;
    with_secrets(dir, env, format, async |secrets| {
        let admin = Admin {
            env,
            secrets: secrets.as_ref(),
            connect_timeout: std::time::Duration::from_secs(10),
        };
        let mut progress = |change: &provision::Change| {
            errln!("db provision {}: {}", env.name, printable(&change.line()));
        };
        let changes = match provision::apply(&plan, &admin, &mut progress).await {
            Ok(changes) => changes,
            Err(error) => {
                let message = format!("{error:#}");
                return Ok(refuse(format, &message, Exit::OperationFailed));
            }
        };
        let count = |outcome| changes.iter().filter(|c| c.outcome == outcome).count();
        errln!(
            "db provision {}: {} database(s); {} created, {} updated, {} unchanged, {} skipped",
            env.name,
            plan.databases.len(),
            count(Outcome::Created),
            count(Outcome::Updated),
            count(Outcome::Unchanged),
            count(Outcome::Skipped)
        );
        if format == OutputFormat::Json {
            let document = json!({ "environment": env.name, "dry_run": false, "plan": plan, "changes": changes });
            outln!("{}", serde_json::to_string_pretty(&document)?);
        }
        Ok(Exit::Clean)
    })
}

fn migrate(dir: &Path, env: &Environment, args: MigrateArgs) -> anyhow::Result<Exit> {
    let sets = match migration_sets(dir, env, args.service.as_deref(), true) {
        Ok(sets) => sets,
        Err(error) => return Ok(refuse(args.output, &error, Exit::UnusableInput)),
    };
    let format = args.output;
    with_secrets(dir, env, format, async |secrets| {
        let mut reports = Vec::new();
        let mut stopped = None;
        for set in &sets {
            let mut progress = |line: &str| errln!("db migrate {}: {}", env.name, printable(line));
            let outcome = match migrate::connect(set, secrets.as_ref()).await {
                Ok(mut conn) => {
                    let timeout = std::time::Duration::from_secs(args.lock_timeout);
                    let outcome =
                        migrate::run(&mut conn, set, args.dry_run, timeout, &mut progress).await;
                    let _ = sqlx::Connection::close(conn).await;
                    outcome
                }
                Err(error) => Err(Stop::Other(error)),
            };
            match outcome {
                Ok(report) => {
                    if format == OutputFormat::Text {
                        print_report(&report);
                    }
                    reports.push(report);
                }
                Err(stop) => {
                    stopped = Some(stop);
                    break;
                }
            }
        }
        let exit = match &stopped {
            None => Exit::Clean,
            Some(Stop::Refused(_)) => Exit::CheckFailed,
            Some(_) => Exit::OperationFailed,
        };
        if let Some(stop) = &stopped {
            errln!("error: {}", printable(&format!("{stop:#}")));
        }
        if format == OutputFormat::Json {
            let error = stopped.as_ref().map(|s| format!("{s:#}"));
            let document = json!({
                "environment": env.name,
                "dry_run": args.dry_run,
                "databases": reports,
                "error": error,
                "exit": exit as u8,
            });
            outln!("{}", serde_json::to_string_pretty(&document)?);
        }
        Ok(exit)
    })
}

/// The migration sets of `env` (of `service` only when given); with
/// `readable`, every directory must be readable. `Err` is the message.
pub(super) fn migration_sets(
    dir: &Path,
    env: &Environment,
    service: Option<&str>,
    readable: bool,
) -> Result<Vec<migrate::Set>, String> {
    let root = crate::matrix::root(dir);
    let sets = migrate::sets(env, &root, service).map_err(|e| format!("{e:#}"))?;
    if readable {
        migrate::readable(&sets).map_err(|e| format!("{e:#}"))?;
    }
    Ok(sets)
}

fn print_report(report: &migrate::Report) {
    let verb = if report.dry_run {
        "would apply"
    } else {
        "applied"
    };
    outln!(
        "{} ({}): {verb} {}, {} applied before",
        report.database,
        report.service,
        report.applied.len(),
        report.already
    );
    for entry in &report.applied {
        outln!("  {verb} {}", printable(&entry.file));
    }
}

fn status(dir: &Path, env: &Environment, args: StatusArgs) -> anyhow::Result<Exit> {
    let sets = match migration_sets(dir, env, None, false) {
        Ok(sets) => sets,
        Err(error) => return Ok(refuse(args.output, &error, Exit::UnusableInput)),
    };
    let format = args.output;
    with_secrets(dir, env, format, async |secrets| {
        let mut rows = Vec::new();
        for set in &sets {
            rows.push((set, read_status(set, secrets.as_ref()).await));
        }
        let current = rows
            .iter()
            .all(|(_, s)| s.as_ref().is_ok_and(|s| s.current()));
        match format {
            OutputFormat::Json => {
                let databases: Vec<_> = rows
                    .iter()
                    .map(|(set, status)| match status {
                        Ok(status) => json!(status),
                        Err(error) => {
                            json!({ "database": set.database, "error": format!("{error:#}") })
                        }
                    })
                    .collect();
                let document =
                    json!({ "environment": env.name, "current": current, "databases": databases });
                outln!("{}", serde_json::to_string_pretty(&document)?);
            }
            OutputFormat::Text => print_status(&rows),
        }
        Ok(if current {
            Exit::Clean
        } else {
            Exit::CheckFailed
        })
    })
}

async fn read_status(
    set: &migrate::Set,
    secrets: &dyn SecretStore,
) -> anyhow::Result<migrate::Status> {
    let mut conn = migrate::connect(set, secrets).await?;
    let status = migrate::status(&mut conn, set).await;
    let _ = sqlx::Connection::close(conn).await;
    status
}

fn print_status(rows: &[(&migrate::Set, anyhow::Result<migrate::Status>)]) {
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|(set, status)| {
            let (applied, pending, state) = match status {
                Ok(s) => (
                    format!("{}/{}", s.applied.len(), s.files),
                    s.pending.len().to_string(),
                    match s.blocked() {
                        Some(refusal) => refusal.to_string(),
                        None if s.pending.is_empty() => "current".into(),
                        None => format!(
                            "pending: {}",
                            s.pending
                                .iter()
                                .map(|e| e.version.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    },
                ),
                Err(error) => ("-".into(), "-".into(), format!("unreadable: {error:#}")),
            };
            vec![
                set.database.clone(),
                set.service.clone(),
                applied,
                pending,
                printable(&state),
            ]
        })
        .collect();
    let header = ["DATABASE", "SERVICE", "APPLIED", "PENDING", "STATE"];
    super::output::out!("{}", super::output::table(&header, &table));
}
