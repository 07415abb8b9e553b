//! Command-line parsing and dispatch. Each command lives in its own file:
//! it parses its arguments, calls the library modules, and prints.

mod access;
mod backup;
mod cluster;
mod converge;
mod db;
mod deploy;
mod diff;
mod dns;
mod docs;
mod down;
mod drill;
mod history;
mod inventory;
mod journal;
mod logs;
mod operation;
mod output;
mod render;
mod restore;
mod rollback;
mod rotate;
mod runbook;
mod secrets;
mod smoke;
mod status;
mod supervise;
mod tls;
mod validate;

use output::{errln, outln};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use output::OutputFormat;

/// Exit codes, the same for every command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Everything checked is fine.
    Clean = 0,
    /// A check failed: rule violations, stale manifests.
    CheckFailed = 1,
    /// The input cannot be used: malformed matrix, bad arguments.
    UnusableInput = 2,
    /// An operation failed while applying changes.
    OperationFailed = 3,
    /// A deploy to Kubernetes failed and so did its automatic rollback:
    /// neither release runs cleanly, a person must step in.
    RollbackFailed = 4,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// Infrastructure as code and operations for the Kisum platform.
///
/// Every command reads the environment matrix (`environments/`), the single
/// source of truth about the platform. Exit codes: 0 clean, 1 a check
/// failed, 2 unusable input or arguments, 3 an operation failed, 4 a
/// deploy failed and so did its automatic rollback.
#[derive(Debug, Parser)]
#[command(name = "kisumctl", version, max_term_width = 100)]
pub struct Cli {
    /// Directory of the environment matrix.
    #[arg(
        long,
        global = true,
        env = "KISUM_MATRIX",
        default_value = "environments"
    )]
    matrix: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Validate(validate::Args),
    Render(render::Args),
    Inventory(inventory::Args),
    Smoke(smoke::Args),
    Deploy(deploy::Args),
    History(history::Args),
    Rollback(rollback::Args),
    Diff(diff::Args),
    Status(status::Args),
    Logs(logs::Args),
    Down(down::Args),
    #[command(hide = true)]
    Supervise(supervise::Args),
    Backup(backup::Args),
    Restore(restore::Args),
    Drill(drill::Args),
    Db(db::Args),
    RotateJwtKey(rotate::Args),
    Dns(dns::Args),
    Tls(tls::Args),
    Secrets(secrets::Args),
    Plan(converge::PlanArgs),
    Apply(converge::ApplyArgs),
    Runbook(runbook::Args),
    Access(access::Args),
    Journal(journal::Args),
    Docs(docs::Args),
}

pub fn main() -> ExitCode {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                Exit::UnusableInput
            } else {
                Exit::Clean
            }
            .into();
        }
    };
    let mutation = journal::Mutation::of(&matches);
    let started = journal::Started::now();
    let matrix = cli.matrix.clone();
    let running = mutation
        .as_ref()
        .and_then(|mutation| journal::begin(&matrix, mutation, &started));
    let exit = dispatch(cli);
    if let Some(mutation) = mutation {
        journal::record(&matrix, &mutation, &started, exit, running);
    }
    if std::env::var_os(crate::cluster::operation::RESULT_VARIABLE).is_some() {
        // The last line of a Job's log: how the one who launched it learns
        // the exit code.
        errln!(
            "{}{}",
            crate::cluster::operation::RESULT_PREFIX,
            serde_json::json!({ "exit": exit as u8 })
        );
    }
    exit.into()
}

