//! `db migrate` and `db status`: the services' sqlx migrations, applied
//! the way the services' own `migrate` command applies them, in release
//! order (plan 14.4: Platform Core, then Auth, then the module backends,
//! then Platform Admin; the matrix's `release-wave`).
//!
//! Compatibility with the services is the point: migrations are read from
//! the directories the services embed with `sqlx::migrate!` (the matrix's
//! `databases.<id>.migrations`), by sqlx's own reader, so versions,
//! descriptions and checksums are the ones a service computes; they are
//! applied through sqlx's `Migrate` implementation into the same
//! `_sqlx_migrations` table, under the same advisory lock, so a service
//! starting later finds its schema current, and a service's `migrate`
//! running at the same moment waits.
//!
//! What kisumctl adds: every applied migration is checked against its file
//! before anything runs, and a changed one stops the run naming the file
//! and both checksums; a failed migration is reported with its file, and
//! since each runs in one transaction with its bookkeeping row, the next
//! run starts again from it; `--dry-run` lists what would run.

use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use sqlx::migrate::{Migrate as _, Migration};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _, PgConnection};

use super::{RoleNames, identifier};
use crate::matrix::Environment;
use crate::matrix::schema::Engine;
use crate::secrets::SecretStore;

/// sqlx's bookkeeping table, in the service's schema.
const TABLE: &str = "_sqlx_migrations";

/// The migrations of one PostgreSQL database.
#[derive(Debug, Clone)]
pub struct Set {
    /// Database id of the matrix (`auth-db`).
    pub database: String,
    /// Name on the server.
    pub name: String,
    pub service: String,
    pub wave: u8,
    pub dir: PathBuf,
    pub roles: RoleNames,
    /// The secret holding the migration role's `url`.
    pub credentials: String,
    pub files: Vec<File>,
    /// Why the directory could not be read (then `files` is empty).
    pub unreadable: Option<String>,
}

/// One migration and the file it was read from.
#[derive(Debug, Clone)]
pub struct File {
    pub migration: Migration,
    pub path: PathBuf,
}

