//! Access aggregation: what a membership may do in a company, merged from
//! auth_db (membership, role permissions, module grants, delegations) and
//! Platform Core (the company's entitlements).
//!
//! A module appears only if the company is entitled to it AND the
//! membership has a grant for it; its permissions are the role's
//! permissions of that module, those granted to the membership itself,
//! and those lent by live delegations (from an
//! active membership of an active user in the same company that itself
//! holds the grant). A disabled user has no access at all. `core_app`
//! is Core's: true only while a Basic subscription is active; add-on
//! modules stay available without it.
//!
//! The result is cached in Redis under
//! `access:{company}:{membership}:{accessVersion}:{entitlementVersion}`:
//! the access version (user's + company's counters in auth_db, which only
//! grow) and the entitlement version change whenever the inputs do, so a
//! stale entry is never looked up again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kisum_common::org::OrgRef;
use kisum_common::telemetry::RequestContext;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::core_client::{CoreError, Entitlements};
use crate::error::{AuthError, Result};
use crate::metrics::event;
use crate::sessions::Identity;
use crate::state::AppState;

/// `redis.key-families.access-context.ttl-seconds`.
const ACCESS_TTL: Duration = Duration::from_secs(600);
/// `redis.key-families.company-map.ttl-seconds`.
const COMPANY_MAP_TTL: Duration = Duration::from_secs(300);
/// How long Core's entitlement version is trusted without asking again.
const ENTITLEMENT_VERSION_TTL: Duration = Duration::from_secs(30);

/// The access context of docs/services.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessContext {
    pub user: Uuid,
    pub session: Uuid,
    pub company: Uuid,
    pub membership: Uuid,
    pub core_app: bool,
    pub modules: BTreeMap<String, Vec<String>>,
    pub access_version: i64,
    pub entitlement_version: i64,
}

/// What is cached: the context without the session.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Computed {
    /// Seconds until the first live delegation ends (not serialized).
    #[serde(skip)]
    first_delegation_end: Option<i64>,
    user: Uuid,
    company: Uuid,
    membership: Uuid,
    core_app: bool,
    modules: BTreeMap<String, Vec<String>>,
    access_version: i64,
    entitlement_version: i64,
}

impl Computed {
    fn for_session(self, session: Uuid) -> AccessContext {
        AccessContext {
            user: self.user,
            session,
            company: self.company,
            membership: self.membership,
            core_app: self.core_app,
            modules: self.modules,
            access_version: self.access_version,
            entitlement_version: self.entitlement_version,
        }
    }
}

fn access_key(company: Uuid, membership: Uuid, access: i64, entitlement: i64) -> String {
    format!("access:{company}:{membership}:{access}:{entitlement}")
}

fn entitlement_version_key(company: Uuid) -> String {
    format!("entitlement-version:{company}")
}

fn company_map_key(raw: &str) -> String {
    format!("company-map:{raw}")
}

/// The company an `x-org` value names (its id or its slug, as
/// `kisum_common::org` reads them).
pub async fn resolve_company(state: &AppState, raw: &str) -> Result<Option<Uuid>> {
    let Ok(org) = OrgRef::parse(raw) else {
        return Ok(None);
    };
    let key = company_map_key(&org.to_string());
    if let Ok(Some(cached)) = state.cache.get(&key).await
        && let Ok(id) = Uuid::parse_str(&cached)
    {
        return Ok(Some(id));
    }
    let id: Option<Uuid> = match &org {
        OrgRef::Id(id) => {
            sqlx::query_scalar("select id from companies where id = $1")
                .bind(id)
                .fetch_optional(&state.db)
                .await?
        }
        OrgRef::Slug(slug) => {
            sqlx::query_scalar("select id from companies where slug = $1")
                .bind(slug)
                .fetch_optional(&state.db)
                .await?
        }
    };
    if let Some(id) = id {
        let _ = state
            .cache
            .set(&key, &id.to_string(), COMPANY_MAP_TTL)
            .await;
    }
    Ok(id)
}

/// The membership behind a request, as auth_db has it now.
struct Membership {
    id: Uuid,
    role: String,
    active: bool,
    company_active: bool,
    access_version: i64,
}

async fn membership(state: &AppState, user: Uuid, company: Uuid) -> Result<Option<Membership>> {
    let row: Option<(Uuid, String, bool, bool, i64)> = sqlx::query_as(
        "select m.id, m.role, m.status = 'active', c.status = 'active',
                u.access_version + c.access_version
           from memberships m
           join companies c on c.id = m.company_id
           join users u on u.id = m.user_id
          where m.user_id = $1 and m.company_id = $2 and u.status = 'active'",
    )
    .bind(user)
    .bind(company)
    .fetch_optional(&state.db)
    .await?;
    Ok(row.map(
        |(id, role, active, company_active, access_version)| Membership {
            id,
            role,
            active,
            company_active,
            access_version,
        },
    ))
}

