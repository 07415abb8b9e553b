//! What `kisumctl status ENV` reports for an environment on Kubernetes:
//! each Deployment's rollout read from the API server (judged as `deploy`
//! judges it), each public service's health and readiness routes at its
//! public URL, then the operations as `status local` judges them: the
//! backups against their RPO, the certificates, the last drill and the
//! key set, and the databases, Redis and migrations where this machine can
//! reach the private network. What cannot be looked at from here is
//! `unknown` with the reason, never an error. Never prints.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::api::Namespace;
use crate::cluster::rollout;
use crate::matrix::Environment;
use crate::matrix::schema::Exposure;
use crate::ops::health::{self, Item, Light};
use crate::ops::reachability;

/// How long one request to the API server or a public URL may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The state of one environment on Kubernetes.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub environment: String,
    pub namespace: String,
    /// One item per Deployment, or one `unknown` item when the API server
    /// cannot be read.
    pub rollouts: Vec<Item>,
    /// One item per public service: its health and readiness routes.
    pub endpoints: Vec<Item>,
    pub operations: Vec<Item>,
}

impl Report {
    pub fn red(&self) -> bool {
        self.items().any(|i| i.light == Light::Red)
    }

    pub fn items(&self) -> impl Iterator<Item = &Item> {
        self.rollouts
            .iter()
            .chain(&self.endpoints)
            .chain(&self.operations)
    }
}

pub async fn collect(matrix_dir: &Path, env: &Environment<'_>) -> Report {
    let (rollouts, endpoints, operations) = tokio::join!(
        rollouts(matrix_dir, env),
        endpoints(matrix_dir, env),
        operations(matrix_dir, env)
    );
    Report {
        environment: env.name.to_string(),
        namespace: env.file.namespace.clone(),
        rollouts,
        endpoints,
        operations,
    }
}

/// Each service's Deployment (named after the service), read through the
/// environment's kubeconfig and context. The first failed read stops the
/// reading: the API server is unreachable or refuses kisumctl, and one
/// `unknown` item says so.
pub async fn rollouts(matrix_dir: &Path, env: &Environment<'_>) -> Vec<Item> {
    let unknown = |reason: String| vec![Item::new("kubernetes", Light::Unknown, reason)];
    let client = match tokio::time::timeout(TIMEOUT, crate::cluster::connect(matrix_dir, env)).await
    {
        Ok(Ok(client)) => client,
        Ok(Err(error)) => return unknown(error.to_string()),
        Err(_) => return unknown(no_answer("the kubeconfig's credentials")),
    };
    let namespace = Namespace::new(client, &env.file.namespace);
    let mut items = Vec::new();
    for service in env.services.keys() {
        let read = namespace.get("apps/v1", "Deployment", service);
        let live = match tokio::time::timeout(TIMEOUT, read).await {
            Ok(Ok(live)) => live,
            Ok(Err(error)) => return unknown(error.to_string()),
            Err(_) => return unknown(no_answer(&format!("reading Deployment/{service}"))),
        };
        items.push(deployment(service, live.as_ref()));
    }
    items
}

fn no_answer(what: &str) -> String {
    format!(
        "{what}: no answer from the API server within {} s",
        TIMEOUT.as_secs()
    )
}

/// One Deployment as `deploy` judges its rollout: done is green; a
/// rollout under way with replicas still available is yellow; none
/// available, a failed rollout or no Deployment at all is red.
pub fn deployment(service: &str, live: Option<&serde_json::Value>) -> Item {
    let name = format!("deployment {service}");
    let Some(object) = live else {
        return Item::new(name, Light::Red, "not found in the namespace");
    };
    let available = object["status"]["availableReplicas"].as_i64().unwrap_or(0);
    let wanted = object["spec"]["replicas"].as_i64().unwrap_or(1);
    match rollout::deployment(object) {
        rollout::Health::Done => Item::new(
            name,
            Light::Green,
            format!("{available}/{wanted} available, rolled out"),
        ),
        rollout::Health::Failed(why) => Item::new(name, Light::Red, why),
        rollout::Health::Waiting(why) if available > 0 => Item::new(
            name,
            Light::Yellow,
            format!("{available}/{wanted} available, rolling out: {why}"),
        ),
        rollout::Health::Waiting(why) => {
            Item::new(name, Light::Red, format!("0/{wanted} available: {why}"))
        }
    }
}

