//! `kisumctl plan ENV` and `kisumctl apply ENV`: one plan over secrets,
//! DNS, TLS, databases and manifests, built from each part's own planner,
//! then applied part by part in a safe order.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use super::output::{errln, out, outln, table};
use super::{Exit, OutputFormat};
use crate::db::migrate;
use crate::db::provision::{self, Admin};
use crate::dns;
use crate::matrix::load::printable;
use crate::matrix::schema::TlsMode;
use crate::matrix::{Environment, Matrix};
use crate::render::{self, templates::Templates};
use crate::secrets::SecretStore;
use crate::secrets::inventory::{self, Action};
use crate::tls;

/// Plan everything the environment needs: secrets, DNS, TLS, databases and
/// manifests.
///
/// Each part is planned by its own command's planner (`secrets plan`, `dns
/// plan`, `tls status`, `db provision --dry-run` and `db status`, `render
/// --check`) and reported on its own line: what would change, or why the
/// part does not apply here (`not-here`) or cannot be planned now
/// (`unavailable`, with the reason: no backend, no server reachable),
/// which does not stop the other parts. Changes nothing. Exit 0 when every
/// part that applies could be planned, 1 when one could not.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Environment of the matrix (local, dev, staging, production).
    env: String,
    #[command(flatten)]
    files: Files,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

/// Apply everything the environment needs, in a safe order.
///
/// Secrets first (the services and the later parts read them), then DNS
/// records, then certificates (DNS-01 needs the zones; issued for hosts
/// without a valid certificate, renewed inside the renewal window), then
/// databases (provisioning, then migrations in release order), then the
/// manifests. A part that does not apply here is skipped; one that cannot
/// run now is skipped with its reason, and so are the parts that depend on
/// it (TLS on secrets and DNS, databases on secrets). A failing part stops
/// the parts that depend on it. Exit 0 when all done, 1 when a part could
/// not run, 3 when one failed.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Environment of the matrix (local, dev, staging, production).
    env: String,
    #[command(flatten)]
    files: Files,
    #[command(flatten)]
    acme: super::tls::AcmeArgs,
    /// Seconds to wait for Route53 to report the changes INSYNC.
    #[arg(long = "wait-timeout", default_value_t = 600, value_name = "SECONDS")]
    wait_seconds: u64,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Debug, clap::Args)]
struct Files {
    /// Parent directory of the per-environment manifest directories.
    #[arg(long, default_value = "manifests")]
    out: PathBuf,
    /// Directory of the tera templates.
    #[arg(long, env = "KISUM_TEMPLATES", default_value = "templates")]
    templates: PathBuf,
}

/// The parts, in the order `apply` runs them.
const ORDER: [&str; 5] = ["secrets", "dns", "tls", "databases", "manifests"];

/// What each part needs to have gone well first.
fn needs(part: &str) -> &'static [&'static str] {
    match part {
        "tls" => &["secrets", "dns"],
        "databases" => &["secrets"],
        _ => &[],
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum State {
    /// Nothing to do.
    InSync,
    Changes,
    /// Does not apply in this environment.
    NotHere,
    /// Cannot be planned or applied now.
    Unavailable,
    Applied,
    Failed,
    /// Not run: a part it needs did not go well.
    Skipped,
    /// Records (or certificates of their hosts) another owner holds:
    /// left alone, everything else planned or applied (`dns apply`'s exit
    /// 1).
    Conflict,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::InSync => "in-sync",
            State::Changes => "changes",
            State::NotHere => "not-here",
            State::Unavailable => "unavailable",
            State::Applied => "applied",
            State::Failed => "failed",
            State::Skipped => "skipped",
            State::Conflict => "conflict",
        }
    }

    fn fine(self) -> bool {
        matches!(
            self,
            State::InSync | State::Changes | State::NotHere | State::Applied
        )
    }
}