/// Runs the command; its exit code.
fn dispatch(cli: Cli) -> Exit {
    let result = match cli.command {
        Command::Validate(args) => validate::run(&cli.matrix, args),
        Command::Render(args) => render::run(&cli.matrix, args),
        Command::Inventory(args) => inventory::run(&cli.matrix, args),
        Command::Smoke(args) => smoke::run(&cli.matrix, args),
        Command::Deploy(args) => {
            let (name, format) = (args.env.clone(), args.format());
            with_environment(&cli.matrix, &name, format, |matrix, env| {
                if env.name == "local" {
                    deploy::run(&cli.matrix, env, args)
                } else {
                    deploy::run_cluster(&cli.matrix, matrix, env, args)
                }
            })
        }
        Command::History(args) => {
            let (name, format) = (args.env.clone(), args.cluster.output);
            with_cluster_environment(&cli.matrix, "history", &name, format, |_, env| {
                history::run(&cli.matrix, env, args)
            })
        }
        Command::Rollback(args) => {
            let (name, format) = (args.env.clone(), args.cluster.output);
            with_cluster_environment(&cli.matrix, "rollback", &name, format, |_, env| {
                rollback::run(&cli.matrix, env, args)
            })
        }
        Command::Diff(args) => {
            let (name, format) = (args.env.clone(), args.cluster.output);
            with_cluster_environment(&cli.matrix, "diff", &name, format, |matrix, env| {
                diff::run(&cli.matrix, matrix, env, args)
            })
        }
        Command::Status(args) => {
            let (name, format) = (args.env.clone(), args.output);
            with_environment(&cli.matrix, &name, format, |_, env| {
                if env.name == "local" {
                    status::run(&cli.matrix, env, args)
                } else {
                    status::run_cluster(&cli.matrix, env, args)
                }
            })
        }
        Command::Logs(args) => {
            let (name, format) = (args.env.clone(), OutputFormat::Text);
            with_local_environment(&cli.matrix, "logs", &name, format, |env| {
                logs::run(&cli.matrix, env, args)
            })
        }
        Command::Down(args) => {
            let (name, format) = (args.env.clone(), OutputFormat::Text);
            with_local_environment(&cli.matrix, "down", &name, format, |env| {
                down::run(&cli.matrix, env, args)
            })
        }
        Command::Supervise(args) => supervise::run(args),
        Command::Backup(args) => {
            private_files();
            backup::run(&cli.matrix, args)
        }
        Command::Restore(args) => {
            private_files();
            restore::run(&cli.matrix, args)
        }
        Command::Drill(args) => {
            private_files();
            drill::run(&cli.matrix, args)
        }
        Command::Db(args) => db::run(&cli.matrix, args),
        Command::RotateJwtKey(args) => {
            let (name, format) = (args.env.clone(), args.output);
            with_environment(&cli.matrix, &name, format, |_, env| {
                rotate::run(&cli.matrix, env, args)
            })
        }
        Command::Dns(args) => dns::run(&cli.matrix, args),
        Command::Tls(args) => tls::run(&cli.matrix, args),
        Command::Secrets(args) => secrets::run(&cli.matrix, args),
        Command::Plan(args) => converge::plan(&cli.matrix, args),
        Command::Apply(args) => converge::apply(&cli.matrix, args),
        Command::Runbook(args) => runbook::run(&cli.matrix, args),
        Command::Access(args) => access::run(&cli.matrix, args),
        Command::Journal(args) => journal::run(&cli.matrix, args),
        Command::Docs(args) => docs::run(&cli.matrix, args),
    };
    let exit = match result {
        Ok(exit) => exit,
        Err(error) => {
            errln!("error: {error:#}");
            Exit::OperationFailed
        }
    };
    // A closed pipe (`| head`) is not an error; a full disk is.
    if let Some(error) = output::stdout_error() {
        errln!("error: cannot write the output: {error}");
        return Exit::OperationFailed;
    }
    exit
}

/// Loads the matrix, printing input errors; `Err(exit)` when unusable.
fn load_matrix(dir: &std::path::Path, format: OutputFormat) -> Result<crate::matrix::Matrix, Exit> {
    crate::matrix::Matrix::load(dir).map_err(|errors| {
        report_input_errors(&errors.0, format);
        errln!("the matrix in {} cannot be used (exit 2)", dir.display());
        Exit::UnusableInput
    })
}

