//! A public service's Ingress and the response headers it adds.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use serde::Serialize;

use super::templates::Templates;
use super::{RenderError, labels, meta};
use crate::matrix::schema::Timeouts;
use crate::matrix::{Environment, ResolvedService};

/// API responses never render as pages.
const API_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

#[derive(Serialize)]
struct ServiceView<'a> {
    id: &'a str,
    host: &'a str,
    timeouts: Timeouts,
    request_body_limit: &'a str,
}

/// The TLS secret of a public host; `kisumctl tls` fills it.
pub fn tls_secret_name(service: &str) -> String {
    format!("tls-{service}")
}

pub fn objects(
    env: &Environment,
    service: &ResolvedService,
    templates: &Templates,
) -> Result<(ConfigMap, Ingress), RenderError> {
    let headers_name = format!("{}-security-headers", service.id);

    let mut context = tera::Context::new();
    context.insert("name", &headers_name);
    context.insert("namespace", &env.file.namespace);
    context.insert("hsts_max_age_seconds", &env.base.tls.hsts_max_age_seconds);
    context.insert("content_security_policy", API_CONTENT_SECURITY_POLICY);
    let mut headers: ConfigMap = templates.render("security-headers.yaml.tera", &context)?;
    headers.metadata.namespace = Some(env.file.namespace.clone());
    headers.metadata.name = Some(headers_name.clone());
    let mut all_labels = labels(env, service.id);
    all_labels.extend(headers.metadata.labels.take().unwrap_or_default());
    headers.metadata.labels = Some(all_labels);

    let mut context = tera::Context::new();
    context.insert(
        "service",
        &ServiceView {
            id: service.id,
            host: &service.host,
            timeouts: service.spec.timeouts,
            request_body_limit: &service.spec.request_body_limit,
        },
    );
    context.insert("namespace", &env.file.namespace);
    context.insert("environment", env.name);
    context.insert("headers_config_map", &headers_name);
    context.insert("access_logs", &env.file.monitoring.access_logs);
    let annotations: BTreeMap<String, String> =
        templates.render("ingress-annotations.yaml.tera", &context)?;

    let mut metadata = meta(env, service.id, service.id);
    metadata.annotations = Some(annotations);
    let ingress = Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: Some(env.base.platform.ingress.class_name.clone()),
            tls: Some(vec![IngressTLS {
                hosts: Some(vec![service.host.clone()]),
                secret_name: Some(tls_secret_name(service.id)),
            }]),
            rules: Some(vec![IngressRule {
                host: Some(service.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        // Only the public port: internal routes are unreachable.
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: service.id.to_string(),
                                port: Some(ServiceBackendPort {
                                    name: Some("http".into()),
                                    ..ServiceBackendPort::default()
                                }),
                            }),
                            ..IngressBackend::default()
                        },
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    };
    Ok((headers, ingress))
}
