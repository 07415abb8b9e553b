//! What the benchmark binaries of `scripts/bench/services.sh` share.
//!
//! Three binaries, none of them a service of the platform:
//!
//! - `bench-hello`: an axum hello-world, the floor of any HTTP request;
//! - `bench-verify`: the irreducible work of an authenticated request (one
//!   RS256 verification of the bearer token, one Redis GET), the baseline
//!   Auth and the module backends are measured against;
//! - `bench-setup`: prepares the data (key set, directory rows, the Core
//!   subscription, a login) and exits.
//!
//! They listen on loopback addresses only and refuse any other.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;

/// Parses `127.0.0.1:PORT` (or another loopback address); anything else is
/// refused, so a baseline can never be reachable from outside the machine.
pub fn loopback(text: &str) -> anyhow::Result<SocketAddr> {
    let addr: SocketAddr = text
        .parse()
        .with_context(|| format!("`{text}` is not an IP:PORT address"))?;
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "`{text}` is not a loopback address; the benchmark listens on loopback only"
    );
    Ok(addr)
}

/// The listen address from the first command-line argument.
pub fn listen_arg(usage: &str) -> anyhow::Result<SocketAddr> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [addr] => loopback(addr),
        _ => anyhow::bail!("{usage}"),
    }
}

/// Serves `router` on `addr` until SIGTERM or Ctrl-C.
pub async fn serve(addr: SocketAddr, router: Router) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    eprintln!("listening on {addr}");
    axum::serve(listener, router)
        .with_graceful_shutdown(kisum_common::serve::shutdown_signal())
        .await
        .context("serving")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_accepted() {
        assert!(loopback("127.0.0.1:8080").is_ok());
        assert!(loopback("[::1]:8080").is_ok());
        assert!(loopback("0.0.0.0:8080").is_err());
        assert!(loopback("10.0.0.1:8080").is_err());
        assert!(loopback("localhost").is_err());
    }
}
