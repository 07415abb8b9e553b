//! The supervisor of a local environment: a detached `kisumctl supervise`
//! process that runs what `desired.json` lists, restarts a process that
//! exits (with backoff: 0.5 s doubling to 30 s, reset after 30 s of
//! uptime), restarts one whose digest changed, stops what is no longer
//! listed or is held, and writes `status.json`. It stops everything, in
//! reverse release order, on SIGTERM or when `supervisor.stop` appears.
//!
//! Every process runs in a process group of its own: a signal sent to a
//! service's group (`kill -KILL -PID`) reaches that service only, never
//! the supervisor or the other processes.
//!
//! The control side (`ensure_running`, `stop`) is used by `deploy`,
//! `down` and `status`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustix::process::{Pid, Signal};

use super::state::{
    DesiredState, ProcessSpec, ProcessStatus, RunState, StateDir, StopSignal, SupervisorStatus,
    read_json, unix_now, write_json,
};

const TICK: Duration = Duration::from_millis(200);
/// How long a process may take to stop before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A process that ran this long is considered healthy again.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

struct Running {
    spec: ProcessSpec,
    child: Child,
    since: Instant,
}

#[derive(Default)]
struct Entry {
    running: Option<Running>,
    status: Option<ProcessStatus>,
    next_start: Option<Instant>,
    failures: u32,
    /// The last run ended without being asked to: the next start is a
    /// crash restart.
    crashed: bool,
}

/// Runs until stopped. `state` must be absolute.
pub fn run(state: &StateDir) -> anyhow::Result<()> {
    if let Some(pid) = live_supervisor(state).filter(|&pid| pid != std::process::id()) {
        say(&format!(
            "another supervisor (pid {pid}) runs this environment; exiting"
        ));
        return Ok(());
    }
    fs::create_dir_all(state.logs())?;
    fs::write(state.supervisor_pid(), std::process::id().to_string())
        .with_context(|| format!("writing {}", state.supervisor_pid().display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&wake))?;
    say(&format!("supervisor started (pid {})", std::process::id()));

    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    if let Some(previous) = read_json::<SupervisorStatus>(&state.status())
        .ok()
        .flatten()
    {
        stop_leftovers(&previous);
        for (name, status) in previous.processes {
            let entry = entries.entry(name).or_default();
            entry.status = Some(ProcessStatus {
                state: RunState::Stopped,
                pid: None,
                ..status
            });
        }
    }
    let mut desired = DesiredState::default();
    let mut desired_text = String::new();
    let mut written = None;
    let mut last_write = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) || state.stop_request().exists() {
            break;
        }
        wake.store(false, Ordering::Relaxed);
        if let Ok(text) = fs::read_to_string(state.desired())
            && text != desired_text
        {
            match serde_json::from_str::<DesiredState>(&text) {
                Ok(next) => {
                    desired = next;
                    desired_text = text;
                }
                Err(error) => say(&format!("ignoring an unreadable desired.json: {error}")),
            }
        }
        reap(&mut entries);
        restart_requested(state, &mut entries);
        converge(state, &desired, &mut entries);
        let status = snapshot(&entries);
        if written.as_ref() != Some(&status) || last_write.elapsed() > Duration::from_secs(10) {
            let document = SupervisorStatus {
                pid: std::process::id(),
                updated_at: unix_now(),
                processes: status.clone(),
            };
            if let Err(error) = write_json(&state.status(), &document) {
                say(&format!("cannot write status.json: {error:#}"));
            }
            written = Some(status);
            last_write = Instant::now();
        }
        std::thread::sleep(TICK);
    }

    say("stopping every process");
    let mut names: Vec<(u8, String)> = entries
        .iter()
        .filter_map(|(name, e)| e.running.as_ref().map(|r| (r.spec.wave, name.clone())))
        .collect();
    names.sort();
    while let Some((wave, _)) = names.last().cloned() {
        let batch: Vec<String> = names
            .iter()
            .filter(|(w, _)| *w == wave)
            .map(|(_, n)| n.clone())
            .collect();
        names.retain(|(w, _)| *w != wave);
        stop_many(&mut entries, &batch, RunState::Stopped);
    }
    let document = SupervisorStatus {
        pid: std::process::id(),
        updated_at: unix_now(),
        processes: snapshot(&entries),
    };
    let _ = write_json(&state.status(), &document);
    let _ = fs::remove_file(state.stop_request());
    let _ = fs::remove_file(state.supervisor_pid());
    say("supervisor stopped");
    Ok(())
}

