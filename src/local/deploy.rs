//! `deploy local`: from nothing (or from any earlier state) to the whole
//! platform running under the supervisor, seeded and checked. Every step is
//! idempotent and recorded in `deploy-state.json` before it starts, so a
//! rerun after an interruption converges and says where the last one
//! stopped. The steps, in release order (plan 14.4 and 25.1):
//!
//! programs, secrets, build, data-services, provision, migrate, core, auth,
//! auth-reaches-core, modules, admin, seed, checks, smoke.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::Context;
use super::checks::{self, QuickCheck};
use super::credentials;
use super::lock;
use super::mongo::MongoServer;
use super::plan::{self, DataPorts, Endpoints, Inputs, PortOrigin};
use super::ports;
use super::postgres::{self, Postgres};
use super::probe;
use super::redis;
use super::seed;
use super::state::{
    DeployRecord, DesiredState, ProcessSpec, RunState, StateDir, SupervisorStatus, read_json,
    unix_now, write_json,
};
use super::supervisor;
use crate::db;

use crate::matrix::Environment;
use crate::matrix::schema::Engine;
use crate::secrets::{Secret, SecretStore};
use crate::smoke;

/// The service binaries `deploy local` builds and runs.
pub const BINARIES: [&str; 4] = ["kisum-core", "kisum-auth", "kisum-module", "kisum-admin"];
const PACKAGES: [&str; 4] = ["kisum-core", "kisum-auth", "kisum-module", "kisum-admin"];
/// How long one wave of processes may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the build may be silent before the deploy says it still runs.
const BUILD_QUIET: Duration = Duration::from_secs(30);
/// A process that exits this many times in a row right after starting
/// fails the deploy at once, with its log, rather than at READY_TIMEOUT.
const EARLY_EXITS: u32 = 3;

pub struct Options {
    /// Prebuilt service binaries; `None` builds them with cargo (release).
    pub bin_dir: Option<PathBuf>,
    pub lock_timeout: Duration,
}

/// What the command line shows while the deploy runs.
pub trait Progress {
    fn step(&self, name: &str);
    /// A line of detail for the current step (cargo's output, a wait).
    fn detail(&self, text: &str);
    fn done(&self, name: &str, took: Duration, summary: &str);
    fn note(&self, text: &str);
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub steps: Vec<(String, Duration)>,
    /// Processes started, restarted or stopped by this run (after `down`,
    /// every one: a new supervisor starts them all).
    pub changed: Vec<String>,
    pub checks: Vec<QuickCheck>,
    pub smoke: smoke::Report,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed) && self.smoke.passed()
    }
}

struct Run<'a> {
    context: &'a Context,
    progress: &'a dyn Progress,
    record: DeployRecord,
    steps: Vec<(String, Duration)>,
}

impl Run<'_> {
    /// Records the step before doing it, then times it.
    fn begin(&mut self, name: &str) -> anyhow::Result<Instant> {
        self.record.step = name.to_string();
        write_json(&self.context.state.deploy_record(), &self.record)?;
        self.progress.step(name);
        Ok(Instant::now())
    }

    fn end(&mut self, name: &str, started: Instant, summary: &str) {
        let took = started.elapsed();
        self.steps.push((name.to_string(), took));
        self.progress.done(name, took, summary);
    }
}

pub async fn deploy(
    env: &Environment<'_>,
    context: &Context,
    options: &Options,
    progress: &dyn Progress,
) -> anyhow::Result<Outcome> {
    let state = &context.state;
    super::state::create_dirs(state.root())
        .with_context(|| format!("creating the state directory {}", state.root().display()))?;
    let command = format!("kisumctl deploy {}", env.name);
    let _lock = lock::acquire(state, &command, options.lock_timeout, &mut |holder| {
        progress.note(&lock::waiting_note(holder, state, options.lock_timeout));
    })?;
    let previous: Option<DeployRecord> = read_json(&state.deploy_record())?;
    if let Some(note) = previous.as_ref().and_then(resume_note) {
        progress.note(&note);
    }
    let mut run = Run {
        context,
        progress,
        record: DeployRecord {
            pid: std::process::id(),
            started_at: unix_now(),
            step: String::new(),
            completed: false,
            failed: None,
            seeded: previous.and_then(|r| r.seeded),
        },
        steps: Vec::new(),
    };
    match steps(env, &mut run, options).await {
        Ok(outcome) => Ok(outcome),
        Err(error) => {
            run.record.failed = Some(
                format!("{error:#}")
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            );
            let _ = write_json(&state.deploy_record(), &run.record);
            Err(error)
        }
    }
}

