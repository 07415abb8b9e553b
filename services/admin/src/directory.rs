//! Companies, memberships, module and permission grants and roles in
//! Auth's directory (Auth owns auth_db: every change goes through its
//! internal directory routes). Auth answers each write with `{before,
//! after}`; Admin audits both, then passes the answer on. auth_db's
//! triggers bump the access versions concerned, so the change shows in
//! `/auth/me/access` at once; no invalidation is needed.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::audit::{self, Outcome};
use crate::error::AdminError;
use crate::rbac::{Permission, Principal};
use crate::state::AppState;

fn parse_id(what: &str, id: &str) -> Result<Uuid, AdminError> {
    Uuid::parse_str(id)
        .map_err(|_| AdminError::InvalidRequest(format!("{what} `{id}` is not a UUID")))
}

/// A module, permission or role key: it goes into Auth's URL path.
fn key(what: &str, key: &str) -> Result<String, AdminError> {
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b);
    if !key.is_empty() && key.len() <= 100 && key.bytes().all(allowed) {
        Ok(key.to_string())
    } else {
        Err(AdminError::InvalidRequest(format!(
            "{what} `{key}`: use lower-case letters, digits, '-', '_' and '.'"
        )))
    }
}

/// Makes the change in Auth, audits `{before, after}` under `target`.
async fn change(
    state: &AppState,
    principal: &Principal,
    action: &str,
    target: impl FnOnce(&Value) -> String,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Json<Value>, AdminError> {
    let answer = state
        .auth
        .directory(
            &principal.context,
            &principal.user,
            method,
            path,
            body.as_ref(),
        )
        .await?;
    let entry = audit::Entry {
        actor: &principal.user,
        action,
        target: target(&answer),
        outcome: Outcome::Ok,
        before: Some(answer["before"].clone()),
        after: Some(answer["after"].clone()),
        request_id: &principal.context.request_id,
    };
    if let Err(error) = audit::write(&state.pool, &entry).await {
        // Auth made the change: keep its record in the log at least.
        tracing::error!(
            event = "audit_write_failed",
            action,
            target = %entry.target,
            user_id = %principal.user,
            before = %answer["before"],
            after = %answer["after"],
            "the change was made in Auth but its audit row could not be written"
        );
        return Err(error);
    }
    state.metrics.event("directory_change", action);
    tracing::info!(
        event = "directory_change",
        action,
        target = %entry.target,
        user_id = %principal.user,
        "directory changed in Auth"
    );
    Ok(Json(answer))
}

/// `created` when Auth's answer has no `before`.
fn created_or_ok(answer: &Value) -> StatusCode {
    if answer["before"].is_null() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

fn membership_target(answer: &Value) -> String {
    let after = &answer["after"];
    let of = if after.is_null() {
        &answer["before"]
    } else {
        after
    };
    format!("membership:{}", of["membership"].as_str().unwrap_or("?"))
}

/// `PUT /admin/companies/{company}`
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompanyRequest {
    pub slug: String,
    pub name: String,
}

pub async fn put_company(
    State(state): State<AppState>,
    principal: Principal,
    Path(company): Path<String>,
    body: Result<Json<CompanyRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), AdminError> {
    let principal = principal.require(Permission::Write)?;
    let company = parse_id("company", &company)?;
    let Json(request) = body?;
    let body = serde_json::to_value(&request).unwrap_or_default();
    let path = format!("/internal/companies/{company}");
    let target = |_: &Value| format!("company:{company}");
    let Json(answer) = change(
        &state,
        principal,
        "company.put",
        target,
        Method::PUT,
        &path,
        Some(body),
    )
    .await?;
    Ok((created_or_ok(&answer), Json(answer)))
}

pub async fn list_memberships(
    State(state): State<AppState>,
    principal: Principal,
    Path(company): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let principal = principal.require(Permission::Read)?;
    let company = parse_id("company", &company)?;
    let path = format!("/internal/companies/{company}/memberships");
    let answer = state
        .auth
        .directory_read(&principal.context, &principal.user, &path)
        .await?;
    Ok(Json(answer))
}

/// `POST /admin/companies/{company}/memberships`: `{email | user, role}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub role: String,
}

pub async fn add_membership(
    State(state): State<AppState>,
    principal: Principal,
    Path(company): Path<String>,
    body: Result<Json<MembershipRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), AdminError> {
    let principal = principal.require(Permission::Write)?;
    let company = parse_id("company", &company)?;
    let Json(request) = body?;
    let body = serde_json::to_value(&request).unwrap_or_default();
    let path = format!("/internal/companies/{company}/memberships");
    let Json(answer) = change(
        &state,
        principal,
        "membership.put",
        membership_target,
        Method::POST,
        &path,
        Some(body),
    )
    .await?;
    Ok((created_or_ok(&answer), Json(answer)))
}

/// `PUT /admin/memberships/{membership}/status`: `{active}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    pub active: bool,
}

