//! An in-process stand-in for the Kubernetes API server, for the one peer
//! no test can run here. It answers the REST paths kisumctl's client sends
//! (`/api/v1/...` and `/apis/<group>/<version>/...`): server-side apply
//! (`PATCH` with `fieldManager`, `force` and `dryRun=All`), `GET` of an
//! object or of its `status`, `LIST` with an equality `labelSelector`,
//! `POST`, `PUT` with optimistic concurrency on `resourceVersion`, and
//! `DELETE`. Objects live in memory; a change of anything but `metadata`
//! and `status` bumps `metadata.generation`.
//!
//! It is not a Kubernetes: no admission, no defaulting, no field ownership
//! beyond one manager, no watch. Controllers are simulated at read time: a
//! Deployment's status is a finished rollout once `rollout_delay` has
//! passed since its last change (or never, when scripted so), and a Job
//! succeeds as soon as it is created (or fails, when scripted so).
//!
//! Scripted faults: an apply answered with 409 Conflict, a Deployment that
//! never becomes available, a Job that fails or never ends, a request whose
//! connection is dropped without an answer.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The fake API server on a free port of 127.0.0.1, stopped on drop.
pub struct FakeKube {
    address: SocketAddr,
    shared: Arc<Mutex<Cluster>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the server holds, and its script.
#[derive(Default)]
struct Cluster {
    /// Item path (`/apis/apps/v1/namespaces/ns/deployments/auth`) -> object.
    objects: BTreeMap<String, Stored>,
    revision: u64,
    /// Every request, as `METHOD path?query`.
    requests: Vec<String>,
    never_ready: BTreeSet<String>,
    never_ready_images: BTreeSet<String>,
    failing_jobs: BTreeSet<String>,
    stuck_jobs: BTreeSet<String>,
    conflicts: BTreeSet<String>,
    /// Path fragment -> how many more matching requests lose their
    /// connection.
    drops: Vec<(String, usize)>,
    rollout_delay: Duration,
    job_logs: BTreeMap<String, String>,
}

struct Stored {
    object: Value,
    changed: Instant,
}

impl FakeKube {
    pub fn start() -> Result<FakeKube> {
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", 0)).context("binding 127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(Cluster::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = Router::new().fallback(answer).with_state(shared.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        Ok(FakeKube {
            address,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Writes a kubeconfig whose `context` reaches this server (plain
    /// HTTP on loopback, a dummy token).
    pub fn write_kubeconfig(&self, path: &Path, context: &str) -> Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: {context}\nclusters:\n- name: fake\n  cluster:\n    server: {url}\ncontexts:\n- name: {context}\n  context:\n    cluster: fake\n    user: tester\nusers:\n- name: tester\n  user:\n    token: fake-token\n",
            url = self.url()
        );
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    fn cluster(&self) -> MutexGuard<'_, Cluster> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Deployments of this name never report an available rollout.
    pub fn never_ready(&self, deployment: &str) {
        self.cluster().never_ready.insert(deployment.to_string());
    }

    /// Deployments whose first container's image contains `fragment`
    /// never report an available rollout (a broken build).
    pub fn never_ready_image(&self, fragment: &str) {
        self.cluster()
            .never_ready_images
            .insert(fragment.to_string());
    }

    /// Undoes [`FakeKube::never_ready`].
    pub fn becomes_ready(&self, deployment: &str) {
        self.cluster().never_ready.remove(deployment);
    }

    /// Jobs whose name starts with this prefix fail.
    pub fn failing_job(&self, prefix: &str) {
        self.cluster().failing_jobs.insert(prefix.to_string());
    }

    /// Jobs whose name starts with this prefix stay active: they never
    /// complete nor fail.
    pub fn stuck_job(&self, prefix: &str) {
        self.cluster().stuck_jobs.insert(prefix.to_string());
    }

    /// The log the pods of Jobs whose name starts with `prefix` print.
    pub fn job_log(&self, prefix: &str, log: &str) {
        self.cluster()
            .job_logs
            .insert(prefix.to_string(), log.to_string());
    }

    /// Every apply (`PATCH`) of an object of this name is answered with
    /// 409 Conflict, as when another field manager owns a field.
    pub fn conflict_on(&self, name: &str) {
        self.cluster().conflicts.insert(name.to_string());
    }

    /// The next `count` requests whose path contains `fragment` lose
    /// their connection before any answer.
    pub fn drop_connections(&self, fragment: &str, count: usize) {
        self.cluster().drops.push((fragment.to_string(), count));
    }

    /// How long a Deployment takes to finish its rollout after a change.
    pub fn rollout_delay(&self, delay: Duration) {
        self.cluster().rollout_delay = delay;
    }

    /// Stores `object` at its item path as if it had been created.
    pub fn insert(&self, object: Value) -> Result<()> {
        let path = item_path_of(&object).context("object without apiVersion, kind or name")?;
        let mut cluster = self.cluster();
        let stored = cluster.admit(None, object);
        cluster.objects.insert(
            path,
            Stored {
                object: stored,
                changed: Instant::now(),
            },
        );
        Ok(())
    }

    /// The object at an item path, with its simulated status.
    pub fn get(&self, path: &str) -> Option<Value> {
        let cluster = self.cluster();
        cluster.objects.get(path).map(|s| cluster.observed(s))
    }

    /// Item paths under a collection path, sorted.
    pub fn paths(&self, collection: &str) -> Vec<String> {
        let prefix = format!("{collection}/");
        self.cluster()
            .objects
            .keys()
            .filter(|k| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
            .cloned()
            .collect()
    }

    /// Every request so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.cluster().requests.clone()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `/api/v1/namespaces/ns/configmaps/x` from an object's apiVersion, kind,
/// namespace and name.
fn item_path_of(object: &Value) -> Option<String> {
    let api_version = object["apiVersion"].as_str()?;
    let kind = object["kind"].as_str()?;
    let name = object["metadata"]["name"].as_str()?;
    let root = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    let plural = plural(kind);
    Some(match object["metadata"]["namespace"].as_str() {
        Some(ns) if kind != "Namespace" => format!("{root}/namespaces/{ns}/{plural}/{name}"),
        _ => format!("{root}/{plural}/{name}"),
    })
}

fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if lower.ends_with("ss") || lower.ends_with('x') {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    }
}

/// A request path split into its collection, item name and subresource.
struct Target {
    collection: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn target(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let root = match *parts.first()? {
        "api" => 2,
        "apis" => 3,
        _ => return None,
    };
    if parts.len() <= root {
        return None;
    }
    let rest = &parts[root..];
    let (collection_len, name_at) = if rest[0] == "namespaces" && rest.len() >= 3 {
        (root + 3, 3)
    } else {
        (root + 1, 1)
    };
    Some(Target {
        collection: format!("/{}", parts[..collection_len].join("/")),
        name: rest.get(name_at).map(|s| s.to_string()),
        subresource: rest.get(name_at + 1).map(|s| s.to_string()),
    })
}

fn query(request: &Request) -> BTreeMap<String, String> {
    request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

async fn answer(State(shared): State<Arc<Mutex<Cluster>>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let params = query(&request);
    let line = match request.uri().query() {
        Some(q) => format!("{method} {path}?{q}"),
        None => format!("{method} {path}"),
    };
    let body = axum::body::to_bytes(request.into_body(), 16 << 20)
        .await
        .unwrap_or_default();

    let mut cluster = shared.lock().unwrap_or_else(|e| e.into_inner());
    cluster.requests.push(line);
    if cluster.take_drop(&path) {
        drop(cluster);
        // Ends the connection's task without an answer and without the
        // panic hook's message: the client sees the connection close.
        std::panic::resume_unwind(Box::new("connection dropped by the script"));
    }
    let Some(target) = target(&path) else {
        return status(StatusCode::NOT_FOUND, "NotFound", "no such path");
    };
    cluster.handle(&method, &target, &params, &body)
}

impl Cluster {
    fn take_drop(&mut self, path: &str) -> bool {
        for (fragment, count) in &mut self.drops {
            if *count > 0 && path.contains(fragment.as_str()) {
                *count -= 1;
                return true;
            }
        }
        false
    }

    fn handle(
        &mut self,
        method: &Method,
        target: &Target,
        params: &BTreeMap<String, String>,
        body: &Bytes,
    ) -> Response {
        let dry_run = params.get("dryRun").is_some_and(|v| v == "All");
        match (method.as_str(), &target.name) {
            ("GET", None) => self.list(&target.collection, params.get("labelSelector")),
            ("GET", Some(name)) => self.read(target, name),
            ("PATCH", Some(name)) => self.apply(target, name, body, dry_run),
            ("POST", None) => self.create(target, body, dry_run),
            ("PUT", Some(name)) => self.replace(target, name, body, dry_run),
            ("DELETE", Some(name)) => self.delete(target, name, dry_run),
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "not supported by the fake",
            ),
        }
    }

    fn item(target: &Target, name: &str) -> String {
        format!("{}/{name}", target.collection)
    }

    fn read(&self, target: &Target, name: &str) -> Response {
        if target.subresource.as_deref() == Some("log") {
            return self.log(name);
        }
        match self.objects.get(&Self::item(target, name)) {
            Some(stored) => axum::Json(self.observed(stored)).into_response(),
            None => not_found(target, name),
        }
    }

    fn log(&self, pod: &str) -> Response {
        let text = self
            .job_logs
            .iter()
            .find(|(prefix, _)| pod.starts_with(prefix.as_str()))
            .map(|(_, log)| log.clone())
            .unwrap_or_default();
        text.into_response()
    }

    fn list(&self, collection: &str, selector: Option<&String>) -> Response {
        let wanted: Vec<(String, String)> = selector
            .map(|s| {
                s.split(',')
                    .filter_map(|p| p.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let prefix = format!("{collection}/");
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
            .map(|(_, s)| self.observed(s))
            .filter(|o| {
                wanted
                    .iter()
                    .all(|(k, v)| o["metadata"]["labels"][k].as_str() == Some(v.as_str()))
            })
            .collect();
        let mut items = items;
        if collection.ends_with("/pods") {
            items.extend(self.job_pods(collection, &wanted));
        }
        axum::Json(json!({
            "apiVersion": "v1",
            "kind": "List",
            "metadata": { "resourceVersion": self.revision.to_string() },
            "items": items,
        }))
        .into_response()
    }

    /// One finished pod per Job, named `<job>-pod`, as a Job controller
    /// would leave behind.
    fn job_pods(&self, pods: &str, wanted: &[(String, String)]) -> Vec<Value> {
        let namespace = pods
            .trim_end_matches("/pods")
            .rsplit('/')
            .next()
            .unwrap_or("");
        let jobs = format!("/apis/batch/v1/namespaces/{namespace}/jobs/");
        self.objects
            .iter()
            .filter(|(k, _)| k.starts_with(&jobs))
            .filter_map(|(_, s)| s.object["metadata"]["name"].as_str().map(str::to_string))
            .filter(|job| wanted.iter().all(|(k, v)| k == "job-name" && v == job))
            .map(|job| {
                json!({
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": format!("{job}-pod"),
                        "namespace": namespace,
                        "labels": { "job-name": job },
                    },
                })
            })
            .collect()
    }

    /// Server-side apply: creates or updates, as the one field manager.
    fn apply(&mut self, target: &Target, name: &str, body: &Bytes, dry_run: bool) -> Response {
        if self.conflicts.contains(name) {
            return status(
                StatusCode::CONFLICT,
                "Conflict",
                &format!(
                    "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using {}: .spec.replicas",
                    target.collection.rsplit('/').next().unwrap_or_default()
                ),
            );
        }
        let Ok(applied) = serde_json::from_slice::<Value>(body) else {
            return status(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON");
        };
        let path = Self::item(target, name);
        let previous = self.objects.get(&path).map(|s| s.object.clone());
        let object = self.admit(previous.as_ref(), applied);
        let code = if previous.is_some() {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        self.store(path, object, dry_run, code)
    }

    fn create(&mut self, target: &Target, body: &Bytes, dry_run: bool) -> Response {
        let Ok(object) = serde_json::from_slice::<Value>(body) else {
            return status(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON");
        };
        let Some(name) = object["metadata"]["name"].as_str().map(str::to_string) else {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "metadata.name is required",
            );
        };
        let path = Self::item(target, &name);
        if self.objects.contains_key(&path) {
            return status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &format!("\"{name}\" already exists"),
            );
        }
        let object = self.admit(None, object);
        self.store(path, object, dry_run, StatusCode::CREATED)
    }

    fn replace(&mut self, target: &Target, name: &str, body: &Bytes, dry_run: bool) -> Response {
        let Ok(object) = serde_json::from_slice::<Value>(body) else {
            return status(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON");
        };
        let path = Self::item(target, name);
        let Some(previous) = self.objects.get(&path).map(|s| s.object.clone()) else {
            return not_found(target, name);
        };
        let sent = object["metadata"]["resourceVersion"].as_str();
        if sent.is_some() && sent != previous["metadata"]["resourceVersion"].as_str() {
            return status(
                StatusCode::CONFLICT,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                ),
            );
        }
        let object = self.admit(Some(&previous), object);
        self.store(path, object, dry_run, StatusCode::OK)
    }

    fn delete(&mut self, target: &Target, name: &str, dry_run: bool) -> Response {
        let path = Self::item(target, name);
        let found = if dry_run {
            self.objects.get(&path).map(|s| s.object.clone())
        } else {
            self.objects.remove(&path).map(|s| s.object)
        };
        match found {
            Some(object) => axum::Json(object).into_response(),
            None => not_found(target, name),
        }
    }

    fn store(&mut self, path: String, object: Value, dry_run: bool, code: StatusCode) -> Response {
        if dry_run {
            return (code, axum::Json(object)).into_response();
        }
        let stored = Stored {
            object,
            changed: Instant::now(),
        };
        let answer = self.observed(&stored);
        self.objects.insert(path, stored);
        (code, axum::Json(answer)).into_response()
    }

    /// The object as the server keeps it: identity and timestamps kept
    /// from `previous`, a new resourceVersion, generation bumped when
    /// anything but metadata and status changed.
    fn admit(&mut self, previous: Option<&Value>, mut object: Value) -> Value {
        self.revision += 1;
        let generation = match previous {
            None => 1,
            Some(previous) => {
                let old = previous["metadata"]["generation"].as_i64().unwrap_or(1);
                if content(previous) == content(&object) {
                    old
                } else {
                    old + 1
                }
            }
        };
        if object.get("metadata").is_none_or(|m| !m.is_object()) {
            object["metadata"] = json!({});
        }
        let metadata = &mut object["metadata"];
        metadata["generation"] = json!(generation);
        metadata["resourceVersion"] = json!(self.revision.to_string());
        metadata["uid"] = previous
            .map(|p| p["metadata"]["uid"].clone())
            .unwrap_or_else(|| json!(format!("uid-{}", self.revision)));
        metadata["creationTimestamp"] = previous
            .map(|p| p["metadata"]["creationTimestamp"].clone())
            .unwrap_or_else(|| json!("2026-01-01T00:00:00Z"));
        if let Some(status) = previous.and_then(|p| p.get("status"))
            && object.get("status").is_none()
        {
            object["status"] = status.clone();
        }
        object
    }

    /// What a controller would have written by now into the status.
    fn observed(&self, stored: &Stored) -> Value {
        let mut object = stored.object.clone();
        match object["kind"].as_str() {
            Some("Deployment") => {
                let name = object["metadata"]["name"].as_str().unwrap_or_default();
                let image = object["spec"]["template"]["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or_default();
                let broken = self.never_ready.contains(name)
                    || self
                        .never_ready_images
                        .iter()
                        .any(|f| image.contains(f.as_str()));
                let ready = !broken && stored.changed.elapsed() >= self.rollout_delay;
                object["status"] = deployment_status(&object, ready);
            }
            Some("Job") => {
                let name = object["metadata"]["name"].as_str().unwrap_or_default();
                let matches =
                    |set: &BTreeSet<String>| set.iter().any(|p| name.starts_with(p.as_str()));
                object["status"] = if matches(&self.stuck_jobs) {
                    json!({ "active": 1 })
                } else {
                    job_status(matches(&self.failing_jobs))
                };
            }
            _ => {}
        }
        object
    }
}

fn content(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    object
}

fn deployment_status(object: &Value, ready: bool) -> Value {
    let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
    let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
    if ready {
        json!({
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [
                { "type": "Available", "status": "True", "reason": "MinimumReplicasAvailable" },
                { "type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable" },
            ],
        })
    } else {
        json!({
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": 0,
            "availableReplicas": 0,
            "unavailableReplicas": replicas,
            "conditions": [
                { "type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable" },
                { "type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated" },
            ],
        })
    }
}

fn job_status(failed: bool) -> Value {
    if failed {
        json!({
            "failed": 1,
            "conditions": [
                { "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit" },
            ],
        })
    } else {
        json!({
            "succeeded": 1,
            "conditions": [ { "type": "Complete", "status": "True" } ],
        })
    }
}

fn not_found(target: &Target, name: &str) -> Response {
    let resource = target.collection.rsplit('/').next().unwrap_or_default();
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{resource} \"{name}\" not found"),
    )
}
