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
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rand::RngExt as _;

use crate::config::{ConfigError, Vars};

pub const REQUEST_ID: &str = "x-request-id";
pub const TRACEPARENT: &str = "traceparent";

/// How log lines are written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for the log pipeline (the default).
    Json,
    /// Human-readable lines, for a terminal.
    Text,
}

/// `LOG_LEVEL` (a filter such as `info` or `kisum_auth=debug,info`; `info`
/// by default) and `LOG_FORMAT` (`json` by default, or `text`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

/// The level names `LOG_LEVEL` accepts, alone or after `target=`.
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Whether `filter` is comma-separated level names or `target=level`
/// directives. A bare word that is no level (`warning`, `verbose`) would
/// be read as a target name and silence every log line: it is refused.
fn is_log_filter(filter: &str) -> bool {
    let is_level = |word: &str| LOG_LEVELS.contains(&word.trim().to_ascii_lowercase().as_str());
    let is_target = |word: &str| {
        let word = word.trim();
        !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-' | '.'))
    };
    filter
        .split(',')
        .all(|directive| match directive.split_once('=') {
            Some((target, level)) => is_target(target) && is_level(level),
            None => is_level(directive),
        })
}

impl LogSettings {
    pub fn from_vars(vars: &Vars) -> Result<LogSettings, ConfigError> {
        let level = vars.optional("LOG_LEVEL")?.unwrap_or_else(|| "info".into());
        if !is_log_filter(&level) || tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            return Err(ConfigError::Invalid {
                name: "LOG_LEVEL".into(),
                reason: format!(
                    "`{level}` is not a log filter: use one of {} or `target=level` \
                     directives separated by commas",
                    LOG_LEVELS.join(", ")
                ),
            });
        }
        let format = match vars.optional("LOG_FORMAT")?.as_deref().map(str::trim) {
            None | Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "LOG_FORMAT".into(),
                    reason: format!("`{other}` is neither json nor text"),
                });
            }
        };
        Ok(LogSettings { level, format })
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: "info".into(),
            format: LogFormat::Json,
        }
    }
}

/// Starts logging to stderr as `settings` say.
pub fn init_logging(settings: &LogSettings) {
    let filter = || {
        tracing_subscriber::EnvFilter::try_new(&settings.level)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    // Request lines are written in batches (see `logs`).
    let builder = tracing_subscriber::fmt().with_writer(crate::logs::Stderr);
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .with_env_filter(filter())
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => {
            // Colours only for a terminal, and never under NO_COLOR.
            let colours = std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder
                .with_ansi(colours)
                .with_env_filter(filter())
                .try_init()
        }
    };
}

/// Starts logging from `LOG_LEVEL` and `LOG_FORMAT`; an invalid value
/// starts the default (JSON, `info`) and is returned, for the caller to
/// refuse the start with.
pub fn init_logging_from(vars: &Vars) -> Result<(), ConfigError> {
    match LogSettings::from_vars(vars) {
        Ok(settings) => {
            init_logging(&settings);
            Ok(())
        }
        Err(error) => {
            init_logging(&LogSettings::default());
            Err(error)
        }
    }
}

/// The trace context of one request, for logs and outgoing calls.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub trace_id: String,
    pub span_id: String,
    /// The trace flags passed on (W3C `trace-flags`, two hex digits): the
    /// caller's when its `traceparent` was valid, `01` (sampled) for a
    /// trace this request starts.
    pub flags: String,
}

impl RequestContext {
    fn from_headers(headers: &HeaderMap) -> Self {
        let request_id = headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
            .map(str::to_string)
            .unwrap_or_else(new_request_id);
        let parent = headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        let (trace_id, flags) = match parent {
            Some(parent) => (parent.trace_id.to_string(), parent.flags.to_string()),
            None => (random_hex(16), "01".to_string()),
        };
        RequestContext {
            request_id,
            trace_id,
            span_id: random_hex(8),
            flags,
        }
    }

    /// A context for work no request carried in: a fresh id and trace.
    pub fn fresh() -> Self {
        RequestContext::from_headers(&HeaderMap::new())
    }

    /// Headers for a call this request makes: same request id and trace,
    /// this request's span as the parent.
    pub fn outgoing(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&self.request_id) {
            headers.insert(REQUEST_ID, value);
        }
        let parent = format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags);
        if let Ok(value) = HeaderValue::from_str(&parent) {
            headers.insert(TRACEPARENT, value);
        }
        headers
    }
}

/// The trace id of a valid `traceparent`; `None` for an invalid one,
/// which the request then replaces with a fresh trace.
pub fn parse_trace_id(traceparent: &str) -> Option<String> {
    parse_traceparent(traceparent).map(|parent| parent.trace_id.to_string())
}

/// The fields of a W3C trace-context `traceparent` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent<'a> {
    pub version: &'a str,
    pub trace_id: &'a str,
    pub parent_id: &'a str,
    pub flags: &'a str,
}

/// Parses `traceparent` as W3C Trace Context level 1 says: version,
/// trace id, parent id and flags are lowercase hex of 2, 32, 16 and 2
/// digits; neither id is all zeros; version `ff` is invalid; version `00`
/// has exactly these four fields, while a later version may append more
/// after a `-` (read for the same four fields).
pub fn parse_traceparent(header: &str) -> Option<TraceParent<'_>> {
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    let version = header.get(..2)?;
    if !hex(version, 2) || version == "ff" {
        return None;
    }
    let length_ok = match version {
        "00" => header.len() == 55,
        _ => header.len() == 55 || (header.len() > 55 && header.as_bytes()[55] == b'-'),
    };
    if !length_ok {
        return None;
    }
    let mut fields = header[..55].split('-');
    let (_, trace_id, parent_id, flags) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let valid = hex(trace_id, 32)
        && nonzero(trace_id)
        && hex(parent_id, 16)
        && nonzero(parent_id)
        && hex(flags, 2);
    valid.then_some(TraceParent {
        version,
        trace_id,
        parent_id,
        flags,
    })
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub check: String,
}

