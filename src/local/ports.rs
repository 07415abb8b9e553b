//! Whether a loopback port is free, and which process holds it when it
//! is not: from `/proc/net/tcp{,6}` (the socket's inode) and the
//! `/proc/<pid>/fd` links that point at that socket.

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

/// The processes with a TCP socket on local port `port` (listening ones
/// first). Empty when none can be seen: processes of other users are only
/// visible to root.
pub fn holders(port: u16) -> Vec<Holder> {
    let inodes = socket_inodes(port);
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut found: Vec<(usize, Holder)> = Vec::new();
    let Ok(processes) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    for process in processes.flatten() {
        let Some(pid) = process.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        let rank = fds.flatten().find_map(|fd| {
            let target = fs::read_link(fd.path()).ok()?;
            let inode = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .to_string();
            inodes.iter().position(|(i, _)| *i == inode)
        });
        if let Some(rank) = rank {
            let listening = usize::from(!inodes[rank].1);
            found.push((
                listening,
                Holder {
                    pid,
                    command: command_line(pid),
                },
            ));
        }
    }
    found.sort_by_key(|(listening, holder)| (*listening, holder.pid));
    found.into_iter().map(|(_, holder)| holder).collect()
}

/// Inodes of the TCP sockets whose local port is `port`, each with
/// whether it listens.
fn socket_inodes(port: u16) -> Vec<(String, bool)> {
    let mut inodes = Vec::new();
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
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            if local_port == Some(port) && *inode != "0" {
                // 0A: TCP_LISTEN.
                inodes.push((inode.to_string(), *state == "0A"));
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
        let holders = holders(port);
        assert_eq!(
            holders.first().map(|h| h.pid),
            Some(std::process::id()),
            "{holders:?}"
        );
        drop(listener);
        assert!(is_free(port));
        assert!(super::holders(port).is_empty());
    }
}
