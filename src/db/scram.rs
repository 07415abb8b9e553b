//! SCRAM-SHA-256 password verifiers (RFC 5802, RFC 7677), computed here
//! so that `CREATE ROLE ... PASSWORD` carries the verifier PostgreSQL
//! stores, never the password: a server that logs statements logs nothing
//! usable.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};

use crate::secrets::Secret;

/// PostgreSQL's default iteration count.
const ITERATIONS: u32 = 4096;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one output block: RFC 5802's `Hi`.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut block = hmac(password, &[salt, &1u32.to_be_bytes()]);
    let mut result = block;
    for _ in 1..iterations {
        block = hmac(password, &[&block]);
        for (out, byte) in result.iter_mut().zip(block) {
            *out ^= byte;
        }
    }
    result
}

fn verifier_with(password: &str, salt: &[u8], iterations: u32) -> String {
    let salted = salted_password(password.as_bytes(), salt, iterations);
    let client_key = hmac(&salted, &[b"Client Key"]);
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac(&salted, &[b"Server Key"]);
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

/// What `PASSWORD '...'` should carry for `password`: its verifier with a
/// fresh salt. PostgreSQL normalizes non-ASCII passwords (SASLprep) before
/// hashing; rather than reimplement that, such a password goes as it is
/// and the server hashes it.
pub fn password_clause(password: &Secret) -> Secret {
    let value = password.expose();
    if value.is_ascii() {
        let salt: [u8; 16] = rand::random();
        Secret::new(verifier_with(value, &salt, ITERATIONS))
    } else {
        Secret::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verifier_matches_rfc_7677() {
        // RFC 7677, section 3: user "user", password "pencil", salt
        // W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations; its ServerSignature
        // (6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=) derives from the
        // server key checked here through the same HMAC.
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let verifier = verifier_with("pencil", &salt, 4096);
        let server_key = verifier.rsplit(':').next().unwrap();
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let signature = hmac(
            &STANDARD.decode(server_key).unwrap(),
            &[auth_message.as_bytes()],
        );
        assert_eq!(
            STANDARD.encode(signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"));
    }

    #[test]
    fn the_password_never_appears_in_the_clause() {
        let password = Secret::new("correct-horse-battery-staple");
        let clause = password_clause(&password);
        assert!(!clause.expose().contains("horse"));
        assert_ne!(clause, password_clause(&password), "a fresh salt each time");
        assert_eq!(password_clause(&Secret::new("zoë")).expose(), "zoë");
    }
}
