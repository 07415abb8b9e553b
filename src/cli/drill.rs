//! `kisumctl drill`: the restore drill of section 22.3.

use super::output::{errln, out, outln};
use std::path::{Path, PathBuf};

use super::backup::{chosen, with_context};
use super::{Exit, OutputFormat, refuse};
use crate::backup::{Context, drill};
use crate::matrix::load::printable;

/// Run the restore drill of an environment.
///
/// For each database (default: every one whose engine is decided, plus
/// Redis when persistent), in restore order: restore its newest backup into
/// a scratch database, verify checksums, row counts and a sanity query
/// (auth-db: an active platform admin exists; platform-core-db: the module
/// catalog is not empty), drop the scratch database, and measure the
/// recovery time (RTO) and the backup's age (RPO) against the matrix's
/// targets. A database without a backup fails as `no backup`, with no RTO
/// or RPO figure. Writes `drill-<time>.md` and `.json` into the report
/// directory, and keeps the JSON report in the backup store (`.drills/`),
/// where `kisumctl status` reads the last drill from. With
/// `operations.runner: job` in the environment file, the drill runs as a
/// Kubernetes Job in the environment's namespace, which kisumctl launches,
/// watches and reads the result of; the JSON report the Job prints is
/// kept in the backup store and in this machine's `<state-dir>/drills`.
/// Exit 0 when every database passed, 1 when one failed or exceeded a
/// target, 2 for bad input, 3 when the report cannot be written.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment to drill.
    env: String,

    /// Database ids; default: all.
    databases: Vec<String>,

    /// Where the reports go; default: `<state-dir>/drills`.
    #[arg(long)]
    report_dir: Option<PathBuf>,

    /// Output format of stdout (the report files are always both).
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

pub fn run(dir: &Path, args: Args) -> anyhow::Result<Exit> {
    let env = args.env.clone();
    let request = super::operation::Request {
        command: "drill",
        env: &env,
        databases: &args.databases,
        args: args.databases.clone(),
        confirm: None,
        backup: None,
        format: args.output,
    };
    if let Some(exit) = super::operation::in_cluster(dir, request)? {
        return Ok(exit);
    }
    with_context(dir, &env, args.output, async |cx| {
        drill_command(cx, args).await
    })
}

async fn drill_command(cx: &Context<'_>, args: Args) -> anyhow::Result<Exit> {
    let all = args.databases.is_empty();
    let targets = match chosen(cx, &args.databases, all) {
        Ok(targets) => targets,
        Err(message) => return Ok(refuse(args.output, &message, Exit::UnusableInput)),
    };
    if let Err(error) = crate::backup::interrupt::listen() {
        return Ok(refuse(
            args.output,
            &format!("{error:#}"),
            Exit::OperationFailed,
        ));
    }
    let at = crate::backup::now_rfc3339();
    let mut results = Vec::new();
    for target in &targets {
        if target.engine == crate::backup::EngineKind::Redis && !target.persistent {
            errln!(
                "drill {}: redis is a pure cache (redis.persistence: none): nothing to drill, it \
                 refills from the databases; skipped",
                cx.env.name
            );
            continue;
        }
        errln!("drill {}: {}", cx.env.name, target.id);
        match drill::drop_stopped_scratch(cx, target).await {
            Ok(notes) => notes
                .iter()
                .for_each(|(_, note)| errln!("drill {}: {}: {note}", cx.env.name, target.id)),
            Err(error) => errln!(
                "warning: drill {}: {}: the scratch database of a stopped drill could not be \
                 dropped: {error:#}",
                cx.env.name,
                target.id
            ),
        }
        let result = drill::drill(cx, target).await;
        let signal = match crate::backup::interrupt::received() {
            None if !result.passed => crate::backup::interrupt::behind_failure().await,
            signal => signal,
        };
        if let Some(signal) = signal {
            super::journal::note_interrupted();
            errln!(
                "drill {}: {}: interrupted by {signal}; its scratch copy was dropped and no \
                 report was written; rerun `kisumctl drill {}`",
                cx.env.name,
                target.id,
                cx.env.name
            );
            return Ok(Exit::OperationFailed);
        }
        if result.backup_id.is_none() {
            let why = result.checks.first().map_or("", |c| c.detail.as_str());
            errln!("drill {}: {} FAILED: {why}", cx.env.name, target.id);
        } else if result.rto_seconds.is_none() {
            let why: Vec<&str> = result
                .checks
                .iter()
                .filter(|c| !c.passed && !["rto", "rpo"].contains(&c.name.as_str()))
                .map(|c| c.detail.as_str())
                .collect();
            errln!(
                "drill {}: {} FAILED: backup {} could not be restored (RTO and RPO not \
                 measured): {}",
                cx.env.name,
                target.id,
                result.backup_id.as_deref().unwrap_or_default(),
                printable(&why.join("; "))
            );
        } else {
            errln!(
                "drill {}: {} {} (RTO {} s of {} s, RPO {} s of {} s)",
                cx.env.name,
                target.id,
                if result.passed { "passed" } else { "FAILED" },
                result.rto_seconds.map_or("-".into(), |s| format!("{s:.1}")),
                result.rto_target_seconds,
                result.rpo_seconds.map_or("-".into(), |s| s.to_string()),
                result.rpo_target_seconds
            );
        }
        results.push(result);
    }
    if results.is_empty() {
        // Nothing was drilled: no report, which would pass for a drill.
        return Ok(Exit::Clean);
    }
    let passed = results.iter().all(|r| r.passed);
    let document = serde_json::json!({
        "environment": cx.env.name,
        "at": at,
        "passed": passed,
        "databases": results,
    });
    let markdown = drill::markdown(cx.env.name, &at, &results);
    let report_dir = args
        .report_dir
        .clone()
        .unwrap_or_else(|| cx.state_dir.join("drills"));
    let stem = format!("drill-{}", at.replace(':', ""));
    let written = std::fs::create_dir_all(&report_dir)
        .and_then(|_| std::fs::write(report_dir.join(format!("{stem}.md")), &markdown))
        .and_then(|_| {
            let json = serde_json::to_string_pretty(&document).unwrap_or_default();
            std::fs::write(report_dir.join(format!("{stem}.json")), json)
        });
    if let Err(error) = written {
        let message = format!(
            "writing the drill report in {}: {error}",
            report_dir.display()
        );
        return Ok(refuse(args.output, &message, Exit::OperationFailed));
    }
    errln!(
        "drill {}: report in {}",
        cx.env.name,
        printable(&report_dir.join(&stem).display().to_string())
    );
    keep_in_store(cx, &format!("{stem}.json"), &document).await;
    match args.output {
        OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&document)?),
        OutputFormat::Text => out!("{markdown}"),
    }
    Ok(if passed {
        Exit::Clean
    } else {
        Exit::CheckFailed
    })
}

/// Keeps the JSON report in the backup store too, where `status` reads the
/// last drill from whichever machine, Job or CronJob ran it. A store that
/// refuses it is a warning: the drill itself is done and reported.
async fn keep_in_store(cx: &Context<'_>, name: &str, document: &serde_json::Value) {
    use crate::backup::store::BackupStore as _;
    let json = serde_json::to_string_pretty(document).unwrap_or_default();
    match cx.store.put_drill_report(name, &json).await {
        Ok(()) => errln!(
            "drill {}: report kept in the backup store ({})",
            cx.env.name,
            cx.store.describe()
        ),
        Err(error) => errln!(
            "warning: drill {}: the report could not be kept in the backup store, so `kisumctl status {}` elsewhere will not see it: {error:#}",
            cx.env.name,
            cx.env.name
        ),
    }
}