/// A line of `logs/supervisor.log`, stamped with Unix seconds and
/// milliseconds.
fn say(line: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}.{:03} supervisor: {line}",
        now.as_secs(),
        now.subsec_millis()
    );
    let _ = out.flush();
}

/// Collects processes that exited and schedules their restart.
fn reap(entries: &mut BTreeMap<String, Entry>) {
    for (name, entry) in entries.iter_mut() {
        let Some(running) = entry.running.as_mut() else {
            continue;
        };
        let Ok(Some(exit)) = running.child.try_wait() else {
            continue;
        };
        let ran = running.since.elapsed();
        entry.failures = if ran > HEALTHY_AFTER {
            1
        } else {
            entry.failures + 1
        };
        let delay = backoff(entry.failures);
        say(&format!(
            "{name} (pid {}) exited after {:.1} s: {exit}; restart in {:.1} s",
            running.child.id(),
            ran.as_secs_f64(),
            delay.as_secs_f64()
        ));
        entry.running = None;
        entry.crashed = true;
        entry.next_start = Some(Instant::now() + delay);
        if let Some(status) = entry.status.as_mut() {
            status.state = RunState::Backoff;
            status.pid = None;
            status.last_exit = Some(describe_exit(exit));
            status.failures = entry.failures;
        }
    }
}

/// Stops each process named in `restart-requests/` as a planned stop:
/// `converge` starts it again at once, and it does not count as a restart
/// (`restarts` counts crashes).
fn restart_requested(state: &StateDir, entries: &mut BTreeMap<String, Entry>) {
    let Ok(requests) = fs::read_dir(state.restart_requests()) else {
        return;
    };
    for request in requests.flatten() {
        let _ = fs::remove_file(request.path());
        let name = request.file_name().to_string_lossy().into_owned();
        if entries.get(&name).is_none_or(|e| e.running.is_none()) {
            continue;
        }
        say(&format!("restarting {name} on request"));
        stop_many(entries, std::slice::from_ref(&name), RunState::Stopped);
        if let Some(entry) = entries.get_mut(&name) {
            entry.next_start = None;
            entry.failures = 0;
            entry.crashed = false;
        }
    }
}

