//! `kisumctl tls issue|renew|status ENV`: certificates for every public
//! host.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use super::output::{errln, out, outln, table};
use super::{Exit, OutputFormat, refuse};
use crate::matrix::Environment;
use crate::matrix::load::printable;
use crate::matrix::schema::TlsMode;
use crate::secrets::SecretStore;
use crate::tls::acme::{self, IssueOutcome, Issued};
use crate::tls::{self, HostStatus, Thresholds, TlsHost};

/// Certificates for every public host, from ACME (section 5).
///
/// Every public service and frontend gets a certificate for its host,
/// kept in the environment's secret store as secret `tls-<id>` (keys
/// `tls.crt` and `tls.key`): the Kubernetes TLS secret its Ingress names.
/// Where `tls.mode` is `self-signed` (local), `issue` and `renew` make a
/// self-signed certificate per host instead, valid 90 days, without ACME.
/// The ACME account key is secret `acme-account-key` (key `key.pem`),
/// created on first use. Domain control is proven with DNS-01 through
/// Route53 (TXT records `_acme-challenge.<host>`, removed afterwards) or,
/// where the matrix chooses `http-01`, by serving the token on
/// `tls.http01-listen`. With DNS-01 where kisumctl manages the records, a
/// host whose name or challenge name has a DNS ownership conflict (`dns
/// plan`) is refused, reported on its own; the others are issued. Exit 0
/// when done, 1 when `status` finds a certificate under the alert
/// threshold (or missing, expired, invalid), `issue` refused a host, or
/// `renew` finds one never issued (named), 2 for unusable input, 3 when an
/// issuance or the secret store failed.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    Issue(IssueArgs),
    Renew(RenewArgs),
    Status(StatusArgs),
}

/// Issue certificates for the hosts that have none, an expired one, or one
/// that does not fit (another name, a key that is not its own).
#[derive(Debug, clap::Args)]
struct IssueArgs {
    /// Environment of the matrix (dev, staging, production, ...).
    env: String,
    /// Only these hosts (host names or service and frontend ids).
    #[arg(long = "host", value_name = "HOST")]
    hosts: Vec<String>,
    /// Issue even where a valid certificate exists.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    acme: AcmeArgs,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

/// Renew the certificates inside the renewal window
/// (`tls.renewal-window-days`).
#[derive(Debug, clap::Args)]
struct RenewArgs {
    /// Environment of the matrix (dev, staging, production, ...).
    env: String,
    /// List what would be renewed and renew nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    acme: AcmeArgs,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

/// List every public host's certificate with its expiry; exit 1 when one
/// is under the alert threshold (`tls.expiry-alert-days`), expired,
/// missing or invalid.
#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// Environment of the matrix (dev, staging, production, ...).
    env: String,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Debug, Clone, clap::Args)]
pub(super) struct AcmeArgs {
    /// ACME directory URL instead of the matrix's `tls.acme-directory`.
    #[arg(long, env = "KISUM_ACME_DIRECTORY", value_name = "URL")]
    acme_directory: Option<String>,
    /// PEM file of the CA to trust for the ACME directory's HTTPS instead
    /// of the system's roots (a test CA); overrides `tls.acme-ca-root`.
    #[arg(long, env = "KISUM_ACME_CA_ROOT", value_name = "FILE")]
    acme_ca_root: Option<PathBuf>,
    /// Seconds one order may take to validate and to deliver.
    #[arg(long = "order-timeout", default_value_t = 300, value_name = "SECONDS")]
    order_timeout: u64,
}

