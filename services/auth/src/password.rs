//! Argon2id password hashes (PHC strings, the crate's default parameters:
//! 19 MiB, 2 passes, 1 lane). Hashing runs on the blocking pool, a few at
//! a time, so a burst of logins cannot exhaust memory or starve the
//! runtime. An unknown user is checked against a dummy hash so that the
//! answer takes about as long as for a known one.

use std::sync::{Arc, LazyLock};

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};
use tokio::sync::Semaphore;

/// Longest password accepted (bytes); longer input is refused before hashing.
pub const MAX_PASSWORD_BYTES: usize = 1024;

static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    hash_now("kisum dummy password for unknown users").expect("argon2 hashes a constant")
});

fn hash_now(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))
}

fn verify_now(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
}

impl Default for Passwords {
    fn default() -> Self {
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        Passwords {
            permits: Arc::new(Semaphore::new(parallel * 2)),
        }
    }
}

impl Passwords {
    /// Computes the dummy hash now rather than on the first unknown user.
    pub fn warm_up(&self) {
        LazyLock::force(&DUMMY_HASH);
    }

    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        let _permit = self.permits.acquire().await?;
        tokio::task::spawn_blocking(move || hash_now(&password)).await?
    }

    /// Whether `password` matches `hash`; with no hash (unknown user) the
    /// same work is done against the dummy hash and the answer is false.
    pub async fn verify(&self, password: String, hash: Option<String>) -> anyhow::Result<bool> {
        let _permit = self.permits.acquire().await?;
        tokio::task::spawn_blocking(move || match hash {
            Some(hash) => verify_now(&password, &hash),
            None => {
                let _ = verify_now(&password, &DUMMY_HASH);
                false
            }
        })
        .await
        .map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_is_argon2id_and_verifies_only_its_password() {
        let passwords = Passwords::default();
        let hash = passwords.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            passwords
                .verify("correct horse".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(!passwords.verify("wrong".into(), Some(hash)).await.unwrap());
        assert!(
            !passwords
                .verify("correct horse".into(), None)
                .await
                .unwrap()
        );
    }
}
