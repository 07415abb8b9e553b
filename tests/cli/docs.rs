//! The reference page's rules table is the rules table of the binary.

use crate::common::{kisumctl, root, stdout};

#[test]
fn the_reference_page_lists_exactly_the_rules_of_validate() {
    let listed = stdout(&kisumctl(&root(), &["validate", "--rules"]));
    let from_binary: Vec<String> = listed
        .lines()
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .map(|line| {
            let mut parts = line.split_whitespace();
            let id = parts.next().unwrap();
            let level = parts.next().unwrap();
            let rest = line.split_once(']').unwrap().1.trim();
            format!("{id}|{level}|{rest}")
        })
        .collect();
    assert!(from_binary.len() > 30, "{listed}");

    let page = std::fs::read_to_string(root().join("docs/matrix-reference.md")).unwrap();
    let from_page: Vec<String> = page
        .lines()
        .skip_while(|line| !line.starts_with("| Rule id |"))
        .skip(2)
        .take_while(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            format!("{}|{}|{}", cells[0].trim_matches('`'), cells[1], cells[3])
        })
        .collect();
    assert_eq!(
        from_page, from_binary,
        "docs/matrix-reference.md is out of date"
    );
}

/// The environments whose section-29 documents are committed in `docs/`.
const ENVIRONMENTS: [&str; 4] = ["local", "dev", "staging", "production"];

#[test]
fn the_committed_section_29_documents_are_current() {
    for env in ENVIRONMENTS {
        let args = ["docs", env, "--check"];
        crate::common::assert_exit(&args, kisumctl(&root(), &args), 0);
    }
}

#[test]
fn a_matrix_change_makes_the_documents_stale_until_they_are_written_again() {
    let copy = crate::common::scratch_copy();
    let dir = copy.path();
    let check = ["docs", "production", "--check"];
    let missing = crate::common::assert_exit(&check, kisumctl(dir, &check), 1);
    assert!(
        crate::common::stderr(&missing).contains("docs/production/environment-matrix.md"),
        "{}",
        crate::common::stderr(&missing)
    );
    crate::common::assert_exit(&["docs"], kisumctl(dir, &["docs", "production"]), 0);
    crate::common::assert_exit(&check, kisumctl(dir, &check), 0);

    let base = dir.join("environments/base.yaml");
    let text = std::fs::read_to_string(&base).unwrap();
    let changed = text.replacen("retention-days: 35", "retention-days: 36", 1);
    assert_ne!(text, changed);
    std::fs::write(&base, changed).unwrap();
    let stale = crate::common::assert_exit(&check, kisumctl(dir, &check), 1);
    let stderr = crate::common::stderr(&stale);
    assert!(stderr.contains("stale: "), "{stderr}");
    assert!(stderr.contains("backup-restore-runbook.md"), "{stderr}");
    assert!(!stderr.contains("network-matrix.md"), "{stderr}");
}
