//! Kubernetes manifests from the matrix, built as typed k8s-openapi values.
//!
//! One file per service plus `namespace.yaml` and `kustomization.yaml`, in
//! a stable order with stable formatting, so that the committed copy under
//! `manifests/<env>/` can be compared byte for byte with a fresh render.

pub mod alerts;
mod ingress;
pub use ingress::tls_secret_name;
mod network;
pub use network::{KISUMCTL_LABEL, operations_policy};
pub mod output;
pub mod schedules;
pub mod templates;
mod workload;
use workload::{previous_credentials, previous_secret_name};

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::matrix::Environment;
use templates::Templates;

/// Label and field-manager name that mark what kisumctl owns.
pub const MANAGER: &str = "kisumctl";

/// First lines of every rendered file.
pub const HEADER: &str = "# Rendered by kisumctl from environments/; do not edit by hand.\n\
                          # Change the matrix or templates/ and run `kisumctl render`.\n";

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template {template}: {message}")]
    Template { template: String, message: String },
    #[error("cannot serialize {what}: {message}")]
    Serialize { what: String, message: String },
}

/// One rendered file: its name inside `manifests/<env>/` and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub name: String,
    pub text: String,
}

/// All files of one environment, sorted by name.
pub fn render(env: &Environment, templates: &Templates) -> Result<Vec<RenderedFile>, RenderError> {
    let mut files = Vec::new();

    let mut namespace_docs = vec![to_yaml(&namespace(env), "namespace")?];
    for policy in network::namespace_policies(env) {
        namespace_docs.push(to_yaml(&policy, "namespace network policy")?);
    }
    files.push(file("namespace.yaml", &namespace_docs));

    for service in env.services.values() {
        let mut docs = Vec::new();
        for object in workload::objects(env, service) {
            docs.push(object.to_yaml()?);
        }
        docs.push(to_yaml(
            &network::service_policy(env, service),
            "network policy",
        )?);
        if service.spec.exposure == crate::matrix::schema::Exposure::Public {
            let (headers, ingress) = ingress::objects(env, service, templates)?;
            docs.push(to_yaml(&headers, "security headers")?);
            docs.push(to_yaml(&ingress, "ingress")?);
        }
        files.push(file(&format!("{}.yaml", service.id), &docs));
    }

    if let Some(docs) = external_secrets(env)? {
        files.push(file("external-secrets.yaml", &docs));
    }
    if let Some(rule) = alerts::prometheus_rule(env)? {
        files.push(file("alerts.yaml", &[rule]));
    }
    if let Some(docs) = schedules::documents(env)? {
        files.push(file("schedules.yaml", &docs));
    }

    files.sort_by(|a, b| a.name.cmp(&b.name));
    let kustomization = kustomization(env, &files);
    files.push(RenderedFile {
        name: "kustomization.yaml".into(),
        text: format!("{HEADER}{}", serialize(&kustomization, "kustomization")?),
    });
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

fn file(name: &str, docs: &[String]) -> RenderedFile {
    let mut text = HEADER.to_string();
    for doc in docs {
        text += "---\n";
        text += doc;
    }
    RenderedFile {
        name: name.to_string(),
        text,
    }
}

/// Labels every object of a service carries.
pub fn labels(env: &Environment, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), component.to_string()),
        (
            "app.kubernetes.io/part-of".to_string(),
            env.base.platform.name.clone(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGER.to_string(),
        ),
        ("kisum.io/environment".to_string(), env.name.to_string()),
    ])
}

/// The labels that select a service's pods.
pub fn selector(service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/name".to_string(), service.to_string())])
}

pub fn meta(env: &Environment, name: &str, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(env.file.namespace.clone()),
        labels: Some(labels(env, component)),
        ..ObjectMeta::default()
    }
}

/// The store of the External Secrets Operator that reads the
/// environment's Secrets Manager: a ClusterSecretStore the cluster's
/// operators set up (with the cluster's own AWS identity), named after
/// the environment.
pub fn secret_store_name(env: &Environment) -> String {
    format!("kisum-{}-secrets-manager", env.name)
}

