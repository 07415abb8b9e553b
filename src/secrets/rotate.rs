//! `kisumctl secrets rotate`: staged rotation. A new value is stored as
//! the pending version (`AWSPENDING`; `.pending` in local files), tested,
//! then promoted: it becomes current and the value before it previous.
//! Until the promotion every reader keeps the current value, so a failure
//! at any step leaves the secret working; the pending version stays, and
//! the next run continues from it rather than starting over.
//!
//! - A PostgreSQL service login alternates between the service's two login
//!   roles (`<svc>_app_a`, `<svc>_app_b`, made by `db provision`): the
//!   waiting role gets the new password, a login with it is tried against
//!   the server, then the secret is switched to name that role. The role
//!   the secret named before keeps its password, so instances still using
//!   the old credential keep working; it changes only at the next rotation.
//! - A migration role gets a new password on the same role, tried likewise.
//! - A Redis ACL user gets the new password beside its current one (`ACL
//!   SETUSER <user> resetpass ><current> ><new>`, which also drops any
//!   older one), a login with it is tried, then the secret is switched.
//!   Instances still using the old password keep connecting until the
//!   next rotation, as with PostgreSQL.
//! - An internal service credential (a token) is regenerated and read
//!   back, then promoted: the services verifying it accept the current and
//!   the previous credential and read both again when they change, and the
//!   caller presents the new one as soon as it reads it. After
//!   `retire_after` (long enough for every instance to have read it), the
//!   previous one is retired and the old credential is refused.
//!
//! - Auth accounts of `local` (the smoke fixtures, the bootstrap
//!   administrator) get their new passwords through `kisum-auth seed-user`
//!   with deploy local's environment of Auth; a login with each new one
//!   must pass and with each old one fail before the secret is switched.
//!
//! Nothing here prints or returns a value.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use sqlx::Connection as _;

use super::inventory::{self, Expected, Rotation, Source};
use super::{Secret, SecretStore, Stage, Staged, StoreError};
use crate::backup::connection::{self, PgLogin};
use crate::db::provision::{self, Logins};
use crate::matrix::Environment;

/// What happened to one secret.
#[derive(Debug, Clone, Serialize)]
pub struct Rotated {
    pub secret: String,
    pub outcome: Outcome,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Rotated,
    /// Not rotated by this command (named in the detail), or not due.
    Skipped,
    Failed,
}

/// The secrets to rotate: `name`, or with `due` every secret past its
/// date or with a rotation under way. `Err` is a usage error.
pub fn select(
    env: &Environment,
    store: &dyn SecretStore,
    name: Option<&str>,
    due: bool,
    now: i64,
) -> Result<(Vec<Expected>, Vec<Rotated>), String> {
    let expected: Vec<Expected> = inventory::expected(env)
        .into_iter()
        .filter(|e| e.not_here.is_none())
        .collect();
    if let Some(name) = name {
        let Some(found) = expected.iter().find(|e| e.name == name) else {
            return Err(format!(
                "`{}` is not a secret of environment {} (see `kisumctl secrets list {}`)",
                name.escape_debug(),
                env.name,
                env.name
            ));
        };
        if let Rotation::Elsewhere { by } = &found.rotation {
            return Err(format!("{name} is not rotated by `secrets rotate`: {by}"));
        }
        return Ok((vec![found.clone()], Vec::new()));
    }
    if !due {
        return Err("name a secret, or pass --due".into());
    }
    let mut chosen = Vec::new();
    let mut skipped = Vec::new();
    for e in expected {
        let read = || -> Result<_, StoreError> {
            Ok((store.stages(&e.name)?, store.changed_at(&e.name)?))
        };
        let (stages, changed) = match read() {
            Ok(read) => read,
            Err(error @ StoreError::Malformed { .. }) => {
                // One unreadable secret is its own problem, not the run's;
                // a failure only where `rotate` would have rotated it.
                let (outcome, by) = match &e.rotation {
                    Rotation::Elsewhere { by } => (Outcome::Skipped, format!("; rotated by {by}")),
                    _ => (Outcome::Failed, String::new()),
                };
                skipped.push(Rotated {
                    secret: e.name.clone(),
                    outcome,
                    detail: format!("{error}: not rotated, fix its value first{by}"),
                });
                continue;
            }
            Err(error) => return Err(error.to_string()),
        };
        let unfinished = inventory::unfinished(Some(&e), &stages).is_some();
        let Some(changed) = changed else {
            continue;
        };
        let overdue = inventory::due_at(changed, e.rotation_days) <= now;
        if !overdue && !unfinished {
            continue;
        }
        match &e.rotation {
            Rotation::Elsewhere { by } => skipped.push(Rotated {
                secret: e.name.clone(),
                outcome: Outcome::Skipped,
                detail: format!("overdue; rotated by {by}"),
            }),
            _ => chosen.push(e),
        }
    }
    Ok((chosen, skipped))
}

