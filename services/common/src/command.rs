//! The command line every database-backed service binary shares:
//! `<binary> [serve]` serves both ports until SIGTERM, refusing to start
//! with pending migrations; `<binary> migrate` applies them and exits.
//! Exit codes: 0 done, 1 failed, 2 usage.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use crate::config::Vars;
use crate::serve::{Listeners, shutdown_signal};
use crate::telemetry::init_logging_from;

/// What a service binary plugs into the shared command line.
pub struct Service<C, Load, Migrate, Check, Run> {
    /// The binary's name, e.g. `kisum-core`.
    pub binary: &'static str,
    /// The database `migrate` brings up to date, for messages.
    pub database: &'static str,
    /// Builds the configuration from the environment.
    pub load: Load,
    pub migrate: Migrate,
    /// Refuses to serve a schema that is behind the binary.
    pub check_schema: Check,
    /// Serves until the shutdown future resolves.
    pub run: Run,
    /// The public and internal ports of a configuration.
    pub ports: fn(&C) -> (u16, u16),
}

/// Runs the command named by the first argument.
pub async fn main<C, E, Load, Migrate, MigrateFut, Check, CheckFut, Run, RunFut>(
    service: Service<C, Load, Migrate, Check, Run>,
) -> ExitCode
where
    E: std::fmt::Display,
    Load: FnOnce(&Vars) -> Result<C, E>,
    Migrate: FnOnce(C) -> MigrateFut,
    MigrateFut: Future<Output = anyhow::Result<()>>,
    Check: FnOnce(&C) -> CheckFut,
    CheckFut: Future<Output = anyhow::Result<()>>,
    Run: FnOnce(C, Listeners) -> RunFut,
    RunFut: Future<Output = anyhow::Result<()>>,
{
    let binary = service.binary;
    let usage = format!(
        "usage: {binary} [serve | migrate]\n  serve    serve both ports (the default); refuses to start with pending migrations\n  migrate  apply the pending {} migrations and exit",
        service.database
    );
    let command = std::env::args().nth(1).unwrap_or_else(|| "serve".into());
    if matches!(command.as_str(), "-h" | "--help" | "help") {
        println!("{usage}");
        return ExitCode::SUCCESS;
    }
    if command != "serve" && command != "migrate" {
        eprintln!("{binary}: unknown command `{command}`\n{usage}");
        return ExitCode::from(2);
    }
    let vars = Vars::from_env();
    if let Err(error) = init_logging_from(&vars) {
        // No logger yet: the one place the error is printed by hand.
        eprintln!("{binary}: invalid configuration: {error}");
        return ExitCode::FAILURE;
    }
    if command == "serve"
        && let Err(error) = crate::config::service_ports(&vars)
    {
        return fail(binary, "invalid configuration", error);
    }
    let bind = match bind_address(&vars) {
        Ok(address) => address,
        Err(error) => return fail(binary, "invalid configuration", error),
    };
    let config = match (service.load)(&vars) {
        Ok(config) => config,
        Err(error) => return fail(binary, "invalid configuration", error),
    };
    let outcome = if command == "migrate" {
        let done = (service.migrate)(config).await;
        if done.is_ok() {
            tracing::info!(
                event = "migrations_applied",
                "{} is up to date",
                service.database
            );
        }
        done
    } else {
        serve(
            service.check_schema,
            service.run,
            service.ports,
            config,
            bind,
        )
        .await
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(binary, &command, format!("{error:#}")),
    }
}

async fn serve<C, Check, CheckFut, Run, RunFut>(
    check_schema: Check,
    run: Run,
    ports: fn(&C) -> (u16, u16),
    config: C,
    bind: IpAddr,
) -> anyhow::Result<()>
where
    Check: FnOnce(&C) -> CheckFut,
    CheckFut: Future<Output = anyhow::Result<()>>,
    Run: FnOnce(C, Listeners) -> RunFut,
    RunFut: Future<Output = anyhow::Result<()>>,
{
    // Refuse before the ports open: a refused start never listens.
    check_schema(&config).await?;
    let (public, internal) = ports(&config);
    let listeners = Listeners::bind(
        SocketAddr::new(bind, public),
        SocketAddr::new(bind, internal),
    )
    .await?;
    run(config, listeners).await
}

/// `BIND_ADDRESS` (all interfaces by default; loopback for local runs).
pub fn bind_address(vars: &Vars) -> Result<IpAddr, crate::config::ConfigError> {
    vars.parsed_or("BIND_ADDRESS", IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The shutdown signal services pass to their `run`.
pub fn until_shutdown() -> impl Future<Output = ()> + Send + 'static {
    shutdown_signal()
}

/// Logs the failure (once: the log goes to stderr, where an operator at a
/// terminal reads it), exit 1.
fn fail(binary: &str, what: &str, error: impl std::fmt::Display) -> ExitCode {
    tracing::error!(error = %error, "{binary}: {what} failed");
    ExitCode::FAILURE
}
