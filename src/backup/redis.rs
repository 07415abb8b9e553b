//! Redis backups: an RDB snapshot streamed with `redis-cli --rdb -` (the
//! server forks and sends a consistent snapshot, as for a replica), taken
//! only when the matrix marks Redis persistent. The key counts come from
//! `INFO keyspace` just before the snapshot; keys that expire or are written
//! meanwhile can make them differ slightly from the snapshot.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use super::connection::Target;
use super::encrypt::Recipients;
use super::manifest::{FileEntry, FileSink};
use crate::secrets::Secret;

/// Name of the snapshot inside a backup.
pub const RDB_FILE: &str = "dump.rdb";

pub struct Dumped {
    pub file: FileEntry,
    pub counts: BTreeMap<String, u64>,
    pub tools: BTreeMap<String, String>,
}

fn cli(target: &Target, password: Option<&Secret>) -> Command {
    let mut command = Command::new("redis-cli");
    command
        .args(["-h", &target.host, "-p", &target.port.to_string()])
        .stdin(Stdio::null());
    match password {
        Some(password) => command.env("REDISCLI_AUTH", password.expose()),
        None => command.env_remove("REDISCLI_AUTH"),
    };
    command
}

fn run(mut command: Command, what: &str) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running redis-cli ({what}); is redis-tools installed?"))?;
    if !output.status.success() {
        bail!(
            "redis-cli {what} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `db0:keys=3,expires=0,avg_ttl=0` lines to `{"db0": 3}`.
pub fn parse_keyspace(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let (db, fields) = line.trim().split_once(':')?;
            if !db.starts_with("db") {
                return None;
            }
            let keys = fields.split(',').find_map(|f| f.strip_prefix("keys="))?;
            Some((db.to_string(), keys.parse().ok()?))
        })
        .collect()
}

pub async fn dump(
    target: &Target,
    password: Option<&Secret>,
    dir: &Path,
    recipients: &Recipients,
) -> Result<Dumped> {
    let (target, password, dir, recipients) = (
        target.clone(),
        password.cloned(),
        dir.to_path_buf(),
        recipients.clone(),
    );
    tokio::task::spawn_blocking(move || {
        dump_blocking(&target, password.as_ref(), &dir, &recipients)
    })
    .await
    .context("the Redis dump task")?
}

fn dump_blocking(
    target: &Target,
    password: Option<&Secret>,
    dir: &Path,
    recipients: &Recipients,
) -> Result<Dumped> {
    let mut tools = BTreeMap::new();
    let mut version = cli(target, None);
    version.arg("--version");
    tools.insert(
        "redis-cli".to_string(),
        run(version, "--version")?.trim().to_string(),
    );
    let mut info = cli(target, password);
    info.args(["INFO", "server"]);
    let server = run(info, "INFO server")?;
    if let Some(v) = server
        .lines()
        .find_map(|l| l.trim().strip_prefix("redis_version:"))
    {
        tools.insert("redis-server".into(), v.to_string());
    }
    let mut keyspace = cli(target, password);
    keyspace.args(["INFO", "keyspace"]);
    let counts = parse_keyspace(&run(keyspace, "INFO keyspace")?);

    let mut snapshot = cli(target, password);
    snapshot
        .args(["--rdb", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = snapshot.spawn().context("starting redis-cli --rdb")?;
    let _registered = super::interrupt::register(&child);
    let mut stdout = child.stdout.take().context("redis-cli has no stdout")?;
    let mut sink = FileSink::create(dir, RDB_FILE, recipients)?;
    std::io::copy(&mut stdout, &mut sink).context("writing the RDB snapshot")?;
    let file = sink.finish()?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "redis-cli --rdb failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    if file.plain_size < 9 {
        bail!("redis-cli --rdb produced no snapshot");
    }
    Ok(Dumped {
        file,
        counts,
        tools,
    })
}

/// Loads `snapshot` into a scratch `redis-server` on a free port of
/// 127.0.0.1 (no persistence, stopped afterwards) and answers its key
/// counts: proof that the snapshot loads, and what it holds.
pub async fn load_in_scratch_server(snapshot: &Path) -> Result<BTreeMap<String, u64>> {
    let snapshot = snapshot.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let server = ScratchServer::start(&snapshot)?;
        server.counts()
    })
    .await
    .context("the scratch Redis task")?
}

/// A `redis-server` on a free loopback port serving a snapshot, without
/// persistence; stopped when dropped.
pub struct ScratchServer {
    child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for ScratchServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ScratchServer {
    /// Starts it and waits until it has loaded `snapshot` (blocking).
    pub fn start(snapshot: &Path) -> Result<ScratchServer> {
        let dir = tempfile::tempdir().context("creating a scratch directory")?;
        std::fs::copy(snapshot, dir.path().join(RDB_FILE)).context("copying the snapshot")?;
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port();
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dbfilename", RDB_FILE])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting a scratch redis-server")?;
        let mut server = ScratchServer {
            child,
            port,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let mut ping = cli(&server.target(), None);
            ping.arg("PING");
            if run(ping, "PING").is_ok_and(|out| out.trim() == "PONG") {
                return Ok(server);
            }
            if std::time::Instant::now() > deadline || server.child.try_wait()?.is_some() {
                bail!("the scratch redis-server did not load the snapshot");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The directory it serves the snapshot from.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    fn target(&self) -> Target {
        Target {
            id: "redis".into(),
            engine: super::EngineKind::Redis,
            name: "0".into(),
            cluster: "scratch".into(),
            credentials: None,
            host: "127.0.0.1".into(),
            port: self.port,
            rpo_minutes: 0,
            rto_minutes: 0,
            retention_days: 0,
            restore_priority: 0,
            persistent: true,
        }
    }

    /// Key counts per database, `db0` first.
    pub fn counts(&self) -> Result<BTreeMap<String, u64>> {
        let mut keyspace = cli(&self.target(), None);
        keyspace.args(["INFO", "keyspace"]);
        Ok(parse_keyspace(&run(keyspace, "INFO keyspace")?))
    }
}

/// One database index of a Redis server, reached with the redis crate.
pub struct Server<'a> {
    pub host: &'a str,
    pub port: u16,
    pub password: Option<&'a Secret>,
}

impl Server<'_> {
    pub async fn connect(&self, db: u32) -> Result<redis::aio::MultiplexedConnection> {
        let auth = match self.password {
            Some(password) => format!(
                ":{}@",
                percent_encoding::utf8_percent_encode(
                    password.expose(),
                    percent_encoding::NON_ALPHANUMERIC
                )
            ),
            None => String::new(),
        };
        let url = format!("redis://{auth}{}:{}/{db}", self.host, self.port);
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("a Redis URL for {}: {:?}", self.host, e.kind()))?;
        client
            .get_multiplexed_async_connection()
            .await
            .with_context(|| {
                format!(
                    "connecting to Redis {}:{} database {db}",
                    self.host, self.port
                )
            })
    }

