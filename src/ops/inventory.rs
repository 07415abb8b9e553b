//! The deliverables of plan section 29 that come straight from the matrix:
//! environment matrix, service inventory, network matrix, secrets inventory.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::matrix::model::REDIS;
use crate::matrix::schema::SecretBackend;
use crate::matrix::{ConfigValue, Environment, Matrix};

#[derive(Debug, Serialize)]
pub struct Inventory {
    pub environment: String,
    pub environments: Vec<EnvironmentRow>,
    pub services: Vec<ServiceRow>,
    pub network: Vec<NetworkRow>,
    pub secrets: Vec<SecretRow>,
}

#[derive(Debug, Serialize)]
pub struct EnvironmentRow {
    pub name: String,
    pub tier: String,
    pub namespace: String,
    pub kubernetes_context: String,
    pub secret_backend: String,
    pub tls: String,
    pub dns_managed: bool,
    pub alerts: bool,
    pub backups: bool,
    pub auth_host: String,
}

#[derive(Debug, Serialize)]
pub struct ServiceRow {
    pub service: String,
    pub unit: String,
    pub exposure: String,
    pub host: String,
    pub http_port: u16,
    pub internal_port: u16,
    pub database: Option<String>,
    pub redis: String,
    pub replicas: u32,
    pub max_replicas: u32,
    pub image: String,
    pub secrets: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct NetworkRow {
    pub from: String,
    pub to: String,
    pub kind: String,
    pub ports: String,
}

#[derive(Debug, Serialize)]
pub struct SecretRow {
    pub secret: String,
    pub category: String,
    pub generated: String,
    pub rotation_days: u32,
    pub read_by: Vec<String>,
    pub location: String,
}

pub fn kebab<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// One table of the inventory as text: column names and rows.
pub struct Table {
    pub head: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

fn on_off(on: bool) -> String {
    if on { "on" } else { "off" }.to_string()
}

impl Inventory {
    /// The environment matrix, service inventory, network matrix and
    /// secrets inventory, as `kisumctl inventory` and `kisumctl docs` print
    /// them.
    pub fn tables(&self) -> [Table; 4] {
        let environments = self
            .environments
            .iter()
            .map(|e| {
                vec![
                    e.name.clone(),
                    e.tier.clone(),
                    e.namespace.clone(),
                    e.kubernetes_context.clone(),
                    e.secret_backend.clone(),
                    e.tls.clone(),
                    on_off(e.dns_managed),
                    on_off(e.alerts),
                    on_off(e.backups),
                    e.auth_host.clone(),
                ]
            })
            .collect();
        let services = self
            .services
            .iter()
            .map(|s| {
                vec![
                    s.service.clone(),
                    s.exposure.clone(),
                    s.host.clone(),
                    format!("{}/{}", s.http_port, s.internal_port),
                    s.database.clone().unwrap_or_else(|| "-".into()),
                    s.redis.clone(),
                    format!("{}-{}", s.replicas, s.max_replicas),
                    s.image.clone(),
                ]
            })
            .collect();
        let network = self
            .network
            .iter()
            .map(|n| {
                vec![
                    n.from.clone(),
                    n.to.clone(),
                    n.kind.clone(),
                    n.ports.clone(),
                ]
            })
            .collect();
        let secrets = self
            .secrets
            .iter()
            .map(|s| {
                vec![
                    s.secret.clone(),
                    s.category.clone(),
                    s.generated.clone(),
                    format!("{}d", s.rotation_days),
                    if s.read_by.is_empty() {
                        "kisumctl".into()
                    } else {
                        s.read_by.join(",")
                    },
                    s.location.clone(),
                ]
            })
            .collect();
        [
            Table {
                head: vec![
                    "ENVIRONMENT",
                    "TIER",
                    "NAMESPACE",
                    "CONTEXT",
                    "SECRETS",
                    "TLS",
                    "DNS",
                    "ALERTS",
                    "BACKUPS",
                    "AUTH HOST",
                ],
                rows: environments,
            },
            Table {
                head: vec![
                    "SERVICE", "EXPOSURE", "HOST", "PORTS", "DATABASE", "REDIS", "REPLICAS",
                    "IMAGE",
                ],
                rows: services,
            },
            Table {
                head: vec!["FROM", "TO", "KIND", "PORTS"],
                rows: network,
            },
            Table {
                head: vec![
                    "SECRET", "CATEGORY", "SOURCE", "ROTATION", "READ BY", "LOCATION",
                ],
                rows: secrets,
            },
        ]
    }
}

pub fn build(matrix: &Matrix, env: &Environment) -> Inventory {
    let environments = matrix
        .environment_names()
        .filter_map(|name| matrix.environment(name).ok())
        .map(|e| EnvironmentRow {
            name: e.name.to_string(),
            tier: kebab(&e.file.tier),
            namespace: e.file.namespace.clone(),
            kubernetes_context: e.file.kubernetes.context.clone(),
            secret_backend: match &e.file.secrets {
                SecretBackend::LocalFiles { .. } => "local-files".into(),
                SecretBackend::AwsSecretsManager { .. } => "aws-secrets-manager".into(),
            },
            tls: kebab(&e.file.tls.mode),
            dns_managed: e.file.dns.managed,
            alerts: e.file.monitoring.alerts,
            backups: e.file.backups.enabled,
            auth_host: e
                .services
                .get("auth")
                .map(|s| s.host.clone())
                .unwrap_or_default(),
        })
        .collect();

    let services = env
        .services
        .values()
        .map(|s| ServiceRow {
            service: s.id.to_string(),
            unit: s.spec.unit.clone(),
            exposure: kebab(&s.spec.exposure),
            host: s.host.clone(),
            http_port: s.spec.ports.http,
            internal_port: s.spec.ports.internal,
            database: s.spec.database.clone(),
            redis: kebab(&s.spec.redis),
            replicas: s.replicas,
            max_replicas: s.max_replicas,
            image: s.image.clone(),
            secrets: secrets_read(s),
        })
        .collect();

    Inventory {
        environment: env.name.to_string(),
        environments,
        services,
        network: network(env),
        secrets: secrets(env),
    }
}

fn secrets_read(service: &crate::matrix::ResolvedService) -> Vec<String> {
    let mut read: Vec<String> = service
        .config
        .values()
        .filter_map(|value| match value {
            ConfigValue::Secret { secret, .. } => Some(secret.clone()),
            _ => None,
        })
        .collect();
    read.sort();
    read.dedup();
    read
}

fn network(env: &Environment) -> Vec<NetworkRow> {
    let base = env.base;
    let mut rows = Vec::new();
    for service in env
        .services
        .values()
        .filter(|s| s.spec.exposure == crate::matrix::schema::Exposure::Public)
    {
        rows.push(NetworkRow {
            from: format!("ingress ({})", base.platform.ingress.namespace),
            to: service.id.to_string(),
            kind: "public".into(),
            ports: format!("{} (http)", service.spec.ports.http),
        });
    }
    for (caller, spec) in &base.services {
        for target in &spec.egress {
            let (kind, ports) = if let Some(callee) = base.services.get(target) {
                (
                    "service",
                    format!("{}, {}", callee.ports.http, callee.ports.internal),
                )
            } else if let Some(db) = env.file.databases.get(target) {
                (
                    "database",
                    format!("{} ({})", db.endpoint.port, db.endpoint.cidr),
                )
            } else if let Some(db) = base.databases.get(target) {
                let why = if db.engine == crate::matrix::schema::Engine::Undecided {
                    "engine undecided"
                } else {
                    "no deployment here"
                };
                ("database", format!("{why}: denied"))
            } else if target == REDIS {
                let endpoint = &env.file.redis.endpoint;
                ("redis", format!("{} ({})", endpoint.port, endpoint.cidr))
            } else {
                let port = base
                    .externals
                    .get(target)
                    .map(|e| e.port)
                    .unwrap_or_default();
                ("external", format!("{port} (internet)"))
            };
            rows.push(NetworkRow {
                from: caller.clone(),
                to: target.clone(),
                kind: kind.into(),
                ports,
            });
        }
    }
    rows
}

fn secrets(env: &Environment) -> Vec<SecretRow> {
    let mut readers: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for service in env.services.values() {
        for secret in secrets_read(service) {
            let entry = readers.entry(
                env.base
                    .secrets
                    .get_key_value(&secret)
                    .map_or("", |(k, _)| k),
            );
            entry.or_default().push(service.id.to_string());
        }
    }
    env.base
        .secrets
        .iter()
        .map(|(id, secret)| SecretRow {
            secret: id.clone(),
            category: kebab(&secret.category),
            generated: kebab(&secret.generate),
            rotation_days: secret.rotation_days,
            read_by: readers.get(id.as_str()).cloned().unwrap_or_default(),
            location: env.secret_location(id),
        })
        .collect()
}
