//! The secret store: where kisumctl keeps the credentials and keys it
//! generates for an environment (section 12 of the plan).
//!
//! A secret of the inventory (`secrets:` in `base.yaml`) has named keys,
//! for example `auth-db-credentials` has `url`, `username` and `password`.
//! Every backend stores one value per (secret, key). Values are wrapped in
//! [`Secret`], whose `Debug` never shows them and which has no `Display`,
//! so a value cannot reach output or logs by accident.
//!
//! Two backends: local files ([`LocalFiles`]) and AWS Secrets Manager
//! ([`SecretsManager`]); [`for_environment`] opens the one the matrix
//! names.

mod aws;
pub mod inventory;
mod local;
pub mod rotate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use aws::{SecretsManager, SecretsManagerSettings};
pub use local::LocalFiles;

use crate::matrix::Environment;
use crate::matrix::schema::SecretBackend;

/// A secret value. Shown as `<redacted>` by `Debug`; read it with
/// [`Secret::expose`] only where it is handed to its consumer.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A random password: 32 bytes from the operating system's generator,
    /// URL-safe base64 without padding (43 characters, safe in URLs and
    /// connection strings without escaping).
    pub fn random_password() -> Self {
        use base64::Engine as _;
        let bytes: [u8; 32] = rand::random();
        Secret(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a secret store operation failed. Messages name the secret and key,
/// never the value.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "`{0}` is not a valid secret or key name (lowercase letters, digits, `-`, `_` and `.`, not starting with `.`)"
    )]
    BadName(String),
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error(
        "{path} is open to other users (mode {mode:o}): the secret store must be private; run `chmod {private:o} {path}`{or_remove}",
        path = .path.display(),
        private = if *.directory { 0o700 } else { 0o600 },
        or_remove = if *.directory { "" } else { " or remove it" }
    )]
    TooOpen {
        path: PathBuf,
        mode: u32,
        directory: bool,
    },
    /// The stored value is not in the shape the backend keeps (a Secrets
    /// Manager value that is not a JSON object of strings): a problem of
    /// that one secret, which a person fixes.
    #[error("{store}: {secret}: {message}")]
    Malformed {
        store: String,
        secret: String,
        message: String,
    },
    #[error("{store}: {}{message}", if secret.is_empty() { String::new() } else { format!("{secret}: ") })]
    Remote {
        store: String,
        secret: String,
        message: String,
    },
}

/// One stored version of a secret, in backends that keep versions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecretVersion {
    pub id: String,
    /// Staging labels (`AWSCURRENT`, `AWSPREVIOUS`, ...).
    pub stages: Vec<String>,
    /// Seconds since the Unix epoch.
    pub created_at: Option<i64>,
}

/// The stages of a secret's versions during a rotation, named as Secrets
/// Manager names them; the local backend keeps the same three in files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// What every reader gets.
    Current,
    /// A new value being tested; nobody reads it yet.
    Pending,
    /// The value before the last promotion, kept for a rollback.
    Previous,
}

impl Stage {
    pub fn label(self) -> &'static str {
        match self {
            Stage::Current => "AWSCURRENT",
            Stage::Pending => "AWSPENDING",
            Stage::Previous => "AWSPREVIOUS",
        }
    }
}

/// Every key of a secret at one stage.
#[derive(Debug, Clone)]
pub struct Staged {
    pub keys: BTreeMap<String, Secret>,
}

/// Where an environment's secrets live.
pub trait SecretStore: Send + Sync {
    /// A human description of the backend and its location.
    fn describe(&self) -> String;

    /// The value of `key` of `secret`, `None` when it does not exist.
    fn read(&self, secret: &str, key: &str) -> Result<Option<Secret>, StoreError>;

    /// Writes `key` of `secret`, replacing any earlier value atomically.
    fn write(&self, secret: &str, key: &str, value: &Secret) -> Result<(), StoreError>;

    /// The versions of `secret` the backend keeps, newest first; empty for
    /// backends without versions.
    fn versions(&self, _secret: &str) -> Result<Vec<SecretVersion>, StoreError> {
        Ok(Vec::new())
    }

    /// Every key of `secret` at `stage`; `None` when there is no such
    /// version.
    fn read_stage(&self, secret: &str, stage: Stage) -> Result<Option<Staged>, StoreError>;

    /// Writes several keys of `secret` at once (one version where the
    /// backend keeps versions), keeping its other keys.
    fn write_keys(&self, secret: &str, keys: &BTreeMap<String, Secret>) -> Result<(), StoreError> {
        for (key, value) in keys {
            self.write(secret, key, value)?;
        }
        Ok(())
    }

    /// Writes those of `keys` that `secret` does not have yet (one version
    /// where the backend keeps versions) and keeps every key it has,
    /// including one another writer stored a moment ago, in this process
    /// or another, on this machine or another. Answers the keys written;
    /// a key left out was written first by someone else, whose value
    /// stands. `secrets apply` generates through it.
    fn write_absent(
        &self,
        secret: &str,
        keys: &BTreeMap<String, Secret>,
    ) -> Result<Vec<String>, StoreError>;

