//! Subscription, add-on and catalog changes: made in Platform Core, then
//! Auth is told to recompute the access of every affected company, then
//! the change is audited, all before Admin answers.
//!
//! When Core applied a change but Auth could not be told, the answer is a
//! 502 `invalidation_failed` and the audit row says `invalidation-failed`:
//! the change is real, and its effect is delayed until Auth's cached access
//! is refreshed some other way (a retry of the change does that).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::audit::{self, Outcome};
use crate::clients::{CatalogChange, EntitlementChange};
use crate::error::AdminError;
use crate::rbac::Principal;
use crate::state::AppState;

/// `PUT /admin/companies/{company}/subscription`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRequest {
    pub package: String,
    pub status: String,
}

/// `PUT /admin/companies/{company}/add-ons/{add_on}`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddOnRequest {
    pub active: bool,
}

/// `POST /admin/catalog/packages`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageRequest {
    pub key: String,
    pub name: String,
    pub modules: Vec<String>,
}

/// `POST /admin/catalog/add-ons`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddOnDefinition {
    pub key: String,
    pub name: String,
    pub module: String,
}

/// What a catalog write is about, for Core and the audit.
#[derive(Debug, Clone, Copy)]
enum CatalogKind {
    Package,
    AddOn,
}

impl CatalogKind {
    fn action(self) -> &'static str {
        match self {
            CatalogKind::Package => "catalog.package",
            CatalogKind::AddOn => "catalog.add-on",
        }
    }

    fn target(self, key: &str) -> String {
        match self {
            CatalogKind::Package => format!("package:{key}"),
            CatalogKind::AddOn => format!("add-on:{key}"),
        }
    }

    /// The item's current definition in a `GET /v1/catalog` answer.
    fn find(self, catalog: &Value, key: &str) -> Option<Value> {
        let list = match self {
            CatalogKind::Package => "packages",
            CatalogKind::AddOn => "add_ons",
        };
        catalog[list]
            .as_array()?
            .iter()
            .find(|item| item["key"] == key)
            .cloned()
    }
}

/// Core keeps entitlements for any id it is given; the companies are
/// Auth's. A change for an id Auth does not know is refused (404) before
/// Core is asked.
pub async fn require_company(
    state: &AppState,
    principal: &Principal,
    company: Uuid,
) -> Result<(), AdminError> {
    let path = format!("/internal/companies/{company}");
    state
        .auth
        .directory_read(&principal.context, &principal.user, &path)
        .await
        .map(|_| ())
}

pub async fn set_subscription(
    state: &AppState,
    principal: &Principal,
    company: Uuid,
    request: &SubscriptionRequest,
) -> Result<EntitlementChange, AdminError> {
    require_company(state, principal, company).await?;
    let body = serde_json::to_value(request).unwrap_or_default();
    let change = state
        .core
        .set_subscription(&principal.context, &principal.user, company, &body)
        .await?;
    tracing::info!(
        event = "subscription_change",
        company = %company,
        package = %request.package,
        status = %request.status,
        user_id = %principal.user,
        "company subscription changed"
    );
    settle_company_change(state, principal, "subscription.set", &change).await?;
    Ok(change)
}

pub async fn set_add_on(
    state: &AppState,
    principal: &Principal,
    company: Uuid,
    add_on: &str,
    request: &AddOnRequest,
) -> Result<EntitlementChange, AdminError> {
    validate_key(add_on)?;
    require_company(state, principal, company).await?;
    let body = serde_json::to_value(request).unwrap_or_default();
    let change = state
        .core
        .set_add_on(&principal.context, &principal.user, company, add_on, &body)
        .await?;
    tracing::info!(
        event = "add_on_change",
        company = %company,
        add_on = %add_on,
        active = request.active,
        user_id = %principal.user,
        "company add-on changed"
    );
    settle_company_change(state, principal, "add-on.set", &change).await?;
    Ok(change)
}

pub async fn put_package(
    state: &AppState,
    principal: &Principal,
    request: &PackageRequest,
) -> Result<CatalogChange, AdminError> {
    let body = serde_json::to_value(request).unwrap_or_default();
    catalog_change(state, principal, CatalogKind::Package, &request.key, &body).await
}

