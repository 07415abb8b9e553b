//! The JWT signing key set, in the one format Auth reads and kisumctl
//! writes and rotates.
//!
//! ```json
//! {
//!   "format": "kisum-key-set/v1",
//!   "keys": [
//!     { "kid": "3f1c0a9e52b7d4e1", "state": "active", "created-at": 1796400000,
//!       "private-key-pem": "-----BEGIN PRIVATE KEY-----\n..." }
//!   ]
//! }
//! ```
//!
//! A key is `next` (published in the JWKS, not signing), `active` (signing;
//! exactly one), `retiring` (published, no longer signing) or `retired`
//! (kept for the record, gone from the JWKS). Keys are RSA 2048 in PKCS#8;
//! the kid is the first 16 hex digits of the SHA-256 of the public key's
//! DER encoding, so it never repeats across keys.

use std::path::Path;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const FORMAT: &str = "kisum-key-set/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyState {
    Next,
    Active,
    Retiring,
    Retired,
}

impl KeyState {
    /// Whether the public key appears in the JWKS.
    pub fn is_published(self) -> bool {
        matches!(self, KeyState::Next | KeyState::Active | KeyState::Retiring)
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Key {
    pub kid: String,
    pub state: KeyState,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
    pub private_key_pem: String,
}

impl std::fmt::Debug for Key {
    // The private key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    #[error("the key set is not valid JSON of format {FORMAT}: {0}")]
    Parse(String),
    #[error("the key set's `format` is not {FORMAT}")]
    Format,
    #[error(
        "key {0} of the key set (counting from 1) has a kid that is not 16 lowercase hex digits"
    )]
    KidShape(usize),
    #[error(
        "key `{0}`: the kid is not the one its key gives (the first 16 hex digits of the SHA-256 of the public key)"
    )]
    KidMismatch(String),
    #[error("the key set has {0} active keys; exactly one must sign")]
    ActiveCount(usize),
    #[error("kid `{0}` appears twice")]
    DuplicateKid(String),
    #[error("key `{kid}` is unusable: {reason}")]
    BadKey { kid: String, reason: String },
    #[error("cannot generate an RSA key")]
    Generate,
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySet {
    pub format: String,
    pub keys: Vec<Key>,
}

impl Key {
    /// A new RSA 2048 key in the given state.
    pub fn generate(state: KeyState, now: i64) -> Result<Key, KeySetError> {
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| KeySetError::Generate)?;
        let der: Pkcs8V1Der = pair.as_der().map_err(|_| KeySetError::Generate)?;
        let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for chunk in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        let kid = hex::encode(&Sha256::digest(pair.public_key().as_ref())[..8]);
        Ok(Key {
            kid,
            state,
            created_at: now,
            private_key_pem: pem,
        })
    }

    pub fn encoding_key(&self) -> Result<EncodingKey, KeySetError> {
        EncodingKey::from_rsa_pem(self.private_key_pem.as_bytes()).map_err(|e| {
            KeySetError::BadKey {
                kid: self.kid.clone(),
                reason: e.to_string(),
            }
        })
    }

    /// The kid the key's public half gives; `None` when the PEM is not an
    /// RSA PKCS#8 key.
    fn derived_kid(&self) -> Option<String> {
        let body: String = self
            .private_key_pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .ok()?;
        let pair = KeyPair::from_pkcs8(&der).ok()?;
        Some(hex::encode(
            &Sha256::digest(pair.public_key().as_ref())[..8],
        ))
    }

    /// The public half as a JWK with this key's kid.
    pub fn jwk(&self) -> Result<Jwk, KeySetError> {
        let bad = |e: jsonwebtoken::errors::Error| KeySetError::BadKey {
            kid: self.kid.clone(),
            reason: e.to_string(),
        };
        let mut jwk =
            Jwk::from_encoding_key(&self.encoding_key()?, Algorithm::RS256).map_err(bad)?;
        jwk.common.key_id = Some(self.kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::RS256);
        Ok(jwk)
    }

    pub fn decoding_key(&self) -> Result<DecodingKey, KeySetError> {
        DecodingKey::from_jwk(&self.jwk()?).map_err(|e| KeySetError::BadKey {
            kid: self.kid.clone(),
            reason: e.to_string(),
        })
    }
}

/// Where and what kind of JSON error, without serde's quotation of the
/// offending value (which could be a private key put in the wrong field).
fn json_error(error: &serde_json::Error) -> String {
    let what = match error.classify() {
        serde_json::error::Category::Data => {
            "a missing field, an unknown field or a value of the wrong kind"
        }
        _ => "malformed JSON",
    };
    format!("{what} at line {} column {}", error.line(), error.column())
}

impl KeySet {
    /// A first key set: one active key.
    pub fn generate(now: i64) -> Result<KeySet, KeySetError> {
        Ok(KeySet {
            format: FORMAT.to_string(),
            keys: vec![Key::generate(KeyState::Active, now)?],
        })
    }

