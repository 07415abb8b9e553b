//! The environment's namespace through kube: server-side apply as
//! kisumctl's field manager (forced: the matrix is the truth), reads,
//! label-selected lists, deletes and pod logs, on untyped objects. Every
//! error names what was being done, to which object, and whether the API
//! server refused it or the connection failed.

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

use super::FIELD_MANAGER;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{action} {object}: the API server refused it ({code} {reason}): {message}")]
    Refused {
        action: &'static str,
        object: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error(
        "{action} {object}: no answer from the API server ({message}); check that the cluster is reachable and rerun"
    )]
    Connection {
        action: &'static str,
        object: String,
        message: String,
    },
    #[error("{action} {object}: unexpected answer: {message}")]
    Answer {
        action: &'static str,
        object: String,
        message: String,
    },
}

impl ApiError {
    /// What went wrong, without the action and object it was said of
    /// (for a sentence that names them its own way).
    pub fn reason(&self) -> String {
        let (ApiError::Refused { action, object, .. }
        | ApiError::Connection { action, object, .. }
        | ApiError::Answer { action, object, .. }) = self;
        let text = self.to_string();
        text.strip_prefix(&format!("{action} {object}: "))
            .map_or(text.clone(), str::to_string)
    }

    pub fn from_kube(action: &'static str, object: &str, error: kube::Error) -> ApiError {
        let object = object.to_string();
        match error {
            kube::Error::Api(status) => ApiError::Refused {
                action,
                object,
                code: status.code,
                reason: status.reason.clone(),
                message: status.message.clone(),
            },
            kube::Error::SerdeError(e) => ApiError::Answer {
                action,
                object,
                message: e.to_string(),
            },
            other => ApiError::Connection {
                action,
                object,
                message: chain(&other),
            },
        }
    }

    /// 409: another field manager owns a field, or the object changed
    /// under a replace.
    pub fn is_conflict(&self) -> bool {
        matches!(self, ApiError::Refused { code: 409, .. })
    }

    fn is_not_found(&self) -> bool {
        matches!(self, ApiError::Refused { code: 404, .. })
    }
}

/// An error and its sources, `: `-separated.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        source = cause.source();
    }
    text
}

/// The environment's namespace of one cluster.
#[derive(Clone)]
pub struct Namespace {
    pub client: kube::Client,
    pub name: String,
}

/// The API resource of an apiVersion and kind (plural guessed the way
/// kube guesses it, which holds for every kind kisumctl renders).
fn resource(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

impl Namespace {
    pub fn new(client: kube::Client, name: &str) -> Namespace {
        Namespace {
            client,
            name: name.to_string(),
        }
    }

    fn api(&self, api_version: &str, kind: &str) -> Api<DynamicObject> {
        let resource = resource(api_version, kind);
        if kind == "Namespace" {
            Api::all_with(self.client.clone(), &resource)
        } else {
            Api::namespaced_with(self.client.clone(), &self.name, &resource)
        }
    }

    /// Server-side apply; with `dry_run`, the server's dry run (nothing is
    /// stored). Answers the object as the server would keep it.
    pub async fn apply(&self, object: &Value, dry_run: bool) -> Result<Value, ApiError> {
        let (api_version, kind) = type_of(object);
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let reference = format!("{kind}/{name}");
        let mut params = PatchParams::apply(FIELD_MANAGER).force();
        if dry_run {
            params = params.dry_run();
        }
        let applied = self
            .api(api_version, kind)
            .patch(name, &params, &Patch::Apply(object))
            .await
            .map_err(|e| ApiError::from_kube("applying", &reference, e))?;
        to_value(&applied, "applying", &reference)
    }

    /// The live object, or `None` when it does not exist.
    pub async fn get(
        &self,
        api_version: &str,
        kind: &str,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let reference = format!("{kind}/{name}");
        match self.api(api_version, kind).get(name).await {
            Ok(object) => Ok(Some(to_value(&object, "reading", &reference)?)),
            Err(e) => {
                let error = ApiError::from_kube("reading", &reference, e);
                if error.is_not_found() {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
        }
    }

    /// Objects of a kind whose labels match `selector` (`k=v,k=v`).
    pub async fn list(
        &self,
        api_version: &str,
        kind: &str,
        selector: &str,
    ) -> Result<Vec<Value>, ApiError> {
        let params = ListParams::default().labels(selector);
        let what = format!("{kind} objects labelled {selector}");
        let list = self
            .api(api_version, kind)
            .list(&params)
            .await
            .map_err(|e| ApiError::from_kube("listing", &what, e))?;
        list.items
            .iter()
            .map(|item| {
                let mut value = to_value(item, "listing", &what)?;
                value["apiVersion"] = Value::from(api_version);
                value["kind"] = Value::from(kind);
                Ok(value)
            })
            .collect()
    }

    /// Deletes an object; one already gone is not an error.
    pub async fn delete(
        &self,
        api_version: &str,
        kind: &str,
        name: &str,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        let reference = format!("{kind}/{name}");
        let params = if dry_run {
            DeleteParams::default().dry_run()
        } else {
            DeleteParams::background()
        };
        match self.api(api_version, kind).delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let error = ApiError::from_kube("deleting", &reference, e);
                if error.is_not_found() {
                    Ok(())
                } else {
                    Err(error)
                }
            }
        }
    }

    /// The log of a pod of the namespace.
    pub async fn pod_log(&self, pod: &str) -> Result<String, ApiError> {
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.client.clone(), &self.name);
        pods.logs(pod, &LogParams::default())
            .await
            .map_err(|e| ApiError::from_kube("reading the log of", &format!("Pod/{pod}"), e))
    }
}

fn type_of(object: &Value) -> (&str, &str) {
    (
        object["apiVersion"].as_str().unwrap_or_default(),
        object["kind"].as_str().unwrap_or_default(),
    )
}

fn to_value(
    object: &DynamicObject,
    action: &'static str,
    reference: &str,
) -> Result<Value, ApiError> {
    serde_json::to_value(object).map_err(|e| ApiError::Answer {
        action,
        object: reference.to_string(),
        message: e.to_string(),
    })
}
