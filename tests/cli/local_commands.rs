//! The commands of a local environment where no platform is needed: the
//! environments they refuse, output to a closed pipe, the escaping of
//! logs, and the operations `status` judges.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{kisumctl, root, scratch_copy, stderr, stdout};

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

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    let dir = scratch_copy();
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
    let state = copy.path().join(".kisum/local");
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

    let output = kisumctl(copy.path(), &["status", "local", "-o", "json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let document: Value = serde_json::from_slice(&output.stdout).unwrap();
    let item = |name: &str| {
        document["operations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {document:#}"))
            .clone()
    };
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