/// Asks the supervisor to restart `name` on purpose (not counted as a
/// restart in `status`); answers the pid it will stop, from `status.json`.
pub fn request_restart(state: &StateDir, name: &str) -> anyhow::Result<Option<u32>> {
    let status: Option<SupervisorStatus> = read_json(&state.status())?;
    let pid = status.and_then(|s| s.processes.get(name)?.pid);
    if pid.is_some() {
        let dir = state.restart_requests();
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(name);
        fs::write(&path, "").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(pid)
}

/// The delay before the n-th consecutive restart.
pub fn backoff(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    (BACKOFF_FIRST * factor).min(BACKOFF_MAX)
}

fn describe_exit(exit: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (exit.code(), exit.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => exit.to_string(),
    }
}

fn converge(state: &StateDir, desired: &DesiredState, entries: &mut BTreeMap<String, Entry>) {
    let unwanted: Vec<String> = entries
        .iter()
        .filter(|(name, e)| e.running.is_some() && desired.get(name).is_none())
        .map(|(name, _)| name.clone())
        .collect();
    stop_many(entries, &unwanted, RunState::Stopped);
    entries.retain(|name, e| e.running.is_some() || desired.get(name).is_some());
    let held: Vec<String> = desired.held.iter().cloned().collect();
    stop_many(entries, &held, RunState::Held);

    for spec in &desired.processes {
        let entry = entries.entry(spec.name.clone()).or_default();
        if desired.held.contains(&spec.name) {
            entry.next_start = None;
            entry.failures = 0;
            entry.crashed = false;
            continue;
        }
        if let Some(running) = &entry.running
            && running.spec.digest != spec.digest
        {
            say(&format!(
                "{} changed (digest {} -> {})",
                spec.name, running.spec.digest, spec.digest
            ));
            let name = spec.name.clone();
            stop_many(entries, std::slice::from_ref(&name), RunState::Stopped);
            let entry = entries.entry(name).or_default();
            entry.next_start = None;
            entry.failures = 0;
            entry.crashed = false;
        }
        let entry = entries.entry(spec.name.clone()).or_default();
        // A new spec for a process waiting out its backoff starts at once,
        // as a planned start with a clean record.
        if entry.running.is_none()
            && entry
                .status
                .as_ref()
                .is_some_and(|s| s.digest != spec.digest)
        {
            entry.next_start = None;
            entry.failures = 0;
            entry.crashed = false;
        }
        let due = entry.next_start.is_none_or(|at| at <= Instant::now());
        if entry.running.is_none() && due {
            start(state, spec, entry);
        }
    }
}

fn start(state: &StateDir, spec: &ProcessSpec, entry: &mut Entry) {
    let restarts = entry
        .status
        .as_ref()
        .map_or(0, |s| s.restarts + u32::from(entry.crashed));
    let program = spec.argv.first().cloned().unwrap_or_default();
    match spawn(state, spec) {
        Ok(child) => {
            say(&format!(
                "started {} (pid {}, digest {})",
                spec.name,
                child.id(),
                spec.digest
            ));
            entry.status = Some(ProcessStatus {
                state: RunState::Running,
                wave: spec.wave,
                stop_signal: spec.stop_signal,
                pid: Some(child.id()),
                digest: spec.digest.clone(),
                started_at: unix_now(),
                restarts,
                last_exit: entry.status.as_ref().and_then(|s| s.last_exit.clone()),
                program,
                failures: entry.failures,
            });
            entry.running = Some(Running {
                spec: spec.clone(),
                child,
                since: Instant::now(),
            });
            entry.next_start = None;
            entry.crashed = false;
        }
        Err(error) => {
            entry.failures += 1;
            let delay = backoff(entry.failures);
            say(&format!(
                "cannot start {}: {error:#}; retry in {:.1} s",
                spec.name,
                delay.as_secs_f64()
            ));
            entry.next_start = Some(Instant::now() + delay);
            let status = entry.status.get_or_insert_with(|| ProcessStatus {
                state: RunState::Backoff,
                wave: spec.wave,
                stop_signal: spec.stop_signal,
                pid: None,
                digest: spec.digest.clone(),
                started_at: 0,
                restarts: 0,
                last_exit: None,
                program,
                failures: 0,
            });
            status.state = RunState::Backoff;
            status.last_exit = Some(format!("could not start: {error:#}"));
            status.failures = entry.failures;
        }
    }
}

fn spawn(state: &StateDir, spec: &ProcessSpec) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt as _;
    let path = state.log(&spec.name);
    let mut log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let _ = writeln!(
        log,
        "--- {} kisumctl supervisor: starting {} ---",
        unix_now(),
        spec.name
    );
    let program = spec.argv.first().context("empty argv")?;
    let mut command = Command::new(program);
    command
        .args(&spec.argv[1..])
        .env_clear()
        .envs(&spec.env)
        .current_dir(&spec.cwd)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some((uid, gid)) = spec.run_as {
        command.uid(uid).gid(gid);
    }
    command
        .spawn()
        .with_context(|| format!("starting {program}"))
}

/// Stops the named running processes together: their stop signal, up to
/// STOP_GRACE, then SIGKILL.
fn stop_many(entries: &mut BTreeMap<String, Entry>, names: &[String], then: RunState) {
    let mut stopping = Vec::new();
    for name in names {
        let Some(entry) = entries.get_mut(name) else {
            continue;
        };
        if let Some(status) = entry.status.as_mut()
            && entry.running.is_none()
        {
            status.state = then;
        }
        if let Some(running) = entry.running.take() {
            say(&format!("stopping {name} (pid {})", running.child.id()));
            signal(running.child.id(), running.spec.stop_signal);
            stopping.push((name.clone(), running));
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    for (name, mut running) in stopping {
        let exit = loop {
            match running.child.try_wait() {
                Ok(Some(exit)) => break Some(exit),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    say(&format!(
                        "{name} did not stop within {} s; killing it",
                        STOP_GRACE.as_secs()
                    ));
                    let _ = running.child.kill();
                    break running.child.wait().ok();
                }
            }
        };
        if let Some(entry) = entries.get_mut(&name)
            && let Some(status) = entry.status.as_mut()
        {
            status.state = then;
            status.pid = None;
            status.last_exit = exit.map(describe_exit);
        }
    }
}

fn signal(pid: u32, stop: StopSignal) {
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, to_signal(stop));
    }
}

