//! Organizations awaiting approval: created pending, then approved or
//! rejected once. Each change and its audit row commit together.

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::audit::{self, Outcome};
use crate::error::AdminError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Approved,
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
        }
    }
}

/// An approval decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    fn status(self) -> Status {
        match self {
            Decision::Approve => Status::Approved,
            Decision::Reject => Status::Rejected,
        }
    }

    pub fn action(self) -> &'static str {
        match self {
            Decision::Approve => "organization.approve",
            Decision::Reject => "organization.reject",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    pub status: String,
    pub requested_by: String,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub decided_at: Option<String>,
}

/// The columns of [`Organization`], timestamps as RFC 3339 text.
macro_rules! columns {
    () => {
        "id, name, status, requested_by, decided_by, decision_reason,
         to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS created_at,
         to_char(decided_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS decided_at"
    };
}

/// Who acts, for the audit row.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub user: &'a str,
    pub request_id: &'a str,
}

pub async fn list(pool: &PgPool, status: Option<Status>) -> Result<Vec<Organization>, AdminError> {
    let sql = concat!(
        "SELECT ",
        columns!(),
        " FROM organizations WHERE $1::text IS NULL OR status = $1 ORDER BY created_at, id"
    );
    Ok(sqlx::query_as(sql)
        .bind(status.map(Status::as_str))
        .fetch_all(pool)
        .await?)
}

pub async fn create(
    pool: &PgPool,
    name: &str,
    actor: Actor<'_>,
) -> Result<Organization, AdminError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(AdminError::InvalidRequest(
            "an organization name must be 1 to 200 characters".into(),
        ));
    }
    let mut tx = pool.begin().await?;
    let sql = concat!(
        "INSERT INTO organizations (id, name, requested_by) VALUES ($1, $2, $3) RETURNING ",
        columns!()
    );
    let organization: Organization = sqlx::query_as(sql)
        .bind(Uuid::new_v4())
        .bind(name)
        .bind(actor.user)
        .fetch_one(&mut *tx)
        .await?;
    record(&mut tx, actor, "organization.create", None, &organization).await?;
    tx.commit().await?;
    Ok(organization)
}

/// Approves or rejects a pending organization; 409 once decided.
pub async fn decide(
    pool: &PgPool,
    id: Uuid,
    decision: Decision,
    reason: Option<&str>,
    actor: Actor<'_>,
) -> Result<Organization, AdminError> {
    let mut tx = pool.begin().await?;
    let before = locked(&mut tx, id).await?;
    if before.status != Status::Pending.as_str() {
        return Err(AdminError::OrganizationDecided {
            id,
            status: before.status,
        });
    }
    let sql = concat!(
        "UPDATE organizations
            SET status = $2, decided_by = $3, decision_reason = $4, decided_at = now()
          WHERE id = $1
          RETURNING ",
        columns!()
    );
    let after: Organization = sqlx::query_as(sql)
        .bind(id)
        .bind(decision.status().as_str())
        .bind(actor.user)
        .bind(reason)
        .fetch_one(&mut *tx)
        .await?;
    record(&mut tx, actor, decision.action(), Some(&before), &after).await?;
    tx.commit().await?;
    Ok(after)
}

async fn locked(connection: &mut PgConnection, id: Uuid) -> Result<Organization, AdminError> {
    let sql = concat!(
        "SELECT ",
        columns!(),
        " FROM organizations WHERE id = $1 FOR UPDATE"
    );
    sqlx::query_as(sql)
        .bind(id)
        .fetch_optional(connection)
        .await?
        .ok_or(AdminError::OrganizationNotFound(id))
}

async fn record(
    connection: &mut PgConnection,
    actor: Actor<'_>,
    action: &str,
    before: Option<&Organization>,
    after: &Organization,
) -> Result<(), AdminError> {
    let entry = audit::Entry {
        actor: actor.user,
        action,
        target: format!("organization:{}", after.id),
        outcome: Outcome::Ok,
        before: before.map(|org| serde_json::to_value(org).unwrap_or_default()),
        after: Some(serde_json::to_value(after).unwrap_or_default()),
        request_id: actor.request_id,
    };
    audit::write(connection, &entry).await
}
