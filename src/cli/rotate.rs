//! `kisumctl rotate-jwt-key ENV`: zero-downtime rotation of the JWT
//! signing key, its phases one by one, its status, and the emergency
//! revocation of a key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use super::output::{errln, out, outln, table};
use super::{Exit, OutputFormat, refuse};
use crate::matrix::Environment;
use crate::rotation::fleet::{Fleet, FleetError};
use crate::rotation::store::{KeyStore, KeyStoreError};
use crate::rotation::workflow::{Phase, Request, Rotation, RotationError, Status};
use crate::rotation::{self, Settings};
use crate::secrets::Secret;

/// The secret holding kisumctl's internal credential.
const CREDENTIAL: (&str, &str) = ("internal-credential-kisumctl", "token");
/// The lock file in the state directory: one rotation per environment.
const LOCK_FILE: &str = "rotate-jwt-key.lock";

/// Rotate the JWT signing key of an environment without downtime, or
/// revoke a compromised key at once.
///
/// Without options, the whole rotation: prepare (a new key, `next`,
/// published in Auth's JWKS but not signing), wait until every Auth
/// instance and every verifying backend reports it in its internal
/// diagnostics, activate (the new key signs; the old one is `retiring`,
/// still published), wait until every Auth instance signs with the new key
/// and then until every token signed with the old one has expired
/// (`tokens.access-ttl-seconds` + `tokens.clock-skew-seconds` of the
/// matrix), retire (the old key leaves the JWKS) and wait until no service
/// has it. The key set lives in the environment's secret backend; private
/// keys are never printed. A run interrupted anywhere is continued by the
/// next one. Waits for services are bounded by `tokens.jwks-cache-seconds`
/// + 60 s.
///
/// `--emergency KID` removes a key at once (a revoked active key is
/// replaced by a new active key in the same change), tells every service to
/// reload its keys and waits until none has it: tokens signed with it are
/// refused from then on. It asks for confirmation on a terminal;
/// elsewhere it needs `--yes`, as does `--phase retire`.
///
/// Exit codes: 0 done, 2 bad input, no key set yet, or a phase out of
/// order (nothing changed), 3 an operation failed or a service did not show
/// the change in time (rerun to continue).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment whose signing key to rotate.
    pub(super) env: String,

    /// Run one phase only (each is idempotent): prepare, activate or retire.
    #[arg(long, value_enum, conflicts_with = "emergency")]
    phase: Option<Phase>,

    /// Show the key set, its timeline and the next step; change nothing.
    #[arg(long, conflicts_with_all = ["phase", "emergency", "dry_run"])]
    status: bool,

    /// Remove key KID at once (a compromised key) and make every service
    /// reload its keys.
    #[arg(long, value_name = "KID")]
    emergency: Option<String>,

    /// Print what would be done, and do nothing.
    #[arg(long)]
    dry_run: bool,

    /// Do not ask for confirmation (`--emergency`, `--phase retire`).
    #[arg(long, short = 'y')]
    yes: bool,

    /// JSON file of the services' internal URLs, `{"internal": {"auth":
    /// URL or [URL, ...], ...}}`, one URL per instance; default: for
    /// `local` the endpoints of `deploy local`, elsewhere each service's
    /// in-cluster address.
    #[arg(long, value_name = "FILE")]
    endpoints: Option<PathBuf>,

    /// Seconds to wait for every service to show a key change; default:
    /// `tokens.jwks-cache-seconds` + 60.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    propagation_timeout: Option<u64>,

    /// Seconds to wait for another rotate-jwt-key of the environment to
    /// finish before refusing.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    lock_timeout: u64,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub(super) output: OutputFormat,
}

fn say(line: &str) {
    errln!("{line}");
}

