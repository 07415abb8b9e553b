//! Company entitlements: how they are computed, the version that every
//! change bumps, and the history row each bump writes.
//!
//! # Concurrency
//! Every write runs in one transaction that bumps the company's version
//! *first*: the `entitlement_versions` row lock then serialises writers to
//! the same company, so each sees the state the previous one committed and
//! no bump is lost. Writes that depend on a catalog item take that item's
//! row lock before any company lock (`FOR SHARE` for a company write,
//! `FOR UPDATE` for a catalog write, which then locks companies in id
//! order), so the two kinds of write cannot deadlock and a catalog change
//! never misses a company that subscribes at the same moment.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::CoreError;
use crate::model::{EntitlementChange, EntitlementVersion, Entitlements, History, HistoryEntry};

/// Who made a write, for the history.
#[derive(Debug, Clone)]
pub struct Actor {
    /// `x-kisum-actor`: the admin user id, or else the caller.
    pub actor: String,
    /// The internal caller that proved its credential.
    pub caller: String,
    pub request_id: Option<String>,
}

/// What a write did, for the history.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub actor: &'a Actor,
    /// `subscription.set`, `add-on.set`, `catalog.package`, `catalog.add-on`.
    pub action: &'static str,
    /// The package or add-on the write concerns.
    pub subject: &'a str,
    pub detail: serde_json::Value,
}

/// The modules a company gets from its active subscription and add-ons.
const MODULES_SQL: &str = "
    SELECT pm.module FROM company_subscriptions s
      JOIN package_modules pm ON pm.package = s.package
     WHERE s.company = $1 AND s.status = 'active'
    UNION
    SELECT a.module FROM company_add_ons ca
      JOIN add_ons a ON a.key = ca.add_on
     WHERE ca.company = $1 AND ca.active
    ORDER BY 1";

/// Whether the active subscription's package includes `basic`.
const CORE_APP_SQL: &str = "
    SELECT EXISTS (
        SELECT 1 FROM company_subscriptions s
          JOIN package_modules pm ON pm.package = s.package
         WHERE s.company = $1 AND s.status = 'active' AND pm.module = 'basic')";

/// A company's entitlements at its current version, read in one snapshot.
pub async fn read(pool: &PgPool, company: Uuid) -> Result<Entitlements, CoreError> {
    let mut tx = pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let version = version_in(&mut tx, company).await?;
    let entitlements = state(&mut tx, company, version).await?;
    tx.commit().await?;
    Ok(entitlements)
}

pub async fn version(pool: &PgPool, company: Uuid) -> Result<EntitlementVersion, CoreError> {
    let mut connection = pool.acquire().await?;
    let version = version_in(&mut connection, company).await?;
    Ok(EntitlementVersion { company, version })
}

/// 0 for a company nothing was ever written for.
async fn version_in(connection: &mut PgConnection, company: Uuid) -> Result<i64, CoreError> {
    let version: Option<i64> =
        sqlx::query_scalar("SELECT version FROM entitlement_versions WHERE company = $1")
            .bind(company)
            .fetch_optional(connection)
            .await?;
    Ok(version.unwrap_or(0))
}

/// The entitlements as the connection sees them, labelled with `version`.
async fn state(
    connection: &mut PgConnection,
    company: Uuid,
    version: i64,
) -> Result<Entitlements, CoreError> {
    let modules: Vec<String> = sqlx::query_scalar(MODULES_SQL)
        .bind(company)
        .fetch_all(&mut *connection)
        .await?;
    let core_app: bool = sqlx::query_scalar(CORE_APP_SQL)
        .bind(company)
        .fetch_one(&mut *connection)
        .await?;
    Ok(Entitlements {
        company,
        version,
        core_app,
        modules,
    })
}

/// A write to one company in progress: its version is bumped (and its row
/// locked until the transaction ends) and its entitlements before the write
/// are known. [`CompanyChange::finish`] records the result.
pub struct CompanyChange {
    company: Uuid,
    version: i64,
    before: Entitlements,
}

impl CompanyChange {
    /// Bumps the company's version and reads its entitlements before the write.
    pub async fn begin(
        connection: &mut PgConnection,
        company: Uuid,
    ) -> Result<CompanyChange, CoreError> {
        let version: i64 = sqlx::query_scalar(
            "INSERT INTO entitlement_versions (company, version) VALUES ($1, 1)
             ON CONFLICT (company) DO UPDATE
                SET version = entitlement_versions.version + 1, updated_at = now()
             RETURNING version",
        )
        .bind(company)
        .fetch_one(&mut *connection)
        .await?;
        let before = state(connection, company, version - 1).await?;
        Ok(CompanyChange {
            company,
            version,
            before,
        })
    }

    /// Reads the entitlements after the write and writes the history row.
    pub async fn finish(
        self,
        connection: &mut PgConnection,
        record: &Record<'_>,
    ) -> Result<EntitlementChange, CoreError> {
        let after = state(connection, self.company, self.version).await?;
        sqlx::query(
            "INSERT INTO entitlement_history
                 (company, version, actor, caller, action, subject, detail, before, after, request_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(self.company)
        .bind(self.version)
        .bind(&record.actor.actor)
        .bind(&record.actor.caller)
        .bind(record.action)
        .bind(record.subject)
        .bind(&record.detail)
        .bind(snapshot(&self.before))
        .bind(snapshot(&after))
        .bind(&record.actor.request_id)
        .execute(connection)
        .await?;
        Ok(EntitlementChange {
            company: self.company,
            before: self.before,
            after,
        })
    }
}

/// The part of the entitlements a history row keeps (the row has the rest).
fn snapshot(entitlements: &Entitlements) -> serde_json::Value {
    serde_json::json!({
        "core_app": entitlements.core_app,
        "modules": entitlements.modules,
    })
}

/// The most recent `limit` history rows, oldest first.
pub async fn history(pool: &PgPool, company: Uuid, limit: i64) -> Result<History, CoreError> {
    let mut rows: Vec<HistoryEntry> = sqlx::query_as(
        "SELECT version, actor, caller, action, subject, detail, before, after, request_id,
                to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS at
           FROM entitlement_history
          WHERE company = $1
          ORDER BY version DESC
          LIMIT $2",
    )
    .bind(company)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.reverse();
    Ok(History {
        company,
        history: rows,
    })
}
