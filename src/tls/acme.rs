//! Certificates from an ACME directory with instant-acme.
//!
//! One order per host (each host has its own Kubernetes TLS secret). The
//! orders of a run are opened together, every DNS-01 TXT record is written
//! to Route53 before any is waited for (an INSYNC wait takes up to a
//! minute on AWS), then each order is validated, finalized with a fresh
//! ECDSA P-256 key, and stored. Challenge records are removed afterwards
//! whatever happened, leaving any other value at the same name alone.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, Key, NewOrder, Order, OrderStatus,
    RetryPolicy,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Serialize;

use super::{ACCOUNT_KEY, ACCOUNT_SECRET, TlsHost};
use crate::dns::plan::{Change, ChangeAction};
use crate::dns::records::{RecordSet, RecordType};
use crate::dns::route53::{ChangeError, Route53};
use crate::matrix::Environment;
use crate::matrix::schema::AcmeChallenge;
use crate::secrets::{Secret, SecretStore};

/// TTL of the challenge TXT records.
const CHALLENGE_TTL: u32 = 60;

/// Where and how certificates are obtained.
#[derive(Debug, Clone)]
pub struct Settings {
    pub directory: String,
    /// PEM file of the CA to trust for the directory's HTTPS, instead of
    /// the system's roots.
    pub ca_root: Option<PathBuf>,
    pub challenge: AcmeChallenge,
    pub http01_listen: Option<SocketAddr>,
    /// How long one order may take to become ready, and its certificate.
    pub timeout: Duration,
    /// The environment's state directory: `tls-challenges.json` there
    /// lists every challenge record before it is written, until removed.
    pub state_dir: PathBuf,
}

/// The file listing the DNS-01 challenge records a run is about to write
/// and has not removed yet: what a killed run left is removed by the next.
const LEDGER: &str = "tls-challenges.json";

/// `issue` stopped by SIGINT (Ctrl-C): the challenge records it wrote are
/// removed, and no certificate of an unfinished order is stored.
#[derive(Debug, thiserror::Error)]
#[error("interrupted (Ctrl-C): the ACME orders were abandoned, {0}")]
pub struct Interrupted(String);

