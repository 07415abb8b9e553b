//! `kisumctl runbook list|show|run`: the incident runbooks of `runbooks/`,
//! with their checks run against an environment.

use super::output::{errln, out, outln};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::{Exit, OutputFormat, refuse};
use crate::matrix::Environment;
use crate::matrix::model::ConfigValue;
use crate::ops::runbook::checks::{self, Diagnosis, Finding, Inputs, Platform, Verdict};
use crate::ops::runbook::{self, Runbook, Step};
use crate::secrets::Secret;

/// The incident runbooks (plan sections 26 and 29), run as checks.
///
/// Each runbook in `runbooks/` lists its steps: automated checks against
/// the running platform (probes, Auth's internal routes, the services'
/// diagnostics, Core's entitlements through Platform Admin) and manual
/// steps with the command that performs them. `run` runs the checks in
/// order, prints each finding with its evidence, and stops at the first
/// cause it proves, naming the command that fixes it; it never runs that
/// command and changes nothing. Exit 0 when every check was made and none
/// found a cause, 1 when one found a cause or when some were not made
/// (`inconclusive`: a service did not answer, or an input a check needs
/// was not given), 2 on unusable input.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: RunbookCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RunbookCommand {
    List(ListArgs),
    Show(ShowArgs),
    Run(RunArgs),
}

/// Lists the runbooks with their plan section and automated checks.
#[derive(Debug, clap::Args)]
struct ListArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

/// Prints a runbook's Markdown.
#[derive(Debug, clap::Args)]
struct ShowArgs {
    /// The runbook (see `kisumctl runbook list`).
    name: String,
}

/// Runs a runbook's checks against an environment.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The runbook (see `kisumctl runbook list`).
    name: String,

    /// Environment to diagnose.
    env: String,

    /// The user's id (taken from the token when --token-file is given).
    #[arg(long, value_name = "ID", value_parser = super::uuid_flag("--user"))]
    user: Option<Uuid>,

    /// The company's id (Auth and Core share it).
    #[arg(long, value_name = "ID", value_parser = super::uuid_flag("--company"))]
    company: Option<Uuid>,

    /// The module the user cannot reach (basic, finance, market, ...).
    #[arg(long, value_name = "NAME")]
    module: Option<String>,

    /// What the client sends as `x-org` (an id or a slug).
    #[arg(long, value_name = "VALUE")]
    org: Option<String>,

    /// A file holding the user's access token (as sent after `Bearer`);
    /// never printed.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

pub fn run(dir: &Path, args: Args) -> anyhow::Result<Exit> {
    match args.command {
        RunbookCommand::List(args) => list(args.output),
        RunbookCommand::Show(args) => show(&args.name),
        RunbookCommand::Run(args) => {
            let (name, format) = (args.env.clone(), args.output);
            super::with_environment(dir, &name, format, |_, env| run_checks(dir, env, args))
        }
    }
}

fn checks_of(runbook: &Runbook) -> Vec<&str> {
    runbook
        .steps
        .iter()
        .filter_map(|step| match step {
            Step::Check { check } => Some(check.as_str()),
            Step::Manual { .. } => None,
        })
        .collect()
}

fn list(format: OutputFormat) -> anyhow::Result<Exit> {
    let runbooks = runbook::all()?;
    if format == OutputFormat::Json {
        outln!("{}", serde_json::to_string_pretty(&runbooks)?);
        return Ok(Exit::Clean);
    }
    let rows: Vec<Vec<String>> = runbooks
        .iter()
        .map(|r| {
            let checks = checks_of(r);
            vec![
                r.name.clone(),
                r.plan.clone(),
                r.title.clone(),
                if checks.is_empty() {
                    "manual".into()
                } else if checks.len() == 1 {
                    "1 check".into()
                } else {
                    format!("{} checks", checks.len())
                },
            ]
        })
        .collect();
    out!(
        "{}",
        super::output::table(&["runbook", "plan", "title", "automated"], &rows)
    );
    Ok(Exit::Clean)
}

fn find(name: &str) -> anyhow::Result<Result<Runbook, Exit>> {
    match runbook::find(name)? {
        Some(runbook) => Ok(Ok(runbook)),
        None => {
            let known: Vec<String> = runbook::all()?.into_iter().map(|r| r.name).collect();
            errln!(
                "error: no runbook `{}` (known: {})",
                crate::matrix::load::printable(name),
                known.join(", ")
            );
            Ok(Err(Exit::UnusableInput))
        }
    }
}