/// How long a command waits for the environment's deploy lock.
#[derive(Debug, clap::Args)]
pub struct LockWait {
    /// Seconds to wait for another `deploy local` or `down local` on this
    /// machine to finish before refusing (`local` only: a deploy to
    /// Kubernetes refuses at once while another holds the environment's
    /// Lease).
    #[arg(long = "lock-timeout", default_value_t = 120, value_name = "SECONDS")]
    seconds: u64,
}

/// A `--timeout` in seconds: a whole number of at least 1 (a timeout of
/// 0 would give every rollout up before it starts).
pub fn positive_seconds(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("a timeout of 0 seconds gives up at once; give at least 1".into()),
        Ok(seconds) => Ok(seconds),
        Err(_) => Err(format!(
            "`{}` is not a number of seconds (a whole number, at least 1)",
            text.escape_debug()
        )),
    }
}

impl LockWait {
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.seconds)
    }
}

/// Ctrl-C (SIGINT) and SIGTERM, watched from inside a tokio runtime: from
/// [`Interrupts::watch`] on, neither ends the process by itself.
struct Interrupts {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Interrupts {
    /// Starts watching; `None` when the signals cannot be watched (the
    /// default action stays).
    fn watch() -> Option<Interrupts> {
        use tokio::signal::unix::{SignalKind, signal};
        Some(Interrupts {
            interrupt: signal(SignalKind::interrupt()).ok()?,
            terminate: signal(SignalKind::terminate()).ok()?,
        })
    }

