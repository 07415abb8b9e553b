//! Company writes: the subscription and the add-ons. Each bumps the
//! company's entitlement version once and writes one history row, in the
//! transaction that makes the change.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::entitlements::{Actor, CompanyChange, Record};
use crate::error::CoreError;
use crate::model::{AddOnRequest, EntitlementChange, SubscriptionRequest};

/// Sets the company's one subscription to `package` with `status`.
pub async fn set_subscription(
    pool: &PgPool,
    company: Uuid,
    request: &SubscriptionRequest,
    actor: &Actor,
) -> Result<EntitlementChange, CoreError> {
    let mut tx = pool.begin().await?;
    share_package(&mut tx, &request.package).await?;
    let change = CompanyChange::begin(&mut tx, company).await?;
    sqlx::query(
        "INSERT INTO company_subscriptions (company, package, status) VALUES ($1, $2, $3)
         ON CONFLICT (company) DO UPDATE
            SET package = EXCLUDED.package, status = EXCLUDED.status, updated_at = now()",
    )
    .bind(company)
    .bind(&request.package)
    .bind(request.status.as_str())
    .execute(&mut *tx)
    .await?;
    let record = Record {
        actor,
        action: "subscription.set",
        subject: &request.package,
        detail: serde_json::json!({ "package": request.package, "status": request.status }),
    };
    let change = change.finish(&mut tx, &record).await?;
    tx.commit().await?;
    Ok(change)
}

/// Turns one of the company's add-ons on or off.
pub async fn set_add_on(
    pool: &PgPool,
    company: Uuid,
    add_on: &str,
    request: &AddOnRequest,
    actor: &Actor,
) -> Result<EntitlementChange, CoreError> {
    let mut tx = pool.begin().await?;
    share_add_on(&mut tx, add_on).await?;
    let change = CompanyChange::begin(&mut tx, company).await?;
    sqlx::query(
        "INSERT INTO company_add_ons (company, add_on, active) VALUES ($1, $2, $3)
         ON CONFLICT (company, add_on) DO UPDATE
            SET active = EXCLUDED.active, updated_at = now()",
    )
    .bind(company)
    .bind(add_on)
    .bind(request.active)
    .execute(&mut *tx)
    .await?;
    let record = Record {
        actor,
        action: "add-on.set",
        subject: add_on,
        detail: serde_json::json!({ "add_on": add_on, "active": request.active }),
    };
    let change = change.finish(&mut tx, &record).await?;
    tx.commit().await?;
    Ok(change)
}

/// Holds the package still (no catalog write to it) until the transaction
/// ends; an unknown package is an error.
async fn share_package(connection: &mut PgConnection, package: &str) -> Result<(), CoreError> {
    sqlx::query("SELECT 1 FROM packages WHERE key = $1 FOR SHARE")
        .bind(package)
        .fetch_optional(connection)
        .await?
        .map(|_| ())
        .ok_or_else(|| CoreError::UnknownPackage(package.to_string()))
}

async fn share_add_on(connection: &mut PgConnection, add_on: &str) -> Result<(), CoreError> {
    sqlx::query("SELECT 1 FROM add_ons WHERE key = $1 FOR SHARE")
        .bind(add_on)
        .fetch_optional(connection)
        .await?
        .map(|_| ())
        .ok_or_else(|| CoreError::UnknownAddOn(add_on.to_string()))
}