/// `POST /internal/access-context` and `GET /auth/me/access`, after the
/// session check.
pub async fn access_context(
    state: &AppState,
    context: &RequestContext,
    identity: Identity,
    org: &str,
) -> Result<AccessContext> {
    let Some(company) = resolve_company(state, org).await? else {
        return Err(denied(state, identity, None, "unknown company"));
    };
    let Some(membership) = membership(state, identity.user, company).await? else {
        return Err(denied(state, identity, Some(company), "no membership"));
    };
    if !membership.company_active {
        return Err(denied(state, identity, Some(company), "company inactive"));
    }
    if !membership.active {
        return Err(denied(
            state,
            identity,
            Some(company),
            "membership inactive",
        ));
    }
    let entitlement_version = entitlement_version(state, context, company).await?;
    let key = access_key(
        company,
        membership.id,
        membership.access_version,
        entitlement_version,
    );
    if let Ok(Some(text)) = state.cache.get(&key).await
        && let Ok(cached) = serde_json::from_str::<Computed>(&text)
        && cached.user == identity.user
    {
        state.metrics.event(event::ACCESS_CACHE, "hit");
        return Ok(cached.for_session(identity.session));
    }
    state.metrics.event(event::ACCESS_CACHE, "miss");
    let computed = compute(state, context, identity.user, company, &membership).await?;
    store(state, &computed, entitlement_version).await;
    Ok(computed.for_session(identity.session))
}

fn denied(state: &AppState, identity: Identity, company: Option<Uuid>, reason: &str) -> AuthError {
    state.metrics.event(event::ACCESS_DENIED, "no_membership");
    tracing::info!(
        user_id = %identity.user,
        session_id = %identity.session,
        company_id = ?company,
        reason,
        "access denied"
    );
    AuthError::NoMembership
}

fn aggregation_failed(state: &AppState, company: Uuid, error: &CoreError) -> AuthError {
    state.metrics.event(event::ACCESS_AGGREGATION, "failure");
    tracing::error!(company_id = %company, error = %error, "access aggregation failure");
    AuthError::AccessUnavailable
}

/// The company's entitlement version: Redis for a few seconds, else Core.
async fn entitlement_version(
    state: &AppState,
    context: &RequestContext,
    company: Uuid,
) -> Result<i64> {
    let key = entitlement_version_key(company);
    if let Ok(Some(text)) = state.cache.get(&key).await
        && let Ok(version) = text.parse()
    {
        return Ok(version);
    }
    let version = state
        .core
        .entitlement_version(context, company)
        .await
        .map_err(|e| aggregation_failed(state, company, &e))?;
    let _ = state
        .cache
        .set(&key, &version.to_string(), ENTITLEMENT_VERSION_TTL)
        .await;
    Ok(version)
}

/// The part of the context auth_db decides.
struct Rights {
    granted: BTreeSet<String>,
    permissions: BTreeMap<String, BTreeSet<String>>,
    /// Seconds until the first delegation ends, if any is live.
    first_delegation_end: Option<i64>,
}

async fn rights(state: &AppState, company: Uuid, membership: &Membership) -> Result<Rights> {
    let granted: Vec<String> =
        sqlx::query_scalar("select module from module_grants where membership_id = $1")
            .bind(membership.id)
            .fetch_all(&state.db)
            .await?;
    let pairs: Vec<(String, String)> = sqlx::query_as(
        "select p.module, p.key
           from role_permissions rp join permissions p on p.key = rp.permission
          where rp.role = $1
         union
         select mp.module, mp.permission from membership_permissions mp
          where mp.membership_id = $2
         union
         select p.module, p.key
           from delegations d
           join memberships lender on lender.id = d.from_membership
                and lender.status = 'active' and lender.company_id = $3
           join users lending_user on lending_user.id = lender.user_id
                and lending_user.status = 'active'
           join module_grants g on g.membership_id = lender.id and g.module = d.module
           join role_permissions rp on rp.role = lender.role
           join permissions p on p.key = rp.permission and p.module = d.module
          where d.to_membership = $2 and d.revoked_at is null and d.expires_at > now()",
    )
    .bind(&membership.role)
    .bind(membership.id)
    .bind(company)
    .fetch_all(&state.db)
    .await?;
    let first_delegation_end: Option<i64> = sqlx::query_scalar(
        "select ceil(extract(epoch from min(expires_at) - now()))::bigint
           from delegations
          where to_membership = $1 and revoked_at is null and expires_at > now()",
    )
    .bind(membership.id)
    .fetch_one(&state.db)
    .await?;
    let mut permissions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, key) in pairs {
        permissions.entry(module).or_default().insert(key);
    }
    Ok(Rights {
        granted: granted.into_iter().collect(),
        permissions,
        first_delegation_end,
    })
}

