//! `kisumctl tls`: status and renewal decisions on planted certificates,
//! then issuance and renewal end to end against pebble, with DNS-01
//! through Route53 (moto) bridged to pebble-challtestsrv by the proxy, and
//! HTTP-01 on pebble's validation port.

use std::os::unix::fs::PermissionsExt as _;
use std::sync::atomic::Ordering;

use serde_json::Value;

use crate::common::Moto;
use crate::common::{root, stderr, stdout};
use crate::dns::{create_zones, records, route53};
use crate::site::Site;

/// The public hosts of `dev` and their secret names.
const HOSTS: [(&str, &str); 10] = [
    ("admin-api-dev.kisum.io", "tls-platform-admin"),
    ("admin-dev.kisum.io", "tls-admin"),
    ("api-v2-ai-dev.kisum.dev", "tls-ai"),
    ("api-v2-dev.kisum.dev", "tls-basic"),
    ("api-v2-finance-dev.kisum.dev", "tls-finance"),
    ("api-v2-market-dev.kisum.dev", "tls-market"),
    ("api-v2-touring-dev.kisum.dev", "tls-touring"),
    ("api-v2-venue-dev.kisum.dev", "tls-venue"),
    ("app-dev.kisum.io", "tls-app"),
    ("auth-dev.kisum.io", "tls-auth"),
];

fn secrets(site: &Site) -> std::path::PathBuf {
    site.root().join(".kisum/dev/secrets")
}

/// Writes a value into the scratch site's local secret store.
fn put(site: &Site, secret: &str, key: &str, value: &str) {
    let dir = secrets(site).join(secret);
    std::fs::create_dir_all(&dir).unwrap();
    for d in [secrets(site), dir.clone()] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    std::fs::write(dir.join(key), value).unwrap();
    std::fs::set_permissions(dir.join(key), std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn read(site: &Site, secret: &str, key: &str) -> String {
    std::fs::read_to_string(secrets(site).join(secret).join(key)).unwrap()
}

/// A self-signed certificate for `host` with `days` left, and its key.
fn plant(site: &Site, host: &str, secret: &str, days: u64) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()]).unwrap();
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(86_400)).into();
    params.not_after = (now + std::time::Duration::from_secs(days * 86_400 + 3_600)).into();
    put(
        site,
        secret,
        "tls.crt",
        &params.self_signed(&key).unwrap().pem(),
    );
    put(site, secret, "tls.key", &key.serialize_pem());
}

/// `dev`'s certificates from `pebble`, trusting its CA.
pub fn issue_from(site: &Site, pebble: &crate::pebble::Pebble) {
    let ca_root = pebble.ca_root().display().to_string();
    site.edit("environments/dev.yaml", |t| {
        t.replace(
            "tls:\n  mode: acme\n",
            &format!(
                "tls:\n  mode: acme\n  acme-directory: {}\n  acme-ca-root: {ca_root}\n",
                pebble.directory()
            ),
        )
    });
}

fn host<'a>(document: &'a Value, list: &str, name: &str) -> &'a Value {
    document[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == name)
        .unwrap_or_else(|| panic!("no {name} in {document:#}"))
}

fn no_private_key(outputs: &[&std::process::Output]) {
    for output in outputs {
        for text in [stdout(output), stderr(output)] {
            assert!(!text.contains("PRIVATE KEY"), "a key was printed:\n{text}");
        }
    }
}