/// Each public service's base URL: `https://<host>`, or the one the
/// `kubernetes.smoke-endpoints` file names (a tunnel, a test). `Err` is
/// why a service has none.
pub fn public_urls(
    matrix_dir: &Path,
    env: &Environment<'_>,
) -> BTreeMap<String, Result<String, String>> {
    let public = env
        .services
        .values()
        .filter(|s| s.spec.exposure == Exposure::Public);
    let Some(file) = &env.file.kubernetes.smoke_endpoints else {
        return public
            .map(|s| (s.id.to_string(), Ok(format!("https://{}", s.host))))
            .collect();
    };
    let path = crate::matrix::resolve_path(matrix_dir, file);
    let document = std::fs::read_to_string(&path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => crate::smoke::missing_endpoints_file(env.name, &path),
            _ => format!("{}: {e}", path.display()),
        })
        .and_then(|text| {
            serde_json::from_str::<serde_json::Value>(&text)
                .map_err(|e| format!("{}: not valid JSON: {e}", path.display()))
        });
    public
        .map(|s| {
            let url = match &document {
                Ok(document) => document[s.id]
                    .as_str()
                    .map(|url| url.trim_end_matches('/').to_string())
                    .ok_or_else(|| {
                        format!(
                            "no URL for `{}` in {} (kubernetes.smoke-endpoints)",
                            s.id,
                            path.display()
                        )
                    }),
                Err(error) => Err(error.clone()),
            };
            (s.id.to_string(), url)
        })
        .collect()
}

/// Per public service: its liveness and readiness routes answered with a
/// 2xx, or red with what answered (or did not).
pub async fn endpoints(matrix_dir: &Path, env: &Environment<'_>) -> Vec<Item> {
    let client = reqwest::Client::builder()
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    let mut items = Vec::new();
    for (service, url) in public_urls(matrix_dir, env) {
        let name = format!("endpoint {service}");
        let base = match url {
            Ok(base) => base,
            Err(reason) => {
                items.push(Item::new(name, Light::Unknown, reason));
                continue;
            }
        };
        let health = &env.services[service.as_str()].spec.health;
        let (live, ready) = tokio::join!(
            probe(&client, &base, &health.liveness),
            probe(&client, &base, &health.readiness)
        );
        items.push(match (live, ready) {
            (Ok(live), Ok(ready)) => Item::new(name, Light::Green, format!("{live}; {ready}")),
            (live, ready) => {
                let failed: Vec<String> =
                    [live, ready].into_iter().filter_map(Result::err).collect();
                Item::new(name, Light::Red, failed.join("; "))
            }
        });
    }
    items
}

/// GET `base` + `route`: `Ok` with the status and latency when 2xx.
async fn probe(client: &reqwest::Client, base: &str, route: &str) -> Result<String, String> {
    let url = format!("{base}{route}");
    let started = Instant::now();
    match client.get(&url).send().await {
        Ok(answer) if answer.status().is_success() => Ok(format!(
            "{route} {} in {} ms",
            answer.status().as_u16(),
            started.elapsed().as_millis()
        )),
        Ok(answer) => Err(format!("{url} answered {}", answer.status())),
        Err(error) => Err(format!("{url}: {}", crate::cluster::api::chain(&error))),
    }
}