/// How `rotate` reaches PostgreSQL.
pub struct Rotator<'a> {
    pub env: &'a Environment<'a>,
    pub store: &'a dyn SecretStore,
    pub connect_timeout: Duration,
    /// How long after an internal credential's promotion its previous
    /// value stays accepted.
    pub retire_after: Duration,
    /// The environment's state directory (`local`: deploy local's state).
    pub state_dir: PathBuf,
}

impl Rotator<'_> {
    /// Rotates one secret; `progress` gets each step.
    pub async fn rotate(&self, secret: &Expected, progress: &mut dyn FnMut(&str)) -> Rotated {
        let done = match &secret.rotation {
            Rotation::Alternate { database } => {
                self.postgres(secret, database, true, progress).await
            }
            Rotation::InPlace { database } => {
                self.postgres(secret, database, false, progress).await
            }
            Rotation::Regenerate => self.token(secret, progress).await,
            Rotation::MongoAlternate { .. } if !self.has_login(&secret.name) => {
                return Rotated {
                    secret: secret.name.clone(),
                    outcome: Outcome::Skipped,
                    detail: "its url is missing or carries no login (a server without user \
                             management, such as the MongoDB emulator of local): no password to \
                             rotate"
                        .into(),
                };
            }
            Rotation::MongoAlternate { database } => self.mongo(secret, database, progress).await,
            Rotation::RedisAcl => self.redis(secret, progress).await,
            Rotation::AuthAccounts => self.auth_accounts(secret, progress).await,
            Rotation::Elsewhere { by } => {
                return Rotated {
                    secret: secret.name.clone(),
                    outcome: Outcome::Skipped,
                    detail: format!("rotated by {by}"),
                };
            }
        };
        match done {
            Ok(detail) => Rotated {
                secret: secret.name.clone(),
                outcome: Outcome::Rotated,
                detail,
            },
            Err(error) => Rotated {
                secret: secret.name.clone(),
                outcome: Outcome::Failed,
                detail: format!("{error:#}; {}", self.left_after_failure(secret)),
            },
        }
    }

    /// What a failed rotation of `secret` left, read back from the store:
    /// only what exists is promised to the next run.
    fn left_after_failure(&self, secret: &Expected) -> String {
        let finish = format!(
            "`kisumctl secrets rotate {} {}`",
            self.env.name, secret.name
        );
        let Ok(stages) = self.store.stages(&secret.name) else {
            return format!(
                "its stages cannot be read back: see `kisumctl secrets check {}`",
                self.env.name
            );
        };
        let pending = stages
            .iter()
            .any(|v| v.stages.iter().any(|s| s == Stage::Pending.label()));
        if pending && matches!(secret.rotation, Rotation::InPlace { .. }) {
            format!(
                "the new password is kept as the pending version; if the role already has it, \
                 the current url fails to log in until the rotation is finished (`kisumctl \
                 secrets check {}` tries both logins and says which); {finish} continues from it",
                self.env.name
            )
        } else if pending {
            format!(
                "the current value is unchanged and still in use; the new one is kept as the \
                 pending version, and {finish} continues from it"
            )
        } else if inventory::unfinished(Some(secret), &stages).is_some() {
            format!(
                "the new value is current and the old one is still accepted; {finish} retires \
                 the old one"
            )
        } else {
            "the current value is unchanged and still in use; nothing was staged, so the next \
             run starts over"
                .to_string()
        }
    }

    /// `database` as `db provision` plans it here.
    fn planned(&self, database: &str) -> Result<provision::Database> {
        provision::plan(self.env, Some(database))?
            .databases
            .into_iter()
            .next()
            .with_context(|| format!("{database} is not deployed in {}", self.env.name))
    }

    /// Whether the current `url` of secret `name` carries a login.
    fn has_login(&self, name: &str) -> bool {
        self.store
            .read(name, "url")
            .ok()
            .flatten()
            .is_some_and(|url| connection::has_login(url.expose()))
    }

    fn current(&self, name: &str) -> Result<Staged> {
        self.store
            .read_stage(name, Stage::Current)?
            .with_context(|| {
                format!(
                    "{name} is not in {} yet: run `kisumctl secrets apply {}` first",
                    self.store.describe(),
                    self.env.name
                )
            })
    }

    /// A new token for every key, read back from the pending version,
    /// promoted, and once `retire_after` has passed the previous one
    /// retired.
    async fn token(&self, secret: &Expected, progress: &mut dyn FnMut(&str)) -> Result<String> {
        let name = &secret.name;
        let current = self.current(name)?;
        let pending_now = self.store.read_stage(name, Stage::Pending)?;
        let previous = self.store.read_stage(name, Stage::Previous)?;
        if pending_now.is_none() && previous.is_some_and(|p| differs(&p, &current)) {
            // Promoted before, but interrupted before the retirement.
            let retired = self.retire(name, progress).await?;
            return Ok(format!("finished an interrupted rotation: {retired}"));
        }
        let pending = match self.store.read_stage(name, Stage::Pending)? {
            Some(pending) if differs(&pending, &current) => {
                progress(&format!("{name}: continuing the pending version"));
                pending.keys
            }
            _ => {
                let keys: BTreeMap<String, Secret> = secret
                    .keys
                    .iter()
                    .map(|(key, _)| (key.clone(), Secret::random_password()))
                    .collect();
                self.store.put_pending(name, &keys)?;
                progress(&format!(
                    "{name}: new value stored as {}",
                    Stage::Pending.label()
                ));
                keys
            }
        };
        let back = self.store.read_stage(name, Stage::Pending)?;
        if back.map(|b| b.keys) != Some(pending) {
            bail!("the pending version of {name} does not read back as written");
        }
        self.store.promote_pending(name)?;
        progress(&format!(
            "{name}: new value current, the old one accepted beside it as {}",
            Stage::Previous.label()
        ));
        let retired = self.retire(name, progress).await?;
        Ok(format!("new value current; {retired}"))
    }

    /// Waits `retire_after` for every instance to read the new value,
    /// retires the previous one, and reads the stages back: answers what
    /// they show, or fails when the old value is still kept beside the
    /// current one.
    async fn retire(&self, name: &str, progress: &mut dyn FnMut(&str)) -> Result<String> {
        if !self.retire_after.is_zero() {
            progress(&format!(
                "{name}: waiting {} s for every instance to present the new value",
                self.retire_after.as_secs_f64()
            ));
            tokio::time::sleep(self.retire_after).await;
        }
        self.store.retire_previous(name)?;
        let current = self.current(name)?;
        let previous = self.store.read_stage(name, Stage::Previous)?;
        if previous.is_some_and(|p| differs(&p, &current)) {
            bail!(
                "the previous value was retired, but read back {} still holds the old value: \
                 the services keep accepting the old credential",
                Stage::Previous.label()
            );
        }
        progress(&format!(
            "{name}: the previous value is retired (read back: no stage holds it)"
        ));
        Ok(format!(
            "the old one is retired: read back, no stage of {name} holds it any more, so the \
             services refuse it from their next read"
        ))
    }

    /// A PostgreSQL login: the waiting role (or, `alternate` false, the
    /// same role) gets the pending password, which must log in before the
    /// secret is switched.
    async fn postgres(
        &self,
        secret: &Expected,
        database: &str,
        alternate: bool,
        progress: &mut dyn FnMut(&str),
    ) -> Result<String> {
        let name = &secret.name;
        let db = &self.planned(database)?;
        let Logins::Postgres { roles, .. } = &db.logins else {
            bail!("{database} is not a PostgreSQL database");
        };
        let current = self.current(name)?;
        let active = current
            .keys
            .get("username")
            .map(|u| u.expose().to_string())
            .unwrap_or_default();
        let known = if alternate {
            roles.logins.contains(&active)
        } else {
            active == roles.migrator
        };
        if !known {
            bail!(
                "{name} names no login role of {database} yet: run `kisumctl db provision {} \
                 {database}` first",
                self.env.name
            );
        }
        let pending = self.store.read_stage(name, Stage::Pending)?;
        if let Some(pending) = &pending
            && alternate
            && user(pending) == active
        {
            // The switch happened and was interrupted before the pending
            // version was cleared: finish it.
            self.store.promote_pending(name)?;
            return Ok(format!("finished an interrupted switch to {active}"));
        }
        let target = if alternate {
            roles
                .logins
                .iter()
                .find(|l| **l != active)
                .cloned()
                .unwrap_or_default()
        } else {
            active.clone()
        };
        let server = connection::target(self.env, database)?;
        let admin = connection::postgres_login(self.env, &server, self.store)?;
        let mut conn = provision::connect_with_retry(&admin, "postgres", self.connect_timeout)
            .await
            .context("reaching the server as its administrator")?;
        if alternate {
            // The waiting role must be idle: a session of it means an
            // instance has not moved to the current role yet, and a new
            // password would lock it out at its next connection.
            let sessions = match sessions_of(&mut conn, &target).await {
                Ok(sessions) => sessions,
                Err(error) => {
                    let _ = conn.close().await;
                    return Err(error);
                }
            };
            if sessions > 0 {
                let _ = conn.close().await;
                bail!(
                    "{target} is still in use ({sessions} session(s) in pg_stat_activity): \
                     instances started before the last rotation still log in as {target}, so \
                     its password was not changed and {name} still names {active}; {}, then \
                     rotate again",
                    self.move_instances_hint(&active)
                );
            }
        }
        let password = match self.pending_login(name, &current, pending, &target, progress, |p| {
            provision::postgres_url(db, &target, p.expose())
        }) {
            Ok(password) => password,
            Err(error) => {
                let _ = conn.close().await;
                return Err(error);
            }
        };
        let set = provision::set_password(&mut conn, &target, &password).await;
        let _ = conn.close().await;
        set.with_context(|| format!("setting the password of {target}"))?;
        progress(&format!("{name}: {target} has the new password"));
        hold_at("secrets-rotate:password-set", name, progress).await;

        let login = PgLogin {
            host: db.host.clone(),
            port: db.port,
            username: target.clone(),
            password: Some(password),
        };
        let mut conn = crate::backup::postgres::connect(&login, &db.name)
            .await
            .with_context(|| format!("testing the new password of {target}"))?;
        let member: bool = sqlx::query_scalar("SELECT pg_has_role(current_user, $1, 'MEMBER')")
            .bind(if alternate {
                &roles.group
            } else {
                &roles.migrator
            })
            .fetch_one(&mut conn)
            .await
            .with_context(|| format!("testing the new login of {target}"))?;
        let _ = conn.close().await;
        if !member {
            bail!(
                "{target} logs in but is not in {}: run `kisumctl db provision {} {database}`",
                roles.group,
                self.env.name
            );
        }
        progress(&format!("{name}: {target} logs in to {} with it", db.name));
        self.store.promote_pending(name)?;
        Ok(if alternate {
            format!(
                "now {target} (was {active}); {active} keeps its password until the next \
                 rotation, so instances still using it keep working"
            )
        } else {
            format!("{target} has a new password")
        })
    }
}

