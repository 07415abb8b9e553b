//! `kisumctl secrets plan|apply|list|rotate|check ENV`: the secrets
//! inventory in the environment's secret store. Never prints a value.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::backup::with_secrets;
use super::output::{errln, out, outln, table};
use super::{Exit, OutputFormat, refuse};
use crate::matrix::Environment;
use crate::matrix::load::printable;
use crate::secrets::inventory::{self, Action, Plan};
use crate::secrets::rotate::{self, Outcome, Rotator};

/// Provision, list, rotate and check the environment's secrets (plan
/// section 12).
///
/// The secrets inventory of the matrix (`secrets:` in base.yaml) held
/// against the environment's secret backend: local files for `local`, AWS
/// Secrets Manager for the others (credentials from the SDK's standard
/// chain, the endpoint from `secrets.endpoint`, else
/// `AWS_ENDPOINT_URL_SECRETS_MANAGER` or `AWS_ENDPOINT_URL`, else AWS).
/// Values are never printed, logged or shown in a plan: only names, keys,
/// stages and dates.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Show what apply would do, per secret and key.
    ///
    /// generate (passwords, tokens, the first JWT key set and its JWKS),
    /// present (never overwritten), awaits (written by another command,
    /// named), must-supply (third-party keys and administrative logins,
    /// never invented), not-here (no use in this environment), unreadable
    /// (a stored value not in the backend's shape: the reason, never the
    /// value).
    Plan(EnvArgs),
    /// Generate the missing passwords, tokens and key sets, one version per
    /// secret; never overwrite a value. A secret whose value cannot be read
    /// is left alone (exit 1).
    Apply(EnvArgs),
    /// Keys, versions and stages, last change and rotation due date of
    /// every secret of the inventory and of the backend.
    List(EnvArgs),
    Rotate(RotateArgs),
    /// Report missing secrets and keys, secrets past their rotation date
    /// (`rotation-days`), secrets in the backend nothing refers to,
    /// unreadable values (each secret on its own), and unfinished rotations
    /// with the command that finishes them; exit 1 when there is any.
    Check(EnvArgs),
}

#[derive(Debug, clap::Args)]
struct EnvArgs {
    /// Environment of the matrix (local, dev, staging, production).
    env: String,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

/// Rotate one secret, or every secret past its rotation date.
///
/// A new value is stored as the pending version (AWSPENDING; `.pending`
/// beside local files), tested, then made current, the old one kept as
/// AWSPREVIOUS (`.previous`). A PostgreSQL service login alternates between
/// the service's two login roles: the waiting role gets the new password,
/// a login with it is tried, then the secret is switched to that role; the
/// old role keeps its password until the next rotation. A migration role
/// gets a new password in place. A MongoDB service login alternates
/// between its two users likewise; a Redis ACL user gets the new password
/// beside the old one, which works until the next rotation. The smoke
/// fixtures and bootstrap administrator of local get new passwords through
/// Auth's seed-user, tested by logging in. An internal service credential is
/// regenerated and made current while the services still accept the old
/// one as the previous credential, which is retired after
/// `--retire-after`, once every instance presents the new one. Key
/// sets, certificates and supplied secrets are rotated elsewhere (named).
/// A failure leaves the current value in use and exits 3; the next run
/// continues from the pending version.
#[derive(Debug, clap::Args)]
struct RotateArgs {
    /// Environment of the matrix.
    env: String,
    /// The secret to rotate (`auth-db-credentials`).
    #[arg(required_unless_present = "due", conflicts_with = "due")]
    name: Option<String>,
    /// Rotate every secret past its rotation date, and finish rotations
    /// left pending.
    #[arg(long)]
    due: bool,
    /// Seconds to keep trying to reach a database server.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    connect_timeout: u64,
    /// Seconds to wait for another secrets rotate of the environment to
    /// finish before refusing.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    lock_timeout: u64,
    /// Seconds an internal credential's previous value stays accepted
    /// after the new one is current, before it is retired [default: 5 for
    /// local (services read their credential files on every use), 3900
    /// elsewhere (the secret sync's hour plus the kubelet's refresh)]; at
    /// most 2592000 (30 days)
    #[arg(
        long,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(..=MAX_RETIRE_AFTER)
    )]
    retire_after: Option<u64>,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

