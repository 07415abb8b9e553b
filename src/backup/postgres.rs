//! PostgreSQL backups with `pg_dump` in custom format (an operator can
//! still `pg_restore` one by hand) and restores with `pg_restore`.
//!
//! The dump and the row counts see the same data: kisumctl opens a
//! repeatable-read transaction, exports its snapshot, hands it to
//! `pg_dump --snapshot`, and counts every table in that transaction while
//! the dump runs. The password reaches the tools through `PGPASSWORD`,
//! never their command line.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection};

use super::connection::PgLogin;
use super::encrypt::Recipients;
use super::manifest::{FileEntry, FileSink};

/// Database-level facts `pg_dump` leaves out unless `--create` is used,
/// kept in the manifest so that a restore under another name keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseFacts {
    pub owner: String,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    /// `None`: the default privileges; else every grant of the ACL.
    pub grants: Option<Vec<Grant>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// A quoted role name or `PUBLIC`.
    pub grantee: String,
    pub privilege: String,
    pub grantable: bool,
}

/// What a dump produced.
pub struct Dumped {
    pub file: FileEntry,
    pub counts: BTreeMap<String, u64>,
    pub tools: BTreeMap<String, String>,
    pub facts: DatabaseFacts,
}

/// The file name of the dump of database `name` inside a backup.
pub fn dump_file_name(name: &str) -> String {
    format!("{name}.dump")
}

/// `"name"` with embedded quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

pub async fn connect(login: &PgLogin, database: &str) -> Result<PgConnection> {
    let mut options = sqlx::postgres::PgConnectOptions::new()
        .host(&login.host)
        .port(login.port)
        .username(&login.username)
        .database(database)
        .application_name("kisumctl");
    if let Some(password) = &login.password {
        options = options.password(password.expose());
    }
    PgConnection::connect_with(&options).await.with_context(|| {
        format!(
            "connecting to PostgreSQL {}:{} database {database} as {}",
            login.host, login.port, login.username
        )
    })
}

/// `program` (pg_dump, pg_restore) with the login in its environment, tied
/// to kisumctl's life ([`dies_with_kisumctl`]).
pub fn tool(program: &str, login: &PgLogin) -> Command {
    let mut command = dies_with_kisumctl(program);
    command
        .args(["-w", "-h", &login.host, "-p", &login.port.to_string()])
        .args(["-U", &login.username])
        .env("PGCONNECT_TIMEOUT", "30")
        .env_remove("PGPASSFILE")
        .stdin(Stdio::null());
    match &login.password {
        Some(password) => command.env("PGPASSWORD", password.expose()),
        None => command.env_remove("PGPASSWORD"),
    };
    command
}

/// util-linux's `setpriv`, which sets the parent-death signal
/// (`prctl(PR_SET_PDEATHSIG)`) and then executes the program in its place.
const SETPRIV: [&str; 2] = ["/usr/bin/setpriv", "/bin/setpriv"];

/// A command running `program` that the kernel kills (SIGKILL) when the
/// kisumctl thread that started it ends, a SIGKILL of kisumctl included,
/// so that a killed `restore` or `backup` leaves no pg_dump or pg_restore
/// behind. Each of these commands is started and waited for by one thread
/// that lives until it exits. Linux with `setpriv` only (kisumctl forbids
/// unsafe code, which a `pre_exec` would need); elsewhere the program runs
/// unattached and may outlive a killed kisumctl.
fn dies_with_kisumctl(program: &str) -> Command {
    let setpriv = SETPRIV
        .iter()
        .find(|path| cfg!(target_os = "linux") && Path::new(path).is_file());
    match setpriv {
        Some(setpriv) => {
            let mut command = Command::new(setpriv);
            command.args(["--pdeathsig", "KILL", "--", program]);
            command
        }
        None => Command::new(program),
    }
}

