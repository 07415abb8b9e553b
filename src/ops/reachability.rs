//! What `status` checks beside the processes by connecting: each database
//! of the environment (PostgreSQL, MongoDB) and Redis answer a trivial
//! query (with the latency), each PostgreSQL database's applied migrations
//! against the services' embedded files (as `db status`), and each public
//! host's certificate against the renewal window and alert threshold (as
//! `tls status`). Never prints.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::backup::EngineKind;
use crate::backup::connection::{self, Target};
use crate::db::migrate;
use crate::matrix::Environment;
use crate::ops::health::{Item, Light};
use crate::secrets::SecretStore;

/// How long one connection and query may take before it counts as down.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A query answered slower than this is yellow.
const SLOW: Duration = Duration::from_secs(1);

/// Per database and Redis: reachable (with the latency) or red with why.
/// Every target is asked at once, so a frozen server standing behind
/// several databases costs one [`TIMEOUT`], not one per database.
pub async fn databases(env: &Environment<'_>, store: &dyn SecretStore) -> Vec<Item> {
    let targets = connection::targets(env);
    concurrently(targets.iter().map(|target| reach(env, target, store))).await
}

/// Awaits every future at once; their outputs in the order given.
pub async fn concurrently<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (future, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => done = false,
                }
            }
        }
        if done { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Redis alone, as [`databases`] sees it.
pub async fn redis(env: &Environment<'_>, store: &dyn SecretStore) -> Option<Item> {
    let target = connection::targets(env)
        .into_iter()
        .find(|t| t.engine == EngineKind::Redis)?;
    Some(reach(env, &target, store).await)
}

/// The PostgreSQL servers of `env` (each `host:port` once) that refuse a
/// connection or do not accept one within [`TIMEOUT`], each with why in
/// [`databases`]'s words (`connection refused at HOST:PORT`): the first
/// question `status` asks a database, without a login.
pub async fn postgres_down(env: &Environment<'_>) -> Vec<String> {
    let mut servers: Vec<(String, u16)> = connection::targets(env)
        .into_iter()
        .filter(|t| t.engine == EngineKind::Postgresql)
        .map(|t| (t.host, t.port))
        .collect();
    servers.sort();
    servers.dedup();
    concurrently(
        servers
            .iter()
            .map(|(host, port)| postgres_silent(host, *port)),
    )
    .await
    .into_iter()
    .flatten()
    .collect()
}

/// The MongoDB servers of `env` (each `host:port` once) serving a
/// database of one of `services` that refuse a connection or do not
/// answer a ping within [`TIMEOUT`], each with why in [`databases`]'s
/// words.
pub async fn mongo_down(
    env: &Environment<'_>,
    store: &dyn SecretStore,
    services: &[&str],
) -> Vec<String> {
    let owned = |t: &Target| {
        env.base
            .databases
            .get(&t.id)
            .is_some_and(|db| services.contains(&db.owner.as_str()))
    };
    let mut targets: Vec<Target> = connection::targets(env)
        .into_iter()
        .filter(|t| t.engine == EngineKind::Mongodb && owned(t))
        .collect();
    targets.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
    targets.dedup_by(|a, b| (&a.host, a.port) == (&b.host, b.port));
    concurrently(targets.iter().map(|target| reach(env, target, store)))
        .await
        .into_iter()
        .filter(|item| item.light == Light::Red)
        .map(|item| item.detail)
        .collect()
}

/// Why the PostgreSQL server at `host:port` is down: it refuses the
/// connection, or does not answer the SSL request every client opens with
/// (one byte, before any login) within [`TIMEOUT`], as a stopped server
/// whose kernel still accepts connections.
async fn postgres_silent(host: &str, port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let asked = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
        stream.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).await?;
        let mut answer = [0u8; 1];
        stream.read_exact(&mut answer).await
    };
    match tokio::time::timeout(TIMEOUT, asked).await {
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
            Some(format!("connection refused at {host}:{port}"))
        }
        Err(_) => Some(did_not_answer(host, port)),
        _ => None,
    }
}