    /// Waits for the next Ctrl-C or SIGTERM.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// From now on (inside a tokio runtime), the first Ctrl-C or SIGTERM sets
/// `stop` and prints `message` instead of ending the process; with
/// `second_ends`, another one ends it at once (exit 130).
fn flag_interrupt(
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    message: String,
    second_ends: bool,
) {
    let Some(mut signals) = Interrupts::watch() else {
        return;
    };
    tokio::spawn(async move {
        signals.next().await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        errln!("{message}");
        if second_ends {
            signals.next().await;
            std::process::exit(130);
        }
    });
}

/// Takes lock file `file` in the environment's state directory for
/// `command` (one run of it per environment on this machine), waiting up
/// to `timeout`; `Err` says who holds it.
/// `timeout` comes from `--lock-timeout` when the command has that flag
/// (`flag`), and the messages name it then.
fn hold_lock(
    state_dir: &std::path::Path,
    file: &str,
    command: &str,
    timeout: std::time::Duration,
    flag: bool,
) -> Result<crate::local::lock::DeployLock, String> {
    use crate::local::lock::{self, LockError};
    let path = state_dir.join(file);
    let state = crate::local::state::StateDir::new(state_dir);
    let flag = if flag { ", --lock-timeout" } else { "" };
    let waiting = &mut |holder: &lock::Holder| {
        errln!(
            "waiting for {holder} to finish: it holds {} (up to {} s{flag})",
            path.display(),
            timeout.as_secs()
        );
    };
    match lock::acquire_at(&path, &state, command, timeout, waiting) {
        Ok(lock) => Ok(lock),
        Err(LockError::Held { holder, waited, .. }) => Err(format!(
            "another {command} is running: {holder} holds {}; waited {} s{}",
            path.display(),
            waited.as_secs(),
            if flag.is_empty() {
                ""
            } else {
                " (--lock-timeout)"
            }
        )),
        Err(error) => Err(error.to_string()),
    }
}

/// Loads the matrix and resolves one environment, printing input errors;
/// `Err(exit)` when either is unusable. `f` gets the environment.
fn with_environment(
    dir: &std::path::Path,
    name: &str,
    format: OutputFormat,
    command: impl FnOnce(&crate::matrix::Matrix, &crate::matrix::Environment) -> anyhow::Result<Exit>,
) -> anyhow::Result<Exit> {
    let matrix = match load_matrix(dir, format) {
        Ok(matrix) => matrix,
        Err(exit) => return Ok(exit),
    };
    match matrix.environment(name) {
        Ok(env) => command(&matrix, &env),
        Err(errors) => {
            report_input_errors(&errors.0, format);
            Ok(Exit::UnusableInput)
        }
    }
}

/// The commands about processes on this machine (`logs`, `down`) work on the `local` environment only: another environment is a
/// usage error (exit 2), not a failed operation.
fn with_local_environment(
    dir: &std::path::Path,
    command: &str,
    name: &str,
    format: OutputFormat,
    run: impl FnOnce(&crate::matrix::Environment) -> anyhow::Result<Exit>,
) -> anyhow::Result<Exit> {
    with_environment(dir, name, format, |_, env| {
        if env.name != "local" {
            let message = format!(
                "`{command} {name}` is not supported: only `{command} local` is ({name} runs on Kubernetes: see `kisumctl history {name}` and `kisumctl diff {name}`)"
            );
            return Ok(refuse(format, &message, Exit::UnusableInput));
        }
        run(env)
    })
}

/// The commands of a Kubernetes environment (`history`, `rollback`,
/// `diff`): `local` runs as processes and has none of them.
fn with_cluster_environment(
    dir: &std::path::Path,
    command: &str,
    name: &str,
    format: OutputFormat,
    run: impl FnOnce(&crate::matrix::Matrix, &crate::matrix::Environment) -> anyhow::Result<Exit>,
) -> anyhow::Result<Exit> {
    with_environment(dir, name, format, |matrix, env| {
        if env.name == "local" {
            let message = format!(
                "`{command} local` is not supported: local runs as processes (see `kisumctl status local`); {command} is for the environments on Kubernetes"
            );
            return Ok(refuse(format, &message, Exit::UnusableInput));
        }
        run(matrix, env)
    })
}

/// An error before any work was done: on stderr, and with `-o json` also
/// as a document on stdout.
fn refuse(format: OutputFormat, message: &str, exit: Exit) -> Exit {
    // One terminal line per line of the message, each made printable.
    let mut lines = message.lines();
    errln!(
        "error: {}",
        crate::matrix::load::printable(lines.next().unwrap_or_default())
    );
    for line in lines {
        errln!("{}", crate::matrix::load::printable(line));
    }
    if format == OutputFormat::Json {
        let document = serde_json::json!({ "error": message, "exit": exit as u8 });
        outln!(
            "{}",
            serde_json::to_string_pretty(&document).unwrap_or_default()
        );
    }
    exit
}

/// Asks on the terminal (stderr and stdin) after showing `lines`; true
/// when the answer is `word`. False without asking when either is not a
/// terminal: `command` needs `--yes` then.
fn confirm_by_typing(command: &str, lines: &[String], word: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        errln!("{command} needs confirmation and stdin is not a terminal");
        return Ok(false);
    }
    for line in lines {
        errln!("{line}");
    }
    output::err!("type {word} to go ahead: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == word)
}

/// Input errors on stderr; with `-o json` also as JSON on stdout, so a
/// pipeline always gets a document.
fn report_input_errors(errors: &[crate::matrix::InputError], format: OutputFormat) {
    for error in errors {
        errln!("error: {error}");
    }
    if format == OutputFormat::Json {
        let redacted: Vec<_> = errors.iter().map(|e| e.redacted()).collect();
        let document = serde_json::json!({ "input_errors": redacted });
        outln!(
            "{}",
            serde_json::to_string_pretty(&document).unwrap_or_default()
        );
    }
}

/// Backups, restores and drills write database contents (dumps, decrypted
/// copies, scratch files): everything they and their children (pg_dump,
/// pg_restore) create is for this user alone, 0600 files in 0700
/// directories.
fn private_files() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// A parser of a UUID flag whose error names the flag and what it expects.
pub(crate) fn uuid_flag(flag: &'static str) -> impl Fn(&str) -> Result<uuid::Uuid, String> + Clone {
    move |text| {
        uuid::Uuid::parse_str(text).map_err(|_| {
            format!(
                "{flag} expects a UUID (like 0b6f4c1e-8d2a-4c55-9a39-2f1d6e7a9b10), not `{}`",
                crate::matrix::load::printable(text)
            )
        })
    }
}
