//! A throw-away PostgreSQL cluster on 127.0.0.1.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sqlx::{Connection, PgConnection};
use tempfile::TempDir;

use crate::{PORT_ATTEMPTS, Watchdog, addr_in_use, free_port, log_tail, run};

const SUPERUSER: &str = "kisum";
const DEFAULT_BINDIR: &str = "/usr/lib/postgresql/15/bin";

/// Settings for a disposable cluster: no durability, loopback only.
const CONF: &str = "
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
log_min_messages = warning
";

/// A PostgreSQL 15 server with its own cluster in a temporary directory,
/// superuser `kisum`, trust authentication on 127.0.0.1 and the unix socket
/// only, listening on a free port of 127.0.0.1. Dropping it stops the server
/// (`pg_ctl stop -m immediate`) and removes the directory.
///
/// `initdb` plus start takes a second or two; tests that only need a database
/// of their own should use [`Postgres::shared`] and
/// [`Postgres::create_unique_database`].
pub struct Postgres {
    port: u16,
    data: PathBuf,
    watchdog: Option<Watchdog>,
    stop_cmd: Vec<String>,
    databases: AtomicU64,
    // Last: removed after the watchdog has stopped the server.
    dir: TempDir,
}

impl Postgres {
    /// Creates and starts a new cluster.
    pub async fn start() -> Result<Postgres> {
        tokio::task::spawn_blocking(Self::start_blocking)
            .await
            .context("PostgreSQL start task")?
    }

