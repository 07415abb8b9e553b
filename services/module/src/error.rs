//! What a request can fail with, and the status and `{error, message}`
//! body each failure answers with. Internal details (database errors,
//! Auth's replies) go to the log, never to the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("bearer token required")]
    MissingToken,
    #[error("invalid token")]
    InvalidToken,
    #[error("session revoked or unknown")]
    SessionRevoked,
    #[error("x-org required")]
    OrgRequired,
    #[error("x-org must be a company id or slug")]
    OrgInvalid,
    #[error("no membership in that company")]
    NotAMember,
    #[error("access denied by module")]
    DeniedByModule,
    #[error("access denied by permission")]
    DeniedByPermission,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("signing keys unavailable")]
    KeysUnavailable,
    #[error("access context unavailable")]
    AccessUnavailable,
    #[error("internal error")]
    Storage(StoreError),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingToken | ApiError::InvalidToken | ApiError::SessionRevoked => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::OrgRequired | ApiError::OrgInvalid | ApiError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::NotAMember | ApiError::DeniedByModule | ApiError::DeniedByPermission => {
                StatusCode::FORBIDDEN
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::KeysUnavailable | ApiError::AccessUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Storage(_) | ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code in the body.
    pub fn code(&self) -> &'static str {
        match self.status() {
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::BAD_REQUEST => kisum_common::internal::INVALID_REQUEST,
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "internal",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::Duplicate(_) => ApiError::Conflict(error.to_string()),
            error => ApiError::Storage(error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Storage(error) = &self {
            tracing::error!(error = %error, "storage failure");
        }
        let body = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        let mut response = (self.status(), Json(body)).into_response();
        if self.status() == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_malformed_request_is_invalid_request_as_in_every_service() {
        for error in [
            ApiError::OrgRequired,
            ApiError::OrgInvalid,
            ApiError::BadRequest("limit: not a number".into()),
        ] {
            assert_eq!(error.status(), StatusCode::BAD_REQUEST);
            assert_eq!(error.code(), "invalid_request", "{error}");
        }
    }

    #[test]
    fn denials_are_forbidden_with_their_own_message() {
        let error = ApiError::DeniedByPermission;
        assert_eq!(error.status(), StatusCode::FORBIDDEN);
        assert_eq!(error.to_string(), "access denied by permission");
        assert_eq!(ApiError::OrgRequired.to_string(), "x-org required");
    }

    #[test]
    fn a_storage_failure_says_nothing_about_the_database() {
        let error = ApiError::from(StoreError::Postgres(
            "password authentication failed".into(),
        ));
        assert_eq!(error.to_string(), "internal error");
        assert_eq!(error.code(), "internal");
    }
}