impl File {
    pub fn entry(&self) -> Entry {
        Entry {
            version: self.migration.version,
            file: self.path.display().to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub version: i64,
    pub file: String,
}

/// The migration sets of `env` in release order; relative directories
/// resolve against `root` (the parent of the matrix directory). `only`
/// keeps one service's.
pub fn sets(env: &Environment, root: &Path, only: Option<&str>) -> Result<Vec<Set>> {
    let mut sets = Vec::new();
    for (id, db) in &env.base.databases {
        let (Engine::Postgresql, Some(dir)) = (db.engine, &db.migrations) else {
            continue;
        };
        if !env.file.databases.contains_key(id) || only.is_some_and(|s| s != db.owner) {
            continue;
        }
        let credentials = db.migration_credentials.clone().with_context(|| {
            format!("databases.{id}.migration-credentials is not set in the matrix")
        })?;
        sets.push(Set {
            database: id.clone(),
            name: db.name.clone(),
            service: db.owner.clone(),
            wave: env
                .base
                .services
                .get(&db.owner)
                .map_or(u8::MAX, |s| s.release_wave),
            dir: root.join(dir),
            roles: RoleNames::for_service(&db.owner)?,
            credentials,
            files: Vec::new(),
            unreadable: None,
        });
    }
    if let Some(service) = only
        && sets.is_empty()
    {
        let with: Vec<&str> = env
            .base
            .databases
            .values()
            .filter(|d| d.migrations.is_some())
            .map(|d| d.owner.as_str())
            .collect();
        bail!(
            "service `{}` has no PostgreSQL migrations in environment {} (services with \
             migrations: {})",
            service.escape_debug(),
            env.name,
            with.join(", ")
        );
    }
    sets.sort_by(|a, b| (a.wave, &a.service).cmp(&(b.wave, &b.service)));
    for set in &mut sets {
        match read(&set.dir) {
            Ok(files) => set.files = files,
            Err(error) => {
                set.unreadable = Some(format!(
                    "the migrations of {} cannot be read: {error:#}",
                    set.database
                ))
            }
        }
    }
    Ok(sets)
}

/// Fails naming the first set whose directory could not be read: a run
/// touches no database unless it can read every directory it needs.
pub fn readable(sets: &[Set]) -> Result<()> {
    match sets.iter().find_map(|s| s.unreadable.as_ref()) {
        Some(problem) => bail!("{problem}"),
        None => Ok(()),
    }
}

/// The up migrations of `dir`, read by sqlx's own reader (the one
/// `sqlx::migrate!` uses at build time).
fn read(dir: &Path) -> Result<Vec<File>> {
    let resolved = sqlx::migrate::resolve_blocking(dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    Ok(resolved
        .into_iter()
        .filter(|(m, _)| !m.migration_type.is_down_migration())
        .map(|(migration, path)| File { migration, path })
        .collect())
}

/// Where one database stands against its files.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub database: String,
    pub service: String,
    pub name: String,
    pub files: usize,
    pub applied: Vec<i64>,
    pub pending: Vec<Entry>,
    pub changed: Vec<Changed>,
    /// Applied versions no file has any more.
    pub missing: Vec<i64>,
    /// Versions recorded as failed (`success = false`).
    pub failed: Vec<i64>,
}

impl Status {
    /// Nothing to apply and nothing wrong.
    pub fn current(&self) -> bool {
        self.pending.is_empty() && self.blocked().is_none()
    }

    /// Why a run would refuse to apply anything.
    pub fn blocked(&self) -> Option<Refusal> {
        if !self.changed.is_empty() {
            return Some(Refusal::Changed(self.changed.clone()));
        }
        if let Some(version) = self.failed.first() {
            return Some(Refusal::Dirty {
                database: self.database.clone(),
                version: *version,
            });
        }
        self.missing.first().map(|version| Refusal::Missing {
            database: self.database.clone(),
            version: *version,
        })
    }
}

/// An applied migration whose file no longer matches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    pub database: String,
    pub version: i64,
    pub file: String,
    /// SHA-384 (hex) recorded when it was applied.
    pub applied_checksum: String,
    /// SHA-384 (hex) of the file now.
    pub file_checksum: String,
}

/// Why a run applied nothing: the database and the files disagree.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    #[error("{}", changed_message(.0))]
    Changed(Vec<Changed>),
    #[error(
        "{database}: migration {version} is recorded as failed (success = false in \
         _sqlx_migrations): repair what it left and delete that row before migrating again"
    )]
    Dirty { database: String, version: i64 },
    #[error(
        "{database}: migration {version} is applied but its file is gone; restore the file \
         (migrations are never deleted once applied)"
    )]
    Missing { database: String, version: i64 },
}

fn changed_message(changed: &[Changed]) -> String {
    let lines: Vec<String> = changed
        .iter()
        .map(|c| {
            format!(
                "{}: migration {} (version {}) changed after it was applied: checksum when \
                 applied {}, checksum of the file now {}",
                c.database, c.file, c.version, c.applied_checksum, c.file_checksum
            )
        })
        .collect();
    format!(
        "{}; nothing was run: restore the file as it was applied and put the change in a new \
         migration",
        lines.join("; ")
    )
}

/// A migration that failed while it ran.
#[derive(Debug, Clone, Serialize, thiserror::Error)]
#[error(
    "{database}: migration {file} (version {version}) failed: {error}; {applied} migration(s) \
     before it are applied, it was rolled back{partial}, and the next run starts again from it"
)]
pub struct Failed {
    pub database: String,
    pub version: i64,
    pub file: String,
    pub error: String,
    pub applied: usize,
    #[serde(skip)]
    partial: &'static str,
}

