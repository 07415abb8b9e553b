//! A service's workload objects: ServiceAccount, ConfigMap, Deployment,
//! Service, PodDisruptionBudget and, when it scales, an autoscaler.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, HTTPGetAction, KeyToPath, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Service,
    ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

use super::{RenderError, meta, selector, to_yaml};
use crate::matrix::{ConfigValue, Environment, ResolvedService};

/// Where secrets are mounted: `<root>/<secret>/<key>`.
pub const SECRET_ROOT: &str = "/var/run/secrets/kisum";

/// CPU utilisation the autoscaler aims for.
const TARGET_CPU_PERCENT: i32 = 70;

/// The service's workload objects as YAML documents, in apply order.
pub fn objects(env: &Environment, service: &ResolvedService) -> Vec<Renderable> {
    let mut objects = vec![
        Renderable::ServiceAccount(service_account(env, service)),
        Renderable::ConfigMap(config_map(env, service)),
        Renderable::Deployment(Box::new(deployment(env, service))),
        Renderable::Service(kube_service(env, service)),
        Renderable::Budget(budget(env, service)),
    ];
    if service.replicas > 1 {
        objects.push(Renderable::Autoscaler(autoscaler(env, service)));
    }
    objects
}

/// The kinds this module builds, each serialized the same way.
pub enum Renderable {
    ServiceAccount(ServiceAccount),
    ConfigMap(ConfigMap),
    Deployment(Box<Deployment>),
    Service(Service),
    Budget(PodDisruptionBudget),
    Autoscaler(HorizontalPodAutoscaler),
}

impl Renderable {
    pub fn to_yaml(&self) -> Result<String, RenderError> {
        match self {
            Renderable::ServiceAccount(o) => to_yaml(o, "service account"),
            Renderable::ConfigMap(o) => to_yaml(o, "config map"),
            Renderable::Deployment(o) => to_yaml(o, "deployment"),
            Renderable::Service(o) => to_yaml(o, "service"),
            Renderable::Budget(o) => to_yaml(o, "pod disruption budget"),
            Renderable::Autoscaler(o) => to_yaml(o, "autoscaler"),
        }
    }
}

fn service_account(env: &Environment, service: &ResolvedService) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(env, service.id, service.id),
        // The services never call the Kubernetes API.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

fn config_data(service: &ResolvedService) -> BTreeMap<String, String> {
    service
        .config
        .iter()
        .filter_map(|(key, value)| match value {
            ConfigValue::Plain { value } => Some((key.to_string(), value.clone())),
            ConfigValue::Secret { .. } | ConfigValue::Unset => None,
        })
        .collect()
}

fn config_map(env: &Environment, service: &ResolvedService) -> ConfigMap {
    ConfigMap {
        metadata: meta(env, &format!("{}-config", service.id), service.id),
        data: Some(config_data(service)),
        ..ConfigMap::default()
    }
}

/// A secret the pod mounts, with the keys it reads and whether it must exist.
struct SecretMount {
    secret: String,
    keys: Vec<String>,
    required: bool,
}

/// The names of the Secrets the service's pods mount that hold the
/// current values (the previous credentials' Secrets are not among them).
pub fn mounted_secrets(env: &Environment, service: &ResolvedService) -> Vec<String> {
    let previous: Vec<String> = previous_credentials(env, service)
        .iter()
        .map(PreviousCredential::secret_name)
        .collect();
    secret_mounts(env, service)
        .into_iter()
        .map(|m| m.secret)
        .filter(|secret| !previous.contains(secret))
        .collect()
}

fn secret_mounts(env: &Environment, service: &ResolvedService) -> Vec<SecretMount> {
    let entries = env.base.common_config.iter().chain(&service.spec.config);
    let mut mounts: BTreeMap<String, SecretMount> = BTreeMap::new();
    for (key, entry) in entries {
        let Some(ConfigValue::Secret { secret, key: item }) = service.config.get(key.as_str())
        else {
            continue;
        };
        let mount = mounts.entry(secret.clone()).or_insert_with(|| SecretMount {
            secret: secret.clone(),
            keys: Vec::new(),
            required: false,
        });
        if !mount.keys.contains(item) {
            mount.keys.push(item.clone());
        }
        mount.required |= entry.required;
    }
    // The previous credentials are optional: before a Secrets Manager
    // secret has an `AWSPREVIOUS` stage the Secret does not exist, and a
    // verifier then accepts the current credential only.
    for previous in previous_credentials(env, service) {
        let mount = mounts
            .entry(previous.secret_name())
            .or_insert_with(|| SecretMount {
                secret: previous.secret_name(),
                keys: Vec::new(),
                required: false,
            });
        if !mount.keys.contains(&previous.item) {
            mount.keys.push(previous.item.clone());
        }
    }
    let mut mounts: Vec<SecretMount> = mounts.into_values().collect();
    for mount in &mut mounts {
        mount.keys.sort();
    }
    mounts
}