/// What happened to one host.
#[derive(Debug, Clone, Serialize)]
pub struct Issued {
    #[serde(flatten)]
    pub host: TlsHost,
    #[serde(flatten)]
    pub outcome: IssueOutcome,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum IssueOutcome {
    Issued {
        expires: String,
    },
    Failed {
        error: String,
    },
    /// Not attempted: a record at the host's name (or its challenge name)
    /// has a DNS ownership conflict, and kisumctl writes nothing there.
    Refused {
        reason: String,
    },
}

/// The environment's ACME account: its key comes from the secret store
/// (created there on first use); the account is found or registered by it.
async fn account(store: &dyn SecretStore, settings: &Settings) -> Result<Account> {
    let pem = match store.read(ACCOUNT_SECRET, ACCOUNT_KEY)? {
        Some(pem) => pem,
        None => {
            let key = rcgen::KeyPair::generate().context("generating the ACME account key")?;
            let pem = Secret::new(key.serialize_pem());
            store.write(ACCOUNT_SECRET, ACCOUNT_KEY, &pem)?;
            pem
        }
    };
    let key = rcgen::KeyPair::from_pem(pem.expose())
        .map_err(|_| anyhow!("secret {ACCOUNT_SECRET}/{ACCOUNT_KEY} is not a PEM private key"))?;
    let der = PrivatePkcs8KeyDer::from(key.serialize_der());
    let signing = Key::from_pkcs8_der(der.clone_key()).map_err(|e| {
        anyhow!("secret {ACCOUNT_SECRET}/{ACCOUNT_KEY} is not an ECDSA P-256 key: {e}")
    })?;
    let builder = match &settings.ca_root {
        Some(root) => Account::builder_with_root(root)
            .with_context(|| format!("trusting the CA of {}", root.display()))?,
        None => Account::builder()?,
    };
    let (account, _) = builder
        .create_from_key(
            (signing, PrivateKeyDer::Pkcs8(der)),
            settings.directory.clone(),
        )
        .await
        .with_context(|| format!("registering the ACME account at {}", settings.directory))?;
    Ok(account)
}

/// A challenge answer to publish.
struct Answer {
    host: usize,
    /// DNS-01: the TXT record name; HTTP-01: the token.
    name: String,
    value: String,
}

/// A published TXT value, to withdraw afterwards.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
struct Published {
    hosted_zone: String,
    name: String,
    value: String,
}

/// Issues a certificate for each of `hosts` and stores it. An error of one
/// host is reported in its `Issued`; an `Err` is a failure before any
/// order (the account, the secret store).
pub async fn issue(
    env: &Environment<'_>,
    store: &dyn SecretStore,
    settings: &Settings,
    hosts: &[TlsHost],
) -> Result<Vec<Issued>> {
    // What a killed run left behind, whether or not anything is due.
    remove_leftovers(env, &settings.state_dir).await?;
    if hosts.is_empty() {
        return Ok(vec![]);
    }
    let ledger = settings.state_dir.join(LEDGER);
    let before = certificates(store, hosts);
    // Ctrl-C from here on abandons the orders and removes what they wrote.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("listening for Ctrl-C")?;
    tokio::select! {
        result = issue_orders(env, store, settings, hosts, &ledger) => result,
        _ = sigint.recv() => {
            let left = recorded(&ledger)?;
            let removed = if left.is_empty() {
                Vec::new()
            } else {
                let r53 = crate::dns::connect(env).await;
                withdraw(&r53, &left).await
            };
            forget(&ledger, &removed)?;
            let note = match left.len() - removed.len() {
                0 => format!("{} challenge record(s) removed", removed.len()),
                kept => format!(
                    "{} challenge record(s) removed, {kept} could not be (listed in {}; the \
                     next `tls issue` or `tls renew` removes them)",
                    removed.len(),
                    ledger.display()
                ),
            };
            let stored = stored_note(hosts, &before, &certificates(store, hosts));
            Err(Interrupted(format!("{note}; {stored}")).into())
        }
    }
}

/// The certificate each host has in the store now (`None`: none, or it
/// cannot be read).
fn certificates(store: &dyn SecretStore, hosts: &[TlsHost]) -> Vec<Option<String>> {
    hosts
        .iter()
        .map(|host| {
            store
                .read(&host.secret, super::CERT_KEY)
                .ok()
                .flatten()
                .map(|cert| cert.expose().to_string())
        })
        .collect()
}

/// Which certificates a stopped run left stored, read back from the
/// store: those it stored, those kept from before (still served), and the
/// hosts that have none.
fn stored_note(hosts: &[TlsHost], before: &[Option<String>], after: &[Option<String>]) -> String {
    let named = |pick: &dyn Fn(&Option<String>, &Option<String>) -> bool| {
        hosts
            .iter()
            .zip(before.iter().zip(after))
            .filter(|(_, (b, a))| pick(b, a))
            .map(|(host, _)| format!("{} ({})", host.secret, host.host))
            .collect::<Vec<_>>()
    };
    let new = named(&|b, a| a.is_some() && a != b);
    let kept = named(&|b, a| a.is_some() && a == b);
    let none = named(&|_, a| a.is_none());
    let mut parts = vec![if new.is_empty() {
        "no certificate was stored by this run".to_string()
    } else {
        format!("stored by this run and kept: {}", new.join(", "))
    }];
    if !kept.is_empty() {
        parts.push(format!(
            "stored before and still in use, unchanged: {}",
            kept.join(", ")
        ));
    }
    if !none.is_empty() {
        parts.push(format!("still without a certificate: {}", none.join(", ")));
    }
    parts.join("; ")
}

/// Whether a stopped run left challenge records listed in `state_dir`
/// (an unreadable list counts: removing reads it again and says why).
pub fn has_leftovers(state_dir: &std::path::Path) -> bool {
    recorded(&state_dir.join(LEDGER)).map_or(true, |left| !left.is_empty())
}

/// Removes the challenge records a stopped run left (listed in the ledger
/// of `state_dir`); how many were removed, and how many are still listed
/// because Route53 did not take their removal. Runs under `tls.lock`, so
/// no running issue's records are taken.
pub async fn remove_leftovers(
    env: &Environment<'_>,
    state_dir: &std::path::Path,
) -> Result<(usize, usize)> {
    let ledger = state_dir.join(LEDGER);
    let left = recorded(&ledger)?;
    if left.is_empty() {
        return Ok((0, 0));
    }
    let r53 = crate::dns::connect(env).await;
    let removed = withdraw(&r53, &left).await;
    forget(&ledger, &removed)?;
    Ok((removed.len(), left.len() - removed.len()))
}

/// The challenge records recorded in `ledger` (none when it is absent).
fn recorded(ledger: &std::path::Path) -> Result<Vec<Published>> {
    match std::fs::read(ledger) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "reading {} (the challenge records to remove)",
                ledger.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(anyhow!("reading {}: {e}", ledger.display())),
    }
}

