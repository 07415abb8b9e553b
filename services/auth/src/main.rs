//! `kisum-auth migrate | serve | seed-user`.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use uuid::Uuid;

use kisum_auth::cache::Cache;
use kisum_auth::directory::{Directory, Target};
use kisum_auth::metrics::AuthMetrics;
use kisum_auth::reset::MIN_PASSWORD_CHARS;
use kisum_auth::{Config, db, directory, password::Passwords};
use kisum_common::config::Vars;
use kisum_common::serve::{Listeners, shutdown_signal};
use kisum_common::telemetry::init_logging_from;

const USAGE: &str = "usage:
  kisum-auth migrate                 apply auth_db migrations (AUTH_DB_URL)
  kisum-auth serve                   serve the public and internal ports
  kisum-auth seed-user EMAIL [--password-file PATH] [--platform-role ROLE]...
             [--company ID:SLUG:NAME --role ROLE [--permission KEY]... [--grant MODULE]...]
                                     create the user or reset its password (read
                                     from PATH, else from the first line of stdin),
                                     grant platform roles (platform-admin, support);
                                     with --company: register the company, define
                                     the role with its permissions, make the user a
                                     member with that role and grant the modules.
                                     Every step is idempotent.";

enum Command {
    Migrate,
    Serve,
    SeedUser(Box<SeedUser>),
}

/// What `seed-user` writes.
#[derive(Debug, Default, PartialEq, Eq)]
struct SeedUser {
    email: String,
    password_file: Option<PathBuf>,
    platform_roles: Vec<String>,
    membership: Option<Membership>,
}

#[derive(Debug, PartialEq, Eq)]
struct Membership {
    company: Uuid,
    slug: String,
    name: String,
    role: String,
    permissions: Vec<String>,
    grants: Vec<String>,
}

fn parse(args: &[String]) -> Result<Command, String> {
    match args {
        [command] if command == "migrate" => Ok(Command::Migrate),
        [command] if command == "serve" => Ok(Command::Serve),
        [command, email, rest @ ..] if command == "seed-user" && !email.starts_with('-') => {
            parse_seed_user(email, rest).map(|seed| Command::SeedUser(Box::new(seed)))
        }
        _ => Err("unknown or missing command".into()),
    }
}

fn parse_seed_user(email: &str, rest: &[String]) -> Result<SeedUser, String> {
    let mut seed = SeedUser {
        email: directory::valid_email(email)?,
        ..SeedUser::default()
    };
    let (mut company, mut role) = (None, None);
    let (mut permissions, mut grants) = (Vec::new(), Vec::new());
    let mut rest = rest.iter();
    while let Some(flag) = rest.next() {
        let Some(value) = rest.next() else {
            return Err(format!("`{flag}` needs a value"));
        };
        match flag.as_str() {
            "--platform-role" => seed.platform_roles.push(value.clone()),
            "--password-file" => seed.password_file = Some(PathBuf::from(value)),
            "--company" => company = Some(parse_company(value)?),
            "--role" => role = Some(value.clone()),
            "--permission" => permissions.push(value.clone()),
            "--grant" => grants.push(value.clone()),
            _ => return Err(format!("unexpected argument `{flag}`")),
        }
    }
    match (company, role) {
        (Some((company, slug, name)), Some(role)) => {
            seed.membership = Some(Membership {
                company,
                slug,
                name,
                role,
                permissions,
                grants,
            });
        }
        (Some(_), None) => return Err("--company needs --role (the member's role)".into()),
        (None, role) if role.is_some() || !permissions.is_empty() || !grants.is_empty() => {
            return Err("--role, --permission and --grant need --company".into());
        }
        (None, _) => {}
    }
    Ok(seed)
}

/// `ID:SLUG:NAME`; the name may contain `:`.
fn parse_company(value: &str) -> Result<(Uuid, String, String), String> {
    let mut parts = value.splitn(3, ':');
    let (Some(id), Some(slug), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("--company `{value}`: expected ID:SLUG:NAME"));
    };
    let id = Uuid::parse_str(id).map_err(|_| format!("--company: `{id}` is not a UUID"))?;
    if slug.is_empty() || name.is_empty() {
        return Err(format!(
            "--company `{value}`: the slug and name must not be empty"
        ));
    }
    Ok((id, slug.to_string(), name.to_string()))
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
            // Once: the log goes to stderr.
            tracing::error!(error = format!("{error:#}"), "kisum-auth failed");
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
            kisum_auth::run(config, listeners, shutdown_signal()).await
        }
        Command::SeedUser(seed) => seed_user(vars, &seed).await,
    }
}

