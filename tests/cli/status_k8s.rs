//! `kisumctl status staging` against the fake API server of kisum-testkit
//! (the Deployments), a loopback HTTP server standing in for the public
//! health and readiness routes (through `kubernetes.smoke-endpoints`), and
//! the secret store in local files with the key set `secrets apply` wrote.
//! The scratch staging is sealed as `deploy_k8s`'s is: its kubeconfig is
//! the fake's, its backups a scratch directory, AWS and HOME out of reach.

use std::collections::BTreeMap;

use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};

use crate::deploy_k8s::Staging;

/// Every service of the matrix: one Deployment each.
const SERVICES: [&str; 9] = [
    "ai",
    "auth",
    "basic",
    "finance",
    "market",
    "platform-admin",
    "platform-core",
    "touring",
    "venue",
];

/// The public ones (all but Core): their health and readiness routes are
/// probed.
fn public() -> impl Iterator<Item = &'static str> {
    SERVICES.into_iter().filter(|s| *s != "platform-core")
}

/// A loopback server answering 200 on `/health` and `/ready`, for the
/// lifetime of the test's runtime; its base URL.
async fn healthy_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(|| async { "ready" }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{address}")
}

/// A loopback URL nothing listens on.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}

/// Sealed staging with every Deployment in the fake, its public URLs as
/// `urls` says, and the secrets `secrets apply` writes (the key set).
async fn staging_with(urls: &BTreeMap<&str, String>) -> Staging {
    let staging = Staging::without_platform();
    staging.keep_backups_here();
    let endpoints = staging.root.join("status-endpoints.json");
    std::fs::write(&endpoints, json!(urls).to_string()).unwrap();
    staging.edit(|text| {
        let line = text
            .lines()
            .find(|l| l.starts_with("  smoke-endpoints: "))
            .unwrap()
            .to_string();
        text.replace(
            &line,
            &format!("  smoke-endpoints: {}", endpoints.display()),
        )
    });
    staging.expect(&["secrets", "apply", "staging"], 0).await;
    for service in SERVICES {
        staging
            .fake
            .insert(json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": { "name": service, "namespace": "kisum-staging" },
                "spec": { "replicas": 1 },
            }))
            .unwrap();
    }
    staging
}

async fn all_healthy() -> BTreeMap<&'static str, String> {
    let base = healthy_server().await;
    public().map(|s| (s, base.clone())).collect()
}

/// The items of one section of the JSON report, by name.
fn section(report: &Value, name: &str) -> BTreeMap<String, (String, String)> {
    report[name]
        .as_array()
        .unwrap_or_else(|| panic!("no `{name}` in {report:#}"))
        .iter()
        .map(|i| {
            let text = |k: &str| i[k].as_str().unwrap().to_string();
            (text("name"), (text("light"), text("detail")))
        })
        .collect()
}