/// One database or Redis: reachable (with the latency) or red with why.
async fn reach(env: &Environment<'_>, target: &Target, store: &dyn SecretStore) -> Item {
    let name = if target.engine == EngineKind::Redis {
        "redis".to_string()
    } else {
        format!("database {}", target.id)
    };
    let started = Instant::now();
    if let Some(why) = refused(&target.host, target.port).await {
        return Item::new(name, Light::Red, why);
    }
    let answer = tokio::time::timeout(TIMEOUT, query(env, target, store)).await;
    let elapsed = started.elapsed();
    match answer {
        Err(_) => Item::new(name, Light::Red, did_not_answer(&target.host, target.port)),
        Ok(Err(error)) if error.is::<Silent>() => Item::new(
            name,
            Light::Red,
            format!(
                "{}:{} {SILENT} its client's time limit (it accepts connections and answers \
                 nothing: hung, stopped or overloaded)",
                target.host, target.port
            ),
        ),
        Ok(Err(error)) => Item::new(
            name,
            Light::Red,
            format!("{}:{} unreachable: {error:#}", target.host, target.port),
        ),
        Ok(Ok(what)) => {
            let light = if elapsed > SLOW {
                Light::Yellow
            } else {
                Light::Green
            };
            let detail = format!("{what} answered in {} ms", elapsed.as_millis());
            Item::new(name, light, detail)
        }
    }
}

/// A port nothing listens on, said at once: `connection refused at
/// HOST:PORT` (a client library would retry it until the timeout, or
/// repeat the error in its own words); a port that does not accept within
/// the timeout, said as such. Anything else (a connection, a name that
/// does not resolve) is left to the query.
async fn refused(host: &str, port: u16) -> Option<String> {
    let connect = tokio::net::TcpStream::connect((host, port));
    match tokio::time::timeout(TIMEOUT, connect).await {
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
            Some(format!("connection refused at {host}:{port}"))
        }
        Err(_) => Some(did_not_answer(host, port)),
        _ => None,
    }
}

/// The words of a server that accepted the connection and answered
/// nothing in time (hung, stopped or overloaded), as opposed to one that
/// refused it.
pub const SILENT: &str = "did not answer within";

/// A server that accepted the connection and let the client's own time
/// limit run out.
#[derive(Debug, thiserror::Error)]
#[error("no answer in time")]
struct Silent;

fn did_not_answer(host: &str, port: u16) -> String {
    format!("{host}:{port} {SILENT} {} s", TIMEOUT.as_secs())
}

/// Connects to one target and runs its trivial query; what answered.
async fn query(
    env: &Environment<'_>,
    target: &Target,
    store: &dyn SecretStore,
) -> anyhow::Result<String> {
    match target.engine {
        EngineKind::Postgresql => {
            let login = connection::postgres_login(env, target, store)?;
            let mut conn = crate::backup::postgres::connect(&login, &target.name).await?;
            sqlx::query("SELECT 1").execute(&mut conn).await?;
            let _ = sqlx::Connection::close(conn).await;
            Ok(format!("SELECT 1 on {}", target.name))
        }
        EngineKind::Mongodb => {
            let url = connection::mongo_url(target, store)?;
            let client = crate::backup::mongo::client(&url).await?;
            let database = connection::mongo_database(target, store)?;
            client
                .database(&database)
                .run_command(mongodb::bson::doc! { "ping": 1 })
                .await?;
            Ok(format!("ping on {database}"))
        }
        EngineKind::Redis => {
            let (user, password) = redis_login(store)?;
            let encode = |text: &str| {
                percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            };
            let auth = match &password {
                Some(password) => format!("{}:{}@", encode(&user), encode(password.expose())),
                None => String::new(),
            };
            let url = format!("redis://{auth}{}:{}/0", target.host, target.port);
            let client = redis::Client::open(url)
                .map_err(|e| anyhow::anyhow!("a Redis URL for {}: {:?}", target.host, e.kind()))?;
            // A Redis that accepts and answers nothing (stopped, hung) runs
            // into the client's own time limit: said as silence, not as
            // an error of the login.
            let said = |error: redis::RedisError| match error.is_timeout() {
                true => anyhow::Error::new(Silent),
                false => anyhow::anyhow!("as {user}: {}", redis_said(&error)),
            };
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .map_err(said)?;
            let pong: String = redis::cmd("PING")
                .query_async(&mut conn)
                .await
                .map_err(said)?;
            Ok(format!("PING as {user} ({pong})"))
        }
    }
}

