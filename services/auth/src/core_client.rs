//! Platform Core's entitlement routes, called with Auth's internal
//! credential and the request's id and trace context.

use std::time::{Duration, Instant};

use kisum_common::internal::Credential;
use kisum_common::telemetry::RequestContext;
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use crate::metrics::AuthMetrics;

const TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /v1/companies/{company}/entitlements`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Entitlements {
    pub version: i64,
    /// True only while a subscription including Basic is active.
    pub core_app: bool,
    #[serde(deserialize_with = "module_keys")]
    pub modules: Vec<String>,
}

impl Entitlements {
    /// What a company Core has never heard of is entitled to.
    fn none() -> Entitlements {
        Entitlements {
            version: 0,
            core_app: false,
            modules: Vec::new(),
        }
    }
}

/// Modules as plain keys, or as objects naming their key.
fn module_keys<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Module {
        Key(String),
        Object {
            #[serde(alias = "module", alias = "id")]
            key: String,
        },
    }
    let modules = Vec::<Module>::deserialize(deserializer)?;
    Ok(modules
        .into_iter()
        .map(|m| match m {
            Module::Key(key) | Module::Object { key } => key,
        })
        .collect())
}

#[derive(Deserialize)]
struct Version {
    version: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("Platform Core unreachable: {0}")]
    Unreachable(String),
    #[error("Platform Core answered {0}")]
    Status(u16),
    #[error("Platform Core sent an unreadable body: {0}")]
    Body(String),
}

#[derive(Clone)]
pub struct CoreClient {
    base: String,
    http: reqwest::Client,
    credential: Credential,
    metrics: AuthMetrics,
}

impl CoreClient {
    pub fn new(base: String, credential: Credential, metrics: AuthMetrics) -> CoreClient {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(TIMEOUT)
            .build()
            .unwrap_or_default();
        CoreClient {
            base,
            http,
            credential,
            metrics,
        }
    }

    pub async fn entitlements(
        &self,
        context: &RequestContext,
        company: Uuid,
    ) -> Result<Entitlements, CoreError> {
        let url = format!("{}/v1/companies/{company}/entitlements", self.base);
        Ok(self
            .get(context, &url)
            .await?
            .unwrap_or_else(Entitlements::none))
    }

    pub async fn entitlement_version(
        &self,
        context: &RequestContext,
        company: Uuid,
    ) -> Result<i64, CoreError> {
        let url = format!("{}/v1/companies/{company}/entitlements/version", self.base);
        let version: Option<Version> = self.get(context, &url).await?;
        Ok(version.map_or(0, |v| v.version))
    }

    /// Reads Core's catalog with Auth's credential: proves that Core is
    /// reachable and admits Auth. Answers how long the call took.
    pub async fn probe(&self, context: &RequestContext) -> Result<Duration, CoreError> {
        let started = Instant::now();
        let url = format!("{}/v1/catalog", self.base);
        let found: Option<serde_json::Value> = self.get(context, &url).await?;
        match found {
            Some(_) => Ok(started.elapsed()),
            None => Err(CoreError::Status(404)),
        }
    }

    /// The body, or `None` for a 404 (a company Core does not know).
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        context: &RequestContext,
        url: &str,
    ) -> Result<Option<T>, CoreError> {
        let started = Instant::now();
        let mut headers = context.outgoing();
        self.credential.apply(&mut headers);
        let result = self.http.get(url).headers(headers).send().await;
        self.metrics.core_lookup(started.elapsed());
        let response = result.map_err(|e| CoreError::Unreachable(without_url(&e)))?;
        match response.status() {
            status if status.is_success() => response
                .json()
                .await
                .map(Some)
                .map_err(|e| CoreError::Body(without_url(&e))),
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            status => Err(CoreError::Status(status.as_u16())),
        }
    }
}

fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "<core>");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_may_be_keys_or_objects() {
        let plain: Entitlements = serde_json::from_str(
            r#"{"company":"c","version":3,"core_app":true,"modules":["basic","finance"]}"#,
        )
        .unwrap();
        assert_eq!(plain.modules, ["basic", "finance"]);
        let objects: Entitlements = serde_json::from_str(
            r#"{"version":4,"core_app":false,"modules":[{"key":"finance","name":"Finance"}]}"#,
        )
        .unwrap();
        assert_eq!(objects.modules, ["finance"]);
    }
}
