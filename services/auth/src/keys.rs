//! The signing key set in memory: loaded at start (no valid set, no
//! start), reloaded without a restart when the file's content changes
//! (polled by hash) or on `POST /internal/keys/reload`. A bad new file
//! never replaces a good set. Key material is never logged: only kids.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use kisum_common::jwt::{Claims, TokenError, TokenPolicy};
pub use kisum_common::keys::safe_message;
use kisum_common::keys::{KeySet, KeySetError};
use sha2::{Digest, Sha256};

use crate::config::KeySource;

/// How often the key-set file is checked for a change.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// One loaded key set with everything derived from it.
pub struct LoadedKeys {
    pub set: KeySet,
    pub jwks: JwkSet,
    decoding: BTreeMap<String, DecodingKey>,
    digest: [u8; 32],
}

impl LoadedKeys {
    fn from_text(text: &str) -> Result<LoadedKeys, KeySetError> {
        let set = KeySet::from_json(text)?;
        let decoding = set
            .published()
            .map(|key| Ok((key.kid.clone(), key.decoding_key()?)))
            .collect::<Result<_, KeySetError>>()?;
        Ok(LoadedKeys {
            jwks: set.jwks()?,
            decoding,
            digest: Sha256::digest(text.as_bytes()).into(),
            set,
        })
    }

    pub fn published_kids(&self) -> Vec<String> {
        self.set.published_kids()
    }
}

#[derive(Clone)]
pub struct KeyStore {
    source: KeySource,
    current: Arc<RwLock<Arc<LoadedKeys>>>,
    /// The digest of the last file content refused, so it is logged once.
    refused: Arc<Mutex<Option<[u8; 32]>>>,
}

impl KeyStore {
    pub fn load(source: KeySource) -> Result<KeyStore, KeySetError> {
        let loaded = LoadedKeys::from_text(&read(&source)?)?;
        Ok(KeyStore {
            source,
            current: Arc::new(RwLock::new(Arc::new(loaded))),
            refused: Arc::new(Mutex::new(None)),
        })
    }

    pub fn current(&self) -> Arc<LoadedKeys> {
        self.current
            .read()
            .map(|guard| Arc::clone(&guard))
            .unwrap_or_else(|poisoned| Arc::clone(&poisoned.into_inner()))
    }

    fn replace(&self, loaded: LoadedKeys) -> Vec<String> {
        let kids = loaded.published_kids();
        let active = loaded.set.active().kid.clone();
        match self.current.write() {
            Ok(mut guard) => *guard = Arc::new(loaded),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(loaded),
        }
        tracing::info!(active_kid = %active, published_kids = ?kids, "signing key set loaded");
        kids
    }

    /// Reads the source again and installs it; returns the published kids.
    pub fn reload(&self) -> Result<Vec<String>, KeySetError> {
        match read(&self.source).and_then(|text| LoadedKeys::from_text(&text)) {
            Ok(loaded) => Ok(self.replace(loaded)),
            Err(error) => {
                tracing::warn!(error = %safe_message(&error), "key set reload refused; keeping the current set");
                Err(error)
            }
        }
    }

    /// Installs the file's content if it changed since the last look.
    fn reload_if_changed(&self) {
        let Ok(text) = read(&self.source) else {
            return self.refuse_once([0; 32], "the key set file cannot be read");
        };
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        if digest == self.current().digest {
            return;
        }
        match LoadedKeys::from_text(&text) {
            Ok(loaded) => {
                self.replace(loaded);
            }
            Err(error) => self.refuse_once(digest, &safe_message(&error)),
        }
    }

    fn refuse_once(&self, digest: [u8; 32], reason: &str) {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if *refused != Some(digest) {
            *refused = Some(digest);
            tracing::warn!(error = %reason, "changed key set refused; keeping the current set");
        }
    }

    /// Polls the key-set file every [`POLL_INTERVAL`] (nothing to watch
    /// for an inline set). The task ends when the returned handle is aborted.
    pub fn watch(&self) -> Option<tokio::task::JoinHandle<()>> {
        if !matches!(self.source, KeySource::File(_)) {
            return None;
        }
        let store = self.clone();
        Some(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(POLL_INTERVAL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let store = store.clone();
                let _ = tokio::task::spawn_blocking(move || store.reload_if_changed()).await;
            }
        }))
    }

    /// A new access token signed with the active key.
    pub fn sign(
        &self,
        policy: &TokenPolicy,
        user: &str,
        session: &str,
        now: i64,
        ttl: i64,
    ) -> Result<String, KeySetError> {
        policy.sign(&self.current().set, user, session, now, ttl)
    }

    /// Verifies an access token against the published keys (RS256 only;
    /// issuer, audience, expiry and not-before checked).
    pub fn verify(&self, policy: &TokenPolicy, token: &str) -> Result<Claims, TokenError> {
        let kid = TokenPolicy::kid_of(token)?;
        let current = self.current();
        let key = current
            .decoding
            .get(&kid)
            .ok_or(TokenError::UnknownKid(kid))?;
        policy.verify_checked_header(token, key)
    }
}

fn read(source: &KeySource) -> Result<String, KeySetError> {
    match source {
        KeySource::Inline(text) => Ok(text.clone()),
        KeySource::File(path) => std::fs::read_to_string(path).map_err(|e| KeySetError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use kisum_common::keys::{Key, KeyState};

    use super::*;

    fn policy() -> TokenPolicy {
        TokenPolicy {
            issuer: "https://auth.test".into(),
            audience: "kisum-api".into(),
            leeway_seconds: 0,
        }
    }

    #[test]
    fn a_changed_file_is_picked_up_and_a_broken_one_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key-set.json");
        let first = KeySet::generate(1).unwrap();
        first.save(&path).unwrap();
        let store = KeyStore::load(KeySource::File(path.clone())).unwrap();
        let now = crate::unix_now();
        let token = store.sign(&policy(), "u", "s", now, 900).unwrap();

        let mut second = first.clone();
        second.keys[0].state = KeyState::Retiring;
        second
            .keys
            .push(Key::generate(KeyState::Active, 2).unwrap());
        second.save(&path).unwrap();
        store.reload_if_changed();
        assert_eq!(store.current().published_kids().len(), 2);
        // Tokens of the retiring key still verify.
        assert_eq!(store.verify(&policy(), &token).unwrap().sub, "u");

        std::fs::write(&path, "{\"format\": \"kisum-key-set/v1\", \"keys\": [").unwrap();
        store.reload_if_changed();
        assert_eq!(store.current().published_kids().len(), 2);
        assert!(store.reload().is_err());
    }
}