/// The first line `program --version` prints.
pub fn tool_version(program: &str) -> Result<String> {
    let output = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!("running {program} --version (is PostgreSQL's client installed?)")
        })?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// Dumps database `name` into `dir/<name>.dump` (plain: written by pg_dump
/// and hashed after; encrypted: encrypted and hashed as it streams), and
/// counts the rows of every table in the dump's snapshot meanwhile.
pub async fn dump(
    login: &PgLogin,
    name: &str,
    dir: &Path,
    recipients: &Recipients,
) -> Result<Dumped> {
    let mut tools = BTreeMap::new();
    tools.insert("pg_dump".to_string(), tool_version("pg_dump")?);
    let mut conn = connect(login, name).await?;
    let server: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await?;
    tools.insert("postgresql-server".into(), server);
    let facts = database_facts(&mut conn, name).await?;

    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut conn)
        .await?;
    let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut conn)
        .await?;

    let file_name = dump_file_name(name);
    let path = dir.join(&file_name);
    let mut command = tool("pg_dump", login);
    command.args(["-Fc", "--snapshot", &snapshot, "-d", name]);
    let recipients = recipients.clone();
    let copy = tokio::task::spawn_blocking(move || -> Result<FileEntry> {
        if recipients.is_empty() {
            dump_to_file(command, &path)
        } else {
            dump_encrypted(command, &path, &recipients)
        }
    });

    let counts = count_rows(&mut conn).await;
    let file = copy.await.context("the dump task")??;
    let counts = counts?;
    sqlx::query("COMMIT").execute(&mut conn).await?;
    let _ = conn.close().await;
    Ok(Dumped {
        file,
        counts,
        tools,
        facts,
    })
}

/// A plain dump: `pg_dump -f` writes the file itself, which keeps the
/// archive seekable (pg_dump then records where each table's data starts,
/// which `pg_restore -j` and `pg_restore -t` need) and syncs it; the file
/// is then hashed once, from the page cache it was just written to.
fn dump_to_file(mut command: Command, path: &Path) -> Result<FileEntry> {
    let child = command
        .arg("-f")
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting pg_dump (is PostgreSQL's client installed?)")?;
    let registered = super::interrupt::register(&child);
    let output = child.wait_with_output().context("waiting for pg_dump");
    drop(registered);
    check_pg_dump(path, &output?)?;
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let (size, sha256) =
        super::manifest::digest_reader(std::io::BufReader::with_capacity(1 << 20, file))
            .with_context(|| format!("reading {}", path.display()))?;
    Ok(FileEntry {
        name: file_name_of(path),
        size,
        sha256: sha256.clone(),
        plain_size: size,
        plain_sha256: sha256,
    })
}

/// An encrypted dump: pg_dump's output is encrypted (and hashed) as it
/// streams through, so no plain copy ever reaches the disk. The archive
/// is then not seekable: pg_restore reads it in order.
fn dump_encrypted(mut command: Command, path: &Path, recipients: &Recipients) -> Result<FileEntry> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting pg_dump (is PostgreSQL's client installed?)")?;
    let _registered = super::interrupt::register(&child);
    let mut stdout = child.stdout.take().context("pg_dump has no stdout")?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut sink = FileSink::create(dir, &file_name_of(path), recipients)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::copy(&mut stdout, &mut sink).context("writing the dump")?;
    let entry = sink.finish().context("writing the dump")?;
    let output = child.wait_with_output().context("waiting for pg_dump")?;
    check_pg_dump(path, &output)?;
    Ok(entry)
}

fn file_name_of(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

fn check_pg_dump(path: &Path, output: &std::process::Output) -> Result<()> {
    if !output.status.success() {
        bail!(
            "pg_dump into {} failed ({}): {}",
            path.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

async fn database_facts(conn: &mut PgConnection, name: &str) -> Result<DatabaseFacts> {
    let (owner, encoding, collate, ctype, has_acl): (String, String, String, String, bool) =
        sqlx::query_as(
            "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype, \
             datacl IS NOT NULL FROM pg_database WHERE datname = $1",
        )
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
    let grants = if has_acl {
        let rows: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END, \
             a.privilege_type, a.is_grantable \
             FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = $1 ORDER BY 1, 2",
        )
        .bind(name)
        .fetch_all(&mut *conn)
        .await?;
        Some(
            rows.into_iter()
                .map(|(grantee, privilege, grantable)| Grant {
                    grantee,
                    privilege,
                    grantable,
                })
                .collect(),
        )
    } else {
        None
    };
    Ok(DatabaseFacts {
        owner,
        encoding,
        collate,
        ctype,
        grants,
    })
}

/// `FROM ... WHERE ... ORDER BY` of the ordinary tables of a database
/// (`c` the table, `n` its schema), system schemas left out.
const TABLES: &str = "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' ORDER BY 1, 2";

/// Exact row counts of every ordinary table (partitions count on their
/// own; a partitioned parent holds no rows), keyed `schema.table`.
pub async fn count_rows(conn: &mut PgConnection) -> Result<BTreeMap<String, u64>> {
    // One plain scan per table: the counts run beside pg_dump, and parallel
    // workers or JIT compilation would only take CPU from it.
    sqlx::query("SET jit = off").execute(&mut *conn).await?;
    sqlx::query("SET max_parallel_workers_per_gather = 0")
        .execute(&mut *conn)
        .await?;
    let tables: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT n.nspname::text, c.relname::text {TABLES}"
    )))
    .fetch_all(&mut *conn)
    .await
    .context("listing tables")?;
    let mut counts = BTreeMap::new();
    for (schema, table) in tables {
        let sql = format!("SELECT count(*) FROM {}.{}", ident(&schema), ident(&table));
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut *conn)
            .await
            .with_context(|| format!("counting {schema}.{table}"))?;
        counts.insert(format!("{schema}.{table}"), count.max(0) as u64);
    }
    Ok(counts)
}

