//! `deploy local` end to end: the real binary, a copy of the matrix on
//! free loopback ports with its state in a temporary directory, and the
//! workspace's debug service binaries. Needs PostgreSQL, redis-server and
//! the mongoeco venv (`bash scripts/peers.sh`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{SMOKE_CHECKS, root, stderr, stdout};

/// The platform of one test; stopped and purged when dropped, even when
/// the test fails half-way. Also used by the key rotation tests.
pub struct Platform {
    dir: tempfile::TempDir,
    pub bin_dir: PathBuf,
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
        let bin_dir = service_binaries();
        let dir = tempfile::Builder::new()
            .prefix("kisum-deploy-")
            .tempdir()
            .expect("temp dir");
        let environments = dir.path().join("environments");
        std::fs::create_dir(&environments).unwrap();
        for entry in std::fs::read_dir(root().join("environments")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), environments.join(entry.file_name())).unwrap();
        }
        let local = environments.join("local.yaml");
        let text = std::fs::read_to_string(&local).unwrap();
        let offset = free_offset();
        let text = text
            .replace("port: 25432", &format!("port: {}", free_port()))
            .replace("port: 26379", &format!("port: {}", free_port()))
            .replace("port: 27117", &format!("port: {}", free_port()))
            .replace("port-offset: 20000", &format!("port-offset: {offset}"));
        std::fs::write(&local, text).unwrap();
        Platform { dir, bin_dir }
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

    // A second run converges without restarting anything.
    let before = platform.pids();
    let again = platform.deploy(&[]);
    assert_deployed(&again);
    assert_eq!(changed(&again), "nothing");
    assert_eq!(platform.pids(), before);

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
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    drop(lock);

    // A service killed with SIGKILL comes back, and the checks pass again.
    let auth = after.iter().find(|(n, _)| n == "auth").unwrap().1;
    Command::new("kill")
        .args(["-KILL", &auth.to_string()])
        .status()
        .unwrap();
    let back = wait_until(Duration::from_secs(30), || {
        let status = platform.status(true);
        let auth_row = status["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "auth")
            .cloned()
            .unwrap_or_default();
        auth_row["pid"].as_u64().is_some_and(|pid| pid != auth)
            && auth_row["restarts"].as_u64() >= Some(1)
            && checks_pass(&status)
    });
    assert!(back, "auth was not restarted: {}", platform.status(true));

    // Redis stopped: the checks still pass (Auth falls back to auth_db).
    let held = platform.run(&["down", "local", "--only", "redis"]);
    assert!(held.status.success(), "{}", stderr(&held));
    let status = platform.status(true);
    assert!(checks_pass(&status), "without Redis: {status}");
    assert_eq!(status["redis_keys"], Value::Null);
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
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} still runs"
        );
    }
}
