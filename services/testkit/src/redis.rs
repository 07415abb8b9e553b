//! A throw-away Redis server on 127.0.0.1.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tempfile::TempDir;

use crate::{PORT_ATTEMPTS, Watchdog, addr_in_use, free_port, log_tail};

const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A `redis-server` on a free port of 127.0.0.1 with no persistence, running
/// as a direct child of the test process. [`Redis::stop`] and
/// [`Redis::restart`] let a test take it away and bring it back on the same
/// port; dropping it kills it.
pub struct Redis {
    port: u16,
    program: PathBuf,
    running: Option<Running>,
    dir: TempDir,
}

struct Running {
    child: Child,
    watchdog: Option<Watchdog>,
}

enum SpawnError {
    PortInUse(anyhow::Error),
    Other(anyhow::Error),
}

impl Redis {
    /// Starts a server on a free port and waits until it accepts connections.
    pub async fn start() -> Result<Redis> {
        let t0 = Instant::now();
        let program = crate::require_program("redis-server", "Debian package redis-server")?;
        let dir = tempfile::Builder::new()
            .prefix("kisum-redis-")
            .tempdir()
            .context("creating a temporary directory")?;
        let mut redis = Redis {
            port: 0,
            program,
            running: None,
            dir,
        };
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            redis.port = free_port()?;
            match redis.spawn().await {
                Ok(()) => {
                    crate::note(&format!(
                        "Redis on 127.0.0.1:{} in {:.2} s",
                        redis.port,
                        t0.elapsed().as_secs_f64()
                    ));
                    return Ok(redis);
                }
                Err(SpawnError::PortInUse(e)) => last = Some(e),
                Err(SpawnError::Other(e)) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made"))).context(format!(
            "Redis: no free port after {PORT_ATTEMPTS} attempts"
        ))
    }

    /// `redis://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref().map(|r| r.child.id())
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.running
            .as_mut()
            .is_some_and(|r| matches!(r.child.try_wait(), Ok(None)))
    }

    /// Kills the server (`SIGKILL`, like a crash) and waits until it is gone;
    /// the port is then refused. A no-op when it is not running.
    pub fn stop(&mut self) {
        self.halt(true);
    }

    /// Kills the server through its watchdog, which also removes the
    /// directory unless `keep_dir` (for a restart).
    fn halt(&mut self, keep_dir: bool) {
        if let Some(mut running) = self.running.take() {
            // The watchdog kills the server; the server stays unreaped (so
            // its pid cannot be reused) until the watchdog is done.
            if let Some(w) = running.watchdog.take() {
                w.fire(if keep_dir { "keep" } else { "" }, Duration::from_secs(5));
            }
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
    }

    /// Stops the server if it runs, then starts a new, empty one on the same
    /// port and waits until it accepts connections.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop();
        // A port freed a moment ago may still be held by the old socket for a
        // few milliseconds; redis-server sets SO_REUSEADDR, so a short retry
        // covers it. Fails if another process has taken the port.
        let mut last = None;
        for _ in 0..3 {
            match self.spawn().await {
                Ok(()) => return Ok(()),
                Err(SpawnError::PortInUse(e)) => last = Some(e),
                Err(SpawnError::Other(e)) => return Err(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
            .context(format!("Redis: port {} is taken", self.port))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    async fn spawn(&mut self) -> Result<(), SpawnError> {
        let other = SpawnError::Other;
        let log = self.log_path();
        let _ = fs::remove_file(&log);
        let child = Command::new(&self.program)
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "yes", "--dir"])
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))
            .map_err(other)?;
        let args = [
            child.id().to_string(),
            self.dir.path().display().to_string(),
        ];
        let mut running = Running {
            child,
            watchdog: None,
        };
        // At this process's end ($msg empty) it also removes the directory.
        let script = "kill -KILL \"$1\" 2>/dev/null\n[ \"$msg\" = keep ] || rm -rf \"$2\"\nexit 0";
        match Watchdog::spawn(script, &args) {
            Ok(w) => running.watchdog = Some(w),
            Err(e) => {
                let _ = running.child.kill();
                let _ = running.child.wait();
                return Err(other(e));
            }
        }
        self.running = Some(running);

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Ready to accept connections") {
                return Ok(());
            }
            let exited = self
                .running
                .as_mut()
                .map(|r| r.child.try_wait())
                .and_then(|r| r.ok().flatten());
            if let Some(status) = exited {
                self.stop();
                let err = anyhow::anyhow!(
                    "redis-server on port {} exited ({status})\n{}",
                    self.port,
                    log_tail(&log, 15)
                );
                return Err(if addr_in_use(&text) {
                    SpawnError::PortInUse(err)
                } else {
                    SpawnError::Other(err)
                });
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(other(anyhow::anyhow!(
                    "redis-server on port {} not ready after {READY_TIMEOUT:?}\n{}",
                    self.port,
                    log_tail(&log, 15)
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The server's working directory (empty: nothing is persisted).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.halt(false);
    }
}
