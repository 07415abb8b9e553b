//! Opaque refresh tokens: 32 random bytes, base64url without padding.
//! Only their SHA-256 reaches auth_db; the token itself exists only in the
//! response that hands it out.

use base64::Engine as _;
use rand::RngExt as _;
use serde::Serialize;
use sha2::{Digest, Sha256};

const TOKEN_BYTES: usize = 32;
/// Length of the base64url form of [`TOKEN_BYTES`] bytes.
const TOKEN_CHARS: usize = 43;

pub struct RefreshToken(String);

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshToken(..)")
    }
}

impl RefreshToken {
    pub fn generate() -> RefreshToken {
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::rng().fill(&mut bytes[..]);
        RefreshToken(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A presented token, if it has the shape of one of ours.
    pub fn parse(presented: &str) -> Option<RefreshToken> {
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(presented);
        (presented.len() == TOKEN_CHARS && decoded.is_ok_and(|b| b.len() == TOKEN_BYTES))
            .then(|| RefreshToken(presented.to_string()))
    }

    /// What auth_db stores.
    pub fn hash(&self) -> Vec<u8> {
        Sha256::digest(self.0.as_bytes()).to_vec()
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The body of a successful login or refresh.
#[derive(Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
}

impl TokenPair {
    pub fn new(access_token: String, refresh_token: RefreshToken, expires_in: i64) -> TokenPair {
        TokenPair {
            access_token,
            refresh_token: refresh_token.into_string(),
            token_type: "Bearer",
            expires_in,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_43_url_safe_characters_and_hash_to_32_bytes() {
        let token = RefreshToken::generate();
        let text = token.0.clone();
        assert_eq!(text.len(), TOKEN_CHARS);
        assert!(
            text.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(token.hash().len(), 32);
        assert!(RefreshToken::parse(&text).is_some());
        assert_ne!(RefreshToken::generate().hash(), token.hash());
        assert!(!format!("{token:?}").contains(&text));
    }

    #[test]
    fn foreign_shapes_are_refused() {
        assert!(RefreshToken::parse("").is_none());
        assert!(RefreshToken::parse("short").is_none());
        assert!(RefreshToken::parse(&"=".repeat(43)).is_none());
    }
}
