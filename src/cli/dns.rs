//! `kisumctl dns plan|apply|cutover ENV`: the environment's DNS records in
//! Route53.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::output::{errln, out, outln, table};
use super::{Exit, OutputFormat, refuse};
use crate::dns::plan::{Action, Cutover, Outcome, Planned};
use crate::dns::{self, Plan};
use crate::matrix::Environment;
use crate::matrix::load::printable;

/// Plan and apply an environment's DNS records in Route53 (section 4).
///
/// Every public host of the matrix gets its record in its zone: a CNAME to
/// `dns.ingress-target`, or alias A/AAAA records (`dns.ingress-alias`), or
/// A/AAAA records with fixed addresses (`dns.ingress-addresses`);
/// frontends point at `dns.frontend-target` when set, internal services at
/// `dns.internal-target` in their private zone when set. The TTL is the
/// environment's `dns.ttl-seconds`.
///
/// kisumctl owns a record only when a TXT record `_kisumctl-<type>.<name>`
/// names this environment (`kisum-<env>`) as its owner, and it never
/// changes or deletes any other record: such a record is a conflict,
/// reported on its own line while the rest goes ahead. Credentials come
/// from the AWS SDK's standard chain; the endpoint from `dns.endpoint`,
/// else `AWS_ENDPOINT_URL_ROUTE_53` or `AWS_ENDPOINT_URL`, else AWS.
/// Exit 0 when everything is (or would be) in place, 1 when a record is in
/// conflict, 2 for unusable input, 3 when Route53 failed.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    Plan(PlanArgs),
    Apply(ApplyArgs),
    Cutover(CutoverArgs),
}

