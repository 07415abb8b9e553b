//! A small HTTP proxy on loopback in front of moto's Route53 (or Secrets
//! Manager) that can inject faults (moto cannot throttle) and, for the tls tests, bridge
//! Route53 to pebble-challtestsrv: every `_acme-challenge` TXT change moto
//! accepts is published to (or cleared from) challtestsrv before the
//! answer goes back, because pebble resolves names through challtestsrv,
//! never through Route53.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;

#[derive(Default)]
pub struct Faults {
    /// The next this many requests get a Route53 `Throttling` error.
    pub throttle: AtomicUsize,
    /// Change batches whose body contains this text get
    /// `InvalidChangeBatch` (as if the record had been created meanwhile).
    pub refuse_containing: std::sync::Mutex<Option<String>>,
    /// The next this many `GetChange` answers say `PENDING` where moto
    /// says `INSYNC` (moto reports every change INSYNC at once; Route53
    /// takes up to a minute).
    pub pending: AtomicUsize,
    /// Secrets Manager requests of this operation (`X-Amz-Target`, such as
    /// `secretsmanager.UpdateSecretVersionStage`) whose body contains this
    /// text are answered as done and never reach moto: a write the service
    /// acknowledged and did not keep.
    pub swallow: std::sync::Mutex<Option<(String, String)>>,
}

#[derive(Default)]
pub struct Counts {
    pub requests: AtomicUsize,
    pub throttled: AtomicUsize,
    pub refused: AtomicUsize,
    pub bridged: AtomicUsize,
    /// `GetChange` requests, and those answered `PENDING`.
    pub get_change: AtomicUsize,
    pub pending: AtomicUsize,
    pub swallowed: AtomicUsize,
}

struct State {
    upstream: String,
    faults: Arc<Faults>,
    counts: Arc<Counts>,
    /// challtestsrv's management URL.
    bridge: Option<String>,
    client: reqwest::Client,
}

pub struct Proxy {
    pub port: u16,
    pub faults: Arc<Faults>,
    pub counts: Arc<Counts>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Proxy {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

pub async fn start(upstream: &str, bridge: Option<String>) -> Proxy {
    let faults = Arc::new(Faults::default());
    let counts = Arc::new(Counts::default());
    let state = Arc::new(State {
        upstream: upstream.to_string(),
        faults: faults.clone(),
        counts: counts.clone(),
        bridge,
        client: reqwest::Client::new(),
    });
    let app = axum::Router::new().fallback(move |method, uri, headers, body| {
        handle(state.clone(), method, uri, headers, body)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    Proxy {
        port,
        faults,
        counts,
        stop: Some(stop),
    }
}

fn route53_error(code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\"?>\n<ErrorResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
         <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
         <RequestId>proxy</RequestId></ErrorResponse>"
    );
    Response::builder()
        .status(StatusCode::BAD_REQUEST)
        .header("content-type", "text/xml")
        .body(Body::from(body))
        .unwrap()
}

/// Whether a request is for Secrets Manager (a JSON protocol whose
/// operation is named in `X-Amz-Target`), not Route53.
fn is_secrets_manager(headers: &HeaderMap) -> bool {
    headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|target| target.starts_with("secretsmanager."))
}

/// A Secrets Manager error answer, as AWS's JSON protocol sends it.
fn secrets_manager_error(code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "__type": code, "message": message }).to_string();
    Response::builder()
        .status(StatusCode::BAD_REQUEST)
        .header("content-type", "application/x-amz-json-1.1")
        .body(Body::from(body))
        .unwrap()
}

async fn handle(
    state: Arc<State>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.counts.requests.fetch_add(1, Ordering::SeqCst);
    if take_one(&state.faults.throttle) {
        state.counts.throttled.fetch_add(1, Ordering::SeqCst);
        if is_secrets_manager(&headers) {
            return secrets_manager_error("ThrottlingException", "Rate exceeded");
        }
        return route53_error("Throttling", "Rate exceeded");
    }
    let text = String::from_utf8_lossy(&body).to_string();
    let swallow = state.faults.swallow.lock().unwrap().clone();
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok());
    if let Some((operation, needle)) = swallow
        && target == Some(operation.as_str())
        && text.contains(needle.as_str())
    {
        state.counts.swallowed.fetch_add(1, Ordering::SeqCst);
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/x-amz-json-1.1")
            .body(Body::from("{}"))
            .unwrap();
    }
    let is_change = method == Method::POST && uri.path().trim_end_matches('/').ends_with("/rrset");
    let refuse = state.faults.refuse_containing.lock().unwrap().clone();
    if is_change
        && refuse
            .as_ref()
            .is_some_and(|needle| text.contains(needle.as_str()))
    {
        state.counts.refused.fetch_add(1, Ordering::SeqCst);
        return route53_error(
            "InvalidChangeBatch",
            "[Tried to create resource record set but it already exists]",
        );
    }
    let url = format!(
        "{}{}",
        state.upstream,
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut request = state.client.request(method, url).body(body.clone());
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let upstream = request.send().await.unwrap();
    let status = upstream.status();
    let content_type = upstream.headers().get("content-type").cloned();
    let mut answer = upstream.bytes().await.unwrap();
    if method_is_get_change(&text, uri.path()) && status.is_success() {
        state.counts.get_change.fetch_add(1, Ordering::SeqCst);
        if take_one(&state.faults.pending) {
            state.counts.pending.fetch_add(1, Ordering::SeqCst);
            let xml = String::from_utf8_lossy(&answer)
                .replace("<Status>INSYNC</Status>", "<Status>PENDING</Status>");
            answer = Bytes::from(xml);
        }
    }
    if is_change
        && status.is_success()
        && let Some(bridge) = &state.bridge
    {
        for (action, name, values) in challenge_changes(&text) {
            let host = format!("{}.", name.trim_end_matches('.'));
            let clear = serde_json::json!({ "host": host });
            state
                .client
                .post(format!("{bridge}/clear-txt"))
                .json(&clear)
                .send()
                .await
                .unwrap();
            if action != "DELETE" {
                for value in values {
                    let set = serde_json::json!({ "host": host, "value": value });
                    state
                        .client
                        .post(format!("{bridge}/set-txt"))
                        .json(&set)
                        .send()
                        .await
                        .unwrap();
                }
            }
            state.counts.bridged.fetch_add(1, Ordering::SeqCst);
        }
    }
    let mut response = Response::builder().status(status);
    if let Some(content_type) = content_type {
        response = response.header("content-type", content_type);
    }
    response.body(Body::from(answer)).unwrap()
}

