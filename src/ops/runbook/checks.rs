//! The automated checks of the runbooks, each asking the running platform
//! one question through the routes the services offer operators: the
//! probes, Auth's internal routes (access context, directory, roles,
//! Core reachability), every service's `/internal/diagnostics`, Auth's
//! JWKS, and Core's entitlements through Platform Admin's read route (Core
//! admits only Auth and Admin; kisumctl signs in to Admin as the
//! environment's smoke-test admin).
//!
//! A check answers a [`Finding`]: `ok`, `cause` (it proved why the user is
//! refused, with the evidence and the fix), `skipped` (an input it needs
//! was not given) or `inconclusive` (it could not ask). Nothing here
//! changes the platform: a fix is named, never run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine as _;
use kisum_common::jwks::{JwksCache, VerifyError};
use kisum_common::jwt::{Claims, TokenError, TokenPolicy};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::local::checks::internal_headers;
use crate::local::plan::Endpoints;
use crate::local::probe::without_url;
use crate::secrets::Secret;

pub const AUTH_HEALTHY: &str = "auth-healthy";
pub const CORE_HEALTHY: &str = "core-healthy";
pub const JWT_VALID: &str = "jwt-valid";
pub const SESSION_LIVE: &str = "session-live";
pub const X_ORG: &str = "x-org";
pub const CORE_ENTITLEMENT: &str = "core-entitlement";
pub const MODULE_GRANT: &str = "module-grant";
pub const ACCESS_CACHE: &str = "access-cache";
pub const PERMISSION_KEY: &str = "permission-key";
pub const SERVICES_READY: &str = "services-ready";
pub const JWKS_PROPAGATED: &str = "jwks-propagated";
pub const CERTIFICATE_EXPIRY: &str = "certificate-expiry";
pub const REDIS_REACHABLE: &str = "redis-reachable";

/// Every check a runbook may name; the first nine are those of "user
/// cannot access module" (plan 26.1), in the plan's order.
pub const CHECKS: [&str; 13] = [
    AUTH_HEALTHY,
    CORE_HEALTHY,
    JWT_VALID,
    SESSION_LIVE,
    X_ORG,
    CORE_ENTITLEMENT,
    MODULE_GRANT,
    ACCESS_CACHE,
    PERMISSION_KEY,
    SERVICES_READY,
    JWKS_PROPAGATED,
    CERTIFICATE_EXPIRY,
    REDIS_REACHABLE,
];

/// The nine checks of "user cannot access module", in the plan's order:
/// the first nine of [`CHECKS`].
#[cfg(test)]
pub const ACCESS_CHECKS: &[&str] = CHECKS.split_at(9).0;

const AUTH: &str = "auth";
const CORE: &str = "platform-core";
const ADMIN: &str = "platform-admin";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Ok,
    Cause,
    Skipped,
    Inconclusive,
}

/// What one check found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub check: String,
    pub verdict: Verdict,
    pub summary: String,
    pub evidence: Vec<String>,
    /// The command or call that fixes a proved cause (never run here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    fn new(check: &str, verdict: Verdict, summary: impl Into<String>) -> Finding {
        Finding {
            check: check.to_string(),
            verdict,
            summary: summary.into(),
            evidence: Vec::new(),
            fix: None,
        }
    }

    fn evidence(mut self, lines: impl IntoIterator<Item = String>) -> Finding {
        self.evidence.extend(lines);
        self
    }

    fn fix(mut self, fix: impl Into<String>) -> Finding {
        self.fix = Some(fix.into());
        self
    }
}

/// What the responder knows about the case.
#[derive(Debug, Default)]
pub struct Inputs {
    pub user: Option<Uuid>,
    pub company: Option<Uuid>,
    /// The `x-org` the client sends.
    pub org: Option<String>,
    pub module: Option<String>,
    /// The user's access token.
    pub token: Option<Secret>,
}

/// How the checks reach the platform.
pub struct Platform {
    pub env: String,
    pub namespace: String,
    pub endpoints: Endpoints,
    /// kisumctl's internal credential.
    pub credential: Option<Secret>,
    /// The smoke-test platform admin (email, password).
    pub admin: Option<(String, Secret)>,
    /// Issuer and audience the backends verify tokens with.
    pub policy: TokenPolicy,
    /// Each public host's certificate as the secret store holds it (as
    /// `tls status` reads it), or why it could not be read.
    pub certificates: Result<Vec<crate::tls::HostStatus>, String>,
    /// `tls.expiry-alert-days` of the matrix.
    pub expiry_alert_days: u32,
    /// Redis as `status` sees it (a PING with the latency, or why not),
    /// when the runbook checks it.
    pub redis: Option<crate::ops::health::Item>,
    /// `local`: the PostgreSQL servers that refuse a connection or do not
    /// accept one in time, as `status` says it (`connection refused at
    /// 127.0.0.1:25432`), when the runbook checks readiness.
    pub postgres_down: Vec<String>,
    /// `local`: the MongoDB servers that refuse or do not answer a ping,
    /// as `status` says it, when the runbook checks readiness.
    pub mongo_down: Vec<String>,
}

/// One run: the platform, the inputs, and what earlier checks learned.
pub struct Diagnosis {
    platform: Platform,
    inputs: Inputs,
    http: reqwest::Client,
    claims: Option<Claims>,
    /// Auth's access context for (user, session, company).
    context: Option<Value>,
    /// Core's entitlements of the company, as Admin reads them.
    entitlements: Option<Value>,
    membership: Option<String>,
    /// The role of the user's membership.
    role: Option<String>,
    /// The keys of the module granted to the membership itself.
    member_keys: Vec<String>,
    /// The services that let a request time out: not asked again in this
    /// run, so that a hung service costs one timeout, not one per check.
    silent: std::sync::Mutex<BTreeSet<String>>,
    /// `local`: the services whose recorded loopback port refused a
    /// request of this run (the process is gone).
    gone: std::sync::Mutex<BTreeSet<String>>,
}

/// How long a health or readiness probe may take: a service that takes
/// longer is not answering.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What one health or readiness probe learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// The service answered 200.
    Passed,
    /// The service answered, and not 200.
    Failed,
    /// For `local`, the loopback port its supervisor recorded refused the
    /// connection: nothing listens there, the process is gone.
    Refused,
    /// For `local`, the loopback port its supervisor recorded accepted
    /// the connection and nothing answered within [`PROBE_TIMEOUT`]: the
    /// process is there and hung (or stopped, or overloaded).
    Hung,
    /// Nothing was asked: no URL, a name that does not resolve, a refused
    /// or timed-out connection to a host elsewhere (an in-cluster name
    /// seen from outside the cluster), a service that let an earlier
    /// request time out. Proves nothing about the service.
    Unasked,
}

/// The verdict of probes of one service: a cause only when a probe was
/// answered and failed; could-not-ask when any probe was not asked and
/// none failed.
fn judge(probes: &[Probe]) -> Verdict {
    if probes
        .iter()
        .any(|p| matches!(p, Probe::Failed | Probe::Refused | Probe::Hung))
    {
        Verdict::Cause
    } else if probes.contains(&Probe::Unasked) {
        Verdict::Inconclusive
    } else {
        Verdict::Ok
    }
}

/// Whether `error` is a refused connection to a loopback address: this
/// machine's answer that nothing listens on that port.
fn refused_on_loopback(url: &str, error: &reqwest::Error) -> bool {
    let loopback = on_loopback(url);
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return loopback;
        }
        source = current.source();
    }
    false
}

/// Whether `url` names a loopback address.
fn on_loopback(url: &str) -> bool {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|url| {
            let host = url.host_str()?.trim_matches(['[', ']']).to_string();
            Some(
                host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback()),
            )
        })
        .unwrap_or(false)
}

/// How a service is named in a sentence.
fn title(service: &str) -> String {
    match service {
        AUTH => "Auth".into(),
        CORE => "Platform Core".into(),
        ADMIN => "Platform Admin".into(),
        other => format!("the {other} service"),
    }
}

/// An HTTP answer: status and JSON body (a string when not JSON).
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    fn code(&self) -> String {
        let error = self.body.get("error").and_then(Value::as_str);
        match error {
            Some(code) => format!("{} ({code})", self.status.as_u16()),
            None => self.status.as_u16().to_string(),
        }
    }
}

