//! Structured logs, request ids, W3C trace context and Prometheus metrics.
//!
//! Every request gets a request id (kept from `x-request-id` when the
//! caller sent one) and a `traceparent` (continuing the caller's trace).
//! One JSON log line per request ends with status and latency. No header,
//! body, token or password is ever logged.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rand::RngExt as _;

pub const REQUEST_ID: &str = "x-request-id";
pub const TRACEPARENT: &str = "traceparent";

/// Starts JSON logging to stderr (the per-request lines written in batches,
/// see `logs`); `LOG_LEVEL` style filter (`info` default).
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(crate::logs::Stderr)
        .try_init();
}

/// The trace context of one request, for logs and outgoing calls.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub trace_id: String,
    pub span_id: String,
}

impl RequestContext {
    fn from_headers(headers: &HeaderMap) -> Self {
        let request_id = headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
            .map(str::to_string)
            .unwrap_or_else(new_request_id);
        let trace_id = headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_trace_id)
            .unwrap_or_else(|| random_hex(16));
        RequestContext {
            request_id,
            trace_id,
            span_id: random_hex(8),
        }
    }

    /// Headers for a call this request makes: same request id and trace,
    /// this request's span as the parent.
    pub fn outgoing(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&self.request_id) {
            headers.insert(REQUEST_ID, value);
        }
        let parent = format!("00-{}-{}-01", self.trace_id, self.span_id);
        if let Ok(value) = HeaderValue::from_str(&parent) {
            headers.insert(TRACEPARENT, value);
        }
        headers
    }
}

/// The trace id of a `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
pub fn parse_trace_id(traceparent: &str) -> Option<String> {
    let parts: Vec<&str> = traceparent.split('-').collect();
    let hex = |s: &str, len| s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit());
    let valid = parts.len() == 4 && hex(parts[0], 2) && hex(parts[1], 32) && hex(parts[2], 16);
    (valid && parts[1] != "0".repeat(32)).then(|| parts[1].to_ascii_lowercase())
}

/// A random (v4) UUID from the thread-local generator: `Uuid::new_v4`
/// asks the kernel for entropy on every call, a system call per request.
fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill(&mut bytes);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill(&mut buffer[..]);
    hex::encode(buffer)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: String,
    pub outcome: String,
}

/// The service's metrics: per-route request counts and latencies, plus
/// named event counters (logins, refreshes, denials, ...).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
    events: Family<EventLabels, Counter>,
    pub service: String,
    pub environment: String,
}

impl Metrics {
    pub fn new(service: &str, environment: &str) -> Self {
        let mut registry = Registry::with_prefix("kisum");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        registry.register(
            "events",
            "security and business events by outcome",
            events.clone(),
        );
        Metrics {
            registry: Arc::new(Mutex::new(registry)),
            requests,
            latency,
            events,
            service: service.to_string(),
            environment: environment.to_string(),
        }
    }

    /// Counts one event, e.g. `("login", "failure")`.
    pub fn event(&self, event: &str, outcome: &str) {
        self.events
            .get_or_create(&EventLabels {
                event: event.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// The counter of one event, for a caller that counts it on every
    /// request without building its labels each time. The event appears in
    /// the exposition from this call on (at 0 until counted).
    pub fn event_counter(&self, event: &str, outcome: &str) -> Counter {
        self.events
            .get_or_create(&EventLabels {
                event: event.to_string(),
                outcome: outcome.to_string(),
            })
            .clone()
    }

    /// Registers a further metric (for example a latency histogram).
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        if let Ok(mut registry) = self.registry.lock() {
            registry.register(name, help, metric);
        }
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        }
        text
    }
}

/// `GET /metrics` in the Prometheus text format.
pub async fn metrics_handler(State(metrics): State<Metrics>) -> Response {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

/// The method as a metric label: HTTP allows any token as a method, and an
/// unbounded label set would let any client grow `/metrics` without end.
fn method_label(method: &axum::http::Method) -> String {
    const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    let name = method.as_str();
    if KNOWN.contains(&name) {
        name.to_string()
    } else {
        "other".to_string()
    }
}

/// Middleware: request id, trace context, one log line and metrics per request.
pub async fn track(State(metrics): State<Metrics>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let context = RequestContext::from_headers(request.headers());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = method_label(request.method());
    request.extensions_mut().insert(context.clone());

    let mut response = next.run(request).await;

    let status = response.status();
    let latency = started.elapsed();
    let labels = RequestLabels {
        route,
        method,
        status: status.as_u16().to_string(),
    };
    metrics.requests.get_or_create(&labels).inc();
    metrics
        .latency
        .get_or_create(&labels)
        .observe(latency.as_secs_f64());
    if let Ok(value) = HeaderValue::from_str(&context.request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let level_error = status == StatusCode::INTERNAL_SERVER_ERROR;
    let route = labels.route.as_str();
    if level_error || route != "/health" && route != "/ready" && route != "/metrics" {
        tracing::info!(
            service = %metrics.service,
            environment = %metrics.environment,
            request_id = %context.request_id,
            trace_id = %context.trace_id,
            method = %labels.method,
            route = %route,
            status = status.as_u16(),
            latency_ms = latency.as_secs_f64() * 1000.0,
            "request"
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_continued_and_a_bad_one_replaced() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_trace_id(good).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(parse_trace_id("00-xyz-00f067aa0ba902b7-01"), None);
        let zeros = format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32));
        assert_eq!(parse_trace_id(&zeros), None);
    }

    #[test]
    fn outgoing_headers_keep_the_request_id_and_trace() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("req-1"));
        let context = RequestContext::from_headers(&headers);
        let out = context.outgoing();
        assert_eq!(out[REQUEST_ID], "req-1");
        let traceparent = out[TRACEPARENT].to_str().unwrap();
        assert_eq!(parse_trace_id(traceparent).unwrap(), context.trace_id);
    }

    #[test]
    fn a_request_without_an_id_gets_a_fresh_v4_uuid() {
        let first = RequestContext::from_headers(&HeaderMap::new()).request_id;
        let second = RequestContext::from_headers(&HeaderMap::new()).request_id;
        assert_ne!(first, second);
        let id = uuid::Uuid::parse_str(&first).unwrap();
        assert_eq!(id.get_version(), Some(uuid::Version::Random));
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let odd = axum::http::Method::from_bytes(b"ZZZZZZZZ").unwrap();
        assert_eq!(method_label(&odd), "other");
        assert_eq!(method_label(&axum::http::Method::GET), "GET");
    }

    #[test]
    fn events_and_requests_appear_in_the_exposition() {
        let metrics = Metrics::new("auth", "test");
        metrics.event("login", "success");
        assert!(
            metrics
                .render()
                .contains("kisum_events_total{event=\"login\",outcome=\"success\"} 1")
        );
    }
}