fn to_signal(stop: StopSignal) -> Signal {
    match stop {
        StopSignal::Term => Signal::TERM,
        StopSignal::Int => Signal::INT,
    }
}

fn snapshot(entries: &BTreeMap<String, Entry>) -> BTreeMap<String, ProcessStatus> {
    entries
        .iter()
        .filter_map(|(name, e)| e.status.clone().map(|s| (name.clone(), s)))
        .collect()
}

/// Processes a killed supervisor left behind, found by the pids of its
/// last status whose command line still names the same program.
fn stop_leftovers(previous: &SupervisorStatus) {
    let mut leftovers: Vec<(&String, &ProcessStatus)> = previous.processes.iter().collect();
    leftovers.sort_by_key(|(_, status)| std::cmp::Reverse(status.wave));
    for (name, status) in leftovers {
        if let Some(pid) = leftover(status) {
            say(&format!(
                "stopping {name} (pid {pid}) left by a previous supervisor"
            ));
            let _ = kill_and_wait(pid, to_signal(status.stop_signal), STOP_GRACE);
        }
    }
}

pub fn alive(pid: u32) -> bool {
    Pid::from_raw(pid as i32).is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok())
        && !fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
}

fn command_line(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|part| !part.is_empty())
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The pid of a process a status names, while it is alive and still runs
/// the same program (a pid can be reused once its process is gone). The
/// program begins the command line, alone or followed by a space: a
/// process may rewrite its title (`/usr/bin/redis-server 127.0.0.1:26379`).
pub fn leftover(status: &ProcessStatus) -> Option<u32> {
    let pid = status.pid?;
    let program = status.program.as_str();
    let same_program = program.is_empty()
        || command_line(pid).first().is_some_and(|argv0| {
            argv0 == program
                || argv0
                    .strip_prefix(program)
                    .is_some_and(|title| title.starts_with(' '))
        });
    (alive(pid) && same_program && !is_supervisor(pid)).then_some(pid)
}

fn is_supervisor(pid: u32) -> bool {
    let argv = command_line(pid);
    argv.iter().any(|a| a == "supervise") && argv.first().is_some_and(|p| p.ends_with("kisumctl"))
}

