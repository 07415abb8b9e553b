//! The mongoeco MongoDB-wire emulator on 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{
    PORT_ATTEMPTS, addr_in_use, format_tail, free_port, read_tail, wait_or_kill, workspace_root,
};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const LAUNCHER: &str = "scripts/mongoeco-launcher.py";
const VENV_PYTHON: &str = ".peers/venv-mongoeco/bin/python";

/// The mongoeco emulator (in-memory engine) behind `scripts/mongoeco-launcher.py`,
/// on a free port of 127.0.0.1. It speaks the MongoDB 7.0 wire protocol well
/// enough for the Rust `mongodb` driver; it is an emulator, not `mongod`.
/// Dropping it stops it.
pub struct Mongo {
    port: u16,
    child: Option<Child>,
    /// Launcher arguments that choose the engine (none: in memory).
    engine: Vec<String>,
    // Held so that the launcher never writes to a closed pipe.
    _stdout: Option<ChildStdout>,
}

/// The interpreter named by `KISUM_MONGOECO_PYTHON`, else the workspace's.
fn default_python() -> PathBuf {
    std::env::var_os("KISUM_MONGOECO_PYTHON")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(VENV_PYTHON))
}

impl Mongo {
    /// Starts the emulator with the interpreter named by `KISUM_MONGOECO_PYTHON`
    /// (exported by `scripts/peers-env.sh`), else the workspace's
    /// `.peers/venv-mongoeco/bin/python`.
    pub async fn start() -> Result<Mongo> {
        Self::start_with_python(default_python()).await
    }

    /// Starts the emulator on its SQLite engine, in file `path`, as
    /// `kisumctl deploy local` runs it: there, writes run on a thread of
    /// their own, and a batch a killed client had sent goes on after it.
    pub async fn start_sqlite(path: &std::path::Path) -> Result<Mongo> {
        let engine = [
            "--engine".to_string(),
            "sqlite".into(),
            "--path".into(),
            path.display().to_string(),
        ];
        Self::start_engine(default_python(), &engine).await
    }

    /// Starts the emulator with the given Python (one with `mongoeco[wire]`).
    pub async fn start_with_python(python: impl Into<PathBuf>) -> Result<Mongo> {
        Self::start_engine(python, &[]).await
    }

    async fn start_engine(python: impl Into<PathBuf>, engine: &[String]) -> Result<Mongo> {
        let t0 = Instant::now();
        let python = python.into();
        if !python.is_file() {
            return Err(crate::missing(
                &python.display().to_string(),
                "the Python of the mongoeco venv; set KISUM_MONGOECO_PYTHON or create \
                 .peers/venv-mongoeco",
            ));
        }
        let launcher = workspace_root().join(LAUNCHER);
        if !launcher.is_file() {
            bail!("{} is missing from the workspace", launcher.display());
        }
        let mut mongo = Mongo {
            port: 0,
            child: None,
            engine: engine.to_vec(),
            _stdout: None,
        };
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            match mongo.spawn(&python, &launcher, port).await {
                Ok(()) => {
                    crate::note(&format!(
                        "mongoeco on 127.0.0.1:{port} in {:.2} s",
                        t0.elapsed().as_secs_f64()
                    ));
                    return Ok(mongo);
                }
                Err((true, e)) => last = Some(e),
                Err((false, e)) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made"))).context(format!(
            "mongoeco: no free port after {PORT_ATTEMPTS} attempts"
        ))
    }

    /// A URI with long connect and server-selection timeouts: the emulator
    /// can be busy for seconds on large inserts, and the driver's monitor
    /// would otherwise give up on it.
    pub fn url(&self) -> String {
        format!(
            "mongodb://127.0.0.1:{}/?directConnection=true&connectTimeoutMS=60000\
             &serverSelectionTimeoutMS=60000",
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The launcher's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Err((port_in_use, error))`.
    async fn spawn(
        &mut self,
        python: &std::path::Path,
        launcher: &std::path::Path,
        port: u16,
    ) -> Result<(), (bool, anyhow::Error)> {
        // The launcher's stderr goes to an unnamed temporary file: read for
        // error messages, never left behind.
        let mut log = tempfile::tempfile()
            .and_then(|f| Ok((f.try_clone()?, f)))
            .context("creating a temporary file for the mongoeco log")
            .map_err(|e| (false, e))?;
        let (log_file, log) = (log.0, &mut log.1);
        let mut child = Command::new(python)
            .arg(launcher)
            .arg("--port")
            .arg(port.to_string())
            .arg("--exit-on-stdin-eof")
            .args(&self.engine)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", python.display()))
            .map_err(|e| (false, e))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        self.child = Some(child);

        // The first line is `ready PORT`, or end-of-file if it failed.
        let read = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let n = reader.read_line(&mut line);
            (n.map(|_| line), reader.into_inner())
        });
        let abort = tokio::time::timeout(READY_TIMEOUT, read).await;
        let (line, stdout) = match abort {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                self.stop();
                return Err((false, anyhow::anyhow!("reading the launcher's output: {e}")));
            }
            Err(_) => {
                // Killing the launcher ends the blocked read.
                self.stop();
                return Err((
                    false,
                    anyhow::anyhow!(
                        "mongoeco on port {port} not ready after {READY_TIMEOUT:?}\n{}",
                        format_tail("its stderr", &read_tail(log), 20)
                    ),
                ));
            }
        };
        let line = line.unwrap_or_default();
        if line.trim() == format!("ready {port}") {
            self.port = port;
            self._stdout = Some(stdout);
            return Ok(());
        }
        self.stop();
        let text = read_tail(log);
        let err = anyhow::anyhow!(
            "mongoeco launcher on port {port} did not start (first line: {line:?})\n{}",
            format_tail("its stderr", &text, 20)
        );
        Err((addr_in_use(&text), err))
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // End-of-file on stdin: the launcher closes the server and exits.
            drop(child.stdin.take());
            wait_or_kill(&mut child, Duration::from_secs(5));
        }
        self._stdout = None;
    }
}

impl Drop for Mongo {
    fn drop(&mut self) {
        self.stop();
    }
}
