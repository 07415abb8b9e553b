//! The two listeners every service runs: public routes on one port,
//! internal routes (credential required) on another that no Ingress
//! exposes. `/health` is liveness only; `/ready` runs the service's
//! readiness checks. Shutdown is graceful on SIGTERM or Ctrl-C.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::net::TcpListener;
use tower::ServiceExt as _;
use tower_http::timeout::TimeoutLayer;

use crate::config::{ConfigError, Vars};
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
    metrics: Option<Metrics>,
}

impl Readiness {
    /// Each run's outcomes also go to `kisum_readiness_check{check}` of
    /// `metrics` (1 passed, 0 failed, degrading checks included), the
    /// series the database and Redis alerts read.
    pub fn reported_in(mut self, metrics: &Metrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

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
        self.run_within(READINESS_TIMEOUT).await
    }

    /// Runs every check at once, each given at most `limit`: a database
    /// that accepts connections but never answers (or whose pool keeps
    /// retrying a refused port) makes `/ready` answer 503 in time instead
    /// of hanging past the prober's timeout.
    async fn run_within(&self, limit: Duration) -> (bool, BTreeMap<String, String>) {
        let running: Vec<_> = self
            .checks
            .iter()
            .map(|(name, check, required)| {
                let pending = check();
                let task = tokio::spawn(async move {
                    match tokio::time::timeout(limit, pending).await {
                        Ok(result) => result,
                        Err(_) => Err(format!("no answer within {} s", limit.as_secs())),
                    }
                });
                (name, *required, task)
            })
            .collect();
        let mut all = true;
        let mut results = BTreeMap::new();
        for (name, required, task) in running {
            let result = task
                .await
                .unwrap_or_else(|error| Err(format!("the check failed: {error}")));
            if let Some(metrics) = &self.metrics {
                metrics.readiness_check(name, result.is_ok());
            }
            let outcome = match result {
                Ok(()) => "ok".to_string(),
                Err(reason) if required => {
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

/// How long one readiness check may take: under the 3 s a prober
/// (kisumctl, the kubelet) gives `/ready`.
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

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
/// The kid a signing service (Auth) signs new tokens with.
pub type SigningFn = Arc<dyn Fn() -> String + Send + Sync>;

/// What `GET /internal/diagnostics` reports.
#[derive(Clone)]
pub struct Diagnostics {
    pub service: String,
    pub version: String,
    pub config_digest: String,
    /// Route -> permission it requires (empty where none).
    pub routes: BTreeMap<String, String>,
    /// The kids this service would verify a token with now.
    pub kids: KidsFn,
    /// Signing services only: the kid of the active key.
    pub signing: Option<SigningFn>,
    pub reload: ReloadFn,
}

#[derive(Serialize)]
struct DiagnosticsReport {
    service: String,
    /// Which process answered (`<host name>/<pid>`): behind a load balancer,
    /// a caller counts the instances it has heard from.
    instance: String,
    version: String,
    config_digest: String,
    kids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signing_kid: Option<String>,
    routes: BTreeMap<String, String>,
}

async fn diagnostics(State(d): State<Diagnostics>) -> Json<DiagnosticsReport> {
    Json(DiagnosticsReport {
        service: d.service.clone(),
        instance: instance().to_string(),
        version: d.version.clone(),
        config_digest: d.config_digest.clone(),
        kids: (d.kids)().await,
        signing_kid: d.signing.as_ref().map(|signing| signing()),
        routes: d.routes.clone(),
    })
}

/// `<host name>/<pid>`; in Kubernetes the host name is the pod's name.
fn instance() -> &'static str {
    static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INSTANCE.get_or_init(|| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|| "unknown".to_string());
        format!("{host}/{}", std::process::id())
    })
}

async fn reload_keys(State(d): State<Diagnostics>) -> Response {
    match (d.reload)().await {
        Ok(kids) => Json(serde_json::json!({ "kids": kids })).into_response(),
        Err(reason) => (StatusCode::BAD_GATEWAY, reason).into_response(),
    }
}

/// Internal routes every service has, behind the credential check.
/// `serve` adds `/metrics` beside them unless `METRICS_ENABLED=false`.
pub fn internal_router(
    extra: Router,
    diagnostics_state: Diagnostics,
    allowlist: Allowlist,
) -> Router {
    Router::new()
        .route("/internal/diagnostics", get(diagnostics))
        .route("/internal/keys/reload", post(reload_keys))
        .with_state(diagnostics_state)
        .merge(extra)
        .layer(middleware::from_fn_with_state(allowlist, internal::require))
}

/// How the listeners treat slow clients and what they expose, from the
/// variables every service shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSettings {
    /// `HEADER_READ_TIMEOUT_SECONDS` (10 by default): how long a client has
    /// to send the whole head of a request, counted from when the server
    /// starts waiting for it; a connection still sending headers then is
    /// closed. An idle keep-alive connection is closed after the same time.
    pub header_read_timeout: Duration,
    /// `REQUEST_TIMEOUT_SECONDS` (the service's `timeouts.read-seconds` by
    /// default): the longest a request may take, body upload included;
    /// past it the answer is a 503.
    pub request_timeout: Duration,
    /// `METRICS_ENABLED` (`true` by default): `false` removes `/metrics`.
    pub metrics_enabled: bool,
}

/// The longest `HEADER_READ_TIMEOUT_SECONDS` and `REQUEST_TIMEOUT_SECONDS`.
pub const MAX_TIMEOUT_SECONDS: u64 = 3600;

/// `HEADER_READ_TIMEOUT_SECONDS` when not set.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

impl ServerSettings {
    /// `default_request_timeout` is the service's own
    /// (`services.<id>.timeouts.read-seconds` in the environment matrix).
    pub fn from_vars(vars: &Vars, default_request_timeout: Duration) -> Result<Self, ConfigError> {
        // From a second to an hour: 0 would refuse every request, and a
        // slow client holding a connection for hours is what the limits
        // are against.
        let seconds = |name: &str, default: Duration| {
            crate::config::seconds_within(
                vars,
                name,
                Some(default.as_secs()),
                1,
                MAX_TIMEOUT_SECONDS,
            )
        };
        Ok(ServerSettings {
            header_read_timeout: seconds(
                "HEADER_READ_TIMEOUT_SECONDS",
                DEFAULT_HEADER_READ_TIMEOUT,
            )?,
            request_timeout: seconds("REQUEST_TIMEOUT_SECONDS", default_request_timeout)?,
            metrics_enabled: flag(vars, "METRICS_ENABLED", true)?,
        })
    }

