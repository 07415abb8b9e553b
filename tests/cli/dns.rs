//! `kisumctl dns` against moto's Route53, behind a loopback proxy that
//! can throttle, refuse and hold changes PENDING: ownership and
//! conflicts, more than 100 records (pagination, batching), a refused
//! batch split record by record, throttling retried, the INSYNC wait and
//! its timeout, alias, fixed-address and private-zone records, the TTL
//! cutover and its restore.

use std::sync::atomic::Ordering;

use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};
use serde_json::Value;

use crate::common::{Moto, stderr, stdout};
use crate::site::Site;

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
    change(client, zone, ChangeAction::Create, sets).await;
}

async fn change(
    client: &aws_sdk_route53::Client,
    zone: &str,
    action: ChangeAction,
    sets: Vec<ResourceRecordSet>,
) {
    let changes = sets
        .into_iter()
        .map(|set| {
            Change::builder()
                .action(action.clone())
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
    let moto = Moto::start().await;
    let proxy = crate::proxy::start(&moto.endpoint(), None).await;
    let client = route53(&moto.endpoint());
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

    let site = Site::dev(&proxy.url());
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

/// moto with the matrix's public zones, the fault-injecting proxy in
/// front of it, a client straight at moto, the ids of zones `kisum.io` and
/// `kisum.dev`, and a `dev` site that reaches Route53 through the proxy.
async fn dev_behind_proxy() -> (
    Moto,
    crate::proxy::Proxy,
    aws_sdk_route53::Client,
    (String, String),
    Site,
) {
    let moto = Moto::start().await;
    let proxy = crate::proxy::start(&moto.endpoint(), None).await;
    let client = route53(&moto.endpoint());
    let zones = create_zones(&client).await;
    let site = Site::dev(&proxy.url());
    (moto, proxy, client, zones, site)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_retries_throttling_and_cuts_ttls_over_and_back() {
    let (_moto, proxy, client, (io, _), site) = dev_behind_proxy().await;

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
    // Apply and the three cutovers are journaled; plans are not.
    let ok = |command: &str| (command.to_string(), "ok".to_string(), 0);
    assert_eq!(
        site.journal("dev"),
        [
            ok("dns apply"),
            ok("dns cutover"),
            ok("dns cutover"),
            ok("dns cutover")
        ]
    );

    // Throttled past every attempt: a bounded failure, exit 3.
    proxy.faults.throttle.store(1000, Ordering::SeqCst);
    let before = proxy.counts.throttled.load(Ordering::SeqCst);
    let mut site = site;
    site.env.push(("AWS_MAX_ATTEMPTS".into(), "3".into()));
    let output = site.expect(&["dns", "plan", "dev"], 3);
    assert!(
        stderr(&output).contains("Throttling")
            && stderr(&output).contains("still throttled after 3 attempts with backoff"),
        "{}",
        stderr(&output)
    );
    assert_eq!(proxy.counts.throttled.load(Ordering::SeqCst) - before, 3);
    proxy.faults.throttle.store(0, Ordering::SeqCst);

    // Where DNS is not managed, nothing is read or written.
    let output = site.expect(&["dns", "plan", "local"], 2);
    assert!(stderr(&output).contains("dns.managed is false"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_apply_waits_for_insync_and_says_when_it_never_comes() {
    let (_moto, proxy, client, (io, dev), site) = dev_behind_proxy().await;

    // PENDING three times, then INSYNC: apply polls (0.5 s, 1 s, 2 s apart)
    // and succeeds.
    proxy.faults.pending.store(3, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let applied = site.json(&["dns", "apply", "dev", "-o", "json"], 0);
    assert_eq!(summary(&applied, "create"), 10, "{applied:#}");
    assert_eq!(proxy.counts.pending.load(Ordering::SeqCst), 3);
    assert!(proxy.counts.get_change.load(Ordering::SeqCst) >= 4);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(3500),
        "it waited: {:?}",
        started.elapsed()
    );

    // A change that stays PENDING past --wait-timeout: exit 3, naming the
    // change, its status and what to do; the records were accepted.
    site.edit("environments/dev.yaml", |t| {
        t.replace(
            "ingress-target: ingress.dev.kisum.io",
            "ingress-target: lb2.dev.kisum.io",
        )
    });
    proxy.faults.pending.store(1000, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let output = site.expect(&["dns", "apply", "dev", "--wait-timeout", "2"], 3);
    let message = stderr(&output);
    for part in [
        "error: change",
        "is still PENDING after 2 s",
        "dns apply` again",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // Every zone's records were sent before the wait.
    for (zone, name) in [(&io, "auth-dev.kisum.io"), (&dev, "api-v2-dev.kisum.dev")] {
        let zone = records(&client, zone).await;
        assert_eq!(
            zone[&(name.to_string(), "CNAME".to_string())].1,
            ["lb2.dev.kisum.io"],
            "{name}"
        );
    }

    // Once Route53 catches up, the next apply finds nothing to change.
    proxy.faults.pending.store(0, Ordering::SeqCst);
    let again = site.json(&["dns", "apply", "dev", "-o", "json"], 0);
    assert_eq!(summary(&again, "unchanged"), 10, "{again:#}");
}

/// The alias target (DNS name, hosted zone) of a record set, if it is one.
async fn alias_of(
    client: &aws_sdk_route53::Client,
    zone: &str,
    name: &str,
    rtype: RrType,
) -> Option<(String, String)> {
    let page = client
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .start_record_name(name)
        .start_record_type(rtype.clone())
        .max_items(1)
        .send()
        .await
        .unwrap();
    let set = page.resource_record_sets().first()?;
    if set.name().trim_end_matches('.') != name || set.r#type() != &rtype {
        return None;
    }
    let alias = set.alias_target()?;
    Some((
        alias.dns_name().trim_end_matches('.').to_string(),
        alias.hosted_zone_id().to_string(),
    ))
}

/// Replaces `from` with `to` in dev.yaml, plans and applies; answers the
/// plan. Both exit 1: app's foreign record stays a conflict throughout.
fn edit_and_apply(site: &Site, from: &str, to: &str) -> Value {
    site.edit("environments/dev.yaml", |t| t.replace(from, to));
    let plan = site.json(&["dns", "plan", "dev", "-o", "json"], 1);
    site.expect(&["dns", "apply", "dev"], 1);
    plan
}

/// How many records a plan would create, update or delete.
fn changes(plan: &Value) -> u64 {
    ["create", "update", "delete"]
        .iter()
        .map(|a| summary(plan, a))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_fixed_address_and_private_zone_records() {
    let moto = Moto::start().await;
    let client = route53(&moto.endpoint());
    let (io, _) = create_zones(&client).await;
    // Someone else's A record where app's would go: never touched.
    create(
        &client,
        &io,
        vec![rrset("app-dev.kisum.io", RrType::A, 60, &["198.51.100.7"])],
    )
    .await;
    let site = Site::dev(&moto.endpoint());
    let key = |name: &str, t: &str| (name.to_string(), t.to_string());
    let hosts = [
        "auth-dev.kisum.io",
        "admin-dev.kisum.io",
        "admin-api-dev.kisum.io",
    ];

    // Alias A and AAAA records to the load balancer.
    let plan = edit_and_apply(
        &site,
        "  ingress-target: ingress.dev.kisum.io\n",
        "  ingress-target: ingress.dev.kisum.io\n  ingress-alias: { hosted-zone-id: Z2LBZONE000001 }\n",
    );
    assert_eq!(summary(&plan, "conflict"), 1, "{plan:#}");
    for host in hosts {
        for rtype in [RrType::A, RrType::Aaaa] {
            assert_eq!(
                alias_of(&client, &io, host, rtype.clone()).await,
                Some(("ingress.dev.kisum.io".into(), "Z2LBZONE000001".into())),
                "{host} {rtype:?}"
            );
        }
    }
    let zone = records(&client, &io).await;
    for marker in [
        "_kisumctl-a.auth-dev.kisum.io",
        "_kisumctl-aaaa.auth-dev.kisum.io",
    ] {
        assert!(
            zone[&key(marker, "TXT")].1[0].contains("kisumctl/owner=kisum-dev"),
            "{marker}"
        );
    }
    assert!(!zone.contains_key(&key("auth-dev.kisum.io", "CNAME")));
    let again = site.json(&["dns", "plan", "dev", "-o", "json"], 1);
    assert_eq!(changes(&again), 0, "idempotent: {again:#}");
    assert_eq!(summary(&again, "conflict"), 1);

    // Fixed addresses instead: the same names become plain A and AAAA.
    let plan = edit_and_apply(
        &site,
        "  ingress-alias: { hosted-zone-id: Z2LBZONE000001 }\n",
        "  ingress-addresses: [192.0.2.10, \"2001:db8::10\"]\n",
    );
    assert!(
        summary(&plan, "update") >= 2 * hosts.len() as u64,
        "{plan:#}"
    );
    let zone = records(&client, &io).await;
    for host in hosts {
        assert_eq!(
            zone[&key(host, "A")],
            (Some(300), vec!["192.0.2.10".to_string()])
        );
        assert_eq!(
            zone[&key(host, "AAAA")],
            (Some(300), vec!["2001:db8::10".to_string()])
        );
        assert_eq!(alias_of(&client, &io, host, RrType::A).await, None);
    }
    let again = site.json(&["dns", "plan", "dev", "-o", "json"], 1);
    assert_eq!(changes(&again), 0, "idempotent: {again:#}");
    assert_eq!(
        zone[&key("app-dev.kisum.io", "A")].1,
        ["198.51.100.7"],
        "the foreign record is untouched"
    );

    // Internal names in the private zone of the same domain, never in the
    // public one.
    let private = client
        .create_hosted_zone()
        .name("kisum.io")
        .caller_reference("test-private-kisum.io")
        .hosted_zone_config(
            aws_sdk_route53::types::HostedZoneConfig::builder()
                .private_zone(true)
                .build(),
        )
        .vpc(
            aws_sdk_route53::types::Vpc::builder()
                .vpc_id("vpc-0test")
                .vpc_region(aws_sdk_route53::types::VpcRegion::EuWest1)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let private = private
        .hosted_zone()
        .unwrap()
        .id()
        .trim_start_matches("/hostedzone/")
        .to_string();
    let plan = edit_and_apply(
        &site,
        "  managed: true\n",
        "  managed: true\n  internal-target: internal-lb.dev.kisum.internal\n",
    );
    assert_eq!(summary(&plan, "create"), 1, "{plan:#}");
    let inside = records(&client, &private).await;
    assert_eq!(
        inside[&key("core-dev.kisum.io", "CNAME")],
        (
            Some(300),
            vec!["internal-lb.dev.kisum.internal".to_string()]
        )
    );
    assert!(
        inside[&key("_kisumctl-cname.core-dev.kisum.io", "TXT")].1[0]
            .contains("kisumctl/owner=kisum-dev")
    );
    let public = records(&client, &io).await;
    assert!(!public.contains_key(&key("core-dev.kisum.io", "CNAME")));
    let again = site.json(&["dns", "plan", "dev", "-o", "json"], 1);
    assert_eq!(changes(&again), 0, "idempotent: {again:#}");

    // A private record kisumctl does not own is a conflict there too.
    site.edit("environments/dev.yaml", |t| {
        t.replace(
            "internal-lb.dev.kisum.internal",
            "internal-lb2.dev.kisum.internal",
        )
    });
    change(
        &client,
        &private,
        ChangeAction::Upsert,
        vec![rrset(
            "_kisumctl-cname.core-dev.kisum.io",
            RrType::Txt,
            300,
            &["\"heritage=kisumctl,kisumctl/owner=kisum-staging,kisumctl/resource=service/platform-core\""],
        )],
    )
    .await;
    let plan = site.json(&["dns", "plan", "dev", "-o", "json"], 1);
    assert_eq!(summary(&plan, "conflict"), 2, "{plan:#}");
    assert_eq!(summary(&plan, "update"), 0, "{plan:#}");
    site.expect(&["dns", "apply", "dev"], 1);
    let inside = records(&client, &private).await;
    assert_eq!(
        inside[&key("core-dev.kisum.io", "CNAME")].1,
        ["internal-lb.dev.kisum.internal"],
        "another owner's record is left alone"
    );
}
