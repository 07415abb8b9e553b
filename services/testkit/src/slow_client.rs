//! A slow client, for the servers' header-read timeout: it sends a request
//! head one byte at a time and never finishes it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How long the client waits between two bytes.
const BYTE_INTERVAL: Duration = Duration::from_millis(200);

/// Trickles an endless request head to `address` for at most `limit`;
/// true when the server closed the connection meanwhile.
pub async fn trickle_headers(address: SocketAddr, limit: Duration) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(address).await else {
        return false;
    };
    let head = b"GET /health HTTP/1.1\r\nHost: slow\r\nX-Slow: ";
    let filler = std::iter::repeat(&b'a');
    let deadline = Instant::now() + limit;
    let mut answer = [0u8; 512];
    for byte in head.iter().chain(filler) {
        if Instant::now() > deadline {
            return false;
        }
        if stream.write_all(&[*byte]).await.is_err() {
            return true;
        }
        // A closed connection reads as end of file (or a reset); an answer
        // such as a 408 may come first.
        match tokio::time::timeout(BYTE_INTERVAL, stream.read(&mut answer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    false
}
