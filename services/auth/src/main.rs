//! `kisum-auth migrate | serve | seed-user`.

use std::io::BufRead as _;
use std::process::ExitCode;

use kisum_auth::{Config, db, directory, password::Passwords};
use kisum_common::config::Vars;
use kisum_common::serve::{Listeners, shutdown_signal};
use kisum_common::telemetry::init_logging_from;

const USAGE: &str = "usage:
  kisum-auth migrate                 apply auth_db migrations (AUTH_DB_URL)
  kisum-auth serve                   serve the public and internal ports
  kisum-auth seed-user EMAIL [--platform-role ROLE]...
                                     create the user or reset its password (read
                                     from the first line of stdin) and grant
                                     platform roles (platform-admin, support)";

enum Command {
    Migrate,
    Serve,
    SeedUser { email: String, roles: Vec<String> },
}

fn parse(args: &[String]) -> Result<Command, String> {
    match args {
        [command] if command == "migrate" => Ok(Command::Migrate),
        [command] if command == "serve" => Ok(Command::Serve),
        [command, email, rest @ ..] if command == "seed-user" && !email.starts_with('-') => {
            let mut roles = Vec::new();
            let mut rest = rest.iter();
            while let Some(flag) = rest.next() {
                match (flag.as_str(), rest.next()) {
                    ("--platform-role", Some(role)) => roles.push(role.clone()),
                    _ => return Err(format!("unexpected argument `{flag}`")),
                }
            }
            Ok(Command::SeedUser {
                email: email.clone(),
                roles,
            })
        }
        _ => Err("unknown or missing command".into()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse(&args) {
        Ok(command) => command,
        Err(reason) => {
            eprintln!("kisum-auth: {reason}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let vars = Vars::from_env();
    if let Err(error) = init_logging_from(&vars) {
        eprintln!("kisum-auth: invalid configuration: {error}");
        return ExitCode::FAILURE;
    }
    match execute(command, &vars).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "kisum-auth failed");
            eprintln!("kisum-auth: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command, vars: &Vars) -> anyhow::Result<()> {
    match command {
        Command::Migrate => {
            let pool = db::connect(&vars.required("AUTH_DB_URL")?).await?;
            db::migrate(&pool).await?;
            tracing::info!("auth_db migrated");
            Ok(())
        }
        Command::Serve => {
            let config = Config::from_vars(vars)?;
            let listeners = Listeners::bind(config.http, config.internal).await?;
            tracing::info!(http = %config.http, internal = %config.internal, "kisum-auth serving");
            kisum_auth::run(config, listeners, shutdown_signal()).await
        }
        Command::SeedUser { email, roles } => seed_user(vars, &email, &roles).await,
    }
}

async fn seed_user(vars: &Vars, email: &str, roles: &[String]) -> anyhow::Result<()> {
    let password = read_password()?;
    let pool = db::connect(&vars.required("AUTH_DB_URL")?).await?;
    db::require_migrated(&pool).await?;
    let hash = Passwords::default().hash(password).await?;
    let user = directory::upsert_user(&pool, email, &hash).await?;
    for role in roles {
        directory::grant_platform_role(&pool, user, role).await?;
    }
    tracing::info!(user_id = %user, platform_roles = ?roles, "user seeded");
    println!("{user}");
    Ok(())
}

/// The first line of stdin, without its line break.
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    anyhow::ensure!(
        !password.is_empty(),
        "the password is read from stdin and must not be empty"
    );
    anyhow::ensure!(
        password.len() <= kisum_auth::password::MAX_PASSWORD_BYTES,
        "the password is too long"
    );
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn subcommands_parse() {
        assert!(matches!(parse(&args(&["migrate"])), Ok(Command::Migrate)));
        assert!(matches!(parse(&args(&["serve"])), Ok(Command::Serve)));
        match parse(&args(&["seed-user", "a@b.c", "--platform-role", "support"])) {
            Ok(Command::SeedUser { email, roles }) => {
                assert_eq!(email, "a@b.c");
                assert_eq!(roles, ["support"]);
            }
            _ => panic!("seed-user did not parse"),
        }
        assert!(parse(&args(&["seed-user", "a@b.c", "--platform-role"])).is_err());
        assert!(parse(&args(&[])).is_err());
    }
}