#[derive(Debug, Clone, Serialize)]
struct Part {
    part: &'static str,
    state: State,
    summary: String,
    /// What needs a person, one line each (a DNS conflict per record).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    problems: Vec<String>,
    /// Whether `apply` has something to do in it (a part with conflicts
    /// may have other changes).
    #[serde(skip)]
    changes: bool,
    /// The part's own plan or result, as its command's JSON has it.
    detail: Value,
}

impl Part {
    fn new(part: &'static str, state: State, summary: impl Into<String>) -> Part {
        Part {
            part,
            state,
            summary: summary.into(),
            problems: Vec::new(),
            changes: state == State::Changes,
            detail: Value::Null,
        }
    }
}

/// The environment, its store, and where manifests go.
struct Context<'a> {
    dir: &'a Path,
    matrix: &'a Matrix,
    env: &'a Environment<'a>,
    store: Result<Box<dyn SecretStore>, String>,
    files: &'a Files,
}

impl Context<'_> {
    fn store(&self) -> Result<&dyn SecretStore, String> {
        self.store
            .as_ref()
            .map(|s| s.as_ref())
            .map_err(Clone::clone)
    }
}

pub fn plan(dir: &Path, args: PlanArgs) -> anyhow::Result<Exit> {
    let output = args.output;
    super::with_environment(dir, &args.env, output, |matrix, env| {
        let cx = context(dir, matrix, env, &args.files);
        let runtime = runtime()?;
        let parts: Vec<Part> = runtime.block_on(async {
            let mut parts = Vec::new();
            for part in ORDER {
                parts.push(plan_part(&cx, part).await);
            }
            parts
        });
        report(env, &parts, false, output)?;
        Ok(if parts.iter().any(|p| !p.state.fine()) {
            Exit::CheckFailed
        } else {
            Exit::Clean
        })
    })
}

pub fn apply(dir: &Path, args: ApplyArgs) -> anyhow::Result<Exit> {
    let output = args.output;
    super::with_environment(dir, &args.env, output, |matrix, env| {
        let cx = context(dir, matrix, env, &args.files);
        let runtime = runtime()?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let parts: Vec<Part> = runtime.block_on(async {
            watch_interrupt(env.name, stop.clone());
            let mut parts: Vec<Part> = Vec::new();
            for part in ORDER {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    parts.push(Part::new(
                        part,
                        State::Skipped,
                        "not run: interrupted".to_string(),
                    ));
                    continue;
                }
                // A conflict holds back only what it concerns (`tls`
                // refuses the hosts with a DNS conflict itself).
                let blocked = needs(part).iter().find(|need| {
                    parts
                        .iter()
                        .any(|p| p.part == **need && !p.state.fine() && p.state != State::Conflict)
                });
                if let Some(need) = blocked {
                    let skipped = Part::new(
                        part,
                        State::Skipped,
                        format!("not run: {need} did not go well"),
                    );
                    errln!("apply {}: {part}: {}", env.name, skipped.summary);
                    parts.push(skipped);
                    continue;
                }
                let planned = plan_part(&cx, part).await;
                let done = if planned.changes {
                    errln!(
                        "apply {}: {part}: {}",
                        env.name,
                        printable(&planned.summary)
                    );
                    apply_part(&cx, &args, part).await
                } else {
                    planned
                };
                errln!(
                    "apply {}: {part}: {} {}",
                    env.name,
                    done.state.as_str(),
                    printable(&done.summary)
                );
                parts.push(done);
            }
            parts
        });
        report(env, &parts, true, output)?;
        let interrupted = stop.load(std::sync::atomic::Ordering::SeqCst);
        if interrupted {
            super::journal::note_interrupted();
        }
        Ok(
            if interrupted || parts.iter().any(|p| p.state == State::Failed) {
                Exit::OperationFailed
            } else if parts.iter().any(|p| !p.state.fine()) {
                Exit::CheckFailed
            } else {
                Exit::Clean
            },
        )
    })
}

