//! Real peers for integration tests: PostgreSQL 15, Redis 7, the mongoeco
//! MongoDB-wire emulator and the moto AWS emulator, each started on a free
//! port of 127.0.0.1 (PostgreSQL
//! and Redis keep their files in a fresh temporary directory; mongoeco keeps
//! its data in memory).
//!
//! `bash scripts/peers.sh` installs what they need (Debian `postgresql` and
//! `redis-server`, and a Python 3.13 venv with `mongoeco[wire]` in
//! `.peers/venv-mongoeco`). A missing program is reported with its name and
//! that command.
//!
//! # Cleanup
//! Every peer stops when its value is dropped, which includes a test that
//! panics. Dropping is not the only guard: each server is paired with a
//! *watchdog* that holds the read end of a pipe whose write end only this
//! process holds (std opens pipes close-on-exec, so no other child inherits
//! it). When this process ends for any reason (normal exit, panic, `SIGKILL`),
//! the kernel closes the write end, the watchdog reads end-of-file and stops
//! the server. That is what stops [`Postgres::shared`], which lives in a
//! `static` and so is never dropped: `cargo test` exits the process when the
//! last test is done, and the watchdog then runs `pg_ctl stop -m immediate`
//! and removes the cluster's directory.
//!
//! - PostgreSQL: a `/bin/sh` watchdog that runs `pg_ctl stop` and `rm -rf`.
//! - Redis: a `/bin/sh` watchdog that sends `SIGKILL` to the server (which
//!   stays our direct child, so its pid cannot be reused while it runs).
//! - MongoDB: the launcher itself exits when its stdin reaches end-of-file.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

mod kube_api;
mod mongo;
mod moto;
mod postgres;
mod redis;
mod slow_client;

pub use kube_api::FakeKube;
pub use mongo::Mongo;
pub use moto::Moto;
pub use postgres::Postgres;
pub use redis::Redis;
pub use slow_client::trickle_headers;

/// The command that installs every peer, quoted in error messages.
pub const INSTALL_HINT: &str = "bash scripts/peers.sh";

/// How many free ports a start tries before giving up (another process may
/// take a port between the moment it is picked and the moment the server
/// binds it).
const PORT_ATTEMPTS: usize = 5;

/// A port of 127.0.0.1 that was free a moment ago: bound to port 0, read back,
/// released. A server started on it can still lose a race for it, which is why
/// every `start` retries on an "address in use" failure.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The workspace root (the directory holding `scripts/` and `.peers/`).
pub fn workspace_root() -> PathBuf {
    // services/testkit -> services -> root
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// True while process `pid` runs (a zombie waiting to be reaped counts as
/// gone).
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

pub(crate) fn is_root() -> bool {
    // /proc/self belongs to the effective uid of the process.
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Finds `name` on PATH, or in the sbin/bin directories that a minimal PATH
/// may lack.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/bin", "/usr/bin", "/usr/sbin", "/bin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

pub(crate) fn missing(program: &str, what: &str) -> anyhow::Error {
    anyhow::anyhow!("{program} not found ({what}); install the test peers with `{INSTALL_HINT}`")
}

pub(crate) fn require_program(name: &str, what: &str) -> Result<PathBuf> {
    find_program(name).ok_or_else(|| missing(name, what))
}

/// The last `lines` lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::File::open(path)
        .map(|mut f| read_tail(&mut f))
        .unwrap_or_default();
    format_tail(&path.display().to_string(), &text, lines)
}

/// Up to the last 16 KiB of an open file.
pub(crate) fn read_tail(f: &mut fs::File) -> String {
    let mut bytes = Vec::new();
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)))
        .is_ok()
    {
        let _ = f.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

pub(crate) fn format_tail(name: &str, text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    if tail.is_empty() {
        format!("({name} is empty)")
    } else {
        format!("last lines of {name}:\n{tail}")
    }
}

pub(crate) fn addr_in_use(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("address already in use")
}

/// Waits at most `timeout` for `child` to exit, then kills it; always reaps it.
pub(crate) fn wait_or_kill(child: &mut Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A `/bin/sh` process that blocks reading its stdin, a pipe whose write end
/// only this process holds, then runs `script`'s cleanup. It fires when
/// [`Watchdog::fire`] closes the pipe or when this process ends in any way.
pub(crate) struct Watchdog {
    child: Child,
}

impl Watchdog {
    /// `script` runs after `read` returns, with the line read (if any) in
    /// `$msg`; its positional parameters are `args`.
    pub(crate) fn spawn<S: AsRef<OsStr>>(script: &str, args: &[S]) -> Result<Self> {
        // Ctrl-C in a terminal goes to the whole process group: the watchdog
        // must outlive the test process to clean up after it.
        let full = format!("trap '' INT HUP\nmsg=\nread -r msg || :\n{script}");
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(full)
            .arg("kisum-testkit-watchdog")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the /bin/sh watchdog")?;
        Ok(Self { child })
    }

    /// Runs the cleanup now and waits for it (at most `timeout`). The script
    /// sees `message` (one line, may be empty) in `$msg`; when this process
    /// ends instead, `$msg` is empty.
    pub(crate) fn fire(mut self, message: &str, timeout: Duration) -> bool {
        // Taking stdin drops it at the end of this statement: end-of-file.
        if let Some(mut stdin) = self.child.stdin.take()
            && !message.is_empty()
        {
            let _ = writeln!(stdin, "{message}");
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => return false,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

/// Runs `cmd` to completion, failing with its output when it exits non-zero.
pub(crate) fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}: {cmd:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {cmd:?}\n{}",
            out.status,
            text.trim_end()
        );
    }
    Ok(text)
}

/// Start times go to stderr, which the test harness shows for failed tests
/// (or with `--nocapture`).
pub(crate) fn note(msg: &str) {
    eprintln!("kisum-testkit: {msg}");
}

/// The value of one `kisum_events_total{event, outcome}` sample in a
/// Prometheus exposition (0 when absent).
pub fn event_count(metrics: &str, event: &str, outcome: &str) -> u64 {
    let sample = format!(r#"kisum_events_total{{event="{event}",outcome="{outcome}"}} "#);
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&sample))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Runs service binary `binary` with `serve` and only the variables
/// `vars` (plus LOG_LEVEL=info), HTTP_PORT and INTERNAL_PORT both set to
/// one fixed port; answers whether it succeeded and its stderr.
pub fn serve_on_one_port(binary: &str, vars: &[(&str, &str)]) -> (bool, String) {
    let port = "18999";
    let output = std::process::Command::new(binary)
        .arg("serve")
        .env_clear()
        .envs(vars.iter().copied())
        .env("LOG_LEVEL", "info")
        .env("HTTP_PORT", port)
        .env("INTERNAL_PORT", port)
        .output()
        .expect("running the service binary");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success(), stderr)
}

/// Asserts that a service refused one port for both HTTP_PORT and
/// INTERNAL_PORT, naming both variables, in one message printed once.
pub fn assert_refused_one_port(outcome: (bool, String)) {
    let (ok, stderr) = outcome;
    assert!(!ok, "{stderr}");
    let said = "INTERNAL_PORT is invalid: equals HTTP_PORT (18999)";
    assert_eq!(stderr.matches(said).count(), 1, "once: {stderr}");
    assert!(
        stderr.contains("set HTTP_PORT and INTERNAL_PORT to two different ports"),
        "{stderr}"
    );
}
