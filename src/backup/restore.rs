//! `restore`: replaces a live database with a backup without ever leaving
//! it unserved.
//!
//! The steps, each recorded in a journal file
//! (`<state-dir>/restores/<database>.json`) as it starts (`under_way`) and
//! once it is done (`steps`):
//!
//! 1. fetch the backup and verify it (checksums, decryption, manifest);
//!    a corrupt backup stops here and nothing has changed;
//! 2. take a safety backup of the live data;
//! 3. restore into a new place beside it;
//! 4. count what is there and compare it with the manifest;
//! 5. swap it in, in one atomic step, keeping the previous data.
//!
//! What "a new place" and "swap" are depends on the engine:
//!
//! | engine | restored into | swap (atomic) | previous kept as |
//! |---|---|---|---|
//! | PostgreSQL | database `<name>_restore_<time>` | one transaction: end the live database's sessions, rename it to `<name>_previous_<time>`, rename the new one to `<name>` | `<name>_previous_<time>` |
//! | MongoDB (no database rename) | database `<name>_restored_<time>` | rewrite the `url` of the database's credentials secret to name it (one atomic file replace), then restart the owning service so it reconnects | the database that served until then |
//! | Redis | empty database indexes of the same server | `SWAPDB live staging`, for every client at once | the staging index, now holding the old keys |
//!
//! Until step 5 the live data is untouched, and step 5 is all or nothing.
//! A rerun after a crash or `SIGKILL` reads the journal: a restore
//! interrupted before the swap is abandoned (what it built is dropped), one
//! whose swap happened is recorded as complete; a safety backup it was
//! writing (staged where the journal says) is removed. The previous data
//! stays until `restore --cleanup`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use super::connection::{self, PgLogin, Target};
use super::interrupt::race;
use super::postgres;
use super::store::BackupStore;
use super::{Context, EngineKind, Manifest, Trigger, mongo, redis};
use crate::secrets::Secret;

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
    /// The live database (Redis: the live index, `0`).
    pub name: String,
    pub backup_id: String,
    pub pid: u32,
    /// Where the backup is restored (Redis: the staging indexes).
    pub scratch: String,
    /// What the live data is called after the swap.
    pub previous: String,
    pub original_exists: bool,
    pub safety_backup: Option<String>,
    pub steps: Vec<(Step, String)>,
    #[serde(default)]
    pub error: Option<String>,
    /// Redis: (live index, staging index) per database of the snapshot.
    #[serde(default)]
    pub redis_pairs: Vec<(u32, u32)>,
    /// Set by `--cleanup` once what the restore kept is gone.
    #[serde(default)]
    pub cleaned: bool,
    /// Redis: the scratch `redis-server` (pid, directory) while it runs,
    /// so that the recovery after a SIGKILL stops it and removes its copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch_server: Option<(u32, PathBuf)>,
    /// Where the safety backup is staged while it is written (a directory
    /// store's `.partial/<id>`), so that the recovery after a SIGKILL
    /// removes it; cleared once the backup is committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_staging: Option<PathBuf>,
    /// The step being worked on (named by what it completes), written as
    /// it starts and cleared once it is recorded in `steps`: a restore
    /// killed midway is reported at the step it was in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub under_way: Option<Step>,
}

impl Journal {
    pub fn last(&self) -> Step {
        self.steps.last().map(|s| s.0).unwrap_or(Step::Started)
    }

    /// Where a restore that stopped here had got to, for people: the step
    /// under way when there was one ("during the safety backup"), else
    /// the last one finished.
    pub fn stopped_at(&self, engine: EngineKind) -> &'static str {
        let redis = engine == EngineKind::Redis;
        match self.under_way {
            Some(Step::SafetyBackup) => "during the safety backup",
            Some(Step::Created) if redis => {
                "while loading the snapshot into a scratch redis-server"
            }
            Some(Step::Created) => "while creating the restored database",
            Some(Step::Restored) => "while restoring the backup",
            Some(Step::Verified) => "while checking the restored data",
            _ => self.last().stopped_after(engine),
        }
    }
}

impl Step {
    /// Where a restore that stopped after this step had got to, for
    /// people: "after creating the restored database", ...
    pub fn stopped_after(self, engine: EngineKind) -> &'static str {
        let redis = engine == EngineKind::Redis;
        match self {
            Step::Started => "while verifying the backup",
            Step::SafetyBackup => "after the safety backup",
            Step::Created if redis => "after choosing the staging indexes",
            Step::Created => "after creating the restored database",
            Step::Restored => "after restoring the backup, before checking it",
            Step::Verified => "after checking the restored data",
            Step::Swapping => "while swapping the restored data in",
            Step::Swapped => "after the swap",
            Step::Abandoned => "after it was abandoned",
        }
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
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redis_pairs: Vec<(u32, u32)>,
    pub steps: Vec<String>,
    /// The time in the restore id and in the new database's name.
    #[serde(skip)]
    pub stamp: String,
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
    /// MongoDB: how the service was moved to the restored database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repointed: Option<String>,
}

fn journal_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("restores")
}

fn journal_path(state_dir: &Path, database: &str) -> PathBuf {
    journal_dir(state_dir).join(format!("{database}.json"))
}