impl Rotator<'_> {
    /// What moves every instance onto the role `active`.
    fn move_instances_hint(&self, active: &str) -> String {
        if self.env.name == "local" {
            "run `kisumctl deploy local`: it restarts every service whose credentials changed \
             since it started"
                .to_string()
        } else {
            format!(
                "roll the services out again (`kisumctl deploy {}`) so every instance logs in as \
                 {active}, and wait until the old instances are gone",
                self.env.name
            )
        }
    }
}

/// How long [`hold_at`] holds a command: long enough for a test to kill
/// it, short enough that a forgotten variable does not hang it for good.
const HOLD: Duration = Duration::from_secs(120);

/// A test hook: with `KISUM_HOLD_AT=<step>`, the rotation says so and
/// holds at `step` (a state a crash can leave), so a test can kill it there
/// for real. It changes nothing else and holds at most [`HOLD`].
async fn hold_at(step: &str, name: &str, progress: &mut dyn FnMut(&str)) {
    if std::env::var("KISUM_HOLD_AT").ok().as_deref() == Some(step) {
        progress(&format!("{name}: holding at {step} (KISUM_HOLD_AT)"));
        tokio::time::sleep(HOLD).await;
    }
}

/// For a migration role whose rotation is pending: whether the role
/// already has the pending password (the rotation stopped after changing
/// it, so the current url fails to log in until a rerun finishes it), read
/// by trying both logins. `None` when nothing more can be said than that a
/// value is pending.
pub async fn pending_migration_login(
    env: &Environment<'_>,
    store: &dyn SecretStore,
    secret: &Expected,
    timeout: Duration,
) -> Option<String> {
    let Rotation::InPlace { database } = &secret.rotation else {
        return None;
    };
    let name = &secret.name;
    let pending = store.read_stage(name, Stage::Pending).ok()??;
    let current = store.read_stage(name, Stage::Current).ok()??;
    let db = provision::plan(env, Some(database))
        .ok()?
        .databases
        .into_iter()
        .next()?;
    let role = user(&current);
    let finish = format!("`kisumctl secrets rotate {} {name}`", env.name);
    let tries = |staged: &Staged| {
        let login = PgLogin {
            host: db.host.clone(),
            port: db.port,
            username: user(staged),
            password: staged.keys.get("password").cloned(),
        };
        let database = db.name.clone();
        async move {
            match tokio::time::timeout(timeout, crate::backup::postgres::connect(&login, &database))
                .await
            {
                Ok(Ok(conn)) => {
                    let _ = conn.close().await;
                    Login::Works
                }
                Ok(Err(error)) if refused_password(&error) => Login::Refused,
                _ => Login::Unknown,
            }
        }
    };
    Some(match (tries(&current).await, tries(&pending).await) {
        (Login::Refused, Login::Works) => format!(
            "the role's password was changed by an unfinished rotation: {role} already has the \
             pending password, so the current url fails to log in until the rotation is \
             finished; run {finish} to finish it"
        ),
        (Login::Works, _) => format!(
            "a new password for {role} is staged as the pending version; {role} still has its \
             current one, which works; {finish} continues the rotation"
        ),
        _ => format!(
            "a new password for {role} is staged as the pending version; trying the current and \
             the pending login at {}:{} did not show which one {role} has (the server may be \
             down, or refuse both); {finish} continues the rotation",
            db.host, db.port
        ),
    })
}

