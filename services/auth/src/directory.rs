//! Writes to the identity directory: users, platform roles, companies,
//! roles and permissions, memberships, module grants and delegations.
//! Used by `kisum-auth seed-user`, by operators' tooling and by the tests
//! of the services that need Auth data. Access version bumps happen in
//! auth_db's triggers, whoever writes.
//!
//! Every write takes a [`Target`]: a [`Directory`] (auth_db and the Redis
//! of the running Auth) bumps the access epoch after its commit, so Auth
//! stops trusting its Redis copies of membership rows at once; a bare
//! `PgPool` writes auth_db only, and a running Auth sees the change within
//! `cache::ROW_COPY_TTL` (5 s), or at once after `POST /internal/invalidate`.

use std::future::Future;

use sqlx::PgPool;
use uuid::Uuid;

use crate::cache::Cache;

/// Where directory writes go.
pub trait Target: Sync {
    fn pool(&self) -> &PgPool;
    /// Runs after every committed write that can change access.
    fn written(&self) -> impl Future<Output = ()> + Send;
    /// Runs after auth_db committed the revocation of `sessions`.
    fn sessions_revoked(&self, sessions: &[Uuid]) -> impl Future<Output = ()> + Send {
        let _ = sessions;
        std::future::ready(())
    }
}

/// auth_db alone: the running Auth sees the write within 5 s.
impl Target for PgPool {
    fn pool(&self) -> &PgPool {
        self
    }

    fn written(&self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
}

/// auth_db and the Redis of the running Auth: writes are seen at once.
#[derive(Clone)]
pub struct Directory {
    db: PgPool,
    cache: Cache,
}

impl Directory {
    pub fn new(db: PgPool, cache: Cache) -> Directory {
        Directory { db, cache }
    }
}

impl Target for Directory {
    fn pool(&self) -> &PgPool {
        &self.db
    }

    async fn written(&self) {
        self.cache.directory_changed().await;
    }

    /// The revocation markers, so the running Auth refuses the sessions at
    /// once; without Redis, within its 5 s session entries.
    async fn sessions_revoked(&self, sessions: &[Uuid]) {
        if !sessions.is_empty() && self.cache.revoke_sessions(sessions).await.is_err() {
            tracing::warn!(
                sessions = sessions.len(),
                "Redis unreachable: the running Auth refuses the revoked sessions within 5 s"
            );
        }
    }
}

/// The platform roles Admin's RBAC knows.
pub const PLATFORM_ROLES: [&str; 2] = ["platform-admin", "support"];

/// Emails are compared trimmed and lower-cased.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// An email address `seed-user` accepts, normalized: one `@` between a
/// local part and a domain with a dot, no spaces or control characters,
/// at most 254 bytes.
pub fn valid_email(email: &str) -> Result<String, String> {
    let email = normalize_email(email);
    let shaped = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
    });
    let clean = !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if shaped && clean && email.len() <= 254 {
        Ok(email)
    } else {
        Err(format!(
            "`{}` is not an email address",
            email.escape_debug()
        ))
    }
}

/// What [`seed_password`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeded {
    pub user: Uuid,
    /// The user's sessions ended because the password changed.
    pub revoked: Vec<Uuid>,
}