/// Writes `items` as the ledger (removing it when empty), atomically.
fn keep(ledger: &std::path::Path, items: &[Published]) -> Result<()> {
    if items.is_empty() {
        return match std::fs::remove_file(ledger) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(anyhow!("removing {}: {e}", ledger.display()))
            }
            _ => Ok(()),
        };
    }
    if let Some(parent) = ledger.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let temporary = ledger.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(items).unwrap_or_default();
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, ledger))
        .with_context(|| format!("writing {}", ledger.display()))
}

/// Records `item` before it is written to Route53.
fn remember(ledger: &std::path::Path, item: &Published) -> Result<()> {
    let mut items = recorded(ledger)?;
    if !items.contains(item) {
        items.push(item.clone());
    }
    keep(ledger, &items)
}

/// Drops `removed` from the ledger.
fn forget(ledger: &std::path::Path, removed: &[Published]) -> Result<()> {
    let mut items = recorded(ledger)?;
    items.retain(|item| !removed.contains(item));
    keep(ledger, &items)
}

/// The body of [`issue`].
async fn issue_orders(
    env: &Environment<'_>,
    store: &dyn SecretStore,
    settings: &Settings,
    hosts: &[TlsHost],
    ledger: &std::path::Path,
) -> Result<Vec<Issued>> {
    let mut outcomes: BTreeMap<usize, IssueOutcome> = BTreeMap::new();
    if settings.challenge == AcmeChallenge::Dns01 {
        for (n, reason) in dns_conflicts(env, hosts).await {
            outcomes.insert(n, IssueOutcome::Refused { reason });
        }
        if outcomes.len() == hosts.len() {
            return Ok(collect(hosts, outcomes));
        }
    }
    let account = account(store, settings).await?;
    let kind = match settings.challenge {
        AcmeChallenge::Dns01 => ChallengeType::Dns01,
        AcmeChallenge::Http01 => ChallengeType::Http01,
    };

    // Open every order and collect what each challenge wants published.
    let mut orders: Vec<(usize, Order)> = Vec::new();
    let mut answers = Vec::new();
    for (n, host) in hosts.iter().enumerate() {
        if outcomes.contains_key(&n) {
            continue;
        }
        let opened = open(&account, host, kind.clone()).await;
        match opened {
            Ok((order, wanted)) => {
                answers.extend(wanted.into_iter().map(|(name, value)| Answer {
                    host: n,
                    name,
                    value,
                }));
                orders.push((n, order));
            }
            Err(error) => {
                outcomes.insert(n, failed(error));
            }
        }
    }

    // Publish the answers.
    let mut server = None;
    match settings.challenge {
        AcmeChallenge::Dns01 if !answers.is_empty() => {
            let r53 = crate::dns::connect(env).await;
            let failures = publish(&r53, env, hosts, &answers, ledger, settings.timeout).await;
            for (n, error) in failures {
                outcomes.insert(n, failed(error));
            }
            let result = finish_all(&mut orders, hosts, store, settings, &mut outcomes).await;
            let removed = withdraw(&r53, &recorded(ledger)?).await;
            forget(ledger, &removed)?;
            result?;
        }
        AcmeChallenge::Http01 if !answers.is_empty() => {
            let listen = settings
                .http01_listen
                .context("the challenge is http-01 but tls.http01-listen is not set")?;
            let tokens: HashMap<String, String> = answers
                .iter()
                .map(|a| (a.name.clone(), a.value.clone()))
                .collect();
            server = Some(serve_http01(listen, tokens).await?);
            let result = finish_all(&mut orders, hosts, store, settings, &mut outcomes).await;
            if let Some(stop) = server.take() {
                let _ = stop.send(());
            }
            result?;
        }
        _ => finish_all(&mut orders, hosts, store, settings, &mut outcomes).await?,
    }
    drop(server);
    Ok(collect(hosts, outcomes))
}

fn collect(hosts: &[TlsHost], mut outcomes: BTreeMap<usize, IssueOutcome>) -> Vec<Issued> {
    hosts
        .iter()
        .enumerate()
        .map(|(n, host)| Issued {
            host: host.clone(),
            outcome: outcomes
                .remove(&n)
                .unwrap_or_else(|| failed(anyhow!("no outcome"))),
        })
        .collect()
}

