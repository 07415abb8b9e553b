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

/// The metric families the running Auth, Platform Core and a module
/// backend export at `/metrics`.
fn exported_families() -> BTreeSet<String> {
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
    exported
}

#[test]
fn every_exported_metric_family_is_documented() {
    let exported = exported_families();
    assert!(exported.len() > 5, "{exported:?}");
    assert!(exported.contains("kisum_readiness_check"), "{exported:?}");
    assert_documented(&exported);
}

/// The metric names an expression selects (`name{...}`), with the
/// suffixes of a counter (`_total`) and a histogram (`_bucket`) kept.
fn selected_metrics(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in expr.match_indices('{') {
        let name: String = expr[..at]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect::<Vec<char>>()
            .into_iter()
            .rev()
            .collect();
        if !name.is_empty() {
            names.insert(name);
        }
    }
    names
}

/// The family a series name belongs to: `kisum_events_total` is the
/// counter `kisum_events`, `..._seconds_bucket` the histogram.
fn family_of(name: &str) -> &str {
    ["_bucket", "_count", "_sum", "_total"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

#[test]
fn every_metric_an_alert_rule_reads_is_documented_and_the_services_export_their_own() {
    let mut used = BTreeSet::new();
    for env in ["staging", "production"] {
        let path = root().join("manifests").join(env).join("alerts.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
        for doc in docs.iter().filter(|d| d["kind"] == "PrometheusRule") {
            for group in doc["spec"]["groups"].as_array().unwrap() {
                for rule in group["rules"].as_array().unwrap() {
                    let expr = rule["expr"].as_str().unwrap();
                    let names = selected_metrics(expr);
                    assert!(!names.is_empty(), "{env}: no metric in {expr}");
                    used.extend(names);
                }
            }
        }
    }
    // A family is documented under its own name (`kisum_events`), the
    // cluster's series under theirs.
    let documented: BTreeSet<String> = used.iter().map(|n| family_of(n).to_string()).collect();
    assert_documented(&documented);
    // `kisum_events` appears from the first event counted: a failed login.
    let shared = crate::runbook::shared();
    shared.runtime.block_on(async {
        let payload = serde_json::json!({ "email": "nobody@example.com", "password": "wrong" });
        let (status, _) = shared
            .platform
            .auth_call(reqwest::Method::POST, "/auth/login", &[], Some(payload))
            .await;
        assert!(status.is_client_error(), "{status}");
    });
    let exported = exported_families();
    let missing: Vec<&String> = used
        .iter()
        .filter(|name| name.starts_with("kisum_"))
        .filter(|name| !exported.contains(family_of(name)) && !exported.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "alert rules read metrics no service exports: {missing:?} (exported: {exported:?})"
    );
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