async fn seed_user(vars: &Vars, seed: &SeedUser) -> anyhow::Result<()> {
    let password = match &seed.password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the password file {}", path.display()))?;
            checked_password(text.lines().next().unwrap_or_default())?
        }
        None => read_password()?,
    };
    let pool = db::connect(&vars.required("AUTH_DB_URL")?).await?;
    db::require_migrated(&pool).await?;
    // With Auth's Redis named, a running Auth sees the seeded access (and
    // the sessions a changed password ends) at once; without it, within
    // its 5 s copies.
    match vars.optional("REDIS_URL")? {
        Some(url) => {
            let cache = Cache::new(&url, AuthMetrics::new("kisum-auth-seed", "seed"))?;
            seed_into(&Directory::new(pool, cache), seed, &password).await
        }
        None => seed_into(&pool, seed, &password).await,
    }
}

async fn seed_into(target: &impl Target, seed: &SeedUser, password: &str) -> anyhow::Result<()> {
    let seeded =
        directory::seed_password(target, &seed.email, password, &Passwords::default()).await?;
    let user = seeded.user;
    if !seeded.revoked.is_empty() {
        tracing::info!(user_id = %user, revoked = seeded.revoked.len(), "password changed: sessions revoked");
    }
    for role in &seed.platform_roles {
        directory::grant_platform_role(target, user, role).await?;
    }
    if let Some(m) = &seed.membership {
        directory::upsert_company(target, m.company, &m.slug, &m.name).await?;
        let permissions: Vec<&str> = m.permissions.iter().map(String::as_str).collect();
        directory::define_role(target, &m.role, &permissions).await?;
        let membership = directory::add_membership(target, user, m.company, &m.role).await?;
        for module in &m.grants {
            directory::grant_module(target, membership, module).await?;
        }
        tracing::info!(user_id = %user, company_id = %m.company, role = %m.role, grants = ?m.grants, "membership seeded");
    }
    tracing::info!(user_id = %user, platform_roles = ?seed.platform_roles, "user seeded");
    println!("{user}");
    Ok(())
}

/// The first line of stdin, without its line break.
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    checked_password(line.trim_end_matches(['\n', '\r']))
}

fn checked_password(password: &str) -> anyhow::Result<String> {
    let password = password.trim_end_matches('\r').to_string();
    anyhow::ensure!(
        password.chars().count() >= MIN_PASSWORD_CHARS,
        "the password (from --password-file or stdin) needs at least {MIN_PASSWORD_CHARS} characters"
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
            Ok(Command::SeedUser(seed)) => {
                assert_eq!(seed.email, "a@b.c");
                assert_eq!(seed.platform_roles, ["support"]);
                assert_eq!(seed.membership, None);
            }
            _ => panic!("seed-user did not parse"),
        }
        assert!(parse(&args(&["seed-user", "a@b.c", "--platform-role"])).is_err());
        for email in ["not-an-email", "a b@c.d", "a@b"] {
            assert!(parse(&args(&["seed-user", email])).is_err(), "{email}");
        }
        assert!(parse(&args(&[])).is_err());
    }

    #[test]
    fn seed_user_takes_a_company_membership() {
        let id = "7d5f3c2e-0a4b-4c8e-9f1a-2b3c4d5e6f70";
        let company = format!("{id}:smoke-test:Smoke test");
        let parsed = parse(&args(&[
            "seed-user",
            "u@kisum.localhost",
            "--password-file",
            "/run/p",
            "--company",
            &company,
            "--role",
            "smoke-reader",
            "--permission",
            "finance.invoices.read",
            "--grant",
            "finance",
        ]));
        let Ok(Command::SeedUser(seed)) = parsed else {
            panic!("seed-user did not parse");
        };
        assert_eq!(seed.password_file, Some(PathBuf::from("/run/p")));
        let m = seed.membership.unwrap();
        assert_eq!(m.company.to_string(), id);
        assert_eq!(
            (m.slug.as_str(), m.name.as_str()),
            ("smoke-test", "Smoke test")
        );
        assert_eq!(m.role, "smoke-reader");
        assert_eq!(m.permissions, ["finance.invoices.read"]);
        assert_eq!(m.grants, ["finance"]);
    }

    #[test]
    fn seed_user_refuses_incomplete_memberships() {
        let company = "7d5f3c2e-0a4b-4c8e-9f1a-2b3c4d5e6f70:s:n";
        for bad in [
            vec!["seed-user", "u@x.io", "--company", company],
            vec!["seed-user", "u@x.io", "--role", "r"],
            vec!["seed-user", "u@x.io", "--grant", "finance"],
            vec![
                "seed-user",
                "u@x",
                "--company",
                "not-a-uuid:s:n",
                "--role",
                "r",
            ],
            vec![
                "seed-user",
                "u@x",
                "--company",
                "7d5f3c2e-0a4b-4c8e-9f1a-2b3c4d5e6f70:s",
                "--role",
                "r",
            ],
        ] {
            assert!(parse(&args(&bad)).is_err(), "{bad:?}");
        }
    }
}