    /// The settings' part of a configuration digest.
    pub fn digest_pairs(&self) -> [(&'static str, String); 3] {
        [
            (
                "HEADER_READ_TIMEOUT_SECONDS",
                self.header_read_timeout.as_secs().to_string(),
            ),
            (
                "REQUEST_TIMEOUT_SECONDS",
                self.request_timeout.as_secs().to_string(),
            ),
            ("METRICS_ENABLED", self.metrics_enabled.to_string()),
        ]
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            request_timeout: Duration::from_secs(30),
            metrics_enabled: true,
        }
    }
}

/// A `true`/`false` variable (also `1`/`0`, `yes`/`no`), or `default`.
pub fn flag(vars: &Vars, name: &str, default: bool) -> Result<bool, ConfigError> {
    match vars.optional(name)?.map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(value) => match value.as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(ConfigError::Invalid {
                name: name.into(),
                reason: format!("`{value}` is not true or false"),
            }),
        },
    }
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

/// Serves a service's `app` on `listeners` in the background with the
/// default settings, until the returned sender is used or dropped (the
/// services' tests, which start a service in process).
pub fn spawn_app(
    app: crate::schema::App,
    listeners: Listeners,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        listeners,
        app.public,
        app.internal,
        app.metrics,
        ServerSettings::default(),
        async {
            let _ = stopped.await;
        },
    ));
    stop
}

