//! The directory writes Platform Admin makes through Auth's internal port
//! (Auth owns auth_db): companies, memberships, their module and
//! permission grants, and roles. Only platform-admin and kisumctl may call
//! them (`routes::administrators_only`).
//!
//! Every write answers `{before, after}` (null where the thing did not or
//! no longer exists) and is recorded in auth_db's audit trail with the
//! caller and the `x-kisum-actor` it names. auth_db's triggers bump the
//! access versions concerned, so `/auth/me/access` shows a change at once.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use kisum_common::internal::Caller;
use kisum_common::modules::{MODULE_NAMES, is_module, known_permission};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit::{self, Entry};
use crate::directory::normalize_email;
use crate::error::{AuthError, Result};
use crate::routes::Body;
use crate::state::AppState;

/// Who asked for a change, for the audit trail.
pub const ACTOR_HEADER: &str = "x-kisum-actor";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/internal/companies/{company}",
            get(get_company).put(put_company),
        )
        .route(
            "/internal/companies/{company}/memberships",
            get(list_memberships).post(add_membership),
        )
        .route(
            "/internal/memberships/{membership}/status",
            put(set_membership_status),
        )
        .route(
            "/internal/memberships/{membership}/grants/{module}",
            put(module_grant).delete(module_grant),
        )
        .route(
            "/internal/memberships/{membership}/grants/{module}/{permission}",
            put(permission_grant).delete(permission_grant),
        )
        .route("/internal/roles", get(list_roles))
        .route("/internal/roles/{role}", put(put_role))
}

/// The routes above with what they need, for `/internal/diagnostics`.
pub const ROUTES: [&str; 11] = [
    "GET /internal/companies/{company}",
    "PUT /internal/companies/{company}",
    "GET /internal/companies/{company}/memberships",
    "POST /internal/companies/{company}/memberships",
    "PUT /internal/memberships/{membership}/status",
    "PUT /internal/memberships/{membership}/grants/{module}",
    "DELETE /internal/memberships/{membership}/grants/{module}",
    "PUT /internal/memberships/{membership}/grants/{module}/{permission}",
    "DELETE /internal/memberships/{membership}/grants/{module}/{permission}",
    "GET /internal/roles",
    "PUT /internal/roles/{role}",
];

fn change(before: Option<impl Serialize>, after: Option<impl Serialize>) -> Json<Value> {
    Json(json!({ "before": before, "after": after }))
}

fn parse_id(what: &str, raw: &str) -> Result<Uuid> {
    match Uuid::parse_str(raw) {
        Ok(id) if !id.is_nil() => Ok(id),
        Ok(_) => Err(AuthError::BadRequest(format!(
            "{what} id must not be the nil UUID"
        ))),
        Err(_) => Err(AuthError::BadRequest(format!(
            "{what} `{raw}` is not a UUID"
        ))),
    }
}

/// A module the platform has (`kisum_common::modules`).
fn known_module(module: &str) -> Result<()> {
    if is_module(module) {
        Ok(())
    } else {
        Err(AuthError::BadRequest(
            kisum_common::modules::unknown_module(module, &MODULE_NAMES),
        ))
    }
}

/// A key that names a module, role or permission: lower-case letters,
/// digits, `-`, `_` and (permissions) `.`.
fn valid_key(what: &str, key: &str, dots: bool) -> Result<()> {
    let allowed = |c: char| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || (dots && c == '.')
    };
    if !key.is_empty() && key.len() <= 100 && key.chars().all(allowed) {
        Ok(())
    } else {
        Err(AuthError::BadRequest(format!(
            "{what} `{key}` is not a valid key"
        )))
    }
}

