//! Calls to Platform Core and Auth: internal routes, with Admin's
//! credential, the request's id and trace context, and (for Core writes)
//! the admin user as `x-kisum-actor`.

use std::time::Duration;

use axum::http::StatusCode;
use kisum_common::internal::Credential;
use kisum_common::telemetry::RequestContext;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::AdminError;

pub const ACTOR_HEADER: &str = "x-kisum-actor";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_secs(10);

/// Core's answer to a company write: the entitlements before and after.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntitlementChange {
    pub company: Uuid,
    pub before: Value,
    pub after: Value,
}

/// Core's answer to a catalog write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatalogChange {
    pub item: Value,
    pub created: bool,
    pub bumped: Vec<Bumped>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bumped {
    pub company: Uuid,
    pub version: i64,
}

/// One internal service: its base URL and the credential Admin presents.
#[derive(Clone)]
struct Upstream {
    base: String,
    http: reqwest::Client,
    credential: Credential,
}

impl Upstream {
    fn new(base: &str, credential: &Credential) -> Upstream {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(TIMEOUT)
            .build()
            .unwrap_or_default();
        Upstream {
            base: base.to_string(),
            http,
            credential: credential.clone(),
        }
    }

    /// The status and JSON body (`null` when there is none).
    async fn send(
        &self,
        context: &RequestContext,
        method: Method,
        path: &str,
        actor: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), reqwest::Error> {
        let mut headers = context.outgoing();
        self.credential.apply(&mut headers);
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .headers(headers);
        if let Some(actor) = actor {
            request = request.header(ACTOR_HEADER, actor);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }
}

#[derive(Clone)]
pub struct CoreClient {
    upstream: Upstream,
}

impl CoreClient {
    pub fn new(base: &str, credential: &Credential) -> CoreClient {
        CoreClient {
            upstream: Upstream::new(base, credential),
        }
    }

    pub async fn entitlements(
        &self,
        context: &RequestContext,
        company: Uuid,
    ) -> Result<Value, AdminError> {
        let path = format!("/v1/companies/{company}/entitlements");
        self.call(context, Method::GET, &path, None, None).await
    }

    pub async fn catalog(&self, context: &RequestContext) -> Result<Value, AdminError> {
        self.call(context, Method::GET, "/v1/catalog", None, None)
            .await
    }

    pub async fn set_subscription(
        &self,
        context: &RequestContext,
        actor: &str,
        company: Uuid,
        body: &Value,
    ) -> Result<EntitlementChange, AdminError> {
        let path = format!("/v1/companies/{company}/subscription");
        self.call(context, Method::PUT, &path, Some(actor), Some(body))
            .await
    }

    /// `add_on` must already be a valid key (it goes into the path as is).
    pub async fn set_add_on(
        &self,
        context: &RequestContext,
        actor: &str,
        company: Uuid,
        add_on: &str,
        body: &Value,
    ) -> Result<EntitlementChange, AdminError> {
        let path = format!("/v1/companies/{company}/add-ons/{add_on}");
        self.call(context, Method::PUT, &path, Some(actor), Some(body))
            .await
    }

    pub async fn put_package(
        &self,
        context: &RequestContext,
        actor: &str,
        body: &Value,
    ) -> Result<CatalogChange, AdminError> {
        self.call(
            context,
            Method::POST,
            "/v1/catalog/packages",
            Some(actor),
            Some(body),
        )
        .await
    }

