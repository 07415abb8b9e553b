//! Backups, restores and restore drills of an environment's databases
//! (sections 9.4, 10.3, 22 and 23 of the plan).
//!
//! A backup is a set of files plus a [`Manifest`] in a [`store::Store`]:
//! PostgreSQL as one `pg_dump` custom-format file, MongoDB as one BSON file
//! per collection plus its indexes, Redis as an RDB snapshot. Every file is
//! hashed while it is written, and encrypted with age when the matrix names
//! recipients. Nothing in this module prints.

pub mod connection;
pub mod drill;
pub mod encrypt;
pub mod interrupt;
pub mod manifest;
pub mod mongo;
pub mod postgres;
pub mod redis;
pub mod restore;
pub mod retention;
pub mod store;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

pub use connection::Target;
pub use manifest::{EngineKind, Manifest, Trigger};
use store::{BackupStore, Store};

use crate::matrix::Environment;
use crate::matrix::schema::BackupStore as StoreSettings;
use crate::secrets::SecretStore;

/// Everything a backup operation of one environment needs.
pub struct Context<'e> {
    pub env: &'e Environment<'e>,
    pub state_dir: PathBuf,
    pub store: Store,
    pub recipients: encrypt::Recipients,
    pub secrets: Box<dyn SecretStore>,
}

impl<'e> Context<'e> {
    /// The store of the matrix (`backups.store`; a relative directory
    /// resolves like every matrix path) and the recipients of
    /// `backups.age-recipients`.
    pub async fn new(
        matrix_dir: &Path,
        env: &'e Environment<'e>,
        secrets: Box<dyn SecretStore>,
    ) -> Result<Context<'e>> {
        let store = Store::for_environment(matrix_dir, env).await;
        let recipients = encrypt::Recipients::parse(&env.file.backups.age_recipients)
            .map_err(anyhow::Error::msg)?;
        let state_dir = crate::matrix::resolve_path(matrix_dir, &env.file.state_dir);
        // Every backup, restore and drill removes what killed runs left in
        // the scratch (decrypted dumps), whether it needs a scratch or not.
        remove_abandoned_scratch(&state_dir.join("backup-scratch"));
        Ok(Context {
            env,
            state_dir,
            store,
            recipients,
            secrets,
        })
    }

    /// A scratch directory under the state directory (0700), removed on
    /// drop. Its name carries this process's id: the scratch directories
    /// of runs that were killed (decrypted dumps, downloads) are removed
    /// here, by the next run.
    pub fn scratch(&self) -> Result<tempfile::TempDir> {
        use std::os::unix::fs::PermissionsExt as _;
        let parent = self.state_dir.join("backup-scratch");
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", parent.display()))?;
        remove_abandoned_scratch(&parent);
        tempfile::TempDir::with_prefix_in(format!("work-{}-", std::process::id()), &parent)
            .with_context(|| format!("creating a directory in {}", parent.display()))
    }
}

/// Removes the scratch directories under `parent` whose process is gone
/// (`work-<pid>-*`, and the older unnamed `work-*`, which no live run
/// creates any more).
fn remove_abandoned_scratch(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("work-") else {
            continue;
        };
        let owner = rest
            .split_once('-')
            .and_then(|(pid, _)| pid.parse::<u32>().ok());
        if !owner.is_some_and(is_running) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether process `pid` of this machine is running.
fn is_running(pid: u32) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok())
}

/// The file of a staged backup naming the process writing it.
const OWNER_FILE: &str = ".owner";

/// A staged backup without a manifest in the store: one being written, or
/// one a stopped run left (its process is gone).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unfinished {
    pub id: String,
    /// The staging directory, or the key prefix in the bucket.
    pub path: String,
    /// The process writing it, when it says.
    pub pid: Option<u32>,
    /// The host of that process, for an upload to S3 (the staging
    /// directories are all of this host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Whether that process is gone (or, for a staging without an owner,
    /// whether it was last touched over ten minutes ago; for an upload
    /// from another host, whether it started over
    /// [`STALE_UPLOAD_SECONDS`] ago).
    pub abandoned: bool,
}

/// How old an unfinished S3 upload of another host (or whose marker is
/// unreadable) must be before it counts as abandoned: nothing on this
/// host can tell whether its process still runs.
pub const STALE_UPLOAD_SECONDS: i64 = 24 * 3600;

