//! The checks themselves, in order, over one HTTP client.
//!
//! Each request has its own time limit and the whole run one more; a check
//! that needs what an earlier one failed to get (a token) is skipped with
//! the reason. The undo of the add-on change is the one request that runs
//! past the overall limit: leaving the smoke-test company changed is worse
//! than a slow report.

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Check, Credentials, Report, Target};
use crate::secrets::Secret;

pub const AUTH_HEALTH: &str = "auth-health";
pub const AUTH_READY: &str = "auth-ready";
pub const LOGIN: &str = "login";
pub const AUTH_ME: &str = "auth-me";
pub const AUTH_ME_ACCESS: &str = "auth-me-access";
pub const CORE_ENTITLEMENTS: &str = "core-entitlements";
pub const MODULE_ALLOWED: &str = "module-allowed";
pub const MODULE_DENIED: &str = "module-denied";
pub const SUBSCRIPTION_INVALIDATES_ACCESS: &str = "subscription-invalidates-access";

/// Every check, in the order it runs.
pub const CHECKS: [&str; 9] = [
    AUTH_HEALTH,
    AUTH_READY,
    LOGIN,
    AUTH_ME,
    AUTH_ME_ACCESS,
    CORE_ENTITLEMENTS,
    MODULE_ALLOWED,
    MODULE_DENIED,
    SUBSCRIPTION_INVALIDATES_ACCESS,
];

/// The limit of one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The limit of the whole run (the undo of the add-on change excepted).
pub const OVERALL_LIMIT: Duration = Duration::from_secs(90);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The module the user may read, and the add-on the subscription check
/// switches on and off again (the smoke-test company never has it).
const READABLE_MODULE: &str = "finance";
const TOGGLED_ADD_ON: &str = "market";

/// Why a check did not pass.
enum Stop {
    Fail(String),
    Skip(String),
}

impl From<String> for Stop {
    fn from(detail: String) -> Stop {
        Stop::Fail(detail)
    }
}

type Outcome = Result<(), Stop>;

fn expect(holds: bool, detail: impl FnOnce() -> String) -> Outcome {
    if holds {
        Ok(())
    } else {
        Err(Stop::Fail(detail()))
    }
}

/// A response: its status and JSON body (`null` when not JSON).
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    /// `expected 403, got 200 (code: message)`.
    fn unexpected(&self, expected: &str) -> String {
        format!(
            "expected {expected}, got {}{}",
            self.status.as_u16(),
            self.error()
        )
    }

    /// ` (code: message)` from a JSON error body, shortened; empty when
    /// the body has none.
    fn error(&self) -> String {
        let field = |name: &str| {
            let text = self.body.get(name).and_then(Value::as_str).unwrap_or("");
            text.chars().take(120).collect::<String>()
        };
        match (field("error"), field("message")) {
            (code, _) if code.is_empty() => String::new(),
            (code, message) if message.is_empty() => format!(" ({code})"),
            (code, message) => format!(" ({code}: {message})"),
        }
    }

    fn expect_ok(&self) -> Result<(), String> {
        if self.status == StatusCode::OK {
            Ok(())
        } else {
            Err(self.unexpected("200"))
        }
    }

    /// The module keys of an access context (`/auth/me/access`).
    fn modules(&self) -> Vec<&str> {
        self.body["modules"]
            .as_object()
            .map(|modules| modules.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

/// Sends `request` and reads the answer.
async fn exchange(request: reqwest::RequestBuilder) -> Result<Answer, String> {
    let response = request.send().await.map_err(transport)?;
    let status = response.status();
    let text = response.text().await.map_err(transport)?;
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Answer { status, body })
}

/// A transport failure: the URL and the innermost cause. Requests carry
/// credentials in headers and bodies only, never in URLs.
fn transport(error: reqwest::Error) -> String {
    let url = error
        .url()
        .map(|u| u.as_str().to_string())
        .unwrap_or_else(|| "the service".into());
    if error.is_timeout() {
        return format!("no answer from {url} in time");
    }
    let mut cause: &dyn std::error::Error = &error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let what = if error.is_connect() {
        "cannot connect to"
    } else {
        "request failed:"
    };
    format!("{what} {url}: {cause}")
}

/// Runs every check against `target` as `credentials`, in order.
pub async fn run(target: &Target, credentials: &Credentials) -> Report {
    let http = match client(target) {
        Ok(http) => http,
        Err(error) => {
            let detail = format!("no HTTP client: {error}");
            return Report {
                checks: CHECKS
                    .iter()
                    .map(|&name| Check {
                        name,
                        passed: false,
                        skipped: false,
                        duration: Duration::ZERO,
                        detail: Some(detail.clone()),
                    })
                    .collect(),
                repairs: Vec::new(),
            };
        }
    };
    let mut run = Run {
        http,
        target,
        credentials,
        deadline: Instant::now() + OVERALL_LIMIT,
        user_token: None,
        admin_token: None,
        repairs: Vec::new(),
    };
    let checks = vec![
        timed(AUTH_HEALTH, run.auth_health()).await,
        timed(AUTH_READY, run.auth_ready()).await,
        timed(LOGIN, run.login()).await,
        timed(AUTH_ME, run.auth_me()).await,
        timed(AUTH_ME_ACCESS, run.auth_me_access()).await,
        timed(CORE_ENTITLEMENTS, run.core_entitlements()).await,
        timed(MODULE_ALLOWED, run.module_allowed()).await,
        timed(MODULE_DENIED, run.module_denied()).await,
        timed(
            SUBSCRIPTION_INVALIDATES_ACCESS,
            run.subscription_invalidates_access(),
        )
        .await,
    ];
    run.sign_out().await;
    let report = Report {
        checks,
        repairs: std::mem::take(&mut run.repairs),
    };
    run.scrubbed(report)
}

fn client(target: &Target) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("kisumctl-smoke/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        // A redirect could carry the bearer token somewhere else.
        .redirect(reqwest::redirect::Policy::none());
    if target.is_loopback() {
        builder = builder.no_proxy();
    }
    builder.build()
}

async fn timed(name: &'static str, check: impl Future<Output = Outcome>) -> Check {
    let started = Instant::now();
    let outcome = check.await;
    let duration = started.elapsed();
    let (passed, skipped, detail) = match outcome {
        Ok(()) => (true, false, None),
        Err(Stop::Fail(detail)) => (false, false, Some(detail)),
        Err(Stop::Skip(reason)) => (false, true, Some(reason)),
    };
    Check {
        name,
        passed,
        skipped,
        duration,
        detail,
    }
}

struct Run<'a> {
    http: reqwest::Client,
    target: &'a Target,
    credentials: &'a Credentials,
    deadline: Instant,
    user_token: Option<Secret>,
    /// The platform admin's token, or why there is none.
    admin_token: Option<Result<Secret, String>>,
    repairs: Vec<String>,
}

