//! SIGINT and SIGTERM during a backup, restore or drill.
//!
//! [`listen`] replaces the default action of both signals (ending the
//! process at once, whatever it was doing) with a watcher thread. On a
//! signal the watcher records it, then kills (SIGKILL) every child
//! registered with [`register`] (pg_dump, pg_restore, redis-cli), so that
//! no tool keeps writing after kisumctl stopped. The work itself is
//! stopped where it awaits, by [`race`], which answers [`Interrupted`]
//! once the killed children are reaped; the caller then removes or
//! settles what the run left and exits 3.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tokio::sync::watch;

/// The run was stopped by a signal.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("interrupted by {signal}")]
pub struct Interrupted {
    /// `SIGINT` or `SIGTERM`.
    pub signal: &'static str,
}

/// The signal received, once there is one.
static RECEIVED: OnceLock<watch::Receiver<Option<&'static str>>> = OnceLock::new();

/// The children to kill on a signal, by pid.
static CHILDREN: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Starts watching for SIGINT and SIGTERM (once per process; later calls
/// do nothing). From then on neither signal ends the process by itself:
/// every awaited step of the run must go through [`race`] or check
/// [`received`].
pub fn listen() -> Result<()> {
    if RECEIVED.get().is_some() {
        return Ok(());
    }
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<watch::Receiver<_>, String>>();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || watch_signals(ready_tx))
        .context("starting the signal watcher")?;
    let receiver = ready_rx
        .recv()
        .context("the signal watcher")?
        .map_err(anyhow::Error::msg)?;
    let _ = RECEIVED.set(receiver);
    Ok(())
}

fn watch_signals(
    ready: std::sync::mpsc::Sender<Result<watch::Receiver<Option<&'static str>>, String>>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(format!("listening for signals: {error}")));
            return;
        }
    };
    runtime.block_on(async move {
        let streams = signal(SignalKind::interrupt())
            .and_then(|int| Ok((int, signal(SignalKind::terminate())?)));
        let (mut int, mut term) = match streams {
            Ok(streams) => streams,
            Err(error) => {
                let _ = ready.send(Err(format!("listening for signals: {error}")));
                return;
            }
        };
        let (sender, receiver) = watch::channel(None);
        if ready.send(Ok(receiver)).is_err() {
            return;
        }
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        // Recorded first: a step that fails because its child was killed
        // is then already known to be interrupted.
        let _ = sender.send(Some(name));
        kill_children();
        // The sender stays alive for the rest of the process.
        std::future::pending::<()>().await;
    });
}

/// The signal received so far, if any.
pub fn received() -> Option<&'static str> {
    RECEIVED.get().and_then(|r| *r.borrow())
}

/// The signal behind a step that just failed, if any. A terminal's Ctrl-C
/// reaches the whole process group at once: pg_dump or pg_restore may die
/// of it, and its failure be seen, a moment before the watcher records the
/// signal. So after a failure this waits briefly (up to 500 ms) for one.
pub async fn behind_failure() -> Option<&'static str> {
    let mut receiver = RECEIVED.get().cloned()?;
    let waited = tokio::time::timeout(
        Duration::from_millis(500),
        receiver.wait_for(Option::is_some),
    )
    .await;
    match waited {
        Ok(Ok(name)) => *name,
        _ => None,
    }
}

/// Runs `work` until it ends or a signal arrives; on a signal, `work` is
/// dropped once the registered children are gone (waited for up to 10 s).
/// Without [`listen`], `work` simply runs.
pub async fn race<T>(work: impl std::future::Future<Output = T>) -> Result<T, Interrupted> {
    let Some(mut receiver) = RECEIVED.get().cloned() else {
        return Ok(work.await);
    };
    let signalled = async move {
        match receiver.wait_for(Option::is_some).await {
            Ok(name) => name.unwrap_or("a signal"),
            Err(_) => std::future::pending().await,
        }
    };
    let signal = tokio::select! {
        biased;
        signal = signalled => signal,
        value = work => return Ok(value),
    };
    children_gone(Duration::from_secs(10)).await;
    Err(Interrupted { signal })
}

/// A registered child, unregistered on drop: drop it only once the child
/// has been waited for.
pub struct Registered(u32);

impl Drop for Registered {
    fn drop(&mut self) {
        children().remove(&self.0);
    }
}

/// Registers `child` to be killed on a signal (at once when one already
/// arrived).
pub fn register(child: &std::process::Child) -> Registered {
    let pid = child.id();
    children().insert(pid);
    if received().is_some() {
        kill(pid);
    }
    Registered(pid)
}

fn children() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    CHILDREN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn kill_children() {
    let pids: Vec<u32> = children().iter().copied().collect();
    pids.into_iter().for_each(kill);
}

fn kill(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// Waits until every registered child was waited for, up to `limit`.
async fn children_gone(limit: Duration) {
    let deadline = Instant::now() + limit;
    while !children().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