/// What a login attempt showed.
enum Login {
    Works,
    /// The server refused the password (SQLSTATE 28P01).
    Refused,
    /// Anything else: unreachable, too slow, another refusal.
    Unknown,
}

/// Whether PostgreSQL refused a login for its password.
fn refused_password(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .and_then(|e| e.code())
        .is_some_and(|code| code == "28P01")
}

/// The number of sessions of `role` open on the server.
async fn sessions_of(conn: &mut sqlx::PgConnection, role: &str) -> Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = $1")
        .bind(role)
        .fetch_one(conn)
        .await
        .with_context(|| format!("counting the sessions of {role}"))
}

impl Rotator<'_> {
    /// A Redis ACL user: the pending password is added beside the current
    /// one (anything older is dropped), must log in, then the secret is
    /// switched. The server's ACL file is saved when it has one.
    async fn redis(&self, secret: &Expected, progress: &mut dyn FnMut(&str)) -> Result<String> {
        let name = &secret.name;
        let current = self.current(name)?;
        let username = user(&current);
        let (Some(old), Some(url)) = (current.keys.get("password"), current.keys.get("url")) else {
            if self.env.name == "local" {
                bail!("{name} has no password and url yet: run `kisumctl deploy local`");
            }
            bail!(
                "{name} has no password and url yet: supply them (keys username, password, url of \
                 the Redis ACL user) in {}",
                self.store.describe()
            );
        };
        if username.is_empty() {
            bail!("{name} names no Redis user (key `username`)");
        }
        let admin_password = connection::redis_password(self.store)?;
        if admin_password.is_none() && self.env.name == "local" {
            bail!(
                "local's Redis has no administrator: supply `{}` (key password), run `kisumctl \
                 deploy local`, then rotate",
                connection::REDIS_ADMIN_SECRET
            );
        }
        let resumed = self
            .store
            .read_stage(name, Stage::Pending)?
            .filter(|p| user(p) == username && differs(p, &current))
            .and_then(|p| p.keys.get("password").cloned());
        let password = match resumed {
            Some(password) => {
                progress(&format!(
                    "{name}: continuing the pending version for {username}"
                ));
                password
            }
            None => {
                let password = Secret::random_password();
                let mut keys = current.keys.clone();
                keys.insert("password".into(), password.clone());
                keys.insert(
                    "url".into(),
                    Secret::new(redis_url_with(url.expose(), &username, &password)?),
                );
                self.store.put_pending(name, &keys)?;
                progress(&format!(
                    "{name}: new password for {username} stored as {}",
                    Stage::Pending.label()
                ));
                password
            }
        };

        let target = connection::target(self.env, connection::REDIS_ID)?;
        let admin = crate::backup::redis::Server {
            host: &target.host,
            port: target.port,
            password: admin_password.as_ref(),
        };
        let mut conn = admin.connect(0).await.with_context(|| {
            format!(
                "reaching Redis as its administrator (secret {}, key password)",
                connection::REDIS_ADMIN_SECRET
            )
        })?;
        let command = acl_setuser(&username, &[old, &password]);
        let set: redis::RedisResult<()> = command.query_async(&mut conn).await;
        // The error names the command, never its arguments (the passwords).
        set.map_err(|e| anyhow::anyhow!("ACL SETUSER {username} refused: {:?}", e.kind()))?;
        let aclfile: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("aclfile")
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        if aclfile.get(1).is_some_and(|f| !f.is_empty()) {
            let saved: redis::RedisResult<()> =
                redis::cmd("ACL").arg("SAVE").query_async(&mut conn).await;
            saved.map_err(|e| anyhow::anyhow!("ACL SAVE refused: {:?}", e.kind()))?;
        }
        progress(&format!(
            "{name}: {username} has the new password beside the current one"
        ));

        let login = redis_url_with(
            &format!("redis://{}:{}/", target.host, target.port),
            &username,
            &password,
        )?;
        let tried = async {
            let client = redis::Client::open(login)?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        tried.await.map_err(|e| {
            anyhow::anyhow!("testing the new password of {username}: {:?}", e.kind())
        })?;
        progress(&format!("{name}: {username} logs in with it"));
        self.store.promote_pending(name)?;
        Ok(format!(
            "{username} has a new password; the one before keeps working until the next \
             rotation, so instances still using it keep connecting"
        ))
    }
}