/// Show what `dns apply` would do: creates, updates, deletes, conflicts.
#[derive(Debug, clap::Args)]
struct PlanArgs {
    /// Environment of the matrix (dev, staging, production, ...).
    env: String,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

/// Create, update and delete the environment's own records, in batches
/// within Route53's limits, and wait until Route53 serves them (INSYNC).
#[derive(Debug, clap::Args)]
struct ApplyArgs {
    /// Environment of the matrix (dev, staging, production, ...).
    env: String,
    #[command(flatten)]
    wait: Wait,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

/// Lower the TTLs of the environment's records ahead of a migration, or
/// put them back (section 4.4).
///
/// `--lower-ttl` sets every owned record's TTL above `dns.cutover-ttl-seconds`
/// to it and remembers the original TTL in the record's ownership marker
/// (so any operator can restore it, from any machine); `dns apply` keeps
/// the lowered TTL meanwhile. Wait for the old TTL to pass before the
/// migration. `--restore` puts the remembered TTLs back.
#[derive(Debug, clap::Args)]
struct CutoverArgs {
    /// Environment of the matrix (dev, staging, production, ...).
    env: String,
    /// Lower the TTLs.
    #[arg(long, required_unless_present = "restore", conflicts_with = "restore")]
    lower_ttl: bool,
    /// Put the original TTLs back.
    #[arg(long)]
    restore: bool,
    /// Show the changes and make none.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    wait: Wait,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Debug, clap::Args)]
struct Wait {
    /// Seconds to wait for Route53 to report the changes INSYNC.
    #[arg(long = "wait-timeout", default_value_t = 600, value_name = "SECONDS")]
    seconds: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verb {
    Plan,
    Apply,
    Cutover(Cutover, bool),
}

pub fn run(dir: &Path, args: Args) -> anyhow::Result<Exit> {
    let (env, output, verb, wait) = match args.action {
        Command::Plan(a) => (a.env, a.output, Verb::Plan, 0),
        Command::Apply(a) => (a.env, a.output, Verb::Apply, a.wait.seconds),
        Command::Cutover(a) => {
            let cutover = if a.restore {
                Cutover::Restore
            } else {
                Cutover::Lower(0)
            };
            (
                a.env,
                a.output,
                Verb::Cutover(cutover, a.dry_run),
                a.wait.seconds,
            )
        }
    };
    super::with_environment(dir, &env, output, |_, env| {
        if !env.file.dns.managed {
            let message = format!(
                "dns.managed is false in environment {}: kisumctl manages no DNS records there",
                env.name
            );
            return Ok(refuse(output, &message, Exit::UnusableInput));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(run_verb(env, verb, Duration::from_secs(wait), output))
    })
}

async fn run_verb(
    env: &Environment<'_>,
    verb: Verb,
    wait: Duration,
    output: OutputFormat,
) -> anyhow::Result<Exit> {
    let r53 = dns::connect(env).await;
    let planned = match verb {
        Verb::Plan | Verb::Apply => dns::plan(&r53, env).await,
        Verb::Cutover(Cutover::Lower(_), _) => {
            let low = Cutover::Lower(env.base.dns.cutover_ttl_seconds);
            dns::plan_cutover(&r53, env, low).await
        }
        Verb::Cutover(cutover, _) => dns::plan_cutover(&r53, env, cutover).await,
    };
    let mut plan = match planned {
        Ok(plan) => plan,
        Err(error) => return Ok(refuse(output, &format!("{error:#}"), Exit::OperationFailed)),
    };
    let applies = matches!(verb, Verb::Apply | Verb::Cutover(_, false));
    let mut error = None;
    if applies {
        errln!(
            "dns {}: applying {} change(s) as {}",
            env.name,
            plan.records().filter(|p| !p.changes.is_empty()).count(),
            plan.owner
        );
        if let Err(e) = dns::apply(&r53, &mut plan, wait).await {
            error = Some(format!("{e:#}"));
        }
    }
    let cutover_note = match verb {
        Verb::Cutover(Cutover::Lower(_), _) => Some(effective_note(&plan)),
        _ => None,
    };
    match output {
        OutputFormat::Json => {
            let document = json!({
                "environment": plan.environment,
                "owner": plan.owner,
                "zones": plan.zones,
                "records": plan.records().collect::<Vec<_>>(),
                "summary": dns::summary(&plan),
                "applied": applies,
                "failed": plan.failed(),
                "error": error,
            });
            outln!("{}", serde_json::to_string_pretty(&document)?);
        }
        OutputFormat::Text => out!("{}", text(&plan, applies)),
    }
    if let Some(note) = cutover_note.filter(|_| applies) {
        errln!("{note}");
    }
    if let Some(error) = &error {
        errln!("error: {}", printable(error));
    }
    Ok(if error.is_some() || plan.failed() > 0 {
        Exit::OperationFailed
    } else if plan.count(Action::Conflict) > 0 {
        Exit::CheckFailed
    } else {
        Exit::Clean
    })
}

/// When resolvers stop holding the old, longer TTLs.
fn effective_note(plan: &Plan) -> String {
    let longest = plan
        .records()
        .filter(|p| p.action == Action::Update)
        .filter_map(|p| p.before.as_ref()?.ttl)
        .max();
    match longest {
        Some(ttl) => {
            let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(i64::from(ttl));
            format!(
                "the lowered TTLs are in effect everywhere after {} ({ttl} s); restore with \
                 `kisumctl dns cutover {} --restore`",
                at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                plan.environment
            )
        }
        None => "no TTL was lowered".to_string(),
    }
}

fn text(plan: &Plan, applied: bool) -> String {
    let mut out = format!("dns {} (owner {})\n", plan.environment, plan.owner);
    for zone in &plan.zones {
        let visibility = if zone.zone.private {
            "private"
        } else {
            "public"
        };
        let hosted = zone.hosted_zone.as_deref().unwrap_or("not in Route53");
        out += &format!(
            "zone {} ({}, {visibility}): {hosted}\n",
            zone.zone.id, zone.zone.domain
        );
    }
    let rows: Vec<Vec<String>> = plan
        .records()
        .filter(|p| p.action != Action::Unchanged || p.reason.is_some())
        .map(|p| row(p, applied))
        .collect();
    if !rows.is_empty() {
        out += "\n";
        out += &table(
            &["ACTION", "TYPE", "NAME", "RECORD", "RESOURCE", "NOTE"],
            &rows,
        );
    }
    let summary = dns::summary(plan);
    out += &format!(
        "\n{} to create, {} to update, {} to delete, {} conflict(s), {} unchanged",
        summary["create"],
        summary["update"],
        summary["delete"],
        summary["conflict"],
        summary["unchanged"]
    );
    if applied {
        out += &format!("; {} failed", plan.failed());
    }
    out + "\n"
}

fn row(p: &Planned, applied: bool) -> Vec<String> {
    let record = match (&p.before, &p.after, p.action) {
        (Some(before), Some(after), Action::Update) => {
            format!("{} -> {}", before.describe(), after.describe())
        }
        (_, Some(after), Action::Create) => after.describe(),
        (Some(before), _, _) => before.describe(),
        (None, Some(after), _) => after.describe(),
        (None, None, _) => String::new(),
    };
    let mut note = p.reason.clone().unwrap_or_default();
    match &p.outcome {
        Some(Outcome::Failed { error }) => note = format!("FAILED: {error}"),
        Some(Outcome::Applied) if applied => note = "applied".into(),
        _ => {}
    }
    vec![
        p.action.as_str().to_string(),
        p.rtype.as_str().to_string(),
        p.name.clone(),
        printable(&record),
        p.resource.clone().unwrap_or_default(),
        printable(&note),
    ]
}