/// Serves both routers until `shutdown` resolves, then drains requests.
/// The internal one gets `/metrics` unless the settings disable it.
pub async fn serve(
    listeners: Listeners,
    public: Router,
    internal: Router,
    metrics: Metrics,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Outside the credential check: the scraper presents none. Disabled,
    // the route answers 404 (not the guard's 401 for unknown paths).
    let metrics_route = if settings.metrics_enabled {
        get(telemetry::metrics_handler).with_state(metrics.clone())
    } else {
        get(|| async { StatusCode::NOT_FOUND })
    };
    let internal = Router::new()
        .route("/metrics", metrics_route)
        .merge(internal);
    let tracked = |router: Router| {
        router
            .layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                settings.request_timeout,
            ))
            .layer(middleware::from_fn_with_state(
                metrics.clone(),
                telemetry::track,
            ))
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    let public = accept(listeners.public, tracked(public), settings, rx.clone());
    let internal = accept(listeners.internal, tracked(internal), settings, rx.clone());
    // Draining is bounded: a client that never finishes its request must
    // not keep a stopping service alive.
    let deadline = async move {
        stopped(rx).await;
        tokio::time::sleep(DRAIN_LIMIT).await;
    };
    let served = tokio::select! {
        ((), ()) = async { tokio::join!(public, internal) } => Ok(()),
        () = deadline => {
            tracing::warn!("connections still open {DRAIN_LIMIT:?} after shutdown; closing them");
            Ok(())
        }
    };
    // The last requests' log lines, before the process ends.
    crate::logs::flush();
    served
}

async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Accepts HTTP/1.1 connections until `stop`, then waits for the open ones
/// to finish their requests. Handlers may read the peer address
/// (`ConnectInfo<SocketAddr>`).
async fn accept(
    listener: TcpListener,
    router: Router,
    settings: ServerSettings,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    // Every connection task holds a receiver; all gone = all closed.
    let (open_tx, open_rx) = tokio::sync::watch::channel(());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(error = %error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(stop.clone()) => break,
        };
        let service = router
            .clone()
            .map_request(move |request: hyper::Request<Incoming>| {
                let mut request = request.map(axum::body::Body::new);
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let (stop, open) = (stop.clone(), open_rx.clone());
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stopped(stop) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(open);
        });
    }
    drop(listener);
    drop(open_rx);
    open_tx.closed().await;
}

