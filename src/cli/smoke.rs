//! `kisumctl smoke ENV`: the post-deploy smoke checks against an
//! environment's public URLs.

use super::output::{errln, out, outln};
use crate::local::state::{SMOKE_LOCK, SMOKE_LOCK_WAIT};
use std::path::Path;

use serde_json::json;

use super::{Exit, OutputFormat, refuse};
use crate::matrix::Environment;
use crate::matrix::load::printable;
use crate::smoke::{self, Credentials, Report, Status, Target};

/// Run the smoke checks of the plan (section 25.3) against an environment.
///
/// Checks, in order: auth-health, auth-ready, login, auth-me,
/// auth-me-access, core-entitlements (through Platform Admin),
/// module-allowed, module-denied and subscription-invalidates-access (an
/// add-on switched on and off again on the dedicated smoke-test company).
/// `local` is reached at the URLs `kisumctl deploy local` wrote to its state
/// directory, any other environment at https://<host> of its public
/// services. The smoke-test credentials come from the environment's secret
/// backend (secret `smoke-test-credentials`), never from flags. Exit 0 when
/// every check passed, 1 when one failed or was skipped, 2 when the matrix,
/// environment or deploy state cannot be used, 3 when the secret backend
/// cannot be read.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment to check.
    env: String,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

/// Ctrl-C or SIGTERM during a smoke run: the run goes on to its end (a
/// few seconds) so that the add-on it switches is switched back, then ends
/// as interrupted (exit 3); a second signal ends it at once (exit 130).
fn finish_on_interrupt(env: &str, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let message = format!(
        "smoke {env}: interrupted: the run goes on to its end (a few seconds) so that the smoke \
         company's add-on it switches is switched back; a second Ctrl-C stops at once"
    );
    super::flag_interrupt(stop, message, true);
}

pub fn run(dir: &Path, args: Args) -> anyhow::Result<Exit> {
    super::with_environment(dir, &args.env, args.output, |_, env| {
        smoke_environment(dir, env, args.output)
    })
}

fn smoke_environment(dir: &Path, env: &Environment, format: OutputFormat) -> anyhow::Result<Exit> {
    let state_dir = crate::matrix::resolve_path(dir, &env.file.state_dir);
    let target = if env.name == "local" {
        Target::for_environment(env, &state_dir)
    } else {
        super::cluster::smoke_urls(dir, env)
    };
    let target = match target {
        Ok(target) => target,
        Err(error) => return Ok(refuse(format, &error.to_string(), Exit::UnusableInput)),
    };
    let store = match crate::secrets::for_environment(dir, env) {
        Ok(store) => store,
        Err(error) => return Ok(refuse(format, &error.to_string(), Exit::OperationFailed)),
    };
    let credentials = match Credentials::from_store(store.as_ref()) {
        Ok(credentials) => credentials,
        Err(smoke::CredentialsError::Store(error)) => {
            return Ok(refuse(format, &error.to_string(), Exit::OperationFailed));
        }
        Err(error) => return Ok(refuse(format, &error.to_string(), Exit::UnusableInput)),
    };

    // One smoke run of the environment at a time on this machine: each
    // toggles the smoke company's add-on, so two at once fail each other.
    let command = format!("kisumctl smoke {}", env.name);
    let _lock = match super::hold_lock(&state_dir, SMOKE_LOCK, &command, SMOKE_LOCK_WAIT, false) {
        Ok(lock) => lock,
        Err(message) => return Ok(refuse(format, &message, Exit::OperationFailed)),
    };
    // From here a Ctrl-C lets the checks finish (and undo what they
    // switched): the handler is in place before the first line says the
    // run has begun.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    runtime.block_on(async { finish_on_interrupt(env.name, stop.clone()) });
    errln!(
        "smoke {}: auth {}, platform-admin {}, finance {}; credentials from {}",
        env.name,
        target.auth,
        target.admin,
        target.finance,
        store.describe()
    );
    let report = runtime.block_on(smoke::run(&target, &credentials));
    let interrupted = stop.load(std::sync::atomic::Ordering::SeqCst);

    match format {
        OutputFormat::Json => {
            let document = document(env.name, &target, &report);
            outln!("{}", serde_json::to_string_pretty(&document)?);
        }
        OutputFormat::Text => out!("{}", text(env.name, &report)),
    }
    for repair in &report.repairs {
        errln!("REPAIR NEEDED: {}", printable(repair));
    }
    if interrupted {
        super::journal::note_interrupted();
        errln!(
            "smoke {}: interrupted (exit 3): the run went on to its end; the results above \
             stand, and the add-on it switched is switched back",
            env.name
        );
        return Ok(Exit::OperationFailed);
    }
    Ok(if report.passed() {
        Exit::Clean
    } else {
        Exit::CheckFailed
    })
}

