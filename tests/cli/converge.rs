//! `kisumctl plan ENV` and `kisumctl apply ENV`: every part planned on
//! its own line; `local` against a private PostgreSQL and mongoeco with the
//! services' migrations; `staging` with its secrets on moto and no Route53
//! or database server reachable, so those parts say so instead of failing
//! the rest; `dev` with its secrets in Secrets Manager and its zones in
//! Route53 (both moto) and certificates from pebble.

use std::process::Output;

use serde_json::Value;

use crate::common::{Moto, assert_exit, secret_at, stderr};
use crate::site::Site;

const CANARY: &str = "canary-5d1e08-never-printed";

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

/// Runs `args` off the runtime, asserts the exit code, parses stdout.
async fn run_json(
    site: &std::sync::Arc<Site>,
    args: &'static [&'static str],
    code: i32,
) -> (Value, Output) {
    let site = site.clone();
    tokio::task::spawn_blocking(move || {
        let output = assert_exit(args, site.run(args), code);
        let document: Value = serde_json::from_slice(&output.stdout).unwrap();
        (document, output)
    })
    .await
    .unwrap()
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
    let json = |args: &'static [&'static str], code: i32| run_json(&site, args, code);

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
    let dns = plan["parts"][1]["summary"].as_str().unwrap();
    assert!(dns.contains("Route53"), "{dns}");
    // One line naming what could not be reached, not the SDK's dump.
    assert!(dns.contains("cannot reach http://127.0.0.1:9: "), "{dns}");
    assert!(
        !dns.contains("DispatchFailure") && !dns.contains("{ "),
        "{dns}"
    );

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
    let (journal, _) = json(&["journal", "staging", "-o", "json"], 0).await;
    let recorded = journal["records"].as_array().unwrap();
    assert!(
        recorded
            .iter()
            .any(|r| r["command"] == "apply" && r["result"] == "check-failed"),
        "{journal:#}"
    );
}

/// Every value `dev` keeps in Secrets Manager on `moto` (login names
/// aside), current and previous.
async fn values_in(client: &aws_sdk_secretsmanager::Client) -> Vec<String> {
    let mut values = Vec::new();
    let mut pages = client.list_secrets().into_paginator().send();
    while let Some(page) = pages.next().await {
        for entry in page.unwrap().secret_list() {
            let name = entry.name().unwrap();
            for stage in ["AWSCURRENT", "AWSPREVIOUS"] {
                let Some(keys) = secret_at(client, name, stage).await else {
                    continue;
                };
                values.extend(
                    keys.into_iter()
                        .filter(|(key, value)| key != "username" && value.len() >= 12)
                        .map(|(_, value)| value),
                );
            }
        }
    }
    values
}