impl Run<'_> {
    /// Sends `request` within what is left of the overall limit.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "not sent: the overall limit of {} s was reached",
                OVERALL_LIMIT.as_secs()
            ));
        }
        exchange(request.timeout(left.min(REQUEST_TIMEOUT))).await
    }

    fn user_token(&self) -> Result<Secret, Stop> {
        self.user_token
            .clone()
            .ok_or_else(|| Stop::Skip(format!("no access token: check `{LOGIN}` failed")))
    }

    fn admin_token(&self) -> Result<Secret, Stop> {
        match &self.admin_token {
            Some(Ok(token)) => Ok(token.clone()),
            Some(Err(why)) => Err(Stop::Skip(format!("no platform-admin token: {why}"))),
            None => Err(Stop::Skip("no platform-admin token".into())),
        }
    }

    /// `POST /auth/login`; the access token.
    async fn sign_in(&self, email: &str, password: &Secret) -> Result<Secret, String> {
        let request = self
            .http
            .post(format!("{}/auth/login", self.target.auth))
            .json(&json!({ "email": email, "password": password.expose() }));
        let answer = self.send(request).await?;
        answer.expect_ok()?;
        answer.body["access_token"]
            .as_str()
            .filter(|token| !token.is_empty())
            .map(Secret::new)
            .ok_or_else(|| "the answer has no access_token".to_string())
    }

    /// `GET /auth/me/access` for the smoke-test company, as the user.
    async fn access(&self, token: &Secret) -> Result<Answer, String> {
        let request = self
            .http
            .get(format!("{}/auth/me/access", self.target.auth))
            .bearer_auth(token.expose())
            .header("x-org", &self.credentials.company_slug);
        let answer = self.send(request).await?;
        answer.expect_ok()?;
        Ok(answer)
    }

    /// A request of the user to the finance backend, in the company.
    fn invoices(&self, method: reqwest::Method, token: &Secret) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/v1/invoices", self.target.finance))
            .bearer_auth(token.expose())
            .header("x-org", self.credentials.company_id.to_string())
    }

    async fn auth_health(&mut self) -> Outcome {
        let url = format!("{}/health", self.target.auth);
        self.send(self.http.get(url)).await?.expect_ok()?;
        Ok(())
    }

    async fn auth_ready(&mut self) -> Outcome {
        let url = format!("{}/ready", self.target.auth);
        let answer = self.send(self.http.get(url)).await?;
        expect(answer.status == StatusCode::OK, || {
            // Only the names of the failing dependencies: their messages
            // may quote connection details.
            let failing: Vec<&str> = answer.body["checks"]
                .as_object()
                .map(|checks| {
                    let failing = checks.iter().filter(|(_, state)| state != &"ok");
                    failing.map(|(name, _)| name.as_str()).collect()
                })
                .unwrap_or_default();
            if failing.is_empty() {
                answer.unexpected("200")
            } else {
                format!(
                    "{}; not ok: {}",
                    answer.unexpected("200"),
                    failing.join(", ")
                )
            }
        })
    }

    async fn login(&mut self) -> Outcome {
        let credentials = self.credentials;
        let token = self
            .sign_in(&credentials.user_email, &credentials.user_password)
            .await?;
        self.user_token = Some(token);
        Ok(())
    }

    async fn auth_me(&mut self) -> Outcome {
        let token = self.user_token()?;
        let request = self
            .http
            .get(format!("{}/auth/me", self.target.auth))
            .bearer_auth(token.expose());
        let answer = self.send(request).await?;
        answer.expect_ok()?;
        let email = answer.body["email"].as_str().unwrap_or_default();
        expect(
            email.eq_ignore_ascii_case(&self.credentials.user_email),
            || format!("the user is not {}", self.credentials.user_email),
        )?;
        let company = self.credentials.company_id.to_string();
        let member = answer.body["companies"]
            .as_array()
            .is_some_and(|list| list.iter().any(|c| c["company"] == company.as_str()));
        expect(member, || {
            format!(
                "the user is no member of company {} ({company})",
                self.credentials.company_slug
            )
        })
    }

    async fn auth_me_access(&mut self) -> Outcome {
        let token = self.user_token()?;
        let answer = self.access(&token).await?;
        let company = self.credentials.company_id.to_string();
        expect(answer.body["company"] == company.as_str(), || {
            format!(
                "x-org {} resolved to another company than {company}",
                self.credentials.company_slug
            )
        })?;
        let modules = answer.modules();
        expect(modules.contains(&READABLE_MODULE), || {
            format!("`{READABLE_MODULE}` is not listed (modules: {modules:?})")
        })?;
        expect(!modules.contains(&TOGGLED_ADD_ON), || {
            format!(
                "`{TOGGLED_ADD_ON}` is listed before the add-on change; an earlier run may \
                 have left it active. {}",
                self.repair_call()
            )
        })
    }

    async fn core_entitlements(&mut self) -> Outcome {
        let credentials = self.credentials;
        let signed_in = self
            .sign_in(&credentials.admin_email, &credentials.admin_password)
            .await
            .map_err(|why| format!("platform-admin login: {why}"));
        self.admin_token = Some(signed_in.clone());
        let token = signed_in?;
        let company = credentials.company_id.to_string();
        let url = format!(
            "{}/admin/companies/{company}/entitlements",
            self.target.admin
        );
        let answer = self
            .send(self.http.get(url).bearer_auth(token.expose()))
            .await?;
        answer.expect_ok()?;
        expect(answer.body["company"] == company.as_str(), || {
            format!("the entitlements are not those of company {company}")
        })?;
        let modules = answer.body["modules"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        expect(modules.iter().any(|m| m == READABLE_MODULE), || {
            format!("Core does not entitle the company to `{READABLE_MODULE}`")
        })
    }

    async fn module_allowed(&mut self) -> Outcome {
        let token = self.user_token()?;
        let answer = self
            .send(self.invoices(reqwest::Method::GET, &token))
            .await?;
        expect(answer.status.is_success(), || answer.unexpected("2xx"))
    }

    /// An empty body: a backend that wrongly allows the write refuses it
    /// as invalid (400) instead of creating a record.
    async fn module_denied(&mut self) -> Outcome {
        let token = self.user_token()?;
        let request = self
            .invoices(reqwest::Method::POST, &token)
            .json(&json!({}));
        let answer = self.send(request).await?;
        expect(answer.status == StatusCode::FORBIDDEN, || {
            let mut detail = answer.unexpected("403");
            if answer.status == StatusCode::BAD_REQUEST {
                detail += ": the permission check let the write through";
            }
            detail
        })
    }

    /// Switches the add-on on through Admin, expects the user's access to
    /// show it at once, switches it off again (always) and expects it gone.
    async fn subscription_invalidates_access(&mut self) -> Outcome {
        let user = self.user_token()?;
        let admin = self.admin_token()?;
        let mut problems = Vec::new();

        match self.set_add_on(&admin, true, false).await {
            Ok(()) => match self.access(&user).await {
                Ok(answer) if answer.modules().contains(&TOGGLED_ADD_ON) => {}
                Ok(_) => problems.push(format!(
                    "after the add-on `{TOGGLED_ADD_ON}` was activated, /auth/me/access \
                     does not list it"
                )),
                Err(why) => problems.push(format!("/auth/me/access after activating: {why}")),
            },
            Err(why) => problems.push(format!("activating add-on `{TOGGLED_ADD_ON}`: {why}")),
        }

        // The undo runs whatever happened above.
        match self.set_add_on(&admin, false, true).await {
            Ok(()) => match self.access(&user).await {
                Ok(answer) if !answer.modules().contains(&TOGGLED_ADD_ON) => {}
                Ok(_) => problems.push(format!(
                    "after the add-on `{TOGGLED_ADD_ON}` was deactivated again, \
                     /auth/me/access still lists it"
                )),
                Err(why) => problems.push(format!("/auth/me/access after restoring: {why}")),
            },
            Err(why) => {
                problems.push(format!(
                    "RESTORE FAILED: deactivating add-on `{TOGGLED_ADD_ON}` again: {why}"
                ));
                self.repairs.push(self.repair_call());
            }
        }
        expect(problems.is_empty(), || problems.join("; "))
    }

    /// `PUT /admin/companies/{company}/add-ons/market` through Admin. The
    /// undo (`always`) is tried twice and ignores the overall limit.
    async fn set_add_on(&self, token: &Secret, active: bool, always: bool) -> Result<(), String> {
        let request = || {
            self.http
                .put(self.add_on_url())
                .bearer_auth(token.expose())
                .json(&json!({ "active": active }))
        };
        if !always {
            return self.send(request()).await?.expect_ok();
        }
        let mut result = Err(String::new());
        for _ in 0..2 {
            result = exchange(request()).await.and_then(|a| a.expect_ok());
            if result.is_ok() {
                break;
            }
        }
        result
    }

    fn add_on_url(&self) -> String {
        format!(
            "{}/admin/companies/{}/add-ons/{TOGGLED_ADD_ON}",
            self.target.admin, self.credentials.company_id
        )
    }

    /// The call that undoes the add-on change by hand.
    fn repair_call(&self) -> String {
        format!(
            "the add-on `{TOGGLED_ADD_ON}` of the smoke-test company {} may still be active; \
             deactivate it as a platform admin: curl -X PUT -H 'authorization: Bearer \
             <platform-admin access token>' -H 'content-type: application/json' \
             -d '{{\"active\": false}}' {}",
            self.credentials.company_id,
            self.add_on_url()
        )
    }

    /// Ends both sessions (best effort: a session left over expires).
    async fn sign_out(&self) {
        let tokens = [
            self.user_token.clone(),
            self.admin_token.clone().and_then(Result::ok),
        ];
        for token in tokens.into_iter().flatten() {
            let request = self
                .http
                .post(format!("{}/auth/logout", self.target.auth))
                .bearer_auth(token.expose());
            let _ = self.send(request).await;
        }
    }

    /// `report` with every password and token replaced, should a service
    /// ever echo one.
    fn scrubbed(&self, mut report: Report) -> Report {
        let tokens = [
            self.user_token.clone(),
            self.admin_token.clone().and_then(Result::ok),
        ];
        let tokens: Vec<Secret> = tokens.into_iter().flatten().collect();
        let mut secrets: Vec<&str> = self.credentials.secrets().to_vec();
        secrets.extend(tokens.iter().map(Secret::expose));
        let scrub = |text: &mut String| {
            for secret in secrets.iter().filter(|s| !s.is_empty()) {
                if text.contains(secret) {
                    *text = text.replace(secret, "<redacted>");
                }
            }
        };
        for check in &mut report.checks {
            if let Some(detail) = &mut check.detail {
                scrub(detail);
            }
        }
        report.repairs.iter_mut().for_each(scrub);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: Value) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            body,
        }
    }

    #[test]
    fn an_unexpected_answer_names_status_and_error_code() {
        let denied = answer(
            403,
            json!({"error": "forbidden", "message": "access denied by permission"}),
        );
        assert_eq!(
            denied.unexpected("2xx"),
            "expected 2xx, got 403 (forbidden: access denied by permission)"
        );
        assert_eq!(
            answer(200, json!({"items": []})).unexpected("403"),
            "expected 403, got 200"
        );
        assert_eq!(
            answer(401, json!({"error": "invalid_credentials"})).unexpected("200"),
            "expected 200, got 401 (invalid_credentials)"
        );
        assert_eq!(
            answer(502, Value::Null).unexpected("200"),
            "expected 200, got 502"
        );
    }

    #[test]
    fn modules_are_the_keys_of_the_access_context() {
        let access = answer(
            200,
            json!({"modules": {"finance": ["finance.invoices.read"], "market": []}}),
        );
        assert_eq!(access.modules(), ["finance", "market"]);
        assert!(answer(200, json!({})).modules().is_empty());
    }

    #[test]
    fn the_check_names_are_unique() {
        let unique: std::collections::BTreeSet<_> = CHECKS.iter().collect();
        assert_eq!(unique.len(), CHECKS.len());
    }
}
