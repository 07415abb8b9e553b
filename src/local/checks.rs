//! The deploy's own quick checks, run before the smoke checks and by
//! `status --verify`: every process ready, Auth reaches Core, the smoke
//! user logs in and reads finance invoices of the smoke company.

use std::time::{Duration, Instant};

use super::plan::Endpoints;
use super::probe;
use super::seed;
use super::state::ProcessSpec;
use crate::secrets::Secret;
use crate::smoke::Credentials;

#[derive(Debug, Clone, serde::Serialize)]
pub struct QuickCheck {
    pub name: &'static str,
    pub passed: bool,
    pub duration: Duration,
    pub detail: String,
}

/// `x-kisum-caller` / `x-kisum-credential` of kisumctl's internal calls.
pub fn internal_headers(token: &Secret) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "x-kisum-caller",
        reqwest::header::HeaderValue::from_static("kisumctl"),
    );
    if let Ok(mut value) = reqwest::header::HeaderValue::from_str(token.expose().trim()) {
        value.set_sensitive(true);
        headers.insert("x-kisum-credential", value);
    }
    headers
}

/// Auth's `/internal/core-reachability`, as kisumctl.
pub async fn auth_reaches_core(
    client: &reqwest::Client,
    endpoints: &Endpoints,
    token: &Secret,
) -> Result<String, String> {
    let auth = endpoints
        .internal
        .get("auth")
        .ok_or("no internal URL for auth")?;
    let response = client
        .get(format!("{auth}/internal/core-reachability"))
        .headers(internal_headers(token))
        .send()
        .await
        .map_err(|e| probe::without_url(&e))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!(
            "Auth answered {status}: {}",
            body.chars().take(300).collect::<String>()
        ))
    }
}

pub async fn run(
    client: &reqwest::Client,
    endpoints: &Endpoints,
    processes: &[ProcessSpec],
    kisumctl: &Secret,
    fixtures: &Credentials,
) -> Vec<QuickCheck> {
    let mut checks = Vec::new();
    let started = Instant::now();
    let mut failing = Vec::new();
    for spec in processes {
        if let Err(reason) = probe::check(client, &spec.probe).await {
            failing.push(format!("{}: {reason}", spec.name));
        }
    }
    checks.push(QuickCheck {
        name: "ready",
        passed: failing.is_empty(),
        duration: started.elapsed(),
        detail: if failing.is_empty() {
            format!("{} processes ready", processes.len())
        } else {
            failing.join("; ")
        },
    });

    let started = Instant::now();
    let reached = auth_reaches_core(client, endpoints, kisumctl).await;
    checks.push(QuickCheck {
        name: "auth-reaches-core",
        passed: reached.is_ok(),
        duration: started.elapsed(),
        detail: reached.unwrap_or_else(|e| e),
    });

    let started = Instant::now();
    let auth = endpoints.public.get("auth").cloned().unwrap_or_default();
    let token = seed::login(client, &auth, &fixtures.user_email, &fixtures.user_password).await;
    checks.push(QuickCheck {
        name: "login",
        passed: token.is_ok(),
        duration: started.elapsed(),
        detail: match &token {
            Ok(_) => format!("{} logged in", fixtures.user_email),
            Err(error) => format!("{error:#}"),
        },
    });

    let started = Instant::now();
    let read = match token {
        Ok(token) => finance_read(client, endpoints, &token, &fixtures.company_slug).await,
        Err(_) => Err("skipped: no token".to_string()),
    };
    checks.push(QuickCheck {
        name: "module-read",
        passed: read.is_ok(),
        duration: started.elapsed(),
        detail: read.unwrap_or_else(|e| e),
    });
    checks
}

async fn finance_read(
    client: &reqwest::Client,
    endpoints: &Endpoints,
    token: &Secret,
    org: &str,
) -> Result<String, String> {
    let finance = endpoints
        .public
        .get("finance")
        .ok_or("no URL for finance")?;
    let response = client
        .get(format!("{finance}/v1/invoices"))
        .bearer_auth(token.expose())
        .header("x-org", org)
        .send()
        .await
        .map_err(|e| probe::without_url(&e))?;
    let status = response.status();
    if status.is_success() {
        Ok(format!("GET finance /v1/invoices: {status}"))
    } else {
        let body = response.text().await.unwrap_or_default();
        Err(format!(
            "GET finance /v1/invoices answered {status}: {}",
            body.chars().take(300).collect::<String>()
        ))
    }
}
