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
