//! `kisum-module serve | migrate`: one of the module backends, chosen by
//! `MODULE_NAME`. Exit codes: 0 done, 1 failed, 2 usage.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use anyhow::Context as _;
use kisum_common::config::Vars;
use kisum_common::serve::{Listeners, shutdown_signal};
use kisum_common::telemetry::init_logging_from;
use kisum_module::{Config, Module};

const USAGE: &str = "usage: kisum-module <serve|migrate>

  serve    serve the public (HTTP_PORT) and internal (INTERNAL_PORT) ports until SIGTERM
  migrate  PostgreSQL modules: apply the migrations; MongoDB modules: create the indexes

Configured by environment variables (MODULE_NAME, DATABASE_URL, AUTH_JWKS_URL, ...);
see services/module/README.md.";

enum Command {
    Serve,
    Migrate,
}

fn command() -> Option<Command> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve"] => Some(Command::Serve),
        ["migrate"] => Some(Command::Migrate),
        _ => None,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let Some(command) = command() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let vars = Vars::from_env();
    if let Err(error) = init_logging_from(&vars) {
        eprintln!("kisum-module: invalid configuration: {error}");
        return ExitCode::FAILURE;
    }
    let outcome = match command {
        Command::Serve => serve(&vars).await,
        Command::Migrate => migrate(&vars).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "kisum-module failed");
            ExitCode::FAILURE
        }
    }
}

async fn serve(vars: &Vars) -> anyhow::Result<()> {
    let (http_port, internal_port) = kisum_common::config::service_ports(vars)?;
    let config = Config::from_vars(vars)?;
    // 0.0.0.0 by default: in a pod, the probes and the ingress come from outside.
    let address: IpAddr = vars.parsed_or("BIND_ADDRESS", IpAddr::from([0, 0, 0, 0]))?;
    let public = SocketAddr::new(address, http_port);
    let internal = SocketAddr::new(address, internal_port);
    let listeners = Listeners::bind(public, internal)
        .await
        .with_context(|| format!("binding {public} and {internal}"))?;
    kisum_module::run(config, listeners, shutdown_signal()).await
}

/// Needs only MODULE_NAME and DATABASE_URL: a migration job carries no
/// other configuration.
async fn migrate(vars: &Vars) -> anyhow::Result<()> {
    let module: Module = vars.parsed("MODULE_NAME")?;
    kisum_module::migrate(module, &kisum_module::config::database_url(vars, module)?).await
}