/// Ctrl-C or SIGTERM during `apply`: the part under way finishes (`tls`
/// abandons its orders at once and removes its challenge records), no
/// later part runs, and the run ends as interrupted (exit 3).
fn watch_interrupt(env: &str, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let message =
        format!("apply {env}: interrupted: the part under way finishes, no later part runs");
    super::flag_interrupt(stop, message, false);
}

fn context<'a>(
    dir: &'a Path,
    matrix: &'a Matrix,
    env: &'a Environment<'a>,
    files: &'a Files,
) -> Context<'a> {
    Context {
        dir,
        matrix,
        env,
        store: super::backup::secret_store(dir, env),
        files,
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

async fn plan_part(cx: &Context<'_>, part: &'static str) -> Part {
    let planned = match part {
        "secrets" => plan_secrets(cx),
        "dns" => plan_dns(cx).await,
        "tls" => plan_tls(cx),
        "databases" => plan_databases(cx).await,
        _ => plan_manifests(cx),
    };
    let mut planned = planned.unwrap_or_else(|reason| Part::new(part, State::Unavailable, reason));
    planned.changes |= planned.state == State::Changes;
    planned
}

fn plan_secrets(cx: &Context) -> Result<Part, String> {
    let plan = inventory::plan(cx.env, cx.store()?).map_err(|e| e.to_string())?;
    let generate = plan.to_generate().len();
    let state = if generate == 0 {
        State::InSync
    } else {
        State::Changes
    };
    let summary = format!(
        "{generate} key(s) to generate in {} secret(s); {} to be supplied by a person, {} \
         awaiting another part",
        plan.count(Action::Generate),
        plan.with_keys(Action::MustSupply),
        plan.with_keys(Action::Awaits)
    );
    Ok(Part {
        part: "secrets",
        problems: Vec::new(),
        changes: false,
        state,
        summary,
        detail: json!({ "backend": plan.backend, "secrets": plan.secrets }),
    })
}

async fn plan_dns(cx: &Context<'_>) -> Result<Part, String> {
    if !cx.env.file.dns.managed {
        return Ok(Part::new(
            "dns",
            State::NotHere,
            format!("dns.managed is false in {}", cx.env.name),
        ));
    }
    let r53 = dns::connect(cx.env).await;
    let plan = dns::plan(&r53, cx.env)
        .await
        .map_err(|e| format!("Route53: {e:#}"))?;
    Ok(dns_part(&plan, false))
}

fn dns_part(plan: &dns::Plan, applied: bool) -> Part {
    use crate::dns::plan::Action as Dns;
    let changes = plan.count(Dns::Create) + plan.count(Dns::Update) + plan.count(Dns::Delete);
    let summary = dns::summary(plan);
    let conflicts = plan.conflicts();
    let state = if applied && plan.failed() > 0 {
        State::Failed
    } else if !conflicts.is_empty() {
        State::Conflict
    } else if applied {
        State::Applied
    } else if changes > 0 {
        State::Changes
    } else {
        State::InSync
    };
    Part {
        part: "dns",
        state,
        problems: conflicts
            .into_iter()
            .map(|c| format!("conflict {c}: see `kisumctl dns plan {}`", plan.environment))
            .collect(),
        changes: !applied && changes > 0,
        summary: format!(
            "{} to create, {} to update, {} to delete, {} conflict(s), {} unchanged{}",
            summary["create"],
            summary["update"],
            summary["delete"],
            summary["conflict"],
            summary["unchanged"],
            if applied {
                format!("; {} failed", plan.failed())
            } else {
                String::new()
            }
        ),
        detail: json!({ "owner": plan.owner, "records": plan.records().collect::<Vec<_>>() }),
    }
}

fn plan_tls(cx: &Context) -> Result<Part, String> {
    if cx.env.file.tls.mode != TlsMode::Acme {
        return Ok(Part::new(
            "tls",
            State::NotHere,
            format!(
                "tls.mode of {} is not acme: no certificate is obtained",
                cx.env.name
            ),
        ));
    }
    let statuses = tls_statuses(cx)?;
    let issue = statuses.iter().filter(|s| s.health.issue()).count();
    let renew = statuses
        .iter()
        .filter(|s| s.health.renew() && !s.health.issue())
        .count();
    Ok(Part {
        part: "tls",
        problems: Vec::new(),
        changes: false,
        state: if issue + renew > 0 {
            State::Changes
        } else {
            State::InSync
        },
        summary: format!(
            "{issue} certificate(s) to issue, {renew} to renew, {} valid",
            statuses.len() - issue - renew
        ),
        detail: json!({ "hosts": statuses }),
    })
}

fn tls_statuses(cx: &Context) -> Result<Vec<tls::HostStatus>, String> {
    let now = jiff::Timestamp::now().as_second();
    tls::status(
        &tls::hosts(cx.env),
        cx.store()?,
        tls::Thresholds::of(cx.env),
        now,
    )
    .map_err(|e| e.to_string())
}

async fn plan_databases(cx: &Context<'_>) -> Result<Part, String> {
    let plan = provision::plan(cx.env, None).map_err(|e| format!("{e:#}"))?;
    if plan.databases.is_empty() {
        return Ok(Part::new("databases", State::NotHere, "no database here"));
    }
    let store = cx.store()?;
    reachable(cx, store).await?;
    let sets = super::db::migration_sets(cx.dir, cx.env, None, false)?;
    let mut pending = 0;
    let mut unreadable = Vec::new();
    let mut statuses = Vec::new();
    for set in &sets {
        let status = async {
            let mut conn = migrate::connect(set, store).await?;
            let status = migrate::status(&mut conn, set).await;
            let _ = sqlx::Connection::close(conn).await;
            status
        };
        match status.await {
            Ok(status) => {
                pending += status.pending.len();
                statuses.push(json!(status));
            }
            Err(_) => unreadable.push(set.database.clone()),
        }
    }
    let current = pending == 0 && unreadable.is_empty();
    let summary = format!(
        "{} database(s){}; {pending} migration(s) pending{}",
        plan.databases.len(),
        if current {
            ", provisioned and current"
        } else {
            " to provision (converges; a second run changes nothing)"
        },
        if unreadable.is_empty() {
            String::new()
        } else {
            format!(
                ", not provisioned yet: {} (all their migrations)",
                unreadable.join(", ")
            )
        }
    );
    Ok(Part {
        part: "databases",
        problems: Vec::new(),
        changes: false,
        state: if current {
            State::InSync
        } else {
            State::Changes
        },
        summary,
        detail: json!({ "plan": plan, "migrations": statuses, "unreadable": unreadable }),
    })
}

/// Every PostgreSQL server of the environment answers its administrator
/// within a few seconds; `Err` names the first that does not.
async fn reachable(cx: &Context<'_>, store: &dyn SecretStore) -> Result<(), String> {
    use crate::backup::EngineKind;
    use crate::backup::connection;
    let mut seen = Vec::new();
    for target in connection::targets(cx.env) {
        if target.engine != EngineKind::Postgresql || seen.contains(&target.cluster) {
            continue;
        }
        seen.push(target.cluster.clone());
        let login =
            connection::postgres_login(cx.env, &target, store).map_err(|e| format!("{e:#}"))?;
        let attempt = crate::backup::postgres::connect(&login, "postgres");
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(conn)) => {
                let _ = sqlx::Connection::close(conn).await;
            }
            Ok(Err(error)) => return Err(format!("{error:#}")),
            Err(_) => {
                return Err(format!(
                    "PostgreSQL {}:{} did not answer within 5 s",
                    login.host, login.port
                ));
            }
        }
    }
    Ok(())
}

