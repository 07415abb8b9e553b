//! `--help` texts are part of the interface: snapshot them.
//! `KISUM_UPDATE_SNAPSHOTS=1 cargo test --test cli help` rewrites them.

use std::process::Command;

use crate::common::root;

const PAGES: [(&str, &[&str]); 34] = [
    ("kisumctl", &["--help"]),
    ("validate", &["validate", "--help"]),
    ("render", &["render", "--help"]),
    ("inventory", &["inventory", "--help"]),
    ("smoke", &["smoke", "--help"]),
    ("deploy", &["deploy", "--help"]),
    ("history", &["history", "--help"]),
    ("rollback", &["rollback", "--help"]),
    ("diff", &["diff", "--help"]),
    ("status", &["status", "--help"]),
    ("logs", &["logs", "--help"]),
    ("down", &["down", "--help"]),
    ("backup", &["backup", "--help"]),
    ("restore", &["restore", "--help"]),
    ("drill", &["drill", "--help"]),
    ("db", &["db", "--help"]),
    ("db-provision", &["db", "provision", "--help"]),
    ("db-migrate", &["db", "migrate", "--help"]),
    ("db-status", &["db", "status", "--help"]),
    ("rotate-jwt-key", &["rotate-jwt-key", "--help"]),
    ("dns", &["dns", "--help"]),
    ("dns-cutover", &["dns", "cutover", "--help"]),
    ("tls", &["tls", "--help"]),
    ("tls-issue", &["tls", "issue", "--help"]),
    ("secrets", &["secrets", "--help"]),
    ("secrets-rotate", &["secrets", "rotate", "--help"]),
    ("plan", &["plan", "--help"]),
    ("apply", &["apply", "--help"]),
    ("runbook", &["runbook", "--help"]),
    ("runbook-run", &["runbook", "run", "--help"]),
    ("access", &["access", "--help"]),
    ("access-invalidate", &["access", "invalidate", "--help"]),
    ("journal", &["journal", "--help"]),
    ("docs", &["docs", "--help"]),
];

#[test]
fn help_pages_match_their_snapshots() {
    let mut stale = Vec::new();
    for (name, args) in PAGES {
        let output = Command::new(env!("CARGO_BIN_EXE_kisumctl"))
            .args(args)
            .env("COLUMNS", "100")
            .env_remove("KISUM_MATRIX")
            .env_remove("KISUM_TEMPLATES")
            .env_remove("KISUM_SERVICE_BIN_DIR")
            .output()
            .unwrap();
        assert!(output.status.success(), "{name}: --help failed");
        let text = String::from_utf8(output.stdout).unwrap();
        let path = root()
            .join("tests/snapshots")
            .join(format!("help-{name}.txt"));
        if std::env::var_os("KISUM_UPDATE_SNAPSHOTS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != text {
            stale.push(format!("{}:\n{text}", path.display()));
        }
    }
    assert!(
        stale.is_empty(),
        "help changed; rerun with KISUM_UPDATE_SNAPSHOTS=1:\n{}",
        stale.join("\n")
    );
}