fn show(name: &str) -> anyhow::Result<Exit> {
    Ok(match find(name)? {
        Ok(runbook) => {
            out!("{}", runbook.markdown);
            Exit::Clean
        }
        Err(exit) => exit,
    })
}

/// The issuer and audience the module's backend verifies tokens with,
/// from the matrix (Auth's when the module is not a service of it).
fn token_policy(env: &Environment, module: Option<&str>) -> kisum_common::jwt::TokenPolicy {
    let value = |name: &str| {
        let plain = |service: &str| match env.services.get(service)?.config.get(name)? {
            ConfigValue::Plain { value } => Some(value.clone()),
            _ => None,
        };
        module
            .and_then(plain)
            .or_else(|| plain("auth"))
            .unwrap_or_default()
    };
    kisum_common::jwt::TokenPolicy {
        issuer: value("JWT_ISSUER"),
        audience: value("JWT_AUDIENCE"),
        leeway_seconds: env.base.tokens.clock_skew_seconds.into(),
    }
}

fn run_checks(dir: &Path, env: &Environment, args: RunArgs) -> anyhow::Result<Exit> {
    let format = args.output;
    let runbook = match find(&args.name)? {
        Ok(runbook) => runbook,
        Err(exit) => return Ok(exit),
    };
    let given = |input: &str| match input {
        "user" => args.user.is_some() || args.token_file.is_some(),
        "company" => args.company.is_some(),
        "module" => args.module.is_some(),
        "org" => args.org.is_some(),
        "token-file" => args.token_file.is_some(),
        _ => false,
    };
    let missing: Vec<String> = runbook
        .inputs
        .iter()
        .filter(|input| !given(input))
        .map(|input| format!("--{input}"))
        .collect();
    if !missing.is_empty() {
        let message = format!("runbook {} needs {}", runbook.name, missing.join(", "));
        return Ok(refuse(format, &message, Exit::UnusableInput));
    }
    if let Some(module) = &args.module
        && !kisum_common::modules::is_module(module)
    {
        let message = format!(
            "--module `{}` is not a module of the platform ({})",
            crate::matrix::load::printable(module),
            kisum_common::modules::MODULE_NAMES.join(", ")
        );
        return Ok(refuse(format, &message, Exit::UnusableInput));
    }
    let token = match &args.token_file {
        Some(path) => match read_token(path) {
            Ok(token) => Some(token),
            Err(message) => return Ok(refuse(format, &message, Exit::UnusableInput)),
        },
        None => None,
    };

    let state_dir = crate::matrix::resolve_path(dir, &env.file.state_dir);
    let endpoints = match runbook::target::endpoints(dir, env, &state_dir) {
        Ok(endpoints) => endpoints,
        Err(error) => return Ok(refuse(format, &error.to_string(), Exit::UnusableInput)),
    };
    let store = match crate::secrets::for_environment(dir, env) {
        Ok(store) => store,
        Err(error) => return Ok(refuse(format, &error.to_string(), Exit::OperationFailed)),
    };
    let credential = store.read("internal-credential-kisumctl", "token")?;
    let admin = crate::smoke::Credentials::from_store(store.as_ref())
        .ok()
        .map(|c| (c.admin_email, c.admin_password));
    let platform = Platform {
        env: env.name.to_string(),
        namespace: env.file.namespace.clone(),
        endpoints,
        credential,
        admin,
        policy: token_policy(env, args.module.as_deref()),
        certificates: crate::tls::status(
            &crate::tls::hosts(env),
            store.as_ref(),
            crate::tls::Thresholds::of(env),
            jiff::Timestamp::now().as_second(),
        )
        .map_err(|e| e.to_string()),
        expiry_alert_days: env.base.tls.expiry_alert_days,
        redis: None,
        postgres_down: Vec::new(),
        mongo_down: Vec::new(),
    };
    let inputs_given = Given {
        company: args.company,
        user: args.user,
        module: args.module.clone(),
    };
    let inputs = Inputs {
        user: args.user,
        company: args.company,
        org: args.org,
        module: args.module,
        token,
    };
    let checks = checks_of(&runbook);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut platform = platform;
    // Redis is asked where `status` asks it: on `local`, or on the
    // operations host of an environment whose network is private.
    if checks.contains(&checks::REDIS_REACHABLE) {
        let here = match env.name {
            "local" => Ok(()),
            _ => crate::cluster::operation::operations_run_here(env),
        };
        platform.redis = match here {
            Ok(()) => runtime.block_on(crate::ops::reachability::redis(env, store.as_ref())),
            Err(reason) => Some(crate::ops::health::Item::new(
                "redis",
                crate::ops::health::Light::Unknown,
                reason,
            )),
        };
    }
    // Elsewhere the database servers are private to the cluster's network.
    if env.name == "local" && checks.contains(&checks::SERVICES_READY) {
        platform.postgres_down = runtime.block_on(crate::ops::reachability::postgres_down(env));
        // Only a MongoDB serving a service that runs here can be the cause.
        let running: Vec<&str> = platform
            .endpoints
            .public
            .keys()
            .map(String::as_str)
            .collect();
        platform.mongo_down = runtime.block_on(crate::ops::reachability::mongo_down(
            env,
            store.as_ref(),
            &running,
        ));
    }
    let findings = runtime.block_on(Diagnosis::new(platform, inputs).run(&checks));
    let cause = findings.iter().find(|f| f.verdict == Verdict::Cause);
    // A check skipped for want of an input rules nothing out either.
    let unmade: Vec<&str> = findings
        .iter()
        .filter(|f| matches!(f.verdict, Verdict::Inconclusive | Verdict::Skipped))
        .map(|f| f.check.as_str())
        .collect();
    let manual = manual_steps(&runbook, env, &inputs_given);
    if format == OutputFormat::Json {
        let document = serde_json::json!({
            "runbook": runbook.name,
            "environment": env.name,
            "findings": findings,
            "cause": cause,
            "inconclusive": cause.is_none() && !unmade.is_empty(),
            "not_made": if cause.is_none() { unmade.clone() } else { Vec::new() },
            "manual": manual,
        });
        outln!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        print_findings(&runbook, env.name, &findings, cause, &unmade, &manual);
    }
    Ok(if cause.is_some() || !unmade.is_empty() {
        Exit::CheckFailed
    } else {
        Exit::Clean
    })
}