fn rendered(cx: &Context) -> Result<Vec<render::RenderedFile>, String> {
    let violations = super::render::violations(cx.matrix, &[cx.env.name.to_string()]);
    if !violations.is_empty() {
        return Err(format!(
            "the matrix violates {} rule(s); see `kisumctl validate {}`",
            violations.len(),
            cx.env.name
        ));
    }
    let templates = Templates::load(&cx.files.templates).map_err(|e| e.to_string())?;
    render::render(cx.env, &templates).map_err(|e| e.to_string())
}

fn plan_manifests(cx: &Context) -> Result<Part, String> {
    let files = rendered(cx)?;
    let target = cx.files.out.join(cx.env.name);
    let staleness = render::output::check(&target, &files)
        .map_err(|e| format!("reading {}: {e}", target.display()))?;
    let state = if staleness.is_clean() {
        State::InSync
    } else {
        State::Changes
    };
    Ok(Part {
        part: "manifests",
        problems: Vec::new(),
        changes: false,
        state,
        summary: format!(
            "{} file(s) in {}: {} changed, {} missing, {} extra",
            files.len(),
            target.display(),
            staleness.changed.len(),
            staleness.missing.len(),
            staleness.extra.len()
        ),
        detail: json!({
            "changed": staleness.changed,
            "missing": staleness.missing,
            "extra": staleness.extra,
        }),
    })
}

