//! Where each database of an environment is and how kisumctl logs in to it
//! for backups and restores: the endpoint from the environment file, the
//! credentials from the secret store. Kept in one place so that it follows
//! the names `deploy local` and database provisioning give their secrets.
//!
//! - PostgreSQL: a superuser-level login (dump every object, create and
//!   rename databases, end sessions). In `local`, secret
//!   `local-postgres-superuser` (keys `username`, `password`), which
//!   `deploy local` writes; elsewhere `<cluster>-superuser` with the same
//!   keys. A missing password means a server that trusts loopback
//!   connections (test clusters).
//! - MongoDB: `url` of the database's credentials secret when present,
//!   else an unauthenticated `mongodb://host:port`. The database its path
//!   names is the live one: a restore repoints it (see `restore`).
//! - Redis: `password` of secret `redis-admin-credentials` when present.

use anyhow::{Context as _, Result, bail};

use super::manifest::EngineKind;
use crate::matrix::Environment;
use crate::matrix::schema::{Engine, RedisPersistence};
use crate::secrets::{Secret, SecretStore};

/// Id of Redis among the backup targets.
pub const REDIS_ID: &str = "redis";

/// Secret holding the Redis login used for backups.
pub use crate::matrix::model::REDIS_ADMIN_SECRET;

/// A database (or Redis) that can be backed up in one environment.
#[derive(Debug, Clone)]
pub struct Target {
    /// Database id of the matrix, or `redis`.
    pub id: String,
    pub engine: EngineKind,
    /// Database name on the server (`auth_db`); `0` for Redis.
    pub name: String,
    /// Named server of the matrix (`auth-postgres`).
    pub cluster: String,
    /// Key of the secret with the owning service's credentials.
    pub credentials: Option<String>,
    pub host: String,
    pub port: u16,
    pub rpo_minutes: u32,
    pub rto_minutes: u32,
    pub retention_days: u32,
    pub restore_priority: u8,
    /// Redis only: whether the matrix keeps its data on disk.
    pub persistent: bool,
}

/// Every target of `env`, in restore order (section 22.4: the matrix's
/// `restore-priority`). Databases of an undecided engine or without a
/// deployment in this environment are left out.
pub fn targets(env: &Environment) -> Vec<Target> {
    let mut targets: Vec<Target> = env
        .base
        .databases
        .iter()
        .filter_map(|(id, db)| {
            let engine = match db.engine {
                Engine::Postgresql => EngineKind::Postgresql,
                Engine::Mongodb => EngineKind::Mongodb,
                Engine::Undecided => return None,
            };
            let deployment = env.file.databases.get(id)?;
            Some(Target {
                id: id.clone(),
                engine,
                name: db.name.clone(),
                cluster: db.cluster.clone(),
                credentials: Some(db.credentials.clone()),
                host: deployment.endpoint.host.clone(),
                port: deployment.endpoint.port,
                rpo_minutes: db.rpo_minutes,
                rto_minutes: db.rto_minutes,
                retention_days: deployment
                    .retention_days
                    .unwrap_or(db.backup.retention_days),
                restore_priority: db.restore_priority,
                persistent: true,
            })
        })
        .collect();
    let redis = &env.base.redis;
    // Redis has no RPO/RTO of its own in the matrix: a cache is rebuilt,
    // so the loosest database targets stand in, and the retention of the
    // database restored right after it.
    let loosest = |f: fn(&Target) -> u32| targets.iter().map(f).max().unwrap_or(60);
    targets.push(Target {
        id: REDIS_ID.into(),
        engine: EngineKind::Redis,
        name: "0".into(),
        cluster: REDIS_ID.into(),
        credentials: None,
        host: env.file.redis.endpoint.host.clone(),
        port: env.file.redis.endpoint.port,
        rpo_minutes: loosest(|t| t.rpo_minutes),
        rto_minutes: loosest(|t| t.rto_minutes),
        retention_days: loosest(|t| t.retention_days),
        restore_priority: redis.restore_priority,
        persistent: redis.persistence != RedisPersistence::None,
    });
    targets.sort_by_key(|t| t.restore_priority);
    targets
}

/// The target named `id`, with a hint when there is none.
pub fn target(env: &Environment, id: &str) -> Result<Target> {
    let all = targets(env);
    if let Some(target) = all.iter().find(|t| t.id == id) {
        return Ok(target.clone());
    }
    let names: Vec<&str> = all.iter().map(|t| t.id.as_str()).collect();
    bail!(
        "environment {} has no database `{}` (known: {})",
        env.name,
        id.escape_debug(),
        names.join(", ")
    )
}

/// A PostgreSQL login.
#[derive(Clone)]
pub struct PgLogin {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: Option<Secret>,
}

/// The secret with the superuser-level login of a PostgreSQL target.
pub fn postgres_secret(env: &Environment, target: &Target) -> String {
    if env.name == "local" {
        crate::local::postgres::SUPERUSER_SECRET.into()
    } else {
        crate::matrix::model::superuser_secret(&target.cluster)
    }
}

