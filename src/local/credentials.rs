//! The secrets `deploy local` generates into the secret store, each only
//! when missing: internal service credentials (tokens), the first JWT key
//! set (`kisum-key-set/v1`) and its public half, the Redis ACL users'
//! passwords and URLs, and the PostgreSQL superuser's password. Database
//! credentials are made by `db provision`, the smoke fixtures by `seed`.

use kisum_common::keys::KeySet;

use super::redis::{self, RedisUser};
use crate::matrix::schema::{BaseFile, Generation};
use crate::secrets::{Secret, SecretStore};

/// Writes `value` unless the store already holds exactly it; `true` when
/// written.
pub fn put(
    store: &dyn SecretStore,
    secret: &str,
    key: &str,
    value: &Secret,
) -> anyhow::Result<bool> {
    if store.read(secret, key)?.as_ref() == Some(value) {
        return Ok(false);
    }
    store.write(secret, key, value)?;
    Ok(true)
}

/// A random password for `key` of `secret` unless one exists.
pub fn password(store: &dyn SecretStore, secret: &str, key: &str) -> anyhow::Result<Secret> {
    Ok(store.ensure(secret, key, &mut Secret::random_password)?.0)
}

/// Tokens, the key set and the public keys of the inventory; answers the
/// secrets created or changed now.
pub fn ensure_generated(
    base: &BaseFile,
    store: &dyn SecretStore,
    now: i64,
) -> anyhow::Result<Vec<String>> {
    let mut created = Vec::new();
    for (id, secret) in &base.secrets {
        match secret.generate {
            Generation::Token => {
                for key in &secret.keys {
                    if store.ensure(id, key, &mut Secret::random_password)?.1 {
                        created.push(format!("{id}/{key}"));
                    }
                }
            }
            Generation::RsaKeySet => {
                for key in &secret.keys {
                    if store.read(id, key)?.is_none() {
                        let set = KeySet::generate(now)
                            .map_err(|e| anyhow::anyhow!("generating the JWT key set: {e}"))?;
                        store.write(id, key, &Secret::new(set.to_json()))?;
                        created.push(format!("{id}/{key}"));
                    }
                }
            }
            _ => {}
        }
    }
    for (id, secret) in &base.secrets {
        if secret.generate != Generation::Derived {
            continue;
        }
        // The public half of the key set, for whoever publishes it.
        let Some(set) = base
            .secrets
            .iter()
            .find(|(_, s)| s.generate == Generation::RsaKeySet)
            .and_then(|(source, s)| Some((source, s.keys.first()?)))
        else {
            continue;
        };
        let Some(text) = store.read(set.0, set.1)? else {
            continue;
        };
        let jwks = KeySet::from_json(text.expose())
            .and_then(|set| set.jwks())
            .map_err(|e| anyhow::anyhow!("reading the JWT key set {}: {e}", set.0))?;
        let json = serde_json::to_string(&jwks)?;
        for key in &secret.keys {
            if put(store, id, key, &Secret::new(json.clone()))? {
                created.push(format!("{id}/{key}"));
            }
        }
    }
    Ok(created)
}

/// Every Redis credential of the inventory: password (generated once),
/// username and URL.
pub fn redis_users(
    base: &BaseFile,
    store: &dyn SecretStore,
    port: u16,
) -> anyhow::Result<Vec<RedisUser>> {
    let mut users = Vec::new();
    for (secret, name, key_patterns) in redis::users_of(base) {
        let password = password(store, &secret, "password")?;
        put(store, &secret, "username", &Secret::new(name.clone()))?;
        put(store, &secret, "url", &redis::url(&name, &password, port))?;
        let previous = store
            .read_stage(&secret, crate::secrets::Stage::Previous)?
            .and_then(|staged| staged.keys.get("password").cloned());
        users.push(RedisUser {
            name,
            password,
            previous,
            key_patterns,
        });
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;
    use crate::secrets::LocalFiles;

    #[test]
    fn generation_happens_once_and_covers_the_inventory() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("environments");
        let matrix = Matrix::load(&dir).unwrap();
        let root = tempfile::tempdir().unwrap();
        let store = LocalFiles::new(root.path().join("secrets"));
        let created = ensure_generated(matrix.base(), &store, 1_700_000_000).unwrap();
        assert!(created.contains(&"internal-credential-kisumctl/token".to_string()));
        assert!(created.contains(&"jwt-signing-keys/key-set.json".to_string()));
        assert!(created.contains(&"jwt-public-keys/jwks.json".to_string()));
        let set = store
            .read("jwt-signing-keys", "key-set.json")
            .unwrap()
            .unwrap();
        assert!(set.expose().contains("kisum-key-set/v1"));
        assert!(
            store
                .read("auth-db-credentials", "password")
                .unwrap()
                .is_none()
        );
        let again = ensure_generated(matrix.base(), &store, 1_700_000_100).unwrap();
        assert!(again.is_empty(), "{again:?}");
        let users = redis_users(matrix.base(), &store, 6379).unwrap();
        let url = store
            .read("redis-auth-credentials", "url")
            .unwrap()
            .unwrap();
        assert!(url.expose().starts_with("redis://auth:"));
        assert_eq!(users.len(), 2);
    }
}