fn document(env: &str, target: &Target, report: &Report) -> serde_json::Value {
    let checks: Vec<_> = report
        .checks
        .iter()
        .map(|check| {
            let mut value = serde_json::to_value(check).unwrap_or_default();
            value["status"] = json!(check.status());
            value
        })
        .collect();
    json!({
        "environment": env,
        "target": target,
        "passed": report.passed(),
        "summary": {
            "passed": report.count(Status::Pass),
            "failed": report.count(Status::Fail),
            "skipped": report.count(Status::Skip),
        },
        "duration_ms": u64::try_from(report.duration().as_millis()).unwrap_or(u64::MAX),
        "checks": checks,
        "repairs": report.repairs,
    })
}

fn text(env: &str, report: &Report) -> String {
    let width = report
        .checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for check in &report.checks {
        let status = match check.status() {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        };
        let detail = check
            .detail
            .as_deref()
            .map(|d| format!(": {}", printable(d)))
            .unwrap_or_default();
        out += &format!(
            "{status}  {:<width$}  ({} ms){detail}\n",
            check.name,
            check.duration.as_millis()
        );
    }
    let verdict = if report.passed() { "passed" } else { "FAILED" };
    out += &format!(
        "\nsmoke {env} {verdict}: {} passed, {} failed, {} skipped ({} ms)\n",
        report.count(Status::Pass),
        report.count(Status::Fail),
        report.count(Status::Skip),
        report.duration().as_millis()
    );
    if !report.repairs.is_empty() {
        out += &format!(
            "{} change(s) of the smoke checks could not be undone; see REPAIR NEEDED on stderr\n",
            report.repairs.len()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::smoke::Check;

    fn report() -> Report {
        let check = |name, passed, skipped, detail: Option<&str>| Check {
            name,
            passed,
            skipped,
            duration: Duration::from_millis(8),
            detail: detail.map(str::to_string),
        };
        Report {
            checks: vec![
                check("login", true, false, None),
                check("module-denied", false, false, Some("expected 403, got 200")),
                check("auth-me", false, true, Some("no access token")),
            ],
            repairs: vec![],
        }
    }

    #[test]
    fn text_has_one_line_per_check_and_a_summary() {
        let text = text("local", &report());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "PASS  login          (8 ms)");
        assert_eq!(
            lines[1],
            "FAIL  module-denied  (8 ms): expected 403, got 200"
        );
        assert_eq!(lines[2], "SKIP  auth-me        (8 ms): no access token");
        assert_eq!(
            lines[4],
            "smoke local FAILED: 1 passed, 1 failed, 1 skipped (24 ms)"
        );
    }

    #[test]
    fn the_document_has_every_check_with_its_status() {
        let target = Target {
            auth: "http://127.0.0.1:1".into(),
            admin: "http://127.0.0.1:2".into(),
            finance: "http://127.0.0.1:3".into(),
        };
        let document = document("local", &target, &report());
        assert_eq!(document["passed"], false);
        assert_eq!(document["summary"]["skipped"], 1);
        assert_eq!(document["target"]["platform-admin"], "http://127.0.0.1:2");
        assert_eq!(document["checks"][1]["status"], "fail");
        assert_eq!(document["checks"][1]["duration_ms"], 8);
        assert_eq!(document["checks"][2]["skipped"], true);
    }
}
