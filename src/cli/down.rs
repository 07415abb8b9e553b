//! `kisumctl down local [--purge] [--only PROCESS]`.

use super::output::errln;
use std::path::Path;
use std::time::{Duration, Instant};

use super::Exit;
use crate::local::state::{DesiredState, RunState, SupervisorStatus, read_json, write_json};
use crate::local::{Context, lock, supervisor};
use crate::matrix::Environment;

/// Stop a local environment.
///
/// Every service and data service, then the supervisor. Data and secrets
/// stay unless `--purge`.
///
/// Exit codes: 0 stopped, 2 unusable input, 3 something could not be
/// stopped or removed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment (only `local` runs processes).
    pub(super) env: String,

    /// Also remove the state directory: databases, logs and the secret
    /// store with every generated key and password.
    #[arg(long, conflicts_with = "only")]
    purge: bool,

    /// Stop only this process (e.g. `redis`) and keep it stopped until the
    /// next `deploy`.
    #[arg(long, value_name = "PROCESS")]
    only: Option<String>,

    #[command(flatten)]
    lock: super::LockWait,
}

pub fn run(dir: &Path, env: &Environment, args: Args) -> anyhow::Result<Exit> {
    let context = Context::for_environment(env, dir)?;
    let state = &context.state;
    if !state.root().exists() {
        errln!(
            "{}: nothing to stop ({} does not exist)",
            env.name,
            state.root().display()
        );
        return Ok(Exit::Clean);
    }
    let command = match (&args.only, args.purge) {
        (Some(name), _) => format!("kisumctl down {} --only {name}", env.name),
        (None, true) => format!("kisumctl down {} --purge", env.name),
        (None, false) => format!("kisumctl down {}", env.name),
    };
    let timeout = args.lock.timeout();
    let _lock = lock::acquire(state, &command, timeout, &mut |holder| {
        errln!("{}", lock::waiting_note(holder, state, timeout));
    })?;

    if let Some(name) = args.only {
        return hold(&context, &name);
    }
    supervisor::stop(state, Duration::from_secs(60))?;
    errln!("{}: every process and the supervisor are stopped", env.name);
    if args.purge {
        purge(&context)?;
    }
    Ok(Exit::Clean)
}

fn hold(context: &Context, name: &str) -> anyhow::Result<Exit> {
    let state = &context.state;
    let mut desired: DesiredState = read_json(&state.desired())?.unwrap_or_default();
    if desired.get(name).is_none() {
        let known: Vec<&str> = desired.processes.iter().map(|p| p.name.as_str()).collect();
        errln!("error: no process `{name}`; known: {}", known.join(", "));
        return Ok(Exit::UnusableInput);
    }
    desired.held.insert(name.to_string());
    write_json(&state.desired(), &desired)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status: Option<SupervisorStatus> = read_json(&state.status()).ok().flatten();
        let held = status
            .as_ref()
            .and_then(|s| s.processes.get(name))
            .is_some_and(|p| p.state == RunState::Held);
        if held || supervisor::live_supervisor(state).is_none() {
            errln!("{name} is stopped until the next `kisumctl deploy`");
            return Ok(Exit::Clean);
        }
        if Instant::now() > deadline {
            anyhow::bail!("{name} did not stop within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes the state directory and the secret store (which lives inside
/// it unless the matrix says otherwise).
fn purge(context: &Context) -> anyhow::Result<()> {
    let root = context.state.root();
    for path in [root, context.store.dir()] {
        if context.repo.starts_with(path) || path.parent().is_none() {
            anyhow::bail!(
                "refusing to remove {}: it contains the repository or is the file system root",
                path.display()
            );
        }
    }
    for path in [context.store.dir(), root] {
        match std::fs::remove_dir_all(path) {
            Ok(()) => errln!("removed {}", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).map_err(|e| anyhow::anyhow!("removing {}: {e}", path.display()));
            }
        }
    }
    for path in [root, context.store.dir()] {
        remove_empty_parents(path, &context.repo);
    }
    Ok(())
}

/// Removes the directories above `path` that the purge left empty (the
/// `.kisum/` of `.kisum/local`), up to but never including `repo`; the
/// first one that holds anything else (another environment's state) stays.
fn remove_empty_parents(path: &Path, repo: &Path) {
    let mut parent = path.parent();
    while let Some(dir) = parent {
        if !dir.starts_with(repo) || dir == repo || std::fs::remove_dir(dir).is_err() {
            return;
        }
        errln!("removed {}", dir.display());
        parent = dir.parent();
    }
}