async fn apply_part(cx: &Context<'_>, args: &ApplyArgs, part: &'static str) -> Part {
    let done = match part {
        "secrets" => apply_secrets(cx),
        "dns" => apply_dns(cx, args).await,
        "tls" => apply_tls(cx, args).await,
        "databases" => apply_databases(cx).await,
        _ => apply_manifests(cx),
    };
    done.unwrap_or_else(|reason| Part::new(part, State::Failed, reason))
}

fn apply_secrets(cx: &Context) -> Result<Part, String> {
    let store = cx.store()?;
    let mut plan = inventory::plan(cx.env, store).map_err(|e| e.to_string())?;
    let now = jiff::Timestamp::now().as_second();
    let mut written = 0;
    inventory::apply(cx.env, &mut plan, store, now, &mut |_, keys| {
        written += keys
    })
    .map_err(|e| format!("{e:#}"))?;
    Ok(Part {
        part: "secrets",
        problems: Vec::new(),
        changes: false,
        state: State::Applied,
        summary: format!(
            "{written} key(s) generated; {} to be supplied by a person",
            plan.with_keys(Action::MustSupply)
        ),
        detail: json!({ "backend": plan.backend, "secrets": plan.secrets }),
    })
}

async fn apply_dns(cx: &Context<'_>, args: &ApplyArgs) -> Result<Part, String> {
    let r53 = dns::connect(cx.env).await;
    let mut plan = dns::plan(&r53, cx.env)
        .await
        .map_err(|e| format!("Route53: {e:#}"))?;
    dns::apply(&r53, &mut plan, Duration::from_secs(args.wait_seconds))
        .await
        .map_err(|e| format!("Route53: {e:#}"))?;
    Ok(dns_part(&plan, true))
}

async fn apply_tls(cx: &Context<'_>, args: &ApplyArgs) -> Result<Part, String> {
    let settings = super::tls::settings(cx.dir, cx.env, &args.acme)?;
    let due: Vec<tls::TlsHost> = tls_statuses(cx)?
        .into_iter()
        .filter(|s| s.health.issue() || s.health.renew())
        .map(|s| s.host)
        .collect();
    let results = tls::acme::issue(cx.env, cx.store()?, &settings, &due)
        .await
        .map_err(|e| format!("{e:#}"))?;
    use tls::acme::IssueOutcome;
    let failed = results
        .iter()
        .filter(|r| matches!(r.outcome, IssueOutcome::Failed { .. }))
        .count();
    let problems: Vec<String> = results
        .iter()
        .filter_map(|r| match &r.outcome {
            IssueOutcome::Refused { reason } => Some(format!("{} refused: {reason}", r.host.host)),
            _ => None,
        })
        .collect();
    Ok(Part {
        part: "tls",
        state: if failed > 0 {
            State::Failed
        } else if !problems.is_empty() {
            State::Conflict
        } else {
            State::Applied
        },
        summary: format!(
            "{} certificate(s) obtained, {failed} failed, {} refused",
            results.len() - failed - problems.len(),
            problems.len()
        ),
        problems,
        changes: false,
        detail: json!({ "results": results }),
    })
}

