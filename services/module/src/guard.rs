//! The check in front of every business route, in order: a valid bearer
//! token (signature, issuer, audience, expiry against Auth's JWKS), an
//! `x-org` header, the access context Auth computes for that user, session
//! and company, the module in that context, and the route's permission.
//!
//! Nothing else from the client is trusted: the company every handler
//! works in is the one Auth resolved, never the raw header.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kisum_common::jwks::{JwksCache, VerifyError};
use kisum_common::jwt::{Claims, TokenError, TokenPolicy};
use kisum_common::org::{OrgError, OrgRef};
use kisum_common::telemetry::{Metrics, RequestContext};
use uuid::Uuid;

use crate::access::{AccessClient, AccessContext, AccessError, AccessRequest};
use crate::error::ApiError;
use crate::module::Module;
use crate::routes::{Endpoint, Permission};

pub use kisum_common::org::ORG_HEADER;

/// Who a request acts as and for which company, once the guard let it in.
#[derive(Debug, Clone)]
pub struct Access {
    pub user: String,
    pub session: String,
    pub company: Uuid,
}

#[derive(Clone)]
pub struct Guard {
    pub module: Module,
    pub jwks: JwksCache,
    pub policy: TokenPolicy,
    pub access: AccessClient,
    pub endpoints: Arc<[Endpoint]>,
    pub metrics: Metrics,
}

/// Middleware for the business routes (a route layer, so the matched path
/// is known): lets a request through with its [`Access`], or answers.
pub async fn require_access(
    State(guard): State<Guard>,
    mut request: Request,
    next: Next,
) -> Response {
    let trace = request.extensions().get::<RequestContext>().cloned();
    let route = route_of(&request);
    match guard.admit(request.headers(), route, trace.as_ref()).await {
        Ok(access) => {
            request.extensions_mut().insert(access);
            next.run(request).await
        }
        Err(denied) => denied.into_response(),
    }
}

/// The method and matched path; HEAD is checked as the GET it mirrors.
fn route_of(request: &Request) -> Option<(Method, String)> {
    let path = request
        .extensions()
        .get::<MatchedPath>()?
        .as_str()
        .to_string();
    let method = match request.method() {
        &Method::HEAD => Method::GET,
        method => method.clone(),
    };
    Some((method, path))
}

impl Guard {
    async fn admit(
        &self,
        headers: &HeaderMap,
        route: Option<(Method, String)>,
        trace: Option<&RequestContext>,
    ) -> Result<Access, ApiError> {
        let permission = self.permission_for(route)?;
        let claims = self.authenticate(headers, trace).await?;
        let org = self.org(headers, &claims, trace)?;
        let access_request = AccessRequest {
            user: claims.sub,
            session: claims.sid,
            org,
        };
        let (mut context, cached) = self.context(&access_request, trace).await?;
        if cached && !self.allows(&context, permission) {
            // A denial is never taken from the cache: a grant made since
            // the context was kept counts at once.
            context = self.fresh_context(&access_request, trace).await?;
        }
        self.authorize(&context, permission, trace)?;
        Ok(Access {
            user: context.user.clone(),
            session: context.session.clone(),
            company: context.company,
        })
    }

    /// A business route without a permission is a bug; it is refused.
    fn permission_for(&self, route: Option<(Method, String)>) -> Result<&Permission, ApiError> {
        let Some((method, path)) = route else {
            tracing::error!("business route without a permission; refused");
            return Err(ApiError::Internal);
        };
        let on_path: Vec<_> = self.endpoints.iter().filter(|e| e.path == path).collect();
        match on_path.iter().find(|endpoint| endpoint.method == method) {
            Some(endpoint) => Ok(&endpoint.permission),
            // A known route asked with a method it does not serve.
            None if !on_path.is_empty() => Err(ApiError::MethodNotAllowed),
            None => {
                tracing::error!("business route without a permission; refused");
                Err(ApiError::Internal)
            }
        }
    }

    async fn authenticate(
        &self,
        headers: &HeaderMap,
        trace: Option<&RequestContext>,
    ) -> Result<Claims, ApiError> {
        let Some(token) = bearer_token(headers) else {
            self.verification_failed("missing", "no bearer token", trace);
            return Err(ApiError::MissingToken);
        };
        self.jwks
            .verify(&self.policy, token)
            .await
            .map_err(|error| match error {
                VerifyError::Token(reason) => {
                    self.verification_failed(token_outcome(&reason), &reason.to_string(), trace);
                    ApiError::InvalidToken
                }
                VerifyError::Jwks(reason) => {
                    self.verification_failed("jwks_unavailable", &reason.to_string(), trace);
                    ApiError::KeysUnavailable
                }
            })
    }

    fn verification_failed(&self, outcome: &str, reason: &str, trace: Option<&RequestContext>) {
        self.metrics.event("auth_verification_failure", outcome);
        tracing::warn!(
            request_id = request_id(trace),
            outcome,
            reason,
            "auth verification failure"
        );
    }

