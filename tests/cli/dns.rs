//! `kisumctl dns` against moto's Route53, behind a loopback proxy that
//! can throttle and refuse: ownership and conflicts, more than 100
//! records (pagination, batching), a refused batch split record by
//! record, throttling retried, the TTL cutover and its restore.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;

use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};
use serde_json::Value;

use crate::common::{scratch_copy, stderr, stdout};

/// A scratch matrix whose `dev` environment reaches Route53 at `endpoint`
/// and keeps its secrets in local files; nothing points at a real ACME
/// directory or AWS.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl Site {
    pub fn new(endpoint: &str) -> Site {
        let site = Site {
            dir: scratch_copy(),
            env: crate::moto::offline_aws_env(),
        };
        site.edit("environments/dev.yaml", |t| {
            t.replace(
                "  managed: true\n",
                &format!("  managed: true\n  endpoint: {endpoint}\n"),
            )
            .replace(
                "  backend: aws-secrets-manager\n  account: \"123456789012\"\n  region: eu-west-1\n  prefix: kisum/dev/\n",
                "  backend: local-files\n  path: .kisum/dev/secrets\n",
            )
        });
        // No ACME directory outside this machine, even by mistake.
        site.edit("environments/base.yaml", |t| {
            t.replace(
                "https://acme-v02.api.letsencrypt.org/directory",
                "https://127.0.0.1:9/directory",
            )
        });
        site
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn edit(&self, file: &str, change: impl FnOnce(&str) -> String) {
        let path = self.root().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let changed = change(&text);
        assert_ne!(changed, text, "{file} did not change");
        std::fs::write(&path, changed).unwrap();
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kisumctl"));
        command
            .args(args)
            .current_dir(self.root())
            .env_remove("KISUM_MATRIX")
            .env_remove("KISUM_ACME_DIRECTORY")
            .env_remove("KISUM_ACME_CA_ROOT")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL_ROUTE_53")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command.output().expect("kisumctl runs")
    }

    /// Runs and asserts the exit code, printing both streams on failure.
    pub fn expect(&self, args: &[&str], code: i32) -> Output {
        crate::common::assert_exit(args, self.run(args), code)
    }

    pub fn json(&self, args: &[&str], code: i32) -> Value {
        let output = self.expect(args, code);
        serde_json::from_slice(&output.stdout).expect("a JSON document")
    }
}

