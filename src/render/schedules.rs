//! What runs on a schedule where the platform runs on Kubernetes: one
//! CronJob of the kisumctl image per database's backup (plan 9.4) and
//! restore drill (22.3), one for certificate renewal (5.3) and one for the
//! secrets check (12.2), with the NetworkPolicy their pods need.
//!
//! The pods run the kisumctl image of the matrix's `kisumctl` section
//! against the matrix baked into it (`KISUM_MATRIX`), with the restricted
//! security context of the services, and reach the secret backend and the
//! backup store with the identity of the ServiceAccount
//! `kisumctl.service-account` (the cluster's operators bind it to an AWS
//! role, as for the External Secrets Operator). The same image and
//! account run the Jobs of `backup`, `restore` and `drill`
//! (`crate::cluster::operation`); the account is rendered here.

use serde_json::{Value, json};

use super::network::KISUMCTL_LABEL;
use super::{RenderError, labels, meta, to_yaml};
use crate::cluster::operation::{container_env, pod_variables};
use crate::matrix::Environment;
use crate::matrix::model::image_reference;

/// The NetworkPolicy name (and `app.kubernetes.io/name`) of the
/// scheduled runs.
pub const NAME: &str = "kisumctl-schedules";

/// Size limit of each scratch volume (state and `/tmp`) of a kisumctl
/// pod: the state holds reports and journals, `/tmp` small temporaries;
/// dumps go straight to the backup store in parts.
pub const SCRATCH_LIMIT: &str = "1Gi";

/// The kisumctl image of `env`: `<platform.image-registry>/<kisumctl.image>`
/// with the environment's `image-tag`.
pub fn image(env: &Environment) -> String {
    image_reference(
        &env.base.platform.image_registry,
        &env.base.kisumctl.image,
        env.file.image_tag.as_ref(),
    )
}

/// `app.kubernetes.io/component` of the scheduled runs' pods.
const COMPONENT: &str = "schedule";

/// One scheduled kisumctl run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub name: String,
    pub cron: String,
    pub args: Vec<String>,
}

/// Every scheduled run of `env`, in name order; none for `local` (the
/// processes of `deploy local` have no scheduler: see
/// docs/ci-scheduled-example.yml).
pub fn schedules(env: &Environment) -> Vec<Schedule> {
    if env.name == "local" {
        return Vec::new();
    }
    let plan = &env.base.schedules;
    let run = |name: String, cron: &str, args: &[&str]| Schedule {
        name,
        cron: cron.to_string(),
        args: args.iter().map(|a| a.to_string()).collect(),
    };
    let mut all = vec![
        run(
            "certificate-renewal".into(),
            &plan.certificate_renewal,
            &["tls", "renew", env.name],
        ),
        run(
            "secrets-check".into(),
            &plan.secrets_check,
            &["secrets", "check", env.name],
        ),
    ];
    if env.file.backups.enabled {
        for (id, db, _) in env.deployed_databases() {
            let backup = &db.backup;
            all.push(run(
                format!("backup-{id}"),
                &backup.schedule,
                &["backup", env.name, id],
            ));
            all.push(run(
                format!("drill-{id}"),
                &backup.drill_schedule,
                &["drill", env.name, id],
            ));
        }
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

/// The file's documents: ServiceAccount, NetworkPolicy, then one CronJob
/// per schedule; `None` where nothing is scheduled.
pub fn documents(env: &Environment) -> Result<Option<Vec<String>>, RenderError> {
    let schedules = schedules(env);
    if schedules.is_empty() {
        return Ok(None);
    }
    let mut docs = vec![
        to_yaml(&account(env), "schedules service account")?,
        to_yaml(&policy(env), "schedules network policy")?,
    ];
    for schedule in &schedules {
        docs.push(to_yaml(&cron_job(env, schedule), "cron job")?);
    }
    Ok(Some(docs))
}

fn pod_labels() -> Value {
    json!({ KISUMCTL_LABEL.0: KISUMCTL_LABEL.1, "app.kubernetes.io/component": COMPONENT })
}

fn account(env: &Environment) -> Value {
    let name = &env.base.kisumctl.service_account;
    json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": meta(env, name, NAME),
        // Neither the scheduled runs nor the operation Jobs call the
        // Kubernetes API: no token, no Role.
        "automountServiceAccountToken": false,
    })
}