/// The most a token file may hold.
const TOKEN_LIMIT: u64 = 64 * 1024;

/// The token in `path`: surrounding whitespace and an optional `Bearer `
/// prefix (as browser tools show the header) dropped; why not, for a file
/// that cannot be read or holds no token.
fn read_token(path: &Path) -> Result<Secret, String> {
    use std::io::Read as _;
    // An access token is a few kilobytes: read at most TOKEN_LIMIT bytes,
    // so a wrong file (a log, /dev/zero) is refused, not swallowed.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(TOKEN_LIMIT + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
    if bytes.len() as u64 > TOKEN_LIMIT {
        return Err(format!(
            "--token-file {}: longer than {} KiB: not an access token",
            path.display(),
            TOKEN_LIMIT / 1024
        ));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("--token-file {}: not text", path.display()))?;
    let text = text.trim();
    let token = if text.eq_ignore_ascii_case("bearer") {
        ""
    } else {
        text
    };
    let token = token
        .get(..7)
        .filter(|prefix| prefix.eq_ignore_ascii_case("bearer "))
        .map_or(token, |_| token[7..].trim());
    if token.is_empty() {
        return Err(format!(
            "--token-file {}: holds no token (expected the access token, as sent after `Bearer`)",
            path.display()
        ));
    }
    Ok(Secret::new(token))
}

/// The ids given on the command line that manual commands name.
struct Given {
    company: Option<Uuid>,
    user: Option<Uuid>,
    module: Option<String>,
}

/// The runbook's manual steps with their commands made concrete: `ENV`
/// replaced by the environment, `--company ID` by the company given;
/// outside `local`, the local-only commands replaced by their cluster
/// equivalents.
fn manual_steps(runbook: &Runbook, env: &Environment, given: &Given) -> Vec<Step> {
    runbook
        .steps
        .iter()
        .filter_map(|step| match step {
            Step::Manual { manual, command } => Some(match command.as_deref() {
                Some(command) if let Err(why) = applies(command, env) => Step::Manual {
                    manual: format!("{manual} ({why})"),
                    command: None,
                },
                Some(command) => match concrete(command, &runbook.name, env, given) {
                    Some(command) => Step::Manual {
                        manual: manual.clone(),
                        command: Some(command),
                    },
                    None => Step::Manual {
                        manual: format!(
                            "{manual} (in {}: the managed service, outside kisumctl)",
                            env.name
                        ),
                        command: None,
                    },
                },
                None => Step::Manual {
                    manual: manual.clone(),
                    command: None,
                },
            }),
            Step::Check { .. } => None,
        })
        .collect()
}

