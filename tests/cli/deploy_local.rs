//! `deploy local` end to end: the real binary, a copy of the matrix on
//! free loopback ports with its state in a temporary directory, and the
//! workspace's debug service binaries (through a directory of links per
//! test, which a test may change). Needs PostgreSQL, redis-server and the
//! mongoeco venv (`bash scripts/peers.sh`). Every test stops and purges
//! its platform when it ends, failed or not.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{SMOKE_CHECKS, root, stderr, stdout};

/// The platform of one test; stopped and purged when dropped, even when
/// the test fails half-way. Also used by the key rotation tests.
pub struct Platform {
    dir: tempfile::TempDir,
    /// Links to the workspace's debug service binaries.
    pub bin_dir: PathBuf,
    redis_port: u16,
}

impl Drop for Platform {
    fn drop(&mut self) {
        let output = self.run(&["down", "local", "--purge", "--lock-timeout", "30"]);
        if !output.status.success() {
            eprintln!("down --purge failed:\n{}", stderr(&output));
        }
    }
}

impl Platform {
    pub fn start() -> Platform {
        let built = service_binaries();
        let dir = tempfile::Builder::new()
            .prefix("kisum-deploy-")
            .tempdir()
            .expect("temp dir");
        let bin_dir = dir.path().join("bin");
        std::fs::create_dir(&bin_dir).unwrap();
        for binary in ["kisum-core", "kisum-auth", "kisum-module", "kisum-admin"] {
            std::os::unix::fs::symlink(built.join(binary), bin_dir.join(binary)).unwrap();
        }
        let environments = dir.path().join("environments");
        std::fs::create_dir(&environments).unwrap();
        for entry in std::fs::read_dir(root().join("environments")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), environments.join(entry.file_name())).unwrap();
        }
        let local = environments.join("local.yaml");
        let text = std::fs::read_to_string(&local).unwrap();
        let offset = free_offset();
        let redis_port = free_port();
        let text = text
            .replace("port: 25432", &format!("port: {}", free_port()))
            .replace("port: 26379", &format!("port: {redis_port}"))
            .replace("port: 27117", &format!("port: {}", free_port()))
            .replace("port-offset: 20000", &format!("port-offset: {offset}"));
        std::fs::write(&local, text).unwrap();
        // The matrix's migration directories resolve against its parent.
        std::os::unix::fs::symlink(root().join("services"), dir.path().join("services")).unwrap();
        Platform {
            dir,
            bin_dir,
            redis_port,
        }
    }

    pub fn matrix(&self) -> PathBuf {
        self.dir.path().join("environments")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join(".kisum/local")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kisumctl"));
        command
            .arg("--matrix")
            .arg(self.matrix())
            .args(args)
            .current_dir(self.dir.path())
            .env("KISUM_MONGOECO_PYTHON", mongoeco_python())
            .env_remove("KISUM_MATRIX")
            .env_remove("KISUM_SERVICE_BIN_DIR");
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("kisumctl runs")
    }

    pub fn deploy(&self, extra: &[&str]) -> Output {
        let bin_dir = self.bin_dir.display().to_string();
        let mut args = vec!["deploy", "local", "--bin-dir", &bin_dir];
        args.extend(extra);
        self.run(&args)
    }

    pub fn status(&self, verify: bool) -> Value {
        let mut args = vec!["status", "local", "-o", "json"];
        if verify {
            args.push("--verify");
        }
        let output = self.run(&args);
        serde_json::from_str(&stdout(&output))
            .unwrap_or_else(|e| panic!("status -o json: {e}\n{}", stderr(&output)))
    }

    pub fn pids(&self) -> Vec<(String, u64)> {
        let status = self.status(false);
        status["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["pid"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }

    /// A process's row of `status -o json`.
    fn row(&self, name: &str) -> Value {
        self.status(false)["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no process {name} in status"))
    }

    fn supervisor_pid(&self) -> u32 {
        std::fs::read_to_string(self.state().join("supervisor.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// `kisumctl smoke local` passes, every check of section 25.3.
    fn assert_smoke_passes(&self) {
        let output = self.run(&["smoke", "local"]);
        let out = stdout(&output);
        assert_eq!(output.status.code(), Some(0), "{out}{}", stderr(&output));
        for check in SMOKE_CHECKS {
            assert!(
                out.lines()
                    .any(|l| l.starts_with("PASS") && l.contains(&format!(" {check} "))),
                "{check} did not pass:\n{out}"
            );
        }
    }

    fn edit_local(&self, from: &str, to: &str) {
        self.edit_matrix("local.yaml", from, to);
    }

    /// Replaces the first `from` in a file of the matrix copy.
    pub fn edit_matrix(&self, file: &str, from: &str, to: &str) {
        let path = self.matrix().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} has no `{from}`");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }
}

/// Builds (or finds up to date) the debug service binaries.
fn service_binaries() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(root()).args(["build", "--quiet"]);
    for package in ["kisum-core", "kisum-auth", "kisum-module", "kisum-admin"] {
        command.args(["-p", package]);
    }
    let status = command.status().expect("cargo runs");
    assert!(status.success(), "building the service binaries failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    target.join("debug")
}

fn mongoeco_python() -> PathBuf {
    let python = std::env::var_os("KISUM_MONGOECO_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".peers/venv-mongoeco/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/peers.sh`",
        python.display()
    );
    python
}

/// A port that nothing listens on, below the ephemeral range (where an
/// outgoing connection could take it before the server binds it).
fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = 10000 + random_below(10000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 10000 and 20000");
}

/// An offset that puts every service port (8101-9116 of the base file)
/// on a free port between 20101 and 31116.
fn free_offset() -> u16 {
    let base = [
        8101, 8102, 8103, 8111, 8112, 8113, 8114, 8115, 8116, 9101, 9102, 9103, 9111, 9112, 9113,
        9114, 9115, 9116,
    ];
    for _ in 0..200 {
        let offset = 12000 + random_below(10000);
        let all_free = base
            .iter()
            .all(|port| TcpListener::bind(("127.0.0.1", port + offset)).is_ok());
        if all_free {
            return offset;
        }
    }
    panic!("no free port range for the services");
}

fn random_below(n: u16) -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    ((nanos ^ std::process::id().wrapping_mul(2654435761)) % u32::from(n)) as u16
}

/// Deploy succeeded: exit 0, every quick check and every smoke check
/// passing.
pub fn assert_deployed(output: &Output) {
    let (out, err) = (stdout(output), stderr(output));
    let code = output.status.code();
    assert!(code == Some(0), "deploy failed ({code:?}):\n{out}\n{err}");
    for check in SMOKE_CHECKS {
        let name = format!("smoke/{check} ");
        let line = out
            .lines()
            .find(|l| l.starts_with(&name))
            .unwrap_or_else(|| panic!("no smoke check {check}:\n{out}"));
        assert!(line.contains(" pass "), "{line}");
    }
    for check in ["ready", "auth-reaches-core", "login", "module-read"] {
        let line = out
            .lines()
            .skip_while(|l| !l.starts_with("CHECK "))
            .find(|l| l.starts_with(&format!("{check} ")))
            .unwrap_or_else(|| panic!("no check {check}:\n{out}"));
        assert!(line.contains(" pass "), "{line}");
    }
    assert!(out.contains("total"), "no per-step durations:\n{out}");
}

fn changed(output: &Output) -> String {
    stdout(output)
        .lines()
        .find_map(|l| l.strip_prefix("changed: "))
        .unwrap_or_default()
        .to_string()
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// The process is there and not a zombie.
fn running(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// Sends SIGKILL to a process (`-PID`: to its process group).
fn kill(target: &str) {
    let status = Command::new("kill")
        .args(["-KILL", "--", target])
        .status()
        .unwrap();
    assert!(status.success(), "kill -KILL -- {target} failed");
}

/// The processes the newest supervisor started, with the second of each
/// start, from `logs/supervisor.log`.
fn starts(log: &Path) -> Vec<(f64, String)> {
    let text = std::fs::read_to_string(log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let newest = lines
        .iter()
        .rposition(|l| l.contains(" supervisor: supervisor started "))
        .expect("no supervisor start in the log");
    lines[newest..]
        .iter()
        .filter_map(|line| {
            let (time, rest) = line.split_once(" supervisor: started ")?;
            let name = rest.split_whitespace().next()?;
            Some((time.parse().ok()?, name.to_string()))
        })
        .collect()
}

fn checks_pass(status: &Value) -> bool {
    status["checks"]
        .as_array()
        .is_some_and(|c| !c.is_empty() && c.iter().all(|c| c["passed"] == true))
}

/// Every secret value of the store (long enough to be recognisable).
fn secret_values(store: &Path) -> Vec<String> {
    let mut values = Vec::new();
    for secret in std::fs::read_dir(store).unwrap() {
        for key in std::fs::read_dir(secret.unwrap().path()).unwrap() {
            let path = key.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let value = std::fs::read_to_string(&path).unwrap().trim().to_string();
            let identifier = ["company-id", "company-slug", "username"].contains(&name.as_str())
                || name.ends_with("email");
            if value.len() >= 16 && !identifier {
                values.push(value);
            }
        }
    }
    values
}

fn assert_no_secret_in(values: &[String], what: &str, text: &str) {
    for value in values {
        // The first line is enough to recognise a multi-line key set.
        let needle = value.lines().find(|l| l.len() >= 16).unwrap_or(value);
        assert!(!text.contains(needle), "a secret value appears in {what}");
    }
}

#[test]
fn deploy_local_end_to_end() {
    let platform = Platform::start();

    // From nothing to the platform running and checked.
    let first = platform.deploy(&[]);
    assert_deployed(&first);
    assert!(changed(&first).contains("postgres"), "{}", stdout(&first));
    let status = platform.status(true);
    assert!(status["supervisor"].as_u64().is_some(), "{status}");
    assert!(checks_pass(&status), "{status}");
    for process in status["processes"].as_array().unwrap() {
        assert_eq!(process["ready"], true, "{process}");
        assert!(process["version"].as_str().is_some(), "{process}");
    }
    assert!(platform.state().join("endpoints.json").is_file());
    // Every database and Redis answers a query; every migration is applied.
    let operation = |status: &Value, name: &str| -> Value {
        status["operations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("no operation {name}: {status}"))
            .clone()
    };
    for name in [
        "database auth-db",
        "database main-db",
        "redis",
        "migrations auth-db",
    ] {
        let item = operation(&status, name);
        assert_eq!(item["light"], "green", "{item}");
    }
    assert!(
        operation(&status, "database auth-db")["detail"]
            .as_str()
            .unwrap()
            .contains(" ms"),
        "{status}"
    );
    assert!(
        operation(&status, "migrations platform-core-db")["detail"]
            .as_str()
            .unwrap()
            .ends_with(" applied"),
        "{status}"
    );

    // Secrets never leave the store.
    let values = secret_values(&platform.state().join("secrets"));
    assert!(values.len() > 20, "{} secrets", values.len());
    assert_no_secret_in(
        &values,
        "deploy's output",
        &(stdout(&first) + &stderr(&first)),
    );
    assert_no_secret_in(&values, "status", &status.to_string());
    for file in [
        "desired.json",
        "status.json",
        "deploy-state.json",
        "endpoints.json",
    ] {
        let text = std::fs::read_to_string(platform.state().join(file)).unwrap();
        assert_no_secret_in(&values, file, &text);
    }
    for log in std::fs::read_dir(platform.state().join("logs")).unwrap() {
        let path = log.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert_no_secret_in(&values, &path.display().to_string(), &text);
    }

    // Auth's Redis took every command the deploy and the smoke checks
    // made it send: its ACL admits every key family Auth uses.
    let auth_log = std::fs::read_to_string(platform.state().join("logs/auth.log")).unwrap();
    assert!(
        !auth_log.contains("Redis unavailable"),
        "Auth lost its Redis during the deploy:\n{auth_log}"
    );

    // A second run converges without restarting anything.
    let before = platform.pids();
    let again = platform.deploy(&[]);
    assert_deployed(&again);
    assert_eq!(changed(&again), "nothing");
    assert_eq!(platform.pids(), before);

    // A rebuild that writes the same bytes restarts nothing: a program is
    // known by its content, not by its file's dates or inode.
    let link = platform.bin_dir.join("kisum-auth");
    let copy = platform.bin_dir.join("kisum-auth.rebuilt");
    std::fs::copy(std::fs::read_link(&link).unwrap(), &copy).unwrap();
    std::fs::rename(&copy, &link).unwrap();
    let rebuilt = platform.deploy(&[]);
    assert_deployed(&rebuilt);
    assert_eq!(changed(&rebuilt), "nothing");
    assert_eq!(platform.pids(), before);

    // A secret store that other users can list is refused, by name.
    let store = platform.state().join("secrets");
    let mode = |mode| std::fs::Permissions::from_mode(mode);
    std::fs::set_permissions(&store, mode(0o755)).unwrap();
    let refused = platform.deploy(&[]);
    std::fs::set_permissions(&store, mode(0o700)).unwrap();
    let message = stderr(&refused);
    assert_eq!(refused.status.code(), Some(3), "{message}");
    let expected = format!(
        "{} is open to other users (mode 755): the secret store must be private; run `chmod 700 ",
        store.display()
    );
    assert!(message.contains(&expected), "{message}");

    // A matrix change restarts only the service it changes.
    platform.edit_local(
        "services:\n  auth:\n",
        "services:\n  finance:\n    config:\n      LOG_LEVEL: debug\n  auth:\n",
    );
    let changed_run = platform.deploy(&[]);
    assert_deployed(&changed_run);
    assert_eq!(changed(&changed_run), "finance");
    let after = platform.pids();
    for ((name, old), (_, new)) in before.iter().zip(&after) {
        assert_eq!(old != new, name == "finance", "{name}: {old} -> {new}");
    }
    // A planned restart is no crash.
    assert_eq!(platform.row("finance")["restarts"], 0);

    // A second deploy while one holds the lock waits, then refuses with
    // the holder's pid.
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(platform.state().join("deploy.lock"))
        .unwrap();
    lock.try_lock().unwrap();
    std::fs::write(
        platform.state().join("deploy.lock"),
        std::process::id().to_string(),
    )
    .unwrap();
    let refused = platform.deploy(&["--lock-timeout", "1"]);
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    let message = stderr(&refused);
    assert!(message.contains("another deploy"), "{message}");
    assert!(
        message.contains(&format!(
            "pid {} holds {}",
            std::process::id(),
            platform.state().join("deploy.lock").display()
        )),
        "{message}"
    );
    drop(lock);

    // A service killed with SIGKILL is restarted by the supervisor, status
    // says so, and the smoke checks pass again.
    let auth = after.iter().find(|(n, _)| n == "auth").unwrap().1;
    kill(&auth.to_string());
    let back = wait_until(Duration::from_secs(30), || {
        let status = platform.status(true);
        let auth_row = &platform.row("auth");
        auth_row["pid"].as_u64().is_some_and(|pid| pid != auth)
            && auth_row["state"] == "running"
            && auth_row["ready"] == true
            && checks_pass(&status)
    });
    assert!(back, "auth was not restarted: {}", platform.status(true));
    let auth_row = platform.row("auth");
    assert_eq!(auth_row["restarts"], 1, "{auth_row}");
    assert_eq!(
        auth_row["detail"], "last exit: killed by signal 9",
        "{auth_row}"
    );
    platform.assert_smoke_passes();

    // Redis stopped: the checks still pass (Auth falls back to auth_db).
    let held = platform.run(&["down", "local", "--only", "redis"]);
    assert!(held.status.success(), "{}", stderr(&held));
    let status = platform.status(true);
    assert!(checks_pass(&status), "without Redis: {status}");
    assert_eq!(status["redis_keys"], Value::Null);
    // ... but status reports Redis unreachable, red, and exits 1.
    let redis = operation(&status, "redis");
    assert_eq!(redis["light"], "red", "{redis}");
    assert!(
        redis["detail"]
            .as_str()
            .unwrap()
            .starts_with("connection refused at 127.0.0.1:"),
        "{redis}"
    );
    assert_eq!(operation(&status, "database auth-db")["light"], "green");
    let output = platform.run(&["status", "local"]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(
        stdout(&output)
            .lines()
            .any(|l| l.starts_with("redis ") && l.contains("RED")),
        "{}",
        stdout(&output)
    );
    // Redis back: the next deploy starts it, and the cache fills again.
    let restored = platform.deploy(&[]);
    assert_deployed(&restored);
    assert!(
        changed(&restored).contains("redis"),
        "{}",
        stdout(&restored)
    );
    let status = platform.status(true);
    assert!(checks_pass(&status), "{status}");
    // The services reconnect to the restarted Redis with a backoff, so the
    // cache fills within seconds of it, not at the first request.
    let refilled = wait_until(Duration::from_secs(30), || {
        let status = platform.status(true);
        checks_pass(&status) && status["redis_keys"].as_u64() > Some(0)
    });
    assert!(refilled, "the cache stays empty: {}", platform.status(true));

    // Redis and Auth stopped (SIGSTOP) accept connections and answer
    // nothing: status says neither is ready, and why.
    let pid_of = |name: &str| platform.row(name)["pid"].as_u64().unwrap().to_string();
    let frozen = [pid_of("redis"), pid_of("auth")];
    let signal = |which: &str| {
        for pid in &frozen {
            let sent = Command::new("kill").args([which, pid]).status().unwrap();
            assert!(sent.success(), "kill {which} {pid}");
        }
    };
    signal("-STOP");
    let status = platform.status(false);
    signal("-CONT");
    let row = |name: &str| {
        status["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap()
    };
    let (redis, auth) = (row("redis"), row("auth"));
    assert_eq!(redis["ready"], false, "{redis}");
    assert!(
        redis["detail"].as_str().unwrap().starts_with("not ready: ")
            && redis["detail"].as_str().unwrap().contains("PING"),
        "{redis}"
    );
    assert_eq!(auth["ready"], false, "{auth}");
    assert!(
        auth["detail"].as_str().unwrap().starts_with("not ready: "),
        "{auth}"
    );

    // A deploy killed with SIGKILL is resumed by the next one.
    let mut child = platform
        .command(&[
            "deploy",
            "local",
            "--bin-dir",
            &platform.bin_dir.display().to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let record = platform.state().join("deploy-state.json");
    let pid = child.id();
    // Killed as soon as it records a step past the data services.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let current: Option<Value> = std::fs::read_to_string(&record)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let step = current
            .filter(|r| r["pid"].as_u64() == Some(u64::from(pid)) && r["completed"] == false)
            .and_then(|r| r["step"].as_str().map(str::to_string));
        if step.is_some_and(|s| !["programs", "secrets", "build"].contains(&s.as_str())) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deploy never got past its first steps"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The step it was killed in (it may have moved on before the kill).
    let killed: Value = serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    let resumed = platform.deploy(&[]);
    assert_deployed(&resumed);
    if killed["completed"] == false {
        let expected = format!(
            "previous deploy (pid {pid}) was interrupted at step {}; resuming",
            killed["step"].as_str().unwrap()
        );
        assert!(
            stderr(&resumed).contains(&expected),
            "{expected}:\n{}",
            stderr(&resumed)
        );
    }

    // down --purge stops everything and removes the state.
    let pids: Vec<u64> = platform.pids().into_iter().map(|(_, pid)| pid).collect();
    let down = platform.run(&["down", "local", "--purge"]);
    assert!(down.status.success(), "{}", stderr(&down));
    assert!(!platform.state().exists());
    for pid in pids {
        assert!(!running(pid), "pid {pid} still runs");
    }
}

#[test]
fn deploy_local_survives_kills_restarts_in_release_order_and_admits_one_deploy_at_a_time() {
    let platform = Platform::start();
    assert_deployed(&platform.deploy(&[]));

    // A SIGKILL sent to a service's process group reaches that service
    // only: the supervisor lives on and restarts it.
    let supervisor = platform.supervisor_pid();
    let before = platform.pids();
    let finance = before.iter().find(|(n, _)| n == "finance").unwrap().1;
    kill(&format!("-{finance}"));
    let back = wait_until(Duration::from_secs(30), || {
        let row = platform.row("finance");
        row["pid"].as_u64().is_some_and(|pid| pid != finance) && row["ready"] == true
    });
    assert!(
        back,
        "finance was not restarted: {}",
        platform.status(false)
    );
    assert_eq!(platform.supervisor_pid(), supervisor);
    for ((name, old), (_, new)) in before.iter().zip(&platform.pids()) {
        assert_eq!(old != new, name == "finance", "{name}: {old} -> {new}");
    }
    platform.assert_smoke_passes();

    // The supervisor killed with SIGKILL: status tells that its processes
    // still run, unsupervised, and exits 1.
    let pids = platform.pids();
    kill(&supervisor.to_string());
    assert!(wait_until(Duration::from_secs(10), || !running(u64::from(
        supervisor
    ))));
    let output = platform.run(&["status", "local", "-o", "json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let status: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(status["supervisor"], Value::Null, "{status}");
    for row in status["processes"].as_array().unwrap() {
        assert_eq!(row["state"], "unsupervised", "{row}");
        assert_eq!(row["up"], true, "{row}");
    }
    let text = stdout(&platform.run(&["status", "local"]));
    assert!(
        text.contains("the supervisor is gone, but 12 of its processes still run"),
        "{text}"
    );
    // down stops what the killed supervisor left running.
    let down = platform.run(&["down", "local"]);
    assert!(down.status.success(), "{}", stderr(&down));
    for (name, pid) in &pids {
        assert!(!running(*pid), "{name} (pid {pid}) still runs");
    }

    // The deploy after a down starts every process, wave after wave, each
    // once the one before is ready, and says it changed them all.
    let again = platform.deploy(&[]);
    assert_deployed(&again);
    let mut names: Vec<String> = pids.iter().map(|(name, _)| name.clone()).collect();
    let mut started: Vec<String> = changed(&again).split(", ").map(str::to_string).collect();
    names.sort();
    started.sort();
    assert_eq!(started, names, "{}", stdout(&again));
    let wave = |name: &str| match name {
        "postgres" | "redis" | "mongo" => 0,
        "platform-core" => 1,
        "auth" => 2,
        "platform-admin" => 4,
        _ => 3,
    };
    let mut starts = starts(&platform.state().join("logs/supervisor.log"));
    let mut seen = std::collections::BTreeSet::new();
    starts.retain(|(_, name)| seen.insert(name.clone()));
    assert_eq!(starts.len(), 12, "{starts:?}");
    for w in 0..4 {
        let last = starts.iter().filter(|(_, n)| wave(n) == w).map(|(t, _)| *t);
        let next = starts
            .iter()
            .filter(|(_, n)| wave(n) == w + 1)
            .map(|(t, _)| *t);
        let (last, next) = (last.fold(f64::MIN, f64::max), next.fold(f64::MAX, f64::min));
        assert!(
            next >= last + 0.1,
            "wave {} started {:.3} s after wave {w}: {starts:?}",
            w + 1,
            next - last
        );
    }
    for row in platform.status(false)["processes"].as_array().unwrap() {
        assert_eq!(
            row["restarts"], 0,
            "a planned start counted as a crash: {row}"
        );
    }

    // Two deploys at once: the second waits for the first; one that will
    // not wait is refused, naming the holder and what it is doing.
    let bin_dir = platform.bin_dir.display().to_string();
    let spawn = || {
        platform
            .command(&["deploy", "local", "--bin-dir", &bin_dir])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn();
    let holder = first.id();
    let lock = platform.state().join("deploy.lock");
    let holds = wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&lock).is_ok_and(|t| t.starts_with(&format!("{holder}\n")))
    });
    assert!(holds, "the first deploy never took the lock");
    let second = spawn();
    let refused = platform.deploy(&["--lock-timeout", "0"]);
    let (first, second) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    assert_deployed(&first);
    assert_deployed(&second);
    let message = stderr(&refused);
    assert_eq!(refused.status.code(), Some(3), "{message}");
    let named = format!(
        "another deploy or down of this environment is running: pid {holder} (kisumctl deploy local, at step "
    );
    assert!(message.contains(&named), "{message}");
    assert!(
        message.contains(&format!("holds {}", lock.display())),
        "{message}"
    );
    let waited = format!("note: waiting for pid {holder} (kisumctl deploy local");
    assert!(stderr(&second).contains(&waited), "{}", stderr(&second));
}

#[test]
fn deploy_local_names_a_port_another_program_holds() {
    let platform = Platform::start();
    let squatter = TcpListener::bind(("127.0.0.1", platform.redis_port)).unwrap();
    let started = Instant::now();
    let output = platform.deploy(&[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{message}");
    assert!(started.elapsed() < Duration::from_secs(30), "{message}");
    let expected = format!(
        "port {} of redis is taken by pid {} (`",
        platform.redis_port,
        std::process::id()
    );
    assert!(message.contains(&expected), "{message}");
    assert!(
        message.contains("set by `redis.endpoint.port` ("),
        "{message}"
    );
    assert!(message.contains("local.yaml:"), "{message}");
    drop(squatter);
}

#[test]
fn deploy_local_stops_at_a_process_that_exits_at_once_and_shows_its_log() {
    let platform = Platform::start();
    // An Admin that migrates, then refuses to serve.
    let real = std::fs::read_link(platform.bin_dir.join("kisum-admin")).unwrap();
    let admin = platform.bin_dir.join("kisum-admin");
    std::fs::remove_file(&admin).unwrap();
    std::fs::write(
        &admin,
        format!(
            "#!/bin/sh\n[ \"$1\" = migrate ] && exec {} \"$@\"\nprintf 'admin: cannot start: \\033[31mboom\\033[0m\\n' >&2\nexit 1\n",
            real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let started = Instant::now();
    let output = platform.deploy(&[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{message}");
    assert!(
        message.contains("platform-admin exited 3 times in a row right after starting"),
        "{message}"
    );
    assert!(
        message.contains("admin: cannot start: \\u{1b}[31mboom\\u{1b}[0m"),
        "{message}"
    );
    assert!(!message.contains('\u{1b}'), "{message}");
    // Well before the 90 s a process may take to become ready.
    assert!(
        started.elapsed() < Duration::from_secs(75),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn deploy_local_shows_the_build_advancing_off_a_terminal() {
    let platform = Platform::start();
    // A stand-in for cargo that reports like cargo and builds nothing.
    let cargo = platform.dir.path().join("fake-cargo");
    std::fs::write(
        &cargo,
        "#!/bin/sh\necho \"   Compiling kisum-auth v0.1.0 ($*)\" >&2\necho '    Finished `release` profile' >&2\n",
    )
    .unwrap();
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(platform.dir.path().join("Cargo.toml"), "[workspace]\n").unwrap();
    let output = platform
        .command(&["deploy", "local"])
        .env("CARGO", &cargo)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{message}");
    assert!(
        message.contains(
            "deploy: build: Compiling kisum-auth v0.1.0 (build --release --locked -p kisum-core"
        ),
        "{message}"
    );
    assert!(
        message.contains("deploy: build: Finished `release` profile"),
        "{message}"
    );
    assert!(message.contains("kisum-core is missing"), "{message}");
}