/// The hosts (by index) whose name or `_acme-challenge.` name has a DNS
/// ownership conflict in `dns plan`, with why. Where kisumctl manages the
/// environment's records and the plan cannot be made, every host is held
/// back with the reason: nothing is written where ownership is unknown.
async fn dns_conflicts(env: &Environment<'_>, hosts: &[TlsHost]) -> BTreeMap<usize, String> {
    if !env.file.dns.managed {
        return BTreeMap::new();
    }
    let r53 = crate::dns::connect(env).await;
    let plan = match crate::dns::plan(&r53, env).await {
        Ok(plan) => plan,
        Err(error) => {
            let reason = format!("the DNS ownership of its records cannot be checked: {error:#}");
            return (0..hosts.len()).map(|n| (n, reason.clone())).collect();
        }
    };
    let mut refused = BTreeMap::new();
    for (n, host) in hosts.iter().enumerate() {
        let challenge = format!("_acme-challenge.{}", host.host);
        let conflict = [host.host.as_str(), challenge.as_str()]
            .into_iter()
            .find_map(|name| plan.conflict_at(name));
        if let Some(conflict) = conflict {
            refused.insert(
                n,
                format!(
                    "DNS ownership conflict at {} {} ({}): nothing is written there; resolve it \
                     (see `kisumctl dns plan {}`), then issue again",
                    conflict.name,
                    conflict.rtype.as_str(),
                    conflict.reason.as_deref().unwrap_or("not kisumctl's"),
                    env.name
                ),
            );
        }
    }
    refused
}

fn failed(error: anyhow::Error) -> IssueOutcome {
    IssueOutcome::Failed {
        error: format!("{error:#}"),
    }
}

/// A new order for `host` and the (name, value) its pending challenges
/// want: `_acme-challenge.<host>` and the digest for DNS-01, the token and
/// key authorization for HTTP-01.
async fn open(
    account: &Account,
    host: &TlsHost,
    kind: ChallengeType,
) -> Result<(Order, Vec<(String, String)>)> {
    let identifiers = [Identifier::Dns(host.host.clone())];
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .with_context(|| format!("ordering a certificate for {}", host.host))?;
    let mut wanted = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => bail!("authorization for {} is {other:?}", host.host),
        }
        let challenge = authz
            .challenge(kind.clone())
            .with_context(|| format!("the CA offers no {kind:?} challenge for {}", host.host))?;
        let key_authorization = challenge.key_authorization();
        wanted.push(match kind {
            ChallengeType::Dns01 => (
                format!("_acme-challenge.{}", challenge.identifier()),
                key_authorization.dns_value(),
            ),
            _ => (
                challenge.token.clone(),
                key_authorization.as_str().to_string(),
            ),
        });
    }
    Ok((order, wanted))
}

/// Writes every DNS-01 answer to Route53, then waits until all are
/// INSYNC. Answers that could not be written are returned per host.
async fn publish(
    r53: &Route53,
    env: &Environment<'_>,
    hosts: &[TlsHost],
    answers: &[Answer],
    ledger: &std::path::Path,
    timeout: Duration,
) -> Vec<(usize, anyhow::Error)> {
    let mut zones: BTreeMap<&str, String> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut changes = Vec::new();
    for answer in answers {
        let zone = hosts[answer.host].zone.as_str();
        let hosted = match zones.get(zone) {
            Some(id) => id.clone(),
            None => match crate::dns::hosted_zone(r53, env, zone).await {
                Ok(id) => {
                    zones.insert(zone, id.clone());
                    id
                }
                Err(error) => {
                    failures.push((answer.host, error));
                    continue;
                }
            },
        };
        let value = format!("\"{}\"", answer.value);
        let item = Published {
            hosted_zone: hosted.clone(),
            name: answer.name.clone(),
            value: value.clone(),
        };
        let result = async {
            // Recorded first: a run killed during the change still has
            // its record removed, by the next run.
            remember(ledger, &item)?;
            let mut set = r53
                .get(&hosted, &answer.name, RecordType::Txt)
                .await?
                .unwrap_or(RecordSet {
                    name: answer.name.clone(),
                    rtype: RecordType::Txt,
                    ttl: Some(CHALLENGE_TTL),
                    values: vec![],
                    alias: None,
                });
            if !set.values.contains(&value) {
                set.values.push(value.clone());
            }
            let change = Change {
                action: ChangeAction::Upsert,
                set,
            };
            r53.change(&hosted, &[&change], "kisumctl tls: ACME DNS-01 challenge")
                .await
                .map_err(change_error)
        }
        .await;
        match result {
            Ok(id) => changes.push((answer.host, id)),
            Err(error) => failures.push((answer.host, error)),
        }
    }
    for (host, id) in changes {
        if let Err(error) = r53.wait_insync(&id, timeout).await {
            failures.push((host, error));
        }
    }
    failures
}