pub async fn put_add_on(
    state: &AppState,
    principal: &Principal,
    request: &AddOnDefinition,
) -> Result<CatalogChange, AdminError> {
    let body = serde_json::to_value(request).unwrap_or_default();
    catalog_change(state, principal, CatalogKind::AddOn, &request.key, &body).await
}

/// The catalog item before (as Core lists it), the write, then every
/// company Core bumped is invalidated.
async fn catalog_change(
    state: &AppState,
    principal: &Principal,
    kind: CatalogKind,
    key: &str,
    body: &Value,
) -> Result<CatalogChange, AdminError> {
    let context = &principal.context;
    let before = kind.find(&state.core.catalog(context).await?, key);
    let change = match kind {
        CatalogKind::Package => {
            state
                .core
                .put_package(context, &principal.user, body)
                .await?
        }
        CatalogKind::AddOn => {
            state
                .core
                .put_add_on(context, &principal.user, body)
                .await?
        }
    };
    state.metrics.event("catalog_mutation", kind.action());
    tracing::info!(
        event = "catalog_mutation",
        action = kind.action(),
        key = %key,
        created = change.created,
        affected_companies = change.bumped.len(),
        user_id = %principal.user,
        "catalog changed"
    );
    let companies: Vec<Uuid> = change.bumped.iter().map(|bump| bump.company).collect();
    let after = serde_json::json!({ "item": change.item, "bumped": change.bumped });
    let audited = Audited {
        action: kind.action(),
        target: kind.target(key),
        before,
        after: Some(after),
    };
    settle(state, principal, audited, &companies).await?;
    Ok(change)
}

async fn settle_company_change(
    state: &AppState,
    principal: &Principal,
    action: &'static str,
    change: &EntitlementChange,
) -> Result<(), AdminError> {
    let audited = Audited {
        action,
        target: format!("company:{}", change.company),
        before: Some(change.before.clone()),
        after: Some(change.after.clone()),
    };
    settle(state, principal, audited, &[change.company]).await
}

/// The audit row of a change Core has applied, short of its outcome.
struct Audited {
    action: &'static str,
    target: String,
    before: Option<Value>,
    after: Option<Value>,
}

/// Invalidates every company (trying all, even after a failure), writes the
/// audit row with the outcome, and fails when any invalidation did.
async fn settle(
    state: &AppState,
    principal: &Principal,
    audited: Audited,
    companies: &[Uuid],
) -> Result<(), AdminError> {
    let failed = invalidate_all(state, principal, companies).await;
    let outcome = if failed.is_empty() {
        Outcome::Ok
    } else {
        Outcome::InvalidationFailed
    };
    let entry = audit::Entry {
        actor: &principal.user,
        action: audited.action,
        target: audited.target,
        outcome,
        before: audited.before,
        after: audited.after,
        request_id: &principal.context.request_id,
    };
    if let Err(error) = audit::write(&state.pool, &entry).await {
        // The change is applied: keep its record in the log at least.
        tracing::error!(
            event = "audit_write_failed",
            action = entry.action,
            target = %entry.target,
            outcome = outcome.as_str(),
            user_id = %principal.user,
            before = %entry.before.unwrap_or_default(),
            after = %entry.after.unwrap_or_default(),
            "the change was applied but its audit row could not be written"
        );
        return Err(error);
    }
    state.metrics.event("admin_change", outcome.as_str());
    if failed.is_empty() {
        Ok(())
    } else {
        Err(AdminError::InvalidationFailed { companies: failed })
    }
}

/// The companies Auth could not be told about.
async fn invalidate_all(state: &AppState, principal: &Principal, companies: &[Uuid]) -> Vec<Uuid> {
    let mut failed = Vec::new();
    for company in companies {
        if let Err(reason) = state
            .auth
            .invalidate_company(&principal.context, *company)
            .await
        {
            tracing::error!(
                event = "invalidation_failed",
                company = %company,
                reason = %reason,
                "Auth could not be told to recompute a company's access"
            );
            failed.push(*company);
        }
    }
    failed
}

/// An add-on key goes into Core's URL path: letters, digits and `-` only.
fn validate_key(key: &str) -> Result<(), AdminError> {
    let valid = !key.is_empty()
        && key.len() <= 63
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(AdminError::InvalidRequest(format!(
            "add-on key `{key}`: use letters, digits and '-', at most 63 characters"
        )))
    }
}
