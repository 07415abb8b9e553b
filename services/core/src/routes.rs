//! The entitlement API: every route on the internal port, admitted only
//! for the callers `INTERNAL_ALLOWED_CALLERS` names with their credentials.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use kisum_common::internal::{self, Allowlist, Caller};
use kisum_common::telemetry::{Metrics, RequestContext};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use serde::Deserialize;
use sqlx::PgPool;

use crate::entitlements::{self, Actor};
use crate::error::CoreError;
use crate::model::{
    AddOnDefinition, AddOnRequest, Catalog, CatalogChange, EntitlementChange, EntitlementVersion,
    Entitlements, History, PackageRequest, SubscriptionRequest, parse_company,
};
use crate::{catalog, subscriptions};

/// Names the admin user a write is made for, for the history.
pub use kisum_common::internal::ACTOR_HEADER;

const HISTORY_DEFAULT_LIMIT: i64 = 200;
const HISTORY_MAX_LIMIT: i64 = 1000;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub metrics: Metrics,
    lookup_latency: Histogram,
}

impl AppState {
    pub fn new(pool: PgPool, metrics: Metrics) -> Self {
        let lookup_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        metrics.register(
            "entitlement_lookup_duration_seconds",
            "Time to compute a company's entitlements",
            lookup_latency.clone(),
        );
        AppState {
            pool,
            metrics,
            lookup_latency,
        }
    }
}

/// (method and path, who may call it), for diagnostics and the tests.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/catalog"),
    ("POST", "/v1/catalog/packages"),
    ("POST", "/v1/catalog/add-ons"),
    ("GET", "/v1/companies/{company}/entitlements"),
    ("GET", "/v1/companies/{company}/entitlements/version"),
    ("GET", "/v1/companies/{company}/entitlements/history"),
    ("PUT", "/v1/companies/{company}/subscription"),
    ("PUT", "/v1/companies/{company}/add-ons/{add_on}"),
];

/// The diagnostics view of [`ROUTES`]: route -> the callers admitted.
pub fn route_permissions(api_callers: &Allowlist) -> BTreeMap<String, String> {
    let callers = format!("internal caller: {}", api_callers.callers().join(", "));
    ROUTES
        .iter()
        .map(|(method, path)| (format!("{method} {path}"), callers.clone()))
        .collect()
}

/// `known` proves who calls (every `INTERNAL_CALLER_*`), `api_callers`
/// says who of them may use the entitlement API.
pub fn router(state: AppState, known: Allowlist, api_callers: Allowlist) -> Router {
    Router::new()
        .route("/v1/catalog", get(get_catalog))
        .route("/v1/catalog/packages", post(post_package))
        .route("/v1/catalog/add-ons", post(post_add_on))
        .route(
            "/v1/companies/{company}/entitlements",
            get(get_entitlements),
        )
        .route(
            "/v1/companies/{company}/entitlements/version",
            get(get_version),
        )
        .route(
            "/v1/companies/{company}/entitlements/history",
            get(get_history),
        )
        .route(
            "/v1/companies/{company}/subscription",
            put(put_subscription),
        )
        .route("/v1/companies/{company}/add-ons/{add_on}", put(put_add_on))
        .with_state(state)
        .layer(middleware::from_fn(require_writer_for_changes))
        .layer(middleware::from_fn_with_state(
            (known, api_callers),
            require_api_caller,
        ))
}

/// The caller that may change subscriptions, add-ons and the catalog.
/// Auth only reads entitlements; Admin changes them (and then invalidates
/// Auth's access and audits the change).
pub const WRITER: &str = "platform-admin";

/// 403 for a change requested by any caller but the writer.
async fn require_writer_for_changes(request: Request, next: Next) -> Response {
    let reading =
        request.method() == axum::http::Method::GET || request.method() == axum::http::Method::HEAD;
    let caller = request.extensions().get::<Caller>().map(|c| c.0.clone());
    if reading || caller.as_deref() == Some(WRITER) {
        return next.run(request).await;
    }
    internal::refuse_caller(
        caller.as_deref().unwrap_or("-"),
        request.uri().path(),
        &format!("only {WRITER} may change entitlements"),
    )
}

/// 401 (`internal_credential_required`) unless the request proves a
/// known caller's credential; 403 for a known caller the entitlement API
/// does not admit (kisumctl, which may read diagnostics only).
async fn require_api_caller(
    State((known, api_callers)): State<(Allowlist, Allowlist)>,
    request: Request,
    next: Next,
) -> Response {
    internal::admit(&known, |caller| api_callers.admits(caller), request, next).await
}

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = CoreError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Actor, CoreError> {
        let caller = parts
            .extensions
            .get::<Caller>()
            .map(|caller| caller.0.clone())
            .ok_or(CoreError::Unauthorized)?;
        let actor = internal::actor(&parts.headers)
            .map_err(CoreError::InvalidRequest)?
            .map_or_else(|| caller.clone(), str::to_string);
        let request_id = parts
            .extensions
            .get::<RequestContext>()
            .map(|context| context.request_id.clone());
        Ok(Actor {
            actor,
            caller,
            request_id,
        })
    }
}

async fn get_catalog(State(state): State<AppState>) -> Result<Json<Catalog>, CoreError> {
    Ok(Json(catalog::read(&state.pool).await?))
}