/// Removes the published challenge values; other values stay. Answers
/// those that are gone (removed now, or never written).
async fn withdraw(r53: &Route53, published: &[Published]) -> Vec<Published> {
    let mut gone = Vec::new();
    for item in published {
        let result = async {
            let Some(current) = r53
                .get(&item.hosted_zone, &item.name, RecordType::Txt)
                .await?
            else {
                return Ok(());
            };
            let mut rest = current.clone();
            rest.values.retain(|v| *v != item.value);
            let change = if rest.values.is_empty() {
                Change {
                    action: ChangeAction::Delete,
                    set: current,
                }
            } else {
                Change {
                    action: ChangeAction::Upsert,
                    set: rest,
                }
            };
            r53.change(
                &item.hosted_zone,
                &[&change],
                "kisumctl tls: challenge done",
            )
            .await
            .map(|_| ())
            .map_err(change_error)
        }
        .await;
        if result.is_ok() {
            gone.push(item.clone());
        }
        if let Err(error) = result {
            // Left behind, a challenge record is harmless; say so (a
            // closed stderr only loses the warning).
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "warning: could not remove {}: {error:#} (the next `tls issue` or `tls \
                     renew` tries again)",
                    item.name
                );
            }
        }
    }
    gone
}

fn change_error(error: ChangeError) -> anyhow::Error {
    match error {
        ChangeError::Refused(message) => anyhow!("Route53 refused the change: {message}"),
        ChangeError::Other(error) => error,
    }
}

/// Tells the CA every challenge is ready, then validates, finalizes and
/// stores each order in turn.
async fn finish_all(
    orders: &mut [(usize, Order)],
    hosts: &[TlsHost],
    store: &dyn SecretStore,
    settings: &Settings,
    outcomes: &mut BTreeMap<usize, IssueOutcome>,
) -> Result<()> {
    for (n, order) in orders.iter_mut() {
        if outcomes.contains_key(n) {
            continue;
        }
        let outcome = match finish(order, &hosts[*n], store, settings).await {
            Ok(expires) => IssueOutcome::Issued { expires },
            Err(error) if error.downcast_ref::<crate::secrets::StoreError>().is_some() => {
                return Err(error);
            }
            Err(error) => failed(error),
        };
        outcomes.insert(*n, outcome);
    }
    Ok(())
}

async fn finish(
    order: &mut Order,
    host: &TlsHost,
    store: &dyn SecretStore,
    settings: &Settings,
) -> Result<String> {
    let kind = match settings.challenge {
        AcmeChallenge::Dns01 => ChallengeType::Dns01,
        AcmeChallenge::Http01 => ChallengeType::Http01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        if authz.status != AuthorizationStatus::Pending {
            continue;
        }
        if let Some(mut challenge) = authz.challenge(kind.clone()) {
            challenge.set_ready().await?;
        }
    }
    let retries = RetryPolicy::new().timeout(settings.timeout);
    let status = order.poll_ready(&retries).await?;
    if status != OrderStatus::Ready {
        let detail = order
            .state()
            .error
            .as_ref()
            .map(|problem| format!(": {problem}"))
            .unwrap_or_default();
        bail!("the order for {} is {status:?}{detail}", host.host);
    }
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![host.host.clone()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    order.finalize_csr(csr.der()).await?;
    let chain = order.poll_certificate(&retries).await?;
    let (info, _) =
        super::cert::inspect(&chain).map_err(|e| anyhow!("the CA's certificate: {e}"))?;
    super::store_pair(store, host, &chain, &Secret::new(key.serialize_pem()))?;
    Ok(jiff::Timestamp::from_second(info.not_after)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default())
}

/// Serves HTTP-01 tokens on `listen` until the sender is used or dropped.
async fn serve_http01(
    listen: SocketAddr,
    tokens: HashMap<String, String>,
) -> Result<tokio::sync::oneshot::Sender<()>> {
    use axum::extract::Path;
    use axum::http::StatusCode;

    let tokens = Arc::new(tokens);
    let app = axum::Router::new().route(
        "/.well-known/acme-challenge/{token}",
        axum::routing::get(move |Path(token): Path<String>| {
            let tokens = tokens.clone();
            async move { tokens.get(&token).cloned().ok_or(StatusCode::NOT_FOUND) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|error| {
        let hint = if error.kind() == std::io::ErrorKind::AddrInUse {
            ": another process holds that port; stop it or move tls.http01-listen              (no certificate was issued)"
        } else {
            ""
        };
        anyhow::anyhow!("listening on {listen} for HTTP-01 (tls.http01-listen): {error}{hint}")
    })?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(stop)
}
