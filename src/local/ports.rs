//! Whether a loopback port is free, and which process holds it when it
//! is not: from `/proc/net/tcp{,6}` (the socket's inode) and the
//! `/proc/<pid>/fd` links that point at that socket.

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;

/// A process holding a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Its command line, control characters escaped, at most 200
    /// characters.
    pub command: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} (`{}`)", self.pid, self.command)
    }
}

/// A server can listen on 127.0.0.1:`port` now.
pub fn is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The processes with a TCP socket on each of `ports` (listening ones
/// first), from one look at `/proc`. A port nobody visible holds has no
/// entry: processes of other users are only visible to root.
pub fn holders(ports: &[u16]) -> BTreeMap<u16, Vec<Holder>> {
    let inodes = socket_inodes(ports);
    let mut found: BTreeMap<u16, Vec<(bool, Holder)>> = BTreeMap::new();
    if inodes.is_empty() {
        return BTreeMap::new();
    }
    let Ok(processes) = fs::read_dir("/proc") else {
        return BTreeMap::new();
    };
    for process in processes.flatten() {
        let Some(pid) = process.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        let mut sockets: Vec<(u16, bool)> = fds
            .flatten()
            .filter_map(|fd| {
                let target = fs::read_link(fd.path()).ok()?;
                let inode = target
                    .to_str()?
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?;
                inodes.get(inode).copied()
            })
            .collect();
        // One entry per port, listening if any of its sockets listens.
        sockets.sort_by_key(|(port, listening)| (*port, !*listening));
        sockets.dedup_by_key(|(port, _)| *port);
        for (port, listening) in sockets {
            let holder = Holder {
                pid,
                command: command_line(pid),
            };
            found.entry(port).or_default().push((listening, holder));
        }
    }
    found
        .into_iter()
        .map(|(port, mut holders)| {
            holders.sort_by_key(|(listening, holder)| (!listening, holder.pid));
            (port, holders.into_iter().map(|(_, h)| h).collect())
        })
        .collect()
}

/// The TCP sockets whose local port is one of `ports`: inode -> (port,
/// whether it listens).
fn socket_inodes(ports: &[u16]) -> BTreeMap<String, (u16, bool)> {
    let mut inodes = BTreeMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let port = local
                .rsplit(':')
                .next()
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            if let Some(port) = port.filter(|p| ports.contains(p))
                && *inode != "0"
            {
                // 0A: TCP_LISTEN.
                inodes.insert(inode.to_string(), (port, *state == "0A"));
            }
        }
    }
    inodes
}

fn command_line(pid: u32) -> String {
    let bytes = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text = bytes
        .split(|b| *b == 0)
        .filter(|part| !part.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    let text = if text.is_empty() {
        fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_string()
    } else {
        text
    };
    crate::matrix::load::printable(&text)
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_is_found_with_its_process() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!is_free(port));
        let holders = holders(&[port]);
        let first = holders.get(&port).and_then(|h| h.first());
        assert_eq!(
            first.map(|h| h.pid),
            Some(std::process::id()),
            "{holders:?}"
        );
        drop(listener);
        assert!(is_free(port));
        assert!(super::holders(&[port]).is_empty());
    }
}
