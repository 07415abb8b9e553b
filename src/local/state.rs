//! The files `deploy local`, its supervisor, `status`, `logs` and `down`
//! share in an environment's state directory. None of them ever holds a
//! secret value: processes receive secrets as `<NAME>_FILE` paths.
//!
//! ```text
//! <state-dir>/
//!   deploy.lock         flock of the running deploy (or down); holds its pid
//!   deploy-state.json   the step the last deploy reached   (DeployRecord)
//!   desired.json        what the supervisor must run        (DesiredState)
//!   status.json         what the supervisor runs            (SupervisorStatus)
//!   supervisor.pid      the supervisor's pid
//!   supervisor.stop     present: the supervisor stops everything and exits
//!   endpoints.json      public and internal URL of every service
//!   logs/<process>.log  each process's stdout and stderr; supervisor.log
//!   postgres/ redis/ mongo/   the data services' files
//!   secrets/            the secret store (`secrets.path` of the matrix)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Creates `dir` and its missing parents with mode 0755 (explicitly, not
/// left to the umask): the data services run as other users (PostgreSQL
/// as `postgres` under root) and must traverse the state directory to
/// reach their own. Private directories inside it (the secret store, the
/// data directories) are made 0700 by their owners. Existing directories
/// keep their mode.
pub fn create_dirs(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    for path in missing.into_iter().rev() {
        if path.as_os_str().is_empty() {
            continue;
        }
        match fs::DirBuilder::new().mode(0o755).create(path) {
            Ok(()) => fs::set_permissions(path, fs::Permissions::from_mode(0o755))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The paths inside one environment's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// The lock file of a smoke run, in the state directory.
pub const SMOKE_LOCK: &str = "smoke.lock";

/// How long a smoke run waits for another one of the environment.
pub const SMOKE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn lock(&self) -> PathBuf {
        self.root.join("deploy.lock")
    }

    /// Held by a smoke run (each toggles the smoke company's add-on, so
    /// two at once fail each other).
    pub fn smoke_lock(&self) -> PathBuf {
        self.root.join(SMOKE_LOCK)
    }

    pub fn deploy_record(&self) -> PathBuf {
        self.root.join("deploy-state.json")
    }

    pub fn desired(&self) -> PathBuf {
        self.root.join("desired.json")
    }

    pub fn status(&self) -> PathBuf {
        self.root.join("status.json")
    }

    pub fn supervisor_pid(&self) -> PathBuf {
        self.root.join("supervisor.pid")
    }

    /// One empty file per process to restart on purpose (a restore that
    /// moved its database); the supervisor removes each as it acts.
    pub fn restart_requests(&self) -> PathBuf {
        self.root.join("restart-requests")
    }

    pub fn stop_request(&self) -> PathBuf {
        self.root.join("supervisor.stop")
    }

    pub fn endpoints(&self) -> PathBuf {
        self.root.join("endpoints.json")
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// The log file of a process (or of `supervisor`).
    pub fn log(&self, process: &str) -> PathBuf {
        self.logs().join(format!("{process}.log"))
    }

    /// The directory of one data service (`postgres`, `redis`, `mongo`).
    pub fn data(&self, service: &str) -> PathBuf {
        self.root.join(service)
    }
}

/// What kind of readiness a process answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Probe {
    /// A TCP connection to 127.0.0.1:port is accepted.
    Tcp { port: u16 },
    /// Redis at 127.0.0.1:port answers a PING (any reply, a refusal to
    /// an unauthenticated client included): a stopped or hung Redis
    /// accepts connections and answers nothing.
    Resp { port: u16 },
    /// PostgreSQL at 127.0.0.1:port answers the SSL request every client
    /// opens with (one byte, before any login): a stopped or hung server
    /// accepts connections and answers nothing.
    Postgres { port: u16 },
    /// `GET url` answers 2xx.
    Http { url: String },
}

/// The signal that asks a process to stop quickly and cleanly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopSignal {
    /// SIGTERM: the services drain and exit, Redis and mongod save and exit.
    Term,
    /// SIGINT: PostgreSQL's fast shutdown (SIGTERM would wait for clients).
    Int,
}

/// One process the supervisor runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    pub name: String,
    /// Release wave: data services 0, then the matrix's `release-wave`.
    /// Started in increasing order, stopped in decreasing order.
    pub wave: u8,
    pub argv: Vec<String>,
    /// The whole environment of the process; secrets only as `_FILE` paths.
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    /// `(uid, gid)` to run as (PostgreSQL refuses to run as root).
    pub run_as: Option<(u32, u32)>,
    pub stop_signal: StopSignal,
    /// Public port first, then the internal one.
    pub ports: Vec<u16>,
    pub probe: Probe,
    /// The program's version where it is known at plan time (data
    /// services); informational, not part of the digest.
    #[serde(default)]
    pub version: Option<String>,
    /// Changes when anything above or the program file changes; the
    /// supervisor restarts a process whose digest changed.
    pub digest: String,
}

