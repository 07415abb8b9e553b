//! `kisumctl journal ENV`, and the recording every mutating command gets
//! from the dispatch in `cli::main` (one place, not per command).

use super::output::{errln, out, outln};
use std::path::Path;
use std::time::Instant;

use super::{Exit, OutputFormat};
use crate::ops::journal::{self, Record};

/// The commands that change an environment, by command path. A run with
/// `--dry-run` or `--status` changes nothing and is not recorded.
const MUTATING: &[&str] = &[
    "deploy",
    "rollback",
    "down",
    "db provision",
    "db migrate",
    "backup",
    "backup prune",
    "restore",
    "drill",
    "rotate-jwt-key",
    "dns apply",
    "dns cutover",
    "tls issue",
    "tls renew",
    "secrets apply",
    "secrets rotate",
    "apply",
    "smoke",
    "access invalidate",
];

/// The operation journal of an environment: who ran which mutating
/// command, when, with what result and for how long.
///
/// Every run of deploy, rollback, down, db provision and migrate, backup
/// (and prune), restore, drill, rotate-jwt-key, dns apply and cutover, tls
/// issue and renew, secrets apply and rotate, apply, smoke and access
/// invalidate appends one record to
/// `<state-dir>/journal.jsonl` of its environment (dry runs, status
/// queries and runs refused as unusable input excepted). `who` is `KISUM_ACTOR` when set, else user@host.
/// A run that ended before writing its record (Ctrl-C, SIGTERM, SIGKILL)
/// is recorded `interrupted` by the next run that records or reads the
/// journal.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment whose journal to print.
    env: String,

    /// How many of the newest records (at least 1).
    #[arg(short = 'n', long = "lines", default_value_t = 20, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    lines: u64,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

pub fn run(dir: &Path, args: Args) -> anyhow::Result<Exit> {
    let name = args.env.clone();
    super::with_environment(dir, &name, args.output, |_, env| {
        let state_dir = crate::matrix::resolve_path(dir, &env.file.state_dir);
        reap(&state_dir);
        let limit = usize::try_from(args.lines).unwrap_or(usize::MAX);
        let (records, unreadable) = journal::read(&state_dir, limit)?;
        if unreadable > 0 {
            errln!(
                "warning: {}: {unreadable} lines are not journal records; skipped",
                journal::path(&state_dir).display()
            );
        }
        if args.output == OutputFormat::Json {
            let document = serde_json::json!({ "environment": env.name, "records": records });
            outln!("{}", serde_json::to_string_pretty(&document)?);
            return Ok(Exit::Clean);
        }
        if records.is_empty() {
            errln!("no journal records for {}", env.name);
            return Ok(Exit::Clean);
        }
        let rows: Vec<Vec<String>> = records
            .iter()
            .map(|r| {
                vec![
                    r.started.clone(),
                    r.who.clone(),
                    match &r.job {
                        Some(job) => format!("{} (Job/{job})", r.args.join(" ")),
                        None => r.args.join(" "),
                    },
                    r.result.clone(),
                    match r.duration_ms {
                        Some(ms) => format!("{:.1} s", ms as f64 / 1000.0),
                        None => "-".to_string(),
                    },
                ]
            })
            .collect();
        out!(
            "{}",
            super::output::table(&["started", "who", "command", "result", "took"], &rows)
        );
        Ok(Exit::Clean)
    })
}

/// A run that changes an environment, as parsed.
pub struct Mutation {
    command: String,
    environment: String,
    args: Vec<String>,
}

impl Mutation {
    /// The mutation `matches` asks for, if any: the command path (the
    /// subcommand names), its `env` argument, and no `--dry-run` or
    /// `--status`.
    pub fn of(matches: &clap::ArgMatches) -> Option<Mutation> {
        let mut path = Vec::new();
        let mut leaf = matches;
        while let Some((name, sub)) = leaf.subcommand() {
            path.push(name.to_string());
            leaf = sub;
        }
        let command = path.join(" ");
        if !MUTATING.contains(&command.as_str()) {
            return None;
        }
        let flag = |id: &str| matches!(leaf.try_get_one::<bool>(id), Ok(Some(true)));
        if flag("dry_run") || flag("status") {
            return None;
        }
        let environment = leaf.try_get_one::<String>("env").ok().flatten()?.clone();
        Some(Mutation {
            command,
            environment,
            args: std::env::args().skip(1).collect(),
        })
    }
}

