//! One deploy (or down) at a time per environment: an exclusive flock on
//! `<state-dir>/deploy.lock`. The file names its holder: the pid on the
//! first line, the command on the second (`kisumctl deploy local`), so
//! that a second caller is told who holds the lock and what it is doing
//! (for a deploy, the step it is at, from `deploy-state.json`). The kernel
//! releases the lock when its holder exits, however it exits (SIGKILL
//! included).

use std::fs::{self, File, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use super::state::{DeployRecord, StateDir, read_json};

/// Held until dropped.
#[derive(Debug)]
pub struct DeployLock {
    _file: File,
}

/// Who holds the lock, as far as can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    /// The holder's command, e.g. `kisumctl deploy local`.
    pub command: Option<String>,
    /// The step a holding deploy is at.
    pub step: Option<String>,
}

impl std::fmt::Display for Holder {
    /// `pid 42 (kisumctl deploy local, at step migrate)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "pid {pid}")?,
            None => f.write_str("a process of unknown pid")?,
        }
        let doing: Vec<String> = [
            self.command.clone(),
            self.step.as_ref().map(|step| format!("at step {step}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !doing.is_empty() {
            write!(f, " ({})", doing.join(", "))?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another deploy or down of this environment is running: {holder} holds {path}; waited {waited} s (--lock-timeout); try again when it has finished",
        waited = waited.as_secs()
    )]
    Held {
        holder: Holder,
        path: String,
        waited: Duration,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Takes the lock of `state` for `command`, waiting up to `timeout`;
/// `waiting` is called once with the holder when the lock is busy.
pub fn acquire(
    state: &StateDir,
    command: &str,
    timeout: Duration,
    waiting: &mut dyn FnMut(&Holder),
) -> Result<DeployLock, LockError> {
    acquire_at(&state.lock(), state, command, timeout, waiting)
}

/// [`acquire`] of another lock file of the environment (`path`), for a
/// command that must not run twice at once but may run beside a deploy.
pub fn acquire_at(
    path: &Path,
    state: &StateDir,
    command: &str,
    timeout: Duration,
    waiting: &mut dyn FnMut(&Holder),
) -> Result<DeployLock, LockError> {
    let path = path.to_path_buf();
    let io = |source| LockError::Io {
        path: path.display().to_string(),
        source,
    };
    super::state::create_dirs(state.root()).map_err(io)?;
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    let started = Instant::now();
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {
                let holder = holder(&mut file, state);
                if started.elapsed() >= timeout {
                    return Err(LockError::Held {
                        holder,
                        path: path.display().to_string(),
                        waited: started.elapsed(),
                    });
                }
                if !told {
                    waiting(&holder);
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(TryLockError::Error(error)) => return Err(io(error)),
        }
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| write!(file, "{}\n{command}\n", std::process::id()))
        .and_then(|()| file.flush())
        .map_err(io)?;
    Ok(DeployLock { _file: file })
}

/// What a caller says while it waits for the lock.
pub fn waiting_note(holder: &Holder, state: &StateDir, timeout: Duration) -> String {
    format!(
        "waiting for {holder} to finish: it holds {} (up to {} s, --lock-timeout)",
        state.lock().display(),
        timeout.as_secs()
    )
}

fn holder(file: &mut File, state: &StateDir) -> Holder {
    let mut text = String::new();
    let _ = file
        .rewind()
        .and_then(|()| file.read_to_string(&mut text).map(|_| ()));
    let mut lines = text.lines();
    let pid: Option<u32> = lines.next().and_then(|line| line.trim().parse().ok());
    let command = lines
        .next()
        .map(|line| crate::matrix::load::printable(line.trim()))
        .filter(|line| !line.is_empty());
    let record: Option<DeployRecord> = read_json(&state.deploy_record()).ok().flatten();
    let step = record
        .filter(|r| pid == Some(r.pid) && !r.completed && !r.step.is_empty())
        .map(|r| r.step);
    Holder { pid, command, step }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::state::write_json;

    #[test]
    fn a_second_taker_is_refused_with_the_holder_and_what_it_does() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let held = acquire(&state, "kisumctl deploy local", Duration::ZERO, &mut |_| {}).unwrap();
        let me = std::process::id();
        let record = DeployRecord {
            pid: me,
            step: "migrate".into(),
            ..DeployRecord::default()
        };
        write_json(&state.deploy_record(), &record).unwrap();
        let mut seen = None;
        let error = acquire(
            &state,
            "kisumctl down local",
            Duration::from_millis(300),
            &mut |holder| seen = Some(holder.clone()),
        )
        .unwrap_err();
        let expected = Holder {
            pid: Some(me),
            command: Some("kisumctl deploy local".into()),
            step: Some("migrate".into()),
        };
        assert_eq!(seen.as_ref(), Some(&expected));
        match &error {
            LockError::Held { holder, waited, .. } => {
                assert_eq!(*holder, expected);
                assert!(*waited >= Duration::from_millis(300));
            }
            other => panic!("{other}"),
        }
        let message = error.to_string();
        assert!(
            message.contains(&format!(
                "pid {me} (kisumctl deploy local, at step migrate) holds {}",
                state.lock().display()
            )),
            "{message}"
        );
        drop(held);
        acquire(&state, "kisumctl deploy local", Duration::ZERO, &mut |_| {}).unwrap();
    }

    #[test]
    fn a_lock_file_of_an_older_version_names_the_pid_only() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let held = acquire(&state, "kisumctl down local", Duration::ZERO, &mut |_| {}).unwrap();
        fs::write(state.lock(), "4242").unwrap();
        let error = acquire(&state, "x", Duration::ZERO, &mut |_| {}).unwrap_err();
        assert!(error.to_string().contains("pid 4242 holds"), "{error}");
        drop(held);
    }

    #[test]
    fn a_waiting_taker_gets_the_lock_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let held = acquire(&state, "a", Duration::ZERO, &mut |_| {}).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        acquire(&state, "b", Duration::from_secs(5), &mut |_| {}).unwrap();
        releaser.join().unwrap();
    }
}