/// The rows of every table of database `name`, which a restore has just
/// filled, checked against `expected` (the manifest).
///
/// Counting is a full scan of the database in the restore's critical path
/// (and the first scan of a freshly loaded table also sets its rows' hint
/// bits). So the fast path asks PostgreSQL how many rows were inserted into each table
/// (`pg_stat_get_tuples_inserted`, a counter `ANALYZE` does not touch),
/// which for a database nothing but `pg_restore` has written is exactly
/// its row count. A session's counters reach the server as it ends, so the
/// restore's sessions must be gone first. Whenever those numbers differ
/// from `expected` (or statistics are off), every table is counted with
/// `count(*)` and that answer is the one returned: the fast path can only
/// confirm, never excuse, a difference.
pub async fn count_restored(
    login: &PgLogin,
    name: &str,
    expected: &BTreeMap<String, u64>,
) -> Result<BTreeMap<String, u64>> {
    let mut conn = connect(login, name).await?;
    let inserted = rows_inserted(&mut conn).await;
    let counts = match inserted {
        Ok(Some(inserted)) if &inserted == expected => Ok(inserted),
        _ => count_rows(&mut conn).await,
    };
    let _ = conn.close().await;
    counts
}

/// Rows inserted per table since the database was created, once no other
/// session is connected to it; `None` when statistics are not collected.
async fn rows_inserted(conn: &mut PgConnection) -> Result<Option<BTreeMap<String, u64>>> {
    let tracked: String = sqlx::query_scalar("SHOW track_counts")
        .fetch_one(&mut *conn)
        .await?;
    if tracked != "on" {
        return Ok(None);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut *conn)
        .await?;
        if others == 0 {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Ok(None);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await?;
    let rows: Vec<(String, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT n.nspname::text, c.relname::text, pg_stat_get_tuples_inserted(c.oid) {TABLES}"
    )))
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(
        rows.into_iter()
            .map(|(schema, table, n)| (format!("{schema}.{table}"), n.max(0) as u64))
            .collect(),
    ))
}