impl Diagnosis {
    pub fn new(platform: Platform, inputs: Inputs) -> Diagnosis {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(3))
            .timeout(PROBE_TIMEOUT)
            .build()
            .unwrap_or_default();
        Diagnosis {
            platform,
            inputs,
            http,
            claims: None,
            context: None,
            entitlements: None,
            membership: None,
            role: None,
            member_keys: Vec::new(),
            silent: std::sync::Mutex::new(BTreeSet::new()),
            gone: std::sync::Mutex::new(BTreeSet::new()),
        }
    }

    /// Runs `checks` in order and stops after the first proved cause.
    pub async fn run(&mut self, checks: &[&str]) -> Vec<Finding> {
        let mut findings = Vec::new();
        for check in checks {
            let finding = self.check(check).await;
            let cause = finding.verdict == Verdict::Cause;
            findings.push(finding);
            if cause {
                break;
            }
        }
        findings
    }

    async fn check(&mut self, check: &str) -> Finding {
        match check {
            AUTH_HEALTHY => self.auth_healthy().await,
            CORE_HEALTHY => self.core_healthy().await,
            JWT_VALID => self.jwt_valid().await,
            SESSION_LIVE => self.session_live().await,
            X_ORG => self.x_org().await,
            CORE_ENTITLEMENT => self.core_entitlement().await,
            MODULE_GRANT => self.module_grant().await,
            ACCESS_CACHE => self.access_cache(),
            PERMISSION_KEY => self.permission_key().await,
            SERVICES_READY => self.services_ready().await,
            JWKS_PROPAGATED => self.jwks_propagated().await,
            CERTIFICATE_EXPIRY => self.certificate_expiry(),
            REDIS_REACHABLE => self.redis_reachable(),
            other => Finding::new(other, Verdict::Inconclusive, "not a known check"),
        }
    }

    // ------------------------------------------------------------ calls --

    fn public(&self, service: &str) -> Option<&str> {
        self.platform
            .endpoints
            .public
            .get(service)
            .map(String::as_str)
    }

    fn internal(&self, service: &str) -> Option<&str> {
        self.platform
            .endpoints
            .internal
            .get(service)
            .map(String::as_str)
    }

    /// The service whose public or internal address `url` is on.
    fn service_of(&self, url: &str) -> Option<String> {
        let endpoints = &self.platform.endpoints;
        endpoints
            .public
            .iter()
            .chain(endpoints.internal.iter())
            .find(|(_, base)| url.starts_with(base.as_str()))
            .map(|(service, _)| service.clone())
    }

    /// The service `url` is on, when it let an earlier request time out.
    fn silent_service(&self, url: &str) -> Option<String> {
        let service = self.service_of(url)?;
        let silent = self.silent.lock().unwrap_or_else(|p| p.into_inner());
        silent.contains(&service).then_some(service)
    }

    /// Notes that the service `url` is on let a request time out.
    fn note_silent(&self, url: &str) {
        if let Some(service) = self.service_of(url) {
            let mut silent = self.silent.lock().unwrap_or_else(|p| p.into_inner());
            silent.insert(service);
        }
    }

    /// Whether `service`'s port refused a request of this run (`local`).
    fn is_gone(&self, service: &str) -> bool {
        let gone = self.gone.lock().unwrap_or_else(|p| p.into_inner());
        gone.contains(service)
    }

    /// The cause a service that refused (gone) or let a request time out
    /// (hung) is, on `local`: said with `evidence`.
    fn not_serving(&self, check: &str, service: &str, evidence: Vec<String>) -> Option<Finding> {
        let title = title(service);
        if self.is_gone(service) {
            return Some(
                Finding::new(
                    check,
                    Verdict::Cause,
                    format!("{title} is down: nothing listens on its port"),
                )
                .evidence(evidence)
                .fix(self.restart(service)),
            );
        }
        let hung = self.platform.env == "local" && self.is_silent(service);
        hung.then(|| self.not_answering(check, service, evidence))
    }

    /// The cause a `local` service that accepts connections and answers
    /// nothing in time is, with `evidence` and the way to unstick it.
    fn not_answering(
        &self,
        check: &str,
        service: &str,
        evidence: impl IntoIterator<Item = String>,
    ) -> Finding {
        Finding::new(
            check,
            Verdict::Cause,
            format!(
                "{} is not answering: it accepts connections and answers nothing within {} s \
                 (hung, stopped or overloaded)",
                title(service),
                PROBE_TIMEOUT.as_secs()
            ),
        )
        .evidence(evidence)
        .fix(self.unhang(service))
    }

    /// Whether `service` let a request of this run time out.
    fn is_silent(&self, service: &str) -> bool {
        let silent = self.silent.lock().unwrap_or_else(|p| p.into_inner());
        silent.contains(service)
    }

    /// One request; `Err` when nothing answered (at once, without asking,
    /// when the service let an earlier request time out).
    async fn call(
        &self,
        method: Method,
        url: &str,
        internal: bool,
        bearer: Option<&Secret>,
        payload: Option<Value>,
    ) -> Result<Answer, String> {
        if let Some(service) = self.silent_service(url) {
            return Err(format!(
                "not asked: {} did not answer an earlier request",
                title(&service)
            ));
        }
        let mut request = self.http.request(method, url);
        if internal && let Some(credential) = &self.platform.credential {
            request = request.headers(internal_headers(credential));
        }
        if let Some(token) = bearer {
            request = request.bearer_auth(token.expose());
        }
        if let Some(payload) = payload {
            request = request.json(&payload);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                if error.is_timeout() {
                    self.note_silent(url);
                }
                if self.platform.env == "local"
                    && refused_on_loopback(url, &error)
                    && let Some(service) = self.service_of(url)
                {
                    let mut gone = self.gone.lock().unwrap_or_else(|p| p.into_inner());
                    gone.insert(service);
                }
                return Err(without_url(&error));
            }
        };
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer { status, body })
    }

    /// The JSON body of `GET url` when it answers 200; otherwise the
    /// inconclusive finding of `check`, saying what answered.
    async fn get_json(
        &self,
        check: &str,
        url: &str,
        internal: bool,
        bearer: Option<&Secret>,
    ) -> Result<Value, Finding> {
        match self.call(Method::GET, url, internal, bearer, None).await {
            Ok(answer) if answer.status == StatusCode::OK => Ok(answer.body),
            Ok(answer) => Err(Finding::new(
                check,
                Verdict::Inconclusive,
                format!("GET {url} answered {}", answer.code()),
            )),
            // On local, a recorded loopback port that refused (gone) or
            // accepted and answered nothing in time (hung) is the cause.
            Err(reason) => {
                let line = format!("GET {url}: {reason}");
                let cause = self
                    .service_of(url)
                    .filter(|_| on_loopback(url))
                    .and_then(|service| self.not_serving(check, &service, vec![line]));
                Err(cause.unwrap_or_else(|| {
                    Finding::new(
                        check,
                        Verdict::Inconclusive,
                        format!("GET {url}: unreachable: {reason}"),
                    )
                }))
            }
        }
    }

    /// `GET <base><path>` of a service: what it learned and the evidence
    /// line.
    async fn probe(
        &self,
        base: Option<&str>,
        service: &str,
        path: &str,
        internal: bool,
    ) -> (Probe, String) {
        let Some(base) = base else {
            return (Probe::Unasked, format!("{service}: no URL known"));
        };
        let url = format!("{base}{path}");
        if let Some(silent) = self.silent_service(&url) {
            return (
                Probe::Unasked,
                format!(
                    "GET {url}: not asked: {} did not answer an earlier request",
                    title(&silent)
                ),
            );
        }
        let mut request = self.http.get(&url).timeout(PROBE_TIMEOUT);
        if internal && let Some(credential) = &self.platform.credential {
            request = request.headers(internal_headers(credential));
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
                let answer = Answer { status, body };
                let probe = if status == StatusCode::OK {
                    Probe::Passed
                } else {
                    Probe::Failed
                };
                // An unready service's `/ready` says which of its checks
                // fail (`auth_db: unreachable: timed out`).
                let failing: Vec<String> = answer.body["checks"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, outcome)| probe == Probe::Failed && *outcome != "ok")
                    .map(|(name, outcome)| {
                        format!(
                            "{name}: {}",
                            printable(outcome.as_str().unwrap_or_default())
                        )
                    })
                    .collect();
                let failing = match failing.is_empty() {
                    true => String::new(),
                    false => format!(" ({})", failing.join("; ")),
                };
                (probe, format!("GET {url}: {}{failing}", answer.code()))
            }
            Err(error) if self.platform.env == "local" && refused_on_loopback(&url, &error) => (
                Probe::Refused,
                format!("GET {url}: connection refused (nothing listens there)"),
            ),
            Err(error) if error.is_timeout() => {
                self.note_silent(&url);
                let seconds = PROBE_TIMEOUT.as_secs();
                if self.platform.env == "local" && on_loopback(&url) {
                    // The supervisor's port accepted the connection: the
                    // process is there and does not answer.
                    (
                        Probe::Hung,
                        format!(
                            "GET {url}: no answer within {seconds} s (the process accepts \
                             connections but does not answer: hung, stopped or overloaded)"
                        ),
                    )
                } else {
                    (
                        Probe::Unasked,
                        format!("GET {url}: no answer within {seconds} s"),
                    )
                }
            }
            Err(error) => (
                Probe::Unasked,
                format!("GET {url}: could not ask: {}", without_url(&error)),
            ),
        }
    }

    /// The command that shows `service`'s log.
    fn logs(&self, service: &str) -> String {
        if self.platform.env == "local" {
            format!("kisumctl logs local {service}")
        } else {
            format!(
                "kubectl -n {} logs deployment/{service}",
                self.platform.namespace
            )
        }
    }

    /// The command that brings `service` back.
    fn restart(&self, service: &str) -> String {
        if self.platform.env == "local" {
            format!(
                "kisumctl deploy local (restarts what is down; `{}` shows why it stopped)",
                self.logs(service)
            )
        } else {
            format!(
                "kubectl -n {} rollout restart deployment/{service} (after reading its log: {})",
                self.platform.namespace,
                self.logs(service)
            )
        }
    }

    /// The command that restarts a running `service`.
    fn reload(&self, service: &str) -> String {
        if self.platform.env == "local" {
            format!(
                "`kisumctl status local` names the {service} process's pid; `kill PID` (the \
                 supervisor starts it again)"
            )
        } else {
            format!(
                "kubectl -n {} rollout restart deployment/{service}",
                self.platform.namespace
            )
        }
    }

    /// What to do about a `local` service that accepts connections and
    /// answers nothing (elsewhere: its pods restarted).
    fn unhang(&self, service: &str) -> String {
        if self.platform.env == "local" {
            format!(
                "`kisumctl status local` names the {service} process's pid: `kill -CONT PID` if \
                 it was stopped, else `kill PID` (the supervisor starts it again); `{}` shows \
                 what it last did",
                self.logs(service)
            )
        } else {
            self.restart(service)
        }
    }

    // ----------------------------------------------------------- checks --

    async fn auth_healthy(&mut self) -> Finding {
        let public = self.public(AUTH);
        let internal = self.internal(AUTH);
        let (health, ready, diagnostics) = tokio::join!(
            self.probe(public, AUTH, "/health", false),
            self.probe(public, AUTH, "/ready", false),
            self.probe(internal, AUTH, "/internal/diagnostics", true),
        );
        self.healthy(AUTH_HEALTHY, AUTH, &[health, ready, diagnostics])
    }

    async fn core_healthy(&mut self) -> Finding {
        let (health, ready, reachability) = tokio::join!(
            self.probe(self.public(CORE), CORE, "/health", false),
            self.probe(self.public(CORE), CORE, "/ready", false),
            self.probe(
                self.internal(AUTH),
                AUTH,
                "/internal/core-reachability",
                true,
            ),
        );
        // Core's reachability is asked of Auth: when Core answers its own
        // probes, a failure there is Auth's (or the path between them).
        if judge(&[health.0, ready.0]) == Verdict::Ok && reachability.0 != Probe::Passed {
            let kind = reachability.0;
            let evidence = [health.1, ready.1, reachability.1];
            let serving = "Platform Core answers its own probes";
            let finding = |verdict, summary: String| {
                Finding::new(CORE_HEALTHY, verdict, summary).evidence(evidence)
            };
            return match kind {
                Probe::Hung => finding(
                    Verdict::Cause,
                    format!(
                        "{serving}; Auth, which asks Core for every company's entitlements, is not answering: it accepts connections and answers nothing within {} s",
                        PROBE_TIMEOUT.as_secs()
                    ),
                )
                .fix(self.unhang(AUTH)),
                Probe::Refused => finding(
                    Verdict::Cause,
                    format!("{serving}; Auth, which asks Core for entitlements, is down"),
                )
                .fix(self.restart(AUTH)),
                Probe::Failed => finding(
                    Verdict::Cause,
                    format!(
                        "{serving}, but Auth cannot reach it (Auth's own check of the path to Core fails)"
                    ),
                )
                .fix(format!(
                    "check Auth's address of Core and the network path between them (`{}` says why its calls fail); Core itself needs nothing",
                    self.logs(AUTH)
                )),
                Probe::Passed | Probe::Unasked => finding(
                    Verdict::Inconclusive,
                    format!("{serving}; whether Auth reaches it could not be asked"),
                ),
            };
        }
        self.healthy(CORE_HEALTHY, CORE, &[health, ready, reachability])
    }

    fn healthy(&self, check: &str, service: &str, probes: &[(Probe, String)]) -> Finding {
        let title = title(service);
        let evidence = probes.iter().map(|(_, line)| line.clone());
        let outcomes: Vec<Probe> = probes.iter().map(|(probe, _)| *probe).collect();
        match judge(&outcomes) {
            Verdict::Cause if outcomes.contains(&Probe::Hung) => {
                self.not_answering(check, service, evidence)
            }
            Verdict::Cause => Finding::new(
                check,
                Verdict::Cause,
                format!("{title} is down or not ready"),
            )
            .evidence(evidence)
            .fix(self.restart(service)),
            Verdict::Ok => {
                Finding::new(check, Verdict::Ok, format!("{title} is serving and ready"))
                    .evidence(evidence)
            }
            verdict if outcomes.contains(&Probe::Passed) => {
                let unasked: Vec<&str> = probes
                    .iter()
                    .filter(|(probe, _)| *probe == Probe::Unasked)
                    .map(|(_, line)| line.as_str())
                    .collect();
                Finding::new(
                    check,
                    verdict,
                    format!(
                        "{title} answered {} of {} probes; the others could not be asked: {}",
                        outcomes.len() - unasked.len(),
                        outcomes.len(),
                        unasked.join("; ")
                    ),
                )
                .evidence(evidence)
            }
            verdict => Finding::new(
                check,
                verdict,
                format!(
                    "could not ask {title}: nothing answered (no proof it is down; run this \
                     where its addresses resolve and are reachable)"
                ),
            )
            .evidence(evidence),
        }
    }

    /// Why a check that needs the verified token (and `--company`) was
    /// not made.
    fn needs_identity(&self, check: &str) -> Finding {
        // `skip` is for an input not given; `??` for what could not ask.
        let (verdict, reason) = if self.inputs.token.is_none() {
            (Verdict::Skipped, "needs the user's token (--token-file)")
        } else if self.is_silent(AUTH) {
            (Verdict::Inconclusive, "not asked: Auth did not answer")
        } else if self.claims.is_none() {
            (
                Verdict::Inconclusive,
                "not asked: the token was not verified (see jwt-valid)",
            )
        } else {
            (Verdict::Skipped, "needs --company")
        };
        Finding::new(check, verdict, reason)
    }

    async fn jwt_valid(&mut self) -> Finding {
        let Some(token) = self.inputs.token.clone() else {
            return Finding::new(
                JWT_VALID,
                Verdict::Skipped,
                "no --token-file: the user's access token is not at hand",
            );
        };
        let Some(auth) = self.public(AUTH) else {
            return Finding::new(JWT_VALID, Verdict::Inconclusive, "no URL known for Auth");
        };
        if self.is_silent(AUTH) {
            return Finding::new(
                JWT_VALID,
                Verdict::Inconclusive,
                "not asked: Auth did not answer (verifying the token needs its JWKS)",
            );
        }
        let jwks_url = format!("{auth}/.well-known/jwks.json");
        let jwks = JwksCache::new(jwks_url.clone(), Duration::ZERO, Duration::ZERO);
        let policy = &self.platform.policy;
        let expected = format!(
            "expected: iss {}, aud {}, RS256, a kid Auth publishes",
            policy.issuer, policy.audience
        );
        let claims = unverified_claims(token.expose());
        let evidence = vec![format!("token claims (unverified): {claims}"), expected];
        let invalid = |summary: String, evidence: Vec<String>| {
            Finding::new(JWT_VALID, Verdict::Cause, summary)
                .evidence(evidence)
                .fix(
                    "the user signs in again (POST /auth/login) for a valid token; when every \
                     user is refused, follow runbook jwt-verification-failing",
                )
        };
        match jwks.verify(policy, token.expose()).await {
            Ok(claims) => {
                if let Some(user) = self.inputs.user
                    && claims.sub != user.to_string()
                {
                    // The responder's inputs disagree: nothing about the
                    // user's session is proved.
                    return Finding::new(
                        JWT_VALID,
                        Verdict::Cause,
                        format!("the token is user {}'s, not user {user}'s", claims.sub),
                    )
                    .evidence(evidence)
                    .fix(
                        "run again with --user and --token-file of the same user (the token \
                         is valid; it belongs to someone else)",
                    );
                }
                let summary = format!(
                    "valid: user {}, session {}, expires at {}",
                    claims.sub, claims.sid, claims.exp
                );
                self.claims = Some(claims);
                Finding::new(JWT_VALID, Verdict::Ok, summary).evidence(evidence)
            }
            Err(VerifyError::Jwks(error)) => {
                let (probe, line) = self
                    .probe(Some(auth), AUTH, "/.well-known/jwks.json", false)
                    .await;
                if probe == Probe::Unasked {
                    Finding::new(
                        JWT_VALID,
                        Verdict::Inconclusive,
                        "could not ask Auth for its JWKS",
                    )
                    .evidence([line])
                } else {
                    Finding::new(JWT_VALID, Verdict::Cause, "Auth's JWKS cannot be fetched")
                        .evidence([error.to_string(), line])
                        .fix(self.restart(AUTH))
                }
            }
            Err(VerifyError::Token(TokenError::UnknownKid(kid))) => {
                let published = jwks.kids().await.join(", ");
                let mut evidence = evidence;
                evidence.push(format!("GET {jwks_url}: kids {published}"));
                invalid(
                    format!("signed with kid {kid}, which Auth does not publish"),
                    evidence,
                )
            }
            Err(VerifyError::Token(error)) => match header_alg(token.expose()) {
                Some(alg) if alg != "RS256" => invalid(
                    format!(
                        "refused: signed with alg {}, and only RS256 is accepted",
                        printable(&alg)
                    ),
                    evidence,
                ),
                _ => invalid(format!("refused: {error}"), evidence),
            },
        }
    }

    /// The user and session of the verified token.
    fn identity(&self) -> Option<(String, String)> {
        let claims = self.claims.as_ref()?;
        Some((claims.sub.clone(), claims.sid.clone()))
    }

    async fn access_context(&self, org: &str) -> Result<Answer, String> {
        let (user, session) = self.identity().ok_or("no verified token")?;
        let auth = self
            .internal(AUTH)
            .ok_or("no internal URL known for Auth")?;
        let payload = json!({ "user": user, "session": session, "org": org });
        let url = format!("{auth}/internal/access-context");
        self.call(Method::POST, &url, true, None, Some(payload))
            .await
    }

    fn company(&self) -> Option<Uuid> {
        self.inputs.company
    }

    /// The cause of `check` when Auth knows no company `company` (the
    /// `--company` given is not a company's id), with `earlier` evidence.
    async fn unknown_company(&self, check: &str, company: Uuid, earlier: &str) -> Option<Finding> {
        let auth = self.internal(AUTH)?;
        let url = format!("{auth}/internal/companies/{company}/memberships");
        let answer = self.call(Method::GET, &url, true, None, None).await.ok()?;
        if answer.status != StatusCode::OK || answer.body["known"] != Value::Bool(false) {
            return None;
        }
        Some(
            Finding::new(
                check,
                Verdict::Cause,
                format!("company {company} is unknown to Auth (and so to Core's entitlements)"),
            )
            .evidence([earlier.to_string(), format!("GET {url}: no such company")])
            .fix(
                "run again with --company set to the id of a company the user belongs to \
                 (Auth's GET /auth/me, with the user's token, lists them)",
            ),
        )
    }

    async fn session_live(&mut self) -> Finding {
        let (Some((user, session)), Some(company)) = (self.identity(), self.company()) else {
            return self.needs_identity(SESSION_LIVE);
        };
        let answer = match self.access_context(&company.to_string()).await {
            Ok(answer) => answer,
            Err(reason) => return Finding::new(SESSION_LIVE, Verdict::Inconclusive, reason),
        };
        let evidence = format!(
            "POST /internal/access-context (user {user}, session {session}, org {company}): {}",
            answer.code()
        );
        match answer.status {
            StatusCode::UNAUTHORIZED => Finding::new(
                SESSION_LIVE,
                Verdict::Cause,
                format!("session {session} of user {user} is revoked (or unknown to Auth)"),
            )
            .evidence([evidence])
            .fix(format!(
                "the user signs in again: a revoked session never comes back (logout, logout-all, \
                 a password reset, refresh-token reuse or a disabled user end sessions; Auth's log \
                 tells which: {})",
                self.logs(AUTH)
            )),
            StatusCode::OK => {
                self.context = Some(answer.body);
                Finding::new(SESSION_LIVE, Verdict::Ok, "the session is live").evidence([evidence])
            }
            StatusCode::FORBIDDEN => Finding::new(
                SESSION_LIVE,
                Verdict::Ok,
                "the session is live (Auth refuses the company: see the membership check)",
            )
            .evidence([evidence]),
            _ => Finding::new(SESSION_LIVE, Verdict::Inconclusive, "Auth did not decide")
                .evidence([evidence]),
        }
    }

    async fn x_org(&mut self) -> Finding {
        let Some(org) = self.inputs.org.clone() else {
            return Finding::new(
                X_ORG,
                Verdict::Skipped,
                "no --org: what the client sends as x-org is not known",
            );
        };
        let fix = |company: Option<Uuid>| match company {
            Some(company) => format!(
                "the client sends x-org {company} (the company's id) or the company's slug in lower case"
            ),
            None => "the client sends the company's id or slug as x-org".to_string(),
        };
        if kisum_common::org::OrgRef::parse(&org).is_err() {
            return Finding::new(
                X_ORG,
                Verdict::Cause,
                format!(
                    "x-org `{}` is malformed: every backend answers 400",
                    printable(&org)
                ),
            )
            .evidence([
                "an id (UUID) or a slug of 1 to 128 letters, digits, `-`, `_`, `.` is expected"
                    .to_string(),
            ])
            .fix(fix(self.company()));
        }
        let (Some(_), Some(company)) = (self.identity(), self.company()) else {
            let mut finding = self.needs_identity(X_ORG);
            finding.summary = format!("well-formed; resolving it: {}", finding.summary);
            return finding;
        };
        let answer = match self.access_context(&org).await {
            Ok(answer) => answer,
            Err(reason) => return Finding::new(X_ORG, Verdict::Inconclusive, reason),
        };
        let evidence = format!(
            "POST /internal/access-context with org `{}`: {}",
            printable(&org),
            answer.code()
        );
        let resolved = answer.body["company"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match answer.status {
            StatusCode::OK if resolved == company.to_string() => Finding::new(
                X_ORG,
                Verdict::Ok,
                format!("x-org resolves to company {company}"),
            )
            .evidence([evidence]),
            StatusCode::OK | StatusCode::FORBIDDEN
                if let Some(unknown) = self.unknown_company(X_ORG, company, &evidence).await =>
            {
                unknown
            }
            StatusCode::OK => Finding::new(
                X_ORG,
                Verdict::Cause,
                format!(
                    "x-org `{}` names company {resolved}, not {company}",
                    printable(&org)
                ),
            )
            .evidence([evidence])
            .fix(fix(Some(company))),
            StatusCode::FORBIDDEN if self.context.is_some() => Finding::new(
                X_ORG,
                Verdict::Cause,
                format!(
                    "x-org `{}` names no company this user belongs to, while company {company} \
                     admits the user",
                    printable(&org)
                ),
            )
            .evidence([
                evidence,
                format!("POST /internal/access-context with org {company}: 200"),
            ])
            .fix(fix(Some(company))),
            _ => Finding::new(X_ORG, Verdict::Ok, "x-org is not what refuses the user")
                .evidence([evidence]),
        }
    }

    /// Signs in to Platform Admin as the smoke-test admin.
    async fn admin_token(&self) -> Result<Secret, String> {
        let (email, password) = self
            .platform
            .admin
            .as_ref()
            .ok_or("no smoke-test admin credentials in the secret store")?;
        let auth = self.public(AUTH).ok_or("no URL known for Auth")?;
        let payload = json!({ "email": email, "password": password.expose() });
        let answer = self
            .call(
                Method::POST,
                &format!("{auth}/auth/login"),
                false,
                None,
                Some(payload),
            )
            .await?;
        match answer.body["access_token"].as_str() {
            Some(token) if answer.status == StatusCode::OK => Ok(Secret::new(token)),
            _ => Err(format!(
                "the smoke-test admin's login answered {}",
                answer.code()
            )),
        }
    }

    async fn core_entitlement(&mut self) -> Finding {
        let (Some(company), Some(module)) = (self.company(), self.inputs.module.clone()) else {
            return Finding::new(
                CORE_ENTITLEMENT,
                Verdict::Skipped,
                "needs --company and --module",
            );
        };
        let token = match self.admin_token().await {
            Ok(token) => token,
            Err(reason) => return Finding::new(CORE_ENTITLEMENT, Verdict::Inconclusive, reason),
        };
        let Some(admin) = self.public(ADMIN) else {
            return Finding::new(
                CORE_ENTITLEMENT,
                Verdict::Inconclusive,
                "no URL known for Platform Admin",
            );
        };
        let url = format!("{admin}/admin/companies/{company}/entitlements");
        let body = match self
            .get_json(CORE_ENTITLEMENT, &url, false, Some(&token))
            .await
        {
            Ok(body) => body,
            Err(finding) => return finding,
        };
        let modules: Vec<String> = strings(&body["modules"]);
        let evidence = format!(
            "GET {url}: version {}, modules [{}]",
            body["version"],
            modules.join(", ")
        );
        let owned = modules.contains(&module);
        self.entitlements = Some(body);
        if owned {
            Finding::new(
                CORE_ENTITLEMENT,
                Verdict::Ok,
                format!("company {company} is entitled to {module} in Core"),
            )
            .evidence([evidence])
        } else {
            Finding::new(
                CORE_ENTITLEMENT,
                Verdict::Cause,
                format!("company {company} does not own {module} in Core"),
            )
            .evidence([evidence])
            .fix(format!(
                "Platform Admin: PUT /admin/companies/{company}/add-ons/{module} {{\"active\": true}} \
                 (or PUT .../subscription to a package with {module}), when the company has bought it"
            ))
        }
    }

    fn user(&self) -> Option<String> {
        self.inputs
            .user
            .map(|u| u.to_string())
            .or_else(|| self.claims.as_ref().map(|c| c.sub.clone()))
    }

    async fn module_grant(&mut self) -> Finding {
        let (Some(user), Some(company), Some(module)) =
            (self.user(), self.company(), self.inputs.module.clone())
        else {
            return Finding::new(
                MODULE_GRANT,
                Verdict::Skipped,
                "needs --user (or --token-file), --company and --module",
            );
        };
        let Some(auth) = self.internal(AUTH) else {
            return Finding::new(
                MODULE_GRANT,
                Verdict::Inconclusive,
                "no internal URL known for Auth",
            );
        };
        let url = format!("{auth}/internal/companies/{company}/memberships");
        let body = match self.get_json(MODULE_GRANT, &url, true, None).await {
            Ok(body) => body,
            Err(finding) => return finding,
        };
        let memberships = body["memberships"].as_array().cloned().unwrap_or_default();
        let Some(membership) = memberships.iter().find(|m| m["user"] == user.as_str()) else {
            return Finding::new(
                MODULE_GRANT,
                Verdict::Cause,
                format!("user {user} has no membership in company {company}"),
            )
            .evidence([format!(
                "GET {url}: {} memberships, none of user {user}",
                memberships.len()
            )])
            .fix(format!(
                "check the user id first (Platform Admin answers 404 for a user Auth does not \
                 know); then Platform Admin: POST /admin/companies/{company}/memberships \
                 {{\"user\": \"{user}\", \"role\": ROLE}}"
            ));
        };
        let id = membership["membership"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let grants: Vec<String> = membership["grants"]
            .as_object()
            .map(|g| g.keys().cloned().collect())
            .unwrap_or_default();
        let evidence = format!(
            "GET {url}: membership {id}, role {}, status {}, modules granted [{}]",
            membership["role"].as_str().unwrap_or_default(),
            membership["status"].as_str().unwrap_or_default(),
            grants.join(", ")
        );
        self.membership = Some(id.clone());
        self.role = membership["role"].as_str().map(str::to_string);
        self.member_keys = strings(&membership["grants"][module.as_str()]);
        if membership["status"] != "active" {
            return Finding::new(
                MODULE_GRANT,
                Verdict::Cause,
                format!("membership {id} is suspended"),
            )
            .evidence([evidence])
            .fix(format!(
                "Platform Admin: PUT /admin/memberships/{id}/status {{\"active\": true}}"
            ));
        }
        if !grants.contains(&module) {
            return Finding::new(
                MODULE_GRANT,
                Verdict::Cause,
                format!("membership {id} has no grant of {module}"),
            )
            .evidence([evidence])
            .fix(format!(
                "Platform Admin: PUT /admin/memberships/{id}/grants/{module}"
            ));
        }
        Finding::new(
            MODULE_GRANT,
            Verdict::Ok,
            format!("membership {id} grants {module}"),
        )
        .evidence([evidence])
    }

    fn access_cache(&mut self) -> Finding {
        let (Some(context), Some(entitlements), Some(module), Some(company)) = (
            &self.context,
            &self.entitlements,
            &self.inputs.module,
            self.company(),
        ) else {
            return match self.is_silent(AUTH) {
                true => Finding::new(
                    ACCESS_CACHE,
                    Verdict::Inconclusive,
                    "not asked: Auth did not answer",
                ),
                false => Finding::new(
                    ACCESS_CACHE,
                    Verdict::Skipped,
                    "needs Auth's access context (a valid --token-file) and Core's entitlements",
                ),
            };
        };
        let cached = context["entitlement_version"].as_i64().unwrap_or(-1);
        let computed = entitlements["version"].as_i64().unwrap_or(-1);
        let listed = context["modules"].get(module.as_str()).is_some();
        let evidence = vec![
            format!(
                "Auth's access context: entitlement version {cached}, access version {}, modules [{}]",
                context["access_version"],
                context["modules"]
                    .as_object()
                    .map(|m| m.keys().cloned().collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            ),
            format!("Core (through Admin): entitlement version {computed}"),
            "a backend keeps a context for ACCESS_CACHE_SECONDS (5 s by default) beyond that"
                .into(),
        ];
        if cached < computed || !listed {
            Finding::new(
                ACCESS_CACHE,
                Verdict::Cause,
                format!(
                    "Auth's cached access is stale: it serves entitlement version {cached} while \
                     Core is at {computed}{}",
                    if listed { "" } else { &", without the module" }
                ),
            )
            .evidence(evidence)
            .fix(format!(
                "kisumctl access invalidate {} --company {company}",
                self.platform.env
            ))
        } else {
            Finding::new(
                ACCESS_CACHE,
                Verdict::Ok,
                format!("Auth's access context is current (entitlement version {cached}) and lists {module}"),
            )
            .evidence(evidence)
        }
    }

    async fn permission_key(&mut self) -> Finding {
        let Some(module) = self.inputs.module.clone() else {
            return Finding::new(PERMISSION_KEY, Verdict::Skipped, "needs --module");
        };
        let (Some(backend), Some(auth)) = (self.internal(&module), self.internal(AUTH)) else {
            return Finding::new(
                PERMISSION_KEY,
                Verdict::Inconclusive,
                format!("no internal URL known for {module} or Auth"),
            );
        };
        let diagnostics_url = format!("{backend}/internal/diagnostics");
        let roles_url = format!("{auth}/internal/roles");
        let diagnostics = match self
            .get_json(PERMISSION_KEY, &diagnostics_url, true, None)
            .await
        {
            Ok(body) => body,
            Err(finding) => return finding,
        };
        let roles = match self.get_json(PERMISSION_KEY, &roles_url, true, None).await {
            Ok(body) => body,
            Err(finding) => return finding,
        };
        // The reads: what "cannot access" is about.
        let enforced: BTreeMap<String, String> = diagnostics["routes"]
            .as_object()
            .map(|routes| {
                routes
                    .iter()
                    .filter(|(route, _)| route.starts_with("GET "))
                    .map(|(route, key)| {
                        (route.clone(), key.as_str().unwrap_or_default().to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let roles: BTreeMap<String, Vec<String>> = roles["roles"]
            .as_object()
            .map(|roles| {
                roles
                    .iter()
                    .map(|(name, keys)| (name.clone(), strings(keys)))
                    .collect()
            })
            .unwrap_or_default();
        let granted: BTreeSet<&String> = roles.values().flatten().collect();
        let mut evidence = vec![
            format!(
                "GET {diagnostics_url}: {}",
                enforced
                    .iter()
                    .map(|(route, key)| format!("{route} -> {key}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!(
                "GET {roles_url}: the roles grant these {module} keys: [{}]",
                granted
                    .iter()
                    .filter(|k| k.split('.').next() == Some(module.as_str()))
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ];
        // The backend is to blame only for a key the permission catalog
        // does not have: no role could ever be given it.
        let unknown: Vec<String> = enforced
            .iter()
            .filter(|(_, key)| kisum_common::modules::known_permission(key).is_err())
            .map(|(route, key)| format!("{route} requires {key}"))
            .collect();
        if !unknown.is_empty() {
            return Finding::new(
                PERMISSION_KEY,
                Verdict::Cause,
                format!(
                    "the {module} backend enforces a permission key the permission catalog does \
                     not have: {}",
                    unknown.join("; ")
                ),
            )
            .evidence(evidence)
            .fix(match self.platform.env.as_str() {
                "local" => format!(
                    "run the {module} backend whose route map uses the catalog's keys: `kisumctl \
                     deploy local` builds it from services/ (a backend built against another \
                     catalog enforces keys no role can hold)"
                ),
                env => format!(
                    "deploy the {module} backend whose route map uses the catalog's keys \
                     (`kisumctl history {env}` names the release; a backend built against \
                     another catalog enforces keys no role can hold)"
                ),
            });
        }
        let role = self.role.clone();
        let (lacking, whose) = match &self.context {
            Some(context) => {
                let held: Vec<String> = strings(&context["modules"][module.as_str()]);
                evidence.push(format!(
                    "the user's {module} permissions: [{}]",
                    held.join(", ")
                ));
                let lacking: Vec<(&String, &String)> = enforced
                    .iter()
                    .filter(|(_, key)| !held.contains(*key))
                    .collect();
                let whose = match &role {
                    Some(role) => format!("the user's role {role}"),
                    None => "the user's role".to_string(),
                };
                (lacking, whose)
            }
            // Without the access context, the membership (module-grant
            // found it): its role's keys and those granted to it.
            None if let Some(role) = &role => {
                let mut held: BTreeSet<&String> = roles.get(role).into_iter().flatten().collect();
                held.extend(self.member_keys.iter());
                evidence.push(format!(
                    "the membership's {module} keys (role {role} and its own grants; keys lent \
                     by delegation are not listed): [{}]",
                    held.iter()
                        .filter(|k| k.split('.').next() == Some(module.as_str()))
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                let lacking: Vec<(&String, &String)> = enforced
                    .iter()
                    .filter(|(_, key)| !held.contains(*key))
                    .collect();
                (lacking, format!("the user's membership (role {role})"))
            }
            None => {
                let lacking: Vec<(&String, &String)> = enforced
                    .iter()
                    .filter(|(_, key)| !granted.contains(*key))
                    .collect();
                (lacking, "no role".to_string())
            }
        };
        if lacking.is_empty() && whose == "no role" {
            // The backend is cleared; the user's side was not read.
            let summary = format!(
                "every read route of {module} requires a key of the catalog some role grants; \
                 whether this user holds it needs --token-file, or --user and --company"
            );
            return Finding::new(PERMISSION_KEY, Verdict::Skipped, summary).evidence(evidence);
        }
        if lacking.is_empty() {
            return Finding::new(
                PERMISSION_KEY,
                Verdict::Ok,
                format!(
                    "every read route of {module} requires a key of the catalog the user holds"
                ),
            )
            .evidence(evidence);
        }
        let keys: Vec<&str> = lacking.iter().map(|(_, key)| key.as_str()).collect();
        let routes: Vec<String> = lacking
            .iter()
            .map(|(route, key)| format!("{route} requires {key}"))
            .collect();
        let summary = if whose == "no role" {
            format!(
                "no role grants what the {module} backend enforces: {}",
                routes.join("; ")
            )
        } else {
            format!(
                "{whose} lacks what the {module} backend enforces (the catalog's keys): {}",
                routes.join("; ")
            )
        };
        Finding::new(PERMISSION_KEY, Verdict::Cause, summary)
            .evidence(evidence)
            .fix(self.role_fix(&roles, &keys))
    }

    /// The Platform Admin call that gives the user's role (or, without
    /// one known, a role) the `keys` it lacks.
    fn role_fix(&self, roles: &BTreeMap<String, Vec<String>>, keys: &[&str]) -> String {
        let Some(role) = &self.role else {
            return format!(
                "give the member's role {}: Platform Admin: PUT /admin/roles/ROLE \
                 {{\"permissions\": [its keys and these]}} (module-grant names the role when \
                 given --user and --company)",
                keys.join(", ")
            );
        };
        let mut permissions: Vec<String> = roles.get(role).cloned().unwrap_or_default();
        permissions.retain(|k| kisum_common::modules::known_permission(k).is_ok());
        for key in keys {
            if !permissions.iter().any(|k| k == key) {
                permissions.push(key.to_string());
            }
        }
        format!(
            "Platform Admin: PUT /admin/roles/{role} {} (every member with role {role} gains it), \
             or give this member another role",
            json!({ "permissions": permissions })
        )
    }

    async fn services_ready(&mut self) -> Finding {
        let services: Vec<(String, String)> = self
            .platform
            .endpoints
            .public
            .iter()
            .map(|(s, u)| (s.clone(), u.clone()))
            .collect();
        let mut evidence = Vec::new();
        let mut down = Vec::new();
        let mut hung = Vec::new();
        let mut unasked = Vec::new();
        for (service, url) in &services {
            let (probe, line) = self.probe(Some(url), service, "/ready", false).await;
            match probe {
                Probe::Passed => {}
                Probe::Failed | Probe::Refused => down.push(service.clone()),
                Probe::Hung => {
                    down.push(service.clone());
                    hung.push(service.clone());
                }
                Probe::Unasked => unasked.push(service.clone()),
            }
            evidence.push(line);
        }
        // Services may still hold connections (and say ready) to a data
        // server that no longer answers new ones.
        let servers = [
            ("PostgreSQL", "postgres", &self.platform.postgres_down),
            ("MongoDB", "mongo", &self.platform.mongo_down),
        ];
        if let Some((name, process, reasons)) = servers.iter().find(|(_, _, r)| !r.is_empty()) {
            let why = reasons.join("; ");
            evidence.extend(reasons.iter().map(|reason| format!("{name}: {reason}")));
            let not_ready = match down.is_empty() {
                true => "the services still say ready".to_string(),
                false => format!("not ready: {}", down.join(", ")),
            };
            return Finding::new(
                SERVICES_READY,
                Verdict::Cause,
                format!("{not_ready}: {name} is unreachable ({why})"),
            )
            .evidence(evidence)
            .fix(self.restart_data_server(name, process, &why));
        }
        if down.is_empty() && !unasked.is_empty() {
            return Finding::new(
                SERVICES_READY,
                Verdict::Inconclusive,
                format!("could not ask: {}", unasked.join(", ")),
            )
            .evidence(evidence);
        }
        if down.is_empty() {
            return Finding::new(
                SERVICES_READY,
                Verdict::Ok,
                format!("{} services ready", services.len()),
            )
            .evidence(evidence);
        }
        let not_ready = format!("not ready: {}", down.join(", "));
        let fix = match hung.contains(&down[0]) {
            true => self.unhang(&down[0]),
            false => self.restart(&down[0]),
        };
        Finding::new(SERVICES_READY, Verdict::Cause, not_ready)
            .evidence(evidence)
            .fix(fix)
    }

    /// What brings data server `name` back, as `why` it is unreachable
    /// says (only `local` runs it itself, as `process`).
    fn restart_data_server(&self, name: &str, process: &str, why: &str) -> String {
        let env = &self.platform.env;
        if env != "local" {
            return format!(
                "bring the {name} server back (`kisumctl db status {env}` says which databases \
                 answer)"
            );
        }
        // A server that accepts and answers nothing was stopped or hung:
        // `deploy local` would wait on it.
        if why.contains(crate::ops::reachability::SILENT) {
            return self.unhang(process);
        }
        format!(
            "kisumctl deploy local (starts {name} again; `kisumctl logs local {process}` shows why \
             it stopped)"
        )
    }

    async fn jwks_propagated(&mut self) -> Finding {
        let Some(auth) = self.internal(AUTH) else {
            return Finding::new(
                JWKS_PROPAGATED,
                Verdict::Inconclusive,
                "no internal URL known for Auth",
            );
        };
        let url = format!("{auth}/internal/diagnostics");
        let signing = match self.get_json(JWKS_PROPAGATED, &url, true, None).await {
            Ok(body) => body["signing_kid"].as_str().unwrap_or_default().to_string(),
            Err(finding) => return finding,
        };
        let mut evidence = vec![format!("Auth signs with kid {signing}")];
        let mut lagging = Vec::new();
        let mut unasked = Vec::new();
        let others: Vec<(String, String)> = self
            .platform
            .endpoints
            .internal
            .iter()
            .filter(|(s, _)| s.as_str() != AUTH && s.as_str() != CORE)
            .map(|(s, u)| (s.clone(), u.clone()))
            .collect();
        for (service, base) in others {
            let url = format!("{base}/internal/diagnostics");
            match self.call(Method::GET, &url, true, None, None).await {
                Ok(answer) if answer.status == StatusCode::OK => {
                    let kids = strings(&answer.body["kids"]);
                    if !kids.contains(&signing) {
                        lagging.push(service.clone());
                    }
                    evidence.push(format!("{service}: kids [{}]", kids.join(", ")));
                }
                Ok(answer) => {
                    unasked.push(service.clone());
                    evidence.push(format!("{service}: GET {url}: {}", answer.code()));
                }
                Err(e) => {
                    unasked.push(service.clone());
                    evidence.push(format!("{service}: unreachable: {e}"));
                }
            }
        }
        if lagging.is_empty()
            && let Some(cause) = unasked
                .iter()
                .find_map(|service| self.not_serving(JWKS_PROPAGATED, service, evidence.clone()))
        {
            return cause;
        }
        if lagging.is_empty() && !unasked.is_empty() {
            return Finding::new(
                JWKS_PROPAGATED,
                Verdict::Inconclusive,
                format!(
                    "the verifiers asked know Auth's signing kid; could not ask: {}",
                    unasked.join(", ")
                ),
            )
            .evidence(evidence);
        }
        if lagging.is_empty() {
            return Finding::new(
                JWKS_PROPAGATED,
                Verdict::Ok,
                "every verifier knows Auth's signing kid",
            )
            .evidence(evidence);
        }
        Finding::new(
            JWKS_PROPAGATED,
            Verdict::Cause,
            format!(
                "Auth signs with kid {signing}, unknown to: {}",
                lagging.join(", ")
            ),
        )
        .evidence(evidence)
        .fix(format!(
            "restart {} so that {} Auth's JWKS again: {}; read first why {} not reload it \
             ({}); `kisumctl rotate-jwt-key {env} --status` says whether a rotation is under \
             way (only then does `kisumctl rotate-jwt-key {env}` resume it)",
            lagging.join(", "),
            if lagging.len() == 1 {
                "it loads"
            } else {
                "they load"
            },
            lagging
                .iter()
                .map(|service| self.reload(service))
                .collect::<Vec<_>>()
                .join("; "),
            if lagging.len() == 1 {
                "it did"
            } else {
                "they did"
            },
            lagging
                .iter()
                .map(|service| format!("`{}`", self.logs(service)))
                .collect::<Vec<_>>()
                .join(", "),
            env = self.platform.env
        ))
    }
}

/// The strings of a JSON array (nothing for anything else).
fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Control characters escaped, at most 200 characters.
fn printable(text: &str) -> String {
    crate::matrix::load::printable(&text.chars().take(200).collect::<String>())
}

/// The `alg` a token's header names, read without any checking.
fn header_alg(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let header: Value = serde_json::from_slice(&bytes).ok()?;
    header["alg"].as_str().map(str::to_string)
}

/// `iss`, `aud`, `sub`, `sid`, `exp` of a token's payload, unverified, for
/// the evidence; `unreadable` when it is not a JWT.
fn unverified_claims(token: &str) -> String {
    let payload = token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
    let header = TokenPolicy::kid_of(token).map_or_else(
        |e| match header_alg(token) {
            Some(alg) => format!("{e} (alg {})", printable(&alg)),
            None => e.to_string(),
        },
        |kid| format!("kid {kid}"),
    );
    match payload {
        Some(claims) => {
            let field = |name: &str| printable(&claims[name].to_string());
            format!(
                "{header}, iss {}, aud {}, sub {}, sid {}, exp {}",
                field("iss"),
                field("aud"),
                field("sub"),
                field("sid"),
                field("exp")
            )
        }
        None => format!("{header}, payload unreadable"),
    }
}

impl Diagnosis {
    /// Does Redis answer a PING (as `status` asks it)? On `local` an
    /// unreachable Redis is the cause (it runs on this machine); elsewhere
    /// it may only be out of reach from here.
    fn redis_reachable(&self) -> Finding {
        use crate::ops::health::Light;
        let Some(item) = &self.platform.redis else {
            return Finding::new(
                REDIS_REACHABLE,
                Verdict::Inconclusive,
                "Redis was not asked (the environment names no Redis)",
            );
        };
        let evidence = [format!("{}: {}", item.name, item.detail)];
        if item.light == Light::Unknown {
            return Finding::new(
                REDIS_REACHABLE,
                Verdict::Inconclusive,
                "Redis was not asked from here",
            )
            .evidence(evidence);
        }
        if item.light != Light::Red {
            return Finding::new(REDIS_REACHABLE, Verdict::Ok, "Redis answers").evidence(evidence);
        }
        let env = &self.platform.env;
        if env != "local" {
            return Finding::new(
                REDIS_REACHABLE,
                Verdict::Inconclusive,
                format!(
                    "Redis did not answer from here (no proof it is down: its address may only \
                     be reachable inside {env}'s network)"
                ),
            )
            .evidence(evidence);
        }
        if item.detail.contains(crate::ops::reachability::SILENT) {
            return Finding::new(
                REDIS_REACHABLE,
                Verdict::Cause,
                "Redis is not answering: it accepts connections and answers no PING in time \
                 (hung, stopped or overloaded)",
            )
            .evidence(evidence)
            .fix(format!(
                "{}; meanwhile Auth serves without its cache and login skips its rate limits",
                self.unhang("redis")
            ));
        }
        Finding::new(
            REDIS_REACHABLE,
            Verdict::Cause,
            "Redis is down: it does not answer a PING",
        )
        .evidence(evidence)
        .fix(
            "kisumctl deploy local (starts Redis again; `kisumctl logs local redis` shows why it \
             stopped); meanwhile Auth serves without its cache and login skips its rate limits",
        )
    }

    /// Does a public host's certificate expire within the alert threshold
    /// (or is it missing, expired or not its own)? Per host, the expiry
    /// and days left as `tls status` reads them from the secret store.
    fn certificate_expiry(&self) -> Finding {
        use crate::tls::Health;
        let statuses = match &self.platform.certificates {
            Ok(statuses) => statuses,
            Err(error) => {
                let summary = format!("the certificates cannot be read: {error}");
                return Finding::new(CERTIFICATE_EXPIRY, Verdict::Inconclusive, summary);
            }
        };
        let days = self.platform.expiry_alert_days;
        let env = &self.platform.env;
        let evidence: Vec<String> = statuses
            .iter()
            .map(|s| {
                let expiry = s.expiry().map_or(String::new(), |e| format!(": {e}"));
                format!("{}: {}{expiry}", s.host.host, s.health.as_str())
            })
            .collect();
        let expiring: Vec<&str> = statuses
            .iter()
            .filter(|s| matches!(s.health, Health::Alert | Health::Expired))
            .map(|s| s.host.host.as_str())
            .collect();
        if !expiring.is_empty() {
            let summary = format!(
                "the certificate of {} expires within {days} days (or has expired)",
                expiring.join(", ")
            );
            return Finding::new(CERTIFICATE_EXPIRY, Verdict::Cause, summary)
                .evidence(evidence)
                .fix(format!("kisumctl tls renew {env}"));
        }
        // `local` serves plain HTTP until `tls issue local`: none issued
        // there is not an outage (as `status local` says it).
        if env == "local" && statuses.iter().all(|s| s.health == Health::Missing) {
            let summary = format!(
                "no certificates issued: local serves plain HTTP (`kisumctl tls issue local` \
                 issues them for {} hosts)",
                statuses.len()
            );
            return Finding::new(CERTIFICATE_EXPIRY, Verdict::Ok, summary).evidence(evidence);
        }
        let unusable: Vec<&str> = statuses
            .iter()
            .filter(|s| matches!(s.health, Health::Missing | Health::Invalid))
            .map(|s| s.host.host.as_str())
            .collect();
        if !unusable.is_empty() {
            let summary = format!("no usable certificate for {}", unusable.join(", "));
            return Finding::new(CERTIFICATE_EXPIRY, Verdict::Cause, summary)
                .evidence(evidence)
                .fix(format!("kisumctl tls issue {env}"));
        }
        let summary = format!(
            "every certificate is valid beyond {days} days ({} hosts)",
            statuses.len()
        );
        Finding::new(CERTIFICATE_EXPIRY, Verdict::Ok, summary).evidence(evidence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unverified_claims_name_the_kid_and_the_claims() {
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"alg":"RS256","kid":"abc"}"#);
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"iss":"https://auth","aud":"kisum-api","sub":"u","sid":"s","exp":5}"#);
        let text = unverified_claims(&format!("{header}.{payload}.sig"));
        assert_eq!(
            text,
            r#"kid abc, iss "https://auth", aud "kisum-api", sub "u", sid "s", exp 5"#
        );
        assert!(unverified_claims("nope").contains("payload unreadable"));
        let none = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        assert_eq!(
            header_alg(&format!("{none}.{payload}.")).as_deref(),
            Some("none")
        );
        let text = unverified_claims(&format!("{none}.{payload}."));
        assert!(text.contains("(alg none)"), "{text}");
    }

    #[test]
    fn only_an_answered_failing_probe_is_a_cause() {
        use Probe::*;
        assert_eq!(judge(&[Passed, Passed]), Verdict::Ok);
        assert_eq!(judge(&[Unasked, Unasked]), Verdict::Inconclusive);
        assert_eq!(judge(&[Passed, Unasked]), Verdict::Inconclusive);
        assert_eq!(judge(&[Unasked, Failed]), Verdict::Cause);
        assert_eq!(judge(&[Failed]), Verdict::Cause);
    }

    fn platform(env: &str, auth: &str) -> Platform {
        let mut endpoints = Endpoints::default();
        endpoints.public.insert(AUTH.into(), auth.into());
        endpoints.internal.insert(AUTH.into(), auth.into());
        Platform {
            env: env.into(),
            namespace: format!("kisum-{env}"),
            endpoints,
            credential: None,
            admin: None,
            policy: TokenPolicy {
                issuer: String::new(),
                audience: String::new(),
                leeway_seconds: 0,
            },
            certificates: Ok(Vec::new()),
            expiry_alert_days: 14,
            redis: None,
            postgres_down: Vec::new(),
            mongo_down: Vec::new(),
        }
    }

    /// A loopback server answering every request `status`, and its URL.
    async fn answering(status: u16) -> String {
        answering_with(status, "{}").await
    }

    /// A loopback server answering every request `status` with `body`.
    async fn answering_with(status: u16, body: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        url
    }

    /// A loopback socket that accepts connections and never answers (as a
    /// stopped process), and its URL.
    fn hung() -> (std::net::TcpListener, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        (listener, url)
    }

    #[tokio::test]
    async fn a_hung_auth_costs_one_timeout_and_the_checks_needing_it_say_why() {
        let (_socket, url) = hung();
        let inputs = Inputs {
            company: Some(Uuid::nil()),
            module: Some("finance".into()),
            token: Some(Secret::new("a.b.c")),
            ..Inputs::default()
        };
        let started = std::time::Instant::now();
        let findings = Diagnosis::new(platform("staging", &url), inputs)
            .run(&[AUTH_HEALTHY, JWT_VALID, SESSION_LIVE, ACCESS_CACHE])
            .await;
        let took = started.elapsed();
        assert!(took < PROBE_TIMEOUT * 2, "took {took:?}");
        let verdicts: Vec<Verdict> = findings.iter().map(|f| f.verdict).collect();
        use Verdict::*;
        assert_eq!(
            verdicts,
            [Inconclusive, Inconclusive, Inconclusive, Inconclusive],
            "{findings:#?}"
        );
        assert!(
            findings[0].evidence[0].contains("no answer within 5 s"),
            "{findings:#?}"
        );
        assert_eq!(findings[2].summary, "not asked: Auth did not answer");
        assert_eq!(findings[3].summary, "not asked: Auth did not answer");

        // On local, the supervisor's port answering nothing is the cause.
        let local = auth_verdict("local", &url).await;
        assert_eq!(local.verdict, Cause, "{local:?}");
        assert!(
            local.summary.starts_with("Auth is not answering"),
            "{local:?}"
        );
    }

    /// `core-healthy` with Core answering 200 and Auth at `auth`.
    async fn core_verdict(auth: &str) -> Finding {
        let mut platform = platform("local", auth);
        let core = answering(200).await;
        platform.endpoints.public.insert(CORE.into(), core);
        Diagnosis::new(platform, Inputs::default())
            .run(&[CORE_HEALTHY])
            .await
            .remove(0)
    }

    #[tokio::test]
    async fn a_serving_core_is_not_blamed_for_an_auth_that_cannot_ask_it() {
        let (_socket, hung) = hung();
        let finding = core_verdict(&hung).await;
        assert_eq!(finding.verdict, Verdict::Cause, "{finding:?}");
        assert!(
            finding.summary.contains("Auth, which asks Core")
                && finding.summary.contains("is not answering"),
            "{finding:?}"
        );
        let fix = finding.fix.unwrap();
        assert!(fix.contains("auth process's pid"), "{fix}");
        assert!(!fix.contains("platform-core"), "{fix}");

        let gone = core_verdict(&refused_url()).await;
        assert!(
            gone.summary
                .ends_with("Auth, which asks Core for entitlements, is down")
        );
        assert!(gone.fix.unwrap().contains("kisumctl logs local auth"));

        let cut_off = core_verdict(&answering(503).await).await;
        assert!(
            cut_off.summary.contains("but Auth cannot reach it"),
            "{cut_off:?}"
        );
        assert!(cut_off.fix.unwrap().contains("Core itself needs nothing"));
    }

    #[tokio::test]
    async fn a_verifier_lagging_behind_the_signing_kid_is_restarted_not_rotated() {
        let auth = answering_with(200, r#"{"signing_kid":"new"}"#).await;
        let finance = answering_with(200, r#"{"kids":["old"]}"#).await;
        let mut platform = platform("local", &auth);
        platform
            .endpoints
            .internal
            .insert("finance".into(), finance);
        let finding = Diagnosis::new(platform, Inputs::default())
            .run(&[JWKS_PROPAGATED])
            .await
            .remove(0);
        assert_eq!(finding.verdict, Verdict::Cause, "{finding:?}");
        assert!(
            finding.summary.ends_with("unknown to: finance"),
            "{finding:?}"
        );
        let fix = finding.fix.unwrap();
        assert!(fix.starts_with("restart finance"), "{fix}");
        assert!(fix.contains("finance process's pid; `kill PID`"), "{fix}");
        assert!(fix.contains("only then does"), "{fix}");
    }

    #[tokio::test]
    async fn a_verifier_that_could_not_be_asked_leaves_the_check_inconclusive() {
        let auth = answering_with(200, r#"{"signing_kid":"new"}"#).await;
        let verdict = |env: &'static str| {
            let auth = auth.clone();
            async move {
                let mut platform = platform(env, &auth);
                platform
                    .endpoints
                    .internal
                    .insert("finance".into(), refused_url());
                Diagnosis::new(platform, Inputs::default())
                    .run(&[JWKS_PROPAGATED])
                    .await
                    .remove(0)
            }
        };
        let elsewhere = verdict("staging").await;
        assert_eq!(elsewhere.verdict, Verdict::Inconclusive, "{elsewhere:?}");
        assert!(elsewhere.summary.ends_with("could not ask: finance"));
        // On local the supervisor's port refusing means the process is gone.
        let local = verdict("local").await;
        assert_eq!(local.verdict, Verdict::Cause, "{local:?}");
        assert_eq!(
            local.summary,
            "the finance service is down: nothing listens on its port"
        );
        assert!(local.fix.unwrap().starts_with("kisumctl deploy local"));
    }

    #[tokio::test]
    async fn a_hung_backend_on_local_is_named_as_not_answering() {
        let (_socket, finance) = hung();
        let mut platform = platform("local", &answering(200).await);
        platform
            .endpoints
            .internal
            .insert("finance".into(), finance);
        let inputs = Inputs {
            module: Some("finance".into()),
            ..Inputs::default()
        };
        let started = std::time::Instant::now();
        let finding = Diagnosis::new(platform, inputs)
            .run(&[PERMISSION_KEY])
            .await
            .remove(0);
        assert!(started.elapsed() < PROBE_TIMEOUT * 2);
        assert_eq!(finding.verdict, Verdict::Cause, "{finding:?}");
        assert!(
            finding
                .summary
                .starts_with("the finance service is not answering"),
            "{finding:?}"
        );
        assert!(finding.fix.unwrap().contains("kill -CONT PID"));
    }

    #[tokio::test]
    async fn a_silent_postgresql_is_the_cause_while_the_services_still_say_ready() {
        let mut platform = platform("local", &answering(200).await);
        let auth = platform.endpoints.internal[AUTH].clone();
        platform.endpoints.public.insert(AUTH.into(), auth);
        platform.postgres_down = vec!["127.0.0.1:25432 did not answer within 5 s".into()];
        let finding = Diagnosis::new(platform, Inputs::default())
            .run(&[SERVICES_READY])
            .await
            .remove(0);
        assert_eq!(finding.verdict, Verdict::Cause, "{finding:?}");
        assert!(
            finding
                .summary
                .starts_with("the services still say ready: PostgreSQL is unreachable"),
            "{finding:?}"
        );
        let fix = finding.fix.unwrap();
        assert!(
            fix.starts_with("`kisumctl status local` names the postgres"),
            "{fix}"
        );
        assert!(!fix.contains("deploy local"), "{fix}");

        // MongoDB is named too (the services it serves may still say ready).
        let mut platform = self::platform("local", &answering(200).await);
        let auth = platform.endpoints.internal[AUTH].clone();
        platform.endpoints.public.insert(AUTH.into(), auth);
        platform.mongo_down = vec!["127.0.0.1:27117 did not answer within 5 s".into()];
        let finding = Diagnosis::new(platform, Inputs::default())
            .run(&[SERVICES_READY])
            .await
            .remove(0);
        assert!(
            finding
                .summary
                .ends_with("MongoDB is unreachable (127.0.0.1:27117 did not answer within 5 s)"),
            "{finding:?}"
        );
        assert!(finding.fix.unwrap().contains("mongo process's pid"));
    }

    #[test]
    fn no_certificate_issued_is_an_outage_elsewhere_but_not_on_plain_http_local() {
        let missing = |env: &str| {
            let mut platform = platform(env, "http://127.0.0.1:1");
            platform.certificates = Ok(vec![crate::tls::HostStatus {
                host: crate::tls::TlsHost {
                    id: "auth".into(),
                    host: "auth.kisum.localhost".into(),
                    zone: "kisum-io".into(),
                    secret: "tls-auth".into(),
                },
                health: crate::tls::Health::Missing,
                certificate: None,
                expires: None,
                days_left: None,
                problem: None,
            }]);
            Diagnosis::new(platform, Inputs::default()).certificate_expiry()
        };
        let local = missing("local");
        assert_eq!(local.verdict, Verdict::Ok, "{local:?}");
        assert!(local.summary.contains("plain HTTP"), "{local:?}");
        let dev = missing("dev");
        assert_eq!(dev.verdict, Verdict::Cause, "{dev:?}");
        assert_eq!(dev.fix.as_deref(), Some("kisumctl tls issue dev"));
    }

    fn redis_verdict(env: &str, light: crate::ops::health::Light, detail: &str) -> Finding {
        let mut platform = platform(env, "http://127.0.0.1:1");
        platform.redis = Some(crate::ops::health::Item::new("redis", light, detail));
        Diagnosis::new(platform, Inputs::default()).redis_reachable()
    }

    #[test]
    fn a_hung_redis_is_told_from_a_stopped_one_and_one_out_of_reach_is_not_asked() {
        use crate::ops::health::Light;
        let hung = redis_verdict(
            "local",
            Light::Red,
            "127.0.0.1:26379 did not answer within 5 s",
        );
        assert!(
            hung.summary.starts_with("Redis is not answering"),
            "{hung:?}"
        );
        assert!(hung.fix.unwrap().contains("kill -CONT PID"));
        let down = redis_verdict("local", Light::Red, "connection refused at 127.0.0.1:26379");
        assert!(down.summary.starts_with("Redis is down"), "{down:?}");
        assert!(down.fix.unwrap().starts_with("kisumctl deploy local"));
        let away = redis_verdict("staging", Light::Unknown, "private network: ...");
        assert_eq!(away.verdict, Verdict::Inconclusive, "{away:?}");
        assert_eq!(away.summary, "Redis was not asked from here");
    }

    #[test]
    fn a_key_of_the_catalog_the_role_lacks_blames_the_role_not_the_backend() {
        let mut diagnosis =
            Diagnosis::new(platform("local", "http://127.0.0.1:1"), Inputs::default());
        diagnosis.role = Some("reader".into());
        let roles = BTreeMap::from([(
            "reader".to_string(),
            vec!["market.listings.read".to_string(), "legacy.key".to_string()],
        )]);
        let fix = diagnosis.role_fix(&roles, &["finance.invoices.read"]);
        assert!(
            fix.starts_with(
                r#"Platform Admin: PUT /admin/roles/reader {"permissions":["market.listings.read","finance.invoices.read"]}"#
            ),
            "{fix}"
        );
        assert!(kisum_common::modules::known_permission("finance.invoices.read").is_ok());
    }

    fn refused_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    async fn auth_verdict(env: &str, url: &str) -> Finding {
        Diagnosis::new(platform(env, url), Inputs::default())
            .run(&[AUTH_HEALTHY])
            .await
            .remove(0)
    }

    #[tokio::test]
    async fn unreachable_auth_is_could_not_ask_and_an_answered_503_is_down() {
        // Outside local, a refused connection proves nothing (an
        // in-cluster address seen from elsewhere).
        let refused = auth_verdict("staging", &refused_url()).await;
        assert_eq!(refused.verdict, Verdict::Inconclusive, "{refused:?}");
        assert!(refused.fix.is_none(), "{refused:?}");
        assert!(
            refused.summary.starts_with("could not ask Auth"),
            "{refused:?}"
        );

        let not_ready = auth_verdict("staging", &answering(503).await).await;
        assert_eq!(not_ready.verdict, Verdict::Cause, "{not_ready:?}");
        assert_eq!(not_ready.summary, "Auth is down or not ready");
        assert!(not_ready.fix.unwrap().contains("kubectl -n kisum-staging"));

        let serving = auth_verdict("staging", &answering(200).await).await;
        assert_eq!(serving.verdict, Verdict::Ok, "{serving:?}");

        // local's supervisor recorded the port: nothing listening there
        // means the process is gone.
        let gone = auth_verdict("local", &refused_url()).await;
        assert_eq!(gone.verdict, Verdict::Cause, "{gone:?}");
    }
}
