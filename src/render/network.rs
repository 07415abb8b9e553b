//! NetworkPolicies compiled from the traffic matrix: the namespace denies
//! everything, then each service is allowed exactly what its `egress`
//! names and what other services' `egress` names towards it.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{meta, selector};
use crate::matrix::model::REDIS;
use crate::matrix::schema::{Endpoint, Exposure};
use crate::matrix::{Environment, ResolvedService};

/// Networks no internet-bound egress may reach (private ranges).
const PRIVATE_RANGES: [&str; 3] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];

/// Pods of kisumctl's own Jobs (diagnostics, key reloads, migrations).
pub const KISUMCTL_LABEL: (&str, &str) = ("app.kubernetes.io/name", "kisumctl");

/// Default deny for the namespace, and DNS for every pod.
pub fn namespace_policies(env: &Environment) -> Vec<NetworkPolicy> {
    let everything = LabelSelector::default();
    let deny = NetworkPolicy {
        metadata: meta(env, "default-deny", "network"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(everything.clone()),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ..NetworkPolicySpec::default()
        }),
    };
    let dns = NetworkPolicy {
        metadata: meta(env, "allow-dns", "network"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(everything),
            policy_types: Some(vec!["Egress".into()]),
            egress: Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(namespace_selector("kube-system")),
                    pod_selector: Some(labels_selector(&BTreeMap::from([(
                        "k8s-app".to_string(),
                        "kube-dns".to_string(),
                    )]))),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(vec![port_udp(53), port_number(53)]),
            }]),
            ..NetworkPolicySpec::default()
        }),
    };
    vec![deny, dns]
}

/// Everything one service may receive and send.
pub fn service_policy(env: &Environment, service: &ResolvedService) -> NetworkPolicy {
    let mut ingress = Vec::new();
    if service.spec.exposure == Exposure::Public {
        let controller = &env.base.platform.ingress;
        ingress.push(NetworkPolicyIngressRule {
            from: Some(vec![pods_in(&controller.namespace, &controller.pod_labels)]),
            ports: Some(vec![port_named("http")]),
        });
    }
    let callers: Vec<NetworkPolicyPeer> = env
        .base
        .services
        .iter()
        .filter(|(_, other)| other.egress.iter().any(|target| target == service.id))
        .map(|(caller, _)| same_namespace_pods(&selector(caller)))
        .collect();
    if !callers.is_empty() {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(callers),
            ports: Some(vec![port_named("http"), port_named("internal")]),
        });
    }
    let scraper = &env.base.platform.metrics_scraper;
    let kisumctl = BTreeMap::from([(KISUMCTL_LABEL.0.to_string(), KISUMCTL_LABEL.1.to_string())]);
    ingress.push(NetworkPolicyIngressRule {
        from: Some(vec![
            pods_in(&scraper.namespace, &scraper.pod_labels),
            same_namespace_pods(&kisumctl),
        ]),
        ports: Some(vec![port_named("internal")]),
    });

    let mut egress = Vec::new();
    for target in &service.spec.egress {
        if let Some(callee) = env.base.services.get(target) {
            egress.push(NetworkPolicyEgressRule {
                to: Some(vec![same_namespace_pods(&selector(target))]),
                ports: Some(vec![
                    port_number(callee.ports.http),
                    port_number(callee.ports.internal),
                ]),
            });
        } else if let Some(deployment) = env.file.databases.get(target) {
            egress.push(to_endpoint(&deployment.endpoint));
        } else if target == REDIS {
            egress.push(to_endpoint(&env.file.redis.endpoint));
        } else if let Some(external) = env.base.externals.get(target) {
            egress.push(outside_private_ranges(external.port));
        }
        // A database whose engine is undecided has no deployment yet and
        // so no rule: its traffic stays denied until the matrix places it.
    }

    NetworkPolicy {
        metadata: meta(env, service.id, service.id),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(labels_selector(&selector(service.id))),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    }
}

/// The NetworkPolicy of the Jobs kisumctl launches for `backup`,
/// `restore` and `drill` (pods labelled [`KISUMCTL_LABEL`]): no ingress;
/// egress to every database and Redis endpoint of the environment, and to
/// HTTPS outside the private ranges (the secret backend and the backup
/// store). Built when a Job is launched, not rendered.
pub fn operations_policy(env: &Environment, name: &str) -> NetworkPolicy {
    let mut egress: Vec<NetworkPolicyEgressRule> = env
        .file
        .databases
        .values()
        .map(|deployment| to_endpoint(&deployment.endpoint))
        .collect();
    egress.push(to_endpoint(&env.file.redis.endpoint));
    egress.push(outside_private_ranges(443));
    let pods = BTreeMap::from([(KISUMCTL_LABEL.0.to_string(), KISUMCTL_LABEL.1.to_string())]);
    NetworkPolicy {
        metadata: meta(env, name, KISUMCTL_LABEL.1),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(labels_selector(&pods)),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(Vec::new()),
            egress: Some(egress),
        }),
    }
}

/// Egress to `port` of any address outside the private ranges.
fn outside_private_ranges(port: u16) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: "0.0.0.0/0".into(),
                except: Some(PRIVATE_RANGES.iter().map(|r| r.to_string()).collect()),
            }),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(vec![port_number(port)]),
    }
}

fn to_endpoint(endpoint: &Endpoint) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: endpoint.cidr.clone(),
                except: None,
            }),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(vec![port_number(endpoint.port)]),
    }
}

fn labels_selector(labels: &BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels.clone()),
        ..LabelSelector::default()
    }
}

fn namespace_selector(namespace: &str) -> LabelSelector {
    labels_selector(&BTreeMap::from([(
        "kubernetes.io/metadata.name".to_string(),
        namespace.to_string(),
    )]))
}

fn pods_in(namespace: &str, labels: &BTreeMap<String, String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(namespace_selector(namespace)),
        pod_selector: Some(labels_selector(labels)),
        ..NetworkPolicyPeer::default()
    }
}

fn same_namespace_pods(labels: &BTreeMap<String, String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(labels_selector(labels)),
        ..NetworkPolicyPeer::default()
    }
}

fn port_named(name: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    }
}

fn port_number(port: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(i32::from(port))),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    }
}

fn port_udp(port: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some("UDP".into()),
        ..port_number(port)
    }
}