/// Entitled AND granted modules, each with its permissions.
fn merge(entitlements: &Entitlements, rights: &Rights) -> BTreeMap<String, Vec<String>> {
    entitlements
        .modules
        .iter()
        .filter(|module| rights.granted.contains(*module))
        .map(|module| {
            let permissions = rights
                .permissions
                .get(module)
                .map(|set| set.iter().cloned().collect())
                .unwrap_or_default();
            (module.clone(), permissions)
        })
        .collect()
}

async fn compute(
    state: &AppState,
    context: &RequestContext,
    user: Uuid,
    company: Uuid,
    membership: &Membership,
) -> Result<Computed> {
    let started = Instant::now();
    let core_started = Instant::now();
    let entitlements = state
        .core
        .entitlements(context, company)
        .await
        .map_err(|e| aggregation_failed(state, company, &e))?;
    let core_took = core_started.elapsed();
    let rights = rights(state, company, membership).await?;
    let computed = Computed {
        first_delegation_end: rights.first_delegation_end,
        user,
        company,
        membership: membership.id,
        core_app: entitlements.core_app,
        modules: merge(&entitlements, &rights),
        access_version: membership.access_version,
        entitlement_version: entitlements.version,
    };
    state.metrics.access_merge(started.elapsed());
    tracing::debug!(company_id = %company, core_ms = core_took.as_millis() as u64, "access computed");
    Ok(computed)
}

/// Caches the context under the versions it was computed from; a context
/// with delegations expires with the first of them.
async fn store(state: &AppState, computed: &Computed, looked_up_version: i64) {
    let ttl = match computed.first_delegation_end {
        Some(seconds) => ACCESS_TTL.min(Duration::from_secs(seconds.max(1) as u64)),
        None => ACCESS_TTL,
    };
    let key = access_key(
        computed.company,
        computed.membership,
        computed.access_version,
        computed.entitlement_version,
    );
    if let Ok(text) = serde_json::to_string(computed) {
        let _ = state.cache.set(&key, &text, ttl).await;
    }
    // Core moved on since the version was read: remember the newer one so
    // the next request finds this entry.
    if computed.entitlement_version > looked_up_version {
        let _ = state
            .cache
            .set(
                &entitlement_version_key(computed.company),
                &computed.entitlement_version.to_string(),
                ENTITLEMENT_VERSION_TTL,
            )
            .await;
    }
}

/// `POST /internal/invalidate {company}`: the next request reads Core's
/// entitlement version afresh and finds no cached context.
pub async fn invalidate_company(state: &AppState, company: Uuid) -> Result<Option<i64>> {
    let _ = state.cache.delete(&entitlement_version_key(company)).await;
    let version: Option<i64> = sqlx::query_scalar(
        "update companies set access_version = access_version + 1 where id = $1
         returning access_version",
    )
    .bind(company)
    .fetch_optional(&state.db)
    .await?;
    tracing::info!(company_id = %company, access_version = ?version, "access invalidated for company");
    Ok(version)
}

/// `POST /internal/invalidate {user}`.
pub async fn invalidate_user(state: &AppState, user: Uuid) -> Result<Option<i64>> {
    let version: Option<i64> = sqlx::query_scalar(
        "update users set access_version = access_version + 1 where id = $1
         returning access_version",
    )
    .bind(user)
    .fetch_optional(&state.db)
    .await?;
    tracing::info!(user_id = %user, access_version = ?version, "access invalidated for user");
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rights(granted: &[&str], permissions: &[(&str, &str)]) -> Rights {
        let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (module, key) in permissions {
            map.entry(module.to_string())
                .or_default()
                .insert(key.to_string());
        }
        Rights {
            granted: granted.iter().map(|s| s.to_string()).collect(),
            permissions: map,
            first_delegation_end: None,
        }
    }

    #[test]
    fn a_module_needs_both_the_entitlement_and_the_grant() {
        let entitlements = Entitlements {
            version: 7,
            core_app: false,
            modules: vec!["finance".into(), "market".into()],
        };
        let rights = rights(
            &["finance", "touring"],
            &[
                ("finance", "finance.invoices.read"),
                ("touring", "touring.tours.read"),
            ],
        );
        let merged = merge(&entitlements, &rights);
        assert_eq!(
            merged,
            BTreeMap::from([(
                "finance".to_string(),
                vec!["finance.invoices.read".to_string()]
            )])
        );
    }

    #[test]
    fn the_cache_key_carries_both_versions() {
        let id = Uuid::nil();
        assert_eq!(access_key(id, id, 3, 9), format!("access:{id}:{id}:3:9"));
    }
}