pub fn run(dir: &Path, env: &Environment, args: Args) -> anyhow::Result<Exit> {
    let format = args.output;
    let store = match crate::secrets::for_environment(dir, env) {
        Ok(store) => store,
        Err(error) => return Ok(refuse(format, &error.to_string(), Exit::OperationFailed)),
    };
    let keys = match KeyStore::new(env.base, store.as_ref()) {
        Ok(keys) => keys,
        Err(error) => return Ok(refuse(format, &error.to_string(), Exit::UnusableInput)),
    };
    let changes = !args.status && !args.dry_run;
    let token = match store.read(CREDENTIAL.0, CREDENTIAL.1) {
        Ok(Some(token)) => token,
        // Status and dry runs contact no service.
        Ok(None) if !changes => Secret::new(""),
        Ok(None) => {
            let message = format!(
                "{} holds no {}/{}: kisumctl cannot reach the services' internal routes",
                store.describe(),
                CREDENTIAL.0,
                CREDENTIAL.1
            );
            return Ok(refuse(format, &message, Exit::OperationFailed));
        }
        Err(error) => return Ok(refuse(format, &error.to_string(), Exit::OperationFailed)),
    };
    let state_dir = crate::matrix::resolve_path(dir, &env.file.state_dir);
    let fleet = match Fleet::for_environment(env, &state_dir, args.endpoints.as_deref(), token) {
        Ok(fleet) => fleet,
        Err(error @ FleetError::NotDeployed { .. }) if !changes => {
            errln!("warning: {error}");
            Fleet::new(Vec::new(), Secret::new(""))
        }
        Err(error) => return Ok(refuse(format, &error.to_string(), Exit::UnusableInput)),
    };
    let rotation = Rotation {
        keys,
        fleet,
        settings: Settings::from_matrix(
            &env.base.tokens,
            args.propagation_timeout.map(Duration::from_secs),
        ),
        say: &say,
        clock: rotation::now,
    };

    if args.status {
        return match rotation.status() {
            Ok(mut status) => {
                status.next_step = status.next_step.replace(
                    "rotate-jwt-key ENV",
                    &format!("rotate-jwt-key {}", env.name),
                );
                print_status(&status, format)?;
                Ok(Exit::Clean)
            }
            Err(error) => Ok(failed(format, &error)),
        };
    }
    let request = match (&args.emergency, args.phase) {
        (Some(kid), _) => Request::Revoke(kid.clone()),
        (None, Some(phase)) => Request::Phase(phase),
        (None, None) => Request::Rotate,
    };
    let steps = match rotation.plan(&request) {
        Ok(steps) => steps,
        Err(error) => return Ok(failed(format, &error)),
    };
    if args.dry_run {
        print_plan(env.name, &steps, format)?;
        return Ok(Exit::Clean);
    }
    let needs_confirmation = matches!(request, Request::Revoke(_) | Request::Phase(Phase::Retire));
    if needs_confirmation && !args.yes && !confirmed(env.name, &request, &steps)? {
        let message = "not confirmed; nothing was changed (pass --yes to skip the question)";
        return Ok(refuse(format, message, Exit::UnusableInput));
    }

    let routine = format!("kisumctl rotate-jwt-key {}", env.name);
    let command = match &request {
        Request::Revoke(_) => format!("{routine} --emergency"),
        _ => routine.clone(),
    };
    let timeout = Duration::from_secs(args.lock_timeout);
    if matches!(request, Request::Revoke(_)) {
        stop_routine_rotation(&state_dir, &routine);
    }
    let _lock = match super::hold_lock(&state_dir, LOCK_FILE, &command, timeout, true) {
        Ok(lock) => lock,
        Err(message) => return Ok(refuse(format, &message, Exit::OperationFailed)),
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async {
        match &request {
            Request::Rotate => rotation.rotate().await.map(|()| json!({})),
            Request::Phase(Phase::Prepare) => rotation
                .prepare()
                .await
                .map(|next| json!({ "prepared": next })),
            Request::Phase(Phase::Activate) => rotation
                .activate()
                .await
                .map(|(active, retiring)| json!({ "active": active, "retiring": retiring })),
            Request::Phase(Phase::Retire) => rotation
                .retire()
                .await
                .map(|retired| json!({ "retired": retired })),
            Request::Revoke(kid) => rotation.revoke(kid).await.map(|revoked| json!(revoked)),
        }
    });
    let result = match outcome {
        Ok(result) => result,
        Err(error) => return Ok(failed(format, &error)),
    };
    let status = rotation.status()?;
    match format {
        OutputFormat::Json => {
            let mut document = result;
            document["environment"] = json!(env.name);
            document["status"] = serde_json::to_value(&status)?;
            outln!("{}", serde_json::to_string_pretty(&document)?);
        }
        OutputFormat::Text => out!("{}", keys_table(&status)),
    }
    errln!("rotate-jwt-key {}: done", env.name);
    Ok(Exit::Clean)
}

