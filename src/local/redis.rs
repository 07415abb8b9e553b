//! The private Redis of a local environment: `redis-server` with a config
//! file in `<state-dir>/redis`, persistence and memory policy from the
//! matrix, and one ACL user per Redis credential of the inventory (the
//! ACL file holds SHA-256 digests of the passwords, never the passwords).

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

use super::plan::{DataProcess, base_env, data_process, file_fingerprint};
use super::programs::{self, missing};
use super::state::{ProcessSpec, StateDir, StopSignal, write_atomic};
use crate::matrix::schema::{BaseFile, RedisPersistence, SecretCategory};
use crate::secrets::Secret;

/// An ACL user: its name, password and the key patterns it may touch.
pub struct RedisUser {
    pub name: String,
    pub password: Secret,
    /// The password before the last `secrets rotate`, which instances not
    /// restarted since still use: accepted too, until the next rotation.
    pub previous: Option<Secret>,
    pub key_patterns: Vec<String>,
}

pub fn find() -> anyhow::Result<PathBuf> {
    programs::find("redis-server").ok_or_else(|| {
        missing(
            "redis-server",
            "looked on PATH and in /usr/bin",
            "install with: sudo apt-get install redis-server",
        )
    })
}

/// The Redis credentials of the inventory: secret `redis-<user>-credentials`
/// becomes ACL user `<user>`, allowed the key families its service owns.
pub fn users_of(base: &BaseFile) -> Vec<(String, String, Vec<String>)> {
    base.secrets
        .iter()
        .filter(|(_, s)| s.category == SecretCategory::RedisCredential)
        .map(|(id, _)| {
            let user = id
                .trim_start_matches("redis-")
                .trim_end_matches("-credentials")
                .to_string();
            let patterns = base
                .redis
                .key_families
                .values()
                .filter(|family| family.owner == user)
                .map(|family| {
                    let prefix = family.pattern.split('{').next().unwrap_or_default();
                    format!("{prefix}*")
                })
                .collect();
            (id.clone(), user, patterns)
        })
        .collect()
}