/// The longest `--retire-after` (30 days): a rotation holds its lock and
/// its process while it waits.
const MAX_RETIRE_AFTER: u64 = 30 * 24 * 3600;

/// How long an internal credential's previous value stays accepted by
/// default: local services read their files on every use; pods see a new
/// value once External Secrets has synced it (`refreshInterval`, an hour)
/// and the kubelet has refreshed the volume (about a minute).
fn default_retire_after(env: &str) -> Duration {
    Duration::from_secs(if env == "local" { 5 } else { 3900 })
}

pub fn run(dir: &Path, args: Args) -> anyhow::Result<Exit> {
    let (name, output) = match &args.action {
        Command::Plan(a) | Command::Apply(a) | Command::List(a) | Command::Check(a) => {
            (a.env.clone(), a.output)
        }
        Command::Rotate(a) => (a.env.clone(), a.output),
    };
    super::with_environment(dir, &name, output, |_, env| {
        with_secrets(dir, env, output, async |store| {
            let store = store.as_ref();
            let now = jiff::Timestamp::now().as_second();
            match args.action {
                Command::Plan(_) => plan(env, store, output, false),
                Command::Apply(_) => plan(env, store, output, true),
                Command::List(_) => list(env, store, output, now),
                Command::Check(_) => check(env, store, output, now).await,
                Command::Rotate(a) => rotate(dir, env, store, a, now).await,
            }
        })
    })
}

fn failed(output: OutputFormat, error: impl std::fmt::Display) -> anyhow::Result<Exit> {
    Ok(refuse(output, &format!("{error:#}"), Exit::OperationFailed))
}

/// `secrets plan` and `secrets apply`.
fn plan(
    env: &Environment,
    store: &dyn crate::secrets::SecretStore,
    output: OutputFormat,
    apply: bool,
) -> anyhow::Result<Exit> {
    let mut plan = match inventory::plan(env, store) {
        Ok(plan) => plan,
        Err(error) => return failed(output, error),
    };
    let mut error = None;
    if apply {
        errln!(
            "secrets {}: generating {} key(s) in {}",
            env.name,
            plan.to_generate().len(),
            plan.backend
        );
        let now = jiff::Timestamp::now().as_second();
        let mut progress = |secret: &str, keys: usize| {
            errln!("secrets {}: {secret}: {keys} key(s) generated", env.name);
        };
        if let Err(e) = inventory::apply(env, &mut plan, store, now, &mut progress) {
            error = Some(format!("{e:#}"));
        }
    }
    match output {
        OutputFormat::Json => {
            let document = json!({
                "environment": plan.environment,
                "backend": plan.backend,
                "applied": apply,
                "secrets": plan.secrets,
                "summary": summary(&plan),
                "error": error,
            });
            outln!("{}", serde_json::to_string_pretty(&document)?);
        }
        OutputFormat::Text => out!("{}", plan_text(&plan, apply)),
    }
    if let Some(error) = &error {
        errln!("error: {}", printable(error));
        return Ok(Exit::OperationFailed);
    }
    let unreadable = plan.count(Action::Unreadable);
    if apply && unreadable > 0 {
        errln!(
            "secrets {}: {unreadable} secret(s) left alone because their value cannot be read \
             (see `kisumctl secrets check {}`)",
            env.name,
            env.name
        );
        return Ok(Exit::CheckFailed);
    }
    Ok(Exit::Clean)
}

fn summary(plan: &Plan) -> serde_json::Value {
    json!({
        "generate": plan.count(Action::Generate),
        "keys_to_generate": plan.to_generate().len(),
        "present": plan.count(Action::Present),
        "awaits": plan.with_keys(Action::Awaits),
        "must_supply": plan.with_keys(Action::MustSupply),
        "not_here": plan.count(Action::NotHere),
        "unreadable": plan.count(Action::Unreadable),
    })
}