/// What the supervisor must run. Written by `deploy` and `down --only`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    pub processes: Vec<ProcessSpec>,
    /// Processes stopped on purpose (`down --only`) until the next deploy.
    #[serde(default)]
    pub held: BTreeSet<String>,
}

impl DesiredState {
    pub fn get(&self, name: &str) -> Option<&ProcessSpec> {
        self.processes.iter().find(|p| p.name == name)
    }

    /// Adds or replaces the processes of `specs`, keeping every other one.
    pub fn upsert(&mut self, specs: &[ProcessSpec]) {
        for spec in specs {
            match self.processes.iter_mut().find(|p| p.name == spec.name) {
                Some(existing) => *existing = spec.clone(),
                None => self.processes.push(spec.clone()),
            }
        }
        self.processes
            .sort_by(|a, b| (a.wave, &a.name).cmp(&(b.wave, &b.name)));
    }
}

/// A process as the supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    Running,
    /// Exited; waiting before the next start.
    Backoff,
    /// Stopped on purpose (`down --only`).
    Held,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStatus {
    pub state: RunState,
    /// Of the spec last started: a new supervisor stops what an old one
    /// left running in this order and with this signal.
    pub wave: u8,
    pub stop_signal: StopSignal,
    pub pid: Option<u32>,
    /// The digest of the spec the running process was started from.
    pub digest: String,
    /// Unix seconds of the last start.
    pub started_at: u64,
    /// Starts that followed an unplanned exit (a crash, a kill). Planned
    /// restarts (a changed spec, the end of a hold, a new supervisor) do
    /// not count.
    pub restarts: u32,
    /// How the last run ended, e.g. `exit status 1` or `killed by signal 9`.
    pub last_exit: Option<String>,
    /// The program (`argv[0]`) last started: a process found by its pid is
    /// only taken for this one while its command line still names it.
    #[serde(default)]
    pub program: String,
    /// Unplanned exits in a row, each within 30 s of its start; 0 again
    /// after 30 s of uptime or a new spec.
    #[serde(default)]
    pub failures: u32,
}

/// Written by the supervisor after every change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorStatus {
    pub pid: u32,
    pub updated_at: u64,
    pub processes: BTreeMap<String, ProcessStatus>,
}

/// How far the last deploy got (`deploy-state.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRecord {
    pub pid: u32,
    pub started_at: u64,
    /// The step being worked on, or the last one when `completed`.
    pub step: String,
    pub completed: bool,
    /// Why the deploy stopped, when it failed (rather than being killed).
    #[serde(default)]
    pub failed: Option<String>,
    /// Digest of the smoke fixtures seeded last; seeding is skipped while
    /// it matches.
    #[serde(default)]
    pub seeded: Option<String>,
}

/// Reads a JSON file; `None` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("{} is not a valid state file", path.display()))
}

/// Writes a JSON file atomically (temporary file, then rename).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write_atomic(path, text.as_bytes())
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let temporary = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file =
        fs::File::create(&temporary).with_context(|| format!("writing {}", temporary.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", temporary.display()))?;
    fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, wave: u8, digest: &str) -> ProcessSpec {
        ProcessSpec {
            name: name.into(),
            wave,
            argv: vec!["/bin/true".into()],
            env: BTreeMap::new(),
            cwd: "/".into(),
            run_as: None,
            stop_signal: StopSignal::Term,
            ports: vec![1],
            probe: Probe::Tcp { port: 1 },
            version: None,
            digest: digest.into(),
        }
    }

    #[test]
    fn upsert_replaces_by_name_and_keeps_wave_order() {
        let mut desired = DesiredState::default();
        desired.upsert(&[spec("auth", 2, "a")]);
        desired.upsert(&[spec("postgres", 0, "p"), spec("auth", 2, "b")]);
        let names: Vec<_> = desired.processes.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["postgres", "auth"]);
        assert_eq!(desired.get("auth").unwrap().digest, "b");
    }

    #[test]
    fn state_files_round_trip_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        assert_eq!(
            read_json::<DeployRecord>(&state.deploy_record()).unwrap(),
            None
        );
        let record = DeployRecord {
            pid: 7,
            started_at: 1,
            step: "migrate".into(),
            completed: false,
            failed: None,
            seeded: None,
        };
        write_json(&state.deploy_record(), &record).unwrap();
        let back: DeployRecord = read_json(&state.deploy_record()).unwrap().unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn a_damaged_state_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        fs::write(&path, "{not json").unwrap();
        let error = read_json::<SupervisorStatus>(&path).unwrap_err();
        assert!(format!("{error:#}").contains("status.json"), "{error:#}");
    }

    #[test]
    fn records_of_older_versions_without_seeded_parse() {
        let text = r#"{"pid":1,"started_at":2,"step":"data","completed":false}"#;
        let record: DeployRecord = serde_json::from_str(text).unwrap();
        assert_eq!(record.seeded, None);
        assert_eq!(record.failed, None);
        assert_eq!(record.step, "data");
    }
}