/// `KEY_FILE` variables pointing at mounted secret files; values never
/// pass through the environment or the manifests. Beside each caller's
/// credential, `INTERNAL_CALLER_<SERVICE>_PREVIOUS_FILE` where the
/// previous one is mounted.
fn secret_file_variables(env: &Environment, service: &ResolvedService) -> Vec<EnvVar> {
    let file = |name: String, path: String| EnvVar {
        name,
        value: Some(path),
        ..EnvVar::default()
    };
    let previous = previous_credentials(env, service);
    let mut variables = Vec::new();
    for (key, value) in &service.config {
        let ConfigValue::Secret { secret, key: item } = value else {
            continue;
        };
        variables.push(file(
            format!("{key}_FILE"),
            format!("{SECRET_ROOT}/{secret}/{item}"),
        ));
        if let Some(previous) = previous.iter().find(|p| p.key == *key) {
            variables.push(file(previous.variable(), previous.path()));
        }
    }
    variables
}

/// The prefix of the variables naming a caller a service admits.
const CALLER_PREFIX: &str = "INTERNAL_CALLER_";

/// A caller's previous internal credential, mounted from its own Secret
/// (`<secret>-previous`, which the External Secrets Operator fills from
/// Secrets Manager's `AWSPREVIOUS` stage) so that a verifier accepts the
/// old credential while callers' pods pick up a rotated one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousCredential {
    /// The variable of the current credential (`INTERNAL_CALLER_<SERVICE>`).
    pub key: String,
    /// The secret of the current credential.
    pub secret: String,
    /// The key inside it (`token`).
    pub item: String,
}

impl PreviousCredential {
    /// The Kubernetes Secret holding the previous value.
    pub fn secret_name(&self) -> String {
        previous_secret_name(&self.secret)
    }

    /// `INTERNAL_CALLER_<SERVICE>_PREVIOUS_FILE`.
    pub fn variable(&self) -> String {
        format!(
            "{}{}_FILE",
            self.key,
            kisum_common::internal::PREVIOUS_SUFFIX
        )
    }

    pub fn path(&self) -> String {
        format!("{SECRET_ROOT}/{}/{}", self.secret_name(), self.item)
    }
}

/// The Secret that holds the previous stage of `secret`.
pub fn previous_secret_name(secret: &str) -> String {
    format!("{secret}-previous")
}

/// The previous credentials a service's pods mount: one per caller it
/// admits, where the environment's secrets live in Secrets Manager (the
/// only backend rendered as ExternalSecrets; without them nothing would
/// fill the Secret).
pub fn previous_credentials(
    env: &Environment,
    service: &ResolvedService,
) -> Vec<PreviousCredential> {
    if !matches!(
        env.file.secrets,
        crate::matrix::schema::SecretBackend::AwsSecretsManager { .. }
    ) {
        return Vec::new();
    }
    service
        .config
        .iter()
        .filter_map(|(key, value)| match value {
            ConfigValue::Secret { secret, key: item } if key.starts_with(CALLER_PREFIX) => {
                Some(PreviousCredential {
                    key: key.to_string(),
                    secret: secret.clone(),
                    item: item.clone(),
                })
            }
            _ => None,
        })
        .collect()
}

fn volume_name(secret: &str) -> String {
    format!("secret-{secret}")
}

