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
    tokio::task::spawn_blocking(move || load_blocking(&snapshot))
        .await
        .context("the scratch Redis task")?
}

fn load_blocking(snapshot: &Path) -> Result<BTreeMap<String, u64>> {
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    std::fs::copy(snapshot, dir.path().join(RDB_FILE)).context("copying the snapshot")?;
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port();
    let mut server = Command::new("redis-server")
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
    let target = Target {
        id: "redis".into(),
        engine: super::EngineKind::Redis,
        name: "0".into(),
        cluster: "scratch".into(),
        credentials: None,
        host: "127.0.0.1".into(),
        port,
        rpo_minutes: 0,
        rto_minutes: 0,
        retention_days: 0,
        restore_priority: 0,
        persistent: true,
    };
    let result = (|| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let mut ping = cli(&target, None);
            ping.arg("PING");
            if run(ping, "PING").is_ok_and(|out| out.trim() == "PONG") {
                break;
            }
            if std::time::Instant::now() > deadline || server.try_wait()?.is_some() {
                bail!("the scratch redis-server did not load the snapshot");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let mut keyspace = cli(&target, None);
        keyspace.args(["INFO", "keyspace"]);
        Ok(parse_keyspace(&run(keyspace, "INFO keyspace")?))
    })();
    let _ = server.kill();
    let _ = server.wait();
    result
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
