//! The two listeners every service runs: public routes on one port,
//! internal routes (credential required) on another that no Ingress
//! exposes. `/health` is liveness only; `/ready` runs the service's
//! readiness checks. Shutdown is graceful on SIGTERM or Ctrl-C.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::internal::{self, Allowlist};
use crate::telemetry::{self, Metrics};

pub type Check =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Named readiness checks: the service is ready when every required check
/// passes; a degrading check is reported but does not take it out of
/// service (a cache whose loss only costs speed).
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(String, Check, bool)>,
}

impl Readiness {
    pub fn check<F, Fut>(mut self, name: &str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks
            .push((name.to_string(), Arc::new(move || Box::pin(check())), true));
        self
    }

    /// A check whose failure is reported as `degraded: ...` only.
    pub fn degrading<F, Fut>(mut self, name: &str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks
            .push((name.to_string(), Arc::new(move || Box::pin(check())), false));
        self
    }

    async fn run(&self) -> (bool, BTreeMap<String, String>) {
        let mut all = true;
        let mut results = BTreeMap::new();
        for (name, check, required) in &self.checks {
            let outcome = match check().await {
                Ok(()) => "ok".to_string(),
                Err(reason) if *required => {
                    all = false;
                    reason
                }
                Err(reason) => format!("degraded: {reason}"),
            };
            results.insert(name.clone(), outcome);
        }
        (all, results)
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn ready(State(readiness): State<Readiness>) -> Response {
    let (ok, checks) = readiness.run().await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body =
        serde_json::json!({ "status": if ok { "ready" } else { "not ready" }, "checks": checks });
    (status, Json(body)).into_response()
}

/// `/health` and `/ready`, to merge into the public router.
pub fn probes(readiness: Readiness) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(readiness)
}

pub type KidsFn = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Vec<String>> + Send>> + Send + Sync>;
pub type ReloadFn = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<Vec<String>, String>> + Send>> + Send + Sync,
>;

/// What `GET /internal/diagnostics` reports.
#[derive(Clone)]
pub struct Diagnostics {
    pub service: String,
    pub version: String,
    pub config_digest: String,
    /// Route -> permission it requires (empty where none).
    pub routes: BTreeMap<String, String>,
    pub kids: KidsFn,
    pub reload: ReloadFn,
}

#[derive(Serialize)]
struct DiagnosticsReport {
    service: String,
    version: String,
    config_digest: String,
    kids: Vec<String>,
    routes: BTreeMap<String, String>,
}

async fn diagnostics(State(d): State<Diagnostics>) -> Json<DiagnosticsReport> {
    Json(DiagnosticsReport {
        service: d.service.clone(),
        version: d.version.clone(),
        config_digest: d.config_digest.clone(),
        kids: (d.kids)().await,
        routes: d.routes.clone(),
    })
}

async fn reload_keys(State(d): State<Diagnostics>) -> Response {
    match (d.reload)().await {
        Ok(kids) => Json(serde_json::json!({ "kids": kids })).into_response(),
        Err(reason) => (StatusCode::BAD_GATEWAY, reason).into_response(),
    }
}

/// Internal routes every service has, behind the credential check, plus
/// `/metrics` (reachable only on the internal port).
pub fn internal_router(
    extra: Router,
    diagnostics_state: Diagnostics,
    allowlist: Allowlist,
    metrics: Metrics,
) -> Router {
    let guarded = Router::new()
        .route("/internal/diagnostics", get(diagnostics))
        .route("/internal/keys/reload", post(reload_keys))
        .with_state(diagnostics_state)
        .merge(extra)
        .layer(middleware::from_fn_with_state(allowlist, internal::require));
    Router::new()
        .route("/metrics", get(telemetry::metrics_handler))
        .with_state(metrics)
        .merge(guarded)
}

/// Both ports, bound before serving so tests can read the addresses.
pub struct Listeners {
    pub public: TcpListener,
    pub internal: TcpListener,
}

impl Listeners {
    pub async fn bind(public: SocketAddr, internal: SocketAddr) -> std::io::Result<Listeners> {
        Ok(Listeners {
            public: TcpListener::bind(public).await?,
            internal: TcpListener::bind(internal).await?,
        })
    }