impl Rotator<'_> {
    /// The accounts of `secret` in Auth: each `*password` key with its
    /// `*email` key get a new password through `kisum-auth seed-user`,
    /// which must log in while the old one no longer does.
    async fn auth_accounts(
        &self,
        secret: &Expected,
        progress: &mut dyn FnMut(&str),
    ) -> Result<String> {
        use crate::local::{plan::Endpoints, seed, state};
        let name = &secret.name;
        let current = self.current(name)?;
        let accounts = accounts(secret);
        for (email, _) in &accounts {
            if !current.keys.contains_key(email) {
                let source = secret.keys.iter().find(|(k, _)| k == email);
                let how = match source.map(|(_, source)| source) {
                    Some(Source::WrittenBy(by)) => format!("{by} writes it"),
                    _ => format!(
                        "a person supplies it: the account's e-mail, as key `{email}` (see `kisumctl secrets plan {}`)",
                        self.env.name
                    ),
                };
                bail!("{name} has no `{email}` yet: {how}");
            }
        }
        let local = state::StateDir::new(&self.state_dir);
        let desired: state::DesiredState =
            state::read_json(&local.desired())?.with_context(|| {
                format!(
                    "{} is not deployed: run `kisumctl deploy local`",
                    self.env.name
                )
            })?;
        let auth = desired
            .processes
            .iter()
            .find(|p| p.name == "auth")
            .context("deploy local's state names no auth process")?;
        let endpoints: Endpoints = state::read_json(&local.endpoints())?
            .context("deploy local's endpoints.json is missing")?;
        let auth_url = endpoints.public.get("auth").context("no Auth endpoint")?;

        let pending = match self.store.read_stage(name, Stage::Pending)? {
            Some(pending) if differs(&pending, &current) => {
                progress(&format!("{name}: continuing the pending version"));
                pending
            }
            _ => {
                let mut keys = current.keys.clone();
                for (_, password) in &accounts {
                    keys.insert(password.clone(), Secret::random_password());
                }
                self.store.put_pending(name, &keys)?;
                progress(&format!(
                    "{name}: new passwords stored as {}",
                    Stage::Pending.label()
                ));
                Staged { keys }
            }
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(self.connect_timeout)
            .build()?;
        for (email_key, password_key) in &accounts {
            let email = current.keys[email_key].expose();
            let file = self
                .store
                .file(name, password_key)
                .map(|path| super::LocalFiles::pending_file(&path))
                .with_context(|| {
                    format!(
                        "{} keeps no files: Auth's seed-user reads one",
                        self.store.describe()
                    )
                })?;
            let argv = vec![
                "seed-user".to_string(),
                email.to_string(),
                "--password-file".into(),
                file.display().to_string(),
            ];
            seed::seed_auth(&auth.argv[0], &auth.env, &[argv])?;
            let new = &pending.keys[password_key];
            seed::login(&client, auth_url, email, new)
                .await
                .with_context(|| format!("testing the new password of {email}"))?;
            if seed::login(&client, auth_url, email, &current.keys[password_key])
                .await
                .is_ok()
            {
                bail!("the old password of {email} still logs in");
            }
            progress(&format!(
                "{name}: {email} logs in with the new password, not with the old one"
            ));
        }
        self.store.promote_pending(name)?;
        Ok(format!(
            "{} account(s) have new passwords in Auth (their sessions ended)",
            accounts.len()
        ))
    }
}

