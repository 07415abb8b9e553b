//! The private PostgreSQL cluster of a local environment: `initdb` into
//! `<state-dir>/postgres/data` with SCRAM authentication and a generated
//! superuser password, then `postgres` in the foreground under the
//! supervisor, on 127.0.0.1 and a unix socket inside the state directory.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use super::plan::{DataProcess, base_env, data_process, file_fingerprint};
use super::programs::{self, missing};
use super::state::{ProcessSpec, StateDir, StopSignal};
use crate::secrets::Secret;

/// The cluster's superuser.
pub const SUPERUSER: &str = "kisum";
/// Secret (outside the matrix's inventory: it exists only locally) holding
/// the superuser's `username` and `password`.
pub const SUPERUSER_SECRET: &str = "local-postgres-superuser";

const INSTALL: &str = "install with: sudo apt-get install postgresql";

/// Appended to the generated postgresql.conf.
const SETTINGS: &str = "
# kisumctl deploy local
listen_addresses = '127.0.0.1'
max_connections = 200
password_encryption = scram-sha-256
# A failing statement may carry a role's password: never log statements.
log_min_error_statement = panic
log_statement = none
";

/// The PostgreSQL programs of the machine.
#[derive(Debug, Clone)]
pub struct Postgres {
    pub bindir: PathBuf,
    /// PostgreSQL refuses to run as root: as root, the cluster belongs to
    /// the `postgres` user that the Debian package creates.
    pub run_as: Option<(u32, u32)>,
}

impl Postgres {
    /// `$KISUM_PG_BINDIR`, the newest `/usr/lib/postgresql/*/bin`, or the
    /// directory of `initdb` on PATH.
    pub fn find() -> anyhow::Result<Postgres> {
        let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
        let bindir = if let Some(dir) = std::env::var_os("KISUM_PG_BINDIR").map(PathBuf::from) {
            if !has_tools(&dir) {
                bail!(
                    "KISUM_PG_BINDIR={} has no initdb and postgres",
                    dir.display()
                );
            }
            dir
        } else {
            newest_debian_bindir()
                .filter(|dir| has_tools(dir))
                .or_else(|| {
                    programs::find("initdb").and_then(|p| p.parent().map(Path::to_path_buf))
                })
                .filter(|dir| has_tools(dir))
                .ok_or_else(|| {
                    missing(
                        "postgres and initdb",
                        "looked in /usr/lib/postgresql/*/bin and PATH",
                        INSTALL,
                    )
                })?
        };
        let run_as = if programs::is_root() {
            Some(programs::user_ids("postgres").with_context(|| {
                format!("running PostgreSQL as root is refused and there is no `postgres` user; {INSTALL}")
            })?)
        } else {
            None
        };
        Ok(Postgres { bindir, run_as })
    }

    pub fn version(&self) -> Option<String> {
        programs::version_line(&self.bindir.join("postgres"), &["--version"])
            .and_then(|line| line.split_whitespace().nth(2).map(str::to_string))
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bindir.join(program));
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt as _;
            command.uid(uid).gid(gid);
        }
        command.env_clear().envs(base_env()).stdin(Stdio::null());
        command
    }

    /// Creates the cluster unless it exists; `true` when created now. A
    /// cluster left half-made by an interrupted run is made again.
    pub fn init(&self, state: &StateDir, password: &Secret) -> anyhow::Result<bool> {
        let dir = state.data("postgres");
        let data = dir.join("data");
        let done = dir.join("initialized");
        if done.is_file() && data.join("PG_VERSION").is_file() {
            return Ok(false);
        }
        if data.exists() {
            fs::remove_dir_all(&data)
                .with_context(|| format!("removing the half-made cluster {}", data.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        self.own(&dir)?;
        let sockets = dir.join("sockets");
        fs::create_dir_all(&sockets)?;
        self.own(&sockets)?;
        if self.run_as.is_some() {
            check_reachable(&dir)?;
        }

        let password_file = dir.join(".superuser-password");
        fs::write(&password_file, password.expose())
            .and_then(|()| fs::set_permissions(&password_file, fs::Permissions::from_mode(0o600)))
            .with_context(|| format!("writing {}", password_file.display()))?;
        self.own(&password_file)?;
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "--auth=scram-sha-256", "-E", "UTF8"])
            .args(["--locale=C.UTF-8", "--no-instructions"])
            .arg(format!("--pwfile={}", password_file.display()))
            .output();
        let _ = fs::remove_file(&password_file);
        let output = output.context("running initdb")?;
        if !output.status.success() {
            bail!(
                "initdb failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let conf = data.join("postgresql.conf");
        let mut text =
            fs::read_to_string(&conf).with_context(|| format!("reading {}", conf.display()))?;
        text.push_str(SETTINGS);
        text.push_str(&format!(
            "unix_socket_directories = '{}'\n",
            sockets.display()
        ));
        fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
        fs::write(&done, "").with_context(|| format!("writing {}", done.display()))?;
        Ok(true)
    }

    fn own(&self, path: &Path) -> anyhow::Result<()> {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("giving {} to the postgres user", path.display()))?;
        }
        fs::set_permissions(
            path,
            fs::Permissions::from_mode(if path.is_dir() { 0o700 } else { 0o600 }),
        )
        .with_context(|| format!("setting the mode of {}", path.display()))
    }

    /// `postgres -D <data> -p PORT -k <sockets> -h 127.0.0.1` in the
    /// foreground; SIGINT is its fast shutdown.
    pub fn spec(&self, state: &StateDir, port: u16) -> ProcessSpec {
        let dir = state.data("postgres");
        let program = self.bindir.join("postgres");
        let argv = vec![
            program.display().to_string(),
            "-D".into(),
            dir.join("data").display().to_string(),
            "-p".into(),
            port.to_string(),
            "-k".into(),
            dir.join("sockets").display().to_string(),
            "-h".into(),
            "127.0.0.1".into(),
        ];
        data_process(DataProcess {
            name: "postgres",
            argv,
            env: base_env(),
            cwd: dir,
            run_as: self.run_as,
            stop_signal: StopSignal::Int,
            port,
            program: file_fingerprint(&program),
        })
    }
}

fn newest_debian_bindir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir)
}

/// The `postgres` user must be able to walk down to the cluster.
fn check_reachable(dir: &Path) -> anyhow::Result<()> {
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = fs::metadata(ancestor) else {
            continue;
        };
        if meta.permissions().mode() & 0o001 == 0 {
            bail!(
                "the postgres user cannot enter {} (mode {:o}), so it cannot reach the cluster in {}; \
                 run as a non-root user, or set the environment's state-dir to a directory outside it",
                ancestor.display(),
                meta.permissions().mode() & 0o777,
                dir.display()
            );
        }
    }
    Ok(())
}
