//! One deploy (or down) at a time per environment: an exclusive flock on
//! `<state-dir>/deploy.lock`, which also holds the holder's pid for the
//! message a second caller gets. The kernel releases the lock when its
//! holder exits, however it exits (SIGKILL included).

use std::fs::{self, File, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

/// Held until dropped.
#[derive(Debug)]
pub struct DeployLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another deploy or down of this environment is running ({holder}); waited {waited} s (--lock-timeout); try again when it has finished",
        holder = holder.map_or("holder unknown".to_string(), |pid| format!("pid {pid}")),
        waited = waited.as_secs()
    )]
    Held {
        holder: Option<u32>,
        waited: Duration,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Takes the lock, waiting up to `timeout`; `waiting` is called once with
/// the holder's pid when the lock is busy.
pub fn acquire(
    path: &Path,
    timeout: Duration,
    waiting: &mut dyn FnMut(Option<u32>),
) -> Result<DeployLock, LockError> {
    let io = |source| LockError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io)?;
    let started = Instant::now();
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {
                let holder = holder(&mut file);
                if started.elapsed() >= timeout {
                    return Err(LockError::Held {
                        holder,
                        waited: started.elapsed(),
                    });
                }
                if !told {
                    waiting(holder);
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(TryLockError::Error(error)) => return Err(io(error)),
        }
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| write!(file, "{}", std::process::id()))
        .and_then(|()| file.flush())
        .map_err(io)?;
    Ok(DeployLock { _file: file })
}

fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deploy.lock");
        let held = acquire(&path, Duration::ZERO, &mut |_| {}).unwrap();
        let mut seen = None;
        let error = acquire(&path, Duration::from_millis(300), &mut |pid| {
            seen = Some(pid)
        })
        .unwrap_err();
        assert_eq!(seen, Some(Some(std::process::id())));
        match &error {
            LockError::Held { holder, waited } => {
                assert_eq!(*holder, Some(std::process::id()));
                assert!(*waited >= Duration::from_millis(300));
            }
            other => panic!("{other}"),
        }
        assert!(
            error
                .to_string()
                .contains(&format!("pid {}", std::process::id()))
        );
        drop(held);
        acquire(&path, Duration::ZERO, &mut |_| {}).unwrap();
    }

    #[test]
    fn a_waiting_taker_gets_the_lock_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deploy.lock");
        let held = acquire(&path, Duration::ZERO, &mut |_| {}).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        acquire(&path, Duration::from_secs(5), &mut |_| {}).unwrap();
        releaser.join().unwrap();
    }
}