impl Rotator<'_> {
    /// A MongoDB service user, by alternation: the waiting user of the two
    /// gets the pending password (created when missing, with the service's
    /// role only), must authenticate, then the secret names it. The user
    /// the secret named before keeps its password until the next rotation.
    async fn mongo(
        &self,
        secret: &Expected,
        database: &str,
        progress: &mut dyn FnMut(&str),
    ) -> Result<String> {
        let name = &secret.name;
        let db = &self.planned(database)?;
        let Logins::Mongo { user: first, role } = &db.logins else {
            bail!("{database} is not a MongoDB database");
        };
        let logins = provision::mongo_logins(first);
        let current = self.current(name)?;
        let active = user(&current);
        if !logins.contains(&active) {
            bail!(
                "{name} names no MongoDB user of {database} (the server does not manage users, \
                 or `kisumctl db provision {} {database}` has not run): no password to rotate",
                self.env.name
            );
        }
        let pending = self.store.read_stage(name, Stage::Pending)?;
        if pending.as_ref().is_some_and(|p| user(p) == active) {
            self.store.promote_pending(name)?;
            return Ok(format!("finished an interrupted switch to {active}"));
        }
        let target = logins
            .iter()
            .find(|l| **l != active)
            .cloned()
            .unwrap_or_default();
        let live = current
            .keys
            .get("url")
            .and_then(|url| connection::url_database(url.expose()).map(str::to_string))
            .filter(|live| connection::is_generation(&db.name, live))
            .unwrap_or_else(|| db.name.clone());
        // The server must manage users before anything is stored.
        let admin = provision::Admin {
            env: self.env,
            secrets: self.store,
            connect_timeout: self.connect_timeout,
        };
        let client = crate::backup::mongo::client(&admin.mongo(db)?).await?;
        let home = client.database(&db.name);
        let info = provision::users_info(&target);
        let exists = match home.run_command(info).await {
            Ok(reply) => provision::lists_one(&reply, "users"),
            Err(error) if provision::unsupported(&error) => bail!(
                "the server of {database} does not manage users (the MongoDB emulator): \
                 there is no password to rotate"
            ),
            Err(error) => return Err(error).context("usersInfo"),
        };
        let password = self.pending_login(name, &current, pending, &target, progress, |p| {
            provision::mongo_url(&db.host, db.port, &live, Some((&target, p)), &db.name)
        })?;
        let [_, set] = provision::rotation_commands(&target, &password, role, &live, exists);
        home.run_command(set)
            .await
            // Only what failed: the command holds the password.
            .map_err(|e| anyhow::anyhow!("setting the password of {target}: {}", e.kind))?;
        progress(&format!("{name}: {target} has the new password"));

        let login = provision::mongo_url(
            &db.host,
            db.port,
            &live,
            Some((&target, &password)),
            &db.name,
        );
        let client = crate::backup::mongo::client(&Secret::new(login)).await?;
        client
            .database(&live)
            .run_command(mongodb::bson::doc! { "ping": 1 })
            .await
            .map_err(|e| anyhow::anyhow!("testing the new password of {target}: {}", e.kind))?;
        progress(&format!("{name}: {target} authenticates to {live} with it"));
        self.store.promote_pending(name)?;
        Ok(format!(
            "now {target} (was {active}); {active} keeps its password until the next rotation, \
             so instances still using it keep working"
        ))
    }
}