/// `dev` with Route53 and Secrets Manager on moto behind the fault proxy
/// (its challenge records bridged to pebble's DNS), certificates from
/// pebble, its zones made.
async fn dev_on_aws() -> (crate::pebble::Pebble, Moto, crate::proxy::Proxy, Site) {
    let pebble = crate::pebble::start().await;
    let moto = Moto::start().await;
    let proxy = crate::proxy::start(&moto.endpoint(), Some(pebble.challtestsrv_url())).await;
    crate::dns::create_zones(&crate::dns::route53(&moto.endpoint())).await;
    let site = Site::dev_on_aws(&proxy.url(), &moto.endpoint());
    crate::tls::issue_from(&site, &pebble);
    (pebble, moto, proxy, site)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_dev_issues_certificates_through_route53_and_pebble_into_secrets_manager() {
    let (_pebble, moto, proxy, site) = dev_on_aws().await;
    // A supplied secret a person put there: kept, never printed.
    let client = moto.secrets_manager();
    client
        .create_secret()
        .name("kisum/dev/billing-provider-key")
        .secret_string(serde_json::json!({ "api-key": CANARY }).to_string())
        .send()
        .await
        .unwrap();
    let site = std::sync::Arc::new(site);
    let json = |args: &'static [&'static str], code: i32| run_json(&site, args, code);
    let mut seen = Vec::new();

    // The database servers are a dead loopback port: that part stays
    // unavailable (exit 1), every other part goes through.
    let (plan, output) = json(&["plan", "dev", "-o", "json"], 1).await;
    seen.extend(texts(&output));
    let planned = states(&plan);
    for (part, state) in [
        ("secrets", "changes"),
        ("dns", "changes"),
        ("tls", "changes"),
        ("databases", "unavailable"),
    ] {
        assert!(
            planned.contains(&(part.to_string(), state.to_string())),
            "{part}: {plan}"
        );
    }

    let (applied, output) = json(&["apply", "dev", "-o", "json"], 1).await;
    seen.extend(texts(&output));
    let done = states(&applied);
    for (part, state) in [
        ("secrets", "applied"),
        ("dns", "applied"),
        ("tls", "applied"),
        ("databases", "unavailable"),
    ] {
        assert!(
            done.contains(&(part.to_string(), state.to_string())),
            "{part}: {applied}\n{}",
            stderr(&output)
        );
    }
    let log = stderr(&output);
    let at = |part: &str| {
        log.find(&format!("{part}: applied"))
            .unwrap_or_else(|| panic!("{part}: {log}"))
    };
    assert!(at("secrets") < at("dns") && at("dns") < at("tls"), "{log}");
    assert!(
        proxy
            .counts
            .bridged
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 2
    );

    // One certificate per public host, in Secrets Manager as the
    // `tls-<service>` secrets the Ingresses name, and valid.
    let (status, output) = json(&["tls", "status", "dev", "-o", "json"], 0).await;
    seen.extend(texts(&output));
    let hosts = status["hosts"].as_array().unwrap();
    assert!(hosts.len() >= 2, "{status:#}");
    for host in hosts {
        assert_eq!(host["health"], "ok", "{host}");
        let secret = format!("kisum/dev/{}", host["secret"].as_str().unwrap());
        let keys = secret_at(&client, &secret, "AWSCURRENT").await.unwrap();
        assert!(keys["tls.crt"].contains("BEGIN CERTIFICATE"), "{secret}");
        assert!(keys["tls.key"].contains("PRIVATE KEY"), "{secret}");
        let issuer = host["certificate"]["issuer"].as_str().unwrap();
        assert!(issuer.contains("Pebble"), "{issuer}");
    }
    assert!(
        secret_at(&client, "kisum/dev/acme-account-key", "AWSCURRENT")
            .await
            .is_some()
    );
    let kept = secret_at(&client, "kisum/dev/billing-provider-key", "AWSCURRENT").await;
    assert_eq!(kept.unwrap()["api-key"], CANARY);

    // Everything but the unreachable databases is in sync now.
    let (again, output) = json(&["plan", "dev", "-o", "json"], 1).await;
    seen.extend(texts(&output));
    for (part, state) in states(&again) {
        let expected = if part == "databases" {
            "unavailable"
        } else {
            "in-sync"
        };
        assert_eq!(state, expected, "{part}: {again}");
    }

    let mut values = values_in(&client).await;
    values.push(CANARY.to_string());
    assert!(values.len() > 20, "{}", values.len());
    for text in &seen {
        assert!(!text.contains("PRIVATE KEY"), "a key was printed:\n{text}");
        for value in &values {
            assert!(
                !text.contains(value.as_str()),
                "a secret value was printed:\n{text}"
            );
        }
    }
}

