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
        Probe::Resp { port } => {
            let port = *port;
            tokio::task::spawn_blocking(move || resp_answers(port))
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
        }
        Probe::Postgres { port } => {
            let port = *port;
            tokio::task::spawn_blocking(move || postgres_answers(port))
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
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

/// Whether the RESP server at 127.0.0.1:`port` answers an inline PING
/// within 2 s (`+PONG`, or `-NOAUTH ...` from one that wants a login).
fn resp_answers(port: u16) -> Result<(), String> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&address, CONNECT)
        .map_err(|e| format!("nothing accepts connections on 127.0.0.1:{port}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    writer.write_all(b"PING\r\n").map_err(|e| e.to_string())?;
    let mut line = String::new();
    match BufReader::new(stream).read_line(&mut line) {
        Ok(_) if line.starts_with('+') || line.starts_with('-') => Ok(()),
        Ok(_) => Err(format!(
            "127.0.0.1:{port} answered a PING with {:?}",
            line.trim()
        )),
        Err(_) => Err(format!(
            "127.0.0.1:{port} accepts connections and answers no PING within 2 s (hung or \
             stopped)"
        )),
    }
}

/// Whether the PostgreSQL server at 127.0.0.1:`port` answers an SSL
/// request (`S` or `N`) within 2 s.
fn postgres_answers(port: u16) -> Result<(), String> {
    use std::io::Read as _;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, CONNECT)
        .map_err(|e| format!("nothing accepts connections on 127.0.0.1:{port}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(&[0, 0, 0, 8, 4, 210, 22, 47])
        .map_err(|e| e.to_string())?;
    let mut answer = [0u8; 1];
    match stream.read_exact(&mut answer) {
        Ok(()) => Ok(()),
        Err(_) => Err(format!(
            "127.0.0.1:{port} accepts connections and answers no SSL request within 2 s \
             (hung or stopped)"
        )),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_that_answers_anything_passes_and_one_that_is_silent_does_not() {
        use std::io::Read as _;
        let refusing = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = refusing.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = refusing.accept().unwrap();
            let mut buffer = [0u8; 64];
            let _ = socket.read(&mut buffer);
            socket
                .write_all(b"-NOAUTH Authentication required.\r\n")
                .unwrap();
        });
        assert_eq!(resp_answers(port), Ok(()));
        server.join().unwrap();

        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let why = resp_answers(port).unwrap_err();
        assert!(why.contains("answers no PING within 2 s"), "{why}");
        let why = postgres_answers(port).unwrap_err();
        assert!(why.contains("answers no SSL request within 2 s"), "{why}");
        drop(silent);
        let why = resp_answers(port).unwrap_err();
        assert!(why.starts_with("nothing accepts connections"), "{why}");
    }
}