pub async fn database_exists(login: &PgLogin, name: &str) -> Result<bool> {
    let mut conn = connect(login, "postgres").await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    let _ = conn.close().await;
    Ok(exists)
}

/// Databases whose name starts with `prefix`.
pub async fn databases_with_prefix(login: &PgLogin, prefix: &str) -> Result<Vec<String>> {
    let mut conn = connect(login, "postgres").await?;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1",
    )
    .bind(prefix)
    .fetch_all(&mut conn)
    .await?;
    let _ = conn.close().await;
    Ok(names)
}

/// Creates an empty database `name` with the facts of the dumped one.
pub async fn create_database(login: &PgLogin, name: &str, facts: &DatabaseFacts) -> Result<()> {
    let mut conn = connect(login, "postgres").await?;
    let mut sql = format!("CREATE DATABASE {} TEMPLATE template0", ident(name));
    if !facts.owner.is_empty() {
        sql += &format!(" OWNER {}", ident(&facts.owner));
    }
    if !facts.encoding.is_empty() {
        sql += &format!(
            " ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            literal(&facts.encoding),
            literal(&facts.collate),
            literal(&facts.ctype)
        );
    }
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .with_context(|| format!("creating database {name}"))?;
    if let Some(grants) = &facts.grants {
        let mut statements = vec![format!(
            "REVOKE ALL ON DATABASE {} FROM PUBLIC",
            ident(name)
        )];
        for grant in grants {
            let privilege: String = grant
                .privilege
                .chars()
                .filter(|c| c.is_ascii_alphabetic() || *c == ' ')
                .collect();
            statements.push(format!(
                "GRANT {privilege} ON DATABASE {} TO {}{}",
                ident(name),
                grant.grantee,
                if grant.grantable {
                    " WITH GRANT OPTION"
                } else {
                    ""
                }
            ));
        }
        for statement in &statements {
            sqlx::query(sqlx::AssertSqlSafe(statement.as_str()))
                .execute(&mut conn)
                .await
                .with_context(|| format!("restoring the database privileges of {name}"))?;
        }
    }
    let _ = conn.close().await;
    Ok(())
}

/// `pg_restore` of a plain custom-format dump into the existing, empty
/// database `name`; stops at the first error.
pub async fn restore_file(login: &PgLogin, name: &str, dump: &Path) -> Result<()> {
    let mut command = tool("pg_restore", login);
    command
        .args(["--exit-on-error", "-d", name])
        .arg(dump)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let name = name.to_string();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut child = command.spawn().context("starting pg_restore")?;
        let _registered = super::interrupt::register(&child);
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let status = child.wait().context("waiting for pg_restore")?;
        if !status.success() {
            bail!(
                "pg_restore into {name} failed ({status}): {}",
                stderr.trim()
            );
        }
        Ok(())
    })
    .await
    .context("the pg_restore task")?
}

/// Drops `name` if it exists, ending its sessions.
pub async fn drop_database(login: &PgLogin, name: &str) -> Result<()> {
    let mut conn = connect(login, "postgres").await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        ident(name)
    )))
    .execute(&mut conn)
    .await
    .with_context(|| format!("dropping database {name}"))?;
    let _ = conn.close().await;
    Ok(())
}