/// Reads where `set`'s database stands, without writing.
pub async fn status(conn: &mut PgConnection, set: &Set) -> Result<Status> {
    readable(std::slice::from_ref(set))?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(TABLE)
        .fetch_one(&mut *conn)
        .await?;
    let rows: Vec<(i64, Vec<u8>, bool)> = if exists {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT version, checksum, success FROM {TABLE} ORDER BY version"
        )))
        .fetch_all(&mut *conn)
        .await?
    } else {
        Vec::new()
    };
    let mut status = Status {
        database: set.database.clone(),
        service: set.service.clone(),
        name: set.name.clone(),
        files: set.files.len(),
        applied: Vec::new(),
        pending: Vec::new(),
        changed: Vec::new(),
        missing: Vec::new(),
        failed: Vec::new(),
    };
    for (version, checksum, success) in &rows {
        if !success {
            status.failed.push(*version);
            continue;
        }
        status.applied.push(*version);
        match set.files.iter().find(|f| f.migration.version == *version) {
            None => status.missing.push(*version),
            Some(file) if *file.migration.checksum != checksum[..] => {
                status.changed.push(Changed {
                    database: set.database.clone(),
                    version: *version,
                    file: file.path.display().to_string(),
                    applied_checksum: hex::encode(checksum),
                    file_checksum: hex::encode(&*file.migration.checksum),
                });
            }
            Some(_) => {}
        }
    }
    status.pending = set
        .files
        .iter()
        .filter(|f| !rows.iter().any(|(v, ..)| *v == f.migration.version))
        .map(File::entry)
        .collect();
    Ok(status)
}

