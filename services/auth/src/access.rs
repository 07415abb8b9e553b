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
//!
//! The warm path ([`for_session`]) reads no database: one Redis round trip
//! ([`Cache::snapshot`](crate::cache::Cache::snapshot), one `MGET`) gives
//! the revocation marker, the session entry, the company, the membership
//! entry (id, access version, the three statuses), the entitlement version
//! and the cached context (under the key the previous request ended with;
//! used only if the entries read name that same key). Where the access version lives: auth_db
//! is its truth (its triggers bump it); the membership entry is a copy
//! stamped with the access epoch it was read under. Every write Auth makes
//! or is told of bumps the epoch after its commit (`/internal/invalidate`,
//! the directory given Auth's Redis), so an older copy is never trusted
//! again, however a concurrent read raced the write. A write to auth_db
//! that bypasses Auth (SQL alone) is seen once the copy expires
//! ([`ROW_COPY_TTL`], 5 s), or at once after `/internal/invalidate`.
//! Whatever is missing or stale in Redis is read from auth_db (and Core)
//! and written back; with Redis unavailable every request takes the
//! auth_db path.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use kisum_common::org::OrgRef;
use kisum_common::telemetry::RequestContext;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cache::{AccessKey, Guess, Held, ROW_COPY_TTL, Rendered, Snapshot, key};
use crate::core_client::{CoreError, Entitlements};
use crate::error::{AuthError, Result};
use crate::metrics::event;
use crate::sessions::{self, Identity};
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
    key::access(company, membership, access, entitlement)
}

fn entitlement_version_key(company: Uuid) -> String {
    key::entitlement_version(company)
}

fn company_map_key(raw: &str) -> String {
    key::company_map(raw)
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

/// The membership as the warm path needs it: cached in Redis under
/// `membership:{company}:{user}` as `{epoch}:{id}:{accessVersion}:{flags}`,
/// stamped with the access epoch read before the row was.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    epoch: String,
    id: Uuid,
    /// The user's plus the company's access version.
    access_version: i64,
    active: bool,
    company_active: bool,
    user_active: bool,
}

impl Member {
    fn encode(&self) -> String {
        let flag = |on: bool| if on { '1' } else { '0' };
        format!(
            "{}:{}:{}:{}{}{}",
            self.epoch,
            self.id,
            self.access_version,
            flag(self.active),
            flag(self.company_active),
            flag(self.user_active)
        )
    }

    fn decode(text: &str) -> Option<Member> {
        let mut parts = text.split(':');
        let epoch = parts.next()?.to_string();
        let id = Uuid::parse_str(parts.next()?).ok()?;
        let access_version = parts.next()?.parse().ok()?;
        let flags = parts.next()?.as_bytes();
        if parts.next().is_some() || flags.len() != 3 || flags.iter().any(|f| !b"01".contains(f)) {
            return None;
        }
        Some(Member {
            epoch,
            id,
            access_version,
            active: flags[0] == b'1',
            company_active: flags[1] == b'1',
            user_active: flags[2] == b'1',
        })
    }
}

/// The membership row from auth_db, with the role [`compute`] needs.
async fn member_from_db(
    state: &AppState,
    user: Uuid,
    company: Uuid,
    epoch: &str,
) -> Result<Option<(Member, String)>> {
    let row: Option<(Uuid, String, bool, bool, bool, i64)> = sqlx::query_as(
        "select m.id, m.role, m.status = 'active', c.status = 'active', u.status = 'active',
                u.access_version + c.access_version
           from memberships m
           join companies c on c.id = m.company_id
           join users u on u.id = m.user_id
          where m.user_id = $1 and m.company_id = $2",
    )
    .bind(user)
    .bind(company)
    .fetch_optional(&state.db)
    .await?;
    Ok(row.map(
        |(id, role, active, company_active, user_active, access_version)| {
            let member = Member {
                epoch: epoch.to_string(),
                id,
                access_version,
                active,
                company_active,
                user_active,
            };
            (member, role)
        },
    ))
}

/// Reads the membership row and keeps a copy stamped with `epoch` (read
/// before the row, so a write committed in between leaves the copy stale
/// under the bumped epoch, never trusted).
async fn refresh_member(
    state: &AppState,
    user: Uuid,
    company: Uuid,
    epoch: &str,
) -> Result<Option<(Member, String)>> {
    let found = member_from_db(state, user, company, epoch).await?;
    if let Some((member, _)) = &found {
        let _ = state
            .cache
            .set(
                &key::membership(company, user),
                &member.encode(),
                ROW_COPY_TTL,
            )
            .await;
    }
    Ok(found)
}