/// Backups, certificates, the last drill and the key set from the
/// environment's stores (unknown when a store cannot be read), and the
/// databases, Redis and migrations when this machine is where the
/// operations run.
pub async fn operations(matrix_dir: &Path, env: &Environment<'_>) -> Vec<Item> {
    let mut items = health::backups_in_store(matrix_dir, env, Light::Unknown).await;
    match crate::secrets::for_environment(matrix_dir, env) {
        Ok(store) => {
            let here = crate::cluster::operation::operations_run_here(env);
            match &here {
                Ok(()) => {
                    items.extend(reachability::databases(env, store.as_ref()).await);
                    items.extend(reachability::migrations(matrix_dir, env, store.as_ref()).await);
                }
                Err(reason) => {
                    for name in ["databases and redis", "migrations"] {
                        items.push(Item::new(name, Light::Unknown, reason.clone()));
                    }
                }
            }
            let now = jiff::Timestamp::now().as_second();
            items.extend(reachability::certificates(
                env,
                store.as_ref(),
                now,
                Light::Unknown,
            ));
            items.push(last_drill(matrix_dir, env).await);
            items.push(health::key_set_in(env.base, store.as_ref(), Light::Unknown));
        }
        Err(error) => {
            let reason = format!("the secret store cannot be opened: {error}");
            for name in ["databases and redis", "migrations", "certificates"] {
                items.push(Item::new(name, Light::Unknown, reason.clone()));
            }
            items.push(last_drill(matrix_dir, env).await);
            items.push(Item::new("key set", Light::Unknown, reason));
        }
    }
    items
}

/// The newest drill report of the environment's backup store, where
/// every drill keeps it (on a host, in a Job or a CronJob); without one
/// there, the newest in this machine's `<state-dir>/drills`.
async fn last_drill(matrix_dir: &Path, env: &Environment<'_>) -> Item {
    let state_dir = crate::matrix::resolve_path(matrix_dir, &env.file.state_dir);
    let here = health::last_drill(&state_dir.join("drills"));
    let store = crate::backup::store::Store::for_environment(matrix_dir, env).await;
    use crate::backup::store::BackupStore as _;
    match store.newest_drill_report().await {
        Ok(Some((name, text))) => {
            let origin = format!("{name} in the backup store ({})", store.describe());
            health::drill_report(&origin, Some(&text))
        }
        Ok(None) => here,
        Err(error) if here.detail == "no drill yet" => Item::new(
            "drill",
            Light::Unknown,
            format!("the drill reports of the backup store cannot be read: {error:#}"),
        ),
        Err(_) => here,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn live(available: i64, progressing: &str) -> serde_json::Value {
        json!({
            "metadata": { "generation": 2 },
            "spec": { "replicas": 2 },
            "status": {
                "observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
                "availableReplicas": available,
                "conditions": [{ "type": "Progressing", "status": "True", "reason": progressing }],
            },
        })
    }

    #[test]
    fn a_deployment_is_green_rolled_out_yellow_while_serving_and_red_with_nothing_available() {
        let done = deployment("auth", Some(&live(2, "NewReplicaSetAvailable")));
        assert_eq!(done.light, Light::Green, "{}", done.detail);
        assert_eq!(done.detail, "2/2 available, rolled out");

        let rolling = deployment("auth", Some(&live(1, "ReplicaSetUpdated")));
        assert_eq!(rolling.light, Light::Yellow, "{}", rolling.detail);

        let down = deployment("auth", Some(&live(0, "ReplicaSetUpdated")));
        assert_eq!(down.light, Light::Red, "{}", down.detail);
        assert!(
            down.detail.starts_with("0/2 available: "),
            "{}",
            down.detail
        );

        let stuck = deployment("auth", Some(&live(1, "ProgressDeadlineExceeded")));
        assert_eq!(stuck.light, Light::Red, "{}", stuck.detail);

        let missing = deployment("auth", None);
        assert_eq!(
            (missing.light, missing.detail.as_str()),
            (Light::Red, "not found in the namespace")
        );
    }
}
