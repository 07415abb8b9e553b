//! The admin API on the public port. Every route needs a Bearer JWT and a
//! platform role: `support` for reads, `platform-admin` for changes.

use std::collections::BTreeMap;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::changes::{self, AddOnDefinition, AddOnRequest, PackageRequest, SubscriptionRequest};
use crate::clients::{CatalogChange, EntitlementChange};
use crate::error::AdminError;
use crate::organizations::{self, Actor, Decision, Organization, Status};
use crate::rbac::{PLATFORM_ADMIN, Permission, Principal, SUPPORT};
use crate::state::AppState;
use crate::{audit, directory};

const AUDIT_DEFAULT_LIMIT: i64 = 100;
const AUDIT_MAX_LIMIT: i64 = 1000;

/// (method, path, permission), for diagnostics and the tests.
pub const ROUTES: &[(&str, &str, Permission)] = &[
    ("GET", "/admin/catalog", Permission::Read),
    ("POST", "/admin/catalog/packages", Permission::Write),
    ("POST", "/admin/catalog/add-ons", Permission::Write),
    (
        "GET",
        "/admin/companies/{company}/entitlements",
        Permission::Read,
    ),
    (
        "PUT",
        "/admin/companies/{company}/subscription",
        Permission::Write,
    ),
    (
        "PUT",
        "/admin/companies/{company}/add-ons/{add_on}",
        Permission::Write,
    ),
    ("GET", "/admin/organizations", Permission::Read),
    ("POST", "/admin/organizations", Permission::Write),
    (
        "POST",
        "/admin/organizations/{id}/approve",
        Permission::Write,
    ),
    (
        "POST",
        "/admin/organizations/{id}/reject",
        Permission::Write,
    ),
    ("GET", "/admin/audit", Permission::Read),
    ("PUT", "/admin/companies/{company}", Permission::Write),
    (
        "GET",
        "/admin/companies/{company}/memberships",
        Permission::Read,
    ),
    (
        "POST",
        "/admin/companies/{company}/memberships",
        Permission::Write,
    ),
    (
        "PUT",
        "/admin/memberships/{membership}/status",
        Permission::Write,
    ),
    (
        "PUT",
        "/admin/memberships/{membership}/grants/{module}",
        Permission::Write,
    ),
    (
        "DELETE",
        "/admin/memberships/{membership}/grants/{module}",
        Permission::Write,
    ),
    (
        "PUT",
        "/admin/memberships/{membership}/grants/{module}/{permission}",
        Permission::Write,
    ),
    (
        "DELETE",
        "/admin/memberships/{membership}/grants/{module}/{permission}",
        Permission::Write,
    ),
    ("GET", "/admin/roles", Permission::Read),
    ("PUT", "/admin/roles/{role}", Permission::Write),
];

/// The diagnostics view of [`ROUTES`]: route -> the platform role it needs.
pub fn route_permissions() -> BTreeMap<String, String> {
    ROUTES
        .iter()
        .map(|(method, path, permission)| {
            let role = match permission {
                Permission::Read => format!("{SUPPORT} or {PLATFORM_ADMIN}"),
                Permission::Write => PLATFORM_ADMIN.to_string(),
            };
            (format!("{method} {path}"), role)
        })
        .collect()
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/admin/catalog", get(get_catalog))
        .route("/admin/catalog/packages", post(post_package))
        .route("/admin/catalog/add-ons", post(post_add_on))
        .route(
            "/admin/companies/{company}/entitlements",
            get(get_entitlements),
        )
        .route(
            "/admin/companies/{company}/subscription",
            put(put_subscription),
        )
        .route(
            "/admin/companies/{company}/add-ons/{add_on}",
            put(put_add_on),
        )
        .route(
            "/admin/organizations",
            get(list_organizations).post(create_organization),
        )
        .route(
            "/admin/organizations/{id}/approve",
            post(approve_organization),
        )
        .route(
            "/admin/organizations/{id}/reject",
            post(reject_organization),
        )
        .route("/admin/audit", get(get_audit))
        .route("/admin/companies/{company}", put(directory::put_company))
        .route(
            "/admin/companies/{company}/memberships",
            get(directory::list_memberships).post(directory::add_membership),
        )
        .route(
            "/admin/memberships/{membership}/status",
            put(directory::set_membership_status),
        )
        .route(
            "/admin/memberships/{membership}/grants/{module}",
            put(directory::module_grant).delete(directory::module_grant),
        )
        .route(
            "/admin/memberships/{membership}/grants/{module}/{permission}",
            put(directory::permission_grant).delete(directory::permission_grant),
        )
        .route("/admin/roles", get(directory::list_roles))
        .route("/admin/roles/{role}", put(directory::put_role))
        .with_state(state)
}

fn parse_id(what: &str, id: &str) -> Result<Uuid, AdminError> {
    Uuid::parse_str(id)
        .map_err(|_| AdminError::InvalidRequest(format!("{what} `{id}` is not a UUID")))
}