/// Whether `command` runs in `env`: the `dns` commands only where
/// kisumctl manages the records (`dns.managed`), `kubectl` not on `local`
/// (it runs no Kubernetes).
fn applies(command: &str, env: &Environment) -> Result<(), String> {
    if command.starts_with("kisumctl dns ") && !env.file.dns.managed {
        return Err(format!(
            "not in {}: dns.managed is false, kisumctl manages no DNS records there",
            env.name
        ));
    }
    if command.starts_with("kubectl ") && env.name == "local" {
        return Err("not in local: it runs as processes, not on Kubernetes".to_string());
    }
    Ok(())
}

/// `command` with the ids given; outside `local`, its cluster form, or
/// `None` where `deploy local` stands for a data service that is managed
/// outside kisumctl there (PostgreSQL, Redis).
fn concrete(command: &str, runbook: &str, env: &Environment, given: &Given) -> Option<String> {
    let name = env.name;
    let mut words: Vec<String> = command
        .split(' ')
        .map(|word| {
            if word == "ENV" {
                name.to_string()
            } else if let ("MODULE", Some(module)) = (word, &given.module) {
                module.clone()
            } else if let (true, Some(company)) = (word.contains("/COMPANY/"), given.company) {
                word.replace("/COMPANY/", &format!("/{company}/"))
            } else {
                word.to_string()
            }
        })
        .collect();
    for (flag, id) in [("--company", given.company), ("--user", given.user)] {
        if let (Some(at), Some(id)) = (words.iter().position(|w| w == flag), id)
            && words.get(at + 1).is_some_and(|w| w == "ID")
        {
            words[at + 1] = id.to_string();
        }
    }
    let command = words.join(" ");
    if name == "local" {
        return Some(command);
    }
    let namespace = &env.file.namespace;
    if command == "kisumctl deploy local" {
        let service = match runbook {
            "auth-outage" => "auth",
            "core-outage" => "platform-core",
            _ => return None,
        };
        return Some(format!(
            "kisumctl history {name}, then kisumctl rollback {name} (the previous release) or \
             kubectl -n {namespace} rollout restart deployment/{service}"
        ));
    }
    if let Some(service) = command.strip_prefix(&format!("kisumctl logs {name} ")) {
        return Some(format!("kubectl -n {namespace} logs deployment/{service}"));
    }
    Some(command)
}

fn print_findings(
    runbook: &Runbook,
    env: &str,
    findings: &[Finding],
    cause: Option<&Finding>,
    unmade: &[&str],
    manual: &[Step],
) {
    outln!("runbook {} on {env}", runbook.name);
    for finding in findings {
        let mark = match finding.verdict {
            Verdict::Ok => "ok",
            Verdict::Cause => "CAUSE",
            Verdict::Skipped => "skip",
            Verdict::Inconclusive => "??",
        };
        outln!("{mark:<6} {:<17} {}", finding.check, finding.summary);
        for line in &finding.evidence {
            outln!("       {:<17} {line}", "");
        }
    }
    match cause {
        Some(cause) => {
            outln!("cause: {}", cause.summary);
            if let Some(fix) = &cause.fix {
                outln!("fix (not run): {fix}");
            }
        }
        None if !unmade.is_empty() => {
            outln!(
                "inconclusive: no cause proved, and {} not made ({}: see why above): nothing is \
                 ruled out there",
                if unmade.len() == 1 {
                    "1 check".to_string()
                } else {
                    format!("{} checks", unmade.len())
                },
                unmade.join(", ")
            );
            print_manual(manual);
        }
        None if findings.is_empty() => {
            outln!("this runbook has no automated checks: its steps are manual");
            print_manual(manual);
        }
        None => {
            outln!("no cause found by the automated checks");
            print_manual(manual);
        }
    }
}

