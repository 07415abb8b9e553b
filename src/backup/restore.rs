//! `restore`: replaces a live database with a backup without ever leaving
//! it unserved.
//!
//! The steps, each recorded in a journal file before it starts
//! (`<state-dir>/restores/<database>.json`):
//!
//! 1. fetch the backup and verify it (checksums, decryption, manifest);
//!    a corrupt backup stops here and nothing has changed;
//! 2. take a safety backup of the live database;
//! 3. restore into a new database `<name>_restore_<stamp>`;
//! 4. count its rows and compare them with the manifest;
//! 5. in one transaction, end the live database's sessions and rename it
//!    to `<name>_previous_<stamp>`, and the new one to `<name>`.
//!
//! Until step 5 commits, the live database is untouched; the transaction
//! makes step 5 all or nothing. A rerun after a crash or `SIGKILL` reads the
//! journal: an interrupted restore before the swap is abandoned (its new
//! database dropped), one whose swap committed is recorded as complete.
//! The previous database stays until `restore --cleanup`.
//!
//! MongoDB and Redis restores are not implemented yet (see docs/backups.md).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use super::connection::{self, PgLogin, Target};
use super::postgres::{self, DatabaseFacts};
use super::store::BackupStore;
use super::{Context, EngineKind, Manifest, Trigger};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Started,
    SafetyBackup,
    Created,
    Restored,
    Verified,
    Swapping,
    Swapped,
    Abandoned,
}

/// The journal of one restore.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    pub restore_id: String,
    pub environment: String,
    pub database: String,
    pub name: String,
    pub backup_id: String,
    pub pid: u32,
    pub scratch: String,
    pub previous: String,
    pub original_exists: bool,
    pub safety_backup: Option<String>,
    pub steps: Vec<(Step, String)>,
    #[serde(default)]
    pub error: Option<String>,
}

impl Journal {
    pub fn last(&self) -> Step {
        self.steps.last().map(|s| s.0).unwrap_or(Step::Started)
    }
}

/// What a restore will do; `--dry-run` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub environment: String,
    pub database: String,
    pub name: String,
    pub backup: Manifest,
    pub original_exists: bool,
    pub scratch: String,
    pub previous: String,
    pub steps: Vec<String>,
}

/// What a completed restore did.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub restore_id: String,
    pub database: String,
    pub backup_id: String,
    pub safety_backup: Option<String>,
    pub previous: Option<String>,
    /// Seconds spent restoring into the new database and verifying it.
    pub restore_seconds: f64,
    pub safety_backup_seconds: f64,
    /// What was found of an earlier interrupted restore.
    pub recovered: Option<String>,
}

fn journal_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("restores")
}

fn journal_path(state_dir: &Path, database: &str) -> PathBuf {
    journal_dir(state_dir).join(format!("{database}.json"))
}

