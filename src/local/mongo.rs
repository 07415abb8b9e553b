//! The MongoDB-wire server of a local environment, for the Mongo-backed
//! modules (basic, market, touring): a real `mongod` when one is on PATH,
//! otherwise the mongoeco emulator (Python >= 3.13) through the launcher
//! that fixes its wire mismatches with the Rust driver, persisting to a
//! SQLite file in `<state-dir>/mongo`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::plan::{DataProcess, base_env, data_process, file_fingerprint};
use super::programs::{self, missing};
use super::state::{ProcessSpec, StateDir, StopSignal, write_atomic};

/// The launcher, embedded so that a matrix outside the repository works.
const LAUNCHER: &str = include_str!("../../scripts/mongoeco-launcher.py");

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MongoServer {
    Mongod(PathBuf),
    /// The Python interpreter of a venv with `mongoeco[wire]` installed.
    Emulator(PathBuf),
}

impl MongoServer {
    /// `mongod` on PATH; else the Python in `$KISUM_MONGOECO_PYTHON`; else
    /// the venv `scripts/peers.sh` makes in `<repo>/.peers/venv-mongoeco`.
    pub fn find(repo: &Path) -> anyhow::Result<MongoServer> {
        if let Some(mongod) = programs::find("mongod") {
            return Ok(MongoServer::Mongod(mongod));
        }
        let python = match std::env::var_os("KISUM_MONGOECO_PYTHON") {
            Some(python) => PathBuf::from(python),
            None => repo.join(".peers/venv-mongoeco/bin/python"),
        };
        if python.exists() {
            return Ok(MongoServer::Emulator(python));
        }
        Err(missing(
            "mongod, or the mongoeco emulator",
            &format!(
                "no mongod on PATH; no Python at {} (set KISUM_MONGOECO_PYTHON to the Python of a venv with mongoeco[wire])",
                python.display()
            ),
            "install the emulator with: bash scripts/peers.sh (it needs Python 3.13: set KISUM_PYTHON313 to a python3.13 when it is not at /root/.pyenv/versions/3.13.0/bin/python3.13)",
        ))
    }

    pub fn describe(&self) -> &'static str {
        match self {
            MongoServer::Mongod(_) => "mongod",
            MongoServer::Emulator(_) => "mongoeco emulator",
        }
    }

    pub fn version(&self) -> Option<String> {
        match self {
            MongoServer::Mongod(program) => programs::version_line(program, &["--version"]),
            MongoServer::Emulator(python) => programs::version_line(
                python,
                &[
                    "-c",
                    "import importlib.metadata as m; print('mongoeco ' + m.version('mongoeco'))",
                ],
            ),
        }
    }

    /// Creates the data directory (and writes the launcher).
    pub fn prepare(&self, state: &StateDir) -> anyhow::Result<()> {
        let dir = state.data("mongo");
        fs::create_dir_all(dir.join("db"))
            .with_context(|| format!("creating {}", dir.display()))?;
        if let MongoServer::Emulator(_) = self {
            let launcher = dir.join("mongoeco-launcher.py");
            if fs::read_to_string(&launcher).ok().as_deref() != Some(LAUNCHER) {
                write_atomic(&launcher, LAUNCHER.as_bytes())?;
            }
        }
        Ok(())
    }

    pub fn spec(&self, state: &StateDir, port: u16) -> ProcessSpec {
        let dir = state.data("mongo");
        let (program, argv) = match self {
            MongoServer::Mongod(program) => (
                program.clone(),
                vec![
                    program.display().to_string(),
                    "--dbpath".into(),
                    dir.join("db").display().to_string(),
                    "--port".into(),
                    port.to_string(),
                    "--bind_ip".into(),
                    "127.0.0.1".into(),
                ],
            ),
            MongoServer::Emulator(python) => (
                python.clone(),
                vec![
                    python.display().to_string(),
                    dir.join("mongoeco-launcher.py").display().to_string(),
                    "--port".into(),
                    port.to_string(),
                    "--engine".into(),
                    "sqlite".into(),
                    "--path".into(),
                    dir.join("db/mongoeco.sqlite").display().to_string(),
                ],
            ),
        };
        let mut env = base_env();
        env.insert("PYTHONUNBUFFERED".into(), "1".into());
        data_process(DataProcess {
            name: "mongo",
            argv,
            env,
            cwd: dir,
            run_as: None,
            stop_signal: StopSignal::Term,
            port,
            program: format!("{}:{}", file_fingerprint(&program), launcher_digest()),
        })
    }
}

/// The launcher's content, as part of the emulator's digest.
fn launcher_digest() -> String {
    use sha2::{Digest as _, Sha256};
    hex::encode(&Sha256::digest(LAUNCHER.as_bytes())[..8])
}