/// The SDK straight at moto (fixed dummy credentials), for setting up
/// zones and looking at what kisumctl wrote.
pub fn route53(endpoint: &str) -> aws_sdk_route53::Client {
    let config = aws_sdk_route53::config::Builder::new()
        .behavior_version(aws_sdk_route53::config::BehaviorVersion::latest())
        .region(aws_sdk_route53::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_route53::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_route53::Client::from_conf(config)
}

/// Creates the public zones of the matrix; their ids by domain.
pub async fn create_zones(client: &aws_sdk_route53::Client) -> (String, String) {
    let mut ids = Vec::new();
    for domain in ["kisum.io", "kisum.dev"] {
        let zone = client
            .create_hosted_zone()
            .name(domain)
            .caller_reference(format!("test-{domain}"))
            .send()
            .await
            .unwrap();
        let id = zone
            .hosted_zone()
            .unwrap()
            .id()
            .trim_start_matches("/hostedzone/");
        ids.push(id.to_string());
    }
    (ids[0].clone(), ids[1].clone())
}

pub fn rrset(name: &str, rtype: RrType, ttl: i64, values: &[&str]) -> ResourceRecordSet {
    let mut set = ResourceRecordSet::builder()
        .name(name)
        .r#type(rtype)
        .ttl(ttl);
    for value in values {
        set = set.resource_records(ResourceRecord::builder().value(*value).build().unwrap());
    }
    set.build().unwrap()
}

pub async fn create(client: &aws_sdk_route53::Client, zone: &str, sets: Vec<ResourceRecordSet>) {
    let changes = sets
        .into_iter()
        .map(|set| {
            Change::builder()
                .action(ChangeAction::Create)
                .resource_record_set(set)
                .build()
                .unwrap()
        })
        .collect();
    let batch = ChangeBatch::builder()
        .set_changes(Some(changes))
        .build()
        .unwrap();
    client
        .change_resource_record_sets()
        .hosted_zone_id(zone)
        .change_batch(batch)
        .send()
        .await
        .unwrap();
}

/// Every record set of a zone: (name without the dot, type) -> (ttl, values).
pub async fn records(
    client: &aws_sdk_route53::Client,
    zone: &str,
) -> std::collections::BTreeMap<(String, String), (Option<i64>, Vec<String>)> {
    let mut out = std::collections::BTreeMap::new();
    let mut start: Option<(String, RrType)> = None;
    loop {
        let mut request = client.list_resource_record_sets().hosted_zone_id(zone);
        if let Some((name, rtype)) = start.take() {
            request = request.start_record_name(name).start_record_type(rtype);
        }
        let page = request.send().await.unwrap();
        for set in page.resource_record_sets() {
            let values = set
                .resource_records()
                .iter()
                .map(|r| r.value().to_string())
                .collect();
            let name = set.name().trim_end_matches('.').to_string();
            out.insert(
                (name, set.r#type().as_str().to_string()),
                (set.ttl(), values),
            );
        }
        if !page.is_truncated() {
            return out;
        }
        start = Some((
            page.next_record_name().unwrap().to_string(),
            page.next_record_type().unwrap().clone(),
        ));
    }
}

/// `count` more frontends `fe000.kisum.io`, ... in the scratch base file.
fn add_frontends(site: &Site, count: usize) {
    site.edit("environments/base.yaml", |t| {
        let mut extra = String::from("frontends:\n");
        for n in 0..count {
            extra += &format!(
                "  fe{n:03}:\n    title: Frontend {n}\n    host: fe{n:03}.kisum.io\n    zone: kisum-io\n    content-security-policy: \"default-src 'self'\"\n    calls: [auth]\n"
            );
        }
        t.replacen("frontends:\n", &extra, 1)
    });
}

fn summary(plan: &Value, action: &str) -> u64 {
    plan["summary"][action].as_u64().unwrap()
}

fn line<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {plan:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_apply_owns_its_records_and_nothing_else() {
    let moto = crate::moto::start().await;
    let proxy = crate::proxy::start(&moto.url(), None).await;
    let client = route53(&moto.url());
    let (io, dev) = create_zones(&client).await;
    // Someone else's records: one without an ownership marker, one owned
    // by production, and 250 more so that every listing takes pages.
    let mut foreign = vec![
        rrset(
            "app-dev.kisum.io",
            RrType::Cname,
            60,
            &["elsewhere.example"],
        ),
        rrset(
            "admin-dev.kisum.io",
            RrType::Cname,
            60,
            &["prod-lb.example"],
        ),
        rrset(
            "_kisumctl-cname.admin-dev.kisum.io",
            RrType::Txt,
            300,
            &[
                "\"heritage=kisumctl,kisumctl/owner=kisum-production,kisumctl/resource=frontend/admin\"",
            ],
        ),
    ];
    foreign.extend((0..250).map(|n| {
        rrset(
            &format!("filler-{n}.kisum.io"),
            RrType::A,
            300,
            &["192.0.2.1"],
        )
    }));
    create(&client, &io, foreign).await;

    let site = Site::new(&proxy.url());
    add_frontends(&site, 120);

    let plan = site.json(&["dns", "plan", "dev", "-o", "json"], 1);
    assert_eq!(summary(&plan, "create"), 128, "{plan:#}");
    assert_eq!(summary(&plan, "conflict"), 2);
    let app = line(&plan, "app-dev.kisum.io");
    assert_eq!(app["action"], "conflict");
    assert!(
        app["reason"]
            .as_str()
            .unwrap()
            .contains("without an ownership record")
    );
    let admin = line(&plan, "admin-dev.kisum.io");
    assert!(
        admin["reason"]
            .as_str()
            .unwrap()
            .contains("kisum-production")
    );
    let text = stdout(&site.expect(&["dns", "plan", "dev"], 1));
    assert!(
        text.contains("conflict") && text.contains("app-dev.kisum.io"),
        "{text}"
    );

    let applied = site.json(&["dns", "apply", "dev", "-o", "json"], 1);
    assert_eq!(applied["failed"], 0, "{applied:#}");
    let zone_io = records(&client, &io).await;
    let zone_dev = records(&client, &dev).await;
    let key = |name: &str, t: &str| (name.to_string(), t.to_string());
    assert_eq!(
        zone_io[&key("auth-dev.kisum.io", "CNAME")],
        (Some(300), vec!["ingress.dev.kisum.io".to_string()])
    );
    assert!(
        zone_io[&key("_kisumctl-cname.fe119-dev.kisum.io", "TXT")].1[0]
            .contains("kisumctl/owner=kisum-dev")
    );
    assert!(zone_dev.contains_key(&key("api-v2-finance-dev.kisum.dev", "CNAME")));
    assert_eq!(
        zone_io[&key("app-dev.kisum.io", "CNAME")].1,
        ["elsewhere.example"],
        "untouched"
    );
    assert_eq!(
        zone_io[&key("admin-dev.kisum.io", "CNAME")].1,
        ["prod-lb.example"],
        "untouched"
    );

    let again = site.json(&["dns", "plan", "dev", "-o", "json"], 1);
    assert_eq!(summary(&again, "create"), 0);
    assert_eq!(summary(&again, "unchanged"), 128);

    // A new ingress and 20 frontends fewer; someone "creates" fe050 while
    // the batch is on its way: only fe050 fails, the rest goes through.
    site.edit("environments/dev.yaml", |t| {
        t.replace(
            "ingress-target: ingress.dev.kisum.io",
            "ingress-target: lb2.dev.kisum.io",
        )
    });
    site.edit("environments/base.yaml", |t| {
        let cut = t.find("  fe100:\n").unwrap();
        let end = t.find("  app:\n").unwrap();
        format!("{}{}", &t[..cut], &t[end..])
    });
    *proxy.faults.refuse_containing.lock().unwrap() = Some("fe050-dev.kisum.io".into());
    let applied = site.json(&["dns", "apply", "dev", "-o", "json"], 3);
    assert_eq!(summary(&applied, "update"), 108);
    assert_eq!(summary(&applied, "delete"), 20);
    assert_eq!(applied["failed"], 1, "{applied:#}");
    let fe050 = line(&applied, "fe050-dev.kisum.io");
    assert_eq!(fe050["outcome"]["status"], "failed");
    assert!(
        proxy.counts.refused.load(Ordering::SeqCst) >= 2,
        "the batch, then fe050 alone"
    );
    let zone_io = records(&client, &io).await;
    assert_eq!(
        zone_io[&key("fe049-dev.kisum.io", "CNAME")].1,
        ["lb2.dev.kisum.io"]
    );
    assert_eq!(
        zone_io[&key("fe050-dev.kisum.io", "CNAME")].1,
        ["ingress.dev.kisum.io"]
    );
    assert!(!zone_io.contains_key(&key("fe100-dev.kisum.io", "CNAME")));
    assert!(!zone_io.contains_key(&key("_kisumctl-cname.fe100-dev.kisum.io", "TXT")));
    assert!(
        zone_io.contains_key(&key("filler-249.kisum.io", "A")),
        "untouched"
    );

    *proxy.faults.refuse_containing.lock().unwrap() = None;
    let applied = site.json(&["dns", "apply", "dev", "-o", "json"], 1);
    assert_eq!(summary(&applied, "update"), 1);
    assert_eq!(applied["failed"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_retries_throttling_and_cuts_ttls_over_and_back() {
    let moto = crate::moto::start().await;
    let proxy = crate::proxy::start(&moto.url(), None).await;
    let client = route53(&moto.url());
    let (io, _) = create_zones(&client).await;
    let site = Site::new(&proxy.url());

    // Three throttled answers in a row are retried with backoff.
    proxy.faults.throttle.store(3, Ordering::SeqCst);
    let applied = site.json(&["dns", "apply", "dev", "-o", "json"], 0);
    assert_eq!(summary(&applied, "create"), 10, "{applied:#}");
    assert_eq!(proxy.counts.throttled.load(Ordering::SeqCst), 3);

    let output = site.expect(&["dns", "cutover", "dev", "--lower-ttl"], 0);
    assert!(
        stderr(&output).contains("in effect everywhere after"),
        "{}",
        stderr(&output)
    );
    let zone = records(&client, &io).await;
    let key = |name: &str, t: &str| (name.to_string(), t.to_string());
    assert_eq!(zone[&key("auth-dev.kisum.io", "CNAME")].0, Some(60));
    let marker = &zone[&key("_kisumctl-cname.auth-dev.kisum.io", "TXT")].1[0];
    assert!(marker.contains("kisumctl/original-ttl=300"), "{marker}");
    // An apply during the cutover keeps the lowered TTLs.
    let plan = site.json(&["dns", "plan", "dev", "-o", "json"], 0);
    assert_eq!(summary(&plan, "unchanged"), 10, "{plan:#}");
    let again = site.json(&["dns", "cutover", "dev", "--lower-ttl", "-o", "json"], 0);
    assert_eq!(summary(&again, "update"), 0);

    site.expect(&["dns", "cutover", "dev", "--restore"], 0);
    let zone = records(&client, &io).await;
    assert_eq!(zone[&key("auth-dev.kisum.io", "CNAME")].0, Some(300));
    let marker = &zone[&key("_kisumctl-cname.auth-dev.kisum.io", "TXT")].1[0];
    assert!(!marker.contains("original-ttl"), "{marker}");

    // Throttled past every attempt: a bounded failure, exit 3.
    proxy.faults.throttle.store(1000, Ordering::SeqCst);
    let before = proxy.counts.throttled.load(Ordering::SeqCst);
    let mut site = site;
    site.env.push(("AWS_MAX_ATTEMPTS".into(), "3".into()));
    let output = site.expect(&["dns", "plan", "dev"], 3);
    assert!(
        stderr(&output).contains("Throttling"),
        "{}",
        stderr(&output)
    );
    assert_eq!(proxy.counts.throttled.load(Ordering::SeqCst) - before, 3);
    proxy.faults.throttle.store(0, Ordering::SeqCst);

    // Where DNS is not managed, nothing is read or written.
    let output = site.expect(&["dns", "plan", "local"], 2);
    assert!(stderr(&output).contains("dns.managed is false"));
}