fn plan_text(plan: &Plan, applied: bool) -> String {
    let mut out = format!("secrets {} in {}\n\n", plan.environment, plan.backend);
    let rows: Vec<Vec<String>> = plan
        .secrets
        .iter()
        .map(|s| {
            let action = match (applied, s.applied) {
                (true, Some(true)) => "generated".to_string(),
                _ => s.action.as_str().to_string(),
            };
            let keys = s
                .keys
                .iter()
                .map(|k| match k.action {
                    Action::Present => k.key.clone(),
                    other => format!("{} ({})", k.key, other.as_str()),
                })
                .collect::<Vec<_>>()
                .join(", ");
            vec![
                action,
                s.name.clone(),
                keys,
                printable(s.note.as_deref().unwrap_or_default()),
            ]
        })
        .collect();
    out += &table(&["ACTION", "SECRET", "KEYS", "NOTE"], &rows);
    out += &format!(
        "\n{} to generate ({} key(s)), {} present, {} with keys awaiting another command, {} with keys to be \
         supplied, {} not used here, {} unreadable\n",
        plan.count(Action::Generate),
        plan.to_generate().len(),
        plan.count(Action::Present),
        plan.with_keys(Action::Awaits),
        plan.with_keys(Action::MustSupply),
        plan.count(Action::NotHere),
        plan.count(Action::Unreadable)
    );
    out
}

fn list(
    env: &Environment,
    store: &dyn crate::secrets::SecretStore,
    output: OutputFormat,
    now: i64,
) -> anyhow::Result<Exit> {
    let listed = match inventory::list(env, store, now) {
        Ok(listed) => listed,
        Err(error) => return failed(output, error),
    };
    if output == OutputFormat::Json {
        let document = json!({
            "environment": env.name,
            "backend": store.describe(),
            "secrets": listed,
        });
        outln!("{}", serde_json::to_string_pretty(&document)?);
        return Ok(Exit::Clean);
    }
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|s| {
            let stages = s
                .versions
                .iter()
                .map(|v| v.stages.join("+"))
                .filter(|v| !v.is_empty())
                .collect::<Vec<_>>()
                .join(", ");
            let versions = match (s.exists, &s.unreadable) {
                (true, Some(_)) => "could not be read (see KEYS)".into(),
                (true, None) => format!("{} ({stages})", s.versions.len()),
                (false, _) => "missing".into(),
            };
            let due = match (&s.rotation_due, s.overdue) {
                (Some(due), true) => format!("{due} OVERDUE"),
                (Some(due), false) => due.clone(),
                (None, _) => "-".into(),
            };
            let keys = match &s.unreadable {
                Some(problem) => format!("UNREADABLE: {}", printable(problem)),
                None => s.keys.join(", "),
            };
            vec![
                s.name.clone(),
                keys,
                versions,
                s.changed.clone().unwrap_or_else(|| "-".into()),
                due,
            ]
        })
        .collect();
    outln!("secrets {} in {}\n", env.name, store.describe());
    out!(
        "{}",
        table(
            &["SECRET", "KEYS", "VERSIONS", "CHANGED", "ROTATION DUE"],
            &rows
        )
    );
    Ok(Exit::Clean)
}

/// How long `check` tries a login when it reads where a pending
/// migration-role rotation stopped.
const CHECK_LOGIN_TIMEOUT: Duration = Duration::from_secs(5);

async fn check(
    env: &Environment<'_>,
    store: &dyn crate::secrets::SecretStore,
    output: OutputFormat,
    now: i64,
) -> anyhow::Result<Exit> {
    let mut findings = match inventory::check(env, store, now) {
        Ok(findings) => findings,
        Err(error) => return failed(output, error),
    };
    // A pending migration-role rotation may have changed the role's
    // password already: say which, read from the server.
    let expected = inventory::expected(env);
    for finding in &mut findings {
        if finding.kind != inventory::FindingKind::RotationPending {
            continue;
        }
        if let Some(spec) = expected.iter().find(|e| e.name == finding.secret)
            && let Some(detail) =
                rotate::pending_migration_login(env, store, spec, CHECK_LOGIN_TIMEOUT).await
        {
            finding.detail = format!("an unfinished rotation: {detail}");
        }
    }
    let exit = if findings.iter().any(|f| f.kind.fails()) {
        Exit::CheckFailed
    } else {
        Exit::Clean
    };
    match output {
        OutputFormat::Json => {
            let document = json!({
                "environment": env.name,
                "backend": store.describe(),
                "findings": findings,
                "exit": exit as u8,
            });
            outln!("{}", serde_json::to_string_pretty(&document)?);
        }
        OutputFormat::Text => {
            let rows: Vec<Vec<String>> = findings
                .iter()
                .map(|f| {
                    vec![
                        f.kind.as_str().to_string(),
                        f.secret.clone(),
                        printable(&f.detail),
                    ]
                })
                .collect();
            if !rows.is_empty() {
                out!("{}", table(&["FINDING", "SECRET", "DETAIL"], &rows));
            }
            outln!(
                "secrets {}: {} finding(s) in {}",
                env.name,
                findings.len(),
                store.describe()
            );
        }
    }
    Ok(exit)
}