pub fn postgres_login(
    env: &Environment,
    target: &Target,
    store: &dyn SecretStore,
) -> Result<PgLogin> {
    let secret = postgres_secret(env, target);
    let username = store.read(&secret, "username")?;
    let Some(username) = username else {
        bail!(
            "no PostgreSQL login for {} in the secret store ({}): secret `{secret}` key `username` \
             is missing",
            target.id,
            store.describe()
        );
    };
    Ok(PgLogin {
        host: target.host.clone(),
        port: target.port,
        username: username.expose().to_string(),
        password: store.read(&secret, "password")?,
    })
}

/// The MongoDB connection string for a target (may hold a password: never
/// print it).
///
/// The service's own URL when it carries no login (a server without access
/// control, such as the local one); else the administrator's `url` of
/// secret `<cluster>-superuser`, since restores and drills create
/// databases and roles the service's user may not.
pub fn mongo_url(target: &Target, store: &dyn SecretStore) -> Result<Secret> {
    if let Some(secret) = &target.credentials
        && let Some(url) = store.read(secret, "url")?
    {
        if !has_login(url.expose()) {
            return Ok(url);
        }
        let admin = crate::matrix::model::superuser_secret(&target.cluster);
        return store.read(&admin, "url")?.with_context(|| {
            format!(
                "{}'s URL carries a login, and there is no administrative login for {}: secret \
                 `{admin}` key `url` is missing in {}",
                target.id,
                target.cluster,
                store.describe()
            )
        });
    }
    Ok(Secret::new(format!(
        "mongodb://{}:{}/?directConnection=true&connectTimeoutMS=60000&serverSelectionTimeoutMS=60000",
        target.host, target.port
    )))
}

/// Whether a connection URL carries a user (and password).
pub fn has_login(url: &str) -> bool {
    url.split_once("://")
        .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or_default())
        .is_some_and(|authority| authority.contains('@'))
}

/// The value of option `name` in a URL's query, if set.
pub fn url_option(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1.split('#').next()?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

/// The database a MongoDB URL names in its path, if any.
pub fn url_database(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let path = rest.split_once('/')?.1;
    let name = path.split(['?', '#']).next().unwrap_or_default();
    (!name.is_empty()).then_some(name)
}

/// `url` naming database `name` instead, options kept.
pub fn with_database(url: &str, name: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let query = path.find(['?', '#']).map_or("", |at| &path[at..]);
    format!("{scheme}://{authority}/{name}{query}")
}

/// The database that serves a MongoDB target now: the matrix's name, or a
/// restored copy of it (`<name>_restored_<time>`) that a restore pointed
/// the service's credentials at (MongoDB cannot rename a database).
pub fn mongo_database(target: &Target, store: &dyn SecretStore) -> Result<String> {
    let url = match &target.credentials {
        Some(secret) => store.read(secret, "url")?,
        None => None,
    };
    Ok(url
        .as_ref()
        .and_then(|url| url_database(url.expose()))
        .filter(|name| is_generation(&target.name, name))
        .unwrap_or(&target.name)
        .to_string())
}

/// Whether `name` is database `base` or a restored copy of it.
pub fn is_generation(base: &str, name: &str) -> bool {
    name == base
        || name
            .strip_prefix(base)
            .and_then(|rest| rest.strip_prefix("_restored_"))
            .is_some_and(|stamp| !stamp.is_empty())
}

/// The Redis password, if the store has one.
pub fn redis_password(store: &dyn SecretStore) -> Result<Option<Secret>> {
    Ok(store.read(REDIS_ADMIN_SECRET, "password")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_and_options_are_read_from_urls() {
        let url = "mongodb://basic_app:p%40w@db:27017/main_restored_x?authSource=main&tls=true";
        assert!(has_login(url));
        assert!(!has_login("mongodb://127.0.0.1:27117/main?x=a@b"));
        assert_eq!(url_option(url, "authSource").as_deref(), Some("main"));
        assert_eq!(url_option(url, "replicaSet"), None);
    }

    #[test]
    fn a_url_is_repointed_to_another_database() {
        let url = "mongodb://u:p@127.0.0.1:27117/main?directConnection=true";
        assert_eq!(url_database(url), Some("main"));
        let moved = with_database(url, "main_restored_20260101t000000");
        assert_eq!(
            moved,
            "mongodb://u:p@127.0.0.1:27117/main_restored_20260101t000000?directConnection=true"
        );
        assert_eq!(url_database("mongodb://127.0.0.1:1/?x=1"), None);
        assert_eq!(with_database("mongodb://h:1", "main"), "mongodb://h:1/main");
        assert!(is_generation("main", "main_restored_20260101t000000"));
        assert!(!is_generation("main", "market"));
        assert!(!is_generation("main", "main_restored_"));
    }
}