/// Each `password` / `*-password` key of `secret` with its e-mail key.
fn accounts(secret: &Expected) -> Vec<(String, String)> {
    secret
        .keys
        .iter()
        .map(|(key, _)| key)
        .filter(|key| *key == "password" || key.ends_with("-password"))
        .map(|key| (key.replace("password", "email"), key.clone()))
        .collect()
}

/// `ACL SETUSER <user> resetpass ><password>...`: exactly these passwords.
fn acl_setuser(user: &str, passwords: &[&Secret]) -> redis::Cmd {
    let mut command = redis::cmd("ACL");
    command.arg("SETUSER").arg(user).arg("resetpass");
    for password in passwords {
        command.arg(format!(">{}", password.expose()));
    }
    command
}

/// `url` (`redis://user:old@host:port/...`) with `user` and `password`.
fn redis_url_with(url: &str, user: &str, password: &Secret) -> Result<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("the url of the Redis login is not a redis:// URL");
    };
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    Ok(format!(
        "{scheme}://{}:{}@{host}",
        provision::userinfo(user),
        provision::userinfo(password.expose())
    ))
}

impl Rotator<'_> {
    /// The password of the pending version for login `target`: the one a
    /// failed run left (continued), else a new one stored now as the
    /// pending version with `target`, the password and `url(password)`.
    fn pending_login(
        &self,
        name: &str,
        current: &Staged,
        pending: Option<Staged>,
        target: &str,
        progress: &mut dyn FnMut(&str),
        url: impl FnOnce(&Secret) -> String,
    ) -> Result<Secret> {
        let resumed = pending
            .filter(|p| user(p) == target && differs(p, current))
            .and_then(|p| p.keys.get("password").cloned());
        if let Some(password) = resumed {
            progress(&format!(
                "{name}: continuing the pending version for {target}"
            ));
            return Ok(password);
        }
        let password = Secret::random_password();
        let mut keys = current.keys.clone();
        keys.insert("username".into(), Secret::new(target));
        keys.insert("password".into(), password.clone());
        keys.insert("url".into(), Secret::new(url(&password)));
        self.store.put_pending(name, &keys)?;
        progress(&format!(
            "{name}: new password for {target} stored as {}",
            Stage::Pending.label()
        ));
        Ok(password)
    }
}

fn user(staged: &Staged) -> String {
    staged
        .keys
        .get("username")
        .map(|u| u.expose().to_string())
        .unwrap_or_default()
}