/// A Redis error said once: the client's text names the failure, then
/// its kind, which says the same again (`Password authentication failed -
/// AuthenticationFailed`); the kind is left out.
fn redis_said(error: &redis::RedisError) -> String {
    let text = error.to_string();
    text.replacen(&format!(" - {:?}", error.kind()), "", 1)
}

/// The Redis login to ping with: kisumctl's administrative one where the
/// store has it (`username`, else the default user), else Auth's (where
/// Redis has an ACL user per service, as `deploy local` sets it up).
fn redis_login(
    store: &dyn SecretStore,
) -> anyhow::Result<(String, Option<crate::secrets::Secret>)> {
    let admin = crate::matrix::model::REDIS_ADMIN_SECRET;
    if let Some(password) = store.read(admin, "password")? {
        let user = store
            .read(admin, "username")?
            .map_or("default".to_string(), |u| u.expose().to_string());
        return Ok((user, Some(password)));
    }
    let password = store.read("redis-auth-credentials", "password")?;
    Ok(("auth".to_string(), password))
}

/// Per PostgreSQL database with migrations: the applied ones against the
/// service's files, read with the migration login as `db status` reads
/// them. Pending migrations are yellow (the next deploy applies them); a
/// changed, failed or unknown applied one is red.
pub async fn migrations(dir: &Path, env: &Environment<'_>, store: &dyn SecretStore) -> Vec<Item> {
    let root = crate::matrix::root(dir);
    let sets = match migrate::sets(env, &root, None) {
        Ok(sets) => sets,
        Err(error) => {
            return vec![Item::new(
                "migrations",
                Light::Red,
                format!("the migration files cannot be read: {error:#}"),
            )];
        }
    };
    concurrently(sets.iter().map(|set| async move {
        let name = format!("migrations {}", set.database);
        let read = tokio::time::timeout(TIMEOUT, async {
            let mut conn = migrate::connect(set, store).await?;
            let status = migrate::status(&mut conn, set).await;
            let _ = sqlx::Connection::close(conn).await;
            status
        })
        .await;
        match read {
            Err(_) => Item::new(name, Light::Red, "no answer within the timeout"),
            Ok(Err(error)) => Item::new(name, Light::Red, format!("{error:#}")),
            Ok(Ok(status)) => judge_migrations(name, &status),
        }
    }))
    .await
}

fn judge_migrations(name: String, status: &migrate::Status) -> Item {
    if let Some(refusal) = status.blocked() {
        return Item::new(name, Light::Red, refusal.to_string());
    }
    let applied = format!("{}/{} applied", status.applied.len(), status.files);
    if status.pending.is_empty() {
        return Item::new(name, Light::Green, applied);
    }
    let pending: Vec<String> = status.pending.iter().map(|e| e.file.clone()).collect();
    Item::new(
        name,
        Light::Yellow,
        format!(
            "{applied}, {} pending: {}",
            pending.len(),
            pending.join(", ")
        ),
    )
}

