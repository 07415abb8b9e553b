//! The HTTP surface: thin handlers over the login, session and access
//! logic. Public routes on `HTTP_PORT`, internal ones (credential checked
//! by `kisum-common`) on `INTERNAL_PORT`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kisum_common::internal::Caller;
use kisum_common::telemetry::RequestContext;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::access::{self, Answer};
use crate::error::{AuthError, Result};
use crate::login::{self, Credentials};
use crate::sessions::{self, Identity};
use crate::state::AppState;
use crate::{administration, directory, reset};

pub use kisum_common::org::ORG_HEADER as X_ORG;
use kisum_common::org::OrgRef;

/// Every route with what it requires, for `/internal/diagnostics`.
pub fn route_requirements() -> BTreeMap<String, String> {
    [
        ("POST /auth/login", ""),
        ("POST /auth/refresh", "refresh token"),
        ("POST /auth/logout", "access or refresh token"),
        ("POST /auth/logout-all", "access token"),
        ("POST /auth/password-reset", ""),
        ("POST /auth/password-reset/confirm", "reset token"),
        ("GET /auth/me", "access token"),
        ("GET /auth/me/access", "access token, x-org"),
        ("GET /.well-known/jwks.json", ""),
        ("POST /internal/access-context", "internal caller"),
        (
            "POST /internal/invalidate",
            "internal caller: platform-admin, kisumctl",
        ),
        (
            "POST /internal/platform-access",
            "internal caller: platform-admin, kisumctl",
        ),
        (
            "GET /internal/core-reachability",
            "internal caller: platform-admin, kisumctl",
        ),
    ]
    .into_iter()
    .chain(
        administration::ROUTES
            .iter()
            .map(|route| (*route, "internal caller: platform-admin, kisumctl")),
    )
    .map(|(route, needs)| (route.to_string(), needs.to_string()))
    .collect()
}

pub fn public(state: AppState) -> Router {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
        .route("/auth/logout-all", post(logout_all))
        .route("/auth/password-reset", post(password_reset))
        .route("/auth/password-reset/confirm", post(password_reset_confirm))
        .route("/auth/me", get(me))
        .route("/auth/me/access", get(me_access))
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(state)
}

pub fn internal(state: AppState) -> Router {
    let administration = Router::new()
        .route("/internal/invalidate", post(invalidate))
        .route("/internal/platform-access", post(platform_access))
        .merge(administration::router())
        .route("/internal/core-reachability", get(core_reachability))
        .route_layer(axum::middleware::from_fn(administrators_only));
    Router::new()
        .route("/internal/access-context", post(access_context))
        .merge(administration)
        .with_state(state)
}

/// A JSON body; a malformed one is a 400 with the usual error body.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> Body<T> {
    fn parse(bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| AuthError::BadRequest(format!("body: {e}")))
    }
}

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = AuthError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self> {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json"));
        if !json {
            return Err(AuthError::BadRequest(
                "the body must be application/json".into(),
            ));
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| AuthError::BadRequest(e.body_text()))?;
        Self::parse(&bytes).map(Body)
    }
}

/// The address the request is counted under (see `client_ip`); `None`
/// when the server was started without peer addresses.
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        Ok(ClientIp(peer.map(|peer| {
            state.config.trusted_proxies.client_ip(peer, &parts.headers)
        })))
    }
}

/// The request's trace context (set by the tracking middleware).
pub struct Trace(pub RequestContext);

impl<S: Send + Sync> FromRequestParts<S> for Trace {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let context = parts.extensions.get::<RequestContext>().cloned();
        Ok(Trace(context.unwrap_or_else(RequestContext::fresh)))
    }
}

/// Token responses must never be cached.
fn no_store(body: impl serde::Serialize) -> Response {
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Body(credentials): Body<Credentials>,
) -> Result<Response> {
    let tokens = login::login(&state, credentials, ip).await?;
    Ok(no_store(tokens))
}

#[derive(Deserialize)]
struct RefreshRequest {
    refresh_token: String,
}

async fn refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Body(request): Body<RefreshRequest>,
) -> Result<Response> {
    let tokens = login::refresh(&state, &request.refresh_token, ip).await?;
    Ok(no_store(tokens))
}

#[derive(Deserialize, Default)]
struct LogoutRequest {
    refresh_token: Option<String>,
}