/// Whether a pending version holds something other than the current one.
fn differs(pending: &Staged, current: &Staged) -> bool {
    pending.keys != current.keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::LocalFiles;

    #[test]
    fn a_mongodb_rotation_alternates_and_grants_only_the_services_role() {
        assert_eq!(
            provision::mongo_logins("basic_app"),
            ["basic_app", "basic_app_b"]
        );
        let password = Secret::new("new-pw");
        let [info, set] =
            provision::rotation_commands("basic_app_b", &password, "basic_app_role", "main", true);
        assert_eq!(info, mongodb::bson::doc! { "usersInfo": "basic_app_b" });
        assert_eq!(
            set,
            mongodb::bson::doc! {
                "updateUser": "basic_app_b",
                "pwd": "new-pw",
                "roles": [{ "role": "basic_app_role", "db": "main" }],
                "mechanisms": ["SCRAM-SHA-256"],
            }
        );
        let [_, create] =
            provision::rotation_commands("basic_app_b", &password, "basic_app_role", "main", false);
        assert_eq!(create.keys().next().map(String::as_str), Some("createUser"));
        // Every MongoDB login of the inventory rotates by alternation.
        let matrix = crate::matrix::shipped();
        let env = matrix.environment("staging").unwrap();
        let main = inventory::expected(&env)
            .into_iter()
            .find(|e| e.name == "main-db-credentials")
            .unwrap();
        assert_eq!(
            main.rotation,
            Rotation::MongoAlternate {
                database: "main-db".into()
            }
        );
    }

    #[test]
    fn a_redis_user_keeps_exactly_the_current_and_the_new_password() {
        let (old, new) = (Secret::new("old-pw"), Secret::new("new-pw"));
        let packed = acl_setuser("auth", &[&old, &new]).get_packed_command();
        let text = String::from_utf8_lossy(&packed);
        let args: Vec<&str> = text
            .split("\r\n")
            .filter(|l| !l.starts_with(['*', '$']) && !l.is_empty())
            .collect();
        assert_eq!(
            args,
            ["ACL", "SETUSER", "auth", "resetpass", ">old-pw", ">new-pw"]
        );
        let url = redis_url_with("rediss://auth:old-pw@10.0.0.1:6379/0", "auth", &new).unwrap();
        assert_eq!(url, "rediss://auth:new-pw@10.0.0.1:6379/0");
        let url = redis_url_with("redis://127.0.0.1:1/", "auth", &new).unwrap();
        assert_eq!(url, "redis://auth:new-pw@127.0.0.1:1/");
        let odd = redis_url_with("redis://h:1/", "a b", &Secret::new("p@ss/")).unwrap();
        assert_eq!(odd, "redis://a%20b:p%40ss%2F@h:1/");
        assert!(redis_url_with("127.0.0.1:1", "auth", &new).is_err());
    }

    #[test]
    fn a_token_rotates_through_a_pending_version_and_retires_the_previous() {
        let matrix = crate::matrix::shipped();
        let env = matrix.environment("local").unwrap();
        let root = tempfile::tempdir().unwrap();
        let store = LocalFiles::new(root.path().join("secrets"));
        store
            .write("internal-credential-auth", "token", &Secret::new("first"))
            .unwrap();
        let (chosen, _) = select(&env, &store, Some("internal-credential-auth"), false, 0).unwrap();
        assert!(select(&env, &store, Some("billing-provider-key"), false, 0).is_err());
        assert!(select(&env, &store, None, false, 0).is_err());
        let rotator = Rotator {
            env: &env,
            store: &store,
            connect_timeout: Duration::from_secs(1),
            retire_after: Duration::ZERO,
            state_dir: root.path().join("state"),
        };
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let rotated = runtime.block_on(rotator.rotate(&chosen[0], &mut |_| {}));
        assert_eq!(rotated.outcome, Outcome::Rotated, "{rotated:?}");
        let read = |stage| {
            store
                .read_stage("internal-credential-auth", stage)
                .unwrap()
                .map(|s| s.keys["token"].expose().to_string())
        };
        assert_eq!(read(Stage::Previous), None, "retired");
        assert_ne!(read(Stage::Current).as_deref(), Some("first"));
        assert_eq!(read(Stage::Pending), None);
        let stages = store.stages("internal-credential-auth").unwrap();
        assert_eq!(stages.len(), 1, "{stages:?}");
        assert_eq!(
            store.keys("internal-credential-auth").unwrap(),
            ["token"],
            "the stages are not keys"
        );
        // Due: with a rotation period of 30 days, 31 days later.
        let later = jiff::Timestamp::now().as_second() + 31 * 86_400;
        let (due, _) = select(&env, &store, None, true, later).unwrap();
        assert!(due.iter().any(|e| e.name == "internal-credential-auth"));
        let (due, _) = select(&env, &store, None, true, 0).unwrap();
        assert!(due.is_empty());
    }
}
