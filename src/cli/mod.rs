//! Command-line parsing and dispatch. Each command lives in its own file:
//! it parses its arguments, calls the library modules, and prints.

mod backup;
mod deploy;
mod dns;
mod down;
mod drill;
mod inventory;
mod logs;
mod output;
mod render;
mod restore;
mod smoke;
mod status;
mod supervise;
mod tls;
mod validate;

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
/// failed, 2 unusable input or arguments, 3 an operation failed.
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
    Status(status::Args),
    Logs(logs::Args),
    Down(down::Args),
    #[command(hide = true)]
    Supervise(supervise::Args),
    Backup(backup::Args),
    Restore(restore::Args),
    Drill(drill::Args),
    Dns(dns::Args),
    Tls(tls::Args),
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
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
    let result = match cli.command {
        Command::Validate(args) => validate::run(&cli.matrix, args),
        Command::Render(args) => render::run(&cli.matrix, args),
        Command::Inventory(args) => inventory::run(&cli.matrix, args),
        Command::Smoke(args) => smoke::run(&cli.matrix, args),
        Command::Deploy(args) => {
            let (name, format) = (args.env.clone(), OutputFormat::Text);
            with_environment(&cli.matrix, &name, format, |_, env| {
                deploy::run(&cli.matrix, env, args)
            })
        }
        Command::Status(args) => {
            let (name, format) = (args.env.clone(), args.output);
            with_environment(&cli.matrix, &name, format, |_, env| {
                status::run(&cli.matrix, env, args)
            })
        }
        Command::Logs(args) => {
            let (name, format) = (args.env.clone(), OutputFormat::Text);
            with_environment(&cli.matrix, &name, format, |_, env| {
                logs::run(&cli.matrix, env, args)
            })
        }
        Command::Down(args) => {
            let (name, format) = (args.env.clone(), OutputFormat::Text);
            with_environment(&cli.matrix, &name, format, |_, env| {
                down::run(&cli.matrix, env, args)
            })
        }
        Command::Supervise(args) => supervise::run(args),
        Command::Backup(args) => backup::run(&cli.matrix, args),
        Command::Restore(args) => restore::run(&cli.matrix, args),
        Command::Drill(args) => drill::run(&cli.matrix, args),
        Command::Dns(args) => dns::run(&cli.matrix, args),
        Command::Tls(args) => tls::run(&cli.matrix, args),
    };
    match result {
        Ok(exit) => exit.into(),
        Err(error) => {
            eprintln!("error: {error:#}");
            Exit::OperationFailed.into()
        }
    }
}

/// Loads the matrix, printing input errors; `Err(exit)` when unusable.
fn load_matrix(dir: &std::path::Path, format: OutputFormat) -> Result<crate::matrix::Matrix, Exit> {
    crate::matrix::Matrix::load(dir).map_err(|errors| {
        report_input_errors(&errors.0, format);
        eprintln!("the matrix in {} cannot be used (exit 2)", dir.display());
        Exit::UnusableInput
    })
}

/// How long a command waits for the environment's deploy lock.
#[derive(Debug, clap::Args)]
pub struct LockWait {
    /// Seconds to wait for another deploy or down of the environment to
    /// finish before refusing.
    #[arg(long = "lock-timeout", default_value_t = 120, value_name = "SECONDS")]
    seconds: u64,
}

impl LockWait {
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.seconds)
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

/// An error before any work was done: on stderr, and with `-o json` also
/// as a document on stdout.
fn refuse(format: OutputFormat, message: &str, exit: Exit) -> Exit {
    eprintln!("error: {}", crate::matrix::load::printable(message));
    if format == OutputFormat::Json {
        let document = serde_json::json!({ "error": message, "exit": exit as u8 });
        println!(
            "{}",
            serde_json::to_string_pretty(&document).unwrap_or_default()
        );
    }
    exit
}

/// Input errors on stderr; with `-o json` also as JSON on stdout, so a
/// pipeline always gets a document.
fn report_input_errors(errors: &[crate::matrix::InputError], format: OutputFormat) {
    for error in errors {
        eprintln!("error: {error}");
    }
    if format == OutputFormat::Json {
        let redacted: Vec<_> = errors.iter().map(|e| e.redacted()).collect();
        let document = serde_json::json!({ "input_errors": redacted });
        println!(
            "{}",
            serde_json::to_string_pretty(&document).unwrap_or_default()
        );
    }
}