pub fn run(dir: &Path, args: Args) -> anyhow::Result<Exit> {
    let (env, output) = match &args.command {
        Command::Issue(a) => (a.env.clone(), a.output),
        Command::Renew(a) => (a.env.clone(), a.output),
        Command::Status(a) => (a.env.clone(), a.output),
    };
    super::with_environment(dir, &env, output, |_, env| {
        let store = match super::backup::secret_store(dir, env) {
            Ok(store) => store,
            Err(message) => return Ok(refuse(output, &message, Exit::OperationFailed)),
        };
        let hosts = tls::hosts(env);
        let now = jiff::Timestamp::now().as_second();
        let statuses = match tls::status(&hosts, store.as_ref(), Thresholds::of(env), now) {
            Ok(statuses) => statuses,
            Err(error) => return Ok(refuse(output, &error.to_string(), Exit::OperationFailed)),
        };
        match args.command {
            Command::Status(_) => Ok(status(env, &statuses, output)),
            Command::Issue(a) => {
                let chosen: Vec<&HostStatus> = match pick(&statuses, &a.hosts) {
                    Ok(chosen) => chosen,
                    Err(message) => return Ok(refuse(output, &message, Exit::UnusableInput)),
                };
                let due = chosen.into_iter().filter(|s| a.force || s.health.issue());
                let due = due.map(|s| s.host.clone()).collect();
                let run = Run {
                    acme: &a.acme,
                    renew: false,
                    dry_run: false,
                    output,
                };
                obtain(dir, env, store.as_ref(), &statuses, due, run)
            }
            Command::Renew(a) => {
                let due = statuses.iter().filter(|s| s.health.renew());
                let due = due.map(|s| s.host.clone()).collect();
                let run = Run {
                    acme: &a.acme,
                    renew: true,
                    dry_run: a.dry_run,
                    output,
                };
                obtain(dir, env, store.as_ref(), &statuses, due, run)
            }
        }
    })
}

/// The statuses of the hosts named (all when none is named).
fn pick<'s>(statuses: &'s [HostStatus], names: &[String]) -> Result<Vec<&'s HostStatus>, String> {
    if names.is_empty() {
        return Ok(statuses.iter().collect());
    }
    names
        .iter()
        .map(|name| {
            statuses
                .iter()
                .find(|s| s.host.host == *name || s.host.id == *name)
                .ok_or_else(|| {
                    let known: Vec<&str> = statuses.iter().map(|s| s.host.host.as_str()).collect();
                    format!("no public host `{name}` here; known: {}", known.join(", "))
                })
        })
        .collect()
}

/// What `issue` or `renew` was asked.
struct Run<'a> {
    acme: &'a AcmeArgs,
    renew: bool,
    dry_run: bool,
    output: OutputFormat,
}