    /// One cluster per test process, started by the first call (which blocks
    /// for the one or two seconds that takes) and shared by every test of the
    /// binary. Give each test its own database with
    /// [`Postgres::create_unique_database`].
    ///
    /// A `static` is never dropped; the server is stopped and its directory
    /// removed by its watchdog when the test process exits (see the crate
    /// documentation). Panics with the start error if the server cannot start.
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Result<Postgres, String>> = OnceLock::new();
        match SHARED.get_or_init(|| Self::start_blocking().map_err(|e| format!("{e:#}"))) {
            Ok(pg) => pg,
            Err(e) => panic!("the shared PostgreSQL could not start: {e}"),
        }
    }

    /// `postgres://kisum@127.0.0.1:PORT/DB?sslmode=disable`
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory (inside the temporary directory).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The postmaster's process id, from `postmaster.pid`.
    pub fn pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// `CREATE DATABASE name`. Names are limited to ASCII letters, digits and
    /// `_` (at most 63 bytes), so they never need quoting rules beyond `"`.
    pub async fn create_database(&self, name: &str) -> Result<()> {
        if name.is_empty()
            || name.len() > 63
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            bail!("database name {name:?}: use 1-63 ASCII letters, digits or '_'");
        }
        let mut conn = PgConnection::connect(&self.url("postgres"))
            .await
            .with_context(|| format!("connecting to PostgreSQL on port {}", self.port))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        conn.close().await.ok();
        Ok(())
    }

    /// Creates a database with a name unique in this cluster, starting with
    /// `prefix`, and returns its URL.
    pub async fn create_unique_database(&self, prefix: &str) -> Result<String> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let prefix: String = prefix
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(40)
            .collect();
        let name = format!("{prefix}_{n}");
        self.create_database(&name).await?;
        Ok(self.url(&name))
    }

    fn start_blocking() -> Result<Postgres> {
        let t0 = Instant::now();
        let bindir = bindir()?;
        let (initdb, pg_ctl) = (bindir.join("initdb"), bindir.join("pg_ctl"));
        let root = crate::is_root();

        // initdb and postgres refuse to run as root: run them as `postgres`,
        // in a directory that user owns. /tmp, not $TMPDIR, which may lie
        // inside root's home where `postgres` cannot enter.
        let (dir, as_user): (TempDir, Vec<String>) = if root {
            let runuser = crate::require_program("runuser", "util-linux")?;
            let (uid, gid) = postgres_ids()?;
            let dir = tempfile::Builder::new()
                .prefix("kisum-pg-")
                .tempdir_in("/tmp")
                .context("creating a temporary directory in /tmp")?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .context("giving the cluster directory to the postgres user")?;
            let prefix = vec![
                runuser.display().to_string(),
                "-u".into(),
                "postgres".into(),
                "--".into(),
            ];
            (dir, prefix)
        } else {
            let dir = tempfile::Builder::new()
                .prefix("kisum-pg-")
                .tempdir()
                .context("creating a temporary directory")?;
            (dir, Vec::new())
        };
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))?;
        let data = dir.path().join("data");
        let sockets = dir.path().join("sockets");
        let log = dir.path().join("postgres.log");

        let command = |program: &Path| {
            let mut argv = as_user.clone();
            argv.push(program.display().to_string());
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            cmd
        };

        let mut stop_cmd: Vec<String> = as_user.clone();
        stop_cmd.extend([
            pg_ctl.display().to_string(),
            "-D".into(),
            data.display().to_string(),
            "stop".into(),
            "-m".into(),
            "immediate".into(),
            "-w".into(),
            "-t".into(),
            "30".into(),
        ]);
        // From here on, Drop (or this process's end) cleans up.
        let mut pg = Postgres {
            port: 0,
            data: data.clone(),
            watchdog: None,
            stop_cmd,
            databases: AtomicU64::new(0),
            dir,
        };
        let mut watch_args = vec![pg.dir.path().display().to_string()];
        watch_args.extend(pg.stop_cmd.iter().cloned());
        pg.watchdog = Some(Watchdog::spawn(
            "d=$1; shift\n[ -f \"$d/data/postmaster.pid\" ] && \"$@\"\nrm -rf \"$d\"",
            &watch_args,
        )?);

        run(
            command(&initdb)
                .arg("-D")
                .arg(&data)
                .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8"])
                .args(["--locale=C.UTF-8", "--no-sync", "--no-instructions"]),
            "initdb",
        )?;
        fs::create_dir(&sockets)?;
        if root {
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(&sockets, Some(uid), Some(gid))?;
        }
        // Trust, but only over the unix socket (inside our directory) and
        // 127.0.0.1; the server listens nowhere else.
        fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all all 127.0.0.1/32 trust\n",
        )?;
        let mut conf = fs::read_to_string(data.join("postgresql.conf"))?;
        conf.push_str(CONF);
        conf.push_str(&format!(
            "unix_socket_directories = '{}'\n",
            sockets.display()
        ));
        fs::write(data.join("postgresql.conf"), conf)?;

        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let _ = fs::remove_file(&log);
            let started = run(
                command(&pg_ctl)
                    .arg("-D")
                    .arg(&data)
                    .arg("-l")
                    .arg(&log)
                    .args(["-w", "-t", "30", "-o"])
                    .arg(format!("-p {port}"))
                    .arg("start"),
                "pg_ctl start",
            );
            match started {
                Ok(_) => {
                    pg.port = port;
                    crate::note(&format!(
                        "PostgreSQL on 127.0.0.1:{port} in {:.2} s",
                        t0.elapsed().as_secs_f64()
                    ));
                    return Ok(pg);
                }
                Err(e) => {
                    let tail = log_tail(&log, 20);
                    if !addr_in_use(&tail) {
                        bail!("{e:#}\n{tail}");
                    }
                    last_err = Some(e.context(tail));
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no attempt made"))).context(format!(
            "PostgreSQL: no free port after {PORT_ATTEMPTS} attempts"
        ))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let stopped = self
            .watchdog
            .take()
            .is_some_and(|w| w.fire("", Duration::from_secs(40)));
        if !stopped && self.data.join("postmaster.pid").exists() {
            let _ = Command::new(&self.stop_cmd[0])
                .args(&self.stop_cmd[1..])
                .stdin(std::process::Stdio::null())
                .output();
        }
        // TempDir removes whatever the watchdog left.
    }
}

fn bindir() -> Result<PathBuf> {
    let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("KISUM_PG_BINDIR").map(PathBuf::from) {
        if has_tools(&dir) {
            return Ok(dir);
        }
        bail!("KISUM_PG_BINDIR={} has no initdb/pg_ctl", dir.display());
    }
    let default = PathBuf::from(DEFAULT_BINDIR);
    if has_tools(&default) {
        return Ok(default);
    }
    if let Some(pg_config) = crate::find_program("pg_config")
        && let Ok(out) = Command::new(pg_config).arg("--bindir").output()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_tools(&dir) {
            return Ok(dir);
        }
    }
    Err(crate::missing(
        "initdb/pg_ctl",
        "PostgreSQL 15 server, Debian package postgresql; looked in \
         /usr/lib/postgresql/15/bin and `pg_config --bindir`",
    ))
}

/// uid and gid of the `postgres` user that the Debian package creates.
fn postgres_ids() -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<u32> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .context("running `id`")?;
        if !out.status.success() {
            return Err(crate::missing(
                "user postgres",
                "created by the Debian package postgresql",
            ));
        }
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .context("parsing `id` output")
    };
    Ok((id("-u")?, id("-g")?))
}