/// How long a stopping service waits for open requests.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(20);

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
        started_with(ready, ServerSettings::default()).await
    }

    async fn started_with(
        ready: bool,
        settings: ServerSettings,
    ) -> (SocketAddr, SocketAddr, tokio::sync::oneshot::Sender<()>) {
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
            signing: Some(Arc::new(|| "k1".to_string())),
            reload: Arc::new(|| Box::pin(async { Ok(vec!["k2".to_string()]) })),
        };
        let allowlist = Allowlist::from_pairs([("kisumctl".to_string(), "t0ken".to_string())]);
        let internal = internal_router(Router::new(), diagnostics, allowlist);
        let slow = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        );
        let any = "127.0.0.1:0".parse().unwrap();
        let listeners = Listeners::bind(any, any).await.unwrap();
        let (public_addr, internal_addr) = listeners.addresses().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(
            listeners,
            probes(readiness).merge(slow),
            internal,
            metrics,
            settings,
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
    async fn hung_checks_fail_together_within_the_bound() {
        let hung = || async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        };
        let readiness = Readiness::default()
            .check("database", hung)
            .check("migrations", hung)
            .check("cache", || async { Ok(()) });
        let started = std::time::Instant::now();
        let (ok, checks) = readiness.run_within(Duration::from_millis(300)).await;
        let took = started.elapsed();
        assert!(!ok);
        assert!(took < Duration::from_millis(1500), "{took:?}");
        assert!(
            checks["database"].starts_with("no answer within"),
            "{checks:?}"
        );
        assert!(
            checks["migrations"].starts_with("no answer within"),
            "{checks:?}"
        );
        assert_eq!(checks["cache"], "ok");
    }

    #[tokio::test]
    async fn each_readiness_run_sets_the_check_gauge_degrading_checks_included() {
        let metrics = Metrics::new("test", "test");
        let readiness = Readiness::default()
            .check("database", || async { Ok(()) })
            .degrading("redis", || async { Err("refused".to_string()) })
            .reported_in(&metrics);
        let (ok, _) = readiness.run().await;
        assert!(ok);
        let text = metrics.render();
        assert!(
            text.contains("kisum_readiness_check{check=\"database\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("kisum_readiness_check{check=\"redis\"} 0"),
            "{text}"
        );
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
        assert_eq!(body["signing_kid"], "k1");
        let instance = body["instance"].as_str().unwrap();
        assert!(
            instance.ends_with(&format!("/{}", std::process::id())),
            "{instance}"
        );
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

    fn quick() -> ServerSettings {
        ServerSettings {
            header_read_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            metrics_enabled: true,
        }
    }

    #[tokio::test]
    async fn a_client_trickling_its_headers_is_disconnected_after_the_header_read_timeout() {
        let (public, _, stop) = started_with(true, quick()).await;
        let started = std::time::Instant::now();
        let closed = kisum_testkit::trickle_headers(public, Duration::from_secs(10)).await;
        assert!(closed, "the connection outlived the header read timeout");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "closed after {took:?}");
        let _ = stop.send(());
    }

    #[tokio::test]
    async fn a_request_past_the_request_timeout_answers_503() {
        let (public, _, stop) = started_with(true, quick()).await;
        let response = reqwest::get(format!("http://{public}/slow")).await.unwrap();
        assert_eq!(response.status(), 503);
        let _ = stop.send(());
    }

    #[tokio::test]
    async fn metrics_disabled_removes_the_metrics_route() {
        let settings = ServerSettings {
            metrics_enabled: false,
            ..ServerSettings::default()
        };
        let (_, internal, stop) = started_with(true, settings).await;
        let response = reqwest::get(format!("http://{internal}/metrics"))
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
        let _ = stop.send(());
    }

    #[test]
    fn settings_come_from_the_shared_variables() {
        let defaults =
            ServerSettings::from_vars(&Vars::default(), Duration::from_secs(15)).unwrap();
        assert_eq!(defaults.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
        assert_eq!(defaults.request_timeout, Duration::from_secs(15));
        assert!(defaults.metrics_enabled);
        let vars = Vars::from_pairs([
            ("HEADER_READ_TIMEOUT_SECONDS", "3"),
            ("REQUEST_TIMEOUT_SECONDS", "300"),
            ("METRICS_ENABLED", "false"),
        ]);
        let set = ServerSettings::from_vars(&vars, Duration::from_secs(15)).unwrap();
        assert_eq!(set.header_read_timeout, Duration::from_secs(3));
        assert_eq!(set.request_timeout, Duration::from_secs(300));
        assert!(!set.metrics_enabled);
        for (name, value) in [
            ("METRICS_ENABLED", "maybe"),
            ("HEADER_READ_TIMEOUT_SECONDS", "0"),
            ("REQUEST_TIMEOUT_SECONDS", "soon"),
            ("REQUEST_TIMEOUT_SECONDS", "0"),
            ("REQUEST_TIMEOUT_SECONDS", "86400"),
        ] {
            let error = ServerSettings::from_vars(
                &Vars::from_pairs([(name, value)]),
                Duration::from_secs(1),
            )
            .unwrap_err();
            assert!(
                matches!(error, ConfigError::Invalid { name: ref n, .. } if n == name),
                "{error}"
            );
        }
    }
}