/// `GET /auth/me/access` and `POST /internal/access-context`: the session
/// check and the access context of a verified identity. Warm, one Redis
/// round trip answers both (see the module comment); whatever Redis lacks
/// is read from auth_db or Core and written back; without Redis, the
/// auth_db path ([`sessions::ensure_live`], then [`access_context`]).
pub async fn for_session(
    state: &AppState,
    context: &RequestContext,
    identity: Identity,
    org: &str,
) -> Result<Answer> {
    let Ok(parsed) = OrgRef::parse(org) else {
        sessions::ensure_live(state, identity).await?;
        return Err(denied(state, identity, None, "unknown company"));
    };
    // Cached under its canonical form, as `resolve_company` does.
    let canonical = parsed.to_string();
    let org = canonical.as_str();
    match state.cache.held(identity.session) {
        Held::Clear => {}
        Held::Revoked => return Err(sessions::refuse_revoked(state, identity)),
        // A directory change Redis has not been told of: auth_db answers.
        Held::Epoch => {
            sessions::ensure_live(state, identity).await?;
            let context = access_context(state, context, identity, org).await?;
            return Answer::of(&context);
        }
    }
    let guess = state.cache.guess(identity.user, org);
    // An `x-org` that is an id names the company directly: no company map
    // to read.
    let (org_id, slug) = match &parsed {
        OrgRef::Id(id) => (Some(*id), None),
        OrgRef::Slug(slug) => (None, Some(slug.as_str())),
    };
    // The company whose entries to read along: named by the `x-org` id, or
    // where the last check with this `x-org` ended.
    let expected = org_id.or(guess.as_ref().map(|g| g.key.company));
    let cached = state
        .cache
        .snapshot(
            identity.session,
            identity.user,
            slug,
            expected,
            guess.as_ref().map(|g| &g.key),
        )
        .await;
    let epoch = match &cached {
        Ok(Snapshot { revoked: true, .. }) => {
            return Err(sessions::refuse_revoked(state, identity));
        }
        Ok(Snapshot {
            epoch: Some(epoch), ..
        }) => Ok(epoch.clone()),
        Ok(_) => state.cache.ensure_epoch().await,
        Err(unavailable) => Err(*unavailable),
    };
    let (Ok(snapshot), Ok(epoch)) = (cached, epoch) else {
        state.metrics.event(event::ACCESS_SNAPSHOT, "unavailable");
        sessions::ensure_live(state, identity).await?;
        let context = access_context(state, context, identity, org).await?;
        return Answer::of(&context);
    };
    let (answer, ended) = warm(
        state, context, identity, org, org_id, expected, snapshot, guess, epoch,
    )
    .await?;
    if let Some(ended) = ended {
        state.cache.remember(identity.user, org, ended);
    }
    Ok(answer)
}

/// An access context as its JSON answer.
pub struct Answer(Bytes);

impl Answer {
    pub fn of(context: &AccessContext) -> Result<Answer> {
        serde_json::to_vec(context)
            .map(|body| Answer(body.into()))
            .map_err(|e| AuthError::Internal(e.into()))
    }

    fn rendered(rendered: &Rendered, session: Uuid) -> Answer {
        let mut body = Vec::with_capacity(rendered.head.len() + 36 + rendered.tail.len());
        body.extend_from_slice(rendered.head.as_bytes());
        body.extend_from_slice(
            session
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer())
                .as_bytes(),
        );
        body.extend_from_slice(rendered.tail.as_bytes());
        Answer(body.into())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.0,
        )
            .into_response()
    }
}

/// The answer of `context` split around its session, for every later
/// request that finds `text` in Redis under the same key.
fn render(text: &str, context: &AccessContext) -> Option<Rendered> {
    const FIELD: &str = "\"session\":\"";
    let answer = serde_json::to_string(context).ok()?;
    let session = context.session.to_string();
    let start = answer.find(FIELD)? + FIELD.len();
    let end = start + session.len();
    (answer.get(start..end)? == session).then(|| Rendered {
        text: text.into(),
        head: answer[..start].into(),
        tail: answer[end..].into(),
    })
}