async fn apply_databases(cx: &Context<'_>) -> Result<Part, String> {
    let store = cx.store()?;
    let plan = provision::plan(cx.env, None).map_err(|e| format!("{e:#}"))?;
    let admin = Admin {
        env: cx.env,
        secrets: store,
        connect_timeout: Duration::from_secs(10),
    };
    let name = cx.env.name;
    let mut progress = |change: &provision::Change| {
        errln!("apply {name}: databases: {}", printable(&change.line()));
    };
    let changes = provision::apply(&plan, &admin, &mut progress)
        .await
        .map_err(|e| format!("provisioning: {e:#}"))?;
    let sets = super::db::migration_sets(cx.dir, cx.env, None, true)?;
    let mut applied = 0;
    let mut reports = Vec::new();
    for set in &sets {
        let mut progress = |line: &str| errln!("apply {name}: databases: {}", printable(line));
        let mut conn = migrate::connect(set, store)
            .await
            .map_err(|e| format!("migrating {}: {e:#}", set.database))?;
        let report = migrate::run(
            &mut conn,
            set,
            false,
            Duration::from_secs(120),
            &mut progress,
        )
        .await;
        let _ = sqlx::Connection::close(conn).await;
        let report = report.map_err(|stop| format!("migrating {}: {stop:#}", set.database))?;
        applied += report.applied.len();
        reports.push(report);
    }
    Ok(Part {
        part: "databases",
        problems: Vec::new(),
        changes: false,
        state: State::Applied,
        summary: format!(
            "{} database(s) provisioned ({} object(s) created or updated); {applied} \
             migration(s) applied",
            plan.databases.len(),
            changes
                .iter()
                .filter(|c| matches!(
                    c.outcome,
                    provision::Outcome::Created | provision::Outcome::Updated
                ))
                .count()
        ),
        detail: json!({ "changes": changes, "migrations": reports }),
    })
}

fn apply_manifests(cx: &Context) -> Result<Part, String> {
    let files = rendered(cx)?;
    let target = cx.files.out.join(cx.env.name);
    let touched = render::output::write(&target, &files)
        .map_err(|e| format!("writing {}: {e}", target.display()))?;
    Ok(Part {
        part: "manifests",
        problems: Vec::new(),
        changes: false,
        state: State::Applied,
        summary: format!(
            "{} file(s) in {}, {} changed",
            files.len(),
            target.display(),
            touched.len()
        ),
        detail: json!({ "changed": touched }),
    })
}

fn report(
    env: &Environment,
    parts: &[Part],
    applied: bool,
    output: OutputFormat,
) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => {
            let document = json!({
                "environment": env.name,
                "applied": applied,
                "order": ORDER,
                "parts": parts,
            });
            outln!("{}", serde_json::to_string_pretty(&document)?);
        }
        OutputFormat::Text => {
            let verb = if applied { "apply" } else { "plan" };
            outln!("{verb} {}, in the order apply takes:\n", env.name);
            let rows: Vec<Vec<String>> = parts
                .iter()
                .map(|p| {
                    vec![
                        p.part.to_string(),
                        p.state.as_str().to_string(),
                        printable(&p.summary),
                    ]
                })
                .collect();
            out!("{}", table(&["PART", "STATE", "SUMMARY"], &rows));
            for part in parts {
                for problem in &part.problems {
                    outln!("{}: {}", part.part, printable(problem));
                }
            }
        }
    }
    Ok(())
}
