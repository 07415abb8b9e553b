//! Access tokens: RS256 JWTs, small and identity-only (sub, sid, iss, aud,
//! exp, iat, nbf; kid in the header), verified strictly.

use std::cell::RefCell;
use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::keys::{KeySet, KeySetError};

thread_local! {
    /// Per thread: the last policy's `Validation` (a handful of allocations
    /// to build) and the tokens verified under it, rebuilt whenever the
    /// thread verifies for another policy.
    static VERIFIER: RefCell<Option<Verifier>> = const { RefCell::new(None) };
}

/// The longest a verifier may use the JWKS it fetched
/// (`JWKS_CACHE_SECONDS` of Admin and the module backends): a key rotation
/// waits this long for every verifier to see a new key.
pub const MAX_JWKS_CACHE_SECONDS: u64 = 3600;

/// Bounds of Auth's `ACCESS_TOKEN_TTL`: below 10 s a token could expire on
/// its way to a backend (a key-rotation rehearsal on `local` uses 20 s);
/// above an hour a revoked session's token would stay usable too long
/// (section 12.3). `kisumctl validate` checks the matrix against them.
pub const ACCESS_TTL_SECONDS: (i64, i64) = (10, 3600);
/// The longest `REFRESH_TOKEN_TTL`: 90 days. It must also be longer than
/// the access token's.
pub const MAX_REFRESH_TTL_SECONDS: i64 = 90 * 24 * 3600;

/// How many verified tokens a thread remembers; past it, it starts over.
const VERIFIED_PER_THREAD: usize = 4096;

/// One thread's verification state for one policy.
///
/// A client sends the same access token with every request for its
/// lifetime, so a signature once verified is remembered by the token's
/// exact text (any other text, even one byte apart, is verified afresh).
/// A remembered token is only reached after its kid was found among the
/// keys in use (a retired or revoked key's tokens are refused before), its
/// `exp` and `nbf` are checked again on every use, and issuer and audience
/// are those of the policy it was verified under.
struct Verifier {
    policy: TokenPolicy,
    validation: Validation,
    verified: HashMap<Box<str>, Claims>,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The session id.
    pub sid: String,
    pub iss: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("algorithm {0} is not accepted; only RS256")]
    Algorithm(String),
    #[error("token has no kid")]
    NoKid,
    #[error("unknown kid {0}")]
    UnknownKid(String),
    #[error("token rejected: {0}")]
    Invalid(String),
}

/// Issuer, audience and clock-skew allowance every verifier applies.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    pub issuer: String,
    pub audience: String,
    pub leeway_seconds: u64,
}