/// The warm path: what the snapshot holds, the rest from auth_db or Core.
/// Also returns where it ended when that differs from the guess: the
/// guess of the next request.
#[allow(clippy::too_many_arguments)]
async fn warm(
    state: &AppState,
    context: &RequestContext,
    identity: Identity,
    org: &str,
    org_id: Option<Uuid>,
    expected: Option<Uuid>,
    snapshot: Snapshot,
    guess: Option<Guess>,
    epoch: String,
) -> Result<(Answer, Option<Guess>)> {
    let company = org_id.or_else(|| {
        snapshot
            .company
            .as_deref()
            .and_then(|c| Uuid::parse_str(c).ok())
    });
    // The snapshot's membership and entitlement version were read for the
    // expected company, its access context for the guessed one: they count
    // only if that is this one.
    let expected = expected.filter(|expected| company == Some(*expected));
    let guess = guess.filter(|g| company == Some(g.key.company));
    let cached_member = expected
        .and(snapshot.membership.as_deref())
        .and_then(Member::decode)
        .filter(|member| member.epoch == epoch);
    let cached_entitlement = expected
        .and(snapshot.entitlement.as_deref())
        .and_then(|v| v.parse::<i64>().ok());

    // The session: its entry names this user, and the user is active as of
    // the current epoch; else auth_db decides (and refreshes the entry).
    let session_cached = snapshot
        .session
        .as_deref()
        .and_then(|s| Uuid::parse_str(s).ok())
        == Some(identity.user)
        && cached_member.as_ref().is_some_and(|m| m.user_active);
    if !session_cached {
        state.metrics.event(event::SESSION_CACHE, "miss");
        sessions::ensure_live_in_db(state, identity).await?;
    }

    // Known as a company unless only the `x-org` id says so and no cached
    // membership of it vouches for it.
    let company = match company {
        Some(company) if org_id.is_none() || cached_member.is_some() => company,
        _ => resolve_company(state, org)
            .await?
            .ok_or_else(|| denied(state, identity, None, "unknown company"))?,
    };
    let (member, role) = match cached_member {
        Some(member) => (member, None),
        None => {
            let (member, role) = refresh_member(state, identity.user, company, &epoch)
                .await?
                .ok_or_else(|| denied(state, identity, Some(company), "no membership"))?;
            (member, Some(role))
        }
    };
    if !member.user_active {
        // auth_db said the session was live a moment ago; it is not now.
        return Err(sessions::refuse_revoked(state, identity));
    }
    if !member.company_active {
        return Err(denied(state, identity, Some(company), "company inactive"));
    }
    if !member.active {
        return Err(denied(
            state,
            identity,
            Some(company),
            "membership inactive",
        ));
    }
    let from_snapshot = session_cached && role.is_none() && cached_entitlement.is_some();
    let entitlement_version = match cached_entitlement {
        Some(version) => version,
        None => entitlement_version(state, context, company).await?,
    };
    let ended = AccessKey {
        company,
        membership: member.id,
        access_version: member.access_version,
        entitlement_version,
    };
    // The snapshot's access context is under the guessed key: the one the
    // current entries name only if the guess was right.
    let guess = guess.filter(|g| g.key == ended);
    let complete = guess.is_some() && from_snapshot;
    let text = match &guess {
        Some(_) => snapshot.access,
        None => state.cache.get(&ended.key()).await.ok().flatten(),
    };
    if let Some(text) = text {
        // Rendered before from exactly this value: nothing to parse.
        if let Some(rendered) = guess.as_ref().and_then(|g| g.rendered.as_ref())
            && *rendered.text == *text
        {
            cache_hit(state, complete);
            return Ok((Answer::rendered(rendered, identity.session), None));
        }
        if let Ok(cached) = serde_json::from_str::<Computed>(&text)
            && cached.user == identity.user
            && cached.company == company
            && cached.membership == member.id
        {
            cache_hit(state, complete);
            let context = cached.for_session(identity.session);
            let answer = Answer::of(&context)?;
            let rendered = render(&text, &context).map(Arc::new);
            let ended = Guess {
                key: ended,
                rendered,
            };
            return Ok((answer, Some(ended)));
        }
    }
    state.metrics.event(event::ACCESS_CACHE, "miss");
    state.metrics.event(event::ACCESS_SNAPSHOT, "partial");
    // Computed from auth_db as it is now: a membership entry read from
    // Redis may lag a write made with SQL alone.
    let (member, role) = match role {
        Some(role) => (member, role),
        None => refresh_member(state, identity.user, company, &epoch)
            .await?
            .ok_or_else(|| denied(state, identity, Some(company), "no membership"))?,
    };
    if !member.user_active {
        return Err(sessions::refuse_revoked(state, identity));
    }
    if !member.company_active || !member.active {
        return Err(denied(state, identity, Some(company), "access changed"));
    }
    let membership = Membership {
        id: member.id,
        role,
        active: member.active,
        company_active: member.company_active,
        access_version: member.access_version,
    };
    let computed = compute(state, context, identity.user, company, &membership).await?;
    let stored = store(state, &computed, entitlement_version).await;
    let ended = AccessKey {
        company,
        membership: computed.membership,
        access_version: computed.access_version,
        entitlement_version: computed.entitlement_version,
    };
    let context = computed.for_session(identity.session);
    let answer = Answer::of(&context)?;
    let rendered = stored
        .and_then(|text| render(&text, &context))
        .map(Arc::new);
    Ok((
        answer,
        Some(Guess {
            key: ended,
            rendered,
        }),
    ))
}