/// The service's metrics: per-route request counts and latencies, named
/// event counters (logins, refreshes, denials, ...) and the outcome of
/// each readiness check at the last `/ready`.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
    events: Family<EventLabels, Counter>,
    checks: Family<CheckLabels, Gauge>,
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
        let checks = Family::<CheckLabels, Gauge>::default();
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
        registry.register(
            "readiness_check",
            "1 when the readiness check passed at the last /ready, 0 when it failed",
            checks.clone(),
        );
        Metrics {
            registry: Arc::new(Mutex::new(registry)),
            requests,
            latency,
            events,
            checks,
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

    /// Records a readiness check's outcome (`kisum_readiness_check`).
    pub fn readiness_check(&self, check: &str, passed: bool) {
        self.checks
            .get_or_create(&CheckLabels {
                check: check.to_string(),
            })
            .set(i64::from(passed));
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

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn a_valid_traceparent_is_continued() {
        let good = format!("00-{TRACE}-00f067aa0ba902b7-01");
        assert_eq!(parse_trace_id(&good).as_deref(), Some(TRACE));
        let parent = parse_traceparent(&good).unwrap();
        assert_eq!((parent.parent_id, parent.flags), ("00f067aa0ba902b7", "01"));
        // A later version may carry more fields after the known ones.
        let later = format!("cc-{TRACE}-00f067aa0ba902b7-01-what-the-future-holds");
        assert_eq!(parse_trace_id(&later).as_deref(), Some(TRACE));
        assert_eq!(
            parse_trace_id(&format!("01-{TRACE}-00f067aa0ba902b7-00")).as_deref(),
            Some(TRACE)
        );
    }

    #[test]
    fn an_invalid_traceparent_is_refused() {
        let zeros32 = "0".repeat(32);
        let bad = [
            "00-xyz-00f067aa0ba902b7-01".to_string(),
            format!("00-{zeros32}-00f067aa0ba902b7-01"),
            format!("00-{TRACE}-0000000000000000-01"),
            format!("00-{}-00f067aa0ba902b7-01", TRACE.to_uppercase()),
            format!("00-{TRACE}-00F067AA0BA902B7-01"),
            format!("0A-{TRACE}-00f067aa0ba902b7-01"),
            format!("00-{TRACE}-00f067aa0ba902b7-0g"),
            format!("ff-{TRACE}-00f067aa0ba902b7-01"),
            format!("00-{TRACE}-00f067aa0ba902b7-01-extra"),
            format!("00-{TRACE}-00f067aa0ba902b7-1"),
            format!("00-{TRACE}x-00f067aa0ba902b-01"),
            format!("cc-{TRACE}-00f067aa0ba902b7-01x"),
            format!("00_{TRACE}_00f067aa0ba902b7_01"),
            format!(" 00-{TRACE}-00f067aa0ba902b7-01"),
            "00-é".to_string(),
            String::new(),
        ];
        for header in bad {
            assert_eq!(parse_traceparent(&header), None, "{header:?}");
        }
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
        assert!(traceparent.ends_with("-01"), "a new trace is sampled");
    }

    #[test]
    fn the_callers_trace_flags_are_passed_on() {
        for flags in ["00", "01", "03"] {
            let mut headers = HeaderMap::new();
            let header = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}");
            headers.insert(TRACEPARENT, HeaderValue::from_str(&header).unwrap());
            let out = RequestContext::from_headers(&headers).outgoing();
            let traceparent = out[TRACEPARENT].to_str().unwrap();
            let parsed = parse_traceparent(traceparent).unwrap();
            assert_eq!(parsed.flags, flags);
            assert_eq!(parsed.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_ne!(
                parsed.parent_id, "00f067aa0ba902b7",
                "this request is the parent"
            );
        }
    }

    #[test]
    fn log_settings_come_from_log_level_and_log_format() {
        assert_eq!(
            LogSettings::from_vars(&Vars::default()).unwrap(),
            LogSettings::default()
        );
        let text = Vars::from_pairs([
            ("LOG_FORMAT", "text"),
            ("LOG_LEVEL", "kisum_auth=debug,warn"),
        ]);
        let settings = LogSettings::from_vars(&text).unwrap();
        assert_eq!(settings.format, LogFormat::Text);
        assert_eq!(settings.level, "kisum_auth=debug,warn");
        for level in ["off", "TRACE", "error", "kisum_common::config=trace,info"] {
            let vars = Vars::from_pairs([("LOG_LEVEL", level)]);
            assert_eq!(LogSettings::from_vars(&vars).unwrap().level, level);
        }
        for (name, value) in [
            ("LOG_FORMAT", "xml"),
            ("LOG_LEVEL", "loud=["),
            ("LOG_LEVEL", "warning"),
            ("LOG_LEVEL", "verbose"),
            ("LOG_LEVEL", "info,warning"),
            ("LOG_LEVEL", "kisum_auth=loud"),
            ("LOG_LEVEL", "=info"),
            ("LOG_LEVEL", ""),
        ] {
            let error = LogSettings::from_vars(&Vars::from_pairs([(name, value)])).unwrap_err();
            assert!(
                matches!(error, ConfigError::Invalid { name: ref n, .. } if n == name),
                "{error}"
            );
            assert!(error.to_string().contains(name), "{error}");
        }
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