fn write_json_atomic(path: &Path, journal: &Journal) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(journal)?;
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    let file = std::fs::File::open(&tmp)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn write_journal(state_dir: &Path, journal: &Journal) -> Result<()> {
    let dir = journal_dir(state_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    write_json_atomic(&journal_path(state_dir, &journal.database), journal)
}

/// Records that `step` is done.
fn record(state_dir: &Path, journal: &mut Journal, step: Step) -> Result<()> {
    journal.steps.push((step, super::now_rfc3339()));
    journal.under_way = None;
    write_journal(state_dir, journal)
}

/// Records that the work towards `step` starts.
fn begin(state_dir: &Path, journal: &mut Journal, step: Step) -> Result<()> {
    journal.under_way = Some(step);
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

/// The finished journals of `database`, oldest first, with their paths.
fn history(state_dir: &Path, database: &str) -> Result<Vec<(PathBuf, Journal)>> {
    let dir = journal_dir(state_dir).join("history");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut journals = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let journal: Journal =
            serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
        if journal.database == database {
            journals.push((path, journal));
        }
    }
    journals.sort_by(|a, b| a.1.restore_id.cmp(&b.1.restore_id));
    Ok(journals)
}

fn stamp() -> String {
    jiff::Timestamp::now().strftime("%Y%m%dt%H%M%S").to_string()
}

fn pg_login(cx: &Context<'_>, target: &Target) -> Result<PgLogin> {
    connection::postgres_login(cx.env, target, cx.secrets.as_ref())
}

/// The Redis server of the environment, as backups reach it.
fn redis_password(cx: &Context<'_>) -> Result<Option<Secret>> {
    connection::redis_password(cx.secrets.as_ref())
}

fn redis_server<'a>(target: &'a Target, password: Option<&'a Secret>) -> redis::Server<'a> {
    redis::Server {
        host: &target.host,
        port: target.port,
        password,
    }
}

/// Plans the restore of `target` from backup `backup_id`, or from its
/// newest backup (safety backups excluded).
/// A restore asked for something that is not there (no such backup, a
/// backup of another database, a pure-cache Redis): bad input, exit 2;
/// other errors of the plan (an unreachable store or server) are failed
/// operations.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WrongInput(pub String);

pub async fn plan(cx: &Context<'_>, target: &Target, backup_id: Option<&str>) -> Result<Plan> {
    if target.engine == EngineKind::Redis && !target.persistent {
        return Err(WrongInput(
            "Redis is a pure cache in the matrix (redis.persistence: none): there is nothing to \
             restore; it refills from the databases (section 22.2)"
                .into(),
        )
        .into());
    }
    let backup = match backup_id {
        Some(id) => match cx.store.manifest(id).await {
            Ok(manifest) => manifest,
            Err(error) => {
                // Told apart by the listing: a store that cannot be read
                // fails it too, and that is no wrong id.
                let (manifests, _) = cx.store.list().await?;
                if manifests.iter().any(|m| m.id == id) {
                    return Err(error);
                }
                let message = format!("no backup {id} in {}", cx.store.describe());
                return Err(WrongInput(message).into());
            }
        },
        None => {
            let (manifests, _) = cx.store.list().await?;
            match super::newest(&manifests, &target.id) {
                Some(manifest) => manifest.clone(),
                None => {
                    let message = format!("{} has no backup in {}", target.id, cx.store.describe());
                    return Err(WrongInput(message).into());
                }
            }
        }
    };
    if backup.database != target.id || backup.environment != cx.env.name {
        return Err(WrongInput(format!(
            "backup {} is of {} in {}, not of {} in {}",
            backup.id, backup.database, backup.environment, target.id, cx.env.name
        ))
        .into());
    }
    let stamp = stamp();
    let mut plan = Plan {
        environment: cx.env.name.to_string(),
        database: target.id.clone(),
        name: target.name.clone(),
        original_exists: true,
        scratch: String::new(),
        previous: String::new(),
        redis_pairs: Vec::new(),
        stamp: stamp.clone(),
        steps: vec![format!(
            "verify backup {} ({} file(s), {} bytes): checksums, decryption, manifest",
            backup.id,
            backup.files.len(),
            backup.total_size()
        )],
        backup,
    };
    match target.engine {
        EngineKind::Postgresql => plan_postgres(cx, target, &stamp, &mut plan).await?,
        EngineKind::Mongodb => plan_mongo(cx, target, &stamp, &mut plan).await?,
        EngineKind::Redis => plan_redis(cx, target, &mut plan).await?,
    }
    Ok(plan)
}

fn safety_step(cx: &Context<'_>, plan: &mut Plan) {
    if plan.original_exists {
        plan.steps.push(format!(
            "take a safety backup of {} into {}",
            plan.name,
            cx.store.describe()
        ));
    }
}

async fn plan_postgres(
    cx: &Context<'_>,
    target: &Target,
    stamp: &str,
    plan: &mut Plan,
) -> Result<()> {
    let login = pg_login(cx, target)?;
    plan.original_exists = postgres::database_exists(&login, &target.name).await?;
    plan.scratch = format!("{}_restore_{stamp}", target.name);
    plan.previous = format!("{}_previous_{stamp}", target.name);
    safety_step(cx, plan);
    let (name, scratch, previous) = (&plan.name, &plan.scratch, &plan.previous);
    let mut steps = vec![
        format!("restore into a new database {scratch}"),
        format!(
            "verify the row counts of {} table(s) against the manifest",
            plan.backup.counts.len()
        ),
    ];
    if plan.original_exists {
        steps.push(format!(
            "end the sessions of {name}, rename it to {previous} and {scratch} to {name}, in one transaction"
        ));
        steps.push(format!(
            "keep {previous} until `kisumctl restore --cleanup`"
        ));
    } else {
        steps.push(format!(
            "rename {scratch} to {name} ({name} does not exist)"
        ));
    }
    plan.steps.extend(steps);
    Ok(())
}

async fn plan_mongo(cx: &Context<'_>, target: &Target, stamp: &str, plan: &mut Plan) -> Result<()> {
    let secret = target
        .credentials
        .as_deref()
        .context("the database has no credentials secret to repoint")?;
    cx.secrets.read(secret, "url")?.with_context(|| {
        format!(
            "secret `{secret}` has no `url`: the service's connection cannot be repointed (run \
             `kisumctl db provision` first)"
        )
    })?;
    let login = mongo_login(cx, target)?;
    let url = connection::mongo_url(target, cx.secrets.as_ref())?;
    let live = connection::mongo_database(target, cx.secrets.as_ref())?;
    let client = mongo::client(&url).await?;
    plan.original_exists = !client
        .database(&live)
        .list_collection_names()
        .await
        .context("listing the live collections")?
        .is_empty();
    plan.name = live.clone();
    plan.scratch = format!("{}_restored_{stamp}", target.name);
    plan.previous = live.clone();
    safety_step(cx, plan);
    let owner = &cx.env.base.databases[&target.id].owner;
    plan.steps.extend([
        format!(
            "restore every collection and its indexes into a new database {}",
            plan.scratch
        ),
        format!(
            "verify the document counts of {} collection(s) against the manifest",
            plan.backup.counts.len()
        ),
    ]);
    if let Some(login) = &login {
        plan.steps.push(format!(
            "let user {} use {}: createRole {} there (its actions on that database only), \
             grantRolesToUser in {}",
            login.user, plan.scratch, login.role, login.user_db
        ));
    }
    plan.steps.extend([
        format!(
            "point the service at {}: rewrite `url` of secret {secret} (one atomic replace), then \
             restart {owner} where kisumctl runs it",
            plan.scratch
        ),
        format!("keep {live} until `kisumctl restore --cleanup`"),
    ]);
    Ok(())
}

async fn plan_redis(cx: &Context<'_>, target: &Target, plan: &mut Plan) -> Result<()> {
    let password = redis_password(cx)?;
    let server = redis_server(target, password.as_ref());
    let mut sources: Vec<u32> = plan
        .backup
        .counts
        .keys()
        .filter_map(|db| db.strip_prefix("db")?.parse().ok())
        .collect();
    if sources.is_empty() {
        sources.push(0);
    }
    let staging = server.free_indexes(sources.len(), &sources).await?;
    plan.redis_pairs = sources.iter().copied().zip(staging).collect();
    let list = |f: fn(&(u32, u32)) -> u32| {
        plan.redis_pairs
            .iter()
            .map(|p| f(p).to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    plan.name = list(|p| p.0);
    plan.scratch = list(|p| p.1);
    plan.previous = plan.scratch.clone();
    safety_step(cx, plan);
    plan.steps.extend([
        format!(
            "load the snapshot into a scratch redis-server, copy its keys into the empty \
             database index(es) {} of {}:{}",
            plan.scratch, target.host, target.port
        ),
        format!(
            "verify the key counts of {} database(s) against the manifest",
            plan.redis_pairs.len()
        ),
        format!(
            "SWAPDB {} (atomic for every client)",
            plan.redis_pairs
                .iter()
                .map(|(a, b)| format!("{a} {b}"))
                .collect::<Vec<_>>()
                .join(", then ")
        ),
        format!(
            "keep the previous keys in database index(es) {} until `kisumctl restore --cleanup`",
            plan.scratch
        ),
    ]);
    Ok(())
}

/// The key that tells, after a crash between `SWAPDB` and the journal,
/// which side of the swap the restored keys are on.
fn marker(journal: &Journal) -> String {
    format!("kisumctl:restore:{}", journal.restore_id)
}

/// The service's MongoDB login, on a server with user management.
struct MongoLogin {
    user: String,
    role: String,
    /// The database the user is defined in (`authSource`).
    user_db: String,
}

/// The service's login when its credentials URL carries one; `None` on a
/// server without access control (the local emulator).
fn mongo_login(cx: &Context<'_>, target: &Target) -> Result<Option<MongoLogin>> {
    let Some(secret) = &target.credentials else {
        return Ok(None);
    };
    let Some(url) = cx.secrets.read(secret, "url")? else {
        return Ok(None);
    };
    if !connection::has_login(url.expose()) {
        return Ok(None);
    }
    let owner = &cx.env.base.databases[&target.id].owner;
    let (user, role) = crate::db::provision::mongo_names(owner);
    let user_db =
        connection::url_option(url.expose(), "authSource").unwrap_or_else(|| target.name.clone());
    Ok(Some(MongoLogin {
        user,
        role,
        user_db,
    }))
}

/// Before the repoint: the service's user gets the role of the restored
/// database (nothing to do without user management).
async fn follow(cx: &Context<'_>, target: &Target, to: &str) -> Result<()> {
    let Some(login) = mongo_login(cx, target)? else {
        return Ok(());
    };
    use crate::db::provision;
    let admin = connection::mongo_url(target, cx.secrets.as_ref())?;
    let exists = provision::role_exists(&admin, to, &login.role).await?;
    let commands = provision::follow_commands(&login.user, &login.role, &login.user_db, to, exists);
    provision::run_user_commands(&admin, &commands)
        .await
        .with_context(|| format!("granting {} the use of {to}", login.user))
}

/// Before database `from` is dropped: the user's role on it goes.
async fn release(cx: &Context<'_>, target: &Target, from: &str) -> Result<()> {
    let Some(login) = mongo_login(cx, target)? else {
        return Ok(());
    };
    use crate::db::provision;
    let admin = connection::mongo_url(target, cx.secrets.as_ref())?;
    if !provision::role_exists(&admin, from, &login.role).await? {
        return Ok(());
    }
    let commands = provision::release_commands(&login.user, &login.role, &login.user_db, from);
    provision::run_user_commands(&admin, &commands)
        .await
        .with_context(|| format!("revoking {}'s use of {from}", login.user))
}

/// Whether the swap of an interrupted restore happened.
async fn swap_happened(cx: &Context<'_>, target: &Target, journal: &Journal) -> Result<bool> {
    match target.engine {
        // The rename transaction committed or not: the new database's name tells.
        EngineKind::Postgresql => {
            let login = pg_login(cx, target)?;
            Ok(!postgres::database_exists(&login, &journal.scratch).await?)
        }
        EngineKind::Mongodb => {
            Ok(connection::mongo_database(target, cx.secrets.as_ref())? == journal.scratch)
        }
        EngineKind::Redis => {
            let password = redis_password(cx)?;
            let server = redis_server(target, password.as_ref());
            let marker = marker(journal);
            for (live, _) in &journal.redis_pairs {
                if server.exists(*live, &marker).await? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
    }
}

/// Drops what an unfinished restore built; the live data is never touched.
/// What became of a restore's new place when it was abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scratch {
    /// It was never made: nothing to drop, nothing to mention.
    NeverMade,
    Dropped,
    /// It is still there (MongoDB: a write of a killed restore recreated
    /// it); `--cleanup` tries again.
    LeftOver,
}

/// Drops the new place of an abandoned restore, checking first whether it
/// exists (and, for MongoDB, that it is gone afterwards).
async fn drop_scratch(cx: &Context<'_>, target: &Target, journal: &Journal) -> Result<Scratch> {
    match target.engine {
        EngineKind::Postgresql => {
            let login = pg_login(cx, target)?;
            if !postgres::database_exists(&login, &journal.scratch).await? {
                return Ok(Scratch::NeverMade);
            }
            postgres::drop_database(&login, &journal.scratch).await?;
            Ok(Scratch::Dropped)
        }
        EngineKind::Mongodb => {
            if journal.scratch == connection::mongo_database(target, cx.secrets.as_ref())? {
                return Ok(Scratch::NeverMade);
            }
            let url = connection::mongo_url(target, cx.secrets.as_ref())?;
            let client = mongo::client(&url).await?;
            if !mongo::database_exists(&client, &journal.scratch).await? {
                return Ok(Scratch::NeverMade);
            }
            release(cx, target, &journal.scratch).await?;
            let gone =
                mongo::drop_database_verified(&url, &journal.scratch, mongo::DROP_PATIENCE).await?;
            Ok(if gone {
                Scratch::Dropped
            } else {
                Scratch::LeftOver
            })
        }
        EngineKind::Redis => {
            if !journal.steps.iter().any(|(step, _)| *step == Step::Created) {
                return Ok(Scratch::NeverMade);
            }
            let password = redis_password(cx)?;
            let server = redis_server(target, password.as_ref());
            for (_, staging) in &journal.redis_pairs {
                server.flush(*staging).await?;
            }
            Ok(Scratch::Dropped)
        }
    }
}

/// Stops the scratch `redis-server` a killed restore left running (only
/// when the pid is still a redis-server working in that directory) and
/// removes its directory.
fn stop_scratch_server(journal: &Journal) {
    let Some((pid, dir)) = &journal.scratch_server else {
        return;
    };
    // redis-server rewrites its command line, but works in its --dir.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
    let ours = comm.trim() == "redis-server" && cwd.as_deref() == Some(dir.as_path());
    if ours
        && let Ok(raw) = i32::try_from(*pid)
        && let Some(pid) = rustix::process::Pid::from_raw(raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Settles what an interrupted restore of `target` left behind; answers a
/// description when there was one. Refuses while another process runs one.
pub async fn recover(cx: &Context<'_>, target: &Target) -> Result<Option<String>> {
    let Some(mut journal) = read_journal(&cx.state_dir, &target.id)? else {
        return Ok(None);
    };
    stop_scratch_server(&journal);
    let staging_note = remove_safety_staging(&mut journal);
    let mut reopened = reopen_postgres(cx, target, &journal).await?;
    let last = journal.last();
    let swapped = match last {
        Step::Swapped => true,
        Step::Swapping => swap_happened(cx, target, &journal).await?,
        _ => false,
    };
    let description = if swapped {
        if target.engine == EngineKind::Redis {
            remove_markers(cx, target, &journal).await?;
        }
        record(&cx.state_dir, &mut journal, Step::Swapped)?;
        format!(
            "restore {} of {} had swapped in backup {} before it stopped; recorded as complete",
            journal.restore_id, journal.database, journal.backup_id
        )
    } else {
        let scratch = drop_scratch(cx, target, &journal).await?;
        let stopped = journal.stopped_at(target.engine);
        journal.error = Some(format!("interrupted {stopped}"));
        journal.cleaned = scratch != Scratch::LeftOver;
        record(&cx.state_dir, &mut journal, Step::Abandoned)?;
        let label = scratch_label(target, &journal);
        let built = match scratch {
            Scratch::NeverMade => String::new(),
            Scratch::Dropped => format!("; the unfinished {label} was dropped"),
            Scratch::LeftOver => format!(
                "; the unfinished {label} is left over (it came back after each drop: a write \
                 of the stopped restore is still running); run `kisumctl restore {} {} \
                 --cleanup` once it has finished",
                journal.environment, journal.database
            ),
        };
        // A swap killed after closing the live database to new
        // connections: it refused them until now.
        let live = match reopened.iter().position(|name| *name == journal.name) {
            Some(at) => refused_note(&reopened.remove(at)),
            None => live_note(&journal),
        };
        format!(
            "restore {} of {} stopped {stopped}, before the swap; {live}{built}",
            journal.restore_id, journal.database,
        )
    };
    archive(&cx.state_dir, &journal)?;
    let reopened = (!reopened.is_empty()).then(|| {
        format!(
            "{} accept{} connections again",
            reopened.join(" and "),
            if reopened.len() == 1 { "s" } else { "" }
        )
    });
    let notes = (staging_note.into_iter())
        .chain(safety_note(cx, &journal))
        .chain(reopened);
    Ok(Some(
        notes.fold(description, |text, note| format!("{text}; {note}")),
    ))
}

/// A live database that refused new connections (a swap stopped after
/// closing it) and was opened again.
fn refused_note(name: &str) -> String {
    format!("{name} was refusing new connections; allowed again, its data unchanged")
}

/// PostgreSQL: a restore killed during its swap may leave the live (or
/// the previous) database refusing connections; they are allowed again.
/// Answers the databases that were refusing them.
async fn reopen_postgres(
    cx: &Context<'_>,
    target: &Target,
    journal: &Journal,
) -> Result<Vec<String>> {
    if target.engine != EngineKind::Postgresql {
        return Ok(Vec::new());
    }
    let login = pg_login(cx, target)?;
    let names = [journal.name.as_str(), journal.previous.as_str()];
    postgres::allow_connections(&login, &names).await
}

/// Removes the staging directory of a safety backup the interrupted
/// restore was writing (only the one its journal names), and the store's
/// `.partial/` when that leaves it empty. Answers what was removed.
fn remove_safety_staging(journal: &mut Journal) -> Option<String> {
    let staging = journal.safety_staging.take()?;
    if !staging.exists() {
        return None;
    }
    if std::fs::remove_dir_all(&staging).is_err() {
        return Some(format!(
            "the unfinished safety backup {} could not be removed",
            staging.display()
        ));
    }
    if let Some(parent) = staging.parent()
        && parent.file_name().is_some_and(|name| name == ".partial")
    {
        let _ = std::fs::remove_dir(parent);
    }
    Some(format!(
        "removed the unfinished safety backup {}",
        staging.display()
    ))
}

/// Another restore (or `--cleanup`) of the same database holds its lock;
/// nothing was changed.
#[derive(Debug, thiserror::Error)]
#[error(
    "another restore of {database} is running ({}pid {}); nothing was changed; try again when \
     it has finished",
    restore_id.as_ref().map(|id| format!("restore {id}, ")).unwrap_or_default(),
    pid.map_or("unknown".to_string(), |pid| pid.to_string())
)]
pub struct Busy {
    pub database: String,
    pub restore_id: Option<String>,
    pub pid: Option<u32>,
}

/// Takes `restores/<database>.lock` (an flock the kernel releases however
/// its holder ends) without waiting: one restore or `--cleanup` of a
/// database at a time. A busy lock is [`Busy`], naming the holder's pid
/// and, from its journal, its restore id.
fn lock_database(cx: &Context<'_>, target: &Target) -> Result<crate::local::lock::DeployLock> {
    use crate::local::{lock, state::StateDir};
    let dir = journal_dir(&cx.state_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{}.lock", target.id));
    let state = StateDir::new(&cx.state_dir);
    let command = format!("kisumctl restore {} {}", cx.env.name, target.id);
    match lock::acquire_at(
        &path,
        &state,
        &command,
        std::time::Duration::ZERO,
        &mut |_| {},
    ) {
        Ok(held) => Ok(held),
        Err(lock::LockError::Held { holder, .. }) => {
            let journal = read_journal(&cx.state_dir, &target.id).ok().flatten();
            let restore_id = journal
                .filter(|j| holder.pid.is_none_or(|pid| pid == j.pid))
                .map(|j| j.restore_id);
            Err(Busy {
                database: target.id.clone(),
                restore_id,
                pid: holder.pid,
            }
            .into())
        }
        Err(error) => Err(error.into()),
    }
}

/// A restore that did not finish: why, where things stand (naming only
/// what exists), and the command to run next.
#[derive(Debug)]
pub struct Failure {
    pub error: anyhow::Error,
    pub aftermath: Vec<String>,
    pub next: String,
}

impl Failure {
    /// A failure before anything was touched (nothing to describe).
    fn untouched(error: anyhow::Error, next: String) -> Failure {
        Failure {
            error,
            aftermath: vec![],
            next,
        }
    }
}

/// Runs a planned restore. `progress` receives one line per step; the
/// first names the restore id and its journal.
pub async fn run(
    cx: &Context<'_>,
    target: &Target,
    plan: &Plan,
    progress: &mut dyn FnMut(&str),
) -> Result<Outcome, Failure> {
    let again = format!(
        "kisumctl restore {} {} --backup {}",
        cx.env.name, target.id, plan.backup.id
    );
    let _lock = lock_database(cx, target)
        .map_err(|e| Failure::untouched(e, "wait for it to finish".into()))?;
    let recovered = recover(cx, target)
        .await
        .map_err(|e| Failure::untouched(e, format!("fix the cause, then run `{again}`")))?;
    if let Some(note) = &recovered {
        progress(note);
    }

    let mut journal = Journal {
        restore_id: format!("{}-{}", target.id, plan.stamp),
        environment: cx.env.name.to_string(),
        database: target.id.clone(),
        name: plan.name.clone(),
        backup_id: plan.backup.id.clone(),
        pid: std::process::id(),
        scratch: plan.scratch.clone(),
        previous: plan.previous.clone(),
        original_exists: plan.original_exists,
        safety_backup: None,
        steps: vec![],
        error: None,
        redis_pairs: plan.redis_pairs.clone(),
        cleaned: false,
        scratch_server: None,
        safety_staging: None,
        under_way: None,
    };
    record(&cx.state_dir, &mut journal, Step::Started)
        .map_err(|e| Failure::untouched(e, format!("fix the cause, then run `{again}`")))?;
    progress(&format!(
        "restore id {}, journal {}",
        journal.restore_id,
        journal_path(&cx.state_dir, &target.id).display()
    ));

    match steps(cx, target, &mut journal, progress).await {
        Ok((restore_seconds, safety_backup_seconds, repointed)) => {
            archive(&cx.state_dir, &journal).map_err(|e| Failure::untouched(e, again))?;
            Ok(Outcome {
                restore_id: journal.restore_id.clone(),
                database: target.id.clone(),
                backup_id: plan.backup.id.clone(),
                safety_backup: journal.safety_backup.clone(),
                previous: plan.original_exists.then(|| plan.previous.clone()),
                restore_seconds,
                safety_backup_seconds,
                recovered,
                repointed,
            })
        }
        Err(error) => Err(abandon(cx, target, &mut journal, error, &again).await),
    }
}

/// Closes the journal of a restore that failed before its swap finished,
/// drops what it built, and says where things stand.
async fn abandon(
    cx: &Context<'_>,
    target: &Target,
    journal: &mut Journal,
    error: anyhow::Error,
    again: &str,
) -> Failure {
    let cleanup = format!("kisumctl restore {} {} --cleanup", cx.env.name, target.id);
    if journal.last() == Step::Swapped {
        return Failure {
            error,
            aftermath: vec![format!(
                "backup {} was swapped in; what followed the swap failed",
                journal.backup_id
            )],
            next: format!("check the service, then run `{cleanup}` when the previous data can go"),
        };
    }
    let mut aftermath = vec![live_note(journal)];
    aftermath.extend(safety_note(cx, journal));
    let mut next = if error.is::<super::interrupt::Interrupted>() {
        format!("run `{again}` again")
    } else if error.downcast_ref::<super::Corrupt>().is_some() {
        format!(
            "choose another backup (`kisumctl backup list {}`), then run `kisumctl restore {} {} \
             --backup ID`",
            cx.env.name, cx.env.name, target.id
        )
    } else {
        format!("fix the cause, then run `{again}`")
    };
    match drop_scratch(cx, target, journal).await {
        Ok(Scratch::NeverMade) => {}
        Ok(Scratch::Dropped) => aftermath.push(format!(
            "the unfinished {} was dropped",
            scratch_label(target, journal)
        )),
        Ok(Scratch::LeftOver) | Err(_) => {
            aftermath.push(format!(
                "the unfinished {} is left over",
                scratch_label(target, journal)
            ));
            next = format!("run `{cleanup}`, then {next}");
        }
    }
    journal.error = Some(format!("{error:#}"));
    let _ = record(&cx.state_dir, journal, Step::Abandoned);
    let _ = archive(&cx.state_dir, journal);
    Failure {
        error,
        aftermath,
        next,
    }
}

/// The safety backup a restore kept, and where.
fn safety_note(cx: &Context<'_>, journal: &Journal) -> Option<String> {
    let id = journal.safety_backup.as_ref()?;
    Some(format!(
        "the safety backup {id} was kept in {}",
        cx.store.describe()
    ))
}

/// What the live data is after a restore stopped before its swap.
fn live_note(journal: &Journal) -> String {
    if journal.original_exists {
        format!("{} was left serving, unchanged", journal.name)
    } else {
        format!("{} did not exist and was not created", journal.name)
    }
}

/// The restore's new place, for people.
fn scratch_label(target: &Target, journal: &Journal) -> String {
    match target.engine {
        EngineKind::Redis => format!("copy in Redis database index(es) {}", journal.scratch),
        _ => format!("database {}", journal.scratch),
    }
}

async fn steps(
    cx: &Context<'_>,
    target: &Target,
    journal: &mut Journal,
    progress: &mut dyn FnMut(&str),
) -> Result<(f64, f64, Option<String>)> {
    progress(&format!("verifying backup {}", journal.backup_id));
    let scratch_dir = cx.scratch()?;
    let prepared = &race(super::prepare(cx, &journal.backup_id, scratch_dir.path())).await??;

    let mut safety_seconds = 0.0;
    if journal.original_exists {
        progress(&format!("safety backup of {}", journal.name));
        let started = std::time::Instant::now();
        let id = super::new_id(&target.id);
        journal.safety_staging = Some(cx.store.staging_dir(&id, &cx.state_dir));
        begin(&cx.state_dir, journal, Step::SafetyBackup)?;
        let safety = super::backup_as(cx, target, Trigger::Safety, id).await?;
        safety_seconds = started.elapsed().as_secs_f64();
        journal.safety_backup = Some(safety.id);
        journal.safety_staging = None;
        record(&cx.state_dir, journal, Step::SafetyBackup)?;
    }

    let started = std::time::Instant::now();
    progress(&format!("restoring into {}", journal.scratch));
    let counts = race(async {
        match target.engine {
            EngineKind::Postgresql => {
                restore_postgres(cx, target, prepared, journal, progress).await
            }
            EngineKind::Mongodb => restore_mongo(cx, target, prepared, journal).await,
            EngineKind::Redis => restore_redis(cx, target, prepared, journal).await,
        }
    })
    .await??;
    if let Some(signal) = super::interrupt::received() {
        // Stopped before the swap, which is never interrupted.
        return Err(super::interrupt::Interrupted { signal }.into());
    }
    let mismatches = super::drill::count_mismatches(&prepared.manifest.counts, &counts);
    if !mismatches.is_empty() {
        bail!(
            "the restored data does not match the manifest: {}",
            mismatches.join("; ")
        );
    }
    record(&cx.state_dir, journal, Step::Verified)?;
    let restore_seconds = started.elapsed().as_secs_f64();

    progress(&format!(
        "swapping {} in for {}",
        journal.scratch, journal.name
    ));
    if target.engine == EngineKind::Redis {
        // Written before the journal says `swapping`, so that a crash
        // after the swap can be told from one before it.
        let password = redis_password(cx)?;
        let server = redis_server(target, password.as_ref());
        for (_, staging) in &journal.redis_pairs {
            server
                .set(*staging, &marker(journal), "swapped in by kisumctl restore")
                .await?;
        }
    }
    if target.engine == EngineKind::Mongodb {
        follow(cx, target, &journal.scratch).await?;
    }
    record(&cx.state_dir, journal, Step::Swapping)?;
    let repointed = match target.engine {
        EngineKind::Postgresql => {
            let login = pg_login(cx, target)?;
            postgres::swap(&login, &journal.name, &journal.scratch, &journal.previous).await?;
            None
        }
        EngineKind::Mongodb => Some(repoint(cx, target, &journal.scratch)?),
        EngineKind::Redis => {
            let password = redis_password(cx)?;
            let server = redis_server(target, password.as_ref());
            for (live, staging) in &journal.redis_pairs {
                server.swap(*live, *staging).await?;
            }
            None
        }
    };
    record(&cx.state_dir, journal, Step::Swapped)?;
    if target.engine == EngineKind::Redis {
        remove_markers(cx, target, journal).await?;
    }
    Ok((restore_seconds, safety_seconds, repointed))
}

async fn restore_postgres(
    cx: &Context<'_>,
    target: &Target,
    prepared: &super::Prepared,
    journal: &mut Journal,
    progress: &mut dyn FnMut(&str),
) -> Result<std::collections::BTreeMap<String, u64>> {
    let login = pg_login(cx, target)?;
    let (facts, dump) = prepared.postgres_dump(&target.name)?;
    begin(&cx.state_dir, journal, Step::Created)?;
    postgres::drop_database(&login, &journal.scratch).await?;
    postgres::create_database(&login, &journal.scratch, &facts).await?;
    record(&cx.state_dir, journal, Step::Created)?;
    begin(&cx.state_dir, journal, Step::Restored)?;
    postgres::restore_file(&login, &journal.scratch, dump).await?;
    record(&cx.state_dir, journal, Step::Restored)?;
    begin(&cx.state_dir, journal, Step::Verified)?;
    progress(&format!("verifying the row counts of {}", journal.scratch));
    postgres::count_restored(&login, &journal.scratch, &prepared.manifest.counts).await
}

async fn restore_mongo(
    cx: &Context<'_>,
    target: &Target,
    prepared: &super::Prepared,
    journal: &mut Journal,
) -> Result<std::collections::BTreeMap<String, u64>> {
    let url = connection::mongo_url(target, cx.secrets.as_ref())?;
    begin(&cx.state_dir, journal, Step::Created)?;
    mongo::drop_database(&url, &journal.scratch).await?;
    record(&cx.state_dir, journal, Step::Created)?;
    begin(&cx.state_dir, journal, Step::Restored)?;
    let counts = mongo::restore_into(&url, &journal.scratch, &prepared.plain).await?;
    record(&cx.state_dir, journal, Step::Restored)?;
    Ok(counts)
}

async fn restore_redis(
    cx: &Context<'_>,
    target: &Target,
    prepared: &super::Prepared,
    journal: &mut Journal,
) -> Result<std::collections::BTreeMap<String, u64>> {
    let snapshot = prepared
        .plain
        .get(redis::RDB_FILE)
        .context("the backup has no RDB snapshot")?
        .clone();
    begin(&cx.state_dir, journal, Step::Created)?;
    let scratch = tokio::task::spawn_blocking(move || redis::ScratchServer::start(&snapshot))
        .await
        .context("the scratch Redis task")??;
    let password = redis_password(cx)?;
    let live = redis_server(target, password.as_ref());
    let from = redis::Server {
        host: "127.0.0.1",
        port: scratch.port,
        password: None,
    };
    for (_, staging) in &journal.redis_pairs {
        live.flush(*staging).await?;
    }
    journal.scratch_server = Some((scratch.pid(), scratch.dir().to_path_buf()));
    record(&cx.state_dir, journal, Step::Created)?;
    begin(&cx.state_dir, journal, Step::Restored)?;
    let mut counts = std::collections::BTreeMap::new();
    for (source, staging) in &journal.redis_pairs {
        let copied = redis::copy_database(&from, *source, &live, *staging).await?;
        if copied > 0 {
            counts.insert(format!("db{source}"), copied);
        }
    }
    drop(scratch);
    journal.scratch_server = None;
    record(&cx.state_dir, journal, Step::Restored)?;
    Ok(counts)
}

async fn remove_markers(cx: &Context<'_>, target: &Target, journal: &Journal) -> Result<()> {
    let password = redis_password(cx)?;
    let server = redis_server(target, password.as_ref());
    for (live, staging) in &journal.redis_pairs {
        for db in [live, staging] {
            server.delete(*db, &marker(journal)).await?;
        }
    }
    Ok(())
}

/// Points the owning service at database `to`: the credentials secret's
/// `url` is rewritten in one atomic replace; then, where kisumctl runs the
/// service itself (`local`), it is restarted so that it reconnects.
fn repoint(cx: &Context<'_>, target: &Target, to: &str) -> Result<String> {
    let secret = target
        .credentials
        .as_deref()
        .context("the database has no credentials secret")?;
    let url = cx
        .secrets
        .read(secret, "url")?
        .with_context(|| format!("secret `{secret}` has no `url`"))?;
    let moved = Secret::new(connection::with_database(url.expose(), to));
    cx.secrets.write(secret, "url", &moved)?;
    let owner = &cx.env.base.databases[&target.id].owner;
    let restarted = if cx.env.name == "local" {
        restart_local_service(&cx.state_dir, owner)
    } else {
        None
    };
    Ok(match restarted {
        Some(pid) => format!(
            "secret {secret} now names {to}; the supervisor restarts {owner} (pid {pid}) on it \
             (a planned restart, not counted in `kisumctl status`)"
        ),
        None => {
            format!("secret {secret} now names {to}; restart {owner} so that it connects to it")
        }
    })
}

/// Asks the local supervisor to restart a service it runs, as a planned
/// restart (`status` counts only crashes). Answers the pid it stops; `None`
/// when no supervisor runs it.
fn restart_local_service(state_dir: &Path, service: &str) -> Option<u32> {
    use crate::local::{state::StateDir, supervisor};
    let state = StateDir::new(state_dir);
    supervisor::live_supervisor(&state)?;
    supervisor::request_restart(&state, service).ok()?
}

/// What `cleanup` of `target` would drop, for the confirmation asked
/// before it: one line per database (Redis: indexes) and for a stopped
/// restore whose journal remains. Read only.
pub async fn cleanup_preview(cx: &Context<'_>, target: &Target) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    if let Some(journal) = read_journal(&cx.state_dir, &target.id)? {
        lines.push(format!(
            "settle restore {} (pid {}), which did not finish: drop the {} it was building, if \
             there",
            journal.restore_id,
            journal.pid,
            scratch_label(target, &journal)
        ));
    }
    if target.engine == EngineKind::Postgresql {
        let login = pg_login(cx, target)?;
        for kind in ["_previous_", "_restore_"] {
            let prefix = format!("{}{kind}", target.name);
            for name in postgres::databases_with_prefix(&login, &prefix).await? {
                lines.push(format!("drop database {name}"));
            }
        }
    }
    for (_, journal) in history(&cx.state_dir, &target.id)? {
        lines.extend(match kept(cx, target, &journal)? {
            None => None,
            Some(Kept::Previous) => Some(format!("drop database {}", journal.previous)),
            Some(Kept::Abandoned) => Some(format!(
                "drop database {} of the stopped restore {}, if there",
                journal.scratch, journal.restore_id
            )),
            Some(Kept::Staging) => Some(format!(
                "flush Redis database index(es) {} (the keys before restore {})",
                journal.scratch, journal.restore_id
            )),
        });
    }
    Ok(lines)
}

/// What a finished MongoDB or Redis restore left for `--cleanup`.
enum Kept {
    /// MongoDB: the database that served before it.
    Previous,
    /// MongoDB: the new database of an abandoned restore, if it is there.
    Abandoned,
    /// Redis: the staging indexes, holding the keys from before it.
    Staging,
}

/// What the finished restore `journal` left that `--cleanup` drops, once
/// (`None` after that, and never the live data).
fn kept(cx: &Context<'_>, target: &Target, journal: &Journal) -> Result<Option<Kept>> {
    if journal.cleaned {
        return Ok(None);
    }
    Ok(match (target.engine, journal.last()) {
        (EngineKind::Mongodb, Step::Swapped) if journal.original_exists => {
            let live = connection::mongo_database(target, cx.secrets.as_ref())?;
            (journal.previous != live).then_some(Kept::Previous)
        }
        (EngineKind::Mongodb, Step::Abandoned) => Some(Kept::Abandoned),
        (EngineKind::Redis, Step::Swapped) => Some(Kept::Staging),
        _ => None,
    })
}

/// Drops what earlier restores of `target` kept (the previous database or
/// keys) and what an interrupted restore left. Answers what was found of
/// an interrupted restore, and what was dropped.
pub async fn cleanup(cx: &Context<'_>, target: &Target) -> Result<(Option<String>, Vec<String>)> {
    let _lock = lock_database(cx, target)?;
    let recovered = recover(cx, target).await?;
    let mut dropped = Vec::new();
    if target.engine == EngineKind::Postgresql {
        let login = pg_login(cx, target)?;
        // A swap that failed and could not allow connections again.
        let reopened = postgres::allow_connections(&login, &[&target.name]).await?;
        let recovered = match (recovered, reopened.is_empty()) {
            (recovered, true) => recovered,
            (None, false) => Some(refused_note(&target.name)),
            (Some(note), false) => Some(format!("{note}; {}", refused_note(&target.name))),
        };
        for kind in ["_previous_", "_restore_"] {
            let prefix = format!("{}{kind}", target.name);
            for name in postgres::databases_with_prefix(&login, &prefix).await? {
                postgres::drop_database(&login, &name).await?;
                dropped.push(name);
            }
        }
        return Ok((recovered, dropped));
    }
    // MongoDB and Redis: what each finished restore recorded, once.
    for (path, mut journal) in history(&cx.state_dir, &target.id)? {
        if journal.cleaned {
            continue;
        }
        match kept(cx, target, &journal)? {
            None => {}
            Some(Kept::Previous) => {
                release(cx, target, &journal.previous).await?;
                let url = connection::mongo_url(target, cx.secrets.as_ref())?;
                let patience = mongo::DROP_PATIENCE;
                if !mongo::drop_database_verified(&url, &journal.previous, patience).await? {
                    bail!(
                        "database {} came back after each drop for {} s; run `kisumctl restore \
                         {} {} --cleanup` again",
                        journal.previous,
                        patience.as_secs(),
                        cx.env.name,
                        target.id
                    );
                }
                dropped.push(journal.previous.clone());
            }
            Some(Kept::Abandoned) => match drop_scratch(cx, target, &journal).await? {
                Scratch::NeverMade => {}
                Scratch::Dropped => dropped.push(journal.scratch.clone()),
                Scratch::LeftOver => bail!(
                    "database {} of the stopped restore {} came back after each drop for {} s \
                     (a write of that restore is still running); nothing else was dropped after \
                     it; run `kisumctl restore {} {} --cleanup` again once it has finished",
                    journal.scratch,
                    journal.restore_id,
                    mongo::DROP_PATIENCE.as_secs(),
                    cx.env.name,
                    target.id
                ),
            },
            Some(Kept::Staging) => {
                let password = redis_password(cx)?;
                let server = redis_server(target, password.as_ref());
                for (_, staging) in &journal.redis_pairs {
                    server.flush(*staging).await?;
                    dropped.push(format!("Redis database {staging}"));
                }
            }
        }
        journal.cleaned = true;
        write_json_atomic(&path, &journal)?;
    }
    Ok((recovered, dropped))
}