async fn get_catalog(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, AdminError> {
    let principal = principal.require(Permission::Read)?;
    Ok(Json(state.core.catalog(&principal.context).await?))
}

async fn get_entitlements(
    State(state): State<AppState>,
    principal: Principal,
    Path(company): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let principal = principal.require(Permission::Read)?;
    let company = parse_id("company", &company)?;
    crate::changes::require_company(&state, principal, company).await?;
    Ok(Json(
        state.core.entitlements(&principal.context, company).await?,
    ))
}

async fn put_subscription(
    State(state): State<AppState>,
    principal: Principal,
    Path(company): Path<String>,
    body: Result<Json<SubscriptionRequest>, JsonRejection>,
) -> Result<Json<EntitlementChange>, AdminError> {
    let principal = principal.require(Permission::Write)?;
    let company = parse_id("company", &company)?;
    let Json(request) = body?;
    let change = changes::set_subscription(&state, principal, company, &request).await?;
    Ok(Json(change))
}

async fn put_add_on(
    State(state): State<AppState>,
    principal: Principal,
    Path((company, add_on)): Path<(String, String)>,
    body: Result<Json<AddOnRequest>, JsonRejection>,
) -> Result<Json<EntitlementChange>, AdminError> {
    let principal = principal.require(Permission::Write)?;
    let company = parse_id("company", &company)?;
    let Json(request) = body?;
    let change = changes::set_add_on(&state, principal, company, &add_on, &request).await?;
    Ok(Json(change))
}

async fn post_package(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<PackageRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<CatalogChange>), AdminError> {
    let principal = principal.require(Permission::Write)?;
    let Json(request) = body?;
    let change = changes::put_package(&state, principal, &request).await?;
    Ok((created_or_ok(change.created), Json(change)))
}

async fn post_add_on(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<AddOnDefinition>, JsonRejection>,
) -> Result<(StatusCode, Json<CatalogChange>), AdminError> {
    let principal = principal.require(Permission::Write)?;
    let Json(request) = body?;
    let change = changes::put_add_on(&state, principal, &request).await?;
    Ok((created_or_ok(change.created), Json(change)))
}

fn created_or_ok(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrganizationFilter {
    status: Option<Status>,
}

async fn list_organizations(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<OrganizationFilter>, QueryRejection>,
) -> Result<Json<Value>, AdminError> {
    principal.require(Permission::Read)?;
    let Query(filter) = query?;
    let organizations = organizations::list(&state.pool, filter.status).await?;
    Ok(Json(serde_json::json!({ "organizations": organizations })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrganization {
    name: String,
}

async fn create_organization(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<NewOrganization>, JsonRejection>,
) -> Result<(StatusCode, Json<Organization>), AdminError> {
    let principal = principal.require(Permission::Write)?;
    let Json(request) = body?;
    let organization = organizations::create(&state.pool, &request.name, actor(principal)).await?;
    tracing::info!(
        event = "organization_created",
        organization = %organization.id,
        user_id = %principal.user,
        "organization created, pending approval"
    );
    Ok((StatusCode::CREATED, Json(organization)))
}

/// The optional body of approve and reject.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionRequest {
    reason: Option<String>,
}

async fn approve_organization(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Result<Option<Json<DecisionRequest>>, JsonRejection>,
) -> Result<Json<Organization>, AdminError> {
    decide(state, principal, &id, Decision::Approve, body).await
}

async fn reject_organization(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Result<Option<Json<DecisionRequest>>, JsonRejection>,
) -> Result<Json<Organization>, AdminError> {
    decide(state, principal, &id, Decision::Reject, body).await
}

async fn decide(
    state: AppState,
    principal: Principal,
    id: &str,
    decision: Decision,
    body: Result<Option<Json<DecisionRequest>>, JsonRejection>,
) -> Result<Json<Organization>, AdminError> {
    let principal = principal.require(Permission::Write)?;
    let id = parse_id("organization", id)?;
    let reason = body?.map(|Json(body)| body).unwrap_or_default().reason;
    let organization = organizations::decide(
        &state.pool,
        id,
        decision,
        reason.as_deref(),
        actor(principal),
    )
    .await?;
    state
        .metrics
        .event("organization_decision", decision.action());
    tracing::info!(
        event = "organization_decision",
        action = decision.action(),
        organization = %id,
        user_id = %principal.user,
        "organization decided"
    );
    Ok(Json(organization))
}

fn actor(principal: &Principal) -> Actor<'_> {
    Actor {
        user: &principal.user,
        request_id: &principal.context.request_id,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    target: Option<String>,
    limit: Option<i64>,
}

async fn get_audit(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Value>, AdminError> {
    principal.require(Permission::Read)?;
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(AUDIT_DEFAULT_LIMIT);
    if !(1..=AUDIT_MAX_LIMIT).contains(&limit) {
        return Err(AdminError::InvalidRequest(format!(
            "limit must be 1 to {AUDIT_MAX_LIMIT}"
        )));
    }
    let entries = audit::list(&state.pool, query.target.as_deref(), limit).await?;
    Ok(Json(serde_json::json!({ "entries": entries })))
}
