//! The operation journal: every mutating command run appends a record to
//! `<state-dir>/journal.jsonl` of its environment, written by the dispatch
//! whatever the command's outcome; read back with `kisumctl journal`.

use std::process::Output;

use serde_json::Value;

use crate::common::{assert_exit, scratch_copy, stdout};

fn kisumctl(dir: &std::path::Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kisumctl"))
        .args(args)
        .current_dir(dir)
        .env_remove("KISUM_MATRIX")
        .env("KISUM_ACTOR", "journal-test")
        .output()
        .expect("kisumctl runs")
}

fn records(dir: &std::path::Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["journal", "local", "-o", "json"];
    args.extend(extra);
    let output = assert_exit(&args, kisumctl(dir, &args), 0);
    let document: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["environment"], "local");
    document["records"].as_array().unwrap().clone()
}

#[test]
fn mutating_commands_are_journaled_with_who_what_result_and_duration() {
    let matrix = scratch_copy();
    let dir = matrix.path();
    assert!(records(dir, &[]).is_empty());

    // Mutating runs, whatever their outcome: Auth's port answers nothing.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let state = dir.join(".kisum/local");
    crate::common::private_dir(&state);
    let endpoints = serde_json::json!({ "internal": { "auth": format!("http://{dead}") } });
    std::fs::write(state.join("endpoints.json"), endpoints.to_string()).unwrap();
    crate::common::write_secret(&state, "internal-credential-kisumctl", "token", "test");
    let company = "0b0e9a4e-52b7-4d4e-8000-000000000001";
    let invalidate = ["access", "invalidate", "local", "--company", company];
    assert_exit(&invalidate, kisumctl(dir, &invalidate), 3);
    let by_user = ["access", "invalidate", "local", "--user", company];
    assert_exit(&by_user, kisumctl(dir, &by_user), 3);
    // Reads, dry runs, status queries and refused input are not.
    for args in [
        &["validate", "local"][..],
        &["runbook", "list"],
        &["inventory", "local"],
        &["db", "migrate", "local", "--dry-run"],
        &["rotate-jwt-key", "local", "--status"],
        &["smoke", "local"],
        &["deploy", "production"],
    ] {
        kisumctl(dir, args);
    }

    let journal = records(dir, &[]);
    assert_eq!(journal.len(), 2, "{journal:#?}");
    let first = &journal[0];
    assert_eq!(first["command"], "access invalidate");
    assert_eq!(first["environment"], "local");
    assert_eq!(first["who"], "journal-test");
    assert_eq!(first["result"], "failed");
    assert_eq!(first["exit"], 3);
    assert_eq!(first["args"], serde_json::json!(invalidate));
    assert!(first["duration_ms"].is_u64());
    assert!(first["started"].as_str().unwrap().ends_with('Z'));
    assert_eq!(journal[1]["args"], serde_json::json!(by_user));
    assert!(!dir.join(".kisum/production").exists());

    let newest = records(dir, &["-n", "1"]);
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0]["args"], serde_json::json!(by_user));

    let text = stdout(&kisumctl(dir, &["journal", "local"]));
    assert!(text.starts_with("started"), "{text}");
    assert!(text.contains("journal-test"), "{text}");
    assert!(text.contains("access invalidate local --company"), "{text}");
    let file = dir.join(".kisum/local/journal.jsonl");
    assert_eq!(std::fs::read_to_string(file).unwrap().lines().count(), 2);
}

#[test]
fn a_purge_leaves_no_state_directory_behind() {
    let matrix = scratch_copy();
    let dir = matrix.path();
    kisumctl(dir, &["down", "local", "--purge"]);
    assert!(!dir.join(".kisum/local").exists());
}

