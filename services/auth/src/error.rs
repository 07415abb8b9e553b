//! What a request can fail with, and the status and `{error, message}` body
//! each failure answers with. Messages never carry secrets, and the
//! credential failures stay vague on purpose (no user enumeration).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("invalid or expired refresh token")]
    InvalidRefreshToken,
    #[error("invalid, used or expired password reset token")]
    InvalidResetToken,
    #[error("a valid bearer access token is required")]
    Unauthenticated,
    #[error("the session is revoked or unknown")]
    SessionRevoked,
    #[error("no access to this company")]
    NoMembership,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("this caller may not use this internal route")]
    CallerNotAllowed,
    #[error("too many login attempts; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("the access context cannot be computed now")]
    AccessUnavailable,
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for AuthError {
    fn from(error: sqlx::Error) -> Self {
        AuthError::Internal(anyhow::Error::new(error).context("auth_db"))
    }
}

impl AuthError {
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::BadRequest(_) | AuthError::InvalidResetToken => StatusCode::BAD_REQUEST,
            AuthError::InvalidCredentials
            | AuthError::InvalidRefreshToken
            | AuthError::Unauthenticated
            | AuthError::SessionRevoked => StatusCode::UNAUTHORIZED,
            AuthError::NoMembership | AuthError::CallerNotAllowed => StatusCode::FORBIDDEN,
            AuthError::NotFound(_) => StatusCode::NOT_FOUND,
            AuthError::Conflict(_) => StatusCode::CONFLICT,
            AuthError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AuthError::AccessUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code of the body.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::BadRequest(_) => kisum_common::internal::INVALID_REQUEST,
            AuthError::InvalidCredentials => "invalid_credentials",
            AuthError::InvalidRefreshToken => "invalid_refresh_token",
            AuthError::InvalidResetToken => "invalid_reset_token",
            AuthError::Unauthenticated => "unauthenticated",
            AuthError::SessionRevoked => "session_revoked",
            AuthError::NoMembership | AuthError::CallerNotAllowed => "forbidden",
            AuthError::NotFound(_) => "not_found",
            AuthError::Conflict(_) => "conflict",
            AuthError::RateLimited { .. } => "rate_limited",
            AuthError::AccessUnavailable => "access_unavailable",
            AuthError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        if let AuthError::Internal(error) = &self {
            tracing::error!(error = format!("{error:#}"), "request failed");
        }
        let body = Json(serde_json::json!({ "error": self.code(), "message": self.to_string() }));
        let mut response = (self.status(), body).into_response();
        match self {
            AuthError::RateLimited { retry_after } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            AuthError::Unauthenticated | AuthError::SessionRevoked => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

pub type Result<T, E = AuthError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rate_limit_answers_429_with_retry_after_and_a_json_body() {
        let response = AuthError::RateLimited { retry_after: 42 }.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "42");
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "rate_limited");
        assert!(body["message"].as_str().unwrap().contains("42"));
    }

    #[test]
    fn internal_details_stay_out_of_the_message() {
        let error = AuthError::from(anyhow::anyhow!("password column exploded"));
        assert_eq!(error.to_string(), "internal error");
    }
}
