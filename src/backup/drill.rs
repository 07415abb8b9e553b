//! The restore drill (section 22.3): restore the newest backup of each
//! database into a scratch database, verify it, measure the real recovery
//! time and the backup's age, and compare both with the matrix's RTO and
//! RPO.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use super::connection::{self, Target};
use super::postgres;
use super::{Context, EngineKind, mongo};

/// Per database: the schema its service's tables live in (section 9.1:
/// one schema per service, named after it), what the check means, and a
/// query whose first column must be a count of at least 1 in a healthy
/// restore.
const SANITY: &[(&str, &str, &str, &str)] = &[
    (
        "auth-db",
        "auth",
        "an active platform admin exists",
        "SELECT count(*) FROM platform_roles r JOIN users u ON u.id = r.user_id \
         WHERE r.role = 'platform-admin' AND u.status = 'active'",
    ),
    (
        "platform-core-db",
        "platform_core",
        "the module catalog is not empty",
        "SELECT count(*) FROM modules",
    ),
];

#[derive(Debug, Clone, Serialize)]
pub struct DrillResult {
    pub database: String,
    pub backup_id: Option<String>,
    pub passed: bool,
    /// Seconds from the start of the fetch to a verified scratch database;
    /// `None` when there was no backup, or it could not be restored
    /// (nothing was measured).
    pub rto_seconds: Option<f64>,
    pub rto_target_seconds: u64,
    /// Age of the backup at the start of the drill; `None` without one, or
    /// when it could not be restored.
    pub rpo_seconds: Option<i64>,
    pub rpo_target_seconds: u64,
    pub checks: Vec<DrillCheck>,
}