#[test]
fn tls_status_judges_each_host_and_renew_takes_the_window() {
    let site = Site::dev("http://127.0.0.1:9");
    for (host, secret) in HOSTS {
        let days = match secret {
            "tls-auth" => 20,
            "tls-platform-admin" => 5,
            _ => 60,
        };
        plant(&site, host, secret, days);
    }
    let status = site.json(&["tls", "status", "dev", "-o", "json"], 1);
    assert_eq!(status["alarming"], 1, "{status:#}");
    assert_eq!(
        host(&status, "hosts", "auth-dev.kisum.io")["health"],
        "renew-due"
    );
    assert_eq!(
        host(&status, "hosts", "admin-api-dev.kisum.io")["health"],
        "alert"
    );
    assert_eq!(host(&status, "hosts", "app-dev.kisum.io")["health"], "ok");
    assert_eq!(host(&status, "hosts", "app-dev.kisum.io")["days_left"], 60);

    let renew = site.json(&["tls", "renew", "dev", "--dry-run", "-o", "json"], 0);
    let due: Vec<&str> = renew["due"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap())
        .collect();
    assert_eq!(due, ["admin-api-dev.kisum.io", "auth-dev.kisum.io"]);

    // Another host's certificate, and no certificate at all.
    plant(&site, "app-dev.kisum.io", "tls-admin", 60);
    std::fs::remove_dir_all(secrets(&site).join("tls-app")).unwrap();
    plant(&site, "auth-dev.kisum.io", "tls-auth", 60);
    plant(&site, "admin-api-dev.kisum.io", "tls-platform-admin", 60);
    let status = site.json(&["tls", "status", "dev", "-o", "json"], 1);
    assert_eq!(status["alarming"], 2, "{status:#}");
    assert_eq!(
        host(&status, "hosts", "admin-dev.kisum.io")["health"],
        "invalid"
    );
    assert_eq!(
        host(&status, "hosts", "app-dev.kisum.io")["health"],
        "missing"
    );
    let text = site.expect(&["tls", "status", "dev"], 1);
    assert!(stdout(&text).contains("issued for app-dev.kisum.io, not admin-dev.kisum.io"));
    no_private_key(&[&text]);
}

/// pebble, moto's Route53 behind the bridging proxy, the zones, and a
/// `dev` that issues from pebble.
struct Issuing {
    pebble: crate::pebble::Pebble,
    _moto: Moto,
    proxy: crate::proxy::Proxy,
    client: aws_sdk_route53::Client,
    zones: (String, String),
    site: Site,
}

