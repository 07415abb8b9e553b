//! The operation journal: one JSON line per run of a command that changes
//! an environment (who, what, where, result, how long), appended to
//! `<state-dir>/journal.jsonl` of that environment. The state directory is
//! the environment's `state-dir` of the matrix, on the machine kisumctl
//! runs on: for `local` beside the platform's own state; for the other
//! environments the directory a CI job keeps as an artifact (or an
//! operator's checkout).
//!
//! Appends are single `write` calls of a whole line to a file opened with
//! `O_APPEND`, so concurrent runs never interleave within a record.
//!
//! A run that never reaches its end (Ctrl-C, SIGTERM, SIGKILL, a crash)
//! cannot write its record; so each run first leaves a marker,
//! `<state-dir>/journal.running/<pid>.json`, removed when its record is
//! written. The next run that records or reads the journal of that
//! environment on the same host appends an `interrupted` record for every
//! marker whose process is gone ([`reap`]).

use std::io::{BufRead as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const FILE: &str = "journal.jsonl";

/// One run of a mutating command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When the command started (RFC 3339, UTC).
    pub started: String,
    /// `KISUM_ACTOR` when set (a CI job names itself), else the login
    /// name and the host: `alice@laptop`.
    pub who: String,
    /// The command path: `deploy`, `db migrate`, `rotate-jwt-key`.
    pub command: String,
    /// The arguments as given, after the program name.
    pub args: Vec<String>,
    pub environment: String,
    /// `ok`, `check-failed`, `failed`, `rollback-failed` or `interrupted`
    /// (stopped by Ctrl-C).
    pub result: String,
    pub exit: u8,
    /// How long it ran; `null` when unknown (a run recorded by a later
    /// one after it was killed).
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// The Job the command ran as, for an environment whose operations
    /// run in its cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// How the record came to be, when not from the run itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The directory of the markers of unfinished runs.
const RUNNING: &str = "journal.running";

/// What a run leaves while it runs: its record so far and how to tell
/// whether its process still runs.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    record: Record,
    pid: u32,
    host: String,
    /// The process's start time (`/proc/<pid>/stat`), telling it apart
    /// from a later process given the same pid.
    #[serde(default)]
    start_ticks: Option<u64>,
}

/// This machine's host name (`unknown-host` when it cannot be read).
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// When process `pid` started, in clock ticks since boot.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; the fields after the command name (which may hold spaces
    // and parentheses) start at field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn alive(pid: u32, ticks: Option<u64>) -> bool {
    match (start_ticks(pid), ticks) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        (None, _) => rustix::process::Pid::from_raw(pid as i32)
            .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok()),
    }
}

/// Leaves the marker of this run (whose record is `record`, result not
/// yet known); answers its path, for [`finish`].
pub fn begin(state_dir: &Path, record: &Record) -> std::io::Result<PathBuf> {
    // The state directory as every command makes it (0755: the data
    // services, other users, traverse it); the markers private inside.
    crate::local::state::create_dirs(state_dir)?;
    let dir = state_dir.join(RUNNING);
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let pid = std::process::id();
    let marker = Marker {
        record: record.clone(),
        pid,
        host: host(),
        start_ticks: start_ticks(pid),
    };
    let path = dir.join(format!("{pid}.json"));
    let text = serde_json::to_vec(&marker).map_err(std::io::Error::other)?;
    // Written aside and renamed: a marker that exists is whole, even if
    // the run is killed the moment it appears.
    let aside = dir.join(format!(".{pid}.tmp"));
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&aside)?
        .write_all(&text)?;
    std::fs::rename(&aside, &path)?;
    Ok(path)
}