    /// Key counts per database (`INFO keyspace`).
    pub async fn keyspace(&self) -> Result<BTreeMap<String, u64>> {
        let mut conn = self.connect(0).await?;
        let info: String = redis::cmd("INFO")
            .arg("keyspace")
            .query_async(&mut conn)
            .await
            .context("INFO keyspace")?;
        Ok(parse_keyspace(&info))
    }

    /// `count` empty database indexes, highest first, none of `exclude`.
    pub async fn free_indexes(&self, count: usize, exclude: &[u32]) -> Result<Vec<u32>> {
        let mut conn = self.connect(0).await?;
        let databases: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("databases")
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        let total: u32 = databases.get(1).and_then(|n| n.parse().ok()).unwrap_or(16);
        let used = self.keyspace().await?;
        let free: Vec<u32> = (0..total)
            .rev()
            .filter(|n| !exclude.contains(n) && !used.contains_key(&format!("db{n}")))
            .take(count)
            .collect();
        if free.len() < count {
            bail!(
                "Redis has no {count} empty database index(es) to restore into (of {total}); \
                 `restore --cleanup` frees those of earlier restores"
            );
        }
        Ok(free)
    }

    pub async fn dbsize(&self, db: u32) -> Result<u64> {
        let mut conn = self.connect(db).await?;
        Ok(redis::cmd("DBSIZE").query_async(&mut conn).await?)
    }

    pub async fn flush(&self, db: u32) -> Result<()> {
        let mut conn = self.connect(db).await?;
        redis::cmd("FLUSHDB")
            .query_async::<()>(&mut conn)
            .await
            .with_context(|| format!("FLUSHDB of database {db}"))
    }

    /// `SWAPDB a b`: atomic, for every client at once.
    pub async fn swap(&self, a: u32, b: u32) -> Result<()> {
        let mut conn = self.connect(0).await?;
        redis::cmd("SWAPDB")
            .arg(a)
            .arg(b)
            .query_async::<()>(&mut conn)
            .await
            .with_context(|| format!("SWAPDB {a} {b}"))
    }

    pub async fn set(&self, db: u32, key: &str, value: &str) -> Result<()> {
        let mut conn = self.connect(db).await?;
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Whether `key` exists in `db`; deletes it when `delete`.
    pub async fn exists(&self, db: u32, key: &str) -> Result<bool> {
        let mut conn = self.connect(db).await?;
        Ok(redis::cmd("EXISTS")
            .arg(key)
            .query_async::<u64>(&mut conn)
            .await?
            > 0)
    }

    pub async fn delete(&self, db: u32, key: &str) -> Result<()> {
        let mut conn = self.connect(db).await?;
        redis::cmd("DEL")
            .arg(key)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }
}

/// Keys go over in batches of this many.
const COPY_BATCH: usize = 500;

/// Copies every key of database `from_db` of `from` into database `to_db`
/// of `to` with `DUMP`/`RESTORE ... REPLACE`, keeping the remaining time to
/// live; answers the keys `to_db` holds afterwards.
pub async fn copy_database(
    from: &Server<'_>,
    from_db: u32,
    to: &Server<'_>,
    to_db: u32,
) -> Result<u64> {
    let mut source = from.connect(from_db).await?;
    let mut target = to.connect(to_db).await?;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(COPY_BATCH)
            .query_async(&mut source)
            .await
            .context("SCAN")?;
        if !keys.is_empty() {
            let mut read = redis::pipe();
            for key in &keys {
                read.cmd("PTTL").arg(key).cmd("DUMP").arg(key);
            }
            let values: Vec<(i64, Option<Vec<u8>>)> =
                read.query_async(&mut source).await.context("DUMP")?;
            let mut write = redis::pipe();
            for (key, (ttl, payload)) in keys.iter().zip(values) {
                // -2: gone since the scan; -1: no expiry.
                let Some(payload) = payload.filter(|_| ttl != -2) else {
                    continue;
                };
                write
                    .cmd("RESTORE")
                    .arg(key)
                    .arg(ttl.max(0))
                    .arg(payload)
                    .arg("REPLACE")
                    .ignore();
            }
            write
                .query_async::<()>(&mut target)
                .await
                .context("RESTORE")?;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    to.dbsize(to_db).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_lines_become_counts() {
        let info =
            "# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=0\r\ndb2:keys=10,expires=0,avg_ttl=0\r\n";
        let counts = parse_keyspace(info);
        assert_eq!(
            counts,
            BTreeMap::from([("db0".into(), 3), ("db2".into(), 10)])
        );
    }
}