pub async fn set_membership_status(
    State(state): State<AppState>,
    principal: Principal,
    Path(membership): Path<String>,
    body: Result<Json<StatusRequest>, JsonRejection>,
) -> Result<Json<Value>, AdminError> {
    let principal = principal.require(Permission::Write)?;
    let membership = parse_id("membership", &membership)?;
    let Json(request) = body?;
    let body = serde_json::to_value(&request).unwrap_or_default();
    let path = format!("/internal/memberships/{membership}/status");
    let target = |_: &Value| format!("membership:{membership}");
    change(
        &state,
        principal,
        "membership.status",
        target,
        Method::PUT,
        &path,
        Some(body),
    )
    .await
}

/// `PUT` grants, `DELETE` revokes, the module for the membership.
pub async fn module_grant(
    State(state): State<AppState>,
    principal: Principal,
    method: Method,
    Path((membership, module)): Path<(String, String)>,
) -> Result<Json<Value>, AdminError> {
    grant(&state, principal, method, &membership, &module, None).await
}

/// `PUT` grants, `DELETE` revokes, one `MODULE:PERMISSION` for the
/// membership beyond its role's (granting it grants the module too).
pub async fn permission_grant(
    State(state): State<AppState>,
    principal: Principal,
    method: Method,
    Path((membership, module, permission)): Path<(String, String, String)>,
) -> Result<Json<Value>, AdminError> {
    grant(
        &state,
        principal,
        method,
        &membership,
        &module,
        Some(&permission),
    )
    .await
}

/// A module or permission grant, passed on to Auth.
async fn grant(
    state: &AppState,
    principal: Principal,
    method: Method,
    membership: &str,
    module: &str,
    permission: Option<&str>,
) -> Result<Json<Value>, AdminError> {
    let principal = principal.require(Permission::Write)?;
    let membership = parse_id("membership", membership)?;
    let module = key("module", module)?;
    let mut path = format!("/internal/memberships/{membership}/grants/{module}");
    if let Some(permission) = permission {
        path = format!("{path}/{}", key("permission", permission)?);
    }
    let action = match (permission.is_some(), method == Method::DELETE) {
        (false, false) => "grant.module.put",
        (false, true) => "grant.module.delete",
        (true, false) => "grant.permission.put",
        (true, true) => "grant.permission.delete",
    };
    let target = |_: &Value| format!("membership:{membership}");
    change(state, principal, action, target, method, &path, None).await
}

pub async fn list_roles(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, AdminError> {
    let principal = principal.require(Permission::Read)?;
    let answer = state
        .auth
        .directory(
            &principal.context,
            &principal.user,
            Method::GET,
            "/internal/roles",
            None,
        )
        .await?;
    Ok(Json(answer))
}

/// `PUT /admin/roles/{role}`: `{permissions: [..]}`, exactly.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    pub permissions: Vec<String>,
}

pub async fn put_role(
    State(state): State<AppState>,
    principal: Principal,
    Path(role): Path<String>,
    body: Result<Json<RoleRequest>, JsonRejection>,
) -> Result<Json<Value>, AdminError> {
    let principal = principal.require(Permission::Write)?;
    let role = key("role", &role)?;
    let Json(request) = body?;
    let body = serde_json::to_value(&request).unwrap_or_default();
    let path = format!("/internal/roles/{role}");
    let target = |_: &Value| format!("role:{role}");
    change(
        &state,
        principal,
        "role.put",
        target,
        Method::PUT,
        &path,
        Some(body),
    )
    .await
}
