//! `kisumctl secrets plan|apply|list|rotate|check`: against Secrets
//! Manager on moto (loopback, dummy credentials, AWS's endpoints pointed at
//! a dead port), against local files, and, for database logins, against a
//! private PostgreSQL cluster with SCRAM logins. A canary value planted in
//! the store, and every value kisumctl generates, must never appear in any
//! output.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kisum_testkit::Postgres;
use serde_json::Value;
use sqlx::{Connection, PgConnection};

use crate::common::{Moto, SEALED_AWS, assert_exit, secret_at, secrets_manager, stderr};
use crate::site::{Site, exec};

const CANARY: &str = "canary-7f3a9c-never-printed";

/// A scratch matrix run with the sealed AWS environment; its `local`
/// PostgreSQL port is a free one nothing listens on (these tests need none).
pub fn sealed_site() -> Site {
    let mut site = Site::new(kisum_testkit::free_port().unwrap());
    site.env = SEALED_AWS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    site
}

/// `staging` keeps its secrets in moto's Secrets Manager.
pub fn staging_secrets_on(site: &Site, moto: &Moto) {
    staging_secrets_at(site, &moto.endpoint());
}

/// `staging` keeps its secrets in the Secrets Manager at `endpoint`.
fn staging_secrets_at(site: &Site, endpoint: &str) {
    site.edit("environments/staging.yaml", |text| {
        text.replace(
            "  prefix: kisum/staging/\n",
            &format!("  prefix: kisum/staging/\n  endpoint: {endpoint}\n"),
        )
    });
}

/// Throttling: Secrets Manager calls get the retry policy of Route53 (8
/// attempts with backoff, `AWS_MAX_ATTEMPTS`), and a request throttled
/// past every attempt says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_manager_retries_throttling_as_route53_does() {
    use std::sync::atomic::Ordering;
    let moto = Moto::start().await;
    let proxy = crate::proxy::start(&moto.endpoint(), None).await;
    let mut site = sealed_site();
    staging_secrets_at(&site, &proxy.url());
    let mut seen = Vec::new();
    expect(&site, &["secrets", "apply", "staging"], 0, &mut seen);

    // Four throttled answers in a row: more than the SDK's default three
    // attempts, fewer than eight.
    proxy.faults.throttle.store(4, Ordering::SeqCst);
    expect(&site, &["secrets", "list", "staging"], 0, &mut seen);
    assert_eq!(proxy.counts.throttled.load(Ordering::SeqCst), 4);

    // Throttled past every attempt: one line saying the retries ran out.
    proxy.faults.throttle.store(1000, Ordering::SeqCst);
    site.env.push(("AWS_MAX_ATTEMPTS".into(), "3".into()));
    let output = expect(&site, &["secrets", "check", "staging"], 3, &mut seen);
    let text = stderr(&output) + &String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("Secrets Manager answered ThrottlingException")
            && text.contains("still throttled after 3 attempts with backoff"),
        "{text}"
    );
    assert_eq!(proxy.counts.throttled.load(Ordering::SeqCst), 4 + 3);
    proxy.faults.throttle.store(0, Ordering::SeqCst);
    let mut values = Vec::new();
    for name in secret_names(&moto).await {
        if let Some(keys) = secret_at(&moto.secrets_manager(), &name, "AWSCURRENT").await {
            values.extend(keys.into_values());
        }
    }
    assert!(!values.is_empty());
    assert_never_shown(&values, &seen);
}

/// Retirement reads the stages back: a retirement Secrets Manager
/// acknowledged but did not keep is a failure that says the old
/// credential is still accepted; the rerun retires it and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retirement_is_read_back_before_it_is_reported() {
    let moto = Moto::start().await;
    let proxy = crate::proxy::start(&moto.endpoint(), None).await;
    let site = sealed_site();
    staging_secrets_at(&site, &proxy.url());
    let client = moto.secrets_manager();
    let name = "kisum/staging/internal-credential-auth";
    let mut seen = Vec::new();
    expect(&site, &["secrets", "apply", "staging"], 0, &mut seen);
    let rotate = rotate_auth_token("staging", "0");

    let done = expect(&site, &rotate, 0, &mut seen);
    let text = String::from_utf8_lossy(&done.stdout).into_owned();
    assert!(
        text.contains(
            "the old one is retired: read back, no stage of internal-credential-auth holds it"
        ),
        "{text}"
    );
    assert!(!old_value_still_accepted(&client, name).await);

    // Secrets Manager acknowledges the retirement and keeps AWSPREVIOUS.
    *proxy.faults.swallow.lock().unwrap() = Some((
        "secretsmanager.UpdateSecretVersionStage".into(),
        "AWSPREVIOUS".into(),
    ));
    let current = secret_at(&client, name, "AWSCURRENT").await.unwrap();
    let failed = expect(&site, &rotate, 3, &mut seen);
    let text = String::from_utf8_lossy(&failed.stdout).into_owned();
    assert!(
        proxy
            .counts
            .swallowed
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    );
    assert!(
        text.contains("FAILED internal-credential-auth")
            && text.contains("read back AWSPREVIOUS still holds the old value")
            && text.contains("the old one is still accepted")
            && !text.contains("is retired and refused"),
        "{text}"
    );
    assert!(old_value_still_accepted(&client, name).await);
    assert_eq!(
        secret_at(&client, name, "AWSPREVIOUS").await.unwrap(),
        current,
        "the value before is still kept"
    );

    *proxy.faults.swallow.lock().unwrap() = None;
    let finished = expect(&site, &rotate, 0, &mut seen);
    let text = String::from_utf8_lossy(&finished.stdout).into_owned();
    assert!(
        text.contains("finished an interrupted rotation: the old one is retired: read back"),
        "{text}"
    );
    assert!(!old_value_still_accepted(&client, name).await);
    let values: Vec<String> = current.into_values().collect();
    assert_never_shown(&values, &seen);
}

/// The names of every secret in moto.
async fn secret_names(moto: &Moto) -> Vec<String> {
    let listed = moto.secrets_manager().list_secrets().send().await.unwrap();
    listed
        .secret_list()
        .iter()
        .filter_map(|s| s.name().map(str::to_string))
        .collect()
}

/// Runs, asserts the exit code, and keeps both streams in `seen`.
fn expect(site: &Site, args: &[&str], code: i32, seen: &mut Vec<String>) -> Output {
    let output = site.expect(args, code);
    seen.push(String::from_utf8_lossy(&output.stdout).into_owned());
    seen.push(stderr(&output));
    output
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).expect("a JSON document")
}

fn secret<'a>(document: &'a Value, name: &str) -> &'a Value {
    document["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {document}"))
}

/// No value in `values` appears in any of `seen`.
fn assert_never_shown(values: &[String], seen: &[String]) {
    for value in values.iter().filter(|v| v.len() >= 12) {
        for text in seen {
            assert!(
                !text.contains(value.as_str()),
                "a secret value was printed:\n{text}"
            );
        }
    }
}

/// Every value under a local secret store, stages included, but login
/// names (not secret: plans and messages name the roles).
fn local_values(dir: &Path) -> Vec<String> {
    let mut values = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return values;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            values.extend(local_values(&path));
        } else if path.ends_with("username") {
            continue;
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            values.push(text);
        }
    }
    values
}