    /// Stores `keys` (the whole secret) as the pending version of an
    /// existing `secret`, replacing any earlier pending one; readers still
    /// get the current one.
    fn put_pending(&self, secret: &str, keys: &BTreeMap<String, Secret>) -> Result<(), StoreError>;

    /// Makes the pending version current and the current one previous;
    /// nothing when there is no pending version. Safe to repeat after an
    /// interruption.
    fn promote_pending(&self, secret: &str) -> Result<(), StoreError>;

    /// Ends the acceptance of the previous value: local files remove it,
    /// Secrets Manager moves `AWSPREVIOUS` to the current version (so a
    /// reader of the previous stage gets the current value). For internal
    /// credentials, which verifiers accept at both stages.
    fn retire_previous(&self, secret: &str) -> Result<(), StoreError>;

    /// Gives a secret that has never been rotated a previous stage equal
    /// to its current one, so that a reader of the previous stage (the
    /// rendered `ExternalSecret` of an internal credential's previous
    /// value) finds a version from the start; `true` when it labelled one.
    /// Secrets Manager labels the current version `AWSPREVIOUS` when no
    /// version carries it; local files keep no previous copy (an absent
    /// `.previous/` is what their readers expect).
    fn ensure_previous_stage(&self, _secret: &str) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// The stages `secret` has, newest first: the versions of backends
    /// that keep versions, the staged directories of local files.
    fn stages(&self, secret: &str) -> Result<Vec<SecretVersion>, StoreError> {
        self.versions(secret)
    }

    /// When the current value was last changed (Unix seconds).
    fn changed_at(&self, secret: &str) -> Result<Option<i64>, StoreError>;

    /// The secrets that exist, sorted.
    fn list(&self) -> Result<Vec<String>, StoreError>;

    /// The keys of `secret` that exist, sorted.
    fn keys(&self, secret: &str) -> Result<Vec<String>, StoreError>;

    /// Removes `secret` with all its keys; `false` when it did not exist.
    /// No command removes secrets: `secrets check` reports strays and a
    /// person decides.
    #[allow(dead_code)]
    fn remove(&self, secret: &str) -> Result<bool, StoreError>;

    /// The path of a file holding the value, for backends that have one:
    /// local processes receive `<NAME>_FILE` pointing at it, as pods do
    /// with a mounted Secret.
    fn file(&self, secret: &str, key: &str) -> Option<PathBuf>;

    /// Reads `key` of `secret`, creating it with `generate` when missing.
    /// Answers the value and whether it was created now.
    fn ensure(
        &self,
        secret: &str,
        key: &str,
        generate: &mut dyn FnMut() -> Secret,
    ) -> Result<(Secret, bool), StoreError> {
        if let Some(value) = self.read(secret, key)? {
            return Ok((value, false));
        }
        let value = generate();
        let keys = BTreeMap::from([(key.to_string(), value.clone())]);
        if self.write_absent(secret, &keys)?.is_empty() {
            // Another writer stored it first: its value stands.
            if let Some(theirs) = self.read(secret, key)? {
                return Ok((theirs, false));
            }
        }
        Ok((value, true))
    }
}

/// The secret store the matrix names for `env`. A relative `local-files`
/// path resolves against the parent of the matrix directory.
pub fn for_environment(
    matrix_dir: &Path,
    env: &Environment,
) -> Result<Box<dyn SecretStore>, StoreError> {
    match &env.file.secrets {
        SecretBackend::LocalFiles { path } => Ok(Box::new(LocalFiles::new(
            crate::matrix::resolve_path(matrix_dir, path),
        ))),
        SecretBackend::AwsSecretsManager {
            region,
            prefix,
            endpoint,
            ..
        } => Ok(Box::new(SecretsManager::connect(SecretsManagerSettings {
            region: region.clone(),
            prefix: prefix.clone(),
            endpoint: endpoint.clone(),
            static_credentials: None,
        })?)),
    }
}

/// [`check_name`] of every key of `keys`.
pub(crate) fn check_names<V>(keys: &BTreeMap<String, V>) -> Result<(), StoreError> {
    keys.keys().try_for_each(|key| check_name(key))
}

/// Secret and key names: a safe path component and an unsurprising name in
/// every backend.
pub(crate) fn check_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadName(name.escape_debug().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(<redacted>)");
    }

    #[test]
    fn random_passwords_are_long_distinct_and_url_safe() {
        let a = Secret::random_password();
        let b = Secret::random_password();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 43);
        assert!(
            a.expose()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn names_are_checked() {
        for good in ["auth-db-credentials", "key-set.json", "password", "a_b"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "..", ".hidden", "a/b", "A", "x y", "../etc", "é"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_remote_error_of_no_one_secret_names_none() {
        let error = |secret: &str| {
            StoreError::Remote {
                store: "AWS Secrets Manager".into(),
                secret: secret.into(),
                message: "listing secrets: throttled".into(),
            }
            .to_string()
        };
        assert_eq!(error(""), "AWS Secrets Manager: listing secrets: throttled");
        assert_eq!(
            error("auth-db-credentials"),
            "AWS Secrets Manager: auth-db-credentials: listing secrets: throttled"
        );
    }
}