/// Egress to the databases and Redis of the environment, and to HTTPS
/// outside the private ranges (Secrets Manager, S3, Route53, the ACME
/// directory); no ingress.
fn policy(env: &Environment) -> Value {
    // Databases may share a server (Market and Touring): one rule each.
    let endpoints: std::collections::BTreeSet<(&str, u16)> = env
        .deployed_databases()
        .filter_map(|(id, _, _)| env.file.databases.get(id))
        .map(|deployment| &deployment.endpoint)
        .chain(std::iter::once(&env.file.redis.endpoint))
        .map(|endpoint| (endpoint.cidr.as_str(), endpoint.port))
        .collect();
    let mut egress: Vec<Value> = endpoints
        .into_iter()
        .map(|(cidr, port)| {
            json!({
                "to": [ { "ipBlock": { "cidr": cidr } } ],
                "ports": [ { "port": port, "protocol": "TCP" } ],
            })
        })
        .collect();
    egress.push(json!({
        "to": [ { "ipBlock": {
            "cidr": "0.0.0.0/0",
            "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
        } } ],
        "ports": [ { "port": 443, "protocol": "TCP" } ],
    }));
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(env, NAME, NAME),
        "spec": {
            "podSelector": { "matchLabels": pod_labels() },
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": egress,
        },
    })
}

/// Where a kisumctl pod keeps its state: the environment's `state-dir`,
/// resolved against the matrix directory's parent as kisumctl resolves it.
pub fn state_dir(env: &Environment) -> String {
    let state = &env.file.state_dir;
    if state.starts_with('/') {
        return state.clone();
    }
    let matrix = std::path::Path::new(&env.base.kisumctl.matrix_dir);
    let parent = matrix.parent().unwrap_or(std::path::Path::new("/"));
    parent.join(state).to_string_lossy().into_owned()
}

/// The working directory of a kisumctl pod: the parent of the matrix.
pub fn work_dir(env: &Environment) -> String {
    let matrix = std::path::Path::new(&env.base.kisumctl.matrix_dir);
    let parent = matrix.parent().unwrap_or(std::path::Path::new("/"));
    parent.to_string_lossy().into_owned()
}

/// The volumes of a kisumctl pod (`state`, `tmp`), each bounded.
pub fn scratch_volumes() -> Value {
    json!([
        { "name": "state", "emptyDir": { "sizeLimit": SCRATCH_LIMIT } },
        { "name": "tmp", "emptyDir": { "sizeLimit": SCRATCH_LIMIT } },
    ])
}

/// Where a kisumctl container mounts the volumes of [`scratch_volumes`].
pub fn scratch_mounts(env: &Environment) -> Value {
    json!([
        { "name": "state", "mountPath": state_dir(env) },
        { "name": "tmp", "mountPath": "/tmp" },
    ])
}

fn cron_job(env: &Environment, schedule: &Schedule) -> Value {
    let plan = &env.base.schedules;
    let image = image(env);
    let mut object_labels = labels(env, NAME);
    object_labels.insert("app.kubernetes.io/component".into(), COMPONENT.into());
    let mut metadata = meta(env, &schedule.name, NAME);
    metadata.labels = Some(object_labels);
    let skips = super::workload::checkov_skips(&image);
    if !skips.is_empty() {
        metadata.annotations = Some(skips);
    }
    let user = env.base.platform.run_as_user;
    let mut variables = pod_variables(env, format!("cronjob/{}", schedule.name));
    variables.push(("NO_COLOR", "1".to_string()));
    let container = json!({
        "name": "kisumctl",
        "image": image,
        "imagePullPolicy": "Always",
        "workingDir": work_dir(env),
        "args": schedule.args,
        "env": container_env(&variables),
        "resources": {
            "requests": { "cpu": "100m", "memory": "128Mi" },
            "limits": { "cpu": "1", "memory": "512Mi" },
        },
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "runAsUser": user,
            "runAsGroup": user,
            "capabilities": { "drop": ["ALL"] },
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "volumeMounts": scratch_mounts(env),
    });
    let pod = json!({
        "metadata": { "labels": pod_labels() },
        "spec": {
            "serviceAccountName": env.base.kisumctl.service_account,
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": user,
                "runAsGroup": user,
                "fsGroup": user,
                "seccompProfile": { "type": "RuntimeDefault" },
            },
            "containers": [container],
            "volumes": scratch_volumes(),
        },
    });
    json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": metadata,
        "spec": {
            "schedule": schedule.cron,
            "timeZone": "Etc/UTC",
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": { "labels": pod_labels() },
                "spec": {
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": u64::from(plan.deadline_minutes) * 60,
                    "ttlSecondsAfterFinished": 86400,
                    "template": pod,
                },
            },
        },
    })
}
