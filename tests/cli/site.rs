//! A scratch copy of the matrix whose `local` environment points at the
//! test peers (or whose `dev` environment reaches Route53 on moto), with
//! the real binary run against it: shared by the backup, database, dns
//! and tls tests.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kisum_testkit::Postgres;
use serde_json::Value;
use sqlx::{Connection, PgConnection};

use crate::common::scratch_copy;

/// A scratch matrix whose `local` environment points at test peers.
pub struct Site {
    dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl Site {
    pub fn new(postgres_port: u16) -> Site {
        let dir = scratch_copy();
        let site = Site { dir, env: vec![] };
        site.edit("environments/local.yaml", |text| {
            text.replace("port: 25432", &format!("port: {postgres_port}"))
        });
        site.secret("local-postgres-superuser", "username", "kisum");
        site
    }

    /// A scratch matrix whose `dev` environment reaches Route53 at
    /// `endpoint` and keeps its secrets in local files; nothing points at
    /// a real ACME directory or AWS.
    pub fn dev(endpoint: &str) -> Site {
        let site = Site {
            dir: scratch_copy(),
            env: crate::common::sealed_aws(),
        };
        site.edit("environments/dev.yaml", |t| {
            t.replace(
                "  managed: true\n",
                &format!("  managed: true\n  endpoint: {endpoint}\n"),
            )
            .replace(
                "  backend: aws-secrets-manager\n  account: \"123456789012\"\n  region: eu-west-1\n  prefix: kisum/dev/\n",
                "  backend: local-files\n  path: .kisum/dev/secrets\n",
            )
        });
        // No ACME directory outside this machine, even by mistake.
        site.edit("environments/base.yaml", |t| {
            t.replace(
                "https://acme-v02.api.letsencrypt.org/directory",
                "https://127.0.0.1:9/directory",
            )
        });
        site
    }

    /// A scratch matrix whose `dev` environment reaches Route53 at
    /// `route53` and keeps its secrets in Secrets Manager at
    /// `secrets_manager` (both loopback), its database and Redis servers
    /// a dead loopback port, and no real ACME directory.
    pub fn dev_on_aws(route53: &str, secrets_manager: &str) -> Site {
        let site = Site {
            dir: scratch_copy(),
            env: crate::common::sealed_aws(),
        };
        let dead = kisum_testkit::free_port().unwrap();
        site.edit("environments/dev.yaml", |t| {
            let text = t
                .replace(
                    "  managed: true\n",
                    &format!("  managed: true\n  endpoint: {route53}\n"),
                )
                .replace(
                    "  prefix: kisum/dev/\n",
                    &format!("  prefix: kisum/dev/\n  endpoint: {secrets_manager}\n"),
                );
            let mut lines: Vec<String> = Vec::new();
            for line in text.lines() {
                match (line.find("{ host: "), line.find(", cidr:")) {
                    (Some(start), Some(end)) if line.contains(".kisum.internal") => {
                        lines.push(format!(
                            "{}{{ host: 127.0.0.1, port: {dead}{}",
                            &line[..start],
                            &line[end..]
                        ))
                    }
                    _ => lines.push(line.to_string()),
                }
            }
            lines.join("\n") + "\n"
        });
        site.edit("environments/base.yaml", |t| {
            t.replace(
                "https://acme-v02.api.letsencrypt.org/directory",
                "https://127.0.0.1:9/directory",
            )
        });
        site
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn edit(&self, file: &str, change: impl FnOnce(&str) -> String) {
        let path = self.root().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let changed = change(&text);
        assert_ne!(changed, text, "{file} did not change");
        std::fs::write(&path, changed).unwrap();
    }

    pub fn secrets_dir(&self) -> PathBuf {
        self.root().join(".kisum/local/secrets")
    }

    pub fn secret(&self, secret: &str, key: &str, value: &str) {
        let dir = self.secrets_dir().join(secret);
        std::fs::create_dir_all(&dir).unwrap();
        for d in [self.secrets_dir(), dir.clone()] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let path = dir.join(key);
        std::fs::write(&path, value).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// A value of the site's secret store.
    pub fn read_secret(&self, secret: &str, key: &str) -> String {
        std::fs::read_to_string(self.secrets_dir().join(secret).join(key)).unwrap()
    }

    /// Starts `kisumctl ARGS` and kills it with SIGKILL as soon as `ready`
    /// answers something, polling every 20 ms for up to two minutes; the
    /// command must still be running then. Answers what `ready` answered.
    pub async fn kill_when<T>(
        &self,
        args: &[&str],
        mut ready: impl AsyncFnMut() -> Option<T>,
    ) -> T {
        let mut child = self
            .command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let found = wait_for(&mut child, args, &mut ready).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "{args:?} ended before it could be killed"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        found
    }

    /// Starts kisumctl with `args`, waits until `ready` answers, then sends
    /// `signal` (`INT`, `TERM`) to its pid alone and waits for it to end.
    /// Answers what `ready` found, the exit code, stderr, the pids of its
    /// children just before the signal, and the seconds from the signal to
    /// its end.
    pub async fn signal_when<T>(
        &self,
        args: &[&str],
        signal: &str,
        ready: impl AsyncFnMut() -> Option<T>,
    ) -> Signalled<T> {
        self.signalled(args, signal, false, ready).await
    }

    /// Like [`Site::signal_when`], with kisumctl leading a process group of
    /// its own and the signal sent to the whole group, as a terminal's
    /// Ctrl-C does: its children get it too.
    pub async fn signal_group_when<T>(
        &self,
        args: &[&str],
        signal: &str,
        ready: impl AsyncFnMut() -> Option<T>,
    ) -> Signalled<T> {
        self.signalled(args, signal, true, ready).await
    }

    async fn signalled<T>(
        &self,
        args: &[&str],
        signal: &str,
        group: bool,
        mut ready: impl AsyncFnMut() -> Option<T>,
    ) -> Signalled<T> {
        let mut command = self.command(args);
        if group {
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
            text
        });
        let found = wait_for(&mut child, args, &mut ready).await;
        let children = children_of(child.id());
        let sent = std::time::Instant::now();
        let kill = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg("--")
            .arg(if group {
                format!("-{}", child.id())
            } else {
                child.id().to_string()
            })
            .status()
            .unwrap();
        assert!(kill.success());
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if sent.elapsed() > std::time::Duration::from_secs(30) {
                child.kill().unwrap();
                panic!("{args:?} still ran 30 s after SIG{signal}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        Signalled {
            found,
            code: status.code(),
            stderr: reader.join().unwrap(),
            children,
            seconds: sent.elapsed().as_secs_f64(),
        }
    }

    pub fn store(&self) -> PathBuf {
        self.root().join(".kisum/local/backups")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kisumctl"));
        command
            .args(args)
            .current_dir(self.root())
            .env_remove("KISUM_MATRIX")
            .env_remove("KISUM_ACME_DIRECTORY")
            .env_remove("KISUM_ACME_CA_ROOT")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL_ROUTE_53")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("kisumctl runs")
    }

    /// Runs and asserts the exit code, printing both streams on failure.
    pub fn expect(&self, args: &[&str], code: i32) -> Output {
        crate::common::assert_exit(args, self.run(args), code)
    }

    pub fn json(&self, args: &[&str], code: i32) -> Value {
        let output = self.expect(args, code);
        serde_json::from_slice(&output.stdout).expect("a JSON document")
    }

    /// The commands of `env`'s journal, oldest first, each as
    /// `(command, result, exit)`, after checking every record names the
    /// environment, who ran it and how long it took.
    pub fn journal(&self, env: &str) -> Vec<(String, String, i64)> {
        let document = self.json(&["journal", env, "-n", "100", "-o", "json"], 0);
        let records = document["records"].as_array().expect("records");
        records
            .iter()
            .map(|record| {
                assert_eq!(record["environment"], env, "{record}");
                assert!(record["who"].as_str().is_some_and(|w| !w.is_empty()));
                // Unknown (null) only for a run recorded after it was killed.
                let interrupted = record["result"] == "interrupted";
                assert!(record["duration_ms"].is_u64() || interrupted, "{record}");
                let text = |field: &str| record[field].as_str().unwrap_or_default().to_string();
                (
                    text("command"),
                    text("result"),
                    record["exit"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    /// The result of the newest record of the local journal.
    pub fn last_journal_result(&self) -> String {
        let journal = self.journal("local");
        journal.last().expect("a journal record").1.clone()
    }

    pub fn backup(&self, database: &str) -> Value {
        let document = self.json(&["backup", "local", database, "-o", "json"], 0);
        document["backups"][0]["manifest"].clone()
    }
}

pub async fn connect(pg: &Postgres, db: &str) -> PgConnection {
    PgConnection::connect(&pg.url(db)).await.unwrap()
}

pub async fn exec(conn: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Waits (up to 120 s) until `ready` answers while `child` runs.
async fn wait_for<T>(
    child: &mut std::process::Child,
    args: &[&str],
    ready: &mut impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "{args:?} never got there"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "{args:?} ended before it could be stopped"
        );
        if let Some(found) = ready().await {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// How a run stopped by [`Site::signal_when`] ended.
pub struct Signalled<T> {
    pub found: T,
    pub code: Option<i32>,
    pub stderr: String,
    /// Its child processes just before the signal.
    pub children: Vec<u32>,
    pub seconds: f64,
}

/// The pids whose parent is `pid` (from /proc).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The fields after the command name (which may hold spaces) start
        // with the state, then the parent pid.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(pid) {
            found.push(child);
        }
    }
    found
}

/// Whether process `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|s| s != "Z"))
        })
        .unwrap_or(false)
}