/// The state `part` has in a plan or apply document.
fn state_of(document: &Value, part: &str) -> String {
    states(document)
        .into_iter()
        .find(|(p, _)| p == part)
        .map(|(_, state)| state)
        .unwrap_or_else(|| panic!("no {part} in {document}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_conflict_shows_in_plan_and_apply_and_its_host_gets_no_certificate() {
    let pebble = crate::pebble::start().await;
    let moto = Moto::start().await;
    let proxy = crate::proxy::start(&moto.endpoint(), Some(pebble.challtestsrv_url())).await;
    let route53 = crate::dns::route53(&moto.endpoint());
    let (io, _) = crate::dns::create_zones(&route53).await;
    // Somebody else's record at the name of dev's Auth.
    let foreign = "auth-dev.kisum.io";
    let set = crate::dns::rrset(
        foreign,
        aws_sdk_route53::types::RrType::A,
        300,
        &["192.0.2.7"],
    );
    crate::dns::create(&route53, &io, vec![set]).await;
    let site = Site::dev_on_aws(&proxy.url(), &moto.endpoint());
    crate::tls::issue_from(&site, &pebble);
    let site = std::sync::Arc::new(site);
    let json = |args: &'static [&'static str], code: i32| run_json(&site, args, code);

    // The plan names the conflict per record; not in sync.
    let (plan, _) = json(&["plan", "dev", "-o", "json"], 1).await;
    assert_eq!(state_of(&plan, "dns"), "conflict", "{plan:#}");
    let dns = plan["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["part"] == "dns")
        .unwrap();
    let problems = dns["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{dns:#}");
    assert!(
        problems[0].as_str().unwrap().contains(foreign),
        "{problems:?}"
    );
    let text = {
        let site = site.clone();
        tokio::task::spawn_blocking(move || site.expect(&["plan", "dev"], 1))
            .await
            .unwrap()
    };
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains(&format!("dns: conflict {foreign}")), "{text}");

    // Apply: the rest of DNS goes in, the conflicting record stays as it
    // is, its host is refused a certificate and every other host gets one.
    let (applied, output) = json(&["apply", "dev", "-o", "json"], 1).await;
    assert_eq!(state_of(&applied, "dns"), "conflict", "{applied:#}");
    assert_eq!(
        state_of(&applied, "tls"),
        "conflict",
        "{applied:#}\n{}",
        stderr(&output)
    );
    let records = crate::dns::records(&route53, &io).await;
    assert_eq!(
        records[&(foreign.to_string(), "A".to_string())].1,
        ["192.0.2.7"]
    );
    let (status, _) = json(&["tls", "status", "dev", "-o", "json"], 1).await;
    for host in status["hosts"].as_array().unwrap() {
        let expected = if host["host"] == foreign {
            "missing"
        } else {
            "ok"
        };
        assert_eq!(host["health"], expected, "{host}");
    }
    let (issued, _) = json(&["tls", "issue", "dev", "-o", "json"], 1).await;
    let results = issued["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "only the refused host is due: {issued:#}");
    assert_eq!(results[0]["host"], foreign);
    assert_eq!(results[0]["status"], "refused");
    let reason = results[0]["reason"].as_str().unwrap();
    assert!(reason.contains("ownership conflict"), "{reason}");

    // Renew has nothing to renew, and says why it still exits 1.
    let renew = {
        let site = site.clone();
        tokio::task::spawn_blocking(move || site.expect(&["tls", "renew", "dev"], 1))
            .await
            .unwrap()
    };
    let said = String::from_utf8_lossy(&renew.stdout).into_owned();
    assert!(!said.contains("nothing to"), "{said}");
    assert!(said.contains(&format!("{foreign} (missing)")), "{said}");

    // The combined apply and tls issue are journaled with their result.
    let (journal, _) = json(&["journal", "dev", "-o", "json"], 0).await;
    let commands: Vec<(&str, &str)> = journal["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["command"].as_str().unwrap(),
                r["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        commands.contains(&("apply", "check-failed")),
        "{commands:?}"
    );
    assert!(
        commands.contains(&("tls issue", "check-failed")),
        "{commands:?}"
    );
}

/// Ctrl-C during `apply dev` while DNS waits for INSYNC: the wait ends,
/// no later part runs (the manifests are not written), exit 3, and the
/// journal says interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_apply_runs_no_later_part() {
    let (_pebble, _moto, proxy, site) = dev_on_aws().await;
    let manifest = site.root().join("manifests/dev/auth.yaml");
    std::fs::remove_file(&manifest).unwrap();
    // Route53 says PENDING until the wait gives up.
    proxy
        .faults
        .pending
        .store(usize::MAX / 2, std::sync::atomic::Ordering::SeqCst);
    let child = site
        .command(&["apply", "dev", "--wait-timeout", "5"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while proxy
        .counts
        .get_change
        .load(std::sync::atomic::Ordering::SeqCst)
        == 0
    {
        assert!(std::time::Instant::now() < deadline, "DNS never waited");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let [stdout, stderr] = texts(&output);
    assert_eq!(output.status.code(), Some(3), "{stdout}{stderr}");
    assert!(stderr.contains("apply dev: interrupted"), "{stderr}");
    assert!(
        stdout.contains("not run: interrupted") || stderr.contains("not run: interrupted"),
        "{stdout}{stderr}"
    );
    assert!(!manifest.exists(), "the manifests part ran after Ctrl-C");
    let journal = site.json(&["journal", "dev", "-o", "json"], 0);
    let last = journal["records"].as_array().unwrap().last().unwrap();
    assert_eq!(last["command"], "apply", "{journal:#}");
    assert_eq!(last["result"], "interrupted", "{journal:#}");
}
