//! Errors of the entitlement API, each with its HTTP status and a JSON body
//! `{error: <code>, message}`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("internal credential required")]
    Unauthorized,
    #[error("company id `{0}` is not a UUID")]
    InvalidCompany(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("unknown package `{0}`")]
    UnknownPackage(String),
    #[error("unknown add-on `{0}`")]
    UnknownAddOn(String),
    #[error("{}", kisum_common::modules::unknown_module(name, known))]
    UnknownModule { name: String, known: Vec<String> },
    #[error("the basic module comes only with a subscription, not with an add-on")]
    BasicAddOn,
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl CoreError {
    pub fn status(&self) -> StatusCode {
        match self {
            CoreError::Unauthorized => StatusCode::UNAUTHORIZED,
            CoreError::InvalidCompany(_) | CoreError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            CoreError::UnknownAddOn(_) => StatusCode::NOT_FOUND,
            CoreError::UnknownPackage(_)
            | CoreError::UnknownModule { .. }
            | CoreError::BasicAddOn => StatusCode::UNPROCESSABLE_ENTITY,
            CoreError::Database(error) if unavailable(error) => StatusCode::SERVICE_UNAVAILABLE,
            CoreError::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            CoreError::Unauthorized => kisum_common::internal::CREDENTIAL_REQUIRED,
            CoreError::InvalidCompany(_) | CoreError::InvalidRequest(_) => {
                kisum_common::internal::INVALID_REQUEST
            }
            CoreError::UnknownPackage(_) => "unknown_package",
            CoreError::UnknownAddOn(_) => "unknown_add_on",
            CoreError::UnknownModule { .. } => "unknown_module",
            CoreError::BasicAddOn => "basic_is_not_an_add_on",
            CoreError::Database(error) if unavailable(error) => "database_unavailable",
            CoreError::Database(_) => "internal",
        }
    }
}

use kisum_common::schema::is_unavailable as unavailable;

impl From<JsonRejection> for CoreError {
    fn from(rejection: JsonRejection) -> Self {
        CoreError::InvalidRequest(rejection.body_text())
    }
}

impl IntoResponse for CoreError {
    fn into_response(self) -> Response {
        if let CoreError::Database(error) = &self {
            // The sqlx error names the query, never the connection URL.
            tracing::error!(error = %error, "database error");
        }
        let body = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        (self.status(), Json(body)).into_response()
    }
}