/// An emergency does not wait behind a routine rotation (which can sit in
/// its token-expiry wait for the access-token lifetime): the routine run
/// holding the lock is stopped with SIGTERM, and it resumes where it
/// stopped when run again. Only a holder whose lock file names the routine
/// command and whose process is a `rotate-jwt-key` is signalled.
fn stop_routine_rotation(state_dir: &std::path::Path, routine: &str) {
    use crate::local::lock;
    let state = crate::local::state::StateDir::new(state_dir);
    let path = state_dir.join(LOCK_FILE);
    let holder = match lock::acquire_at(&path, &state, routine, Duration::ZERO, &mut |_| {}) {
        Ok(_free) => return,
        Err(lock::LockError::Held { holder, .. }) => holder,
        Err(_) => return,
    };
    let Some(pid) = holder.pid else { return };
    let is_routine = holder.command.as_deref() == Some(routine)
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|line| String::from_utf8_lossy(&line).contains("rotate-jwt-key"));
    if !is_routine {
        return;
    }
    let Some(target) = rustix::process::Pid::from_raw(pid as i32) else {
        return;
    };
    if rustix::process::kill_process(target, rustix::process::Signal::TERM).is_ok() {
        errln!(
            "EMERGENCY: stopped the routine rotation (pid {pid}) that held {}; \
             run `{routine}` again after the emergency to resume it",
            path.display()
        );
    }
}

fn failed(format: OutputFormat, error: &RotationError) -> Exit {
    let exit = match error {
        RotationError::Stage(_) | RotationError::Keys(KeyStoreError::Missing { .. }) => {
            Exit::UnusableInput
        }
        RotationError::Keys(_) | RotationError::Fleet(_) => Exit::OperationFailed,
    };
    refuse(format, &error.to_string(), exit)
}

/// On a terminal, the steps and a question answered by typing a word:
/// the kid for an emergency, the environment's name for a retire.
fn confirmed(env: &str, request: &Request, steps: &[String]) -> anyhow::Result<bool> {
    let (headline, word) = match request {
        Request::Revoke(kid) => (
            format!(
                "EMERGENCY: revoke JWT key {kid} of {env}. Tokens signed with it are refused \
                 as soon as each service has reloaded; their users must sign in again."
            ),
            kid.as_str(),
        ),
        _ => (format!("retire the retiring JWT key of {env}."), env),
    };
    let mut lines = vec![headline];
    lines.extend(steps.iter().map(|step| format!("  - {step}")));
    super::confirm_by_typing("rotate-jwt-key", &lines, word)
}

fn print_plan(env: &str, steps: &[String], format: OutputFormat) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "environment": env, "dry_run": true, "steps": steps })
            )?
        ),
        OutputFormat::Text => {
            outln!("rotate-jwt-key {env} would:");
            for (n, step) in steps.iter().enumerate() {
                outln!("{:>3}. {step}", n + 1);
            }
        }
    }
    Ok(())
}

fn keys_table(status: &Status) -> String {
    let rows: Vec<Vec<String>> = status
        .keys
        .iter()
        .map(|k| {
            vec![
                k.kid.clone(),
                k.state.to_string(),
                if k.published { "yes" } else { "no" }.to_string(),
                k.created_at.clone(),
            ]
        })
        .collect();
    table(&["KID", "STATE", "IN JWKS", "CREATED"], &rows)
}

fn print_status(status: &Status, format: OutputFormat) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        outln!("{}", serde_json::to_string_pretty(status)?);
        return Ok(());
    }
    outln!("key set: {}", status.store);
    outln!("stage: {}", status.stage);
    outln!("next step: {}", status.next_step);
    outln!();
    out!("{}", keys_table(status));
    outln!();
    let events: Vec<Vec<String>> = status
        .timeline
        .iter()
        .map(|e| {
            let mut detail = Vec::new();
            if let Some(previous) = &e.previous {
                detail.push(format!("previous {previous}"));
            }
            if let Some(replacement) = &e.replacement {
                detail.push(format!("replaced by {replacement}"));
            }
            vec![
                e.at.clone(),
                e.event.to_string(),
                e.kid.clone(),
                detail.join(", "),
            ]
        })
        .collect();
    if events.is_empty() {
        outln!("timeline: empty (no rotation yet)");
    } else {
        out!("{}", table(&["TIME", "EVENT", "KID", "DETAIL"], &events));
    }
    if !status.versions.is_empty() {
        outln!();
        let versions: Vec<Vec<String>> = status
            .versions
            .iter()
            .map(|v| {
                vec![
                    v.id.clone(),
                    v.stages.join(","),
                    v.created_at.map(rotation::format_time).unwrap_or_default(),
                ]
            })
            .collect();
        out!("{}", table(&["VERSION", "STAGES", "CREATED"], &versions));
    }
    Ok(())
}