/// What to say about the last deploy when it did not complete.
pub fn resume_note(previous: &DeployRecord) -> Option<String> {
    if previous.completed {
        return None;
    }
    Some(match &previous.failed {
        Some(_) => format!("previous deploy failed at step {}; resuming", previous.step),
        None => format!(
            "previous deploy (pid {}) was interrupted at step {}; resuming",
            previous.pid, previous.step
        ),
    })
}

async fn steps(
    env: &Environment<'_>,
    run: &mut Run<'_>,
    options: &Options,
) -> anyhow::Result<Outcome> {
    let context = run.context;
    let progress = run.progress;
    let state = &context.state;
    let store: &dyn SecretStore = &context.store;

    let started = run.begin("programs")?;
    let ports = DataPorts::from_environment(env)?;
    let (pg, redis_server, mongo) = find_programs(&context.repo)?;
    run.end(
        "programs",
        started,
        &format!("PostgreSQL {}, {}", pg.bindir.display(), mongo.describe()),
    );

    let started = run.begin("secrets")?;
    let created = credentials::ensure_generated(env.base, store, unix_now() as i64)?;
    let superuser = credentials::password(store, postgres::SUPERUSER_SECRET, "password")?;
    credentials::put(
        store,
        postgres::SUPERUSER_SECRET,
        "username",
        &Secret::new(postgres::SUPERUSER),
    )?;
    let redis_users = credentials::redis_users(env.base, store, ports.redis)?;
    let fixtures = seed::ensure_fixtures(store)?;
    run.end(
        "secrets",
        started,
        &format!("{} generated now, in {}", created.len(), store.describe()),
    );

    let started = run.begin("build")?;
    let bin_dir = match &options.bin_dir {
        Some(dir) => dir.clone(),
        None => build(&context.repo, progress)?,
    };
    for binary in BINARIES {
        if !bin_dir.join(binary).is_file() {
            bail!(
                "{} is missing; build the services (cargo build --release -p {}) or point --bin-dir at them",
                bin_dir.join(binary).display(),
                PACKAGES.join(" -p ")
            );
        }
    }
    let built = if options.bin_dir.is_some() {
        "prebuilt"
    } else {
        "cargo build --release"
    };
    run.end("build", started, &format!("{built}, {}", bin_dir.display()));

    let client = probe::http_client();
    let origins = plan::port_origins(env);
    let started = run.begin("data-services")?;
    // Every port at once, before anything starts: a port another program
    // holds fails the deploy now rather than at the wave that needs it.
    let status: Option<SupervisorStatus> = read_json(&state.status()).ok().flatten();
    let all_ports: Vec<(u16, &str)> = origins
        .iter()
        .map(|(port, origin)| (*port, origin.process.as_str()))
        .collect();
    check_ports(status.as_ref(), &all_ports, &origins)?;
    let created_cluster = pg.init(state, &superuser)?;
    let redis_admin = crate::backup::connection::redis_password(store)?;
    redis::configure(
        state,
        env.base,
        ports.redis,
        &redis_users,
        redis_admin.as_ref(),
    )?;
    mongo.prepare(state)?;
    let mut data = vec![
        pg.spec(state, ports.postgres),
        redis::spec(&redis_server, state, ports.redis),
        mongo.spec(state, ports.mongo),
    ];
    data[0].version = pg.version();
    data[1].version = redis::version(&redis_server);
    data[2].version = mongo.version();
    // A new supervisor (the first deploy, or one after `down`) starts from
    // an empty desired state, so that the steps below hand it the
    // processes one release wave at a time, each ready before the next;
    // and everything it then runs counts as changed by this run.
    let mut desired: DesiredState = match supervisor::live_supervisor(state) {
        Some(_) => read_json(&state.desired())?.unwrap_or_default(),
        None => {
            write_json(&state.desired(), &DesiredState::default())?;
            DesiredState::default()
        }
    };
    let (supervisor_pid, started_now) = supervisor::ensure_running(state)?;
    if started_now {
        progress.note(&format!("supervisor started (pid {supervisor_pid})"));
    }
    let before = desired.clone();
    desired.held.clear();
    let waves = Waves {
        state,
        client: &client,
        origins: &origins,
        progress,
    };
    waves.apply(&mut desired, &data).await?;
    let cluster = if created_cluster {
        "new cluster"
    } else {
        "existing cluster"
    };
    run.end(
        "data-services",
        started,
        &format!(
            "postgres :{} ({cluster}), redis :{}, {} :{}",
            ports.postgres,
            ports.redis,
            mongo.describe(),
            ports.mongo
        ),
    );

    let started = run.begin("provision")?;
    let provisioning = db::provision::plan(env, None)?;
    let admin = db::provision::Admin {
        env,
        secrets: store,
        connect_timeout: Duration::from_secs(30),
    };
    let changes = db::provision::apply(&provisioning, &admin, &mut |_| {}).await?;
    let created = changes
        .iter()
        .filter(|c| c.outcome == db::provision::Outcome::Created)
        .count();
    run.end(
        "provision",
        started,
        &format!(
            "{} databases, {created} roles, users or databases created now",
            provisioning.databases.len()
        ),
    );

    // The services' specs, with the digests of their binaries' content,
    // are worked out within the migrate step (which runs them first).
    let started = run.begin("migrate")?;
    let fingerprint = plan::file_fingerprint;
    let secret_file = |secret: &str, key: &str| {
        store
            .read(secret, key)
            .ok()
            .flatten()
            .and_then(|_| store.file(secret, key))
    };
    let inputs = Inputs {
        state,
        bin_dir: &bin_dir,
        fingerprint: &fingerprint,
        secret_file: &secret_file,
    };
    let services = plan::services(env, &inputs)?;
    let applied = migrate_postgres(env, &context.repo, store).await?;
    let indexed = migrate_mongo(env, &services)?;
    run.end(
        "migrate",
        started,
        &format!(
            "{applied} PostgreSQL migrations applied now; {indexed} MongoDB databases indexed"
        ),
    );

    for (step, wave) in [("core", 1), ("auth", 2)] {
        start_wave(run, &waves, step, wave, &services, &mut desired).await?;
    }

    let endpoints = plan::endpoints(env)?;
    write_json(&state.endpoints(), &endpoints)?;
    let kisumctl = store
        .read("internal-credential-kisumctl", "token")?
        .context("the secret internal-credential-kisumctl is missing")?;
    let started = run.begin("auth-reaches-core")?;
    let reached = wait_reachable(&client, &endpoints, &kisumctl).await?;
    run.end("auth-reaches-core", started, &reached);

    for (step, wave) in [("modules", 3), ("admin", 4)] {
        start_wave(run, &waves, step, wave, &services, &mut desired).await?;
    }
    // Anything the matrix no longer names stops now.
    let all: Vec<ProcessSpec> = data.iter().chain(&services).cloned().collect();
    let mut changed = plan::changes(&before, &all);
    for name in &before.held {
        if !changed.contains(name) {
            changed.push(name.clone());
        }
    }
    desired
        .processes
        .retain(|p| all.iter().any(|s| s.name == p.name));
    write_json(&state.desired(), &desired)?;

    let started = run.begin("seed")?;
    let digest = seed::digest(&fixtures);
    let summary = if run.record.seeded.as_deref() == Some(digest.as_str()) {
        "already seeded".to_string()
    } else {
        let auth = services
            .iter()
            .find(|s| s.name == "auth")
            .context("no auth service")?;
        let args = seed::seed_user_args(&fixtures, store)?;
        seed::seed_auth(&auth.argv[0], &auth.env, &args)?;
        seed::seed_core(
            &client,
            &endpoints.public["auth"],
            &endpoints.public["platform-admin"],
            &fixtures,
        )
        .await?;
        run.record.seeded = Some(digest);
        format!(
            "{}, {}, company {}",
            fixtures.user_email, fixtures.admin_email, fixtures.company_slug
        )
    };
    run.end("seed", started, &summary);

    let started = run.begin("checks")?;
    let quick = checks::run(&client, &endpoints, &all, &kisumctl, &fixtures).await;
    let passed = quick.iter().filter(|c| c.passed).count();
    run.end(
        "checks",
        started,
        &format!("{passed}/{} passed", quick.len()),
    );

    let started = run.begin("smoke")?;
    // One smoke run at a time: each toggles the smoke company's add-on.
    let smoke_lock = lock::acquire_at(
        &state.smoke_lock(),
        state,
        "kisumctl deploy local (smoke)",
        super::state::SMOKE_LOCK_WAIT,
        &mut |_| {},
    );
    let target = match &smoke_lock {
        Ok(_held) => smoke::Target::for_environment(env, state.root()).map_err(Into::into),
        Err(error) => Err(anyhow::anyhow!("{error}")),
    };
    let report = match target {
        Ok(target) => smoke::run(&target, &fixtures).await,
        Err(error) => smoke::Report {
            checks: vec![smoke::Check {
                name: "smoke",
                passed: false,
                skipped: false,
                duration: Duration::ZERO,
                detail: Some(format!("{error:#}")),
            }],
            repairs: Vec::new(),
        },
    };
    let passed = report.checks.iter().filter(|c| c.passed).count();
    run.end(
        "smoke",
        started,
        &format!("{passed}/{} passed", report.checks.len()),
    );

    run.record.completed = true;
    write_json(&state.deploy_record(), &run.record)?;
    Ok(Outcome {
        steps: std::mem::take(&mut run.steps),
        changed,
        checks: quick,
        smoke: report,
    })
}