async fn get_entitlements(
    State(state): State<AppState>,
    Path(company): Path<String>,
) -> Result<Json<Entitlements>, CoreError> {
    let company = parse_company(&company)?;
    let started = Instant::now();
    let entitlements = entitlements::read(&state.pool, company).await?;
    state
        .lookup_latency
        .observe(started.elapsed().as_secs_f64());
    Ok(Json(entitlements))
}

async fn get_version(
    State(state): State<AppState>,
    Path(company): Path<String>,
) -> Result<Json<EntitlementVersion>, CoreError> {
    let company = parse_company(&company)?;
    Ok(Json(entitlements::version(&state.pool, company).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    limit: Option<i64>,
}

async fn get_history(
    State(state): State<AppState>,
    Path(company): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<History>, CoreError> {
    let company = parse_company(&company)?;
    let Query(query) = query.map_err(|e| CoreError::InvalidRequest(e.body_text()))?;
    let limit = query.limit.unwrap_or(HISTORY_DEFAULT_LIMIT);
    if !(1..=HISTORY_MAX_LIMIT).contains(&limit) {
        return Err(CoreError::InvalidRequest(format!(
            "limit must be 1 to {HISTORY_MAX_LIMIT}"
        )));
    }
    Ok(Json(
        entitlements::history(&state.pool, company, limit).await?,
    ))
}

async fn put_subscription(
    State(state): State<AppState>,
    Path(company): Path<String>,
    actor: Actor,
    body: Result<Json<SubscriptionRequest>, JsonRejection>,
) -> Result<Json<EntitlementChange>, CoreError> {
    let company = parse_company(&company)?;
    let Json(request) = body?;
    let change = subscriptions::set_subscription(&state.pool, company, &request, &actor).await?;
    state.metrics.event("subscription_change", "ok");
    tracing::info!(
        event = "subscription_change",
        company = %company,
        package = %request.package,
        status = request.status.as_str(),
        actor = %actor.actor,
        caller = %actor.caller,
        "subscription changed"
    );
    report_bump(&state.metrics, &change, "subscription.set", &actor);
    Ok(Json(change))
}

async fn put_add_on(
    State(state): State<AppState>,
    Path((company, add_on)): Path<(String, String)>,
    actor: Actor,
    body: Result<Json<AddOnRequest>, JsonRejection>,
) -> Result<Json<EntitlementChange>, CoreError> {
    let company = parse_company(&company)?;
    let Json(request) = body?;
    let change = subscriptions::set_add_on(&state.pool, company, &add_on, &request, &actor).await?;
    state.metrics.event("add_on_change", "ok");
    tracing::info!(
        event = "add_on_change",
        company = %company,
        add_on = %add_on,
        active = request.active,
        actor = %actor.actor,
        caller = %actor.caller,
        "add-on changed"
    );
    report_bump(&state.metrics, &change, "add-on.set", &actor);
    Ok(Json(change))
}

async fn post_package(
    State(state): State<AppState>,
    actor: Actor,
    body: Result<Json<PackageRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<CatalogChange<crate::model::Package>>), CoreError> {
    let Json(request) = body?;
    let change = catalog::put_package(&state.pool, &request, &actor).await?;
    report_catalog_mutation(&state.metrics, "package", &request.key, &change, &actor);
    Ok((created_or_ok(change.created), Json(change)))
}

async fn post_add_on(
    State(state): State<AppState>,
    actor: Actor,
    body: Result<Json<AddOnDefinition>, JsonRejection>,
) -> Result<(StatusCode, Json<CatalogChange<crate::model::AddOn>>), CoreError> {
    let Json(request) = body?;
    let change = catalog::put_add_on(&state.pool, &request, &actor).await?;
    report_catalog_mutation(&state.metrics, "add-on", &request.key, &change, &actor);
    Ok((created_or_ok(change.created), Json(change)))
}

fn created_or_ok(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// The `entitlement_version_bump` event: counted and logged, once per bump.
fn report_bump(metrics: &Metrics, change: &EntitlementChange, action: &str, actor: &Actor) {
    metrics.event("entitlement_version_bump", action);
    tracing::info!(
        event = "entitlement_version_bump",
        company = %change.company,
        version = change.after.version,
        action = %action,
        actor = %actor.actor,
        caller = %actor.caller,
        "entitlement version bumped"
    );
}

/// The `catalog_mutation` event, then one version bump per affected company.
fn report_catalog_mutation<T>(
    metrics: &Metrics,
    kind: &str,
    key: &str,
    change: &CatalogChange<T>,
    actor: &Actor,
) {
    metrics.event("catalog_mutation", kind);
    tracing::info!(
        event = "catalog_mutation",
        kind = %kind,
        key = %key,
        created = change.created,
        affected_companies = change.bumped.len(),
        actor = %actor.actor,
        caller = %actor.caller,
        "catalog changed"
    );
    let action = format!("catalog.{kind}");
    for bump in &change.bumped {
        metrics.event("entitlement_version_bump", &action);
        tracing::info!(
            event = "entitlement_version_bump",
            company = %bump.company,
            version = bump.version,
            action = %action,
            actor = %actor.actor,
            "entitlement version bumped"
        );
    }
}
