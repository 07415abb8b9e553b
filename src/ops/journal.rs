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
    pub duration_ms: u64,
    /// The Job the command ran as, for an environment whose operations
    /// run in its cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
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
        .unwrap_or_else(|_| format!("uid {}", rustix::process::getuid().as_raw()));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{user}@{host}")
}

/// Appends `record`, creating the state directory (0700) and the file
/// (0600) when needed.
pub fn append(state_dir: &Path, record: &Record) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)?;
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
            duration_ms: n,
            job: None,
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
        let durations: Vec<u64> = records.iter().map(|r| r.duration_ms).collect();
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
    fn a_missing_journal_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path(), 10).unwrap(), (Vec::new(), 0));
    }
}