/// A rotation stopped by Ctrl-C or SIGTERM: where it stands and what
/// continues it; journaled as interrupted, exit 3.
fn rotation_interrupted(env: &str, secret: &str) -> Exit {
    errln!(
        "secrets rotate {env}: interrupted during {secret}: what was stored stays; \
         `kisumctl secrets check {env}` shows where it stands and \
         `kisumctl secrets rotate {env} {secret}` continues it"
    );
    super::journal::note_interrupted();
    Exit::OperationFailed
}

async fn rotate(
    dir: &Path,
    env: &Environment<'_>,
    store: &dyn crate::secrets::SecretStore,
    args: RotateArgs,
    now: i64,
) -> anyhow::Result<Exit> {
    let output = args.output;
    let (chosen, mut results) =
        match rotate::select(env, store, args.name.as_deref(), args.due, now) {
            Ok(selected) => selected,
            Err(message) => return Ok(refuse(output, &message, Exit::UnusableInput)),
        };
    // One rotation per environment at a time on this machine: two would
    // race for the same pending version and waiting role.
    let state_dir = crate::matrix::resolve_path(dir, &env.file.state_dir);
    let command = format!("kisumctl secrets rotate {}", env.name);
    let timeout = Duration::from_secs(args.lock_timeout);
    let _lock = match super::hold_lock(&state_dir, "secrets-rotate.lock", &command, timeout, true) {
        Ok(lock) => lock,
        Err(message) => return Ok(refuse(output, &message, Exit::OperationFailed)),
    };
    let rotator = Rotator {
        env,
        store,
        connect_timeout: Duration::from_secs(args.connect_timeout),
        retire_after: args
            .retire_after
            .map(Duration::from_secs)
            .unwrap_or_else(|| default_retire_after(env.name)),
        state_dir: state_dir.clone(),
    };
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    for secret in &chosen {
        let mut progress = |line: &str| errln!("secrets rotate {}: {}", env.name, printable(line));
        // A rotation stopped anywhere is continued by the next run (each
        // step is stored before the next starts), as after a crash.
        let rotated = tokio::select! {
            rotated = rotator.rotate(secret, &mut progress) => rotated,
            _ = interrupt.recv() => return Ok(rotation_interrupted(env.name, &secret.name)),
            _ = terminate.recv() => return Ok(rotation_interrupted(env.name, &secret.name)),
        };
        results.push(rotated);
    }
    let failures = results
        .iter()
        .filter(|r| r.outcome == Outcome::Failed)
        .count();
    let exit = if failures > 0 {
        Exit::OperationFailed
    } else {
        Exit::Clean
    };
    match output {
        OutputFormat::Json => {
            let document = json!({
                "environment": env.name,
                "backend": store.describe(),
                "results": results,
                "exit": exit as u8,
            });
            outln!("{}", serde_json::to_string_pretty(&document)?);
        }
        OutputFormat::Text => {
            for r in &results {
                let verb = match r.outcome {
                    Outcome::Rotated => "rotated",
                    Outcome::Skipped => "skipped",
                    Outcome::Failed => "FAILED",
                };
                outln!("{verb} {}: {}", r.secret, printable(&r.detail));
            }
            if results.is_empty() {
                outln!("secrets rotate {}: nothing is due", env.name);
            }
        }
    }
    Ok(exit)
}