/// Per public host: its certificate in the secret store against the
/// renewal window (yellow) and the alert threshold (red), as `tls status`
/// judges it; a missing one is yellow, and one line says so when none is
/// issued (`local` serves plain HTTP on loopback until `tls issue`); a
/// store that cannot be read is one item of light `unreadable`. `now` is
/// in Unix seconds.
pub fn certificates(
    env: &Environment<'_>,
    store: &dyn SecretStore,
    now: i64,
    unreadable: Light,
) -> Vec<Item> {
    let hosts = crate::tls::hosts(env);
    let thresholds = crate::tls::Thresholds::of(env);
    let statuses = match crate::tls::status(&hosts, store, thresholds, now) {
        Ok(statuses) => statuses,
        Err(error) => {
            let detail = format!("the certificates cannot be read: {error}");
            return vec![Item::new("certificates", unreadable, detail)];
        }
    };
    if statuses
        .iter()
        .all(|s| s.health == crate::tls::Health::Missing)
    {
        let detail = format!(
            "none issued for the {} public hosts (`kisumctl tls issue {}`)",
            statuses.len(),
            env.name
        );
        return vec![Item::new("certificates", Light::Yellow, detail)];
    }
    statuses
        .into_iter()
        .map(|status| {
            let name = format!("certificate {}", status.host.host);
            let light = if status.health == crate::tls::Health::Missing {
                Light::Yellow
            } else if status.health.alarming() {
                Light::Red
            } else if status.health.renew() {
                Light::Yellow
            } else {
                Light::Green
            };
            let mut detail = status.health.as_str().to_string();
            if let Some(expiry) = status.expiry() {
                detail = format!("{detail}: {expiry}");
            }
            if let Some(problem) = &status.problem {
                detail = format!("{detail}: {problem}");
            }
            Item::new(name, light, detail)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;
    use crate::secrets::LocalFiles;
    use crate::secrets::Secret;

    #[tokio::test]
    async fn a_frozen_server_behind_every_database_costs_one_timeout() {
        // Accepts connections (the kernel does) and never answers: a
        // PostgreSQL stopped with SIGSTOP.
        let frozen = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = frozen.local_addr().unwrap().port();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("environments");
        let matrix = Matrix::load(&dir).unwrap();
        let mut env = matrix.environment("local").unwrap();
        let mut file = env.file.clone();
        for deployment in file.databases.values_mut() {
            deployment.endpoint.host = "127.0.0.1".into();
            deployment.endpoint.port = port;
        }
        file.redis.endpoint.host = "127.0.0.1".into();
        file.redis.endpoint.port = port;
        env.file = &file;
        let secrets = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            secrets.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let store = LocalFiles::new(secrets.path());
        let login = Secret::new("kisum");
        for target in connection::targets(&env) {
            if target.engine == EngineKind::Postgresql {
                let secret = connection::postgres_secret(&env, &target);
                store.write(&secret, "username", &login).unwrap();
            }
        }
        let targets = connection::targets(&env).len();
        assert!(targets >= 3, "{targets} targets");
        let started = Instant::now();
        let (items, down) = tokio::join!(databases(&env, &store), postgres_down(&env));
        let took = started.elapsed();
        // One PostgreSQL server stands behind every database of `local`.
        assert_eq!(down, [did_not_answer("127.0.0.1", port)]);
        assert!(took < TIMEOUT * 2, "{targets} probes took {took:?}");
        assert_eq!(items.len(), targets, "{items:?}");
        for item in &items {
            assert_eq!(item.light, Light::Red, "{items:?}");
            assert!(
                item.detail.contains(&format!("127.0.0.1:{port}")),
                "{items:?}"
            );
        }
        drop(frozen);
    }

    fn status(applied: Vec<i64>, pending: &[(i64, &str)], failed: Vec<i64>) -> migrate::Status {
        migrate::Status {
            database: "finance-db".into(),
            service: "finance".into(),
            name: "finance_db".into(),
            files: 2,
            applied,
            pending: pending
                .iter()
                .map(|(version, file)| migrate::Entry {
                    version: *version,
                    file: file.to_string(),
                })
                .collect(),
            changed: Vec::new(),
            missing: Vec::new(),
            failed,
        }
    }

    #[test]
    fn migrations_are_green_when_current_yellow_when_pending_red_when_failed() {
        let current = judge_migrations("m".into(), &status(vec![1, 2], &[], vec![]));
        assert_eq!(
            (current.light, current.detail.as_str()),
            (Light::Green, "2/2 applied")
        );

        let pending = judge_migrations("m".into(), &status(vec![1], &[(2, "0002_b.sql")], vec![]));
        assert_eq!(pending.light, Light::Yellow);
        assert_eq!(pending.detail, "1/2 applied, 1 pending: 0002_b.sql");

        let failed = judge_migrations("m".into(), &status(vec![1], &[], vec![2]));
        assert_eq!(failed.light, Light::Red, "{}", failed.detail);
    }
}