/// Writes `redis.conf` and `users.acl` (both mode 0600). With `admin`
/// (the password of `redis-admin-credentials`, when a person supplied it)
/// the default user is the server's administrator, which backups and
/// `secrets rotate` log in as; without it the default user is off.
pub fn configure(
    state: &StateDir,
    base: &BaseFile,
    port: u16,
    users: &[RedisUser],
    admin: Option<&Secret>,
) -> anyhow::Result<()> {
    let dir = state.data("redis");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    let acl = dir.join("users.acl");
    let digest = |password: &Secret| hex::encode(Sha256::digest(password.expose().as_bytes()));
    let mut lines = vec![match admin {
        Some(password) => format!("user default on #{} ~* &* +@all", digest(password)),
        None => "user default off".to_string(),
    }];
    for user in users {
        let mut passwords = format!("#{}", digest(&user.password));
        if let Some(previous) = user.previous.as_ref().filter(|p| *p != &user.password) {
            passwords.push_str(&format!(" #{}", digest(previous)));
        }
        let keys = if user.key_patterns.is_empty() {
            "resetkeys".to_string()
        } else {
            user.key_patterns
                .iter()
                .map(|p| format!("~{p}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        lines.push(format!(
            "user {} on {passwords} {keys} resetchannels +@all -@admin -@dangerous +info",
            user.name
        ));
    }
    write_private(&acl, &(lines.join("\n") + "\n"))?;

    let persistence = match base.redis.persistence {
        RedisPersistence::None => "save \"\"\nappendonly no\n",
        RedisPersistence::Rdb => "save 3600 1 300 100 60 10000\nappendonly no\n",
        RedisPersistence::Aof => "save \"\"\nappendonly yes\n",
    };
    let conf = format!(
        "# kisumctl deploy local; persistence from the matrix ({persistence_name})\n\
         bind 127.0.0.1\nprotected-mode yes\nport {port}\ndaemonize no\nlogfile \"\"\n\
         dir {dir}\n{persistence}maxmemory {maxmemory}\nmaxmemory-policy {policy}\n\
         aclfile {acl}\n",
        persistence_name = format!("{:?}", base.redis.persistence).to_lowercase(),
        dir = dir.display(),
        maxmemory = base.redis.maxmemory,
        policy = base.redis.maxmemory_policy,
        acl = acl.display(),
    );
    write_private(&dir.join("redis.conf"), &conf)
}

fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    write_atomic(path, text.as_bytes())?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

pub fn spec(program: &std::path::Path, state: &StateDir, port: u16) -> ProcessSpec {
    let dir = state.data("redis");
    let conf = dir.join("redis.conf");
    // The config file's content is part of the digest: a changed policy or
    // a new user restarts Redis.
    let conf_digest = fs::read(&conf)
        .map(|bytes| hex::encode(&Sha256::digest(&bytes)[..8]))
        .unwrap_or_default();
    data_process(DataProcess {
        name: "redis",
        argv: vec![program.display().to_string(), conf.display().to_string()],
        env: base_env(),
        cwd: dir,
        run_as: None,
        stop_signal: StopSignal::Term,
        port,
        program: format!("{}:{conf_digest}", file_fingerprint(program)),
    })
}

pub fn version(program: &std::path::Path) -> Option<String> {
    let line = programs::version_line(program, &["--version"])?;
    line.split_whitespace()
        .find_map(|word| word.strip_prefix("v="))
        .map(str::to_string)
}

/// `redis://user:password@127.0.0.1:port/`
pub fn url(user: &str, password: &Secret, port: u16) -> Secret {
    Secret::new(format!(
        "redis://{user}:{}@127.0.0.1:{port}/",
        password.expose()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;

    #[test]
    fn users_come_from_the_inventory_with_their_key_families() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("environments");
        let matrix = Matrix::load(&dir).unwrap();
        let users = users_of(matrix.base());
        let auth = users.iter().find(|(_, user, _)| user == "auth").unwrap();
        assert_eq!(auth.0, "redis-auth-credentials");
        assert!(auth.2.contains(&"access:*".to_string()), "{:?}", auth.2);
        assert!(auth.2.contains(&"ratelimit:login:ip:*".to_string()));
        let basic = users.iter().find(|(_, user, _)| user == "basic").unwrap();
        assert!(basic.2.is_empty());
    }

    #[test]
    fn the_acl_file_holds_digests_not_passwords() {
        let root = tempfile::tempdir().unwrap();
        let state = StateDir::new(root.path());
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("environments");
        let matrix = Matrix::load(&dir).unwrap();
        let users = [
            RedisUser {
                name: "auth".into(),
                password: Secret::new("plain-password-value"),
                previous: Some(Secret::new("the-previous-value")),
                key_patterns: vec!["session:*".into()],
            },
            RedisUser {
                name: "basic".into(),
                password: Secret::new("basic-password-value"),
                previous: None,
                key_patterns: vec![],
            },
        ];
        configure(&state, matrix.base(), 6400, &users, None).unwrap();
        let acl = fs::read_to_string(state.data("redis").join("users.acl")).unwrap();
        assert!(acl.starts_with("user default off\n"), "{acl}");
        assert!(!acl.contains("plain-password-value"));
        assert!(!acl.contains("the-previous-value"));
        let digests = |user: &str| {
            let line = acl.lines().find(|l| l.starts_with(user)).unwrap();
            line.split(' ').filter(|w| w.starts_with('#')).count()
        };
        assert_eq!(digests("user auth "), 2, "current and previous: {acl}");
        assert_eq!(digests("user basic "), 1, "{acl}");
        assert!(acl.contains("user auth on #"));
        let admin = Secret::new("the-admin-password-value");
        configure(&state, matrix.base(), 6400, &users, Some(&admin)).unwrap();
        let with_admin = fs::read_to_string(state.data("redis").join("users.acl")).unwrap();
        assert!(with_admin.starts_with("user default on #"), "{with_admin}");
        assert!(!with_admin.contains("the-admin-password-value"));
        assert!(acl.contains("~session:*"));
        let conf = fs::read_to_string(state.data("redis").join("redis.conf")).unwrap();
        assert!(conf.contains("port 6400"));
        assert!(conf.contains("appendonly no"));
        let mode = fs::metadata(state.data("redis").join("users.acl"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