fn deployment(env: &Environment, service: &ResolvedService) -> Deployment {
    let id = service.id;
    let mounts = secret_mounts(env, service);
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("64Mi".into())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }];
    let mut volume_mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..VolumeMount::default()
    }];
    for mount in &mounts {
        volumes.push(Volume {
            name: volume_name(&mount.secret),
            secret: Some(SecretVolumeSource {
                secret_name: Some(mount.secret.clone()),
                default_mode: Some(0o440),
                optional: Some(!mount.required),
                items: Some(
                    mount
                        .keys
                        .iter()
                        .map(|key| KeyToPath {
                            key: key.clone(),
                            path: key.clone(),
                            ..KeyToPath::default()
                        })
                        .collect(),
                ),
            }),
            ..Volume::default()
        });
        volume_mounts.push(VolumeMount {
            name: volume_name(&mount.secret),
            mount_path: format!("{SECRET_ROOT}/{}", mount.secret),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }

    let uid = env.base.platform.run_as_user;
    let container = Container {
        name: id.to_string(),
        image: Some(service.image.clone()),
        image_pull_policy: Some("Always".into()),
        ports: Some(vec![
            container_port("http", service.spec.ports.http),
            container_port("internal", service.spec.ports.internal),
        ]),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: format!("{id}-config"),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        env: Some(secret_file_variables(env, service)),
        liveness_probe: Some(probe(&service.spec.health.liveness, 10, 3)),
        readiness_probe: Some(probe(&service.spec.health.readiness, 5, 2)),
        startup_probe: Some(probe(&service.spec.health.liveness, 2, 30)),
        resources: Some(resources(service)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(uid),
            run_as_group: Some(uid),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(runtime_default()),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(volume_mounts),
        ..Container::default()
    };

    let mut metadata = meta(env, id, id);
    let skips = checkov_skips(&service.image);
    if !skips.is_empty() {
        metadata.annotations = Some(skips);
    }
    let mut template_labels = super::labels(env, id);
    template_labels.extend(selector(id));
    let pod_annotations =
        BTreeMap::from([("kisum.io/config-digest".to_string(), config_digest(service))]);

    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            // The autoscaler owns the count when there is one.
            replicas: (service.replicas <= 1).then_some(service.replicas as i32),
            revision_history_limit: Some(5),
            selector: LabelSelector {
                match_labels: Some(selector(id)),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(template_labels),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(id.to_string()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(30),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(uid),
                        run_as_group: Some(uid),
                        fs_group: Some(uid),
                        seccomp_profile: Some(runtime_default()),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// checkov checks that cannot pass yet, each skipped with its reason.
/// checkov splits on `=`, so reasons must not contain one.
pub(super) fn checkov_skips(image: &str) -> BTreeMap<String, String> {
    let mut skips = BTreeMap::new();
    if !image.contains("@sha256:") {
        skips.insert(
            "checkov.io/skip1".to_string(),
            "CKV_K8S_43=image tags are pinned to digests by the release pipeline once images \
             are published; the matrix holds tags until then"
                .to_string(),
        );
    }
    skips
}

/// Changes whenever the non-secret configuration changes, so that a new
/// ConfigMap rolls the pods.
fn config_digest(service: &ResolvedService) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in config_data(service) {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}

fn container_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(port),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            scheme: Some("HTTP".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn resources(service: &ResolvedService) -> ResourceRequirements {
    let r = service.resources;
    let pair = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ])
    };
    ResourceRequirements {
        requests: Some(pair(&r.cpu_request, &r.memory_request)),
        limits: Some(pair(&r.cpu_limit, &r.memory_limit)),
        ..ResourceRequirements::default()
    }
}

fn kube_service(env: &Environment, service: &ResolvedService) -> Service {
    let port = |name: &str, number: u16| ServicePort {
        name: Some(name.into()),
        port: i32::from(number),
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
    Service {
        metadata: meta(env, service.id, service.id),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector(service.id)),
            ports: Some(vec![
                port("http", service.spec.ports.http),
                port("internal", service.spec.ports.internal),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn budget(env: &Environment, service: &ResolvedService) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(env, service.id, service.id),
        spec: Some(PodDisruptionBudgetSpec {
            // One at a time: never blocks a drain, never takes all down.
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(service.id)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

fn autoscaler(env: &Environment, service: &ResolvedService) -> HorizontalPodAutoscaler {
    HorizontalPodAutoscaler {
        metadata: meta(env, service.id, service.id),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: k8s_openapi::api::autoscaling::v2::CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: service.id.to_string(),
            },
            min_replicas: Some(service.replicas as i32),
            max_replicas: service.max_replicas as i32,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(TARGET_CPU_PERCENT),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        ..HorizontalPodAutoscaler::default()
    }
}