impl DrillResult {
    /// `pass`, `FAIL`, `FAIL (no backup)` when there was none to drill,
    /// or `FAIL (not restored)` when the backup could not be restored.
    pub fn verdict(&self) -> &'static str {
        match (self.passed, &self.backup_id, self.rto_seconds) {
            (true, _, _) => "pass",
            (false, None, _) => "FAIL (no backup)",
            (false, Some(_), None) => "FAIL (not restored)",
            (false, Some(_), Some(_)) => "FAIL",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillCheck {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// Differences between the counts of a manifest and those found.
pub fn count_mismatches(
    expected: &BTreeMap<String, u64>,
    found: &BTreeMap<String, u64>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (table, count) in expected {
        match found.get(table) {
            Some(n) if n == count => {}
            Some(n) => problems.push(format!("{table}: {n} row(s), the manifest says {count}")),
            None => problems.push(format!("{table} is missing")),
        }
    }
    for table in found.keys().filter(|t| !expected.contains_key(*t)) {
        problems.push(format!("{table} is not in the manifest"));
    }
    problems
}

/// Drills `target`; a failure of any step is a failed check, not an error.
/// Without a backup the drill fails with the check `backup` and measures
/// nothing: no recovery time, no backup age.
pub async fn drill(cx: &Context<'_>, target: &Target) -> DrillResult {
    let mut result = DrillResult {
        database: target.id.clone(),
        backup_id: None,
        passed: false,
        rto_seconds: None,
        rto_target_seconds: u64::from(target.rto_minutes) * 60,
        rpo_seconds: None,
        rpo_target_seconds: u64::from(target.rpo_minutes) * 60,
        checks: vec![],
    };
    let started = Instant::now();
    let manifest = match newest_backup(cx, target).await {
        Ok(manifest) => manifest,
        Err(error) => {
            result.checks.push(DrillCheck {
                name: "backup".into(),
                passed: false,
                detail: format!("{error:#}"),
            });
            return result;
        }
    };
    if let Err(error) = run(cx, target, &manifest, &mut result).await {
        result.checks.push(DrillCheck {
            name: "drill".into(),
            passed: false,
            detail: format!("{error:#}"),
        });
    }
    if restored(&result) {
        let rto_seconds = started.elapsed().as_secs_f64();
        result.rto_seconds = Some(rto_seconds);
        result.checks.push(DrillCheck {
            name: "rto".into(),
            passed: rto_seconds <= result.rto_target_seconds as f64,
            detail: format!(
                "{rto_seconds:.1} s measured, target {} s",
                result.rto_target_seconds
            ),
        });
    } else {
        not_restored(&mut result);
    }
    result.passed = result.checks.iter().all(|c| c.passed);
    result
}

/// Whether the drill got to a verified scratch copy: the backup passed
/// verification, the restore ran and its counts match the manifest.
fn restored(result: &DrillResult) -> bool {
    let failed = |name: &str| result.checks.iter().any(|c| c.name == name && !c.passed);
    let counted = result.checks.iter().any(|c| c.name == "counts" && c.passed);
    counted && !failed("checksums") && !failed("drill")
}

/// A drill that could not restore measured no recovery time, and the
/// backup's age is no recovery point: neither figure is shown, both
/// checks fail.
fn not_restored(result: &mut DrillResult) {
    result.rpo_seconds = None;
    for check in result.checks.iter_mut().filter(|c| c.name == "rpo") {
        check.passed = false;
        check.detail = "not measured: the backup could not be restored".into();
    }
    result.checks.push(DrillCheck {
        name: "rto".into(),
        passed: false,
        detail: "not measured: the backup could not be restored".into(),
    });
}

/// The newest backup of `target` that is not a safety backup.
async fn newest_backup(cx: &Context<'_>, target: &Target) -> Result<super::Manifest> {
    let (manifests, _) = cx.store.list().await?;
    match super::newest(&manifests, &target.id) {
        Some(manifest) => Ok(manifest.clone()),
        None => bail!(
            "no backup of {} in {}",
            target.id,
            super::store::BackupStore::describe(&cx.store)
        ),
    }
}

async fn run(
    cx: &Context<'_>,
    target: &Target,
    manifest: &super::Manifest,
    result: &mut DrillResult,
) -> Result<()> {
    result.backup_id = Some(manifest.id.clone());
    let rpo_seconds = super::age_seconds(&manifest.finished_at)?;
    result.rpo_seconds = Some(rpo_seconds);
    let future = super::dated_in_the_future(manifest, jiff::Timestamp::now().as_second());
    result.checks.push(DrillCheck {
        name: "rpo".into(),
        passed: future.is_none() && rpo_seconds.max(0) as u64 <= result.rpo_target_seconds,
        detail: match future {
            Some(why) => format!("newest {why}: not counted as meeting the RPO"),
            None => format!(
                "newest backup {} is {} s old, target {} s",
                manifest.id, rpo_seconds, result.rpo_target_seconds
            ),
        },
    });

    let scratch_dir = cx.scratch()?;
    let prepared =
        super::interrupt::race(super::prepare(cx, &manifest.id, scratch_dir.path())).await?;
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(error) => {
            result.checks.push(DrillCheck {
                name: "checksums".into(),
                passed: false,
                detail: format!("{error:#}"),
            });
            return Ok(());
        }
    };
    result.checks.push(DrillCheck {
        name: "checksums".into(),
        passed: true,
        detail: format!(
            "{} file(s) match the manifest",
            prepared.manifest.files.len()
        ),
    });

    let scratch = format!(
        "{}_drill_{}",
        target.name,
        jiff::Timestamp::now().strftime("%Y%m%dt%H%M%S")
    );
    match target.engine {
        EngineKind::Postgresql => {
            let login = connection::postgres_login(cx.env, target, cx.secrets.as_ref())?;
            let record = record_scratch(&cx.state_dir, target, &scratch)?;
            let outcome = super::interrupt::race(restore_and_check(
                &login, target, &prepared, &scratch, result,
            ))
            .await;
            postgres::drop_database(&login, &scratch).await?;
            forget_scratch(&record);
            outcome?
        }
        EngineKind::Mongodb => {
            let url = connection::mongo_url(target, cx.secrets.as_ref())?;
            let record = record_scratch(&cx.state_dir, target, &scratch)?;
            let restored =
                super::interrupt::race(mongo::restore_into(&url, &scratch, &prepared.plain)).await;
            let dropped = mongo::drop_database(&url, &scratch).await;
            if dropped.is_ok() {
                forget_scratch(&record);
            }
            push_counts(result, &prepared.manifest.counts, &restored??);
            dropped
        }
        EngineKind::Redis => {
            let snapshot = prepared
                .plain
                .get(super::redis::RDB_FILE)
                .context("the backup has no RDB snapshot")?;
            let counts =
                super::interrupt::race(super::redis::load_in_scratch_server(snapshot)).await??;
            push_counts(result, &prepared.manifest.counts, &counts);
            Ok(())
        }
    }
}

/// The scratch database of a running drill, recorded in
/// `<state-dir>/drills/scratch/` before it is created and forgotten once it
/// is dropped: a drill stopped by SIGKILL leaves the record, and the next
/// drill of that database (or `restore DB --cleanup`) drops what it names.
#[derive(Debug, Serialize, Deserialize)]
struct ScratchRecord {
    database: String,
    scratch: String,
    pid: u32,
}

fn scratch_records(state_dir: &std::path::Path) -> std::path::PathBuf {
    state_dir.join("drills").join("scratch")
}

fn record_scratch(
    state_dir: &std::path::Path,
    target: &Target,
    scratch: &str,
) -> Result<std::path::PathBuf> {
    let dir = scratch_records(state_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{scratch}.json"));
    let record = ScratchRecord {
        database: target.id.clone(),
        scratch: scratch.to_string(),
        pid: std::process::id(),
    };
    let partial = dir.join(format!(".{scratch}.json.tmp"));
    std::fs::write(&partial, serde_json::to_string_pretty(&record)?)
        .and_then(|_| std::fs::rename(&partial, &path))
        .with_context(|| {
            format!(
                "recording the drill's scratch database in {}",
                path.display()
            )
        })?;
    Ok(path)
}

fn forget_scratch(path: &std::path::Path) {
    let _ = std::fs::remove_file(path);
}

/// Drops the scratch databases of `target` recorded by drills whose
/// process is gone (stopped by SIGKILL, or a crash), and answers their
/// names with a line saying so for each. Records of a running drill stay.
pub async fn drop_stopped_scratch(
    cx: &Context<'_>,
    target: &Target,
) -> Result<Vec<(String, String)>> {
    let dir = scratch_records(&cx.state_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(vec![]);
    };
    let mut notes = Vec::new();
    for path in entries.flatten().map(|e| e.path()) {
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let record: ScratchRecord =
            serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
        if record.database != target.id || crate::local::supervisor::alive(record.pid) {
            continue;
        }
        match target.engine {
            EngineKind::Postgresql => {
                let login = connection::postgres_login(cx.env, target, cx.secrets.as_ref())?;
                postgres::drop_database(&login, &record.scratch).await?;
            }
            EngineKind::Mongodb => {
                let url = connection::mongo_url(target, cx.secrets.as_ref())?;
                mongo::drop_database(&url, &record.scratch).await?;
            }
            EngineKind::Redis => {}
        }
        forget_scratch(&path);
        let note = format!(
            "dropped the scratch database {} left by a stopped drill (pid {})",
            record.scratch, record.pid
        );
        notes.push((record.scratch, note));
    }
    notes.sort();
    Ok(notes)
}

fn push_counts(
    result: &mut DrillResult,
    expected: &BTreeMap<String, u64>,
    counts: &BTreeMap<String, u64>,
) {
    let mismatches = count_mismatches(expected, counts);
    result.checks.push(DrillCheck {
        name: "counts".into(),
        passed: mismatches.is_empty(),
        detail: if mismatches.is_empty() {
            format!(
                "{} table(s) or collection(s) match the manifest",
                counts.len()
            )
        } else {
            mismatches.join("; ")
        },
    });
}

async fn restore_and_check(
    login: &connection::PgLogin,
    target: &Target,
    prepared: &super::Prepared,
    scratch: &str,
    result: &mut DrillResult,
) -> Result<()> {
    let (facts, dump) = prepared.postgres_dump(&target.name)?;
    postgres::create_database(login, scratch, &facts).await?;
    postgres::restore_file(login, scratch, dump).await?;
    let counts = postgres::count_restored(login, scratch, &prepared.manifest.counts).await?;
    push_counts(result, &prepared.manifest.counts, &counts);
    for (_, schema, meaning, query) in SANITY.iter().filter(|s| s.0 == target.id) {
        let mut conn = postgres::connect(login, scratch).await?;
        // The administrator's login has no search_path of the service's.
        let set_path = format!("SET search_path TO {schema}, public");
        let found: Result<i64, _> = match sqlx::query(sqlx::AssertSqlSafe(set_path))
            .execute(&mut conn)
            .await
        {
            Ok(_) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(*query))
                    .fetch_one(&mut conn)
                    .await
            }
            Err(error) => Err(error),
        };
        let _ = sqlx::Connection::close(conn).await;
        let (passed, detail) = match found {
            Ok(n) if n >= 1 => (true, format!("{meaning}: {n}")),
            Ok(n) => (false, format!("{meaning}: found {n}")),
            Err(error) => (false, format!("{meaning}: {error}")),
        };
        result.checks.push(DrillCheck {
            name: "sanity".into(),
            passed,
            detail,
        });
    }
    Ok(())
}

/// The drill report in Markdown.
pub fn markdown(environment: &str, at: &str, results: &[DrillResult]) -> String {
    let passed = results.iter().all(|r| r.passed);
    let mut out = format!(
        "# Restore drill: {environment}\n\n{at}, {}\n\n| database | backup | RTO (s) | target | RPO (s) | target | result |\n|---|---|---|---|---|---|---|\n",
        if passed { "passed" } else { "FAILED" }
    );
    for r in results {
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.database,
            r.backup_id.as_deref().unwrap_or("none"),
            r.rto_seconds.map_or("-".into(), |s| format!("{s:.1}")),
            r.rto_target_seconds,
            r.rpo_seconds.map_or("-".into(), |s| s.to_string()),
            r.rpo_target_seconds,
            r.verdict()
        );
    }
    for r in results {
        out += &format!("\n## {}\n\n", r.database);
        for c in &r.checks {
            let status = if c.passed { "pass" } else { "FAIL" };
            out += &format!("- {status} {}: {}\n", c.name, c.detail.replace('\n', " "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_without_a_backup_fails_with_no_figures() {
        let result = DrillResult {
            database: "auth-db".into(),
            backup_id: None,
            passed: false,
            rto_seconds: None,
            rto_target_seconds: 900,
            rpo_seconds: None,
            rpo_target_seconds: 300,
            checks: vec![DrillCheck {
                name: "backup".into(),
                passed: false,
                detail: "no backup of auth-db in directory /b".into(),
            }],
        };
        let text = markdown("local", "2026-12-05T00:00:00Z", &[result]);
        assert!(
            text.contains("| auth-db | none | - | 900 | - | 300 | FAIL (no backup) |"),
            "{text}"
        );
        assert!(text.contains("FAILED"), "{text}");
        assert!(!text.contains("0.0"), "{text}");
    }

    #[test]
    fn every_difference_in_counts_is_named() {
        let expected = BTreeMap::from([("public.a".to_string(), 3), ("public.b".to_string(), 1)]);
        let found = BTreeMap::from([("public.a".to_string(), 2), ("public.c".to_string(), 0)]);
        let problems = count_mismatches(&expected, &found);
        assert_eq!(
            problems,
            [
                "public.a: 2 row(s), the manifest says 3",
                "public.b is missing",
                "public.c is not in the manifest"
            ]
        );
        assert!(count_mismatches(&expected, &expected).is_empty());
    }
}
