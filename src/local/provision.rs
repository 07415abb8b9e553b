//! The databases of a local environment and one least-privilege login per
//! service (plan section 9.1): on PostgreSQL, role `<service>_svc` (no
//! superuser, no CREATEDB, no CREATEROLE) owns only its own database, and
//! PUBLIC may not connect to it. Passwords are generated once into the
//! inventory's `<db>-credentials` secrets (keys url, username, password);
//! a rerun converges roles, owners and passwords to the store.
//!
//! MongoDB: the emulator has no user management, so the Mongo databases
//! get a URL without credentials (see docs/deploy-local.md).

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{ConnectOptions as _, Connection as _, PgConnection};

use super::credentials::{password, put};
use super::mongo;
use super::postgres::SUPERUSER;
use crate::matrix::Environment;
use crate::matrix::schema::Engine;
use crate::secrets::{Secret, SecretStore};

/// A database of the matrix as provisioned locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDatabase {
    pub id: String,
    pub engine: Engine,
    /// The database's name (`auth_db`).
    pub name: String,
    /// The owning service's login (`auth_svc`).
    pub role: String,
    /// The inventory secret of its credentials.
    pub credentials: String,
}

pub fn databases(env: &Environment) -> Vec<LocalDatabase> {
    env.deployed_databases()
        .map(|(id, db, _)| LocalDatabase {
            id: id.to_string(),
            engine: db.engine,
            name: db.name.clone(),
            role: format!("{}_svc", db.owner.replace('-', "_")),
            credentials: db.credentials.clone(),
        })
        .collect()
}

/// A PostgreSQL identifier: lowercase letters, digits and `_` only, so
/// quoting with `"` is all it needs.
fn identifier(name: &str) -> anyhow::Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        bail!("`{name}` cannot be a local PostgreSQL name (use lowercase letters, digits and `_`)");
    }
    Ok(format!("\"{name}\""))
}

/// A string literal; the generated passwords never contain a quote, but
/// a password written by hand may.
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Connects as the superuser, retrying while the server starts up.
pub async fn connect_superuser(
    port: u16,
    password: &Secret,
    timeout: Duration,
) -> anyhow::Result<PgConnection> {
    let options = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username(SUPERUSER)
        .password(password.expose())
        .database("postgres")
        .ssl_mode(PgSslMode::Disable)
        .disable_statement_logging();
    let deadline = Instant::now() + timeout;
    loop {
        match PgConnection::connect_with(&options).await {
            Ok(connection) => return Ok(connection),
            Err(error) if Instant::now() >= deadline => {
                return Err(error).with_context(|| {
                    format!("connecting to PostgreSQL on 127.0.0.1:{port} as {SUPERUSER}")
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Roles, databases and grants; the credentials secrets.
pub async fn postgres(
    connection: &mut PgConnection,
    port: u16,
    databases: &[LocalDatabase],
    store: &dyn SecretStore,
) -> anyhow::Result<()> {
    for db in databases
        .iter()
        .filter(|db| db.engine == Engine::Postgresql)
    {
        let role = identifier(&db.role)?;
        let name = identifier(&db.name)?;
        let secret = password(store, &db.credentials, "password")?;
        let exists: bool =
            sqlx::query_scalar("select exists(select 1 from pg_roles where rolname = $1)")
                .bind(&db.role)
                .fetch_one(&mut *connection)
                .await?;
        let verb = if exists { "ALTER" } else { "CREATE" };
        let statement = format!(
            "{verb} ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD {}",
            literal(secret.expose())
        );
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut *connection)
            .await
            .with_context(|| format!("{verb} ROLE {}", db.role))?;
        let exists: bool =
            sqlx::query_scalar("select exists(select 1 from pg_database where datname = $1)")
                .bind(&db.name)
                .fetch_one(&mut *connection)
                .await?;
        let statements = if exists {
            vec![format!("ALTER DATABASE {name} OWNER TO {role}")]
        } else {
            vec![format!(
                "CREATE DATABASE {name} OWNER {role} ENCODING 'UTF8'"
            )]
        };
        let grants = [
            format!("REVOKE ALL ON DATABASE {name} FROM PUBLIC"),
            format!("GRANT CONNECT, TEMPORARY ON DATABASE {name} TO {role}"),
        ];
        for statement in statements.into_iter().chain(grants) {
            sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                .execute(&mut *connection)
                .await
                .with_context(|| statement.clone())?;
        }
        let url = format!(
            "postgres://{}:{}@127.0.0.1:{port}/{}?sslmode=disable",
            db.role,
            secret.expose(),
            db.name
        );
        store_login(store, db, url)?;
    }
    Ok(())
}

/// The Mongo databases' credentials secrets: a URL naming the database.
pub fn mongo(
    port: u16,
    databases: &[LocalDatabase],
    store: &dyn SecretStore,
) -> anyhow::Result<()> {
    for db in databases.iter().filter(|db| db.engine == Engine::Mongodb) {
        password(store, &db.credentials, "password")?;
        store_login(store, db, mongo::url(&db.name, port))?;
    }
    Ok(())
}

/// The `username` and `url` keys of a database's credentials secret.
fn store_login(store: &dyn SecretStore, db: &LocalDatabase, url: String) -> anyhow::Result<()> {
    put(
        store,
        &db.credentials,
        "username",
        &Secret::new(db.role.clone()),
    )?;
    put(store, &db.credentials, "url", &Secret::new(url))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;

    #[test]
    fn every_database_gets_a_role_named_after_its_owner() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("environments");
        let matrix = Matrix::load(&dir).unwrap();
        let env = matrix.environment("local").unwrap();
        let dbs = databases(&env);
        let core = dbs.iter().find(|db| db.id == "platform-core-db").unwrap();
        assert_eq!(core.role, "platform_core_svc");
        assert_eq!(core.name, "platform_core_db");
        assert_eq!(core.credentials, "platform-core-db-credentials");
        assert!(
            dbs.iter()
                .any(|db| db.engine == Engine::Mongodb && db.name == "main")
        );
    }

    #[test]
    fn names_and_literals_are_quoted_safely() {
        assert_eq!(identifier("auth_db").unwrap(), "\"auth_db\"");
        assert!(identifier("auth\"; drop").is_err());
        assert!(identifier("Auth").is_err());
        assert_eq!(literal("it's"), "'it''s'");
    }
}