/// `seed-user`: creates the user with `password`, or gives an existing
/// one a changed password and ends every session of theirs, as a password
/// reset does (the same password again changes nothing). The email must
/// pass [`valid_email`].
pub async fn seed_password(
    target: &impl Target,
    email: &str,
    password: &str,
    passwords: &crate::password::Passwords,
) -> anyhow::Result<Seeded> {
    let email = valid_email(email).map_err(anyhow::Error::msg)?;
    let pool = target.pool();
    let existing: Option<(Uuid, String)> =
        sqlx::query_as("select id, password_hash from users where email = $1")
            .bind(&email)
            .fetch_optional(pool)
            .await?;
    if let Some((user, hash)) = &existing
        && passwords
            .verify(password.to_string(), Some(hash.clone()))
            .await?
    {
        return Ok(Seeded {
            user: *user,
            revoked: Vec::new(),
        });
    }
    let hash = passwords.hash(password.to_string()).await?;
    let mut tx = pool.begin().await?;
    let user: Uuid = sqlx::query_scalar(
        "insert into users (id, email, password_hash) values ($1, $2, $3)
         on conflict (email) do update set password_hash = excluded.password_hash
         returning id",
    )
    .bind(Uuid::new_v4())
    .bind(&email)
    .bind(&hash)
    .fetch_one(&mut *tx)
    .await?;
    let revoked = match existing {
        Some(_) => crate::sessions::revoke_all_of_user(&mut tx, user, "password_seeded").await?,
        None => Vec::new(),
    };
    tx.commit().await?;
    target.sessions_revoked(&revoked).await;
    Ok(Seeded { user, revoked })
}

/// Creates the user, or replaces the password hash of an existing one;
/// returns the user id. Sessions are left alone: `seed-user` goes through
/// [`seed_password`].
pub async fn upsert_user(
    target: &impl Target,
    email: &str,
    password_hash: &str,
) -> sqlx::Result<Uuid> {
    let pool = target.pool();
    sqlx::query_scalar(
        "insert into users (id, email, password_hash) values ($1, $2, $3)
         on conflict (email) do update set password_hash = excluded.password_hash
         returning id",
    )
    .bind(Uuid::new_v4())
    .bind(normalize_email(email))
    .bind(password_hash)
    .fetch_one(pool)
    .await
}

pub async fn set_user_status(target: &impl Target, user: Uuid, active: bool) -> sqlx::Result<()> {
    let pool = target.pool();
    sqlx::query("update users set status = $2 where id = $1")
        .bind(user)
        .bind(if active { "active" } else { "disabled" })
        .execute(pool)
        .await?;
    target.written().await;
    Ok(())
}

pub async fn grant_platform_role(
    target: &impl Target,
    user: Uuid,
    role: &str,
) -> anyhow::Result<()> {
    let pool = target.pool();
    anyhow::ensure!(
        PLATFORM_ROLES.contains(&role),
        "unknown platform role `{role}` (known: {})",
        PLATFORM_ROLES.join(", ")
    );
    sqlx::query(
        "insert into platform_roles (user_id, role) values ($1, $2) on conflict do nothing",
    )
    .bind(user)
    .bind(role)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn platform_roles(pool: &PgPool, user: Uuid) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("select role from platform_roles where user_id = $1 order by role")
        .bind(user)
        .fetch_all(pool)
        .await
}

/// Registers a company under the id Platform Core uses for it; the slug
/// is stored in lower case, as `x-org` reads it.
pub async fn upsert_company(
    target: &impl Target,
    id: Uuid,
    slug: &str,
    name: &str,
) -> sqlx::Result<()> {
    let pool = target.pool();
    sqlx::query(
        "insert into companies (id, slug, name) values ($1, $2, $3)
         on conflict (id) do update set slug = excluded.slug, name = excluded.name",
    )
    .bind(id)
    .bind(slug.trim().to_ascii_lowercase())
    .bind(name)
    .execute(pool)
    .await
    .map(drop)
}

pub async fn set_company_active(
    target: &impl Target,
    company: Uuid,
    active: bool,
) -> sqlx::Result<()> {
    let pool = target.pool();
    sqlx::query("update companies set status = $2 where id = $1")
        .bind(company)
        .bind(if active { "active" } else { "suspended" })
        .execute(pool)
        .await?;
    target.written().await;
    Ok(())
}

