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
//! - An internal service credential (a token) is regenerated and read
//!   back, then promoted: the services verifying it accept the current and
//!   the previous credential and read both again when they change, and the
//!   caller presents the new one as soon as it reads it. After
//!   `retire_after` (long enough for every instance to have read it), the
//!   previous one is retired and the old credential is refused.
//!
//! Nothing here prints or returns a value.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use sqlx::Connection as _;

use super::inventory::{self, Expected, Rotation};
use super::{Secret, SecretStore, Stage, Staged};
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
        let stages = store.stages(&e.name).map_err(|e| e.to_string())?;
        let pending = stages
            .iter()
            .any(|v| v.stages.iter().any(|s| s == Stage::Pending.label()));
        let changed = store.changed_at(&e.name).map_err(|e| e.to_string())?;
        let Some(changed) = changed else {
            continue;
        };
        let overdue = inventory::due_at(changed, e.rotation_days) <= now;
        if !overdue && !pending {
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
                detail: format!(
                    "{error:#}; the current value is unchanged and still in use, and the next \
                     run continues from the pending one"
                ),
            },
        }
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
            self.retire(name, progress).await?;
            return Ok(
                "finished an interrupted rotation: the previous credential is retired".into(),
            );
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
        self.retire(name, progress).await?;
        Ok("new value current; the old one is retired and refused".into())
    }

    /// Waits `retire_after` for every instance to read the new value,
    /// then retires the previous one.
    async fn retire(&self, name: &str, progress: &mut dyn FnMut(&str)) -> Result<()> {
        if !self.retire_after.is_zero() {
            progress(&format!(
                "{name}: waiting {} s for every instance to present the new value",
                self.retire_after.as_secs_f64()
            ));
            tokio::time::sleep(self.retire_after).await;
        }
        self.store.retire_previous(name)?;
        progress(&format!("{name}: the previous value is retired"));
        Ok(())
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
        let plan = provision::plan(self.env, Some(database))?;
        let db = plan
            .databases
            .first()
            .with_context(|| format!("{database} is not deployed in {}", self.env.name))?;
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
        let resumed = pending
            .filter(|p| user(p) == target && differs(p, &current))
            .and_then(|p| p.keys.get("password").cloned());
        let password = match resumed {
            Some(password) => {
                progress(&format!(
                    "{name}: continuing the pending version for {target}"
                ));
                password
            }
            None => {
                let password = Secret::random_password();
                let mut keys = current.keys.clone();
                keys.insert("username".into(), Secret::new(target.clone()));
                keys.insert("password".into(), password.clone());
                keys.insert(
                    "url".into(),
                    Secret::new(provision::postgres_url(db, &target, password.expose())),
                );
                self.store.put_pending(name, &keys)?;
                progress(&format!(
                    "{name}: new password for {target} stored as {}",
                    Stage::Pending.label()
                ));
                password
            }
        };

        let server = connection::target(self.env, database)?;
        let admin = connection::postgres_login(self.env, &server, self.store)?;
        let mut conn = provision::connect_with_retry(&admin, "postgres", self.connect_timeout)
            .await
            .context("reaching the server as its administrator")?;
        let set = provision::set_password(&mut conn, &target, &password).await;
        let _ = conn.close().await;
        set.with_context(|| format!("setting the password of {target}"))?;
        progress(&format!("{name}: {target} has the new password"));

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
    fn a_token_rotates_through_a_pending_version_and_keeps_the_previous() {
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