fn cache_hit(state: &AppState, complete: bool) {
    if complete {
        state.metrics.warm_hit();
    } else {
        state.metrics.event(event::ACCESS_CACHE, "hit");
        state.metrics.event(event::ACCESS_SNAPSHOT, "partial");
    }
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
/// with delegations expires with the first of them. Returns the value
/// written, if Redis took it.
async fn store(state: &AppState, computed: &Computed, looked_up_version: i64) -> Option<String> {
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
    let text = serde_json::to_string(computed).ok();
    let written = match &text {
        Some(text) => state.cache.set(&key, text, ttl).await.is_ok(),
        None => false,
    };
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
    text.filter(|_| written)
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
    sessions::bump_epoch(state).await;
    // Again after the bump: a request that read Core's old version before
    // the first delete may have written it back since.
    let _ = state.cache.delete(&entitlement_version_key(company)).await;
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
    sessions::bump_epoch(state).await;
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
    fn a_membership_entry_round_trips_and_garbage_is_refused() {
        let member = Member {
            epoch: "1700000000000000".into(),
            id: Uuid::new_v4(),
            access_version: 12,
            active: true,
            company_active: false,
            user_active: true,
        };
        let text = member.encode();
        assert!(text.ends_with(":12:101"), "{text}");
        assert_eq!(Member::decode(&text), Some(member));
        for junk in [
            "",
            "1:2:3:4",
            "1:not-a-uuid:3:111",
            &format!("1:{}:x:111", Uuid::nil()),
        ] {
            assert_eq!(Member::decode(junk), None, "{junk}");
        }
        let nil = Uuid::nil();
        for junk in [
            format!("1:{nil}:3:11"),
            format!("1:{nil}:3:112"),
            format!("1:{nil}:3:111:x"),
        ] {
            assert_eq!(Member::decode(&junk), None, "{junk}");
        }
    }

    #[test]
    fn a_rendered_answer_is_the_serialized_context_with_any_session() {
        let context = AccessContext {
            user: Uuid::new_v4(),
            session: Uuid::new_v4(),
            company: Uuid::new_v4(),
            membership: Uuid::new_v4(),
            core_app: true,
            modules: BTreeMap::from([(
                "finance".to_string(),
                vec!["finance.invoices.read".to_string()],
            )]),
            access_version: 4,
            entitlement_version: 9,
        };
        let rendered = render("the redis value", &context).unwrap();
        assert_eq!(&*rendered.text, "the redis value");
        let other = AccessContext {
            session: Uuid::new_v4(),
            ..context.clone()
        };
        let answer = Answer::rendered(&rendered, other.session);
        assert_eq!(answer.bytes(), serde_json::to_vec(&other).unwrap());
        assert_eq!(
            Answer::rendered(&rendered, context.session).bytes(),
            Answer::of(&context).unwrap().bytes()
        );
    }

    #[test]
    fn the_cache_key_carries_both_versions() {
        let id = Uuid::nil();
        assert_eq!(access_key(id, id, 3, 9), format!("access:{id}:{id}:3:9"));
    }
}