/// The unfinished backups of the store: the staged ones
/// (`<store>/.partial/` for a directory, `<state-dir>/backup-staging/`
/// for S3) and, for S3, the uploads announced under `<prefix>.partial/`.
/// A bucket that cannot be listed is an error.
pub async fn unfinished(cx: &Context<'_>) -> Result<Vec<Unfinished>> {
    let mut found = staged(cx);
    if let Store::S3(s3) = &cx.store {
        let this_host = crate::ops::journal::host();
        for upload in s3.marked_uploads().await? {
            let old = upload
                .age_seconds
                .is_some_and(|age| age > STALE_UPLOAD_SECONDS);
            // One entry per backup: the upload stands for its staging.
            found.retain(|staged| staged.id != upload.id);
            let gone = upload
                .marker
                .as_ref()
                .is_some_and(|m| m.host == this_host && !is_running(m.pid));
            found.push(Unfinished {
                id: upload.id,
                path: upload.location,
                pid: upload.marker.as_ref().map(|m| m.pid),
                host: Some(upload.marker.map_or("unknown".into(), |m| m.host)),
                abandoned: gone || old,
            });
        }
        // Objects without a manifest and without a marker: an upload
        // stopped by a kisumctl from before uploads were marked (today's
        // put the marker first). Nothing tells whether it runs, so it is
        // abandoned once its id's start time is over a day old.
        for (id, location) in s3.unmarked_uploads().await? {
            if found.iter().any(|known| known.id == id) {
                continue;
            }
            let old = id_age_seconds(&id).is_some_and(|age| age > STALE_UPLOAD_SECONDS);
            found.push(Unfinished {
                id,
                path: location,
                pid: None,
                host: Some("unknown (no marker)".into()),
                abandoned: old,
            });
        }
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(found)
}

/// The staging directories of the store on this host.
fn staged(cx: &Context<'_>) -> Vec<Unfinished> {
    let parent = cx.store.staging_dir("x", &cx.state_dir);
    let Some(parent) = parent.parent() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|entry| {
            let path = entry.path();
            let pid = std::fs::read_to_string(path.join(OWNER_FILE))
                .ok()
                .and_then(|text| text.trim().parse::<u32>().ok());
            let abandoned = match pid {
                Some(pid) => !is_running(pid),
                None => entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|at| at.elapsed().ok())
                    .is_some_and(|age| age.as_secs() > 600),
            };
            Unfinished {
                id: entry.file_name().to_string_lossy().into_owned(),
                path: path.display().to_string(),
                pid,
                host: None,
                abandoned,
            }
        })
        .collect()
}

/// Removes the unfinished backups whose process is gone (for S3: their
/// objects, open multipart uploads and marker); answers those removed
/// and the problems met.
pub async fn sweep_unfinished(cx: &Context<'_>) -> (Vec<Unfinished>, Vec<String>) {
    let mut removed = Vec::new();
    let mut problems = Vec::new();
    let found = match unfinished(cx).await {
        Ok(found) => found,
        Err(error) => {
            problems.push(format!("{error:#}"));
            staged(cx)
        }
    };
    for stale in found.into_iter().filter(|u| u.abandoned) {
        let gone = match (&stale.host, &cx.store) {
            (Some(_), Store::S3(s3)) => {
                let _ = std::fs::remove_dir_all(cx.store.staging_dir(&stale.id, &cx.state_dir));
                s3.discard(&stale.id).await
            }
            _ => std::fs::remove_dir_all(&stale.path).map_err(anyhow::Error::from),
        };
        match gone {
            Ok(()) => removed.push(stale),
            Err(error) => problems.push(format!("{}: {error:#}", stale.path)),
        }
    }
    if let Some(parent) = cx.store.staging_dir("x", &cx.state_dir).parent() {
        let _ = std::fs::remove_dir(parent);
    }
    (removed, problems)
}

impl Store {
    /// The store of the matrix (`backups.store`; a relative directory
    /// resolves like every matrix path).
    pub async fn for_environment(matrix_dir: &Path, env: &Environment<'_>) -> Store {
        match &env.file.backups.store {
            StoreSettings::LocalDirectory { path } => Store::Local(store::LocalDirectory::new(
                crate::matrix::resolve_path(matrix_dir, path),
            )),
            StoreSettings::S3 {
                bucket,
                prefix,
                region,
                endpoint,
            } => Store::S3(
                store::S3Store::connect(store::S3Settings {
                    bucket: bucket.clone(),
                    prefix: prefix.clone(),
                    region: region.clone(),
                    endpoint: endpoint.clone(),
                    static_credentials: None,
                })
                .await,
            ),
        }
    }
}