fn print_manual(manual: &[Step]) {
    for step in manual {
        if let Step::Manual { manual, command } = step {
            match command {
                Some(command) => outln!("next (manual): {manual}: {command}"),
                None => outln!("next (manual): {manual}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_may_hold_the_bearer_header_value_and_must_hold_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        for text in [
            "abc.def.ghi",
            "  abc.def.ghi\n",
            "Bearer abc.def.ghi\n",
            "bearer  abc.def.ghi",
        ] {
            std::fs::write(&file, text).unwrap();
            assert_eq!(
                read_token(&file).unwrap().expose(),
                "abc.def.ghi",
                "{text:?}"
            );
        }
        for text in ["", " \n", "Bearer "] {
            std::fs::write(&file, text).unwrap();
            assert!(
                read_token(&file).unwrap_err().contains("holds no token"),
                "{text:?}"
            );
        }
        assert!(read_token(dir.path()).is_err());
        let large = dir.path().join("large");
        std::fs::write(&large, vec![b'a'; 70 * 1024]).unwrap();
        assert!(
            read_token(&large)
                .unwrap_err()
                .contains("longer than 64 KiB")
        );
        let zero = read_token(Path::new("/dev/zero")).unwrap_err();
        assert!(zero.contains("longer than 64 KiB"), "{zero}");
        assert!(read_token(&dir.path().join("nonexistent")).is_err());
    }

    #[test]
    fn manual_commands_name_the_environment_the_ids_and_cluster_equivalents() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("environments");
        let matrix = crate::matrix::Matrix::load(&dir).unwrap();
        let company = Uuid::nil();
        let given = Given {
            company: Some(company),
            user: None,
            module: Some("finance".into()),
        };
        let staging = matrix.environment("staging").unwrap();
        let namespace = &staging.file.namespace;
        assert_eq!(
            concrete("kisumctl logs ENV auth", "any", &staging, &given).unwrap(),
            format!("kubectl -n {namespace} logs deployment/auth")
        );
        let restart = concrete("kisumctl deploy local", "auth-outage", &staging, &given).unwrap();
        assert!(
            restart.starts_with("kisumctl history staging, then kisumctl rollback staging")
                && restart.ends_with("rollout restart deployment/auth"),
            "{restart}"
        );
        // Redis and the databases are managed services there.
        assert_eq!(
            concrete("kisumctl deploy local", "redis-down", &staging, &given),
            None
        );
        assert_eq!(
            concrete(
                "kisumctl access invalidate ENV --company ID",
                "any",
                &staging,
                &given
            )
            .unwrap(),
            format!("kisumctl access invalidate staging --company {company}")
        );
        let local = matrix.environment("local").unwrap();
        assert_eq!(
            concrete("kisumctl logs ENV auth", "any", &local, &given).unwrap(),
            "kisumctl logs local auth"
        );
        assert_eq!(
            concrete("kisumctl deploy local", "any", &local, &given).unwrap(),
            "kisumctl deploy local"
        );
        assert_eq!(
            concrete("kisumctl logs ENV MODULE", "any", &local, &given).unwrap(),
            "kisumctl logs local finance"
        );
    }

    #[test]
    fn every_command_a_runbook_names_applies_to_its_environment() {
        use clap::Parser as _;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("environments");
        let matrix = crate::matrix::Matrix::load(&dir).unwrap();
        let given = Given {
            company: Some(Uuid::nil()),
            user: Some(Uuid::nil()),
            module: Some("finance".into()),
        };
        let mut dns_named = 0;
        for name in ["local", "dev", "staging", "production"] {
            let env = matrix.environment(name).unwrap();
            for runbook in runbook::all().unwrap() {
                for step in manual_steps(&runbook, &env, &given) {
                    let Step::Manual { manual, command } = step else {
                        unreachable!()
                    };
                    let Some(command) = command else {
                        if manual.contains("dns.managed is false") {
                            assert!(!env.file.dns.managed, "{name}: {manual}");
                        }
                        continue;
                    };
                    if command.starts_with("kisumctl dns ") {
                        assert!(env.file.dns.managed, "{name}: {command}");
                        dns_named += 1;
                    }
                    assert!(!command.contains("/COMPANY/"), "{command}");
                    assert!(
                        name != "local" || !command.starts_with("kubectl "),
                        "{}: {command}",
                        runbook.name
                    );
                    // On local every kisumctl command parses.
                    if name == "local" && command.starts_with("kisumctl ") {
                        let words: Vec<&str> = command.split(' ').collect();
                        let parsed = crate::cli::Cli::try_parse_from(&words);
                        assert!(parsed.is_ok(), "{}: {command}: {parsed:?}", runbook.name);
                        assert!(
                            words.contains(&"local") || words[1] == "runbook",
                            "{command}"
                        );
                    }
                }
            }
        }
        assert!(dns_named > 0, "no environment keeps a dns step");
    }
}