impl TokenPolicy {
    /// Signs an access token for a user's session with the active key.
    pub fn sign(
        &self,
        keys: &KeySet,
        user: &str,
        session: &str,
        now: i64,
        ttl_seconds: i64,
    ) -> Result<String, KeySetError> {
        let key = keys.active();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(key.kid.clone());
        let claims = Claims {
            sub: user.to_string(),
            sid: session.to_string(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now + ttl_seconds,
            iat: now,
            nbf: now,
        };
        jsonwebtoken::encode(&header, &claims, &key.encoding_key()?).map_err(|e| {
            KeySetError::BadKey {
                kid: key.kid.clone(),
                reason: e.to_string(),
            }
        })
    }

    /// The kid a token names, after checking it asks for RS256.
    pub fn kid_of(token: &str) -> Result<String, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithmName => {
                TokenError::Algorithm("unknown".into())
            }
            _ => TokenError::Malformed,
        })?;
        if header.alg != Algorithm::RS256 {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        header.kid.ok_or(TokenError::NoKid)
    }

    /// Verifies signature, issuer, audience, expiry and not-before.
    pub fn verify(&self, token: &str, key: &DecodingKey) -> Result<Claims, TokenError> {
        Self::kid_of(token)?;
        self.verify_checked_header(token, key)
    }

    /// [`verify`](Self::verify) for a token whose header [`kid_of`](Self::kid_of)
    /// already accepted (it chose `key`): the header is not decoded twice.
    /// jsonwebtoken still refuses any algorithm but RS256 while verifying.
    pub fn verify_checked_header(
        &self,
        token: &str,
        key: &DecodingKey,
    ) -> Result<Claims, TokenError> {
        VERIFIER.with(|cached| {
            let mut cached = cached.borrow_mut();
            let verifier = match &mut *cached {
                Some(verifier) if verifier.policy.same_as(self) => verifier,
                slot => slot.insert(Verifier {
                    policy: self.clone(),
                    validation: self.validation(),
                    verified: HashMap::new(),
                }),
            };
            if let Some(claims) = verifier.verified.get(token) {
                if self.in_time(claims, unix_now()) {
                    return Ok(claims.clone());
                }
                // Expired since: verified again below, for the exact error.
                verifier.verified.remove(token);
            }
            let claims = jsonwebtoken::decode::<Claims>(token, key, &verifier.validation)
                .map(|data| data.claims)
                .map_err(|e| TokenError::Invalid(e.to_string()))?;
            if verifier.verified.len() >= VERIFIED_PER_THREAD {
                verifier.verified.clear();
            }
            verifier.verified.insert(token.into(), claims.clone());
            Ok(claims)
        })
    }

    /// `exp` and `nbf` against `now`, with the policy's clock skew, as
    /// jsonwebtoken judges them.
    fn in_time(&self, claims: &Claims, now: i64) -> bool {
        let leeway = i64::try_from(self.leeway_seconds).unwrap_or(i64::MAX);
        claims.exp.saturating_add(leeway) >= now && claims.nbf.saturating_sub(leeway) <= now
    }

    /// What jsonwebtoken checks besides the signature.
    fn validation(&self) -> Validation {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway_seconds;
        validation
    }

    fn same_as(&self, other: &TokenPolicy) -> bool {
        self.issuer == other.issuer
            && self.audience == other.audience
            && self.leeway_seconds == other.leeway_seconds
    }

    /// Verifies against a key set's published keys (Auth's own check).
    pub fn verify_with_set(&self, token: &str, keys: &KeySet) -> Result<Claims, TokenError> {
        let kid = Self::kid_of(token)?;
        let key = keys
            .published()
            .find(|k| k.kid == kid)
            .ok_or_else(|| TokenError::UnknownKid(kid.clone()))?;
        let decoding = key
            .decoding_key()
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        self.verify_checked_header(token, &decoding)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;
    use crate::keys::{Key, KeyState};

    fn policy() -> TokenPolicy {
        TokenPolicy {
            issuer: "https://auth.kisum.test".into(),
            audience: "kisum-api".into(),
            leeway_seconds: 0,
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn a_signed_token_verifies_and_carries_only_identity() {
        let keys = KeySet::generate(1).unwrap();
        let token = policy().sign(&keys, "u1", "s1", now(), 900).unwrap();
        let claims = policy().verify_with_set(&token, &keys).unwrap();
        assert_eq!((claims.sub.as_str(), claims.sid.as_str()), ("u1", "s1"));
        let payload = token.split('.').nth(1).unwrap();
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        let fields: serde_json::Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(fields.as_object().unwrap().len(), 7);
    }

    #[test]
    fn wrong_issuer_audience_expiry_and_future_tokens_are_rejected() {
        let keys = KeySet::generate(1).unwrap();
        let other = TokenPolicy {
            issuer: "https://evil".into(),
            ..policy()
        };
        let token = other.sign(&keys, "u", "s", now(), 900).unwrap();
        assert!(policy().verify_with_set(&token, &keys).is_err());
        let other = TokenPolicy {
            audience: "other".into(),
            ..policy()
        };
        let token = other.sign(&keys, "u", "s", now(), 900).unwrap();
        assert!(policy().verify_with_set(&token, &keys).is_err());
        let expired = policy().sign(&keys, "u", "s", now() - 1000, 900).unwrap();
        assert!(policy().verify_with_set(&expired, &keys).is_err());
        let future = policy().sign(&keys, "u", "s", now() + 600, 900).unwrap();
        assert!(policy().verify_with_set(&future, &keys).is_err());
    }

    #[test]
    fn each_policy_is_checked_even_when_one_thread_alternates() {
        let keys = KeySet::generate(1).unwrap();
        let other = TokenPolicy {
            audience: "other-api".into(),
            ..policy()
        };
        let token = policy().sign(&keys, "u", "s", now(), 900).unwrap();
        for _ in 0..2 {
            assert!(policy().verify_with_set(&token, &keys).is_ok());
            assert!(other.verify_with_set(&token, &keys).is_err());
        }
        let lenient = TokenPolicy {
            leeway_seconds: 120,
            ..policy()
        };
        let just_expired = policy().sign(&keys, "u", "s", now() - 960, 900).unwrap();
        assert!(policy().verify_with_set(&just_expired, &keys).is_err());
        assert!(lenient.verify_with_set(&just_expired, &keys).is_ok());
        assert!(policy().verify_with_set(&just_expired, &keys).is_err());
    }

    #[test]
    fn alg_none_and_hs256_are_rejected_before_any_key_is_used() {
        let header = b64(br#"{"alg":"none","kid":"x"}"#);
        let body = b64(br#"{"sub":"u","sid":"s"}"#);
        let none = format!("{header}.{body}.");
        assert!(TokenPolicy::kid_of(&none).is_err());
        let header = b64(br#"{"alg":"HS256","kid":"x","typ":"JWT"}"#);
        let hs = format!("{header}.{body}.c2ln");
        assert!(matches!(
            TokenPolicy::kid_of(&hs),
            Err(TokenError::Algorithm(_))
        ));
    }

    #[test]
    fn a_tampered_payload_or_unknown_kid_is_rejected() {
        let keys = KeySet::generate(1).unwrap();
        let token = policy().sign(&keys, "u1", "s1", now(), 900).unwrap();
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let claims = format!(
            r#"{{"sub":"admin","sid":"s1","iss":"{}","aud":"kisum-api","exp":{},"iat":{},"nbf":{}}}"#,
            policy().issuer,
            now() + 900,
            now(),
            now()
        );
        parts[1] = b64(claims.as_bytes());
        assert!(policy().verify_with_set(&parts.join("."), &keys).is_err());
        let stranger = KeySet {
            format: keys.format.clone(),
            keys: vec![Key::generate(KeyState::Active, 1).unwrap()],
        };
        let token = policy().sign(&stranger, "u", "s", now(), 900).unwrap();
        assert!(matches!(
            policy().verify_with_set(&token, &keys),
            Err(TokenError::UnknownKid(_))
        ));
    }

    #[test]
    fn a_remembered_token_is_refused_once_expired_or_its_key_is_gone() {
        let keys = KeySet::generate(1).unwrap();
        // Valid for one more second (no clock skew in this policy).
        let token = policy().sign(&keys, "u", "s", now() - 899, 900).unwrap();
        assert!(policy().verify_with_set(&token, &keys).is_ok());
        assert!(
            policy().verify_with_set(&token, &keys).is_ok(),
            "remembered"
        );
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert!(matches!(
            policy().verify_with_set(&token, &keys),
            Err(TokenError::Invalid(_))
        ));
        // A remembered token of a key no longer in the set is refused.
        let token = policy().sign(&keys, "u", "s", now(), 900).unwrap();
        assert!(policy().verify_with_set(&token, &keys).is_ok());
        let replaced = KeySet::generate(1).unwrap();
        assert!(matches!(
            policy().verify_with_set(&token, &replaced),
            Err(TokenError::UnknownKid(_))
        ));
        // And one byte apart is verified afresh (the signature fails).
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(policy().verify_with_set(&tampered, &keys).is_err());
    }
}