/// The mutating commands of the journal that can run here without a
/// platform (each fails fast or has nothing to do, but is not refused as
/// unusable input) append one record each: who, what, environment,
/// result, exit and duration. (`deploy`, `apply`, `tls issue`, `secrets
/// apply` and `rotate`, `backup` through a Job and `access invalidate` are
/// proven in their own tests.)
#[test]
fn each_mutating_command_run_without_a_platform_appends_one_record() {
    let matrix = scratch_copy();
    let dir = matrix.path();
    let refused = crate::common::refused_port;
    crate::common::move_data_ports(dir, refused(), refused(), refused());
    // `down` of a state directory that does not exist is not recorded
    // (that would create it): give it one.
    crate::common::private_dir(&dir.join(".kisum/local"));
    // (arguments, the exit they have here, its result word)
    let runs: [(&[&str], i32, &str); 7] = [
        (&["db", "provision", "local"], 3, "failed"),
        (&["backup", "local", "auth-db"], 3, "failed"),
        (&["backup", "prune", "local"], 0, "ok"),
        (&["drill", "local", "auth-db"], 1, "check-failed"),
        (&["rotate-jwt-key", "local"], 3, "failed"),
        (&["tls", "renew", "local"], 1, "check-failed"),
        (&["down", "local"], 0, "ok"),
    ];
    for (count, (args, exit, result)) in runs.iter().enumerate() {
        assert_exit(args, kisumctl(dir, args), *exit);
        let journal = records(dir, &["-n", "100"]);
        assert_eq!(journal.len(), count + 1, "{args:?}: {journal:#?}");
        let record = journal.last().unwrap();
        let command: Vec<&str> = args
            .iter()
            .take_while(|a| **a != "local")
            .copied()
            .collect();
        assert_eq!(record["command"], command.join(" "), "{record}");
        assert_eq!(record["environment"], "local", "{record}");
        assert_eq!(record["who"], "journal-test", "{record}");
        assert_eq!(record["result"], *result, "{record}");
        assert_eq!(record["exit"], *exit, "{record}");
        assert_eq!(record["args"], serde_json::json!(args), "{record}");
        assert!(record["duration_ms"].is_u64(), "{record}");
    }
}

#[test]
fn a_run_killed_or_interrupted_before_its_end_is_journaled_as_interrupted() {
    let matrix = scratch_copy();
    let dir = matrix.path();
    // Auth's internal port accepts connections and answers nothing: the
    // run waits there until it is stopped.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let state = dir.join(".kisum/local");
    crate::common::private_dir(&state);
    let url = format!("http://{}", hung.local_addr().unwrap());
    let endpoints = serde_json::json!({ "internal": { "auth": url } });
    std::fs::write(state.join("endpoints.json"), endpoints.to_string()).unwrap();
    crate::common::write_secret(&state, "internal-credential-kisumctl", "token", "test");
    let company = "0b0e9a4e-52b7-4d4e-8000-000000000002";
    let invalidate = ["access", "invalidate", "local", "--company", company];
    for signal in [rustix::process::Signal::KILL, rustix::process::Signal::INT] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kisumctl"))
            .args(invalidate)
            .current_dir(dir)
            .env_remove("KISUM_MATRIX")
            .env("KISUM_ACTOR", "journal-test")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let marker = state.join(format!("journal.running/{}.json", child.id()));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !marker.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(marker.exists(), "no marker at {}", marker.display());
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
        child.wait().unwrap();
    }
    drop(hung);
    // The journal, read, records both runs.
    let journal = records(dir, &[]);
    assert_eq!(journal.len(), 2, "{journal:#?}");
    for record in &journal {
        assert_eq!(record["command"], "access invalidate");
        assert_eq!(record["result"], "interrupted");
        assert_eq!(record["who"], "journal-test");
        assert_eq!(record["args"], serde_json::json!(invalidate));
        assert!(record["note"].as_str().unwrap().contains("ended before"));
        assert!(record["duration_ms"].is_null(), "unknown, not 0: {record}");
    }
    assert!(!state.join("journal.running").exists());
    // Read again: recorded once.
    assert_eq!(records(dir, &[]).len(), 2);
}

#[test]
fn zero_lines_is_refused() {
    let matrix = scratch_copy();
    let args = ["journal", "local", "-n", "0"];
    assert_exit(&args, kisumctl(matrix.path(), &args), 2);
}