/// Now, RFC 3339 in UTC to the second.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A new backup id: UTC time first (ids sort by age), the database, and
/// four random hex digits so that two backups in one second differ.
pub fn new_id(database: &str) -> String {
    let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ");
    format!("{stamp}-{database}-{:04x}", rand::random::<u16>())
}

/// The shape of the ids [`new_id`] makes, for messages.
pub const ID_SHAPE: &str = "<YYYYMMDDTHHMMSSZ>-<database>-<4 hex digits>";

/// The database of a backup id of the shape [`new_id`] makes; `None` for
/// any other shape.
pub fn id_database(id: &str) -> Option<&str> {
    let (stamp, rest) = id.split_once('-')?;
    let (database, suffix) = rest.rsplit_once('-')?;
    let stamp_ok = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", stamp).is_ok();
    let suffix_ok = suffix.len() == 4 && suffix.bytes().all(|b| b.is_ascii_hexdigit());
    let database_ok = !database.is_empty()
        && database
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (stamp_ok && suffix_ok && database_ok).then_some(database)
}

/// Seconds since the start time a backup id carries; `None` for an id of
/// another shape.
fn id_age_seconds(id: &str) -> Option<i64> {
    id_database(id)?;
    let (stamp, _) = id.split_once('-')?;
    let started = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", stamp).ok()?;
    let started = jiff::tz::TimeZone::UTC.to_timestamp(started).ok()?;
    Some(jiff::Timestamp::now().as_second() - started.as_second())
}

/// Seconds since an RFC 3339 time of a manifest.
pub fn age_seconds(rfc3339: &str) -> Result<i64> {
    let then: jiff::Timestamp = rfc3339
        .parse()
        .with_context(|| format!("time {rfc3339:?}"))?;
    Ok(jiff::Timestamp::now().as_second() - then.as_second())
}

/// How far ahead of this machine's clock a backup's time may be before
/// it is taken for dated in the future (clock skew between hosts).
pub const FUTURE_SKEW_SECONDS: i64 = 300;

/// A backup dated more than [`FUTURE_SKEW_SECONDS`] ahead of `now` (Unix
/// seconds): a wrong clock where it was taken, or an edited manifest. Its
/// age means nothing, so it never counts as meeting the RPO. Answers why.
pub fn dated_in_the_future(manifest: &Manifest, now: i64) -> Option<String> {
    let at: jiff::Timestamp = manifest.finished_at.parse().ok()?;
    let ahead = at.as_second() - now;
    (ahead > FUTURE_SKEW_SECONDS).then(|| {
        format!(
            "backup {} is dated in the future ({}, {} min ahead of this machine's clock)",
            manifest.id,
            manifest.finished_at,
            ahead / 60
        )
    })
}

/// What an engine's dump produced.
struct Dumped {
    files: Vec<manifest::FileEntry>,
    counts: BTreeMap<String, u64>,
    tools: BTreeMap<String, String>,
    details: serde_json::Value,
}

/// Backs `target` up into the environment's store; answers the manifest.
pub async fn backup(cx: &Context<'_>, target: &Target, trigger: Trigger) -> Result<Manifest> {
    backup_as(cx, target, trigger, new_id(&target.id)).await
}

/// [`backup`] under the id `id` (from [`new_id`]): a restore names its
/// safety backup, and where it is staged, in its journal before it starts.
pub async fn backup_as(
    cx: &Context<'_>,
    target: &Target,
    trigger: Trigger,
    id: String,
) -> Result<Manifest> {
    if !cx.env.file.backups.enabled {
        bail!(
            "backups are off in environment {} (backups.enabled)",
            cx.env.name
        );
    }
    let staging = cx.store.staging_dir(&id, &cx.state_dir);
    std::fs::create_dir_all(&staging)
        .and_then(|_| std::fs::write(staging.join(OWNER_FILE), std::process::id().to_string()))
        .with_context(|| format!("creating {}", staging.display()))?;
    let started_at = now_rfc3339();
    let result = interrupt::race(dump(cx, target, &staging)).await;
    let dumped = match result.map_err(anyhow::Error::from).and_then(|r| r) {
        Ok(dumped) => dumped,
        Err(error) => {
            remove_staging(&staging);
            return Err(error);
        }
    };
    let manifest = Manifest {
        schema_version: manifest::SCHEMA_VERSION,
        id: id.clone(),
        environment: cx.env.name.to_string(),
        database: target.id.clone(),
        engine: target.engine,
        trigger,
        started_at,
        finished_at: now_rfc3339(),
        source: manifest::Source {
            host: target.host.clone(),
            port: target.port,
            name: match target.engine {
                EngineKind::Mongodb => connection::mongo_database(target, cx.secrets.as_ref())?,
                _ => target.name.clone(),
            },
        },
        tools: dumped.tools,
        counts: dumped.counts,
        files: dumped.files,
        recipients: cx.recipients.keys(),
        details: dumped.details,
    };
    let written = std::fs::write(staging.join(manifest::FILE_NAME), manifest.to_json())
        .with_context(|| format!("writing the manifest in {}", staging.display()));
    if let Err(error) = written {
        remove_staging(&staging);
        return Err(error);
    }
    if let Store::Local(_) = &cx.store {
        // The staging becomes the backup; for S3 it keeps naming its
        // process while it uploads.
        let _ = std::fs::remove_file(staging.join(OWNER_FILE));
    }
    let committed = interrupt::race(cx.store.commit(&id, &staging)).await;
    if let Err(error) = committed.map_err(anyhow::Error::from).and_then(|r| r) {
        remove_staging(&staging);
        if let Store::S3(s3) = &cx.store {
            // What went up; left for the next run's sweep when it fails.
            let _ = s3.discard(&id).await;
        }
        return Err(error);
    }
    Ok(manifest)
}