    pub fn addresses(&self) -> std::io::Result<(SocketAddr, SocketAddr)> {
        Ok((self.public.local_addr()?, self.internal.local_addr()?))
    }
}

/// Serves both routers until `shutdown` resolves, then drains requests.
pub async fn serve(
    listeners: Listeners,
    public: Router,
    internal: Router,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Handlers may read the peer address (`ConnectInfo<SocketAddr>`).
    let tracked = |router: Router| {
        router
            .layer(middleware::from_fn_with_state(
                metrics.clone(),
                telemetry::track,
            ))
            .into_make_service_with_connect_info::<SocketAddr>()
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let public =
        axum::serve(listeners.public, tracked(public)).with_graceful_shutdown(stopped(rx.clone()));
    let internal = axum::serve(listeners.internal, tracked(internal))
        .with_graceful_shutdown(stopped(rx.clone()));
    // Draining is bounded: a client that never finishes its request must
    // not keep a stopping service alive.
    let deadline = async move {
        stopped(rx).await;
        tokio::time::sleep(DRAIN_LIMIT).await;
    };
    let served = tokio::select! {
        (a, b) = async { tokio::join!(public.into_future(), internal.into_future()) } => a.and(b),
        () = deadline => {
            tracing::warn!("connections still open {DRAIN_LIMIT:?} after shutdown; closing them");
            Ok(())
        }
    };
    // The last requests' log lines, before the process ends.
    crate::logs::flush();
    served
}

/// How long a stopping service waits for open requests.
pub const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::internal::Credential;

    async fn started(ready: bool) -> (SocketAddr, SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let metrics = Metrics::new("test", "test");
        let readiness = Readiness::default().check("database", move || async move {
            if ready {
                Ok(())
            } else {
                Err("database unreachable".to_string())
            }
        });
        let diagnostics = Diagnostics {
            service: "test".into(),
            version: "0".into(),
            config_digest: "d".into(),
            routes: BTreeMap::from([("GET /x".to_string(), "x.read".to_string())]),
            kids: Arc::new(|| Box::pin(async { vec!["k1".to_string()] })),
            reload: Arc::new(|| Box::pin(async { Ok(vec!["k2".to_string()]) })),
        };
        let allowlist = Allowlist::from_pairs([("kisumctl".to_string(), "t0ken".to_string())]);
        let internal = internal_router(Router::new(), diagnostics, allowlist, metrics.clone());
        let any = "127.0.0.1:0".parse().unwrap();
        let listeners = Listeners::bind(any, any).await.unwrap();
        let (public_addr, internal_addr) = listeners.addresses().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(
            listeners,
            probes(readiness),
            internal,
            metrics,
            async {
                let _ = rx.await;
            },
        ));
        (public_addr, internal_addr, tx)
    }

    #[tokio::test]
    async fn probes_report_liveness_and_readiness_separately() {
        let (public, _, stop) = started(false).await;
        let client = reqwest::Client::new();
        let health = client
            .get(format!("http://{public}/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        let ready = client
            .get(format!("http://{public}/ready"))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 503);
        assert!(ready.text().await.unwrap().contains("database unreachable"));
        let _ = stop.send(());
    }

    #[tokio::test]
    async fn internal_routes_need_the_credential_and_are_not_on_the_public_port() {
        let (public, internal, stop) = started(true).await;
        let client = reqwest::Client::new();
        let url = format!("http://{internal}/internal/diagnostics");
        assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
        let mut headers = axum::http::HeaderMap::new();
        Credential::new("kisumctl", "t0ken").apply(&mut headers);
        let response = client
            .get(&url)
            .headers(headers.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["kids"][0], "k1");
        let reload = format!("http://{internal}/internal/keys/reload");
        let reloaded = client.post(&reload).headers(headers).send().await.unwrap();
        assert_eq!(
            reloaded.json::<serde_json::Value>().await.unwrap()["kids"][0],
            "k2"
        );
        let public_try = client
            .get(format!("http://{public}/internal/diagnostics"))
            .send()
            .await
            .unwrap();
        assert_eq!(public_try.status(), 404);
        let metrics = client
            .get(format!("http://{internal}/metrics"))
            .send()
            .await
            .unwrap();
        assert!(
            metrics
                .text()
                .await
                .unwrap()
                .contains("kisum_http_requests_total")
        );
        let _ = stop.send(());
    }
}

#[cfg(test)]
mod drain_tests {
    use super::*;

    #[tokio::test]
    async fn a_half_sent_request_cannot_hold_shutdown_past_the_drain_limit() {
        use tokio::io::AsyncWriteExt as _;
        let metrics = Metrics::new("test", "test");
        let any = "127.0.0.1:0".parse().unwrap();
        let listeners = Listeners::bind(any, any).await.unwrap();
        let (public, _) = listeners.addresses().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listeners,
            probes(Readiness::default()),
            Router::new(),
            metrics,
            async {
                let _ = rx.await;
            },
        ));
        let mut stalled = tokio::net::TcpStream::connect(public).await.unwrap();
        stalled
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let _ = tx.send(());
        let limit = DRAIN_LIMIT + std::time::Duration::from_secs(5);
        let finished = tokio::time::timeout(limit, server).await;
        assert!(
            finished.is_ok(),
            "serve still running {limit:?} after shutdown"
        );
        drop(stalled);
    }
}