/// For an environment whose secrets live in AWS Secrets Manager, one
/// ExternalSecret per Secret a pod mounts: the operator copies the JSON
/// object `<prefix><secret>` (the layout kisumctl's own secret store
/// writes) into a Secret of the same name, key by key, and refreshes it
/// hourly, so a rotated value reaches the mounted files without a
/// restart. Also one per `tls-<service>` certificate an Ingress names,
/// where `kisumctl tls issue` keeps it (keys `tls.crt` and `tls.key`),
/// made a `kubernetes.io/tls` Secret through a template. `None` for other
/// backends.
fn external_secrets(env: &Environment) -> Result<Option<Vec<String>>, RenderError> {
    let crate::matrix::schema::SecretBackend::AwsSecretsManager { prefix, .. } = &env.file.secrets
    else {
        return Ok(None);
    };
    let secrets: std::collections::BTreeSet<String> = env
        .services
        .values()
        .flat_map(|service| workload::mounted_secrets(env, service))
        .collect();
    let certificates: std::collections::BTreeSet<String> = env
        .services
        .values()
        .filter(|s| s.spec.exposure == crate::matrix::schema::Exposure::Public)
        .map(|s| tls_secret_name(s.id))
        .collect();
    let mut docs = Vec::new();
    for secret in secrets.iter().chain(&certificates) {
        let mut target = serde_json::json!({
            "name": secret, "creationPolicy": "Owner", "deletionPolicy": "Retain",
        });
        if certificates.contains(secret) {
            target["template"] = tls_template();
        }
        let object = serde_json::json!({
            "apiVersion": "external-secrets.io/v1",
            "kind": "ExternalSecret",
            "metadata": meta(env, secret, "external-secrets"),
            "spec": {
                "refreshInterval": "1h",
                "secretStoreRef": { "kind": "ClusterSecretStore", "name": secret_store_name(env) },
                "target": target,
                "dataFrom": [ { "extract": { "key": format!("{prefix}{secret}") } } ],
            },
        });
        docs.push(to_yaml(&object, "external secret")?);
    }
    for (secret, items) in previous_stages(env) {
        let data: Vec<serde_json::Value> = items
            .iter()
            .map(|item| {
                serde_json::json!({
                    "secretKey": item,
                    "remoteRef": {
                        "key": format!("{prefix}{secret}"),
                        "property": item,
                        "version": crate::secrets::Stage::Previous.label(),
                    },
                })
            })
            .collect();
        let name = previous_secret_name(&secret);
        let object = serde_json::json!({
            "apiVersion": "external-secrets.io/v1",
            "kind": "ExternalSecret",
            "metadata": meta(env, &name, "external-secrets"),
            "spec": {
                "refreshInterval": "1h",
                "secretStoreRef": { "kind": "ClusterSecretStore", "name": secret_store_name(env) },
                "target": { "name": name, "creationPolicy": "Owner", "deletionPolicy": "Retain" },
                "data": data,
            },
        });
        docs.push(to_yaml(&object, "external secret")?);
    }
    Ok(Some(docs))
}

/// The secrets whose previous stage some pod mounts, with the keys read.
/// Their ExternalSecrets read `remoteRef.version: AWSPREVIOUS` (a staging
/// label; the operator reads a version id only with a `uuid/` prefix), in
/// a Secret of their own: before a secret's first rotation there may be no
/// such stage (`secrets apply` labels the first version, but a secret
/// written otherwise has none), and then only this ExternalSecret fails to
/// sync, not the one of the current value.
fn previous_stages(env: &Environment) -> BTreeMap<String, Vec<String>> {
    let mut stages: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for service in env.services.values() {
        for previous in previous_credentials(env, service) {
            let items = stages.entry(previous.secret).or_default();
            if !items.contains(&previous.item) {
                items.push(previous.item);
            }
        }
    }
    for items in stages.values_mut() {
        items.sort();
    }
    stages
}

/// The target template of a certificate's ExternalSecret: a Secret of
/// type `kubernetes.io/tls` whose two keys are those `kisumctl tls`
/// stores (keys with a dot are read with `index`).
fn tls_template() -> serde_json::Value {
    let key = |name: &str| format!("{{{{ index . \"{name}\" }}}}");
    serde_json::json!({
        "type": "kubernetes.io/tls",
        "engineVersion": "v2",
        "data": {
            crate::tls::CERT_KEY: key(crate::tls::CERT_KEY),
            crate::tls::KEY_KEY: key(crate::tls::KEY_KEY),
        },
    })
}

fn namespace(env: &Environment) -> Namespace {
    let mut labels = labels(env, "namespace");
    for mode in ["enforce", "audit", "warn"] {
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}"),
            "restricted".into(),
        );
    }
    Namespace {
        metadata: ObjectMeta {
            name: Some(env.file.namespace.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Kustomization {
    api_version: &'static str,
    kind: &'static str,
    namespace: String,
    resources: Vec<String>,
}

fn kustomization(env: &Environment, files: &[RenderedFile]) -> Kustomization {
    Kustomization {
        api_version: "kustomize.config.k8s.io/v1beta1",
        kind: "Kustomization",
        namespace: env.file.namespace.clone(),
        resources: files.iter().map(|f| f.name.clone()).collect(),
    }
}

/// Serializes one object as a YAML document body.
pub fn to_yaml<T: Serialize>(object: &T, what: &str) -> Result<String, RenderError> {
    serialize(object, what)
}

fn serialize<T: Serialize>(object: &T, what: &str) -> Result<String, RenderError> {
    let mut text = serde_saphyr::to_string(object).map_err(|error| RenderError::Serialize {
        what: what.to_string(),
        message: error.to_string(),
    })?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}