/// Removes the staging of a backup that failed, and its parent
/// (`.partial/`, `backup-staging/`) when that leaves it empty.
fn remove_staging(staging: &Path) {
    let _ = std::fs::remove_dir_all(staging);
    if let Some(parent) = staging.parent() {
        let _ = std::fs::remove_dir(parent);
    }
}

async fn dump(cx: &Context<'_>, target: &Target, dir: &Path) -> Result<Dumped> {
    match target.engine {
        EngineKind::Postgresql => {
            let login = connection::postgres_login(cx.env, target, cx.secrets.as_ref())?;
            let dumped = postgres::dump(&login, &target.name, dir, &cx.recipients).await?;
            Ok(Dumped {
                files: vec![dumped.file],
                counts: dumped.counts,
                tools: dumped.tools,
                details: serde_json::to_value(&dumped.facts)?,
            })
        }
        EngineKind::Mongodb => {
            let url = connection::mongo_url(target, cx.secrets.as_ref())?;
            let live = connection::mongo_database(target, cx.secrets.as_ref())?;
            let dumped = mongo::dump(&url, &live, dir, &cx.recipients).await?;
            Ok(Dumped {
                files: dumped.files,
                counts: dumped.counts,
                tools: dumped.tools,
                details: serde_json::Value::Null,
            })
        }
        EngineKind::Redis => {
            if !target.persistent {
                bail!(
                    "Redis is a pure cache in the matrix (redis.persistence: none): there is \
                     nothing to back up"
                );
            }
            let password = connection::redis_password(cx.secrets.as_ref())?;
            let dumped = redis::dump(target, password.as_ref(), dir, &cx.recipients).await?;
            Ok(Dumped {
                files: vec![dumped.file],
                counts: dumped.counts,
                tools: dumped.tools,
                details: serde_json::Value::Null,
            })
        }
    }
}

/// A backup fetched to local disk, checked, and decrypted when needed:
/// `plain` maps each file of the manifest to a readable plain file.
pub struct Prepared {
    pub manifest: Manifest,
    pub plain: BTreeMap<String, PathBuf>,
}

impl Prepared {
    /// A PostgreSQL backup's dump of database `name` and the database
    /// facts its manifest recorded.
    pub fn postgres_dump(&self, name: &str) -> Result<(postgres::DatabaseFacts, &Path)> {
        let facts = serde_json::from_value(self.manifest.details.clone()).unwrap_or_default();
        let dump = self
            .plain
            .get(&postgres::dump_file_name(name))
            .context("the backup has no dump of this database")?;
        Ok((facts, dump))
    }
}

/// Why a backup cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("backup {id} failed verification: {}", problems.join("; "))]
pub struct Corrupt {
    pub id: String,
    pub problems: Vec<String>,
}

/// An encrypted backup whose identity is missing from the secret store:
/// it cannot be verified, a failed check (exit 1) like a corrupt one.
#[derive(Debug, thiserror::Error)]
#[error(
    "backup {id} is encrypted and the secret store ({store}) has no `{}` to decrypt it",
    encrypt::IDENTITY_SECRET
)]
pub struct NoIdentity {
    pub id: String,
    pub store: String,
}