/// Swaps `replacement` in as `live` under traffic: stops new connections
/// to `live` (`datallowconn = false`), ends its sessions (the services'
/// pools reconnect), then renames it to `previous` (when it exists) and
/// `replacement` to `live` in one transaction: both renames or neither.
/// Connections are allowed again on whatever is called `live` afterwards,
/// and on `previous`; when the swap fails, on the untouched `live`. A
/// kill in between leaves `datallowconn = false` behind, which
/// [`allow_connections`] (run by every recovery) repairs.
pub async fn swap(login: &PgLogin, live: &str, replacement: &str, previous: &str) -> Result<()> {
    let mut conn = connect(login, "postgres").await?;
    let result = swap_on(&mut conn, live, replacement, previous).await;
    if result.is_err() {
        let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
    }
    // Whatever happened, the database called `live` takes connections
    // (after a swap, the restored one never stopped taking them).
    let reopened = allow_connections_on(&mut conn, &[live, previous]).await;
    let _ = conn.close().await;
    match (result, reopened) {
        (Ok(()), _) => Ok(()),
        (Err(error), Ok(_)) => Err(error.context(format!("swapping {replacement} in as {live}"))),
        (Err(error), Err(reopen)) => Err(error.context(format!(
            "swapping {replacement} in as {live}; {live} still refuses connections ({reopen:#}): \
             `kisumctl restore ENV DATABASE --cleanup` allows them again"
        ))),
    }
}

async fn swap_on(
    conn: &mut PgConnection,
    live: &str,
    replacement: &str,
    previous: &str,
) -> Result<()> {
    if !exists_on(conn, live).await? {
        let sql = format!(
            "ALTER DATABASE {} RENAME TO {}",
            ident(replacement),
            ident(live)
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .map_err(plain)?;
        return Ok(());
    }
    let sql = format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", ident(live));
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await
        .map_err(plain)?;
    // No new session can start now; the ones left are ended, and the
    // renames retried while one of them is still on its way out.
    let mut attempt = 0;
    loop {
        attempt += 1;
        sqlx::query(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(live)
        .execute(&mut *conn)
        .await
        .map_err(plain)?;
        match rename_both(conn, live, replacement, previous).await {
            Ok(()) => return Ok(()),
            Err(error) if attempt < 10 && is_in_use(&error) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
            }
            Err(error) => return Err(plain(error)),
        }
    }
}

async fn rename_both(
    conn: &mut PgConnection,
    live: &str,
    replacement: &str,
    previous: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("BEGIN").execute(&mut *conn).await?;
    for (from, to) in [(live, previous), (replacement, live)] {
        let sql = format!("ALTER DATABASE {} RENAME TO {}", ident(from), ident(to));
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("COMMIT").execute(&mut *conn).await?;
    Ok(())
}

async fn exists_on(conn: &mut PgConnection, name: &str) -> Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// Allows connections again to those of `names` that exist and refuse
/// them (what a swap killed half-way leaves); answers the ones changed.
pub async fn allow_connections(login: &PgLogin, names: &[&str]) -> Result<Vec<String>> {
    let mut conn = connect(login, "postgres").await?;
    let changed = allow_connections_on(&mut conn, names).await;
    let _ = conn.close().await;
    changed
}

async fn allow_connections_on(conn: &mut PgConnection, names: &[&str]) -> Result<Vec<String>> {
    let mut changed = Vec::new();
    for name in names {
        let closed: Option<bool> =
            sqlx::query_scalar("SELECT NOT datallowconn FROM pg_database WHERE datname = $1")
                .bind(*name)
                .fetch_optional(&mut *conn)
                .await?;
        if closed == Some(true) {
            let sql = format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", ident(name));
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut *conn)
                .await
                .map_err(plain)
                .with_context(|| format!("allowing connections to {name} again"))?;
            changed.push(name.to_string());
        }
    }
    Ok(changed)
}

/// A database error as PostgreSQL's own message, without sqlx's prefix
/// and the server's source position.
fn plain(error: sqlx::Error) -> anyhow::Error {
    match error.as_database_error() {
        Some(_) => anyhow::anyhow!("{}", message(&error)),
        None => error.into(),
    }
}

/// What went wrong, for people: a database error as PostgreSQL's own
/// message (without sqlx's prefix and the `at line N` of PostgreSQL's
/// source that sqlx appends), anything else as sqlx says it.
pub fn message(error: &sqlx::Error) -> String {
    match error.as_database_error() {
        Some(db) => db.message().to_string(),
        None => error.to_string(),
    }
}

fn is_in_use(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "55006")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident("auth_db"), "\"auth_db\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