async fn issuing() -> Issuing {
    let pebble = crate::pebble::start().await;
    let moto = Moto::start().await;
    let proxy = crate::proxy::start(&moto.endpoint(), Some(pebble.challtestsrv_url())).await;
    let client = route53(&moto.endpoint());
    let (io, dev) = create_zones(&client).await;
    let site = Site::dev(&proxy.url());
    issue_from(&site, &pebble);
    Issuing {
        pebble,
        _moto: moto,
        proxy,
        client,
        zones: (io, dev),
        site,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_issues_and_renews_through_route53_and_pebble() {
    let Issuing {
        pebble,
        _moto,
        proxy,
        client,
        zones: (io, dev),
        site,
    } = issuing().await;

    let issue = site.expect(&["tls", "issue", "dev", "-o", "json"], 0);
    let issued: Value = serde_json::from_slice(&issue.stdout).unwrap();
    assert_eq!(issued["failed"], 0, "{issued:#}\n{}", stderr(&issue));
    assert_eq!(issued["results"].as_array().unwrap().len(), HOSTS.len());
    assert!(proxy.counts.bridged.load(Ordering::SeqCst) >= 2 * HOSTS.len());
    assert_eq!(
        challenge_records(&client, &[&io, &dev]).await,
        0,
        "challenge records left behind"
    );
    let account = secrets(&site).join("acme-account-key/key.pem");
    assert_eq!(
        std::fs::metadata(&account).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The secrets are the ones the rendered Ingresses name.
    for (_, secret) in HOSTS {
        assert!(read(&site, secret, "tls.crt").contains("BEGIN CERTIFICATE"));
        assert!(read(&site, secret, "tls.key").contains("PRIVATE KEY"));
    }
    for service in [
        "auth",
        "platform-admin",
        "basic",
        "finance",
        "market",
        "touring",
        "venue",
        "ai",
    ] {
        let manifest =
            std::fs::read_to_string(root().join(format!("manifests/dev/{service}.yaml"))).unwrap();
        assert!(
            manifest.contains(&format!("secretName: tls-{service}")),
            "{service}"
        );
    }

    let status = site.json(&["tls", "status", "dev", "-o", "json"], 0);
    let auth = host(&status, "hosts", "auth-dev.kisum.io");
    assert_eq!(auth["health"], "ok", "{status:#}");
    assert!(
        auth["certificate"]["issuer"]
            .as_str()
            .unwrap()
            .contains("Pebble"),
        "{auth:#}"
    );

    // One certificate near its end: only it is renewed.
    let finance_before = read(&site, "tls-finance", "tls.crt");
    plant(&site, "auth-dev.kisum.io", "tls-auth", 5);
    site.expect(&["tls", "status", "dev"], 1);
    let renew = site.expect(&["tls", "renew", "dev", "-o", "json"], 0);
    let renewed: Value = serde_json::from_slice(&renew.stdout).unwrap();
    let hosts: Vec<&str> = renewed["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["auth-dev.kisum.io"], "{renewed:#}");
    site.expect(&["tls", "status", "dev"], 0);
    assert_eq!(read(&site, "tls-finance", "tls.crt"), finance_before);
    let nothing = site.expect(&["tls", "issue", "dev"], 0);
    assert!(stdout(&nothing).contains("nothing to issue"));

    // HTTP-01 where the matrix chooses it, served on pebble's port.
    site.edit("environments/dev.yaml", |t| {
        t.replace(
            "tls:\n  mode: acme\n",
            &format!(
                "tls:\n  mode: acme\n  challenge: http-01\n  http01-listen: 127.0.0.1:{}\n",
                pebble.http_port
            ),
        )
    });
    let auth_before = read(&site, "tls-auth", "tls.crt");
    // The port held by another process: said, the certificate kept.
    let holder = std::net::TcpListener::bind(("127.0.0.1", pebble.http_port)).unwrap();
    let busy = site.expect(&["tls", "issue", "dev", "--host", "auth", "--force"], 3);
    assert!(
        stderr(&busy).contains(&format!("listening on 127.0.0.1:{}", pebble.http_port))
            && stderr(&busy).contains("another process holds that port"),
        "{}",
        stderr(&busy)
    );
    assert_eq!(read(&site, "tls-auth", "tls.crt"), auth_before);
    drop(holder);
    let http = site.json(
        &[
            "tls", "issue", "dev", "--host", "auth", "--force", "-o", "json",
        ],
        0,
    );
    assert_eq!(http["challenge"], "http-01");
    assert_eq!(http["results"][0]["status"], "issued", "{http:#}");
    assert_ne!(read(&site, "tls-auth", "tls.crt"), auth_before);
    no_private_key(&[&issue, &renew, &nothing]);
}

/// The `_acme-challenge` records in the zones.
async fn challenge_records(client: &aws_sdk_route53::Client, zones: &[&String]) -> usize {
    let mut count = 0;
    for zone in zones {
        count += records(client, zone)
            .await
            .into_keys()
            .filter(|(name, _)| name.starts_with("_acme-challenge."))
            .count();
    }
    count
}

/// Starts `tls issue dev` and waits (at most a minute) until it waits for
/// its challenge records, which the proxy keeps `PENDING`.
async fn issue_waiting(site: &Site, proxy: &crate::proxy::Proxy) -> std::process::Child {
    waiting(site, proxy, &["tls", "issue", "dev"]).await
}

/// Starts `kisumctl ARGS` (a `tls issue`) and waits (at most a minute)
/// until it waits for its challenge records.
async fn waiting(site: &Site, proxy: &crate::proxy::Proxy, args: &[&str]) -> std::process::Child {
    let before = proxy.counts.get_change.load(Ordering::SeqCst);
    let child = site
        .command(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while proxy.counts.get_change.load(Ordering::SeqCst) == before {
        assert!(
            std::time::Instant::now() < deadline,
            "tls issue never waited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    child
}

fn signal(child: &std::process::Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_issue_removes_its_challenge_records_and_is_journaled() {
    let setup = issuing().await;
    let (site, proxy, client) = (&setup.site, &setup.proxy, &setup.client);
    let (io, dev) = (&setup.zones.0, &setup.zones.1);
    // Route53 says PENDING for as long as the test wants: Ctrl-C lands
    // while the orders wait for their challenge records.
    proxy.faults.pending.store(usize::MAX / 2, Ordering::SeqCst);

    let child = issue_waiting(site, proxy).await;
    assert!(challenge_records(client, &[io, dev]).await > 0);
    signal(&child, "-INT");
    let interrupted = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        interrupted.status.code(),
        Some(3),
        "{}",
        stderr(&interrupted)
    );
    assert!(
        stderr(&interrupted).contains("interrupted (Ctrl-C)"),
        "{}",
        stderr(&interrupted)
    );
    assert_eq!(challenge_records(client, &[io, dev]).await, 0);
    let journal = site.json(&["journal", "dev", "-o", "json"], 0);
    let last = journal["records"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["command"], "tls issue", "{journal:#}");
    assert_eq!(last["result"], "interrupted", "{journal:#}");
    assert_eq!(last["exit"], 3);

    // A run killed outright leaves its records; the next run removes them
    // before its own orders, and issues.
    let mut child = issue_waiting(site, proxy).await;
    signal(&child, "-KILL");
    child.wait().unwrap();
    assert!(challenge_records(client, &[io, dev]).await > 0);
    proxy.faults.pending.store(0, Ordering::SeqCst);
    // A renewal with nothing to renew (no certificate yet) removes them
    // too, and says so.
    let renew = site.run(&["tls", "renew", "dev"]);
    assert!(
        stderr(&renew).contains("challenge record(s) a stopped run left in Route53"),
        "{}",
        stderr(&renew)
    );
    assert_eq!(challenge_records(client, &[io, dev]).await, 0);
    proxy.faults.pending.store(usize::MAX / 2, Ordering::SeqCst);
    let mut child = issue_waiting(site, proxy).await;
    signal(&child, "-KILL");
    child.wait().unwrap();
    assert!(challenge_records(client, &[io, dev]).await > 0);
    proxy.faults.pending.store(0, Ordering::SeqCst);
    let next = site.json(&["tls", "issue", "dev", "-o", "json"], 0);
    assert_eq!(next["failed"], 0, "{next:#}");
    assert_eq!(challenge_records(client, &[io, dev]).await, 0);
}

/// Ctrl-C during `tls issue --force` names, read back from the store,
/// the certificates it leaves: here none new, every one from before kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_forced_issue_names_the_certificates_left_stored() {
    let setup = issuing().await;
    let (site, proxy) = (&setup.site, &setup.proxy);
    let issued = site.json(&["tls", "issue", "dev", "-o", "json"], 0);
    let secrets: Vec<(String, String)> = issued["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap().to_string();
            (field("secret"), field("host"))
        })
        .collect();
    assert!(!secrets.is_empty(), "{issued:#}");

    proxy.faults.pending.store(usize::MAX / 2, Ordering::SeqCst);
    let child = waiting(site, proxy, &["tls", "issue", "dev", "--force"]).await;
    signal(&child, "-INT");
    let interrupted = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    proxy.faults.pending.store(0, Ordering::SeqCst);
    let text = stderr(&interrupted);
    assert_eq!(interrupted.status.code(), Some(3), "{text}");
    assert!(
        text.contains("interrupted (Ctrl-C)")
            && text.contains("no certificate was stored by this run")
            && text.contains("stored before and still in use, unchanged: "),
        "{text}"
    );
    for (secret, host) in &secrets {
        assert!(text.contains(&format!("{secret} ({host})")), "{text}");
    }
    assert!(!text.contains("still without a certificate"), "{text}");
}

#[test]
fn the_local_environment_gets_self_signed_certificates() {
    // local's tls.mode is self-signed: no ACME, no network.
    let site = Site::new(25433);
    let before = site.json(&["tls", "status", "local", "-o", "json"], 1);
    let hosts: Vec<(String, String)> = before["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            assert_eq!(h["health"], "missing", "{h}");
            let name = |k: &str| h[k].as_str().unwrap().to_string();
            (name("host"), name("secret"))
        })
        .collect();
    assert!(hosts.len() >= 2, "{before:#}");

    let issued = site.json(&["tls", "issue", "local", "-o", "json"], 0);
    assert_eq!(issued["directory"], "self-signed");
    assert_eq!(issued["failed"], 0);
    assert_eq!(issued["results"].as_array().unwrap().len(), hosts.len());
    let status = site.json(&["tls", "status", "local", "-o", "json"], 0);
    for (name, secret) in &hosts {
        let found = host(&status, "hosts", name);
        assert_eq!(found["health"], "ok", "{found}");
        assert_eq!(found["certificate"]["names"], serde_json::json!([name]));
        let issuer = found["certificate"]["issuer"].as_str().unwrap();
        assert!(issuer.contains("kisumctl self-signed"), "{issuer}");
        assert!(found["days_left"].as_i64().unwrap() >= 89, "{found}");
        let key = site.secrets_dir().join(secret).join("tls.key");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
    let text = site.expect(&["tls", "status", "local"], 0);
    assert!(
        stdout(&text).contains("kisumctl self-signed"),
        "{}",
        stdout(&text)
    );

    // Nothing is due again until the renewal window; --force remakes them.
    let again = site.expect(&["tls", "issue", "local"], 0);
    assert!(
        stdout(&again).contains("nothing to issue"),
        "{}",
        stdout(&again)
    );
    let renew = site.json(&["tls", "renew", "local", "-o", "json"], 0);
    assert!(renew["due"].as_array().unwrap().is_empty(), "{renew:#}");
    let (first, secret) = &hosts[0];
    let old = site.read_secret(secret, "tls.crt");
    let forced = site.expect(&["tls", "issue", "local", "--host", first, "--force"], 0);
    assert_ne!(site.read_secret(secret, "tls.crt"), old);
    assert!(stdout(&forced).contains("issued"), "{}", stdout(&forced));

    // One issue per environment at a time: a held lock refuses at once.
    let forced_cert = site.read_secret(secret, "tls.crt");
    let lock = std::fs::File::create(site.root().join(".kisum/local/tls.lock")).unwrap();
    lock.try_lock().unwrap();
    let held = site.expect(&["tls", "issue", "local", "--force"], 3);
    assert!(
        stderr(&held).contains("another kisumctl tls issue local is running"),
        "{}",
        stderr(&held)
    );
    assert_eq!(site.read_secret(secret, "tls.crt"), forced_cert);
    drop(lock);

    // Two forced runs at once: one may be refused, and whatever is stored
    // is a certificate with its own key.
    let codes: Vec<Option<i32>> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| site.run(&["tls", "issue", "local", "--force"])))
            .collect();
        runs.into_iter()
            .map(|run| run.join().unwrap().status.code())
            .collect()
    });
    assert!(codes.contains(&Some(0)), "{codes:?}");
    assert!(codes.iter().all(|c| matches!(c, Some(0 | 3))), "{codes:?}");
    site.expect(&["tls", "status", "local"], 0);
    no_private_key(&[&text, &again, &forced, &held]);
}

#[test]
fn the_certificate_expiry_runbook_proves_a_short_lived_certificate_and_names_renew() {
    let site = Site::dev("http://127.0.0.1:9");
    for (host, secret) in HOSTS {
        plant(&site, host, secret, 60);
    }
    let args = ["runbook", "run", "certificate-expiry", "dev", "-o", "json"];
    let healthy = site.json(&args, 0);
    let finding = &healthy["findings"][0];
    assert_eq!(finding["check"], "certificate-expiry", "{healthy:#}");
    assert_eq!(finding["verdict"], "ok", "{healthy:#}");
    assert_eq!(finding["evidence"].as_array().unwrap().len(), HOSTS.len());
    assert_eq!(healthy["cause"], Value::Null);

    // A certificate with 3 days left: inside the 14-day alert threshold.
    plant(&site, "auth-dev.kisum.io", "tls-auth", 3);
    let expiring = site.json(&args, 1);
    let cause = &expiring["cause"];
    assert_eq!(cause["check"], "certificate-expiry", "{expiring:#}");
    assert_eq!(
        cause["summary"],
        "the certificate of auth-dev.kisum.io expires within 14 days (or has expired)"
    );
    assert_eq!(cause["fix"], "kisumctl tls renew dev");
    let evidence: Vec<&str> = cause["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        evidence
            .iter()
            .any(|e| e.starts_with("auth-dev.kisum.io: alert: expires ")
                && e.ends_with(", 3 days left")),
        "{evidence:?}"
    );
    let text = site.expect(&["runbook", "run", "certificate-expiry", "dev"], 1);
    assert!(stdout(&text).contains("CAUSE"), "{}", stdout(&text));
    no_private_key(&[&text]);

    // Renewed, but another host has no certificate: issue, not renew.
    plant(&site, "auth-dev.kisum.io", "tls-auth", 60);
    std::fs::remove_dir_all(secrets(&site).join("tls-app")).unwrap();
    let missing = site.json(&args, 1);
    assert_eq!(
        missing["cause"]["fix"], "kisumctl tls issue dev",
        "{missing:#}"
    );
    assert_eq!(
        missing["cause"]["summary"],
        "no usable certificate for app-dev.kisum.io"
    );
}
