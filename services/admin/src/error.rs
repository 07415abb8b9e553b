//! Errors of the admin API, each with its HTTP status and a JSON body
//! `{error: <code>, message}`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("the platform role `{required}` or higher is required")]
    Forbidden { required: &'static str },
    #[error("{0}")]
    InvalidRequest(String),
    #[error("no organization {0}")]
    OrganizationNotFound(Uuid),
    #[error("organization {id} is already {status}")]
    OrganizationDecided { id: Uuid, status: String },
    /// Platform Core refused the request (unknown package, bad key, ...):
    /// its status and error code are passed on.
    #[error("{message}")]
    CoreRejected {
        status: StatusCode,
        code: String,
        message: String,
    },
    /// Auth refused a directory request (unknown user, role or
    /// membership, slug taken, ...): its status and error code are passed on.
    #[error("{message}")]
    AuthRejected {
        status: StatusCode,
        code: String,
        message: String,
    },
    #[error("Platform Core is unavailable: {0}")]
    CoreUnavailable(String),
    #[error("Auth is unavailable: {0}")]
    AuthUnavailable(String),
    #[error(
        "the change was applied in Platform Core, but Auth could not be told to recompute the access of {}; retry the change or invalidate by hand",
        companies.iter().map(Uuid::to_string).collect::<Vec<_>>().join(", ")
    )]
    InvalidationFailed { companies: Vec<Uuid> },
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl AdminError {
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            AdminError::Forbidden { .. } => StatusCode::FORBIDDEN,
            AdminError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::OrganizationNotFound(_) => StatusCode::NOT_FOUND,
            AdminError::OrganizationDecided { .. } => StatusCode::CONFLICT,
            AdminError::CoreRejected { status, .. } | AdminError::AuthRejected { status, .. } => {
                *status
            }
            AdminError::CoreUnavailable(_)
            | AdminError::AuthUnavailable(_)
            | AdminError::InvalidationFailed { .. } => StatusCode::BAD_GATEWAY,
            AdminError::Database(error) if unavailable(error) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &str {
        match self {
            AdminError::Unauthenticated(_) => "unauthenticated",
            AdminError::Forbidden { .. } => "forbidden",
            AdminError::InvalidRequest(_) => kisum_common::internal::INVALID_REQUEST,
            AdminError::OrganizationNotFound(_) => "organization_not_found",
            AdminError::OrganizationDecided { .. } => "organization_already_decided",
            AdminError::CoreRejected { code, .. } | AdminError::AuthRejected { code, .. } => code,
            AdminError::CoreUnavailable(_) => "core_unavailable",
            AdminError::AuthUnavailable(_) => "auth_unavailable",
            AdminError::InvalidationFailed { .. } => "invalidation_failed",
            AdminError::Database(error) if unavailable(error) => "database_unavailable",
            AdminError::Database(_) => "internal",
        }
    }
}

use kisum_common::schema::is_unavailable as unavailable;

impl From<JsonRejection> for AdminError {
    fn from(rejection: JsonRejection) -> Self {
        AdminError::InvalidRequest(rejection.body_text())
    }
}

impl From<QueryRejection> for AdminError {
    fn from(rejection: QueryRejection) -> Self {
        AdminError::InvalidRequest(rejection.body_text())
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        match &self {
            AdminError::Database(error) => tracing::error!(error = %error, "database error"),
            AdminError::CoreUnavailable(_)
            | AdminError::AuthUnavailable(_)
            | AdminError::InvalidationFailed { .. } => {
                tracing::error!(error = %self, code = self.code(), "upstream failure");
            }
            _ => {}
        }
        // The detail of an upstream failure (addresses, URLs) is logged
        // above, never sent to the client.
        let message = match &self {
            AdminError::CoreUnavailable(_) => "Platform Core is unavailable".to_string(),
            AdminError::AuthUnavailable(_) => "Auth is unavailable".to_string(),
            _ => self.to_string(),
        };
        let body = serde_json::json!({ "error": self.code(), "message": message });
        (self.status(), Json(body)).into_response()
    }
}