    pub async fn put_add_on(
        &self,
        context: &RequestContext,
        actor: &str,
        body: &Value,
    ) -> Result<CatalogChange, AdminError> {
        self.call(
            context,
            Method::POST,
            "/v1/catalog/add-ons",
            Some(actor),
            Some(body),
        )
        .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        context: &RequestContext,
        method: Method,
        path: &str,
        actor: Option<&str>,
        body: Option<&Value>,
    ) -> Result<T, AdminError> {
        let (status, answer) = self
            .upstream
            .send(context, method, path, actor, body)
            .await
            .map_err(|error| AdminError::CoreUnavailable(error.to_string()))?;
        core_answer(status, answer)
    }
}

/// A 2xx body as `T`; Core's refusals of the request are passed on, its
/// refusal of Admin's credential and its failures are Admin's 502.
fn core_answer<T: DeserializeOwned>(status: StatusCode, answer: Value) -> Result<T, AdminError> {
    upstream_answer(
        status,
        answer,
        AdminError::CoreUnavailable,
        |status, code, message| AdminError::CoreRejected {
            status,
            code: code.unwrap_or_else(|| "core_rejected".into()),
            message,
        },
    )
}

/// The same for Auth's directory routes.
fn auth_answer<T: DeserializeOwned>(status: StatusCode, answer: Value) -> Result<T, AdminError> {
    upstream_answer(
        status,
        answer,
        AdminError::AuthUnavailable,
        |status, code, message| AdminError::AuthRejected {
            status,
            code: code.unwrap_or_else(|| "auth_rejected".into()),
            message,
        },
    )
}

fn upstream_answer<T: DeserializeOwned>(
    status: StatusCode,
    answer: Value,
    unavailable: fn(String) -> AdminError,
    rejected: fn(StatusCode, Option<String>, String) -> AdminError,
) -> Result<T, AdminError> {
    if status.is_success() {
        return serde_json::from_value(answer)
            .map_err(|error| unavailable(format!("unreadable answer: {error}")));
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(unavailable(format!(
            "the internal credential of Admin was refused ({status})"
        )));
    }
    if status.is_client_error() {
        let text = |field: &str| answer[field].as_str().unwrap_or_default().to_string();
        let code = Some(text("error")).filter(|code| !code.is_empty());
        return Err(rejected(status, code, text("message")));
    }
    Err(unavailable(format!("answered {status}")))
}

#[derive(Clone)]
pub struct AuthClient {
    upstream: Upstream,
}

#[derive(Deserialize)]
struct PlatformAccess {
    platform_roles: Vec<String>,
}

impl AuthClient {
    pub fn new(base: &str, credential: &Credential) -> AuthClient {
        AuthClient {
            upstream: Upstream::new(base, credential),
        }
    }

    /// The user's platform roles; `None` when Auth says the session is
    /// revoked or unknown.
    pub async fn platform_roles(
        &self,
        context: &RequestContext,
        user: &str,
        session: &str,
    ) -> Result<Option<Vec<String>>, AdminError> {
        let body = serde_json::json!({ "user": user, "session": session });
        let (status, answer) = self
            .upstream
            .send(
                context,
                Method::POST,
                "/internal/platform-access",
                None,
                Some(&body),
            )
            .await
            .map_err(|error| AdminError::AuthUnavailable(error.to_string()))?;
        match status {
            StatusCode::OK => serde_json::from_value::<PlatformAccess>(answer)
                .map(|access| Some(access.platform_roles))
                .map_err(|error| {
                    AdminError::AuthUnavailable(format!("unreadable answer: {error}"))
                }),
            // Auth refusing Admin's own credential is a fault here, not the
            // user's session: the error code tells the two apart.
            StatusCode::UNAUTHORIZED
                if answer["error"] == kisum_common::internal::CREDENTIAL_REQUIRED =>
            {
                Err(AdminError::AuthUnavailable(
                    "Auth refused Admin's internal credential".to_string(),
                ))
            }
            StatusCode::UNAUTHORIZED => Ok(None),
            other => Err(AdminError::AuthUnavailable(format!(
                "platform-access answered {other}"
            ))),
        }
    }

    /// A directory route of Auth (`/internal/companies/...`,
    /// `/internal/memberships/...`, `/internal/roles...`), made for `actor`.
    pub async fn directory(
        &self,
        context: &RequestContext,
        actor: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, AdminError> {
        let (status, answer) = self
            .upstream
            .send(context, method, path, Some(actor), body)
            .await
            .map_err(|error| AdminError::AuthUnavailable(error.to_string()))?;
        auth_answer(status, answer)
    }

    /// A directory read of Auth (`GET path`), made for `actor`.
    pub async fn directory_read(
        &self,
        context: &RequestContext,
        actor: &str,
        path: &str,
    ) -> Result<Value, AdminError> {
        self.directory(context, actor, Method::GET, path, None)
            .await
    }

    /// Tells Auth to recompute the company's access on next use.
    pub async fn invalidate_company(
        &self,
        context: &RequestContext,
        company: Uuid,
    ) -> Result<(), String> {
        let body = serde_json::json!({ "company": company });
        let (status, _) = self
            .upstream
            .send(
                context,
                Method::POST,
                "/internal/invalidate",
                None,
                Some(&body),
            )
            .await
            .map_err(|error| error.to_string())?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("invalidate answered {status}"))
        }
    }
}
