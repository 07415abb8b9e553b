//! Readiness probes and small clients for the local processes: TCP
//! connect, HTTP GET, and a Redis PING / DBSIZE over RESP.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::state::Probe;
use crate::secrets::Secret;

const CONNECT: Duration = Duration::from_secs(1);

pub fn tcp(port: u16) -> bool {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&address, CONNECT).is_ok()
}

/// A client for loopback calls: short timeouts, no proxy.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}

/// `Ok(())` when the probe passes, else why not.
pub async fn check(client: &reqwest::Client, probe: &Probe) -> Result<(), String> {
    match probe {
        Probe::Tcp { port } => {
            let port = *port;
            let open = tokio::task::spawn_blocking(move || tcp(port))
                .await
                .unwrap_or(false);
            if open {
                Ok(())
            } else {
                Err(format!("nothing accepts connections on 127.0.0.1:{port}"))
            }
        }
        Probe::Http { url } => match client.get(url).send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                Err(format!(
                    "{url} answered {status}: {}",
                    body.chars().take(300).collect::<String>()
                ))
            }
            Err(error) => Err(format!("{url}: {}", without_url(&error))),
        },
    }
}

/// The error and its causes, without the URL (it is in the message's
/// context already).
pub fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text
            .replace(&format!(" ({url})"), "")
            .replace(url.as_str(), "");
    }
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text
}

/// Runs `AUTH user password` then `command` on the local Redis and answers
/// the reply's first line (`+PONG`, `:42`, `-ERR ...`).
pub fn redis_command(
    port: u16,
    user: &str,
    password: &Secret,
    command: &[&str],
) -> Result<String, String> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&address, CONNECT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let encode = |parts: &[&str]| {
        let mut bytes = format!("*{}\r\n", parts.len()).into_bytes();
        for part in parts {
            bytes.extend(format!("${}\r\n", part.len()).bytes());
            bytes.extend(part.bytes());
            bytes.extend(b"\r\n");
        }
        bytes
    };
    let mut line = String::new();
    writer
        .write_all(&encode(&["AUTH", user, password.expose()]))
        .map_err(|e| e.to_string())?;
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    if !line.starts_with('+') {
        return Err(format!("AUTH refused: {}", line.trim()));
    }
    line.clear();
    writer
        .write_all(&encode(command))
        .map_err(|e| e.to_string())?;
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    Ok(line.trim().to_string())
}