/// Removes the marker [`begin`] left (its directory too when empty).
pub fn finish(marker: &Path) {
    let _ = std::fs::remove_file(marker);
    if let Some(dir) = marker.parent() {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Appends an `interrupted` record for every marker of this host whose
/// process is gone, and removes it; answers how many.
pub fn reap(state_dir: &Path) -> std::io::Result<usize> {
    let dir = state_dir.join(RUNNING);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let this_host = host();
    let mut reaped = 0;
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some(pid) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) {
            // A marker its run never finished writing.
            if pid.parse().is_ok_and(|pid| !alive(pid, None)) {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        let Ok(marker) = serde_json::from_slice::<Marker>(&text) else {
            continue;
        };
        if marker.host != this_host
            || marker.pid == std::process::id()
            || alive(marker.pid, marker.start_ticks)
        {
            continue;
        }
        let record = Record {
            result: "interrupted".into(),
            exit: 3,
            duration_ms: None,
            note: Some(format!(
                "pid {} ended before writing its record (Ctrl-C, SIGTERM, SIGKILL or a crash); \
                 recorded by a later run, duration unknown",
                marker.pid
            )),
            ..marker.record
        };
        append(state_dir, &record)?;
        let _ = std::fs::remove_file(&path);
        reaped += 1;
    }
    let _ = std::fs::remove_dir(&dir);
    Ok(reaped)
}

/// The journal file of an environment whose state directory is `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Who runs this process, as the journal records it.
pub fn who() -> String {
    if let Ok(actor) = std::env::var("KISUM_ACTOR")
        && !actor.trim().is_empty()
    {
        return actor.trim().to_string();
    }
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| {
            let uid = rustix::process::getuid().as_raw();
            let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            user_of(&passwd, uid).unwrap_or_else(|| format!("uid {uid}"))
        });
    format!("{user}@{}", host())
}

/// The login name of `uid` in the text of `/etc/passwd`.
fn user_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    })
}

/// Appends `record`, creating the state directory (as every command
/// makes it) and the file (0600) when needed.
pub fn append(state_dir: &Path, record: &Record) -> std::io::Result<()> {
    crate::local::state::create_dirs(state_dir)?;
    let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path(state_dir))?;
    file.write_all(&line)
}

/// The last `limit` records, oldest first; lines that do not parse are
/// counted in the second value and skipped.
pub fn read(state_dir: &Path, limit: usize) -> std::io::Result<(Vec<Record>, usize)> {
    let file = match std::fs::File::open(path(state_dir)) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut records = std::collections::VecDeque::new();
    let mut unreadable = 0;
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(&line) {
            Ok(record) => {
                records.push_back(record);
                if records.len() > limit {
                    records.pop_front();
                }
            }
            Err(_) => unreadable += 1,
        }
    }
    Ok((records.into(), unreadable))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> Record {
        Record {
            started: "2026-12-05T02:00:00Z".into(),
            who: "alice@host".into(),
            command: "deploy".into(),
            args: vec!["deploy".into(), "local".into()],
            environment: "local".into(),
            result: "ok".into(),
            exit: 0,
            duration_ms: Some(n),
            job: None,
            note: None,
        }
    }

    #[test]
    fn appended_records_read_back_newest_last_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        for n in 0..5 {
            append(&state, &record(n)).unwrap();
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(path(&state))
            .unwrap()
            .write_all(b"not json\n")
            .unwrap();
        let (records, unreadable) = read(&state, 3).unwrap();
        let durations: Vec<u64> = records.iter().filter_map(|r| r.duration_ms).collect();
        assert_eq!(durations, [2, 3, 4]);
        assert_eq!(unreadable, 1);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path(&state))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_marker_of_a_gone_process_becomes_an_interrupted_record() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        // A process that has ended: a child reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let marker = Marker {
            record: record(0),
            pid,
            host: host(),
            start_ticks: Some(1),
        };
        std::fs::create_dir_all(state.join(RUNNING)).unwrap();
        std::fs::write(
            state.join(RUNNING).join(format!("{pid}.json")),
            serde_json::to_vec(&marker).unwrap(),
        )
        .unwrap();
        // This run's own marker is left alone.
        let own = begin(&state, &record(1)).unwrap();
        assert_eq!(reap(&state).unwrap(), 1);
        let (records, _) = read(&state, 10).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].result, "interrupted");
        assert!(
            records[0]
                .note
                .as_ref()
                .unwrap()
                .contains(&format!("pid {pid}"))
        );
        assert!(own.exists());
        finish(&own);
        assert!(!state.join(RUNNING).exists());
        assert_eq!(reap(&state).unwrap(), 0);
    }

    #[test]
    fn the_user_name_comes_from_the_password_file() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        assert_eq!(user_of(passwd, 0).as_deref(), Some("root"));
        assert_eq!(user_of(passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(user_of(passwd, 7), None);
    }

    #[test]
    fn a_missing_journal_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path(), 10).unwrap(), (Vec::new(), 0));
    }
}
