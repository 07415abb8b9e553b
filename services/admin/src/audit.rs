//! The audit log: one row per change made through Admin (actor, action,
//! target, before, after, time, and whether Auth was told).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};

use crate::error::AdminError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Ok,
    /// Core applied the change; Auth could not be told to recompute access.
    InvalidationFailed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::InvalidationFailed => "invalidation-failed",
        }
    }
}

/// A row to write.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    /// `company:<id>`, `package:<key>`, `add-on:<key>`, `organization:<id>`.
    pub target: String,
    pub outcome: Outcome,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub request_id: &'a str,
}

/// A row as `GET /admin/audit` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct Row {
    pub id: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub request_id: Option<String>,
    /// RFC 3339, UTC.
    pub at: String,
}

pub async fn write(executor: impl PgExecutor<'_>, entry: &Entry<'_>) -> Result<(), AdminError> {
    sqlx::query(
        "INSERT INTO audit_log (actor, action, target, outcome, before, after, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(entry.actor)
    .bind(entry.action)
    .bind(&entry.target)
    .bind(entry.outcome.as_str())
    .bind(&entry.before)
    .bind(&entry.after)
    .bind(entry.request_id)
    .execute(executor)
    .await?;
    Ok(())
}

/// The most recent `limit` rows (for one target when given), newest first.
pub async fn list(pool: &PgPool, target: Option<&str>, limit: i64) -> Result<Vec<Row>, AdminError> {
    Ok(sqlx::query_as(
        "SELECT id, actor, action, target, outcome, before, after, request_id,
                to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS at
           FROM audit_log
          WHERE $1::text IS NULL OR target = $1
          ORDER BY id DESC
          LIMIT $2",
    )
    .bind(target)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
