//! Who is calling and what they may do: the Bearer JWT verified against
//! Auth's JWKS (strict issuer and audience), then the user's platform roles
//! from Auth's `/internal/platform-access` (which also refuses a revoked
//! session). `platform-admin` may do everything; `support` may only read.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use kisum_common::telemetry::RequestContext;

use crate::error::AdminError;
use crate::state::AppState;

pub const PLATFORM_ADMIN: &str = "platform-admin";
pub const SUPPORT: &str = "support";

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Read,
    Write,
}

/// A verified admin-frontend user with live session and their roles.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: String,
    pub session: String,
    pub roles: Vec<String>,
    /// The request's id and trace, for the calls made on its behalf.
    pub context: RequestContext,
}

impl Principal {
    pub fn may(&self, permission: Permission) -> bool {
        let has = |role: &str| self.roles.iter().any(|r| r == role);
        match permission {
            Permission::Read => has(PLATFORM_ADMIN) || has(SUPPORT),
            Permission::Write => has(PLATFORM_ADMIN),
        }
    }

    /// 403 unless the roles grant `permission`.
    pub fn require(&self, permission: Permission) -> Result<&Principal, AdminError> {
        if self.may(permission) {
            return Ok(self);
        }
        tracing::warn!(
            event = "admin_access_denied",
            user_id = %self.user,
            required = ?permission,
            "platform role missing"
        );
        Err(AdminError::Forbidden {
            required: match permission {
                Permission::Read => SUPPORT,
                Permission::Write => PLATFORM_ADMIN,
            },
        })
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = AdminError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Principal, AdminError> {
        let context = parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .unwrap_or_else(RequestContext::fresh);
        let token = bearer(parts)?;
        let claims = state
            .jwks
            .verify(&state.token_policy, token)
            .await
            .map_err(|error| {
                state.metrics.event("admin_token", "rejected");
                tracing::info!(event = "auth_verification_failure", reason = %error, "token rejected");
                AdminError::Unauthenticated("invalid access token".into())
            })?;
        let roles = state
            .auth
            .platform_roles(&context, &claims.sub, &claims.sid)
            .await?
            .ok_or_else(|| {
                AdminError::Unauthenticated("the session is revoked or unknown".into())
            })?;
        Ok(Principal {
            user: claims.sub,
            session: claims.sid,
            roles,
            context,
        })
    }
}

fn bearer(parts: &Parts) -> Result<&str, AdminError> {
    parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        // The scheme is case-insensitive (RFC 7235).
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| AdminError::Unauthenticated("a Bearer access token is required".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts_with(authorization: &str) -> Parts {
        let request = axum::http::Request::builder()
            .header(AUTHORIZATION, authorization)
            .body(())
            .unwrap();
        request.into_parts().0
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        for value in ["Bearer tok", "bearer tok", "BEARER  tok ", "bEaReR tok"] {
            assert_eq!(bearer(&parts_with(value)).unwrap(), "tok", "{value}");
        }
        for value in ["Basic tok", "Bearer ", "Bearertok", "tok"] {
            assert!(bearer(&parts_with(value)).is_err(), "{value}");
        }
    }

    fn principal(roles: &[&str]) -> Principal {
        Principal {
            user: "u".into(),
            session: "s".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            context: RequestContext::fresh(),
        }
    }

    #[test]
    fn platform_admins_write_support_reads_others_do_nothing() {
        let admin = principal(&[PLATFORM_ADMIN]);
        assert!(admin.may(Permission::Read) && admin.may(Permission::Write));
        let support = principal(&[SUPPORT]);
        assert!(support.may(Permission::Read) && !support.may(Permission::Write));
        let other = principal(&["finance-manager"]);
        assert!(!other.may(Permission::Read) && !other.may(Permission::Write));
        assert!(matches!(
            other.require(Permission::Read),
            Err(AdminError::Forbidden { .. })
        ));
    }
}