/// Logs in as the database's migration role, whose `url` provisioning
/// wrote into the secret store, in the service's schema.
pub async fn connect(set: &Set, secrets: &dyn SecretStore) -> Result<PgConnection> {
    let url = secrets.read(&set.credentials, "url")?.with_context(|| {
        format!(
            "no migration login for {}: secret `{}` key `url` is missing in {}; run `kisumctl db \
             provision` first",
            set.database,
            set.credentials,
            secrets.describe()
        )
    })?;
    let options = PgConnectOptions::from_str(url.expose())
        .map_err(|_| {
            anyhow::anyhow!(
                "secret `{}` key `url` is not a PostgreSQL URL",
                set.credentials
            )
        })?
        .application_name("kisumctl")
        .disable_statement_logging();
    let mut conn = PgConnection::connect_with(&options)
        .await
        .with_context(|| {
            format!(
                "connecting to {} as {} (login from secret `{}`)",
                set.name, set.roles.migrator, set.credentials
            )
        })?;
    let provisioned: bool = sqlx::query_scalar("SELECT to_regnamespace($1) IS NOT NULL")
        .bind(&set.roles.schema)
        .fetch_one(&mut conn)
        .await?;
    if !provisioned {
        bail!(
            "{} has no schema {}: run `kisumctl db provision` first",
            set.name,
            set.roles.schema
        );
    }
    let schema = identifier(&set.roles.schema)?;
    sqlx::query(sqlx::AssertSqlSafe(format!("SET search_path = {schema}")))
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// The advisory lock sqlx's migrator takes for a database: the same key,
/// so kisumctl and a service's `migrate` never run at once.
pub fn lock_id(database: &str) -> i64 {
    0x3d32_ad9e * i64::from(crc32fast::hash(database.as_bytes()))
}

/// Takes the migration lock of the connection's database, waiting up to
/// `timeout`; `waiting` is called once if it has to wait.
async fn lock(
    conn: &mut PgConnection,
    timeout: Duration,
    waiting: &mut dyn FnMut(&str),
) -> Result<()> {
    let database: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(&mut *conn)
        .await?;
    let id = lock_id(&database);
    let deadline = Instant::now() + timeout;
    let mut told = false;
    loop {
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
        if taken {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "another migration of {database} holds its advisory lock ({id}); gave up after {} s",
                timeout.as_secs()
            );
        }
        if !told {
            waiting(&format!("waiting for the migration lock of {database}"));
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What one run did to one database.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub database: String,
    pub service: String,
    /// Applied before this run.
    pub already: usize,
    /// Applied now (with `--dry-run`: what would be).
    pub applied: Vec<Entry>,
    pub dry_run: bool,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    /// The database and the files disagree; nothing ran.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A migration failed; those before it stay applied.
    #[error(transparent)]
    Failed(#[from] Failed),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Brings `set`'s database up to date under the migration lock; with
/// `dry_run`, only answers what would run. `progress` gets a line per
/// migration.
pub async fn run(
    conn: &mut PgConnection,
    set: &Set,
    dry_run: bool,
    lock_timeout: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, Stop> {
    if !dry_run {
        lock(conn, lock_timeout, progress).await?;
    }
    let outcome = run_locked(conn, set, dry_run, progress).await;
    if !dry_run {
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(lock_id(&set.name))
            .execute(&mut *conn)
            .await;
        if let (Ok(_), Err(error)) = (&outcome, unlocked) {
            return Err(anyhow::Error::from(error).into());
        }
    }
    outcome
}

async fn run_locked(
    conn: &mut PgConnection,
    set: &Set,
    dry_run: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, Stop> {
    let status = status(conn, set).await?;
    if let Some(refusal) = status.blocked() {
        return Err(refusal.into());
    }
    let mut report = Report {
        database: set.database.clone(),
        service: set.service.clone(),
        already: status.applied.len(),
        applied: Vec::new(),
        dry_run,
    };
    if dry_run {
        report.applied = status.pending;
        return Ok(report);
    }
    conn.ensure_migrations_table(TABLE)
        .await
        .context("creating _sqlx_migrations")?;
    for entry in &status.pending {
        let file = set
            .files
            .iter()
            .find(|f| f.migration.version == entry.version)
            .expect("a pending entry comes from a file");
        progress(&format!("{}: applying {}", set.database, entry.file));
        if let Err(error) = conn.apply(TABLE, &file.migration).await {
            let error = match error {
                sqlx::migrate::MigrateError::ExecuteMigration(e, _)
                | sqlx::migrate::MigrateError::Execute(e) => crate::backup::postgres::message(&e),
                other => other.to_string(),
            };
            return Err(Failed {
                database: set.database.clone(),
                version: entry.version,
                file: entry.file.clone(),
                error,
                applied: report.already + report.applied.len(),
                partial: if file.migration.no_tx {
                    " (except what it did before the error: it runs outside a transaction, \
                     `-- no-transaction`)"
                } else {
                    ""
                },
            }
            .into());
        }
        report.applied.push(entry.clone());
    }
    super::provision::bookkeeping_read_only(conn, &set.roles).await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;

    #[test]
    fn sets_follow_the_release_order_and_read_what_sqlx_reads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let matrix = Matrix::load(&root.join("environments")).unwrap();
        let env = matrix.environment("local").unwrap();
        let sets = sets(&env, root, None).unwrap();
        let order: Vec<&str> = sets.iter().map(|s| s.service.as_str()).collect();
        assert_eq!(
            order,
            [
                "platform-core",
                "auth",
                "ai",
                "finance",
                "venue",
                "platform-admin"
            ]
        );
        let auth = &sets[1];
        assert_eq!(auth.credentials, "auth-db-migration-credentials");
        assert!(auth.files.len() >= 4);
        let first = &auth.files[0].migration;
        assert_eq!((first.version, &*first.description), (1, "auth schema"));
        let text = std::fs::read_to_string(&auth.files[0].path).unwrap();
        assert_eq!(
            *first.checksum,
            *sqlx::migrate::Migration::new(
                1,
                "x".into(),
                sqlx::migrate::MigrationType::Simple,
                sqlx::SqlSafeStr::into_sql_str(sqlx::AssertSqlSafe(text)),
                false,
            )
            .checksum
        );

        let finance = super::sets(&env, root, Some("finance")).unwrap();
        assert_eq!(finance.len(), 1);
        assert!(super::sets(&env, root, Some("basic")).is_err());
    }

    #[test]
    fn the_lock_is_the_one_sqlx_takes() {
        // sqlx: 0x3d32ad9e * CRC-32/ISO-HDLC("auth_db").
        assert_eq!(
            lock_id("auth_db"),
            0x3d32_ad9e * i64::from(crc32fast::hash(b"auth_db"))
        );
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn a_changed_migration_is_named_with_both_checksums() {
        let refusal = Refusal::Changed(vec![Changed {
            database: "auth-db".into(),
            version: 2,
            file: "services/auth/migrations/0002_disabled_users.sql".into(),
            applied_checksum: "aa".into(),
            file_checksum: "bb".into(),
        }]);
        let message = refusal.to_string();
        for part in [
            "0002_disabled_users.sql",
            "version 2",
            "applied aa",
            "now bb",
            "nothing was run",
        ] {
            assert!(message.contains(part), "{message}");
        }
    }
}