// ------------------------------------------------------ Secrets Manager --

async fn version_count(client: &aws_sdk_secretsmanager::Client, name: &str) -> usize {
    client
        .list_secret_version_ids()
        .secret_id(name)
        .send()
        .await
        .unwrap()
        .versions()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_secrets_manager_are_planned_applied_listed_rotated_and_checked() {
    let moto = Moto::start().await;
    let site = sealed_site();
    staging_secrets_on(&site, &moto);
    let client = secrets_manager(&moto);
    client
        .create_secret()
        .name("kisum/staging/billing-provider-key")
        .secret_string(serde_json::json!({ "api-key": CANARY }).to_string())
        .send()
        .await
        .unwrap();
    let mut seen = Vec::new();
    let site = Arc::new(site);
    let blocking = |args: &'static [&'static str], code: i32| {
        let site = site.clone();
        tokio::task::spawn_blocking(move || {
            let mut seen = Vec::new();
            let output = expect(&site, args, code, &mut seen);
            (output, seen)
        })
    };

    // The plan: what is generated, what a person supplies, what awaits.
    let (planned, out) = blocking(&["secrets", "plan", "staging", "-o", "json"], 0)
        .await
        .unwrap();
    seen.extend(out);
    let plan = json(&planned);
    assert_eq!(secret(&plan, "billing-provider-key")["action"], "present");
    assert_eq!(secret(&plan, "email-provider-key")["action"], "must-supply");
    assert_eq!(
        secret(&plan, "internal-credential-auth")["action"],
        "generate"
    );
    assert_eq!(secret(&plan, "auth-db-credentials")["action"], "generate");
    assert_eq!(secret(&plan, "tls-auth")["action"], "awaits");
    assert!(
        version_count(&client, "kisum/staging/billing-provider-key").await == 1,
        "a plan writes nothing"
    );
    let (text_plan, out) = blocking(&["secrets", "plan", "staging"], 0).await.unwrap();
    seen.extend(out);
    let text_plan = String::from_utf8_lossy(&text_plan.stdout).into_owned();
    assert!(text_plan.contains("must-supply"), "{text_plan}");

    // Apply: one version per generated secret; nothing supplied is invented.
    let (applied, out) = blocking(&["secrets", "apply", "staging", "-o", "json"], 0)
        .await
        .unwrap();
    seen.extend(out);
    let applied = json(&applied);
    assert_eq!(
        secret(&applied, "internal-credential-auth")["applied"],
        true
    );
    let token = secret_at(
        &client,
        "kisum/staging/internal-credential-auth",
        "AWSCURRENT",
    )
    .await
    .unwrap();
    assert_eq!(token["token"].len(), 43);
    // The rendered manifests mount the previous stage of an internal
    // credential: it exists from the first version on, on that version.
    let first_previous = secret_at(
        &client,
        "kisum/staging/internal-credential-auth",
        "AWSPREVIOUS",
    )
    .await
    .expect("apply labels the first version AWSPREVIOUS");
    assert_eq!(first_previous["token"], token["token"]);
    assert!(
        secret_at(&client, "kisum/staging/auth-db-credentials", "AWSPREVIOUS")
            .await
            .is_none(),
        "only internal credentials are given a previous stage"
    );
    let db = secret_at(&client, "kisum/staging/auth-db-credentials", "AWSCURRENT")
        .await
        .unwrap();
    assert_eq!(db.keys().collect::<Vec<_>>(), ["password"]);
    assert!(
        secret_at(&client, "kisum/staging/email-provider-key", "AWSCURRENT")
            .await
            .is_none()
    );
    let jwks = secret_at(&client, "kisum/staging/jwt-public-keys", "AWSCURRENT")
        .await
        .unwrap();
    assert!(jwks["jwks.json"].contains("\"keys\""));
    let billing = secret_at(&client, "kisum/staging/billing-provider-key", "AWSCURRENT")
        .await
        .unwrap();
    assert_eq!(billing["api-key"], CANARY, "an existing value is kept");

    // Idempotent: nothing to generate, no new version.
    let (again, out) = blocking(&["secrets", "apply", "staging", "-o", "json"], 0)
        .await
        .unwrap();
    seen.extend(out);
    assert_eq!(json(&again)["summary"]["keys_to_generate"], 0);
    assert_eq!(
        version_count(&client, "kisum/staging/internal-credential-auth").await,
        1
    );

    // List: versions, stages and dates, no value.
    let (listed, out) = blocking(&["secrets", "list", "staging", "-o", "json"], 0)
        .await
        .unwrap();
    seen.extend(out);
    let listed = json(&listed);
    let auth = secret(&listed, "internal-credential-auth");
    assert_eq!(auth["versions"][0]["stages"][0], "AWSCURRENT");
    assert!(
        auth["rotation_due"].as_str().unwrap().ends_with('Z'),
        "{auth}"
    );
    assert_eq!(auth["overdue"], false);
    let (_, out) = blocking(&["secrets", "list", "staging"], 0).await.unwrap();
    seen.extend(out);

    // Check: missing supplied secrets, a secret nobody refers to.
    client
        .create_secret()
        .name("kisum/staging/leftover")
        .secret_string("{}")
        .send()
        .await
        .unwrap();
    let (checked, out) = blocking(&["secrets", "check", "staging", "-o", "json"], 1)
        .await
        .unwrap();
    seen.extend(out);
    let findings = json(&checked)["findings"].as_array().unwrap().clone();
    let found = |kind: &str, name: &str| {
        findings
            .iter()
            .any(|f| f["kind"] == kind && f["secret"] == name)
    };
    // Only optional configuration reads the e-mail provider's key.
    assert!(found("not-set", "email-provider-key"), "{findings:?}");
    assert!(found("missing", "auth-db-credentials"), "{findings:?}");
    assert!(found("unreferenced", "leftover"), "{findings:?}");
    assert!(
        !found("overdue", "internal-credential-auth"),
        "{findings:?}"
    );

    // Staged rotation: AWSPENDING, then AWSCURRENT with the old value
    // AWSPREVIOUS, then retired: AWSPREVIOUS moved to the current version.
    let rotate = &[
        "secrets",
        "rotate",
        "staging",
        "internal-credential-auth",
        "--retire-after",
        "0",
    ];
    let (rotated, out) = blocking(rotate, 0).await.unwrap();
    seen.extend(out);
    assert!(
        stderr(&rotated).contains("stored as AWSPENDING"),
        "{}",
        stderr(&rotated)
    );
    let name = "kisum/staging/internal-credential-auth";
    let current = secret_at(&client, name, "AWSCURRENT").await.unwrap();
    let previous = secret_at(&client, name, "AWSPREVIOUS").await.unwrap();
    assert_ne!(current["token"], token["token"]);
    assert_eq!(
        previous["token"], current["token"],
        "the old token is retired"
    );
    let log = stderr(&rotated);
    let kept = log
        .find("the old one accepted beside it as AWSPREVIOUS")
        .unwrap();
    let retired = log.find("the previous value is retired").unwrap();
    assert!(kept < retired, "{log}");
    assert!(secret_at(&client, name, "AWSPENDING").await.is_none());
    assert_eq!(version_count(&client, name).await, 2);
    let (listed, out) = blocking(&["secrets", "list", "staging", "-o", "json"], 0)
        .await
        .unwrap();
    seen.extend(out);
    let stages: Vec<String> = secret(&json(&listed), "internal-credential-auth")["versions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| v["stages"].as_array().unwrap().clone())
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert!(stages.contains(&"AWSPREVIOUS".to_string()), "{stages:?}");

    // What rotate does not do is named, not attempted.
    let (refused, out) = blocking(&["secrets", "rotate", "staging", "billing-provider-key"], 2)
        .await
        .unwrap();
    seen.extend(out);
    assert!(
        stderr(&refused).contains("a person"),
        "{}",
        stderr(&refused)
    );

    let mut values = vec![CANARY.to_string()];
    for value in [&current, &previous, &db, &jwks] {
        values.extend(value.values().cloned());
    }
    assert_never_shown(&values, &seen);
}

/// Whether a version of `name` is labelled AWSPREVIOUS without being
/// current: a promoted rotation whose old value is not retired yet.
/// Every `kid` in a JSON document (a key set or a JWKS).
fn kids(value: &Value) -> Vec<String> {
    match value {
        Value::Object(map) => map
            .iter()
            .flat_map(|(key, value)| match (key.as_str(), value) {
                ("kid", Value::String(kid)) => vec![kid.clone()],
                _ => kids(value),
            })
            .collect(),
        Value::Array(items) => items.iter().flat_map(kids).collect(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_applies_on_a_fresh_store_make_one_version_of_each_secret() {
    let moto = Moto::start().await;
    let site = sealed_site();
    staging_secrets_on(&site, &moto);
    let site = Arc::new(site);
    // Four processes at once, each planning on the empty store: every one
    // ends well, and the losers of each race keep the winner's values.
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let site = site.clone();
            std::thread::spawn(move || site.expect(&["secrets", "apply", "staging"], 0))
        })
        .collect();
    for run in runs {
        run.join().unwrap();
    }
    let client = secrets_manager(&moto);
    let listed = client.list_secrets().max_results(100).send().await.unwrap();
    let names: Vec<&str> = listed
        .secret_list()
        .iter()
        .filter_map(|s| s.name())
        .collect();
    assert!(names.len() > 20, "apply generated the inventory: {names:?}");
    for name in &names {
        assert_eq!(
            version_count(&client, name).await,
            1,
            "{name} has one version"
        );
    }
    let set = secret_at(&client, "kisum/staging/jwt-signing-keys", "AWSCURRENT")
        .await
        .unwrap();
    let set: Value = serde_json::from_str(&set["key-set.json"]).unwrap();
    let set_kids = kids(&set);
    assert_eq!(set_kids.len(), 1, "one key in the set: {set_kids:?}");
    let jwks = secret_at(&client, "kisum/staging/jwt-public-keys", "AWSCURRENT")
        .await
        .unwrap();
    let jwks: Value = serde_json::from_str(&jwks["jwks.json"]).unwrap();
    assert_eq!(kids(&jwks), set_kids, "the JWKS publishes the stored key");
    // A fifth run finds everything present and writes nothing.
    site.expect(&["secrets", "apply", "staging"], 0);
    for name in &names {
        assert_eq!(version_count(&client, name).await, 1, "{name} unchanged");
    }
}

async fn old_value_still_accepted(client: &aws_sdk_secretsmanager::Client, name: &str) -> bool {
    let Ok(listed) = client
        .list_secret_version_ids()
        .secret_id(name)
        .send()
        .await
    else {
        return false;
    };
    listed.versions().iter().any(|v| {
        let stages = v.version_stages();
        stages.iter().any(|s| s == "AWSPREVIOUS") && !stages.iter().any(|s| s == "AWSCURRENT")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_secret_is_reported_alone_and_an_interrupted_rotation_is_finished() {
    let moto = Moto::start().await;
    let mut site = sealed_site();
    site.env.push(("AWS_MAX_ATTEMPTS".into(), "1".into()));
    // Secrets Manager at a dead loopback port first: one clear line.
    let dead = site.expect(&["secrets", "plan", "staging"], 3);
    let said = stderr(&dead);
    assert!(said.contains("cannot reach http://127.0.0.1:9: "), "{said}");
    for debug in ["DispatchFailure", "ConnectorError", "{ ", "source:"] {
        assert!(!said.contains(debug), "an SDK dump: {said}");
    }
    assert_eq!(said.trim().lines().count(), 1, "{said}");

    staging_secrets_on(&site, &moto);
    let client = secrets_manager(&moto);
    let mut seen = Vec::new();
    expect(&site, &["secrets", "apply", "staging"], 0, &mut seen);
    // Supplied secrets a person got wrong: not JSON, a key not a string.
    for (name, value) in [
        ("billing-provider-key", CANARY.to_string()),
        (
            "email-provider-key",
            serde_json::json!({ "api-key": CANARY, "region": 5 }).to_string(),
        ),
    ] {
        client
            .create_secret()
            .name(format!("kisum/staging/{name}"))
            .secret_string(value)
            .send()
            .await
            .unwrap();
    }
    let plan = json(&expect(
        &site,
        &["secrets", "plan", "staging", "-o", "json"],
        0,
        &mut seen,
    ));
    assert_eq!(
        secret(&plan, "billing-provider-key")["action"],
        "unreadable"
    );
    assert_eq!(secret(&plan, "email-provider-key")["action"], "unreadable");
    assert_eq!(
        secret(&plan, "internal-credential-auth")["action"],
        "present"
    );
    assert_eq!(plan["summary"]["unreadable"], 2, "{plan:#}");
    let listed = json(&expect(
        &site,
        &["secrets", "list", "staging", "-o", "json"],
        0,
        &mut seen,
    ));
    let billing = secret(&listed, "billing-provider-key");
    assert!(billing["unreadable"].as_str().unwrap().contains("not JSON"));
    assert_eq!(
        secret(&listed, "auth-db-credentials")["keys"][0],
        "password"
    );
    expect(&site, &["secrets", "list", "staging"], 0, &mut seen);
    let checked = json(&expect(
        &site,
        &["secrets", "check", "staging", "-o", "json"],
        1,
        &mut seen,
    ));
    let findings = checked["findings"].as_array().unwrap().clone();
    let finding = |kind: &str, name: &str| {
        findings
            .iter()
            .find(|f| f["kind"] == kind && f["secret"] == name)
            .map(|f| f["detail"].as_str().unwrap().to_string())
    };
    let email = finding("unreadable", "email-provider-key").expect("email-provider-key unreadable");
    assert!(email.contains("key `region`"), "{email}");
    assert!(
        finding("unreadable", "billing-provider-key").is_some(),
        "{findings:?}"
    );
    assert!(
        finding("missing", "auth-db-credentials").is_some(),
        "the others are checked"
    );
    expect(&site, &["secrets", "check", "staging"], 1, &mut seen);
    expect(&site, &["secrets", "apply", "staging"], 1, &mut seen);

    // A rotation killed after the new credential became current, before
    // the old one was retired: check names it and how to finish it.
    let name = "kisum/staging/internal-credential-auth";
    let before = secret_at(&client, name, "AWSCURRENT").await.unwrap();
    let rotate = rotate_auth_token("staging", "120");
    site.kill_when(&rotate, async || {
        old_value_still_accepted(&client, name).await.then_some(())
    })
    .await;
    let checked = json(&expect(
        &site,
        &["secrets", "check", "staging", "-o", "json"],
        1,
        &mut seen,
    ));
    let pending = checked["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "rotation-pending" && f["secret"] == "internal-credential-auth")
        .unwrap_or_else(|| panic!("no unfinished rotation in {checked:#}"));
    let detail = pending["detail"].as_str().unwrap();
    assert!(detail.contains("unfinished rotation"), "{detail}");
    assert!(
        detail.contains("`kisumctl secrets rotate staging internal-credential-auth`"),
        "{detail}"
    );
    // --due picks it up and retires the old credential; the malformed
    // supplied secrets are passed over, not a failure of the run.
    let due = json(&expect(
        &site,
        &[
            "secrets",
            "rotate",
            "staging",
            "--due",
            "--retire-after",
            "0",
            "-o",
            "json",
        ],
        0,
        &mut seen,
    ));
    let results = due["results"].as_array().unwrap();
    let finished = results
        .iter()
        .find(|r| r["secret"] == "internal-credential-auth")
        .unwrap_or_else(|| panic!("{due:#}"));
    assert_eq!(finished["outcome"], "rotated", "{due:#}");
    assert!(!old_value_still_accepted(&client, name).await);
    let after = secret_at(&client, name, "AWSCURRENT").await.unwrap();
    assert_ne!(after["token"], before["token"]);
    let checked = json(&expect(
        &site,
        &["secrets", "check", "staging", "-o", "json"],
        1,
        &mut seen,
    ));
    assert!(
        !checked["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "rotation-pending"),
        "{checked:#}"
    );

    // secrets apply and rotate are journaled.
    let journal = json(&expect(
        &site,
        &["journal", "staging", "-n", "50", "-o", "json"],
        0,
        &mut seen,
    ));
    let commands: Vec<&str> = journal["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["command"].as_str().unwrap())
        .collect();
    assert!(commands.contains(&"secrets apply"), "{commands:?}");
    assert!(commands.contains(&"secrets rotate"), "{commands:?}");

    let mut values = vec![
        CANARY.to_string(),
        before["token"].clone(),
        after["token"].clone(),
    ];
    values.extend(
        secret_at(&client, name, "AWSPREVIOUS")
            .await
            .unwrap()
            .into_values(),
    );
    assert_never_shown(&values, &seen);
}

// ----------------------------------------------------------- local files --

#[test]
fn secrets_apply_before_the_first_deploy_leaves_the_state_dir_traversable() {
    use std::os::unix::fs::PermissionsExt as _;
    let site = sealed_site();
    std::fs::remove_dir_all(site.root().join(".kisum")).unwrap();
    let mut seen = Vec::new();
    expect(&site, &["secrets", "apply", "local"], 0, &mut seen);
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    // Made as deploy local makes them: PostgreSQL (another user) must
    // traverse them; the store itself stays private.
    assert_eq!(mode(&site.root().join(".kisum")), 0o755);
    assert_eq!(mode(&site.root().join(".kisum/local")), 0o755);
    assert_eq!(mode(&site.secrets_dir()), 0o700);
    assert_eq!(
        mode(&site.secrets_dir().join("internal-credential-auth")),
        0o700
    );
}

#[test]
fn check_local_is_clean_with_what_deploy_local_writes_and_fails_on_a_needed_secret() {
    let site = sealed_site();
    let mut seen = Vec::new();
    expect(&site, &["secrets", "apply", "local"], 0, &mut seen);
    // What deploy local writes besides: every key another command writes
    // (database and Redis logins, smoke fixtures), certificates aside.
    let plan = json(&expect(
        &site,
        &["secrets", "plan", "local", "-o", "json"],
        0,
        &mut seen,
    ));
    for planned in plan["secrets"].as_array().unwrap() {
        let name = planned["name"].as_str().unwrap();
        for key in planned["keys"].as_array().unwrap() {
            if key["action"] == "awaits" && !name.starts_with("tls-") {
                site.secret(name, key["key"].as_str().unwrap(), "written-by-deploy");
            }
        }
    }
    let check = json(&expect(
        &site,
        &["secrets", "check", "local", "-o", "json"],
        0,
        &mut seen,
    ));
    let kinds = |check: &Value, secret: &str| -> Vec<String> {
        check["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["secret"] == secret)
            .map(|f| f["kind"].as_str().unwrap().to_string())
            .collect()
    };
    // Optional configuration, and what a person supplies that local's
    // services never read, are reported as not set.
    for optional in [
        "email-provider-key",
        "billing-provider-key",
        "ai-provider-key",
        "backup-age-identity",
        "redis-admin-credentials",
    ] {
        assert_eq!(kinds(&check, optional), ["not-set"], "{optional}: {check}");
    }
    let text = expect(&site, &["secrets", "check", "local"], 0, &mut seen);
    assert!(
        stdout_of(&text).contains("optional, not set"),
        "{}",
        stdout_of(&text)
    );
    // A secret a running service needs is still a failure.
    std::fs::remove_file(site.secrets_dir().join("internal-credential-auth/token")).unwrap();
    let check = json(&expect(
        &site,
        &["secrets", "check", "local", "-o", "json"],
        1,
        &mut seen,
    ));
    assert_eq!(kinds(&check, "internal-credential-auth"), ["missing"]);
    // A retirement wait beyond 30 days is refused, naming the limit.
    let args = rotate_auth_token("local", "2592001");
    let refused = expect(&site, &args, 2, &mut seen);
    assert!(
        stderr(&refused).contains("0..=2592000"),
        "{}",
        stderr(&refused)
    );
}

/// The detail of `secret`'s finding in a `check -o json` document.
fn finding_detail(check: &Value, secret: &str) -> String {
    check["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["secret"] == secret)
        .and_then(|f| f["detail"].as_str())
        .unwrap_or_else(|| panic!("no finding for {secret} in {check:#}"))
        .to_string()
}

/// `check` names what makes each missing key: `secrets apply` only for
/// what it generates, `db provision` (with its database) for a login's
/// url and username, a person for an e-mail; `plan` gives each
/// administrative login that has no use in local its own reason.
#[test]
fn check_names_what_makes_each_missing_key() {
    let site = sealed_site();
    let mut seen = Vec::new();
    let check = ["secrets", "check", "local", "-o", "json"];
    let before = json(&expect(&site, &check, 1, &mut seen));
    let admin = finding_detail(&before, "admin-bootstrap-credentials");
    assert!(
        admin.contains("`kisumctl secrets apply local` generates password")
            && admin.contains(
                "a person supplies email: put the value into admin-bootstrap-credentials"
            ),
        "{admin}"
    );
    let login = finding_detail(&before, "auth-db-credentials");
    assert!(
        login.contains("`kisumctl secrets apply local` generates password")
            && login.contains("`kisumctl db provision local auth-db` writes url, username"),
        "{login}"
    );

    expect(&site, &["secrets", "apply", "local"], 0, &mut seen);
    let after = json(&expect(&site, &check, 1, &mut seen));
    let admin = finding_detail(&after, "admin-bootstrap-credentials");
    assert!(
        admin.starts_with("no email (a person supplies email") && !admin.contains("secrets apply"),
        "{admin}"
    );
    let login = finding_detail(&after, "auth-db-credentials");
    assert!(
        login.starts_with("no url, username (`kisumctl db provision local auth-db` writes")
            && !login.contains("secrets apply"),
        "{login}"
    );

    let plan = json(&expect(
        &site,
        &["secrets", "plan", "local", "-o", "json"],
        0,
        &mut seen,
    ));
    let mongo = secret(&plan, "main-mongo-superuser");
    assert_eq!(mongo["action"], "not-here", "{mongo}");
    let note = mongo["note"].as_str().unwrap();
    assert!(
        note.contains("MongoDB is the emulator") && !note.contains("postgres"),
        "{note}"
    );
    let postgres = secret(&plan, "auth-postgres-superuser");
    assert_eq!(postgres["action"], "not-here", "{postgres}");
    let note = postgres["note"].as_str().unwrap();
    assert!(note.contains("`local-postgres-superuser`"), "{note}");
}

/// `secrets list` says a secret whose value it cannot read could not be
/// read, and why, rather than showing it with no versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_says_which_secret_it_could_not_read_and_why() {
    let moto = Moto::start().await;
    let site = sealed_site();
    staging_secrets_on(&site, &moto);
    moto.secrets_manager()
        .create_secret()
        .name("kisum/staging/billing-provider-key")
        .secret_string("hunter2-not-json")
        .send()
        .await
        .unwrap();
    let listed = site.expect(&["secrets", "list", "staging"], 0);
    let text = stdout_of(&listed);
    let row = text
        .lines()
        .find(|l| l.starts_with("billing-provider-key "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        row.contains("UNREADABLE: AWSCURRENT is not JSON")
            && row.contains("could not be read")
            && !row.contains("0 ()"),
        "{row}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn secrets_in_local_files_are_planned_applied_rotated_and_checked() {
    let site = sealed_site();
    let store = site.secrets_dir();
    let mut seen = Vec::new();
    site.secret("billing-provider-key", "api-key", CANARY);

    let plan = json(&expect(
        &site,
        &["secrets", "plan", "local", "-o", "json"],
        0,
        &mut seen,
    ));
    assert_eq!(secret(&plan, "billing-provider-key")["action"], "present");
    // local's self-signed certificates are its own: awaited, never missed.
    assert_eq!(secret(&plan, "tls-auth")["action"], "awaits");
    assert_eq!(
        secret(&plan, "auth-postgres-superuser")["action"],
        "not-here"
    );
    expect(&site, &["secrets", "apply", "local"], 0, &mut seen);
    let token = std::fs::read_to_string(store.join("internal-credential-auth/token")).unwrap();
    assert_eq!(token.len(), 43);
    let again = json(&expect(
        &site,
        &["secrets", "apply", "local", "-o", "json"],
        0,
        &mut seen,
    ));
    assert_eq!(again["summary"]["keys_to_generate"], 0);

    site.secret("stray-secret", "k", "left behind");
    let check = json(&expect(
        &site,
        &["secrets", "check", "local", "-o", "json"],
        1,
        &mut seen,
    ));
    let findings = check["findings"].as_array().unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f["kind"] == "unreferenced" && f["secret"] == "stray-secret"),
        "{check}"
    );
    assert!(
        findings
            .iter()
            .any(|f| f["kind"] == "not-set" && f["secret"] == "email-provider-key"),
        "{check}"
    );
    let about_tls = |check: &Value| {
        check["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["secret"].as_str().unwrap().starts_with("tls-"))
    };
    assert!(!about_tls(&check), "not issued is not missing: {check}");
    // The self-signed certificates local's TLS mode writes are its own.
    expect(&site, &["tls", "issue", "local"], 0, &mut seen);
    let check = json(&expect(
        &site,
        &["secrets", "check", "local", "-o", "json"],
        1,
        &mut seen,
    ));
    assert!(!about_tls(&check), "{check}");
    let listed = json(&expect(
        &site,
        &["secrets", "list", "local", "-o", "json"],
        0,
        &mut seen,
    ));
    assert_eq!(secret(&listed, "tls-auth")["inventory"], "tls-certificates");

    let rotate = rotate_auth_token("local", "1");
    let rotated = expect(&site, &rotate, 0, &mut seen);
    assert!(
        stderr(&rotated).contains("waiting 1 s for every instance"),
        "{}",
        stderr(&rotated)
    );
    let current = std::fs::read_to_string(store.join("internal-credential-auth/token")).unwrap();
    assert_ne!(current, token);
    assert!(
        !store.join("internal-credential-auth/.previous").exists(),
        "the previous token is retired"
    );
    assert!(!store.join("internal-credential-auth/.pending").exists());
    let listed = json(&expect(
        &site,
        &["secrets", "list", "local", "-o", "json"],
        0,
        &mut seen,
    ));
    let versions = secret(&listed, "internal-credential-auth")["versions"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(versions, 1, "{listed}");
    expect(&site, &["secrets", "list", "local"], 0, &mut seen);
    expect(&site, &["secrets", "check", "local"], 1, &mut seen);

    // A MongoDB login without a login in its URL (the emulator) has no
    // password to rotate; a Redis user without its URL stops before any
    // pending version is stored.
    let mongo = expect(
        &site,
        &["secrets", "rotate", "local", "main-db-credentials"],
        0,
        &mut seen,
    );
    assert!(
        String::from_utf8_lossy(&mongo.stdout).contains("skipped main-db-credentials"),
        "{}",
        String::from_utf8_lossy(&mongo.stdout)
    );
    let redis = &["secrets", "rotate", "local", "redis-auth-credentials"];
    expect(&site, redis, 3, &mut seen);
    assert!(!store.join("redis-auth-credentials/.pending").exists());

    // The bootstrap administrator's e-mail is a person's to supply: the
    // refusal says so, and does not send them to a deploy that never
    // writes it.
    let admin = &["secrets", "rotate", "local", "admin-bootstrap-credentials"];
    let refused = expect(&site, admin, 3, &mut seen);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        stderr(&refused)
    );
    assert!(
        text.contains("has no `email` yet: a person supplies it") && !text.contains("deploy local"),
        "{text}"
    );

    // One rotation at a time: a held lock refuses a second.
    let lock = std::fs::File::create(site.root().join(".kisum/local/secrets-rotate.lock")).unwrap();
    lock.try_lock().unwrap();
    let args = [
        "secrets",
        "rotate",
        "local",
        "internal-credential-auth",
        "--lock-timeout",
        "1",
    ];
    let held = expect(&site, &args, 3, &mut seen);
    assert!(
        stderr(&held).contains("another kisumctl secrets rotate local is running"),
        "{}",
        stderr(&held)
    );
    drop(lock);

    // Internal tokens due at once: check says so, rotate --due takes them all.
    site.edit("environments/base.yaml", |text| {
        text.replace(
            "rotation-days: 30\n    keys: [token]",
            "rotation-days: 0\n    keys: [token]",
        )
    });
    let check = json(&expect(
        &site,
        &["secrets", "check", "local", "-o", "json"],
        1,
        &mut seen,
    ));
    let overdue = check["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "overdue")
        .count();
    assert_eq!(overdue, 9, "{check}");
    let due = json(&expect(
        &site,
        &[
            "secrets",
            "rotate",
            "local",
            "--due",
            "--retire-after",
            "0",
            "-o",
            "json",
        ],
        0,
        &mut seen,
    ));
    let results = due["results"].as_array().unwrap();
    assert_eq!(results.len(), 9, "{due}");
    assert!(results.iter().all(|r| r["outcome"] == "rotated"), "{due}");
    let again = std::fs::read_to_string(store.join("internal-credential-auth/token")).unwrap();
    assert_ne!(again, current);
    assert!(!store.join("internal-credential-auth/.previous").exists());
    assert_never_shown(&local_values(&store), &seen);
}

// ------------------------------------------------------------ PostgreSQL --

/// A site on a fresh PostgreSQL with SCRAM logins and auth-db provisioned.
async fn provisioned() -> (Site, Postgres) {
    let pg = Postgres::start().await.unwrap();
    let site = Site::new(pg.port());
    crate::db::require_passwords(&site, &pg).await;
    let site = tokio::task::spawn_blocking(move || {
        site.expect(&["db", "provision", "local", "auth-db"], 0);
        site
    })
    .await
    .unwrap();
    (site, pg)
}

async fn works(url: &str) -> bool {
    match PgConnection::connect(url).await {
        Ok(mut conn) => {
            let one: Result<i32, _> = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await;
            let _ = conn.close().await;
            one.is_ok()
        }
        Err(_) => false,
    }
}

async fn rotate_blocking(site: &Arc<Site>, args: &'static [&'static str]) -> Output {
    let site = site.clone();
    tokio::task::spawn_blocking(move || site.run(args))
        .await
        .unwrap()
}

const ROTATE_AUTH_DB: &[&str] = &["secrets", "rotate", "local", "auth-db-credentials"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_password_rotates_while_the_old_login_keeps_working() {
    let (site, _pg) = provisioned().await;
    let site = Arc::new(site);
    let old = site.read_secret("auth-db-credentials", "url");
    assert!(old.starts_with("postgres://auth_app_a:"));

    // A bounded loop of connections with the old credential.
    let stop = Arc::new(AtomicBool::new(false));
    let looping = {
        let (old, stop) = (old.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, 0u32);
            let started = Instant::now();
            while !stop.load(Ordering::SeqCst)
                && ok + failed < 2_000
                && started.elapsed() < Duration::from_secs(60)
            {
                if works(&old).await {
                    ok += 1;
                } else {
                    failed += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rotated = rotate_blocking(&site, ROTATE_AUTH_DB).await;
    let rotated = assert_exit(ROTATE_AUTH_DB, rotated, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = looping.await.unwrap();
    assert_eq!(failed, 0, "the old login failed {failed} times ({ok} fine)");
    assert!(ok >= 5, "only {ok} connections");

    let new = site.read_secret("auth-db-credentials", "url");
    assert!(new.starts_with("postgres://auth_app_b:"), "switched role");
    assert!(works(&new).await, "the new login works");
    assert!(works(&old).await, "the old login still works");
    assert_eq!(
        site.read_secret("auth-db-credentials", ".previous/url"),
        old
    );
    assert_eq!(
        site.read_secret("auth-db-credentials", "username"),
        "auth_app_b"
    );
    let mut seen = vec![
        String::from_utf8_lossy(&rotated.stdout).into_owned(),
        stderr(&rotated),
    ];

    // The next rotation goes back to the first role, with a new password:
    // the oldest credential stops working then.
    let again = assert_exit(
        ROTATE_AUTH_DB,
        rotate_blocking(&site, ROTATE_AUTH_DB).await,
        0,
    );
    seen.push(String::from_utf8_lossy(&again.stdout).into_owned());
    seen.push(stderr(&again));
    let third = site.read_secret("auth-db-credentials", "url");
    assert!(third.starts_with("postgres://auth_app_a:"));
    assert!(works(&third).await);
    assert!(works(&new).await, "the previous login keeps working");
    assert!(!works(&old).await, "the oldest password is gone");
    // The migration role has one login: its password changes in place.
    const ROTATE_MIGRATOR: &[&str] = &[
        "secrets",
        "rotate",
        "local",
        "auth-db-migration-credentials",
    ];
    let migrator = site.read_secret("auth-db-migration-credentials", "url");
    let output = rotate_blocking(&site, ROTATE_MIGRATOR).await;
    let output = assert_exit(ROTATE_MIGRATOR, output, 0);
    seen.push(String::from_utf8_lossy(&output.stdout).into_owned());
    seen.push(stderr(&output));
    let renewed = site.read_secret("auth-db-migration-credentials", "url");
    assert!(renewed.starts_with("postgres://auth_migrator:"));
    assert!(works(&renewed).await, "the new migration login works");
    assert!(
        !works(&migrator).await,
        "the old migration password is gone"
    );
    assert_eq!(
        site.read_secret("auth-db-migration-credentials", ".previous/url"),
        migrator
    );
    let listed = site.run(&["secrets", "list", "local"]);
    seen.push(String::from_utf8_lossy(&listed.stdout).into_owned());
    assert_never_shown(&local_values(&site.secrets_dir()), &seen);
}

/// A migration-role rotation killed (SIGKILL) right after the role got its
/// new password: the current url fails, `check` says so and names the
/// command that finishes it, and the rerun does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_rotation_killed_after_the_password_change_is_named_and_finished() {
    const SECRET: &str = "auth-db-migration-credentials";
    const ROTATE: &[&str] = &["secrets", "rotate", "local", SECRET];
    let (mut site, _pg) = provisioned().await;
    let before = site.read_secret(SECRET, "url");
    assert!(works(&before).await);
    site.env
        .push(("KISUM_HOLD_AT".into(), "secrets-rotate:password-set".into()));
    let pending_file = site.secrets_dir().join(SECRET).join(".pending/url");
    // Killed once the role logs in with the pending password.
    let pending = site
        .kill_when(ROTATE, async || {
            let url = std::fs::read_to_string(&pending_file).ok()?;
            works(&url).await.then_some(url)
        })
        .await;
    site.env.retain(|(name, _)| name != "KISUM_HOLD_AT");
    assert_eq!(site.read_secret(SECRET, "url"), before, "not promoted");
    assert!(
        !works(&before).await,
        "the current url fails until finished"
    );

    let site = Arc::new(site);
    let checked = {
        let site = site.clone();
        tokio::task::spawn_blocking(move || {
            site.expect(&["secrets", "check", "local", "-o", "json"], 1)
        })
        .await
        .unwrap()
    };
    let document: Value = serde_json::from_slice(&checked.stdout).unwrap();
    let finding = document["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["secret"] == SECRET)
        .unwrap_or_else(|| panic!("{document:#}"));
    assert_eq!(finding["kind"], "rotation-pending", "{finding:#}");
    let detail = finding["detail"].as_str().unwrap();
    assert!(
        detail.contains("the role's password was changed by an unfinished rotation")
            && detail.contains("the current url fails to log in")
            && detail.contains(
                "run `kisumctl secrets rotate local auth-db-migration-credentials` to finish"
            ),
        "{detail}"
    );

    let rerun = assert_exit(ROTATE, rotate_blocking(&site, ROTATE).await, 0);
    assert!(
        stderr(&rerun).contains("continuing the pending version"),
        "{}",
        stderr(&rerun)
    );
    assert_eq!(site.read_secret(SECRET, "url"), pending);
    assert!(works(&pending).await, "the finished rotation's url works");
    assert!(!site.secrets_dir().join(SECRET).join(".pending").exists());
    let after = site.run(&["secrets", "check", "local", "-o", "json"]);
    let text = String::from_utf8_lossy(&after.stdout).into_owned();
    assert!(!text.contains(SECRET), "{text}");
    let seen = [
        String::from_utf8_lossy(&checked.stdout).into_owned(),
        stderr(&checked),
        String::from_utf8_lossy(&rerun.stdout).into_owned(),
        stderr(&rerun),
        text,
    ];
    assert_never_shown(&local_values(&site.secrets_dir()), &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_refuses_to_change_a_login_still_in_use() {
    let (site, _pg) = provisioned().await;
    let site = Arc::new(site);
    let oldest = site.read_secret("auth-db-credentials", "url");
    assert_exit(
        ROTATE_AUTH_DB,
        rotate_blocking(&site, ROTATE_AUTH_DB).await,
        0,
    );
    let current = site.read_secret("auth-db-credentials", "url");
    assert!(current.starts_with("postgres://auth_app_b:"));

    // An instance never restarted still holds a session as auth_app_a.
    let mut held = PgConnection::connect(&oldest).await.unwrap();
    let refused = assert_exit(
        ROTATE_AUTH_DB,
        rotate_blocking(&site, ROTATE_AUTH_DB).await,
        3,
    );
    let text = String::from_utf8_lossy(&refused.stdout).into_owned();
    assert!(text.contains("FAILED auth-db-credentials"), "{text}");
    assert!(
        text.contains("auth_app_a is still in use (1 session(s)"),
        "{text}"
    );
    assert!(text.contains("`kisumctl deploy local`"), "{text}");
    assert!(text.contains("nothing was staged"), "{text}");
    // Nothing changed: the secret, its stages and both passwords.
    assert_eq!(site.read_secret("auth-db-credentials", "url"), current);
    assert_eq!(
        site.read_secret("auth-db-credentials", ".previous/url"),
        oldest
    );
    assert!(
        !site
            .secrets_dir()
            .join("auth-db-credentials/.pending")
            .exists()
    );
    assert!(works(&oldest).await, "the login in use keeps its password");
    assert!(works(&current).await);
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut held)
        .await
        .unwrap();
    assert_eq!(one, 1);

    // Once the instance has moved, the rotation goes ahead.
    held.close().await.unwrap();
    let rotated = assert_exit(
        ROTATE_AUTH_DB,
        rotate_blocking(&site, ROTATE_AUTH_DB).await,
        0,
    );
    let third = site.read_secret("auth-db-credentials", "url");
    assert!(third.starts_with("postgres://auth_app_a:"));
    assert!(!works(&oldest).await, "the oldest password is gone");
    assert!(works(&current).await);
    let seen = [
        String::from_utf8_lossy(&refused.stdout).into_owned(),
        stderr(&refused),
        String::from_utf8_lossy(&rotated.stdout).into_owned(),
        stderr(&rotated),
    ];
    assert_never_shown(&local_values(&site.secrets_dir()), &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_rotation_leaves_the_old_secret_current_and_resumes() {
    let (site, pg) = provisioned().await;
    let site = Arc::new(site);
    let old = site.read_secret("auth-db-credentials", "url");

    // PostgreSQL refuses the waiting role's logins.
    let hba = pg.data_dir().join("pg_hba.conf");
    let original = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all auth_app_b 127.0.0.1/32 reject\n{original}"),
    )
    .unwrap();
    let mut admin = PgConnection::connect(
        &pg.url("postgres")
            .replace("kisum@", "kisum:superuser-secret@"),
    )
    .await
    .unwrap();
    exec(&mut admin, "SELECT pg_reload_conf()").await;

    let failed = assert_exit(
        ROTATE_AUTH_DB,
        rotate_blocking(&site, ROTATE_AUTH_DB).await,
        3,
    );
    let text = String::from_utf8_lossy(&failed.stdout).into_owned();
    assert!(text.contains("FAILED auth-db-credentials"), "{text}");
    assert!(text.contains("current value is unchanged"), "{text}");
    assert_eq!(site.read_secret("auth-db-credentials", "url"), old);
    assert!(works(&old).await, "the current login still works");
    let pending = site.read_secret("auth-db-credentials", ".pending/password");
    let check = site.run(&["secrets", "check", "local", "-o", "json"]);
    assert_exit(&["secrets", "check"], check.clone(), 1);
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("rotation-pending"),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    // Once PostgreSQL accepts it again, a rerun continues the same version.
    std::fs::write(&hba, &original).unwrap();
    exec(&mut admin, "SELECT pg_reload_conf()").await;
    admin.close().await.unwrap();
    let resumed = assert_exit(
        ROTATE_AUTH_DB,
        rotate_blocking(&site, ROTATE_AUTH_DB).await,
        0,
    );
    assert!(
        stderr(&resumed).contains("continuing the pending version"),
        "{}",
        stderr(&resumed)
    );
    assert_eq!(site.read_secret("auth-db-credentials", "password"), pending);
    let new = site.read_secret("auth-db-credentials", "url");
    assert!(new.starts_with("postgres://auth_app_b:"));
    assert!(works(&new).await);
    assert!(works(&old).await);
    let seen = [
        String::from_utf8_lossy(&failed.stdout).into_owned(),
        stderr(&failed),
        String::from_utf8_lossy(&resumed.stdout).into_owned(),
        stderr(&resumed),
        String::from_utf8_lossy(&check.stdout).into_owned(),
    ];
    assert_never_shown(&local_values(&site.secrets_dir()), &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_password_rotates_in_secrets_manager_with_the_previous_login_kept() {
    let moto = Moto::start().await;
    let pg = Postgres::start().await.unwrap();
    let mut site = Site::new(pg.port());
    site.env = sealed_site().env;
    crate::db::require_passwords(&site, &pg).await;
    // `local` with its secrets in moto's Secrets Manager.
    site.edit("environments/local.yaml", |text| {
        text.replace(
            "secrets:\n  backend: local-files\n  path: .kisum/local/secrets\n",
            &format!(
                "secrets:\n  backend: aws-secrets-manager\n  account: \"123456789012\"\n  \
                 region: eu-west-1\n  prefix: kisum/local/\n  endpoint: {}\n",
                moto.endpoint()
            ),
        )
    });
    let client = secrets_manager(&moto);
    client
        .create_secret()
        .name("kisum/local/local-postgres-superuser")
        .secret_string(
            serde_json::json!({ "username": "kisum", "password": "superuser-secret" }).to_string(),
        )
        .send()
        .await
        .unwrap();
    let site = Arc::new(site);
    let mut seen = Vec::new();
    for args in [
        &["secrets", "apply", "local"][..],
        &["db", "provision", "local", "auth-db"][..],
        ROTATE_AUTH_DB,
    ] {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let site = site.clone();
        let output = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            site.expect(&args, 0)
        })
        .await
        .unwrap();
        seen.push(String::from_utf8_lossy(&output.stdout).into_owned());
        seen.push(stderr(&output));
    }
    let name = "kisum/local/auth-db-credentials";
    let current = secret_at(&client, name, "AWSCURRENT").await.unwrap();
    let previous = secret_at(&client, name, "AWSPREVIOUS").await.unwrap();
    assert!(secret_at(&client, name, "AWSPENDING").await.is_none());
    assert_eq!(current["username"], "auth_app_b");
    assert_eq!(previous["username"], "auth_app_a");
    assert!(works(&current["url"]).await, "the new login works");
    assert!(
        works(&previous["url"]).await,
        "the previous login still works"
    );
    let mut values: Vec<String> = current.values().cloned().collect();
    values.extend(previous.values().cloned());
    assert_never_shown(&values, &seen);
}

// ----------------------------------------------------------------- Redis --

/// Whether a new connection with `url` logs in and answers PING.
async fn redis_works(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    match client.get_multiplexed_async_connection().await {
        Ok(mut conn) => redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok(),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_password_rotates_while_the_old_one_keeps_connecting() {
    let redis = kisum_testkit::Redis::start().await.unwrap();
    let port = redis.port();
    let site = sealed_site();
    site.edit("environments/local.yaml", |t| {
        t.replace("port: 26379", &format!("port: {port}"))
    });
    // The server: an administrator (the default user) and Auth's ACL user.
    let admin = "admin-password-of-the-test-redis-00001";
    let first = "first-password-of-the-auth-user-000001";
    let url = |password: &str| format!("redis://auth:{password}@127.0.0.1:{port}/");
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("ACL")
        .arg(vec![
            "SETUSER",
            "auth",
            "on",
            &format!(">{first}"),
            "~access:*",
            "+@all",
        ])
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    redis::cmd("CONFIG")
        .arg(vec!["SET", "requirepass", admin])
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    site.secret(
        "redis-admin-credentials",
        "password",
        "not-the-admin-password-000001",
    );
    site.secret("redis-auth-credentials", "username", "auth");
    site.secret("redis-auth-credentials", "password", first);
    site.secret("redis-auth-credentials", "url", &url(first));
    let site = Arc::new(site);
    let rotate = &["secrets", "rotate", "local", "redis-auth-credentials"];
    let mut seen = Vec::new();

    // A wrong administrator password: refused, the secret unchanged, a
    // pending version left for the rerun.
    let refused = rotate_blocking(&site, rotate).await;
    seen.extend([stdout_of(&refused), stderr(&refused)]);
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    assert!(stdout_of(&refused).contains("the current value is unchanged"));
    assert_eq!(
        site.read_secret("redis-auth-credentials", "password"),
        first
    );
    let pending = site.read_secret("redis-auth-credentials", ".pending/password");
    assert!(redis_works(&url(first)).await);
    site.secret("redis-admin-credentials", "password", admin);

    // An instance that keeps opening connections with the first password.
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (stop, first) = (stop.clone(), url(first));
        tokio::spawn(async move {
            let (started, mut done, mut failed) = (Instant::now(), 0u32, 0u32);
            while !stop.load(Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(120)
                && done < 5_000
            {
                done += 1;
                if !redis_works(&first).await {
                    failed += 1;
                }
            }
            (done, failed)
        })
    };
    let rotated = rotate_blocking(&site, rotate).await;
    stop.store(true, Ordering::Relaxed);
    let (done, failed) = worker.await.unwrap();
    seen.extend([stdout_of(&rotated), stderr(&rotated)]);
    assert_eq!(rotated.status.code(), Some(0), "{}", stderr(&rotated));
    assert!(done >= 2, "{done}");
    assert_eq!(failed, 0, "connections with the old password failed");
    let second = site.read_secret("redis-auth-credentials", "password");
    assert_eq!(second, pending, "the rerun continued the pending password");
    assert_eq!(
        site.read_secret("redis-auth-credentials", "url"),
        url(&second)
    );
    assert_eq!(
        site.read_secret("redis-auth-credentials", ".previous/password"),
        first
    );
    assert!(redis_works(&url(&second)).await);
    assert!(
        redis_works(&url(first)).await,
        "the old password still works"
    );

    // The next rotation retires the oldest password.
    let again = rotate_blocking(&site, rotate).await;
    seen.extend([stdout_of(&again), stderr(&again)]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let third = site.read_secret("redis-auth-credentials", "password");
    assert!(redis_works(&url(&third)).await);
    assert!(
        redis_works(&url(&second)).await,
        "the previous one still works"
    );
    assert!(!redis_works(&url(first)).await, "the oldest one is refused");

    let mut values = local_values(&site.secrets_dir());
    values.extend([first, &second, &third, admin].map(String::from));
    assert_never_shown(&values, &seen);
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Ctrl-C while a rotation waits to retire the old credential: said, with
/// the command that continues it; exit 3, journaled interrupted; the new
/// value stays current and `check` reports the unfinished rotation.
#[test]
fn an_interrupted_rotation_says_where_it_stands_and_is_journaled() {
    use std::io::BufRead as _;
    let site = sealed_site();
    let mut seen = Vec::new();
    expect(&site, &["secrets", "apply", "local"], 0, &mut seen);
    let args = rotate_auth_token("local", "600");
    let mut child = site
        .command(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        said.push(line.clone());
        if line.contains("waiting 600 s") {
            break;
        }
    }
    assert!(
        said.last().is_some_and(|l| l.contains("waiting 600 s")),
        "{said:#?}"
    );
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    said.extend(lines.map(Result::unwrap));
    let status = child.wait().unwrap();
    let text = said.join("\n");
    assert_eq!(status.code(), Some(3), "{text}");
    assert!(
        text.contains("interrupted during internal-credential-auth")
            && text.contains("kisumctl secrets rotate local internal-credential-auth"),
        "{text}"
    );
    let journal = json(&expect(
        &site,
        &["journal", "local", "-o", "json"],
        0,
        &mut seen,
    ));
    let last = journal["records"].as_array().unwrap().last().unwrap();
    assert_eq!(last["command"], "secrets rotate", "{journal:#}");
    assert_eq!(last["result"], "interrupted", "{journal:#}");
    let check = json(&expect(
        &site,
        &["secrets", "check", "local", "-o", "json"],
        1,
        &mut seen,
    ));
    assert!(
        check["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["secret"] == "internal-credential-auth" && f["kind"] == "rotation-pending"),
        "{check:#}"
    );
}

/// `secrets rotate ENV internal-credential-auth --retire-after SECONDS`.
fn rotate_auth_token<'a>(env: &'a str, retire_after: &'a str) -> [&'a str; 6] {
    [
        "secrets",
        "rotate",
        env,
        "internal-credential-auth",
        "--retire-after",
        retire_after,
    ]
}
