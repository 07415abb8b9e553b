//! The audit trail of auth-sensitive actions (plan 18.2) in auth_db.
//! Rows name ids and reasons, never passwords, tokens or hashes.

use sqlx::{Executor, Postgres};
use uuid::Uuid;

pub mod action {
    pub const LOGIN_SUCCESS: &str = "login.success";
    pub const LOGIN_FAILURE: &str = "login.failure";
    pub const REFRESH_REUSE: &str = "refresh.reuse_detected";
    pub const LOGOUT: &str = "logout";
    pub const LOGOUT_ALL: &str = "logout_all";
    pub const ACCESS_INVALIDATED: &str = "access.invalidated";
    pub const PASSWORD_RESET_REQUESTED: &str = "password_reset.requested";
    pub const PASSWORD_RESET: &str = "password_reset.done";
}

#[derive(Debug, Default, Clone)]
pub struct Entry {
    pub action: &'static str,
    pub user: Option<Uuid>,
    pub session: Option<Uuid>,
    pub company: Option<Uuid>,
    pub client_ip: Option<String>,
    pub detail: serde_json::Value,
}

impl Entry {
    pub fn new(action: &'static str) -> Entry {
        Entry {
            action,
            detail: serde_json::json!({}),
            ..Entry::default()
        }
    }

    pub fn user(mut self, user: Uuid) -> Entry {
        self.user = Some(user);
        self
    }

    pub fn session(mut self, session: Uuid) -> Entry {
        self.session = Some(session);
        self
    }

    pub fn company(mut self, company: Uuid) -> Entry {
        self.company = Some(company);
        self
    }

    pub fn client_ip(mut self, ip: Option<std::net::IpAddr>) -> Entry {
        self.client_ip = ip.map(|ip| ip.to_string());
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Entry {
        self.detail = detail;
        self
    }
}

pub async fn record<'e>(
    db: impl Executor<'e, Database = Postgres>,
    entry: Entry,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into audit_events (action, user_id, session_id, company_id, client_ip, detail)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(entry.action)
    .bind(entry.user)
    .bind(entry.session)
    .bind(entry.company)
    .bind(entry.client_ip)
    .bind(entry.detail)
    .execute(db)
    .await
    .map(drop)
}
