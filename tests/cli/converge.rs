//! `kisumctl plan ENV` and `kisumctl apply ENV`: every part planned on
//! its own line; `local` against a private PostgreSQL and mongoeco with the
//! services' migrations; `staging` with its secrets on moto and no Route53
//! or database server reachable, so those parts say so instead of failing
//! the rest.

use std::process::Output;

use serde_json::Value;

use crate::common::{Moto, assert_exit, stderr};
use crate::site::Site;

fn states(document: &Value) -> Vec<(String, String)> {
    document["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["part"].as_str().unwrap().to_string(),
                p["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn texts(output: &Output) -> [String; 2] {
    [
        String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr(output),
    ]
}

/// No value of the site's local secret store in `seen`.
fn assert_no_value(site: &Site, seen: &[String]) {
    let dir = site.secrets_dir();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        for file in std::fs::read_dir(entry.path()).unwrap().flatten() {
            // Login names are not secret: plans name the roles.
            let name = file.path().display().to_string();
            let Ok(value) = std::fs::read_to_string(file.path()) else {
                continue;
            };
            if value.len() < 12 || name.ends_with("/username") {
                continue;
            }
            for text in seen {
                assert!(!text.contains(&value), "the value of {name} was printed");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_apply_local_take_every_part_in_order() {
    let (site, _pg, _mongo) = crate::db::site().await;
    crate::db::copy_migrations(&site);
    let site = std::sync::Arc::new(site);
    let run = |args: &'static [&'static str], code: i32| {
        let site = site.clone();
        async move {
            tokio::task::spawn_blocking(move || site.expect(args, code))
                .await
                .unwrap()
        }
    };
    let mut seen = Vec::new();

    let planned = run(&["plan", "local", "-o", "json"], 0).await;
    seen.extend(texts(&planned));
    let plan: Value = serde_json::from_slice(&planned.stdout).unwrap();
    assert_eq!(
        states(&plan),
        pairs(&[
            ("secrets", "changes"),
            ("dns", "not-here"),
            ("tls", "not-here"),
            ("databases", "changes"),
            // The site's matrix points at the test servers' ports.
            ("manifests", "changes"),
        ]),
        "{plan}"
    );
    assert_eq!(plan["order"][0], "secrets");

    let applied = run(&["apply", "local", "-o", "json"], 0).await;
    seen.extend(texts(&applied));
    let document: Value = serde_json::from_slice(&applied.stdout).unwrap();
    assert_eq!(
        states(&document),
        pairs(&[
            ("secrets", "applied"),
            ("dns", "not-here"),
            ("tls", "not-here"),
            ("databases", "applied"),
            ("manifests", "applied"),
        ]),
        "{document}"
    );
    // Secrets came before the databases that read them.
    let log = stderr(&applied);
    let secrets_at = log.find("secrets: applied").unwrap();
    let databases_at = log.find("databases: applied").unwrap();
    assert!(secrets_at < databases_at, "{log}");
    assert!(
        site.read_secret("auth-db-credentials", "url")
            .starts_with("postgres://auth_app_a:")
    );

    // Everything is in place: the next plan has nothing to do.
    let again = run(&["plan", "local"], 0).await;
    seen.extend(texts(&again));
    let text = String::from_utf8_lossy(&again.stdout).into_owned();
    for part in ["secrets", "databases", "manifests"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(part))
            .unwrap_or_else(|| panic!("{part}: {text}"));
        assert!(line.contains("in-sync"), "{line}");
    }
    assert_no_value(&site, &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_that_cannot_run_say_so_without_failing_the_others() {
    let moto = Moto::start().await;
    let mut site = crate::secrets::sealed_site();
    crate::secrets::staging_secrets_on(&site, &moto);
    site.env.push(("AWS_MAX_ATTEMPTS".into(), "1".into()));
    let site = std::sync::Arc::new(site);
    let json = |args: &'static [&'static str], code: i32| {
        let site = site.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let output = assert_exit(args, site.run(args), code);
                let document: Value = serde_json::from_slice(&output.stdout).unwrap();
                (document, output)
            })
            .await
            .unwrap()
        }
    };

    // Route53 is a dead loopback port; no database server is reachable.
    let (plan, _) = json(&["plan", "staging", "-o", "json"], 1).await;
    assert_eq!(
        states(&plan),
        pairs(&[
            ("secrets", "changes"),
            ("dns", "unavailable"),
            ("tls", "changes"),
            ("databases", "unavailable"),
            ("manifests", "in-sync"),
        ]),
        "{plan}"
    );
    let dns = &plan["parts"][1]["summary"];
    assert!(dns.as_str().unwrap().contains("Route53"), "{dns}");

    let (applied, output) = json(&["apply", "staging", "-o", "json"], 1).await;
    assert_eq!(
        states(&applied),
        pairs(&[
            ("secrets", "applied"),
            ("dns", "unavailable"),
            ("tls", "skipped"),
            ("databases", "unavailable"),
            ("manifests", "in-sync"),
        ]),
        "{applied}"
    );
    assert!(
        stderr(&output).contains("tls: not run: dns"),
        "{}",
        stderr(&output)
    );
    let (again, _) = json(&["secrets", "plan", "staging", "-o", "json"], 0).await;
    assert_eq!(again["summary"]["keys_to_generate"], 0, "{again}");
}
