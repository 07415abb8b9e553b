//! `kisum-admin [serve]` serves Platform Admin on HTTP_PORT and INTERNAL_PORT
//! until SIGTERM; `kisum-admin migrate` applies the database migrations.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use kisum_admin::Config;
use kisum_common::config::Vars;
use kisum_common::serve::{Listeners, shutdown_signal};
use kisum_common::telemetry::init_logging;

const USAGE: &str = "usage: kisum-admin [serve | migrate]
  serve    serve the API (the default); refuses to start with pending migrations
  migrate  apply the pending platform_admin_db migrations and exit";

#[tokio::main]
async fn main() -> ExitCode {
    let command = std::env::args().nth(1).unwrap_or_else(|| "serve".into());
    if matches!(command.as_str(), "-h" | "--help" | "help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let vars = Vars::from_env();
    init_logging(
        &vars
            .optional("LOG_LEVEL")
            .ok()
            .flatten()
            .unwrap_or_else(|| "info".into()),
    );
    let config = match Config::from_vars(&vars) {
        Ok(config) => config,
        Err(error) => return fail("invalid configuration", error),
    };
    let outcome = match command.as_str() {
        "serve" => serve(config).await,
        "migrate" => migrate(config).await,
        other => {
            eprintln!("unknown command `{other}`\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&command, format!("{error:#}")),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Refuse before the ports open: a refused start never listens.
    kisum_admin::check_schema(&config).await?;
    let any = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let listeners = Listeners::bind(any(config.http_port), any(config.internal_port)).await?;
    kisum_admin::run(config, listeners, shutdown_signal()).await
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    kisum_admin::migrate(&config).await?;
    tracing::info!(
        event = "migrations_applied",
        "platform_admin_db is up to date"
    );
    Ok(())
}

/// Logs the failure (and prints it, for operators running the command by
/// hand) and exits non-zero.
fn fail(what: &str, error: impl std::fmt::Display) -> ExitCode {
    tracing::error!(error = %error, "{what} failed");
    eprintln!("kisum-admin: {what}: {error}");
    ExitCode::FAILURE
}