fn write_journal(state_dir: &Path, journal: &Journal) -> Result<()> {
    let dir = journal_dir(state_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = journal_path(state_dir, &journal.database);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(journal)?;
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    let file = std::fs::File::open(&tmp)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

fn record(state_dir: &Path, journal: &mut Journal, step: Step) -> Result<()> {
    journal.steps.push((step, super::now_rfc3339()));
    write_journal(state_dir, journal)
}

/// Moves a finished journal to `restores/history/<restore-id>.json`.
fn archive(state_dir: &Path, journal: &Journal) -> Result<()> {
    let history = journal_dir(state_dir).join("history");
    std::fs::create_dir_all(&history)?;
    let from = journal_path(state_dir, &journal.database);
    std::fs::rename(&from, history.join(format!("{}.json", journal.restore_id)))
        .with_context(|| format!("archiving {}", from.display()))
}

pub fn read_journal(state_dir: &Path, database: &str) -> Result<Option<Journal>> {
    let path = journal_path(state_dir, database);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(
            serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn running_elsewhere(journal: &Journal) -> bool {
    journal.pid != std::process::id() && Path::new(&format!("/proc/{}", journal.pid)).exists()
}

fn stamp() -> String {
    jiff::Timestamp::now().strftime("%Y%m%dt%H%M%S").to_string()
}

fn login(cx: &Context<'_>, target: &Target) -> Result<PgLogin> {
    if target.engine != EngineKind::Postgresql {
        bail!(
            "restoring a {:?} database is not implemented yet: only PostgreSQL restores are \
             (see docs/backups.md)",
            target.engine
        );
    }
    connection::postgres_login(cx.env, target, cx.secrets.as_ref())
}

/// Plans the restore of `target` from backup `backup_id`, or from its
/// newest backup (safety backups excluded).
pub async fn plan(cx: &Context<'_>, target: &Target, backup_id: Option<&str>) -> Result<Plan> {
    let login = login(cx, target)?;
    let backup = match backup_id {
        Some(id) => cx.store.manifest(id).await?,
        None => {
            let (manifests, _) = cx.store.list().await?;
            match super::newest(&manifests, &target.id) {
                Some(manifest) => manifest.clone(),
                None => bail!("{} has no backup in {}", target.id, cx.store.describe()),
            }
        }
    };
    if backup.database != target.id || backup.environment != cx.env.name {
        bail!(
            "backup {} is of {} in {}, not of {} in {}",
            backup.id,
            backup.database,
            backup.environment,
            target.id,
            cx.env.name
        );
    }
    let original_exists = postgres::database_exists(&login, &target.name).await?;
    let stamp = stamp();
    let scratch = format!("{}_restore_{stamp}", target.name);
    let previous = format!("{}_previous_{stamp}", target.name);
    let mut steps = vec![format!(
        "verify backup {} ({} file(s), {} bytes): checksums, decryption, manifest",
        backup.id,
        backup.files.len(),
        backup.total_size()
    )];
    if original_exists {
        steps.push(format!(
            "take a safety backup of {} into {}",
            target.name,
            cx.store.describe()
        ));
    }
    steps.push(format!("restore into a new database {scratch}"));
    steps.push(format!(
        "verify the row counts of {} table(s) against the manifest",
        backup.counts.len()
    ));
    if original_exists {
        steps.push(format!(
            "end the sessions of {name}, rename it to {previous} and {scratch} to {name}, in one transaction",
            name = target.name
        ));
        steps.push(format!(
            "keep {previous} until `kisumctl restore --cleanup`"
        ));
    } else {
        steps.push(format!(
            "rename {scratch} to {} ({} does not exist)",
            target.name, target.name
        ));
    }
    Ok(Plan {
        environment: cx.env.name.to_string(),
        database: target.id.clone(),
        name: target.name.clone(),
        backup,
        original_exists,
        scratch,
        previous,
        steps,
    })
}

/// Settles what an interrupted restore of `target` left behind; answers a
/// description when there was one. Refuses while another process runs one.
pub async fn recover(cx: &Context<'_>, target: &Target) -> Result<Option<String>> {
    let Some(mut journal) = read_journal(&cx.state_dir, &target.id)? else {
        return Ok(None);
    };
    if running_elsewhere(&journal) {
        bail!(
            "a restore of {} is running (pid {}, restore {})",
            target.id,
            journal.pid,
            journal.restore_id
        );
    }
    let login = login(cx, target)?;
    let last = journal.last();
    let swapped = match last {
        Step::Swapped => true,
        Step::Swapping => {
            // The rename transaction either committed or did not: the new
            // database's name tells which.
            let scratch_left = postgres::database_exists(&login, &journal.scratch).await?;
            !scratch_left
        }
        _ => false,
    };
    let description = if swapped {
        record(&cx.state_dir, &mut journal, Step::Swapped)?;
        format!(
            "restore {} of {} had swapped in backup {} before it stopped; recorded as complete",
            journal.restore_id, journal.database, journal.backup_id
        )
    } else {
        postgres::drop_database(&login, &journal.scratch).await?;
        journal.error = Some(format!("interrupted at step {last:?}"));
        record(&cx.state_dir, &mut journal, Step::Abandoned)?;
        format!(
            "restore {} of {} stopped at step {last:?} before the swap; {} was left serving and \
             the unfinished {} was dropped",
            journal.restore_id, journal.database, journal.name, journal.scratch
        )
    };
    archive(&cx.state_dir, &journal)?;
    Ok(Some(description))
}

/// Runs a planned restore. `progress` receives one line per step.
pub async fn run(
    cx: &Context<'_>,
    target: &Target,
    plan: &Plan,
    progress: &mut dyn FnMut(&str),
) -> Result<Outcome> {
    let recovered = recover(cx, target).await?;
    if let Some(note) = &recovered {
        progress(note);
    }
    let login = login(cx, target)?;

    progress(&format!("verifying backup {}", plan.backup.id));
    let scratch_dir = cx.scratch()?;
    let prepared = super::prepare(cx, &plan.backup.id, scratch_dir.path()).await?;
    let facts: DatabaseFacts =
        serde_json::from_value(prepared.manifest.details.clone()).unwrap_or_default();
    let dump = prepared
        .plain
        .get(&postgres::dump_file_name(&target.name))
        .cloned()
        .context("the backup has no dump of this database")?;

    let mut journal = Journal {
        restore_id: format!("{}-{}", target.id, stamp()),
        environment: cx.env.name.to_string(),
        database: target.id.clone(),
        name: target.name.clone(),
        backup_id: plan.backup.id.clone(),
        pid: std::process::id(),
        scratch: plan.scratch.clone(),
        previous: plan.previous.clone(),
        original_exists: plan.original_exists,
        safety_backup: None,
        steps: vec![],
        error: None,
    };
    record(&cx.state_dir, &mut journal, Step::Started)?;

    let result = steps(cx, target, &login, &dump, &facts, &mut journal, progress).await;
    match result {
        Ok((restore_seconds, safety_backup_seconds)) => {
            archive(&cx.state_dir, &journal)?;
            Ok(Outcome {
                restore_id: journal.restore_id.clone(),
                database: target.id.clone(),
                backup_id: plan.backup.id.clone(),
                safety_backup: journal.safety_backup.clone(),
                previous: plan.original_exists.then(|| plan.previous.clone()),
                restore_seconds,
                safety_backup_seconds,
                recovered,
            })
        }
        Err(error) => {
            // Before the swap the live database was never touched; drop
            // what was built and close the journal.
            if journal.last() != Step::Swapped {
                let _ = postgres::drop_database(&login, &journal.scratch).await;
                journal.error = Some(format!("{error:#}"));
                let _ = record(&cx.state_dir, &mut journal, Step::Abandoned);
                let _ = archive(&cx.state_dir, &journal);
            }
            Err(error)
        }
    }
}

async fn steps(
    cx: &Context<'_>,
    target: &Target,
    login: &PgLogin,
    dump: &Path,
    facts: &DatabaseFacts,
    journal: &mut Journal,
    progress: &mut dyn FnMut(&str),
) -> Result<(f64, f64)> {
    let mut safety_seconds = 0.0;
    if journal.original_exists {
        progress(&format!("safety backup of {}", target.name));
        let started = std::time::Instant::now();
        let safety = super::backup(cx, target, Trigger::Safety).await?;
        safety_seconds = started.elapsed().as_secs_f64();
        journal.safety_backup = Some(safety.id);
        record(&cx.state_dir, journal, Step::SafetyBackup)?;
    }

    let started = std::time::Instant::now();
    let expected = read_counts(cx, &journal.backup_id).await?;
    progress(&format!("restoring into {}", journal.scratch));
    postgres::drop_database(login, &journal.scratch).await?;
    postgres::create_database(login, &journal.scratch, facts).await?;
    record(&cx.state_dir, journal, Step::Created)?;
    postgres::restore_file(login, &journal.scratch, dump).await?;
    record(&cx.state_dir, journal, Step::Restored)?;

    progress(&format!("verifying the row counts of {}", journal.scratch));
    let counts = postgres::count_database(login, &journal.scratch).await?;
    let mismatches = super::drill::count_mismatches(&expected, &counts);
    if !mismatches.is_empty() {
        bail!(
            "the restored database does not match the manifest: {}",
            mismatches.join("; ")
        );
    }
    record(&cx.state_dir, journal, Step::Verified)?;
    let restore_seconds = started.elapsed().as_secs_f64();

    progress(&format!(
        "swapping {} in as {}",
        journal.scratch, journal.name
    ));
    record(&cx.state_dir, journal, Step::Swapping)?;
    postgres::swap(login, &journal.name, &journal.scratch, &journal.previous).await?;
    record(&cx.state_dir, journal, Step::Swapped)?;
    Ok((restore_seconds, safety_seconds))
}

async fn read_counts(
    cx: &Context<'_>,
    id: &str,
) -> Result<std::collections::BTreeMap<String, u64>> {
    Ok(cx.store.manifest(id).await?.counts)
}

/// Drops the previous databases kept by earlier restores of `target`, and
/// any new database an abandoned restore left. Answers the dropped names.
pub async fn cleanup(cx: &Context<'_>, target: &Target) -> Result<Vec<String>> {
    if let Some(journal) = read_journal(&cx.state_dir, &target.id)?
        && running_elsewhere(&journal)
    {
        bail!(
            "a restore of {} is running (pid {})",
            target.id,
            journal.pid
        );
    }
    recover(cx, target).await?;
    let login = login(cx, target)?;
    let mut dropped = Vec::new();
    for kind in ["_previous_", "_restore_"] {
        for name in
            postgres::databases_with_prefix(&login, &format!("{}{kind}", target.name)).await?
        {
            postgres::drop_database(&login, &name).await?;
            dropped.push(name);
        }
    }
    Ok(dropped)
}