async fn logout(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<StatusCode> {
    let request: LogoutRequest = if body.is_empty() {
        LogoutRequest::default()
    } else {
        Body::parse(&body)?
    };
    login::logout(&state, &headers, request.refresh_token.as_deref(), ip).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn password_reset(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Trace(trace): Trace,
    Body(request): Body<reset::ResetRequest>,
) -> Result<StatusCode> {
    reset::request(&state, &trace, request, ip).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn password_reset_confirm(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Body(confirmation): Body<reset::ResetConfirmation>,
) -> Result<StatusCode> {
    reset::confirm(&state, confirmation, ip).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn logout_all(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Result<StatusCode> {
    let identity = sessions::authenticate(&state, &headers).await?;
    login::logout_all(&state, identity, ip).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(State(state): State<AppState>, headers: HeaderMap) -> Result<Response> {
    let identity = sessions::authenticate(&state, &headers).await?;
    let email: String = sqlx::query_scalar("select email from users where id = $1")
        .bind(identity.user)
        .fetch_one(&state.db)
        .await?;
    let companies: Vec<(Uuid, String, String, Uuid, String)> = sqlx::query_as(
        "select c.id, c.slug, c.name, m.id, m.role
           from memberships m join companies c on c.id = m.company_id
          where m.user_id = $1 and m.status = 'active' and c.status = 'active'
          order by c.slug",
    )
    .bind(identity.user)
    .fetch_all(&state.db)
    .await?;
    let companies: Vec<_> = companies
        .into_iter()
        .map(|(id, slug, name, membership, role)| {
            serde_json::json!({ "company": id, "slug": slug, "name": name,
                                "membership": membership, "role": role })
        })
        .collect();
    Ok(no_store(serde_json::json!({
        "user": identity.user,
        "email": email,
        "session": identity.session,
        "platform_roles": directory::platform_roles(&state.db, identity.user).await?,
        "companies": companies,
    })))
}

async fn me_access(
    State(state): State<AppState>,
    Trace(trace): Trace,
    headers: HeaderMap,
) -> Result<Answer> {
    let identity = sessions::verify_access_token(&state, &headers)?;
    // A missing or malformed `x-org` is a 400, as in the module backends
    // (one parser); a well-formed one naming no company of the user, a 403.
    let org = match OrgRef::from_headers(&headers) {
        Ok(org) => org.to_string(),
        Err(error) => {
            // A revoked session is told so first, as on every other route.
            sessions::ensure_live(&state, identity).await?;
            return Err(AuthError::BadRequest(format!(
                "{error}: the x-org header names the company"
            )));
        }
    };
    // The session check and the context together (one Redis round trip warm).
    access::for_session(&state, &trace, identity, &org).await
}

async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(state.keys.current().jwks.clone()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}

#[derive(Deserialize)]
struct SessionRef {
    user: String,
    session: String,
}

impl SessionRef {
    /// Unparseable ids name no session: 401 like an unknown one.
    fn identity(&self) -> Result<Identity> {
        let parse = |v: &str| Uuid::parse_str(v).map_err(|_| AuthError::SessionRevoked);
        Ok(Identity {
            user: parse(&self.user)?,
            session: parse(&self.session)?,
        })
    }
}

#[derive(Deserialize)]
struct AccessRequest {
    #[serde(flatten)]
    session: SessionRef,
    org: String,
}

async fn access_context(
    State(state): State<AppState>,
    Trace(trace): Trace,
    Body(request): Body<AccessRequest>,
) -> Result<Answer> {
    let identity = request.session.identity()?;
    access::for_session(&state, &trace, identity, &request.org).await
}

#[derive(Deserialize)]
struct InvalidateRequest {
    company: Option<Uuid>,
    user: Option<Uuid>,
}

/// The callers that administer the platform; the module backends only
/// read access contexts.
const ADMINISTRATORS: [&str; 2] = ["platform-admin", "kisumctl"];

/// Route layer behind the credential check (which proved the `Caller`).
async fn administrators_only(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let caller = request.extensions().get::<Caller>().map(|c| c.0.clone());
    match caller {
        Some(caller) if ADMINISTRATORS.contains(&caller.as_str()) => next.run(request).await,
        caller => {
            tracing::warn!(caller = ?caller, path = %request.uri().path(), "internal route refused to this caller");
            AuthError::CallerNotAllowed.into_response()
        }
    }
}

async fn invalidate(
    State(state): State<AppState>,
    Body(request): Body<InvalidateRequest>,
) -> Result<Json<serde_json::Value>> {
    match (request.company, request.user) {
        (Some(company), None) => {
            let version = access::invalidate_company(&state, company).await?;
            Ok(Json(
                serde_json::json!({ "company": company, "access_version": version }),
            ))
        }
        (None, Some(user)) => {
            let version = access::invalidate_user(&state, user).await?;
            Ok(Json(
                serde_json::json!({ "user": user, "access_version": version }),
            ))
        }
        _ => Err(AuthError::BadRequest(
            "name exactly one of `company` or `user`".into(),
        )),
    }
}

/// Whether Auth reaches Platform Core with its own credential (the
/// "validate internal Auth <-> Core" step of a release, plan 25.1): 200
/// with the latency, or 502 naming what failed.
async fn core_reachability(State(state): State<AppState>, Trace(context): Trace) -> Response {
    match state.core.probe(&context).await {
        Ok(took) => Json(serde_json::json!({
            "core": "reachable",
            "milliseconds": took.as_millis(),
        }))
        .into_response(),
        Err(error) => {
            tracing::warn!(error = %error, "Platform Core probe failed");
            (
                StatusCode::BAD_GATEWAY,
                Json(serde_json::json!({ "core": "unreachable", "error": error.to_string() })),
            )
                .into_response()
        }
    }
}

async fn platform_access(
    State(state): State<AppState>,
    Body(request): Body<SessionRef>,
) -> Result<Json<serde_json::Value>> {
    let identity = request.identity()?;
    sessions::ensure_live(&state, identity).await?;
    let roles = directory::platform_roles(&state.db, identity.user).await?;
    Ok(Json(serde_json::json!({
        "user": identity.user,
        "session": identity.session,
        "platform_roles": roles,
    })))
}