/// Takes one from a fault's remaining count; `false` when none is left.
fn take_one(remaining: &AtomicUsize) -> bool {
    remaining
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// Whether a request is Route53's `GetChange` (`GET /2013-04-01/change/ID`,
/// no body).
fn method_is_get_change(body: &str, path: &str) -> bool {
    body.is_empty() && path.contains("/change/")
}

/// (action, name, unquoted values) of every `_acme-challenge` TXT change
/// in a ChangeResourceRecordSets body.
fn challenge_changes(xml: &str) -> Vec<(String, String, Vec<String>)> {
    let between = |text: &str, tag: &str| -> Vec<String> {
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        text.split(&open)
            .skip(1)
            .filter_map(|part| {
                part.split_once(&close)
                    .map(|(inside, _)| inside.to_string())
            })
            .collect()
    };
    between(xml, "Change")
        .into_iter()
        .filter_map(|change| {
            let action = between(&change, "Action").pop()?;
            let name = between(&change, "Name").pop()?;
            let rtype = between(&change, "Type").pop()?;
            if rtype != "TXT" || !name.starts_with("_acme-challenge.") {
                return None;
            }
            let values = between(&change, "Value")
                .into_iter()
                .map(|v| v.replace("&quot;", "\"").trim_matches('"').to_string())
                .collect();
            Some((action, name, values))
        })
        .collect()
}

/// Where a [`Relay`] stops a connection.
#[derive(Clone, Copy, Debug)]
pub enum Hold {
    /// The first request containing this text is never delivered.
    Request(&'static [u8]),
    /// The first request containing this text is delivered, its answer is
    /// not.
    Reply(&'static [u8]),
}

/// A TCP relay on loopback in front of a real server (Redis). Once armed,
/// it freezes the first connection whose request contains a pattern at
/// that request or at its answer, as if the client froze there, so a test
/// can kill the client at an exact point. Stops its connections when
/// dropped.
pub struct Relay {
    pub port: u16,
    armed: Arc<std::sync::Mutex<Option<Hold>>>,
    held: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    pub async fn start(upstream_port: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(std::sync::Mutex::new(None));
        let held = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (a, h) = (armed.clone(), held.clone());
        let task = tokio::spawn(async move {
            // Dropped with the task: every connection ends with it.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                else {
                    continue;
                };
                connections.spawn(relay(client, server, a.clone(), h.clone()));
            }
        });
        Relay {
            port,
            armed,
            held,
            task,
        }
    }

    /// Freezes the next connection that sends `hold`'s pattern.
    pub fn arm(&self, hold: Hold) {
        self.held.store(false, Ordering::SeqCst);
        *self.armed.lock().unwrap() = Some(hold);
    }

    /// Whether the armed pattern was met (and its connection is frozen).
    pub fn held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }
}

async fn relay(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    armed: Arc<std::sync::Mutex<Option<Hold>>>,
    held: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let frozen_replies = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let replies_frozen = frozen_replies.clone();
    let replies = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if replies_frozen.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let requests = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            let hit = {
                let mut armed = armed.lock().unwrap();
                let hit = match *armed {
                    Some(Hold::Request(p)) | Some(Hold::Reply(p)) => {
                        chunk.windows(p.len()).any(|w| w == p)
                    }
                    None => false,
                };
                if hit { armed.take() } else { None }
            };
            match hit {
                Some(Hold::Request(_)) => {
                    held.store(true, Ordering::SeqCst);
                    std::future::pending::<()>().await;
                }
                Some(Hold::Reply(_)) => frozen_replies.store(true, Ordering::SeqCst),
                None => {}
            }
            if server_write.write_all(chunk).await.is_err() {
                return;
            }
            if frozen_replies.load(Ordering::SeqCst) {
                held.store(true, Ordering::SeqCst);
            }
        }
    };
    tokio::select! {
        () = replies => {}
        () = requests => {}
    }
}