/// One step of the release order: the services of a release wave,
/// started and ready.
async fn start_wave(
    run: &mut Run<'_>,
    waves: &Waves<'_>,
    step: &str,
    wave: u8,
    services: &[ProcessSpec],
    desired: &mut DesiredState,
) -> anyhow::Result<()> {
    let started = run.begin(step)?;
    let specs: Vec<ProcessSpec> = services
        .iter()
        .filter(|s| s.wave == wave)
        .cloned()
        .collect();
    waves.apply(desired, &specs).await?;
    run.end(step, started, &names(&specs));
    Ok(())
}

fn names(specs: &[ProcessSpec]) -> String {
    specs
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The system programs, every missing one named in one message.
fn find_programs(repo: &Path) -> anyhow::Result<(Postgres, PathBuf, MongoServer)> {
    let pg = Postgres::find();
    let redis_server = redis::find();
    let mongo = MongoServer::find(repo);
    match (pg, redis_server, mongo) {
        (Ok(pg), Ok(redis_server), Ok(mongo)) => Ok((pg, redis_server, mongo)),
        (pg, redis_server, mongo) => {
            let errors: Vec<String> = [pg.err(), redis_server.err(), mongo.err()]
                .into_iter()
                .flatten()
                .map(|e| format!("  - {e:#}"))
                .collect();
            bail!(
                "missing system programs:\n{}\n`bash scripts/main.sh` installs them on Debian",
                errors.join("\n")
            )
        }
    }
}

/// `cargo build --release` of the service binaries in the repository;
/// cargo's progress lines become the step's detail.
fn build(repo: &Path, progress: &dyn Progress) -> anyhow::Result<PathBuf> {
    use std::io::BufRead as _;
    if !repo.join("Cargo.toml").is_file() {
        bail!(
            "{} holds no Cargo.toml to build the services from; pass --bin-dir with prebuilt binaries",
            repo.display()
        );
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(repo)
        .args(["build", "--release", "--locked"]);
    for package in PACKAGES {
        command.args(["-p", package]);
    }
    // cargo and the compilers it starts in a group of their own, which an
    // interrupt of kisumctl stops (see `Interrupts`).
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let interrupts = Interrupts::register()?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running cargo build (is the Rust toolchain installed?)")?;
    let mut tail: Vec<String> = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        // Lines as cargo writes them; a reminder when it has said nothing
        // for a while (one crate can take minutes to compile or link).
        let (lines, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let started = Instant::now();
        let mut heard = Instant::now();
        loop {
            interrupts.forward(&mut child);
            match received.recv_timeout(INTERRUPT_POLL) {
                Ok(line) => {
                    heard = Instant::now();
                    progress.detail(line.trim());
                    tail.push(line);
                    if tail.len() > 30 {
                        tail.remove(0);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    if heard.elapsed() < BUILD_QUIET => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    heard = Instant::now();
                    let last = tail.last().map_or("", |l| l.trim());
                    progress.detail(&format!(
                        "cargo is still building ({} s; last: {last})",
                        started.elapsed().as_secs()
                    ));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    }
    let status = loop {
        interrupts.forward(&mut child);
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(INTERRUPT_POLL);
    };
    drop(interrupts);
    if !status.success() {
        bail!(
            "cargo build --release failed ({status}):\n{}",
            tail.join("\n")
        );
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"));
    Ok(target.join("release"))
}

/// How often the build looks for an interrupt.
const INTERRUPT_POLL: Duration = Duration::from_millis(100);

/// SIGINT and SIGTERM while cargo builds. A signal to kisumctl alone (as
/// `kill -INT PID` sends it, unlike Ctrl-C to the terminal's group) would
/// otherwise end kisumctl and leave cargo building: caught instead, it is
/// passed to cargo's process group, cargo is waited for, and kisumctl then
/// ends as the signal ends it (the deploy record says `build`, resumable
/// like any killed deploy). The handlers go when this is dropped.
struct Interrupts {
    caught: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ids: Vec<signal_hook::SigId>,
}

impl Interrupts {
    fn register() -> anyhow::Result<Interrupts> {
        let caught = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut ids = Vec::new();
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let id = signal_hook::flag::register_usize(
                signal,
                std::sync::Arc::clone(&caught),
                signal as usize,
            )
            .context("handling interrupts during the build")?;
            ids.push(id);
        }
        Ok(Interrupts { caught, ids })
    }

    /// When a signal was caught: the same to cargo's group, cargo waited
    /// for, then kisumctl ended by it. Returns when none was.
    fn forward(&self, child: &mut std::process::Child) {
        let signal = self.caught.load(std::sync::atomic::Ordering::SeqCst);
        if signal == 0 {
            return;
        }
        let number = i32::try_from(signal).unwrap_or(signal_hook::consts::SIGTERM);
        if let (Some(group), Some(sent)) = (
            rustix::process::Pid::from_raw(child.id() as i32),
            rustix::process::Signal::from_named_raw(number),
        ) {
            let _ = rustix::process::kill_process_group(group, sent);
        }
        let _ = child.wait();
        for id in &self.ids {
            signal_hook::low_level::unregister(*id);
        }
        let _ = signal_hook::low_level::emulate_default_handler(number);
        std::process::exit(128 + number);
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        for id in &self.ids {
            signal_hook::low_level::unregister(*id);
        }
    }
}

/// The PostgreSQL migrations of every service, in release order, as the
/// migration roles (`kisumctl db migrate`); answers how many ran now.
async fn migrate_postgres(
    env: &Environment<'_>,
    repo: &Path,
    store: &dyn SecretStore,
) -> anyhow::Result<usize> {
    let mut applied = 0;
    let sets = db::migrate::sets(env, repo, None)?;
    db::migrate::readable(&sets)?;
    for set in sets {
        let mut conn = db::migrate::connect(&set, store).await?;
        let report = db::migrate::run(&mut conn, &set, false, READY_TIMEOUT, &mut |_| {})
            .await
            .map_err(anyhow::Error::from)?;
        applied += report.applied.len();
        let _ = sqlx::Connection::close(conn).await;
    }
    Ok(applied)
}

/// `<binary> migrate` of every service on MongoDB (which creates its
/// indexes), in parallel.
fn migrate_mongo(env: &Environment, services: &[ProcessSpec]) -> anyhow::Result<usize> {
    let with_database: Vec<&ProcessSpec> = services
        .iter()
        .filter(|s| {
            env.services
                .get(s.name.as_str())
                .and_then(|r| r.spec.database.as_ref())
                .and_then(|db| env.base.databases.get(db))
                .is_some_and(|db| db.engine == Engine::Mongodb)
        })
        .collect();
    let results: Vec<anyhow::Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = with_database
            .iter()
            .map(|spec| scope.spawn(move || migrate_one(spec)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a migration thread panicked")))
            })
            .collect()
    });
    let errors: Vec<String> = results
        .into_iter()
        .filter_map(Result::err)
        .map(|e| format!("{e:#}"))
        .collect();
    if !errors.is_empty() {
        bail!("migrations failed:\n  {}", errors.join("\n  "));
    }
    Ok(with_database.len())
}

fn migrate_one(spec: &ProcessSpec) -> anyhow::Result<()> {
    let mut last = None;
    // The emulator may still be loading its file right after a start.
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        let output = Command::new(&spec.argv[0])
            .arg("migrate")
            .env_clear()
            .envs(&spec.env)
            .current_dir(&spec.cwd)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} migrate", spec.argv[0]))?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let text = if stderr.trim().is_empty() {
            stdout
        } else {
            stderr
        };
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        last = Some(format!(
            "{}: migrate failed ({}): {}",
            spec.name,
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    bail!(last.unwrap_or_default())
}

/// What handing processes to the supervisor needs.
struct Waves<'a> {
    state: &'a StateDir,
    client: &'a reqwest::Client,
    /// The matrix field behind each port, for messages.
    origins: &'a BTreeMap<u16, PortOrigin>,
    progress: &'a dyn Progress,
}

impl Waves<'_> {
    /// Checks the specs' ports, adds the specs to the desired state, lets
    /// the supervisor converge and waits until each runs the wanted digest
    /// and passes its probe. A process that keeps exiting right after its
    /// start fails the deploy at once, with the end of its log.
    async fn apply(&self, desired: &mut DesiredState, specs: &[ProcessSpec]) -> anyhow::Result<()> {
        let state = self.state;
        let status: Option<SupervisorStatus> = read_json(&state.status()).ok().flatten();
        let wanted: Vec<(u16, &str)> = specs
            .iter()
            .flat_map(|spec| spec.ports.iter().map(|port| (*port, spec.name.as_str())))
            .collect();
        check_ports(status.as_ref(), &wanted, self.origins)?;
        // Exits already counted before this wave was handed over.
        let counted: BTreeMap<&str, u32> = specs
            .iter()
            .map(|spec| {
                let current = status.as_ref().and_then(|s| s.processes.get(&spec.name));
                let failures = current
                    .filter(|p| p.digest == spec.digest)
                    .map_or(0, |p| p.failures);
                (spec.name.as_str(), failures)
            })
            .collect();
        desired.upsert(specs);
        write_json(&state.desired(), desired)?;
        let deadline = Instant::now() + READY_TIMEOUT;
        for spec in specs {
            self.progress
                .detail(&format!("waiting for {} to be ready", spec.name));
            loop {
                let status: Option<SupervisorStatus> = read_json(&state.status()).ok().flatten();
                let current = status.as_ref().and_then(|s| s.processes.get(&spec.name));
                let ours = current.filter(|p| p.digest == spec.digest);
                let running = ours.is_some_and(|p| p.state == RunState::Running);
                let reason = if running {
                    match probe::check(self.client, &spec.probe).await {
                        Ok(()) => break,
                        Err(reason) => reason,
                    }
                } else {
                    current
                        .and_then(|p| p.last_exit.clone())
                        .map_or("not started yet".to_string(), |exit| {
                            format!("last exit: {exit}")
                        })
                };
                let exits = ours.map_or(0, |p| p.failures);
                if exits >= counted[spec.name.as_str()] + EARLY_EXITS {
                    let last = ours
                        .and_then(|p| p.last_exit.as_deref())
                        .unwrap_or("unknown");
                    bail!(
                        "{} exited {exits} times in a row right after starting (last exit: {last}); its log: {}{}",
                        spec.name,
                        state.log(&spec.name).display(),
                        log_tail(&state.log(&spec.name))
                    );
                }
                if supervisor::live_supervisor(state).is_none() {
                    bail!(
                        "the supervisor stopped; see {}",
                        state.log("supervisor").display()
                    );
                }
                if Instant::now() >= deadline {
                    bail!(
                        "{} is not ready after {} s ({reason}); its log: {}{}",
                        spec.name,
                        READY_TIMEOUT.as_secs(),
                        state.log(&spec.name).display(),
                        log_tail(&state.log(&spec.name))
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

/// Refuses to hand over a process whose port another program holds: it
/// would exit at once (or the deploy would talk to that program). A port
/// held by a process of this environment's supervisor is fine: it is
/// this process, or one the supervisor stops first.
fn check_ports(
    status: Option<&SupervisorStatus>,
    wanted: &[(u16, &str)],
    origins: &BTreeMap<u16, PortOrigin>,
) -> anyhow::Result<()> {
    let ours: Vec<u32> = status
        .map(|s| {
            s.processes
                .values()
                .filter_map(supervisor::leftover)
                .collect()
        })
        .unwrap_or_default();
    let mut taken = Vec::new();
    // A socket with no process (one still closing, or a process that just
    // exited) goes away by itself: looked at again for a while.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut pending: Vec<(u16, &str)> = wanted
        .iter()
        .copied()
        .filter(|(port, _)| !ports::is_free(*port))
        .collect();
    while !pending.is_empty() {
        let numbers: Vec<u16> = pending.iter().map(|(port, _)| *port).collect();
        let holders = ports::holders(&numbers);
        let mut unseen = Vec::new();
        for (port, process) in pending {
            let found = holders.get(&port).map_or(&[][..], Vec::as_slice);
            if found.iter().any(|h| ours.contains(&h.pid)) || ports::is_free(port) {
                continue;
            }
            if found.is_empty() && Instant::now() < deadline {
                unseen.push((port, process));
                continue;
            }
            let holder = found.first().map_or_else(
                || "a process this user cannot see".to_string(),
                ToString::to_string,
            );
            let origin = origins
                .get(&port)
                .map_or_else(String::new, |o| format!(", set by {}", o.field));
            taken.push(format!(
                "port {port} of {process} is taken by {holder}{origin}"
            ));
        }
        pending = unseen;
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    if taken.is_empty() {
        return Ok(());
    }
    bail!(
        "{}\nstop that program, or give {} another port in the matrix",
        taken.join("\n"),
        if taken.len() == 1 {
            "the process"
        } else {
            "the processes"
        }
    )
}

/// The last lines of a log, indented, control characters escaped, for
/// an error message.
fn log_tail(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().rev().take(8).collect();
    if lines.is_empty() {
        return String::new();
    }
    let mut tail = String::from("\n  last lines:");
    for line in lines.into_iter().rev() {
        tail.push_str("\n    ");
        let line: String = line.chars().take(300).collect();
        tail.push_str(&crate::matrix::load::printable(&line));
    }
    tail
}

async fn wait_reachable(
    client: &reqwest::Client,
    endpoints: &Endpoints,
    token: &Secret,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match checks::auth_reaches_core(client, endpoints, token).await {
            Ok(body) => return Ok(body),
            Err(reason) if Instant::now() >= deadline => {
                bail!("Auth does not reach Platform Core: {reason}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(step: &str, completed: bool, failed: Option<&str>) -> DeployRecord {
        DeployRecord {
            pid: 42,
            started_at: 1,
            step: step.into(),
            completed,
            failed: failed.map(str::to_string),
            seeded: None,
        }
    }

    #[test]
    fn an_unfinished_deploy_is_named_with_its_step() {
        assert_eq!(resume_note(&record("smoke", true, None)), None);
        assert_eq!(
            resume_note(&record("migrate", false, None)).unwrap(),
            "previous deploy (pid 42) was interrupted at step migrate; resuming"
        );
        assert_eq!(
            resume_note(&record("programs", false, Some("redis-server not found"))).unwrap(),
            "previous deploy failed at step programs; resuming"
        );
    }
}
