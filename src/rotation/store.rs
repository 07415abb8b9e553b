//! The key set and its timeline in the environment's secret store.
//!
//! - the key set: the inventory secret generated as `rsa-key-set`
//!   (`jwt-signing-keys`, key `key-set.json`), what Auth reads;
//! - its public half: the `derived` secret (`jwt-public-keys`, key
//!   `jwks.json`), rewritten with every change;
//! - the timeline: secret `jwt-key-rotation`, key `timeline.json` (no key
//!   material; kept out of the key set so that every version of the key
//!   set in a versioned backend is one change of keys).

use kisum_common::keys::KeySet;

use super::timeline::Timeline;
use crate::matrix::schema::{BaseFile, Generation};
use crate::secrets::{Secret, SecretStore, SecretVersion, StoreError};

pub const TIMELINE_SECRET: &str = "jwt-key-rotation";
pub const TIMELINE_KEY: &str = "timeline.json";

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the matrix has no secret generated as `rsa-key-set` (the JWT key set)")]
    NoKeySetSecret,
    #[error(
        "{store} holds no key set ({secret}/{key}). A new environment gets its first one from `kisumctl secrets apply ENV` (`deploy local` does it for local); if the platform is already running, its services still hold the lost set: put it back (a backup, or the previous version in Secrets Manager) instead of generating a new one, which would refuse every signed-in user"
    )]
    Missing {
        store: String,
        secret: String,
        key: String,
    },
    #[error("{secret}/{key} in {store}: {reason}")]
    Unreadable {
        store: String,
        secret: String,
        key: String,
        reason: String,
    },
}

pub struct KeyStore<'s> {
    store: &'s dyn SecretStore,
    /// (secret, key) of the key set.
    set: (String, String),
    /// (secret, key) of the JWKS, when the inventory has one.
    public: Option<(String, String)>,
}

impl<'s> KeyStore<'s> {
    /// The key set's location from the matrix's secrets inventory.
    pub fn new(base: &BaseFile, store: &'s dyn SecretStore) -> Result<Self, KeyStoreError> {
        let first_key = |generation: Generation| {
            base.secrets
                .iter()
                .find(|(_, s)| s.generate == generation)
                .and_then(|(id, s)| Some((id.clone(), s.keys.first()?.clone())))
        };
        Ok(KeyStore {
            store,
            set: first_key(Generation::RsaKeySet).ok_or(KeyStoreError::NoKeySetSecret)?,
            public: first_key(Generation::Derived),
        })
    }

    pub fn describe(&self) -> String {
        format!("{}/{} in {}", self.set.0, self.set.1, self.store.describe())
    }

    /// The key set; an error when there is none or it does not parse. The
    /// message never quotes the file (it holds private keys).
    pub fn load(&self) -> Result<KeySet, KeyStoreError> {
        let (secret, key) = &self.set;
        let text = self
            .store
            .read(secret, key)?
            .ok_or_else(|| KeyStoreError::Missing {
                store: self.store.describe(),
                secret: secret.clone(),
                key: key.clone(),
            })?;
        KeySet::from_json(text.expose()).map_err(|e| KeyStoreError::Unreadable {
            store: self.store.describe(),
            secret: secret.clone(),
            key: key.clone(),
            reason: kisum_common::keys::safe_message(&e),
        })
    }

    /// Writes the key set, then its public half.
    pub fn save(&self, set: &KeySet) -> Result<(), KeyStoreError> {
        let (secret, key) = &self.set;
        self.store.write(secret, key, &Secret::new(set.to_json()))?;
        if let Some((secret, key)) = &self.public {
            let jwks = set.jwks().map_err(|e| KeyStoreError::Unreadable {
                store: self.store.describe(),
                secret: self.set.0.clone(),
                key: self.set.1.clone(),
                reason: e.to_string(),
            })?;
            let json = serde_json::to_string(&jwks).unwrap_or_default();
            crate::local::credentials::put(self.store, secret, key, &Secret::new(json)).map_err(
                |e| KeyStoreError::Unreadable {
                    store: self.store.describe(),
                    secret: secret.clone(),
                    key: key.clone(),
                    reason: format!("{e:#}"),
                },
            )?;
        }
        Ok(())
    }

    /// The timeline; empty when there is none yet.
    pub fn timeline(&self) -> Result<Timeline, KeyStoreError> {
        match self.store.read(TIMELINE_SECRET, TIMELINE_KEY)? {
            None => Ok(Timeline::default()),
            Some(text) => {
                Timeline::from_json(text.expose()).map_err(|e| KeyStoreError::Unreadable {
                    store: self.store.describe(),
                    secret: TIMELINE_SECRET.into(),
                    key: TIMELINE_KEY.into(),
                    reason: e.to_string(),
                })
            }
        }
    }

    pub fn save_timeline(&self, timeline: &Timeline) -> Result<(), KeyStoreError> {
        self.store.write(
            TIMELINE_SECRET,
            TIMELINE_KEY,
            &Secret::new(timeline.to_json()),
        )?;
        Ok(())
    }

    /// The versions of the key set's secret, in backends that keep them.
    pub fn versions(&self) -> Result<Vec<SecretVersion>, KeyStoreError> {
        Ok(self.store.versions(&self.set.0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;
    use crate::rotation::timeline::EventKind;
    use crate::secrets::LocalFiles;

    #[test]
    fn the_key_set_its_jwks_and_the_timeline_round_trip() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("environments");
        let matrix = Matrix::load(&dir).unwrap();
        let root = tempfile::tempdir().unwrap();
        let files = LocalFiles::new(root.path().join("secrets"));
        let keys = KeyStore::new(matrix.base(), &files).unwrap();
        let error = keys.load().unwrap_err().to_string();
        assert!(error.contains("holds no key set"), "{error}");

        let set = KeySet::generate(1).unwrap();
        keys.save(&set).unwrap();
        assert_eq!(keys.load().unwrap().active().kid, set.active().kid);
        let jwks = files.read("jwt-public-keys", "jwks.json").unwrap().unwrap();
        assert!(jwks.expose().contains(&set.active().kid));
        assert!(!jwks.expose().contains("PRIVATE"));

        assert!(keys.timeline().unwrap().events.is_empty());
        let mut timeline = Timeline::default();
        timeline.record(5, EventKind::Prepared, "k");
        keys.save_timeline(&timeline).unwrap();
        assert_eq!(keys.timeline().unwrap(), timeline);
        assert!(keys.versions().unwrap().is_empty());
    }

    #[test]
    fn a_broken_key_set_is_named_without_quoting_it() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("environments");
        let matrix = Matrix::load(&dir).unwrap();
        let root = tempfile::tempdir().unwrap();
        let files = LocalFiles::new(root.path().join("secrets"));
        let broken = Secret::new(r#"{"format": 1, "keys": "-----BEGIN PRIVATE KEY-----"}"#);
        files
            .write("jwt-signing-keys", "key-set.json", &broken)
            .unwrap();
        let error = KeyStore::new(matrix.base(), &files)
            .unwrap()
            .load()
            .unwrap_err()
            .to_string();
        assert!(error.contains("jwt-signing-keys/key-set.json"), "{error}");
        assert!(!error.contains("BEGIN"), "{error}");
    }
}
