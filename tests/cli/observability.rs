//! docs/observability.md names every metric family the services export
//! (scraped from `/metrics` of the running services) and every event
//! their code counts and logs.

use std::collections::BTreeSet;
use std::path::Path;

use crate::common::root;

/// Asserts that docs/observability.md names each of `names` in backticks.
fn assert_documented(names: &BTreeSet<String>) {
    let doc = std::fs::read_to_string(root().join("docs/observability.md")).unwrap();
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| !doc.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "not in docs/observability.md: {missing:?}"
    );
}

/// The metric families of a Prometheus exposition.
fn families(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_exported_metric_family_is_documented() {
    let shared = crate::runbook::shared();
    let p = &shared.platform;
    let internal = [
        p.auth_internal.to_string(),
        p.core.to_string(),
        shared.finance.internal.to_string(),
    ];
    let mut exported = BTreeSet::new();
    for address in internal {
        let text = shared.runtime.block_on(async {
            reqwest::Client::new()
                .get(format!("http://{address}/metrics"))
                .header("x-kisum-caller", "kisumctl")
                .header("x-kisum-credential", crate::platform::KISUMCTL_SECRET)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        });
        exported.extend(families(&text));
    }
    assert!(exported.len() > 5, "{exported:?}");
    assert_documented(&exported);
}

/// `.event("name"`, `event_counter("name"` and `event = "name"` in the
/// services' sources, and the event constants of `metrics.rs` files.
fn events_in(dir: &Path, found: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path
                .file_name()
                .is_some_and(|n| n != "tests" && n != "target")
            {
                events_in(&path, found);
            }
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Auth names its events as constants in its metrics module.
        let constants = path.file_name().is_some_and(|n| n == "metrics.rs");
        let markers: &[&str] = if constants {
            &[".event(\"", "event_counter(\"", "event = \"", ": &str = \""]
        } else {
            &[".event(\"", "event_counter(\"", "event = \""]
        };
        for marker in markers {
            for piece in text.split(marker).skip(1) {
                if let Some(name) = piece.split('"').next()
                    && !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                {
                    found.insert(name.to_string());
                }
            }
        }
    }
}

#[test]
fn every_event_the_services_count_or_log_is_documented() {
    let mut events = BTreeSet::new();
    events_in(&root().join("services"), &mut events);
    assert!(events.len() > 10, "{events:?}");
    assert_documented(&events);
}
