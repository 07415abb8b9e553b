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