/// When the command started.
pub struct Started {
    at: jiff::Timestamp,
    clock: Instant,
}

impl Started {
    pub fn now() -> Started {
        Started {
            at: jiff::Timestamp::now(),
            clock: Instant::now(),
        }
    }
}

/// The Job this run launched, if any.
static JOB: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Notes that this run is carried out by Job `name` in the cluster.
pub fn note_job(name: &str) {
    let _ = JOB.set(name.to_string());
}

/// Whether the run was stopped by Ctrl-C.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Notes that this run was stopped by Ctrl-C: its record says
/// `interrupted` whatever its exit code.
pub fn note_interrupted() {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Appends `interrupted` records for the unfinished runs of `state_dir`
/// whose process is gone; a journal that cannot be written is a warning.
fn reap(state_dir: &Path) {
    if let Err(error) = journal::reap(state_dir) {
        errln!(
            "warning: the journal {} was not written: {error}",
            journal::path(state_dir).display()
        );
    }
}

/// The record of a run, with `result` and `exit` not yet known.
fn pending(mutation: &Mutation, started: &Started) -> Record {
    Record {
        started: started.at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        who: journal::who(),
        command: mutation.command.clone(),
        args: mutation.args.clone(),
        environment: mutation.environment.clone(),
        result: "running".into(),
        exit: 0,
        duration_ms: None,
        job: None,
        note: None,
    }
}

/// The state directory of the run's environment, when the matrix loads.
fn state_dir_of(dir: &Path, mutation: &Mutation) -> Option<std::path::PathBuf> {
    let matrix = crate::matrix::Matrix::load(dir).ok()?;
    let env = matrix.environment(&mutation.environment).ok()?;
    Some(crate::matrix::resolve_path(dir, &env.file.state_dir))
}

/// The marker of a run in progress: what [`record`] removes.
pub struct Running {
    marker: std::path::PathBuf,
    /// The state directory, when this run created it.
    created: Option<std::path::PathBuf>,
}

/// Before a mutating run: records the earlier runs of its environment
/// that were interrupted, then leaves this run's marker, so that a run
/// killed before its end is recorded by the next one.
pub fn begin(dir: &Path, mutation: &Mutation, started: &Started) -> Option<Running> {
    let state_dir = state_dir_of(dir, mutation)?;
    let created = (!state_dir.exists()).then(|| state_dir.clone());
    reap(&state_dir);
    match journal::begin(&state_dir, &pending(mutation, started)) {
        Ok(marker) => Some(Running { marker, created }),
        Err(error) => {
            errln!(
                "warning: the journal {} was not written: {error}",
                journal::path(&state_dir).display()
            );
            None
        }
    }
}

/// Appends the run's record to its environment's journal. A journal that
/// cannot be written is a warning: the command's own outcome stands.
pub fn record(
    dir: &Path,
    mutation: &Mutation,
    started: &Started,
    exit: Exit,
    running: Option<Running>,
) {
    if let Some(running) = &running {
        journal::finish(&running.marker);
    }
    // Refused input (an unknown environment, `deploy production`, a
    // missing deploy) changed nothing: not an operation to record, and
    // a state directory made only for its marker goes again.
    if exit == Exit::UnusableInput {
        if let Some(created) = running.and_then(|r| r.created) {
            let _ = std::fs::remove_dir(created);
        }
        return;
    }
    let Some(state_dir) = state_dir_of(dir, mutation) else {
        return;
    };
    // `down --purge` removed the state, journal included; recording it
    // would bring the directory back.
    if mutation.command == "down" && !state_dir.exists() {
        return;
    }
    let record = Record {
        result: match exit {
            _ if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) => "interrupted",
            Exit::Clean => "ok",
            Exit::CheckFailed => "check-failed",
            Exit::UnusableInput | Exit::OperationFailed => "failed",
            Exit::RollbackFailed => "rollback-failed",
        }
        .to_string(),
        exit: exit as u8,
        duration_ms: Some(started.clock.elapsed().as_millis() as u64),
        job: JOB.get().cloned(),
        ..pending(mutation, started)
    };
    if let Err(error) = journal::append(&state_dir, &record) {
        errln!(
            "warning: the journal {} was not written: {error}",
            journal::path(&state_dir).display()
        );
    }
}