fn obtain(
    dir: &Path,
    env: &Environment,
    store: &dyn SecretStore,
    statuses: &[HostStatus],
    due: Vec<TlsHost>,
    run: Run,
) -> anyhow::Result<Exit> {
    let Run {
        acme: args,
        renew,
        dry_run,
        output,
    } = run;
    if env.file.tls.mode == TlsMode::Disabled {
        let message = format!(
            "tls.mode is disabled in environment {}: there is no certificate to obtain",
            env.name
        );
        return Ok(refuse(output, &message, Exit::UnusableInput));
    }
    let settings = if env.file.tls.mode == TlsMode::SelfSigned {
        None
    } else {
        match settings(dir, env, args) {
            Ok(settings) => Some(settings),
            Err(message) => return Ok(refuse(output, &message, Exit::UnusableInput)),
        }
    };
    // One issue or renewal per environment at a time on this machine: two
    // would store one run's certificate beside the other's key.
    let state_dir = crate::matrix::resolve_path(dir, &env.file.state_dir);
    let leftovers = settings.is_some() && acme::has_leftovers(&state_dir);
    let _lock = if dry_run || (due.is_empty() && !leftovers) {
        None
    } else {
        let verb = if renew { "renew" } else { "issue" };
        let command = format!("kisumctl tls {verb} {}", env.name);
        match super::hold_lock(
            &state_dir,
            "tls.lock",
            &command,
            std::time::Duration::ZERO,
            false,
        ) {
            Ok(lock) => Some(lock),
            Err(message) => return Ok(refuse(output, &message, Exit::OperationFailed)),
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if leftovers && !dry_run {
        // Said here, whether or not anything is due: a daily renewal
        // with nothing to renew still clears what a killed run left.
        match runtime.block_on(acme::remove_leftovers(env, &state_dir)) {
            Ok((0, 0)) => {}
            Ok((removed, 0)) => errln!(
                "tls {}: removed {removed} challenge record(s) a stopped run left in Route53",
                env.name
            ),
            Ok((removed, kept)) => errln!(
                "tls {}: removed {removed} challenge record(s) a stopped run left in Route53; \
                 {kept} could not be removed and stay listed for the next run",
                env.name
            ),
            Err(error) => {
                let message =
                    format!("removing the challenge records a stopped run left: {error:#}");
                return Ok(refuse(output, &message, Exit::OperationFailed));
            }
        }
    }
    // Hosts a renewal leaves alone because nobody issued them yet.
    let never: Vec<&HostStatus> = statuses
        .iter()
        .filter(|s| renew && matches!(s.health, tls::Health::Missing | tls::Health::Invalid))
        .collect();
    let results: Vec<Issued> = if dry_run || due.is_empty() {
        vec![]
    } else if let Some(settings) = &settings {
        errln!(
            "tls {}: {} certificate(s) from {} ({:?})",
            env.name,
            due.len(),
            settings.directory,
            settings.challenge
        );
        match runtime.block_on(acme::issue(env, store, settings, &due)) {
            Ok(results) => results,
            Err(error) => {
                if error.is::<acme::Interrupted>() {
                    super::journal::note_interrupted();
                }
                return Ok(refuse(output, &format!("{error:#}"), Exit::OperationFailed));
            }
        }
    } else {
        errln!(
            "tls {}: {} self-signed certificate(s) into {}",
            env.name,
            due.len(),
            store.describe()
        );
        let now = jiff::Timestamp::now().as_second();
        tls::selfsigned::issue(store, &due, now)
    };
    let failed = results
        .iter()
        .filter(|r| matches!(r.outcome, IssueOutcome::Failed { .. }))
        .count();
    let refused = results
        .iter()
        .filter(|r| matches!(r.outcome, IssueOutcome::Refused { .. }))
        .count();
    match output {
        OutputFormat::Json => {
            let document = json!({
                "environment": env.name,
                "directory": settings.as_ref().map_or("self-signed", |s| s.directory.as_str()),
                "challenge": settings.as_ref().map(|s| &s.challenge),
                "due": due,
                "dry_run": dry_run,
                "results": results,
                "failed": failed,
                "refused": refused,
                "not_issued": never.iter().map(|s| &s.host).collect::<Vec<_>>(),
            });
            outln!("{}", serde_json::to_string_pretty(&document)?);
        }
        OutputFormat::Text => {
            let rows: Vec<Vec<String>> = if dry_run {
                due.iter()
                    .map(|h| {
                        vec![
                            h.host.clone(),
                            h.secret.clone(),
                            "would renew".into(),
                            String::new(),
                        ]
                    })
                    .collect()
            } else {
                results.iter().map(result_row).collect()
            };
            if rows.is_empty() && never.is_empty() {
                let what = if renew { "renew" } else { "issue" };
                outln!("tls {}: nothing to {what}", env.name);
            } else if rows.is_empty() {
                outln!(
                    "tls {}: nothing is due for renewal, but {} host(s) have no certificate to \
                     renew: {}",
                    env.name,
                    never.len(),
                    never
                        .iter()
                        .map(|s| format!("{} ({})", s.host.host, s.health.as_str()))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            } else {
                out!("{}", table(&["HOST", "SECRET", "RESULT", "DETAIL"], &rows));
            }
        }
    }
    if renew {
        for s in &never {
            errln!(
                "{}: {}, not renewed (run `kisumctl tls issue {}`)",
                s.host.host,
                s.health.as_str(),
                env.name
            );
        }
    }
    Ok(if failed > 0 {
        Exit::OperationFailed
    } else if refused > 0 || (renew && !never.is_empty()) {
        Exit::CheckFailed
    } else {
        Exit::Clean
    })
}

fn result_row(result: &Issued) -> Vec<String> {
    let (status, detail) = match &result.outcome {
        IssueOutcome::Issued { expires } => ("issued", format!("expires {expires}")),
        IssueOutcome::Failed { error } => ("FAILED", printable(error)),
        IssueOutcome::Refused { reason } => ("REFUSED", printable(reason)),
    };
    vec![
        result.host.host.clone(),
        result.host.secret.clone(),
        status.to_string(),
        detail,
    ]
}

/// The ACME directory, trusted CA, challenge and listener: flags and
/// their variables first, then the environment file, then the policy.
pub(super) fn settings(
    dir: &Path,
    env: &Environment,
    args: &AcmeArgs,
) -> Result<acme::Settings, String> {
    let file = &env.file.tls;
    let directory = args
        .acme_directory
        .clone()
        .or_else(|| file.acme_directory.clone())
        .unwrap_or_else(|| env.base.tls.acme_directory.clone());
    if !directory.starts_with("https://") {
        return Err(format!("ACME directory `{directory}` is not an https URL"));
    }
    let ca_root = args.acme_ca_root.clone().or_else(|| {
        file.acme_ca_root
            .as_deref()
            .map(|path| crate::matrix::resolve_path(dir, path))
    });
    if let Some(root) = &ca_root
        && !root.is_file()
    {
        return Err(format!("the ACME CA root {} is not a file", root.display()));
    }
    let http01_listen = file
        .http01_listen
        .as_deref()
        .and_then(|listen| listen.parse().ok());
    Ok(acme::Settings {
        directory,
        ca_root,
        challenge: crate::matrix::provisioning::challenge(env.base.tls.challenge, env.file),
        http01_listen,
        timeout: Duration::from_secs(args.order_timeout.max(1)),
        state_dir: crate::matrix::resolve_path(dir, &env.file.state_dir),
    })
}

fn status(env: &Environment, statuses: &[HostStatus], output: OutputFormat) -> Exit {
    let thresholds = Thresholds::of(env);
    let alarming = statuses.iter().filter(|s| s.health.alarming()).count();
    match output {
        OutputFormat::Json => {
            let document = json!({
                "environment": env.name,
                "renewal_window_days": thresholds.renewal_window_days,
                "alert_days": thresholds.alert_days,
                "hosts": statuses,
                "alarming": alarming,
            });
            outln!(
                "{}",
                serde_json::to_string_pretty(&document).unwrap_or_default()
            );
        }
        OutputFormat::Text => {
            let rows: Vec<Vec<String>> = statuses
                .iter()
                .map(|s| {
                    vec![
                        s.host.host.clone(),
                        s.host.secret.clone(),
                        s.health.as_str().to_string(),
                        s.expires.clone().unwrap_or_default(),
                        s.days_left.map(|d| d.to_string()).unwrap_or_default(),
                        printable(
                            s.problem
                                .as_deref()
                                .or(s.certificate.as_ref().map(|c| c.issuer.as_str()))
                                .unwrap_or_default(),
                        ),
                    ]
                })
                .collect();
            out!(
                "{}",
                table(
                    &[
                        "HOST",
                        "SECRET",
                        "HEALTH",
                        "EXPIRES",
                        "DAYS",
                        "ISSUER OR PROBLEM"
                    ],
                    &rows
                )
            );
            outln!(
                "\nrenewal window {} days, alert under {} days: {alarming} host(s) need attention",
                thresholds.renewal_window_days,
                thresholds.alert_days
            );
        }
    }
    if alarming > 0 {
        Exit::CheckFailed
    } else {
        Exit::Clean
    }
}