/// Writes the audit row of a change in the same transaction.
async fn audited(
    tx: &mut PgConnection,
    caller: &Caller,
    headers: &HeaderMap,
    action: &'static str,
    company: Option<Uuid>,
    detail: Value,
) -> Result<()> {
    let actor = headers
        .get(ACTOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let mut entry = Entry::new(action).detail(json!({
        "caller": caller.0, "actor": actor, "change": detail,
    }));
    entry.company = company;
    audit::record(&mut *tx, entry).await?;
    tracing::info!(action, caller = %caller.0, actor, company_id = ?company, "directory changed");
    Ok(())
}

// ------------------------------------------------------------ companies --

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct CompanyView {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub status: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompanyRequest {
    slug: String,
    name: String,
}

async fn company(db: &mut PgConnection, id: Uuid) -> Result<Option<CompanyView>> {
    Ok(
        sqlx::query_as("select id, slug, name, status from companies where id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

/// `GET /internal/companies/{company}`: the company as Auth knows it; 404
/// when no company has that id (Admin asks before it changes a company's
/// entitlements in Core, which keeps no list of companies).
async fn get_company(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>> {
    let id = parse_id("company", &id)?;
    let mut db = state.db.acquire().await?;
    let found = company(&mut db, id)
        .await?
        .ok_or_else(|| AuthError::NotFound(format!("no company {id}")))?;
    Ok(Json(json!(found)))
}

/// `PUT /internal/companies/{company}`: registers the company under the id
/// Platform Core uses, or renames it.
async fn put_company(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(request): Body<CompanyRequest>,
) -> Result<(StatusCode, Json<Value>)> {
    let id = parse_id("company", &id)?;
    let slug = request.slug.trim().to_ascii_lowercase();
    valid_key("slug", &slug, false)?;
    if slug.len() > 63 || request.name.len() > 200 {
        return Err(AuthError::BadRequest("slug or name too long".into()));
    }
    if request.name.trim().is_empty() {
        return Err(AuthError::BadRequest(
            "the company name must not be empty".into(),
        ));
    }
    // `x-org` reads a value that parses as an id as an id: such a slug
    // could never be used.
    if Uuid::parse_str(&slug).is_ok() {
        return Err(AuthError::BadRequest(format!(
            "slug `{slug}` reads as a company id; choose another"
        )));
    }
    let mut tx = state.db.begin().await?;
    let before = company(&mut tx, id).await?;
    let taken: Option<Uuid> =
        sqlx::query_scalar("select id from companies where slug = $1 and id <> $2")
            .bind(&slug)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    if taken.is_some() {
        return Err(AuthError::Conflict(format!("the slug `{slug}` is taken")));
    }
    sqlx::query(
        "insert into companies (id, slug, name) values ($1, $2, $3)
         on conflict (id) do update set slug = excluded.slug, name = excluded.name",
    )
    .bind(id)
    .bind(&slug)
    .bind(request.name.trim())
    .execute(&mut *tx)
    .await?;
    let after = company(&mut tx, id).await?;
    let detail = json!({ "before": before, "after": after });
    audited(&mut tx, &caller, &headers, "company.put", Some(id), detail).await?;
    tx.commit().await?;
    state.cache.directory_changed().await;
    // `x-org` resolution is cached by slug: forget the old and new names.
    for slug in before
        .iter()
        .map(|c| c.slug.as_str())
        .chain([slug.as_str()])
    {
        let _ = state.cache.delete(&format!("company-map:{slug}")).await;
    }
    let status = if before.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, change(before, after)))
}

// ---------------------------------------------------------- memberships --

/// A membership as the admin API shows it: `grants` maps each granted
/// module to the permissions granted to the membership beyond its role's.
#[derive(Debug, Clone, Serialize)]
pub struct MembershipView {
    pub membership: Uuid,
    pub user: Uuid,
    pub email: String,
    pub company: Uuid,
    pub role: String,
    pub status: String,
    pub grants: BTreeMap<String, Vec<String>>,
}

async fn membership(db: &mut PgConnection, id: Uuid) -> Result<Option<MembershipView>> {
    let row: Option<(Uuid, Uuid, String, Uuid, String, String)> = sqlx::query_as(
        "select m.id, m.user_id, u.email, m.company_id, m.role, m.status
           from memberships m join users u on u.id = m.user_id where m.id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *db)
    .await?;
    let Some((membership, user, email, company, role, status)) = row else {
        return Ok(None);
    };
    let grants: Vec<(String, Option<String>)> = sqlx::query_as(
        "select g.module, mp.permission
           from module_grants g
           left join membership_permissions mp
                  on mp.membership_id = g.membership_id and mp.module = g.module
          where g.membership_id = $1
          order by g.module, mp.permission",
    )
    .bind(id)
    .fetch_all(&mut *db)
    .await?;
    let mut modules: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (module, permission) in grants {
        let entry = modules.entry(module).or_default();
        entry.extend(permission);
    }
    Ok(Some(MembershipView {
        membership,
        user,
        email,
        company,
        role,
        status,
        grants: modules,
    }))
}

/// The membership, or 404.
async fn existing(db: &mut PgConnection, id: Uuid) -> Result<MembershipView> {
    membership(db, id)
        .await?
        .ok_or_else(|| AuthError::NotFound(format!("no membership {id}")))
}

async fn list_memberships(
    State(state): State<AppState>,
    Path(company): Path<String>,
) -> Result<Json<Value>> {
    let company = parse_id("company", &company)?;
    let mut db = state.db.acquire().await?;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "select m.id from memberships m join users u on u.id = m.user_id
          where m.company_id = $1 order by u.email",
    )
    .bind(company)
    .fetch_all(&mut *db)
    .await?;
    let mut memberships = Vec::with_capacity(ids.len());
    for id in ids {
        memberships.extend(membership(&mut db, id).await?);
    }
    // Whether Auth knows the company at all: no memberships of an unknown
    // company is not the same answer as none of a known one.
    let known: bool = sqlx::query_scalar("select exists(select 1 from companies where id = $1)")
        .bind(company)
        .fetch_one(&mut *db)
        .await?;
    Ok(Json(
        json!({ "company": company, "known": known, "memberships": memberships }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MembershipRequest {
    /// The user, by id or by email (one of the two).
    user: Option<Uuid>,
    email: Option<String>,
    role: String,
}

/// `POST /internal/companies/{company}/memberships`: adds the user to the
/// company with the role, or changes the role of an existing membership.
async fn add_membership(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(company): Path<String>,
    headers: HeaderMap,
    Body(request): Body<MembershipRequest>,
) -> Result<(StatusCode, Json<Value>)> {
    let company = parse_id("company", &company)?;
    let mut tx = state.db.begin().await?;
    let user: Option<Uuid> = match (request.user, request.email.as_deref()) {
        (Some(user), None) => {
            sqlx::query_scalar("select id from users where id = $1")
                .bind(user)
                .fetch_optional(&mut *tx)
                .await?
        }
        (None, Some(email)) => {
            sqlx::query_scalar("select id from users where email = $1")
                .bind(normalize_email(email))
                .fetch_optional(&mut *tx)
                .await?
        }
        _ => {
            return Err(AuthError::BadRequest(
                "name exactly one of `user` or `email`".into(),
            ));
        }
    };
    let user = user.ok_or_else(|| AuthError::NotFound("no such user".into()))?;
    if company_of(&mut tx, company).await?.is_none() {
        return Err(AuthError::NotFound(format!(
            "no company {company} in Auth's directory"
        )));
    }
    require_role(&mut tx, &request.role).await?;
    let id: Option<Uuid> =
        sqlx::query_scalar("select id from memberships where user_id = $1 and company_id = $2")
            .bind(user)
            .bind(company)
            .fetch_optional(&mut *tx)
            .await?;
    let before = match id {
        Some(id) => membership(&mut tx, id).await?,
        None => None,
    };
    let id: Uuid = sqlx::query_scalar(
        "insert into memberships (id, user_id, company_id, role) values ($1, $2, $3, $4)
         on conflict (user_id, company_id) do update set role = excluded.role
         returning id",
    )
    .bind(Uuid::new_v4())
    .bind(user)
    .bind(company)
    .bind(&request.role)
    .fetch_one(&mut *tx)
    .await?;
    let after = membership(&mut tx, id).await?;
    let detail = json!({ "before": before, "after": after });
    audited(
        &mut tx,
        &caller,
        &headers,
        "membership.put",
        Some(company),
        detail,
    )
    .await?;
    tx.commit().await?;
    state.cache.directory_changed().await;
    let status = if before.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, change(before, after)))
}

async fn company_of(db: &mut PgConnection, company: Uuid) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar("select id from companies where id = $1")
        .bind(company)
        .fetch_optional(db)
        .await?)
}

async fn require_role(db: &mut PgConnection, role: &str) -> Result<()> {
    let known: Option<String> = sqlx::query_scalar("select key from roles where key = $1")
        .bind(role)
        .fetch_optional(db)
        .await?;
    known
        .map(drop)
        .ok_or_else(|| AuthError::BadRequest(format!("unknown role `{role}`")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusRequest {
    active: bool,
}

/// `PUT /internal/memberships/{membership}/status`: `{active: false}`
/// suspends the membership (no access in that company), `true` restores it.
async fn set_membership_status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(request): Body<StatusRequest>,
) -> Result<Json<Value>> {
    let id = parse_id("membership", &id)?;
    let status = if request.active {
        "active"
    } else {
        "suspended"
    };
    membership_write(&state, &caller, &headers, id, "membership.status", |tx| {
        Box::pin(async move {
            sqlx::query("update memberships set status = $2 where id = $1 and status <> $2")
                .bind(id)
                .bind(status)
                .execute(tx)
                .await
                .map(drop)
        })
    })
    .await
}

/// Reads the membership (404 when unknown), applies `write`, reads it
/// again and audits the change.
async fn membership_write<W>(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    id: Uuid,
    action: &'static str,
    write: W,
) -> Result<Json<Value>>
where
    W: for<'c> FnOnce(
        &'c mut PgConnection,
    ) -> std::pin::Pin<Box<dyn Future<Output = sqlx::Result<()>> + Send + 'c>>,
{
    let mut tx = state.db.begin().await?;
    let before = existing(&mut tx, id).await?;
    write(&mut tx).await?;
    let after = existing(&mut tx, id).await?;
    let detail = json!({ "before": before, "after": after });
    audited(
        &mut tx,
        caller,
        headers,
        action,
        Some(before.company),
        detail,
    )
    .await?;
    tx.commit().await?;
    state.cache.directory_changed().await;
    Ok(change(Some(before), Some(after)))
}

/// `PUT` grants, `DELETE` revokes, a module for the membership (revoking
/// it drops every permission granted in it).
async fn module_grant(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    method: Method,
    Path((id, module)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    let grant = Grant::new(&id, module, None, method == Method::PUT)?;
    grant.write(&state, &caller, &headers).await
}

/// `PUT` grants (with its module, when not yet granted), `DELETE` revokes,
/// one permission beyond the membership's role.
async fn permission_grant(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    method: Method,
    Path((id, module, permission)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    let grant = Grant::new(&id, module, Some(permission), method == Method::PUT)?;
    if let (true, Some(permission)) = (grant.given, &grant.permission) {
        require_permission(&grant.module, permission)?;
    }
    grant.write(&state, &caller, &headers).await
}

/// One grant route's change: a module, or one permission of it; given or
/// taken away.
struct Grant {
    membership: Uuid,
    module: String,
    permission: Option<String>,
    given: bool,
}

impl Grant {
    fn new(
        membership: &str,
        module: String,
        permission: Option<String>,
        given: bool,
    ) -> Result<Grant> {
        let membership = parse_id("membership", membership)?;
        known_module(&module)?;
        if let Some(permission) = &permission {
            valid_key("permission", permission, true)?;
        }
        Ok(Grant {
            membership,
            module,
            permission,
            given,
        })
    }

    fn action(&self) -> &'static str {
        match (self.permission.is_some(), self.given) {
            (false, true) => "grant.module.put",
            (false, false) => "grant.module.delete",
            (true, true) => "grant.permission.put",
            (true, false) => "grant.permission.delete",
        }
    }

    async fn write(
        self,
        state: &AppState,
        caller: &Caller,
        headers: &HeaderMap,
    ) -> Result<Json<Value>> {
        let (id, action) = (self.membership, self.action());
        membership_write(state, caller, headers, id, action, move |tx| {
            Box::pin(async move { self.apply(tx).await })
        })
        .await
    }

    async fn apply(self, tx: &mut PgConnection) -> sqlx::Result<()> {
        let Grant {
            membership,
            module,
            permission,
            given,
        } = self;
        match (given, &permission) {
            (false, None) => {
                return sqlx::query(
                    "delete from module_grants where membership_id = $1 and module = $2",
                )
                .bind(membership)
                .bind(&module)
                .execute(&mut *tx)
                .await
                .map(drop);
            }
            (false, Some(permission)) => {
                return sqlx::query(
                    "delete from membership_permissions
                      where membership_id = $1 and module = $2 and permission = $3",
                )
                .bind(membership)
                .bind(&module)
                .bind(permission)
                .execute(&mut *tx)
                .await
                .map(drop);
            }
            (true, _) => {}
        }
        sqlx::query(
            "insert into module_grants (membership_id, module) values ($1, $2)
             on conflict do nothing",
        )
        .bind(membership)
        .bind(&module)
        .execute(&mut *tx)
        .await?;
        if let Some(permission) = permission {
            // A catalog key no role holds yet has no row to refer to.
            sqlx::query(
                "insert into permissions (key, module) values ($1, $2) on conflict do nothing",
            )
            .bind(&permission)
            .bind(&module)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "insert into membership_permissions (membership_id, module, permission)
                 values ($1, $2, $3) on conflict do nothing",
            )
            .bind(membership)
            .bind(&module)
            .bind(&permission)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}

/// The permission is in the catalog (`kisum_common::modules::CATALOG`)
/// and belongs to the module (400 otherwise).
fn require_permission(module: &str, permission: &str) -> Result<()> {
    match known_permission(permission) {
        Ok(owner) if owner == module => Ok(()),
        Ok(owner) => Err(AuthError::BadRequest(format!(
            "permission `{permission}` belongs to module `{owner}`, not `{module}`"
        ))),
        Err(error) => Err(AuthError::BadRequest(error.to_string())),
    }
}

// ---------------------------------------------------------------- roles --

async fn roles(db: &mut PgConnection, only: Option<&str>) -> Result<BTreeMap<String, Vec<String>>> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "select r.key, rp.permission
           from roles r left join role_permissions rp on rp.role = r.key
          where $1::text is null or r.key = $1
          order by r.key, rp.permission",
    )
    .bind(only)
    .fetch_all(db)
    .await?;
    let mut roles: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (role, permission) in rows {
        roles.entry(role).or_default().extend(permission);
    }
    Ok(roles)
}

async fn list_roles(State(state): State<AppState>) -> Result<Json<Value>> {
    let roles = roles(&mut *state.db.acquire().await?, None).await?;
    Ok(Json(json!({ "roles": roles })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleRequest {
    permissions: Vec<String>,
}

/// `PUT /internal/roles/{role}`: the role holds exactly these permissions,
/// each a key of the catalog (`kisum_common::modules::CATALOG`); any other
/// key is a 400 naming it. Every company using
/// the role sees the change at once.
async fn put_role(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(role): Path<String>,
    headers: HeaderMap,
    Body(request): Body<RoleRequest>,
) -> Result<Json<Value>> {
    valid_key("role", &role, false)?;
    for permission in &request.permissions {
        valid_key("permission", permission, true)?;
        known_permission(permission).map_err(|error| AuthError::BadRequest(error.to_string()))?;
    }
    let mut tx = state.db.begin().await?;
    let before = roles(&mut tx, Some(&role)).await?.remove(&role);
    sqlx::query("insert into roles (key) values ($1) on conflict do nothing")
        .bind(&role)
        .execute(&mut *tx)
        .await?;
    sqlx::query("delete from role_permissions where role = $1 and not (permission = any($2))")
        .bind(&role)
        .bind(&request.permissions)
        .execute(&mut *tx)
        .await?;
    for permission in &request.permissions {
        let module = permission.split('.').next().unwrap_or_default();
        sqlx::query("insert into permissions (key, module) values ($1, $2) on conflict do nothing")
            .bind(permission)
            .bind(module)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "insert into role_permissions (role, permission) values ($1, $2) on conflict do nothing",
        )
        .bind(&role)
        .bind(permission)
        .execute(&mut *tx)
        .await?;
    }
    let after = roles(&mut tx, Some(&role)).await?.remove(&role);
    let detail = json!({ "role": role, "before": before, "after": after });
    audited(&mut tx, &caller, &headers, "role.put", None, detail).await?;
    tx.commit().await?;
    state.cache.directory_changed().await;
    Ok(change(before, after))
}