/// Defines (or extends) a role with permission keys of the catalog
/// (`kisum_common::modules::CATALOG`); any other key is refused.
pub async fn define_role(
    target: &impl Target,
    role: &str,
    permissions: &[&str],
) -> anyhow::Result<()> {
    let pool = target.pool();
    let mut tx = pool.begin().await?;
    sqlx::query("insert into roles (key) values ($1) on conflict do nothing")
        .bind(role)
        .execute(&mut *tx)
        .await?;
    for permission in permissions {
        let module = kisum_common::modules::known_permission(permission)?;
        sqlx::query("insert into permissions (key, module) values ($1, $2) on conflict do nothing")
            .bind(permission)
            .bind(module)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "insert into role_permissions (role, permission) values ($1, $2) on conflict do nothing",
        )
        .bind(role)
        .bind(permission)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    target.written().await;
    Ok(())
}

/// Adds the user to the company with a role; returns the membership id.
pub async fn add_membership(
    target: &impl Target,
    user: Uuid,
    company: Uuid,
    role: &str,
) -> sqlx::Result<Uuid> {
    let pool = target.pool();
    let id = sqlx::query_scalar(
        "insert into memberships (id, user_id, company_id, role) values ($1, $2, $3, $4)
         on conflict (user_id, company_id) do update set role = excluded.role
         returning id",
    )
    .bind(Uuid::new_v4())
    .bind(user)
    .bind(company)
    .bind(role)
    .fetch_one(pool)
    .await?;
    target.written().await;
    Ok(id)
}

pub async fn set_membership_active(
    target: &impl Target,
    membership: Uuid,
    active: bool,
) -> sqlx::Result<()> {
    let pool = target.pool();
    sqlx::query("update memberships set status = $2 where id = $1")
        .bind(membership)
        .bind(if active { "active" } else { "suspended" })
        .execute(pool)
        .await?;
    target.written().await;
    Ok(())
}

pub async fn grant_module(
    target: &impl Target,
    membership: Uuid,
    module: &str,
) -> sqlx::Result<()> {
    let pool = target.pool();
    sqlx::query(
        "insert into module_grants (membership_id, module) values ($1, $2) on conflict do nothing",
    )
    .bind(membership)
    .bind(module)
    .execute(pool)
    .await?;
    target.written().await;
    Ok(())
}

pub async fn revoke_module(
    target: &impl Target,
    membership: Uuid,
    module: &str,
) -> sqlx::Result<()> {
    let pool = target.pool();
    sqlx::query("delete from module_grants where membership_id = $1 and module = $2")
        .bind(membership)
        .bind(module)
        .execute(pool)
        .await?;
    target.written().await;
    Ok(())
}

/// `from` lends its role's permissions of `module` to `to` (same company)
/// for `seconds`; returns the delegation id.
pub async fn delegate(
    target: &impl Target,
    from: Uuid,
    to: Uuid,
    module: &str,
    seconds: i64,
) -> anyhow::Result<Uuid> {
    let pool = target.pool();
    let same_company: bool = sqlx::query_scalar(
        "select count(distinct company_id) = 1 and count(*) = 2
           from memberships where id in ($1, $2)",
    )
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await?;
    anyhow::ensure!(
        same_company,
        "a delegation joins two memberships of one company"
    );
    let id = Uuid::new_v4();
    sqlx::query(
        "insert into delegations (id, from_membership, to_membership, module, expires_at)
         values ($1, $2, $3, $4, now() + make_interval(secs => $5))",
    )
    .bind(id)
    .bind(from)
    .bind(to)
    .bind(module)
    .bind(seconds as f64)
    .execute(pool)
    .await?;
    target.written().await;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_email_addresses_are_seeded() {
        assert_eq!(
            super::valid_email(" Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "ada@@example.com",
            "a da@example.com",
            "ada@example.com.",
            "ada@ex\u{7}ample.com",
        ] {
            assert!(super::valid_email(bad).is_err(), "{bad:?}");
        }
        assert!(super::valid_email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn emails_compare_trimmed_and_lower_case() {
        assert_eq!(normalize_email("  Ada@Example.COM "), "ada@example.com");
    }
}