/// Sends `signal`, waits up to `grace` for the process to go, then kills
/// it. `true` when it is gone.
pub fn kill_and_wait(pid: u32, signal: Signal, grace: Duration) -> bool {
    let Some(target) = Pid::from_raw(pid as i32) else {
        return true;
    };
    let _ = rustix::process::kill_process(target, signal);
    let deadline = Instant::now() + grace;
    while alive(pid) {
        if Instant::now() > deadline {
            let _ = rustix::process::kill_process(target, Signal::KILL);
            std::thread::sleep(Duration::from_millis(200));
            return !alive(pid);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// The pid of the environment's running supervisor, if any.
pub fn live_supervisor(state: &StateDir) -> Option<u32> {
    let pid: u32 = fs::read_to_string(state.supervisor_pid())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (alive(pid) && is_supervisor(pid)).then_some(pid)
}

/// Starts the supervisor unless one runs: `kisumctl supervise` detached in
/// its own process group, stdin closed, output to `logs/supervisor.log`.
/// Returns its pid and whether it was started now.
pub fn ensure_running(state: &StateDir) -> anyhow::Result<(u32, bool)> {
    use std::os::unix::process::CommandExt as _;
    if let Some(pid) = live_supervisor(state) {
        return Ok((pid, false));
    }
    let _ = fs::remove_file(state.stop_request());
    fs::create_dir_all(state.logs())?;
    let path = state.log("supervisor");
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let exe = std::env::current_exe().context("locating the kisumctl binary")?;
    let child = Command::new(exe)
        .arg("supervise")
        .arg("--state-dir")
        .arg(state.root())
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the supervisor")?;
    let pid = child.id();
    // Not waited for: it outlives this command.
    drop(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while live_supervisor(state) != Some(pid) {
        if Instant::now() > deadline {
            anyhow::bail!(
                "the supervisor (pid {pid}) did not start; see {}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((pid, true))
}

/// Stops the supervisor and everything it runs. Processes of a supervisor
/// that no longer answers are stopped by their pids.
pub fn stop(state: &StateDir, timeout: Duration) -> anyhow::Result<()> {
    if let Some(pid) = live_supervisor(state) {
        fs::write(state.stop_request(), "")?;
        if !kill_and_wait(pid, Signal::TERM, timeout) {
            anyhow::bail!("the supervisor (pid {pid}) did not stop");
        }
    }
    if let Some(status) = read_json::<SupervisorStatus>(&state.status())? {
        stop_leftovers(&status);
    }
    let _ = fs::remove_file(state.stop_request());
    let _ = fs::remove_file(state.supervisor_pid());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(10), BACKOFF_MAX);
        assert_eq!(backoff(1000), BACKOFF_MAX);
    }

    #[test]
    fn a_leftover_is_found_by_its_pid_while_it_runs_its_program() {
        let me = std::process::id();
        let argv0 = command_line(me).first().cloned().unwrap();
        let status = |pid, program: &str| ProcessStatus {
            state: RunState::Running,
            wave: 1,
            stop_signal: StopSignal::Term,
            pid: Some(pid),
            digest: String::new(),
            started_at: 0,
            restarts: 0,
            last_exit: None,
            program: program.into(),
            failures: 0,
        };
        assert_eq!(leftover(&status(me, &argv0)), Some(me));
        assert_eq!(leftover(&status(me, "")), Some(me));
        assert_eq!(leftover(&status(me, "/usr/bin/another-program")), None);
        let prefix = &argv0[..argv0.len() - 1];
        assert_eq!(leftover(&status(me, prefix)), None);
        assert_eq!(leftover(&status(u32::MAX / 2, &argv0)), None);
    }

    /// `name`'s status once `ready` holds, polled for up to 20 s.
    fn wait_for(
        state: &StateDir,
        name: &str,
        ready: impl Fn(&ProcessStatus) -> bool,
    ) -> ProcessStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status: Option<SupervisorStatus> = read_json(&state.status()).ok().flatten();
            if let Some(process) = status.and_then(|s| s.processes.get(name).cloned())
                && ready(&process)
            {
                return process;
            }
            assert!(Instant::now() < deadline, "{name} never got there");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn a_requested_restart_is_not_counted_and_a_crash_is() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let spec = ProcessSpec {
            name: "basic".into(),
            wave: 1,
            argv: vec!["sleep".into(), "600".into()],
            env: BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
            cwd: dir.path().to_path_buf(),
            run_as: None,
            stop_signal: StopSignal::Term,
            ports: vec![],
            probe: crate::local::state::Probe::Tcp { port: 9 },
            version: None,
            digest: "d1".into(),
        };
        let desired = DesiredState {
            processes: vec![spec],
            held: Default::default(),
        };
        write_json(&state.desired(), &desired).unwrap();
        let supervisor = {
            let state = StateDir::new(dir.path());
            std::thread::spawn(move || run(&state))
        };

        let first = wait_for(&state, "basic", |p| p.pid.is_some());
        let pid = request_restart(&state, "basic").unwrap();
        assert_eq!(pid, first.pid);
        let planned = wait_for(&state, "basic", |p| p.pid.is_some_and(|p| Some(p) != pid));
        assert_eq!((planned.restarts, planned.failures), (0, 0));
        assert!(!alive(pid.unwrap()));
        assert!(
            fs::read_dir(state.restart_requests())
                .unwrap()
                .next()
                .is_none()
        );

        let victim = planned.pid.unwrap();
        kill_and_wait(victim, Signal::KILL, Duration::from_secs(5));
        let crashed = wait_for(&state, "basic", |p| {
            p.pid.is_some_and(|p| p != victim) && p.state == RunState::Running
        });
        assert_eq!(crashed.restarts, 1, "a crash counts");

        fs::write(state.stop_request(), "").unwrap();
        supervisor.join().unwrap().unwrap();
        assert!(!alive(crashed.pid.unwrap()));
    }

    #[test]
    fn our_own_process_is_alive_and_not_a_supervisor() {
        assert!(alive(std::process::id()));
        assert!(!is_supervisor(std::process::id()));
        assert!(!alive(u32::MAX / 2));
    }
}