    fn org(
        &self,
        headers: &HeaderMap,
        claims: &Claims,
        trace: Option<&RequestContext>,
    ) -> Result<String, ApiError> {
        let org = org_header(headers).inspect_err(|error| {
            let outcome = match error {
                ApiError::OrgRequired => "missing",
                _ => "invalid",
            };
            self.metrics.event("x_org_resolution_failure", outcome);
            tracing::warn!(
                request_id = request_id(trace),
                user = %claims.sub,
                outcome,
                "missing/invalid x-org"
            );
        })?;
        Ok(org)
    }

    async fn context(
        &self,
        request: &AccessRequest,
        trace: Option<&RequestContext>,
    ) -> Result<(Arc<AccessContext>, bool), ApiError> {
        self.access
            .context(request, trace)
            .await
            .map_err(|error| self.context_failed(request, error, trace))
    }

    async fn fresh_context(
        &self,
        request: &AccessRequest,
        trace: Option<&RequestContext>,
    ) -> Result<Arc<AccessContext>, ApiError> {
        self.access
            .fresh(request, trace)
            .await
            .map_err(|error| self.context_failed(request, error, trace))
    }

    fn context_failed(
        &self,
        request: &AccessRequest,
        error: AccessError,
        trace: Option<&RequestContext>,
    ) -> ApiError {
        let request_id = request_id(trace);
        match error {
            AccessError::SessionRevoked => {
                tracing::warn!(
                    request_id,
                    user = %request.user,
                    session = %request.session,
                    "session revoked"
                );
                ApiError::SessionRevoked
            }
            AccessError::NotAMember => {
                self.metrics.event("x_org_resolution_failure", "forbidden");
                tracing::warn!(
                    request_id,
                    user = %request.user,
                    org = %request.org,
                    outcome = "no membership",
                    "missing/invalid x-org"
                );
                ApiError::NotAMember
            }
            AccessError::CredentialRefused | AccessError::Unavailable(_) => {
                tracing::error!(
                    request_id,
                    user = %request.user,
                    error = %error,
                    "access aggregation failure"
                );
                ApiError::AccessUnavailable
            }
        }
    }

    /// Whether the context holds the module and the permission.
    fn allows(&self, context: &AccessContext, permission: &Permission) -> bool {
        context
            .permissions(self.module)
            .is_some_and(|held| held.iter().any(|key| key == permission.0))
    }

    fn authorize(
        &self,
        context: &AccessContext,
        permission: &Permission,
        trace: Option<&RequestContext>,
    ) -> Result<(), ApiError> {
        let Some(held) = context.permissions(self.module) else {
            self.metrics
                .event("access_denied_by_module", self.module.name());
            tracing::warn!(
                request_id = request_id(trace),
                user = %context.user,
                company = %context.company,
                module = %self.module,
                "access denied by module"
            );
            return Err(ApiError::DeniedByModule);
        };
        let key = permission.to_string();
        if held.contains(&key) {
            return Ok(());
        }
        self.metrics.event("access_denied_by_permission", &key);
        tracing::warn!(
            request_id = request_id(trace),
            user = %context.user,
            company = %context.company,
            permission = %key,
            "access denied by permission"
        );
        Err(ApiError::DeniedByPermission)
    }
}

fn request_id(trace: Option<&RequestContext>) -> &str {
    trace.map_or("-", |t| t.request_id.as_str())
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn token_outcome(error: &TokenError) -> &'static str {
    match error {
        TokenError::Malformed => "malformed",
        TokenError::Algorithm(_) => "algorithm",
        TokenError::NoKid => "no_kid",
        TokenError::UnknownKid(_) => "unknown_kid",
        TokenError::Invalid(_) => "invalid",
    }
}

/// `x-org`: a company id or slug (`kisum_common::org`), passed to Auth
/// in its canonical form to resolve.
fn org_header(headers: &HeaderMap) -> Result<String, ApiError> {
    match OrgRef::from_headers(headers) {
        Ok(org) => Ok(org.to_string()),
        Err(OrgError::Missing) => Err(ApiError::OrgRequired),
        Err(OrgError::Invalid) => Err(ApiError::OrgInvalid),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn only_a_bearer_authorization_carries_a_token() {
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Basic abc")])),
            None
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer ")])),
            None
        );
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn x_org_is_required_and_must_look_like_an_id_or_slug() {
        assert!(matches!(
            org_header(&HeaderMap::new()),
            Err(ApiError::OrgRequired)
        ));
        assert!(matches!(
            org_header(&headers(&[("x-org", "  ")])),
            Err(ApiError::OrgRequired)
        ));
        assert!(matches!(
            org_header(&headers(&[("x-org", "acme/../x")])),
            Err(ApiError::OrgInvalid)
        ));
        assert_eq!(
            org_header(&headers(&[("x-org", "acme-music")])).unwrap(),
            "acme-music"
        );
        assert_eq!(
            org_header(&headers(&[(
                "x-org",
                "urn:uuid:67E55044-10B1-426F-9247-BB680E5FE0C8"
            )]))
            .unwrap(),
            "67e55044-10b1-426f-9247-bb680e5fe0c8"
        );
    }
}
