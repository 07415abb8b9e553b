//! The business routes of a module and the permission each requires:
//! `GET /v1/<resource>` (list), `POST /v1/<resource>` (create) and
//! `GET /v1/<resource>/{id}` (one record), with the permission keys
//! `<module>.<resource>.read` and `<module>.<resource>.write`.
//!
//! The same list of [`Endpoint`]s builds the router, drives the guard and
//! is shown in the diagnostics, so they cannot disagree.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router, middleware};
use kisum_common::telemetry::Metrics;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::guard::{self, Access, Guard};
use crate::module::Module;
use crate::record_cache::{Read, RecordCache};
use crate::records::{Fields, Limit, Record};
use crate::store::{RecordStore, Resource};

/// A permission key of the module's catalog
/// (`kisum_common::modules::CATALOG`), `<module>.<resource>.<read|write>`:
/// the keys Auth lets roles and memberships hold are the ones routes need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission(pub &'static str);

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// One business route and the permission it requires.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub method: Method,
    /// As axum matches it: `/v1/invoices/{id}`.
    pub path: String,
    pub permission: Permission,
}

/// `/v1/<resource>` and `/v1/<resource>/{id}`.
fn paths(module: Module) -> (String, String) {
    let collection = format!("/v1/{}", module.resource());
    let item = format!("{collection}/{{id}}");
    (collection, item)
}

pub fn endpoints(module: Module) -> Vec<Endpoint> {
    let (collection, item) = paths(module);
    let catalog = module.catalog();
    let (read, write) = (Permission(catalog.read), Permission(catalog.write));
    vec![
        Endpoint {
            method: Method::GET,
            path: collection.clone(),
            permission: read,
        },
        Endpoint {
            method: Method::POST,
            path: collection,
            permission: write,
        },
        Endpoint {
            method: Method::GET,
            path: item,
            permission: read,
        },
    ]
}

/// `"GET /v1/invoices" -> "finance.invoices.read"`, for the diagnostics.
pub fn permission_map(endpoints: &[Endpoint]) -> BTreeMap<String, String> {
    endpoints
        .iter()
        .map(|e| (format!("{} {}", e.method, e.path), e.permission.to_string()))
        .collect()
}

/// The module's business routes, each behind the guard. Reads go through
/// `cache` (a [`RecordCache`] that is never filled unless its listener
/// runs, as for the PostgreSQL modules).
pub fn business_router(
    module: Module,
    resource: Resource,
    guard: Guard,
    cache: RecordCache,
) -> Router {
    let metrics = guard.metrics.clone();
    let router = match resource {
        Resource::Contacts(store) => resource_routes(module, Records::new(store, &cache, &metrics)),
        Resource::Invoices(store) => resource_routes(module, Records::new(store, &cache, &metrics)),
        Resource::Listings(store) => resource_routes(module, Records::new(store, &cache, &metrics)),
        Resource::Tours(store) => resource_routes(module, Records::new(store, &cache, &metrics)),
        Resource::Venues(store) => resource_routes(module, Records::new(store, &cache, &metrics)),
        Resource::Prompts(store) => resource_routes(module, Records::new(store, &cache, &metrics)),
    };
    router.route_layer(middleware::from_fn_with_state(guard, guard::require_access))
}

type Store<F> = Arc<dyn RecordStore<F>>;

/// What the handlers of one resource share.
struct Records<F> {
    store: Store<F>,
    cache: RecordCache,
    metrics: Metrics,
}

impl<F> Clone for Records<F> {
    fn clone(&self) -> Self {
        Records {
            store: self.store.clone(),
            cache: self.cache.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<F: Fields> Records<F> {
    fn new(store: Store<F>, cache: &RecordCache, metrics: &Metrics) -> Self {
        Records {
            store,
            cache: cache.clone(),
            metrics: metrics.clone(),
        }
    }

    /// `read` of the company from the cache, else from the database
    /// (`load`, serialized, then offered to the cache).
    async fn read<T, Load>(
        &self,
        company: Uuid,
        read: Read,
        load: Load,
    ) -> Result<Response, ApiError>
    where
        T: Serialize,
        Load: Future<Output = Result<Option<T>, ApiError>>,
    {
        if let Some(body) = self.cache.get(company, read) {
            self.metrics.event("record_cache", "hit");
            return Ok(json_body(body));
        }
        self.metrics.event("record_cache", "miss");
        let ticket = self.cache.ticket(company);
        let Some(value) = load.await? else {
            return Err(ApiError::NotFound(F::NOUN));
        };
        let body = Bytes::from(serde_json::to_vec(&value).map_err(|error| {
            tracing::error!(error = %error, "cannot serialize a record");
            ApiError::Internal
        })?);
        self.cache.put(ticket, read, body.clone());
        Ok(json_body(body))
    }
}

/// A JSON body already serialized (what `Json` would have answered).
fn json_body(body: Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn resource_routes<F: Fields>(module: Module, records: Records<F>) -> Router {
    let (collection, item) = paths(module);
    Router::new()
        .route(&collection, get(list::<F>).post(create::<F>))
        .route(&item, get(find::<F>))
        .with_state(records)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<u32>,
}

#[derive(Debug, Serialize)]
struct Listing<F> {
    items: Vec<Record<F>>,
    limit: u32,
}

async fn list<F: Fields>(
    State(records): State<Records<F>>,
    Extension(access): Extension<Access>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = Limit::new(query.limit).map_err(|e| ApiError::BadRequest(e.0))?;
    let read = Read::List { limit: limit.get() };
    let load = async {
        let items = records.store.list(access.company, limit).await?;
        Ok(Some(Listing {
            items,
            limit: limit.get(),
        }))
    };
    records.read(access.company, read, load).await
}

async fn create<F: Fields>(
    State(records): State<Records<F>>,
    Extension(access): Extension<Access>,
    body: Result<Json<F::Input>, JsonRejection>,
) -> Result<(StatusCode, Json<Record<F>>), ApiError> {
    let Json(input) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let fields = F::accept(input).map_err(|e| ApiError::BadRequest(e.0))?;
    let record = records.store.create(access.company, fields).await?;
    // Committed: this replica's cached reads of the company go before the
    // answer (the other replicas hear of it through the trigger's NOTIFY).
    records.cache.invalidate(access.company);
    tracing::info!(
        record = F::NOUN,
        id = %record.id,
        company = %access.company,
        user = %access.user,
        "record created"
    );
    Ok((StatusCode::CREATED, Json(record)))
}

async fn find<F: Fields>(
    State(records): State<Records<F>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    // An id that is not a UUID names no record, like an id of another company.
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound(F::NOUN))?;
    let load = async { Ok(records.store.find(access.company, id).await?) };
    records.read(access.company, Read::Find { id }, load).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finance_routes_map_to_invoice_permissions() {
        let map = permission_map(&endpoints(Module::Finance));
        assert_eq!(map["GET /v1/invoices"], "finance.invoices.read");
        assert_eq!(map["POST /v1/invoices"], "finance.invoices.write");
        assert_eq!(map["GET /v1/invoices/{id}"], "finance.invoices.read");
    }

    #[test]
    fn every_route_needs_a_permission_of_its_modules_catalog() {
        for module in Module::ALL {
            for endpoint in endpoints(module) {
                let key = endpoint.permission.to_string();
                assert_eq!(
                    kisum_common::modules::known_permission(&key),
                    Ok(module.name()),
                    "{key}"
                );
            }
        }
    }
}
