//! Finding the system programs `deploy local` runs, and naming the
//! command that installs a missing one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context as _;

/// `name` on PATH, or in the sbin and bin directories a minimal PATH lacks.
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/bin", "/usr/bin", "/usr/sbin", "/bin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The error for a program that is not installed: what was looked for,
/// where, and how to install it.
pub fn missing(program: &str, looked: &str, install: &str) -> anyhow::Error {
    anyhow::anyhow!("{program} not found ({looked}); {install}")
}

pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `(uid, gid)` of a user, from `/etc/passwd`.
pub fn user_ids(user: &str) -> anyhow::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() > 3 && fields[0] == user)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .with_context(|| format!("no user `{user}` in /etc/passwd"))
}

/// The first line a program prints for `args`, e.g. its version.
pub fn version_line(program: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().next().map(|line| line.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_uid_zero_in_passwd() {
        assert_eq!(user_ids("root").unwrap(), (0, 0));
        assert!(user_ids("no-such-user-here").is_err());
    }

    #[test]
    fn missing_programs_name_the_install_command() {
        let error = missing(
            "redis-server",
            "looked on PATH",
            "install with: sudo apt-get install redis-server",
        );
        assert_eq!(
            error.to_string(),
            "redis-server not found (looked on PATH); install with: sudo apt-get install redis-server"
        );
    }
}