/// Fetches backup `id` into `scratch` (a no-op for a directory store),
/// checks the manifest, the size and SHA-256 of every stored file, and,
/// for an encrypted backup, decrypts each file with the identity of the
/// secret store and checks the plain digest. Fails with [`Corrupt`] when
/// anything does not match.
pub async fn prepare(cx: &Context<'_>, id: &str, scratch: &Path) -> Result<Prepared> {
    let manifest = cx.store.manifest(id).await?;
    let corrupt = |problems: Vec<String>| Corrupt {
        id: id.to_string(),
        problems,
    };
    let mut problems = manifest.check_consistency();
    if manifest.id != id {
        problems.push(format!("the manifest names backup {}", manifest.id));
    }
    if !problems.is_empty() {
        return Err(corrupt(problems).into());
    }
    let dir = cx.store.fetch(id, &manifest, scratch).await?;
    let identity = if manifest.encrypted() {
        match encrypt::Identity::from_store(cx.secrets.as_ref()).map_err(anyhow::Error::msg)? {
            Some(identity) => Some(identity),
            None => {
                return Err(NoIdentity {
                    id: id.to_string(),
                    store: cx.secrets.describe(),
                }
                .into());
            }
        }
    } else {
        None
    };
    let files = manifest.files.clone();
    let plain_dir = scratch.join("plain");
    let checked = tokio::task::spawn_blocking(move || {
        check_files(&dir, &files, identity.as_ref(), &plain_dir)
    })
    .await
    .context("the verification task")??;
    match checked {
        Ok(plain) => Ok(Prepared { manifest, plain }),
        Err(problems) => Err(corrupt(problems).into()),
    }
}

type Checked = std::result::Result<BTreeMap<String, PathBuf>, Vec<String>>;

fn check_files(
    dir: &Path,
    files: &[manifest::FileEntry],
    identity: Option<&encrypt::Identity>,
    plain_dir: &Path,
) -> Result<Checked> {
    let mut problems = Vec::new();
    let mut plain = BTreeMap::new();
    for file in files {
        let path = dir.join(&file.name);
        let opened = File::open(&path);
        let Ok(opened) = opened else {
            problems.push(format!("{} is missing", file.name));
            continue;
        };
        let (size, digest) = manifest::digest_reader(std::io::BufReader::new(opened))
            .with_context(|| format!("reading {}", path.display()))?;
        if size != file.size || digest != file.sha256 {
            problems.push(format!(
                "{}: SHA-256 {digest} ({size} bytes), the manifest says {} ({} bytes)",
                file.name, file.sha256, file.size
            ));
            continue;
        }
        let Some(identity) = identity else {
            plain.insert(file.name.clone(), path);
            continue;
        };
        let target = plain_dir.join(&file.name);
        match decrypt_file(identity, &path, &target) {
            Ok(entry) if entry.plain_sha256 == file.plain_sha256 => {
                plain.insert(file.name.clone(), target);
            }
            Ok(_) => problems.push(format!("{}: decrypted content does not match", file.name)),
            Err(error) => problems.push(format!("{}: cannot be decrypted: {error}", file.name)),
        }
    }
    Ok(if problems.is_empty() {
        Ok(plain)
    } else {
        Err(problems)
    })
}

fn decrypt_file(
    identity: &encrypt::Identity,
    source: &Path,
    target: &Path,
) -> Result<manifest::FileEntry> {
    let input = std::io::BufReader::new(File::open(source)?);
    let mut reader = identity.decrypt(input)?;
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let mut sink = manifest::FileSink::create(dir, &name, &encrypt::Recipients::default())?;
    std::io::copy(&mut reader, &mut sink)?;
    Ok(sink.finish()?)
}

/// The newest backup of `database` that is not a safety backup.
pub fn newest<'m>(manifests: &'m [Manifest], database: &str) -> Option<&'m Manifest> {
    manifests
        .iter()
        .filter(|m| m.database == database && m.trigger != Trigger::Safety)
        .max_by(|a, b| (&a.finished_at, &a.id).cmp(&(&b.finished_at, &b.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_id_names_its_database_only_in_the_shape_new_id_makes() {
        assert_eq!(id_database(&new_id("auth-db")), Some("auth-db"));
        assert_eq!(
            id_database("20261205T061500Z-platform-core-db-0a1f"),
            Some("platform-core-db")
        );
        for bad in [
            "auth-db-20261205T061500Z",
            "20261205T061500Z-auth-db",
            "20261305T061500Z-auth-db-0a1f",
            "20261205T061500Z-auth-db-0a1g",
            "20261205T061500Z--0a1f",
            "latest",
        ] {
            assert_eq!(id_database(bad), None, "{bad}");
        }
    }
}