fn lights(items: &BTreeMap<String, (String, String)>) -> Vec<&str> {
    items.values().map(|(light, _)| light.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_out_and_healthy_environment_is_clean_with_its_private_network_unknown() {
    let staging = staging_with(&all_healthy().await).await;

    let (report, text) = staging
        .expect(&["status", "staging", "-o", "json"], 0)
        .await;
    assert_eq!(report["namespace"], "kisum-staging", "{text}");
    let rollouts = section(&report, "rollouts");
    assert_eq!(rollouts.len(), SERVICES.len(), "{text}");
    assert!(lights(&rollouts).iter().all(|l| *l == "green"), "{text}");
    let endpoints = section(&report, "endpoints");
    assert_eq!(endpoints.len(), public().count(), "{text}");
    assert!(lights(&endpoints).iter().all(|l| *l == "green"), "{text}");
    let (_, detail) = &endpoints["endpoint auth"];
    assert!(
        detail.contains("/health 200") && detail.contains("/ready 200"),
        "{detail}"
    );

    let operations = section(&report, "operations");
    assert!(!lights(&operations).contains(&"red"), "{text}");
    for name in ["databases and redis", "migrations"] {
        let (light, detail) = &operations[name];
        assert_eq!(light, "unknown", "{name}: {detail}");
        assert!(detail.starts_with("private network"), "{name}: {detail}");
    }
    assert_eq!(operations["key set"].0, "green", "{text}");
    assert_eq!(operations["backup auth-db"].0, "yellow", "{text}");
    assert_eq!(operations["drill"].0, "yellow", "{text}");
    assert_eq!(operations["drill"].1, "no drill yet", "{text}");

    let (_, text) = staging.expect(&["status", "staging"], 0).await;
    for title in ["ROLLOUTS", "ENDPOINTS", "OPERATIONS"] {
        assert!(text.contains(title), "{text}");
    }
    // Only the Deployments were read; nothing was written to the cluster.
    let requests = staging.fake.requests();
    assert!(
        requests.iter().all(|r| r.starts_with("GET ")),
        "{requests:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_that_never_becomes_ready_is_red() {
    let staging = staging_with(&all_healthy().await).await;
    staging.fake.never_ready("finance");

    let (report, text) = staging
        .expect(&["status", "staging", "-o", "json"], 1)
        .await;
    let rollouts = section(&report, "rollouts");
    let (light, detail) = &rollouts["deployment finance"];
    assert_eq!(light, "red", "{text}");
    assert!(detail.starts_with("0/1 available"), "{detail}");
    assert_eq!(rollouts["deployment auth"].0, "green", "{text}");

    let (_, text) = staging.expect(&["status", "staging"], 1).await;
    assert!(text.contains("RED"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_health_route_that_does_not_answer_is_red() {
    let mut urls = all_healthy().await;
    let dead = dead_url();
    urls.insert("market", dead.clone());
    let staging = staging_with(&urls).await;

    let (report, text) = staging
        .expect(&["status", "staging", "-o", "json"], 1)
        .await;
    let endpoints = section(&report, "endpoints");
    let (light, detail) = &endpoints["endpoint market"];
    assert_eq!(light, "red", "{text}");
    assert!(detail.contains(&format!("{dead}/health")), "{detail}");
    assert_eq!(endpoints["endpoint finance"].0, "green", "{text}");
    assert!(
        lights(&section(&report, "rollouts"))
            .iter()
            .all(|l| *l == "green"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_is_unknown_with_its_reason_and_the_rest_still_reported() {
    let staging = staging_with(&all_healthy().await).await;
    staging.fake.drop_connections("/deployments/", 1000);

    let (report, text) = staging
        .expect(&["status", "staging", "-o", "json"], 0)
        .await;
    let rollouts = section(&report, "rollouts");
    assert_eq!(rollouts.len(), 1, "{text}");
    let (light, detail) = &rollouts["kubernetes"];
    assert_eq!(light, "unknown", "{text}");
    assert!(
        detail.contains("Deployment/") && detail.contains("no answer from the API server"),
        "{detail}"
    );
    let endpoints = section(&report, "endpoints");
    assert!(lights(&endpoints).iter().all(|l| *l == "green"), "{text}");
    assert_eq!(section(&report, "operations")["key set"].0, "green");
}

/// The log of a drill Job: its JSON report (`drill ... -o json`), then
/// the result line.
fn drill_log(at: &str, passed: bool) -> String {
    let report = json!({
        "environment": "staging",
        "at": at,
        "passed": passed,
        "databases": [ { "database": "auth-db", "passed": passed } ],
    });
    let exit = if passed { 0 } else { 1 };
    format!(
        "drill staging: auth-db\n{}\nkisumctl-result: {{\"exit\":{exit}}}\n",
        serde_json::to_string_pretty(&report).unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_drill_run_as_a_job_reaches_status_through_the_backup_store() {
    let staging = staging_with(&all_healthy().await).await;
    let store = staging.root.join("staging-backups");

    staging
        .fake
        .job_log("kisumctl-drill-", &drill_log("2026-12-05T02:00:00Z", true));
    staging.expect(&["drill", "staging", "auth-db"], 0).await;
    let kept = store.join(".drills/drill-2026-12-05T020000Z.json");
    assert!(kept.is_file(), "{}", kept.display());

    // Read from the store, not from this machine's state directory.
    std::fs::remove_dir_all(staging.root.join(".kisum/staging/drills")).unwrap();
    let (report, text) = staging
        .expect(&["status", "staging", "-o", "json"], 0)
        .await;
    let operations = section(&report, "operations");
    let (light, detail) = &operations["drill"];
    assert_eq!(light, "green", "{text}");
    assert_eq!(detail, "passed at 2026-12-05T02:00:00Z", "{text}");

    // A newer failed drill turns it red, naming the database.
    staging
        .fake
        .job_log("kisumctl-drill-", &drill_log("2026-12-12T02:00:00Z", false));
    staging.expect(&["drill", "staging", "auth-db"], 1).await;
    let (report, text) = staging
        .expect(&["status", "staging", "-o", "json"], 1)
        .await;
    let (light, detail) = &section(&report, "operations")["drill"];
    assert_eq!(light, "red", "{text}");
    assert_eq!(detail, "failed at 2026-12-12T02:00:00Z: auth-db", "{text}");
}

/// A loopback server whose `/ready` answers 503 (a service whose database
/// is down); its base URL.
async fn unready_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = Router::new().route(
        "/ready",
        get(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready") }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbooks_reach_the_services_through_the_smoke_endpoints_as_status_does() {
    let mut urls = all_healthy().await;
    let unready = unready_server().await;
    urls.insert("finance", unready.clone());
    let staging = staging_with(&urls).await;
    let (document, text) = staging
        .expect(
            &["runbook", "run", "database-outage", "staging", "-o", "json"],
            1,
        )
        .await;
    let cause = &document["cause"];
    assert_eq!(cause["check"], "services-ready", "{text}");
    assert_eq!(cause["summary"], "not ready: finance", "{text}");
    let evidence = cause["evidence"].to_string();
    assert!(
        evidence.contains(&format!("GET {unready}/ready: 503")),
        "{text}"
    );
    assert!(
        evidence.contains(&format!("GET {}/ready: 200", urls["auth"])),
        "{text}"
    );
    // Nothing went to the public hosts.
    assert!(!text.contains("kisum.io"), "{text}");
}