    pub fn from_json(text: &str) -> Result<KeySet, KeySetError> {
        let set: KeySet =
            serde_json::from_str(text).map_err(|e| KeySetError::Parse(json_error(&e)))?;
        set.check()?;
        Ok(set)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn load(path: &Path) -> Result<KeySet, KeySetError> {
        let text = std::fs::read_to_string(path).map_err(|e| KeySetError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        KeySet::from_json(&text)
    }

    /// Writes the set with mode 0600, replacing the file atomically.
    pub fn save(&self, path: &Path) -> Result<(), KeySetError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let io = |e: std::io::Error| KeySetError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let partial = path.with_extension("partial");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .map_err(io)?;
        file.write_all(self.to_json().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&partial, path).map_err(io)
    }

    /// Exactly one active key, unique kids, every key parses.
    pub fn check(&self) -> Result<(), KeySetError> {
        if self.format != FORMAT {
            return Err(KeySetError::Format);
        }
        // Shapes first: nothing read from the file is quoted in an error
        // before it is known to be a kid (a misplaced private key must not
        // end up in a message or a log).
        for (index, key) in self.keys.iter().enumerate() {
            let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
            if key.kid.len() != 16 || !key.kid.chars().all(hex) {
                return Err(KeySetError::KidShape(index + 1));
            }
        }
        let active = self
            .keys
            .iter()
            .filter(|k| k.state == KeyState::Active)
            .count();
        if active != 1 {
            return Err(KeySetError::ActiveCount(active));
        }
        let mut seen = std::collections::BTreeSet::new();
        for key in &self.keys {
            if !seen.insert(key.kid.as_str()) {
                return Err(KeySetError::DuplicateKid(key.kid.clone()));
            }
            key.encoding_key()?;
            if key.derived_kid().as_deref() != Some(key.kid.as_str()) {
                return Err(KeySetError::KidMismatch(key.kid.clone()));
            }
        }
        Ok(())
    }

    pub fn active(&self) -> &Key {
        self.keys
            .iter()
            .find(|k| k.state == KeyState::Active)
            .expect("a checked key set has one active key")
    }

    pub fn published(&self) -> impl Iterator<Item = &Key> {
        self.keys.iter().filter(|k| k.state.is_published())
    }

    /// The JWKS Auth serves: every published key's public half.
    pub fn jwks(&self) -> Result<JwkSet, KeySetError> {
        Ok(JwkSet {
            keys: self.published().map(Key::jwk).collect::<Result<_, _>>()?,
        })
    }

    /// The kids of the published keys, in file order.
    pub fn published_kids(&self) -> Vec<String> {
        self.published().map(|k| k.kid.clone()).collect()
    }
}

/// The error without any quoted input: a JSON error may quote a value, and
/// a value may be a private key.
pub fn safe_message(error: &KeySetError) -> String {
    match error {
        KeySetError::Parse(detail) => {
            let position = detail
                .rfind(" at line ")
                .map(|at| detail[at..].to_string())
                .unwrap_or_default();
            format!("the key set is not valid kisum-key-set/v1 JSON{position}")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_set_has_one_active_key_in_its_jwks() {
        let set = KeySet::generate(1).unwrap();
        set.check().unwrap();
        let jwks = set.jwks().unwrap();
        assert_eq!(jwks.keys.len(), 1);
        assert_eq!(
            jwks.keys[0].common.key_id.as_deref(),
            Some(set.active().kid.as_str())
        );
        assert_eq!(set.active().kid.len(), 16);
    }

    #[test]
    fn retired_keys_leave_the_jwks() {
        let mut set = KeySet::generate(1).unwrap();
        set.keys.push(Key::generate(KeyState::Retired, 2).unwrap());
        set.keys.push(Key::generate(KeyState::Next, 3).unwrap());
        assert_eq!(set.jwks().unwrap().keys.len(), 2);
    }

    #[test]
    fn two_active_keys_are_refused() {
        let mut set = KeySet::generate(1).unwrap();
        set.keys.push(Key::generate(KeyState::Active, 2).unwrap());
        assert!(matches!(set.check(), Err(KeySetError::ActiveCount(2))));
    }

    #[test]
    fn the_debug_form_hides_the_private_key() {
        let set = KeySet::generate(1).unwrap();
        assert!(!format!("{set:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn a_saved_set_loads_back_and_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key-set.json");
        let set = KeySet::generate(1).unwrap();
        set.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(KeySet::load(&path).unwrap().active().kid, set.active().kid);
    }

    #[test]
    fn a_parse_error_never_quotes_its_input() {
        let error = KeySet::from_json(r#"{"format": 1, "keys": "-----BEGIN PRIVATE KEY-----"}"#)
            .unwrap_err();
        let message = safe_message(&error);
        assert!(!message.contains("BEGIN"));
        assert!(message.contains("at line 1"));
    }
}
