//! The commands of a local environment where no platform is needed: the
//! environments they refuse, output to a closed pipe, the escaping of
//! logs, and the operations `status` judges.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{kisumctl, move_data_ports, refused_port, root, scratch_copy, stderr, stdout};

#[test]
fn local_commands_refuse_another_environment_as_a_usage_error() {
    for args in [&["logs", "dev", "auth"][..], &["down", "staging"]] {
        let output = kisumctl(&root(), args);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
        let expected = format!(
            "error: `{} {}` is not supported: only `{} local` is",
            args[0], args[1], args[0]
        );
        assert!(message.contains(&expected), "{args:?}: {message}");
    }
    // `status` of a cluster environment reads the cluster: only what it
    // cannot do there is refused, with a document under `-o json`.
    let output = kisumctl(&root(), &["status", "dev", "--verify", "-o", "json"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let document: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(document["exit"], 2, "{document}");
    assert!(
        stderr(&output).contains("`status dev --verify` is not supported"),
        "{}",
        stderr(&output)
    );
}

/// Which stream of the command is a pipe whose reader has already gone.
#[derive(Clone, Copy, Debug)]
enum Closed {
    Stdout,
    Stderr,
}

/// Runs kisumctl in `dir` with one stream closed; killed after 30 s.
fn with_closed(dir: &Path, closed: Closed, args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut command = Command::new(env!("CARGO_BIN_EXE_kisumctl"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("KISUM_MATRIX")
        .stdin(Stdio::null());
    match closed {
        Closed::Stdout => command.stdout(writer).stderr(Stdio::piped()),
        Closed::Stderr => command.stderr(writer).stdout(Stdio::piped()),
    };
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kisumctl {args:?} did not end with its {closed:?} closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut other = String::new();
    if let Some(mut out) = child.stderr.take() {
        out.read_to_string(&mut other).unwrap();
    }
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut other).unwrap();
    }
    (status.code(), other)
}

/// A deploy record in the state directory `state`, as a deploy that
/// completed leaves it (its pid long gone).
fn write_deploy_record(state: &Path) {
    crate::common::private_dir(state);
    let record = serde_json::json!({
        "pid": 999_999_999u32, "started_at": 1_800_000_000u64,
        "step": "checks", "completed": true,
    });
    std::fs::write(state.join("deploy-state.json"), record.to_string()).unwrap();
}

/// `status local` where nothing was ever deployed says so in one line,
/// names the next step and exits 1, without connecting to any data
/// service: listeners on the matrix's data ports see no connection.
#[test]
fn status_of_local_never_deployed_says_so_without_probing() {
    let copy = scratch_copy();
    let listeners: Vec<_> = (0..3)
        .map(|_| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            listener
        })
        .collect();
    let port = |i: usize| listeners[i].local_addr().unwrap().port();
    move_data_ports(copy.path(), port(0), port(1), port(2));

    let output = kisumctl(copy.path(), &["status", "local"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("local is not deployed (no deploy record in ")
            && text.ends_with("): run `kisumctl deploy local`\n"),
        "{text}"
    );

    let output = kisumctl(copy.path(), &["status", "local", "--verify", "-o", "json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let document: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["deployed"], false, "{document}");
    assert_eq!(document["next"], "kisumctl deploy local", "{document}");
    assert!(document.get("operations").is_none(), "{document}");

    for (i, listener) in listeners.iter().enumerate() {
        let accepted = listener.accept();
        assert!(
            matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "data port {i} was probed: {accepted:?}"
        );
    }
    assert!(
        !copy.path().join(".kisum").exists(),
        "status created a state directory"
    );
}

/// `status local -o json` in `dir`, expected to exit 1.
fn local_status_json(dir: &Path) -> Value {
    let output = kisumctl(dir, &["status", "local", "-o", "json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The operation item `name` of a status document.
fn operation(document: &Value, name: &str) -> Value {
    document["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("{name}: {document:#}"))
        .clone()
}

/// A data port nothing listens on is said at once as refused, once,
/// rather than as a client library's retries running into the timeout.
#[test]
fn status_reports_a_refused_data_port_as_refused() {
    let copy = scratch_copy();
    let (postgres, mongo, redis) = (refused_port(), refused_port(), refused_port());
    move_data_ports(copy.path(), postgres, mongo, redis);
    write_deploy_record(&copy.path().join(".kisum/local"));

    let document = local_status_json(copy.path());
    let detail = |name: &str| operation(&document, name)["detail"].clone();
    let refused = |port: u16| format!("connection refused at 127.0.0.1:{port}");
    assert_eq!(detail("redis"), refused(redis).as_str());
    assert_eq!(detail("database main-db"), refused(mongo).as_str());
    assert_eq!(detail("database auth-db"), refused(postgres).as_str());
}

/// A Redis that refuses the login is said once: the failure, not the
/// client's text followed by its error kind saying it again.
#[test]
fn status_says_a_refused_redis_login_once() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let redis = runtime.block_on(kisum_testkit::Redis::start()).unwrap();
    let copy = scratch_copy();
    move_data_ports(copy.path(), refused_port(), refused_port(), redis.port());
    let state = copy.path().join(".kisum/local");
    write_deploy_record(&state);
    crate::common::write_secret(&state, "redis-auth-credentials", "password", "wrong");

    let document = local_status_json(copy.path());
    let detail = operation(&document, "redis")["detail"].clone();
    let expected = format!(
        "127.0.0.1:{} unreachable: as auth: Password authentication failed",
        redis.port()
    );
    assert_eq!(detail, expected.as_str(), "{document:#}");
    drop(redis);
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    let dir = scratch_copy();
    let (postgres, mongo, redis) = (refused_port(), refused_port(), refused_port());
    move_data_ports(dir.path(), postgres, mongo, redis);
    write_deploy_record(&dir.path().join(".kisum/local"));
    let logs = dir.path().join(".kisum/local/logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("supervisor.log"), "a line\n".repeat(10_000)).unwrap();
    // (command, the exit code it has with a reader)
    let cases: [(&[&str], i32); 5] = [
        (&["status", "local", "-o", "json"], 1),
        (&["status", "local"], 1),
        (&["validate"], 0),
        (&["inventory", "local"], 0),
        (&["logs", "local", "supervisor", "-f"], 0),
    ];
    for (args, code) in cases {
        let (exit, stderr) = with_closed(dir.path(), Closed::Stdout, args);
        assert_eq!(exit, Some(code), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
    // Messages to a closed stderr: the exit code stays the command's.
    let (exit, _) = with_closed(dir.path(), Closed::Stderr, &["logs", "dev", "auth"]);
    assert_eq!(exit, Some(2));
    std::fs::write(dir.path().join("environments/local.yaml"), "tier: [").unwrap();
    let (exit, _) = with_closed(dir.path(), Closed::Stderr, &["validate"]);
    assert_eq!(exit, Some(2));
}

#[test]
fn logs_escape_control_characters_unless_raw() {
    let dir = scratch_copy();
    let logs = dir.path().join(".kisum/local/logs");
    std::fs::create_dir_all(&logs).unwrap();
    let raw: &[u8] = b"first\tline\n\x1b[2J\x1b]0;owned\x07title\rover\n\xff\xfe caf\xc3\xa9\n";
    std::fs::write(logs.join("auth.log"), raw).unwrap();

    let output: Output = kisumctl(dir.path(), &["logs", "local", "auth"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "first\tline\n\\u{1b}[2J\\u{1b}]0;owned\\u{7}title\\rover\n\\xff\\xfe caf\u{e9}\n"
    );
    assert!(
        !output
            .stdout
            .iter()
            .any(|b| *b < 0x20 && *b != b'\n' && *b != b'\t'),
        "a control character reached the output"
    );

    let last = kisumctl(dir.path(), &["logs", "local", "auth", "-n", "1"]);
    assert_eq!(stdout(&last), "\\xff\\xfe caf\u{e9}\n");

    let output = kisumctl(dir.path(), &["logs", "local", "auth", "--raw"]);
    assert_eq!(output.stdout, raw);
}

/// `status local` judges the operations beside the processes: a failed
/// last drill is red (exit 1), a settled key set green, a database never
/// backed up yellow.
#[test]
fn status_reports_the_last_drill_the_key_set_and_backup_ages() {
    let copy = scratch_copy();
    let (postgres, mongo, redis) = (refused_port(), refused_port(), refused_port());
    move_data_ports(copy.path(), postgres, mongo, redis);
    let state = copy.path().join(".kisum/local");
    write_deploy_record(&state);
    crate::common::private_dir(&state.join("drills"));
    let keys = kisum_common::keys::KeySet::generate(1_800_000_000).unwrap();
    crate::common::write_secret(&state, "jwt-signing-keys", "key-set.json", &keys.to_json());
    let report = serde_json::json!({
        "environment": "local", "at": "2026-12-05T01:00:00Z", "passed": false,
        "databases": [
            {"database": "auth-db", "passed": true},
            {"database": "finance-db", "passed": false},
        ],
    });
    std::fs::write(
        state.join("drills/drill-2026-12-05T010000Z.json"),
        report.to_string(),
    )
    .unwrap();

    let document = local_status_json(copy.path());
    let item = |name: &str| operation(&document, name);
    assert_eq!(item("drill")["light"], "red");
    assert_eq!(
        item("drill")["detail"],
        "failed at 2026-12-05T01:00:00Z: finance-db"
    );
    assert_eq!(item("key set")["light"], "green");
    let kid = &keys.active().kid;
    assert_eq!(item("key set")["detail"], format!("active {kid}, settled"));
    assert_eq!(item("backup auth-db")["light"], "yellow");

    let text = stdout(&kisumctl(copy.path(), &["status", "local"]));
    assert!(text.contains("OPERATIONS"), "{text}");
    assert!(text.contains("RED"), "{text}");
}

#[test]
fn a_purge_removes_the_state_directory_and_the_kisum_directory_it_leaves_empty() {
    let matrix = scratch_copy();
    let dir = matrix.path();
    let state = dir.join(".kisum/local");
    std::fs::create_dir_all(state.join("logs")).unwrap();
    std::fs::write(state.join("logs/auth.log"), "a line\n").unwrap();

    let purged = kisumctl(dir, &["down", "local", "--purge"]);
    assert!(purged.status.success(), "{}", stderr(&purged));
    assert!(!state.exists());
    assert!(!dir.join(".kisum").exists(), "{}", stderr(&purged));
    assert!(stderr(&purged).contains("/.kisum\n"), "{}", stderr(&purged));
    assert!(dir.join("environments").is_dir(), "the repository stays");

    // Another environment's state keeps `.kisum/`.
    std::fs::create_dir_all(state.join("logs")).unwrap();
    std::fs::create_dir_all(dir.join(".kisum/dev")).unwrap();
    let purged = kisumctl(dir, &["down", "local", "--purge"]);
    assert!(purged.status.success(), "{}", stderr(&purged));
    assert!(!state.exists());
    assert!(dir.join(".kisum/dev").is_dir());
}

/// A deploy refused by the lock (another deploy holds it) says who holds
/// it and that nothing was changed, not that the platform may be partly
/// deployed; no deploy record is written.
#[test]
fn a_deploy_refused_by_the_lock_says_nothing_was_changed() {
    let copy = scratch_copy();
    let state = copy.path().join(".kisum/local");
    crate::common::private_dir(&state);
    let path = state.join("deploy.lock");
    std::fs::write(&path, format!("{}\n", std::process::id())).unwrap();
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    lock.try_lock().unwrap();
    let bin_dir = tempfile::tempdir().unwrap();
    let bin_dir = bin_dir.path().to_str().unwrap();
    let args = [
        "deploy",
        "local",
        "--bin-dir",
        bin_dir,
        "--lock-timeout",
        "0",
    ];
    let output = kisumctl(copy.path(), &args);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{message}");
    let holder = format!("pid {} holds {}", std::process::id(), path.display());
    assert!(message.contains(&holder), "{message}");
    assert!(
        message.contains("nothing was changed (exit 3)"),
        "{message}"
    );
    assert!(!message.contains("partly deployed"), "{message}");
    assert!(!state.join("deploy-state.json").exists());
    drop(lock);
}

/// `kill -INT` of a `deploy local` building the services (the signal to
/// kisumctl alone, not its process group) stops the build too: cargo and
/// what it started do not go on running. A stand-in for cargo (`CARGO`)
/// starts a child and says both pids; each must be gone once kisumctl has
/// ended by the signal, and the deploy record says `build`, resumable.
#[test]
fn an_interrupted_deploy_stops_its_build() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::ExitStatusExt as _;
    let copy = scratch_copy();
    let dir = copy.path();
    std::fs::write(dir.join("Cargo.toml"), "").unwrap();
    let pids = dir.join("cargo.pids");
    let cargo = dir.join("fake-cargo");
    let script = "#!/usr/bin/env python3\n\
        import os, subprocess, sys\n\
        child = subprocess.Popen(['sleep', '300'])\n\
        path = os.environ['KISUM_TEST_PIDS']\n\
        open(path + '.tmp', 'w').write(f'{os.getpid()} {child.pid}')\n\
        os.rename(path + '.tmp', path)\n\
        child.wait()\n";
    std::fs::write(&cargo, script).unwrap();
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut deploy = Command::new(env!("CARGO_BIN_EXE_kisumctl"))
        .args(["deploy", "local"])
        .current_dir(dir)
        .env_remove("KISUM_MATRIX")
        .env("CARGO", &cargo)
        .env("KISUM_TEST_PIDS", &pids)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let alive = |pid: i32| Path::new(&format!("/proc/{pid}")).exists();
    let deadline = Instant::now() + Duration::from_secs(60);
    let building = loop {
        if let Ok(text) = std::fs::read_to_string(&pids) {
            break text;
        }
        if Instant::now() > deadline || deploy.try_wait().unwrap().is_some() {
            let _ = deploy.kill();
            let output = deploy.wait_with_output().unwrap();
            panic!("the build never started: {}", stderr(&output));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let started: Vec<i32> = building
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(started.iter().all(|pid| alive(*pid)), "{started:?}");
    let kill = Command::new("kill")
        .args(["-INT", &deploy.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = deploy.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = deploy.kill();
            panic!("deploy local did not end after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let gone = |pid: &i32| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(*pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // A zombie of an exited child counts as gone.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |stat| stat.contains(") Z "))
    };
    let left: Vec<i32> = started.iter().copied().filter(|p| !gone(p)).collect();
    for pid in &left {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    assert!(
        left.is_empty(),
        "still running after the interrupt: {left:?}"
    );
    assert_eq!(status.signal(), Some(2), "{status:?}");
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(".kisum/local/deploy-state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["step"], "build", "{record}");
    assert_eq!(record["completed"], false, "{record}");
}
