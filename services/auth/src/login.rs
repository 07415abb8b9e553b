//! Login, refresh-token rotation and logout.

use std::net::IpAddr;

use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit::{self, Entry, action};
use crate::directory::normalize_email;
use crate::error::{AuthError, Result};
use crate::metrics::event;
use crate::password::MAX_PASSWORD_BYTES;
use crate::ratelimit;
use crate::sessions::{self, Identity};
use crate::state::{AppState, unix_now};
use crate::tokens::{RefreshToken, TokenPair};

#[derive(Deserialize)]
pub struct Credentials {
    pub email: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

struct UserRow {
    id: Uuid,
    password_hash: String,
    active: bool,
}

async fn find_user(state: &AppState, email: &str) -> Result<Option<UserRow>> {
    let row: Option<(Uuid, String, bool)> =
        sqlx::query_as("select id, password_hash, status = 'active' from users where email = $1")
            .bind(email)
            .fetch_optional(&state.db)
            .await?;
    Ok(row.map(|(id, password_hash, active)| UserRow {
        id,
        password_hash,
        active,
    }))
}

/// `POST /auth/login`.
pub async fn login(
    state: &AppState,
    credentials: Credentials,
    ip: Option<IpAddr>,
) -> Result<TokenPair> {
    let email = normalize_email(&credentials.email);
    if email.is_empty() || credentials.password.is_empty() {
        return Err(AuthError::BadRequest(
            "email and password are required".into(),
        ));
    }
    if email.len() > 254 || credentials.password.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::BadRequest(format!(
            "email may hold at most 254 bytes and password at most {MAX_PASSWORD_BYTES}"
        )));
    }
    ratelimit::check_login(state, ip, &email).await?;
    let user = find_user(state, &email).await?;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let matches = state.passwords.verify(credentials.password, hash).await?;
    let failed = |user: Option<Uuid>, reason| login_failed(state, user, reason, ip, &email);
    match user {
        Some(user) if matches && user.active => {
            ratelimit::login_succeeded(state, ip, &email).await;
            start_session(state, user.id, ip).await
        }
        Some(user) if matches => failed(Some(user.id), "disabled").await,
        Some(user) => failed(Some(user.id), "wrong_password").await,
        None => failed(None, "unknown_user").await,
    }
}

async fn login_failed(
    state: &AppState,
    user: Option<Uuid>,
    reason: &str,
    ip: Option<IpAddr>,
    email: &str,
) -> Result<TokenPair> {
    ratelimit::login_failed(state, ip, email).await;
    state.metrics.event(event::LOGIN, "failure");
    tracing::info!(
        user_id = user.map(tracing::field::display),
        reason,
        client_ip = ip.map(tracing::field::display),
        "login failure"
    );
    let mut entry = Entry::new(action::LOGIN_FAILURE)
        .client_ip(ip)
        .detail(serde_json::json!({ "reason": reason }));
    entry.user = user;
    audit::record(&state.db, entry).await?;
    Err(AuthError::InvalidCredentials)
}

async fn insert_refresh_token(
    db: &mut PgConnection,
    session: Uuid,
    ttl: i64,
) -> sqlx::Result<RefreshToken> {
    let token = RefreshToken::generate();
    sqlx::query(
        "insert into refresh_tokens (token_hash, session_id, expires_at)
         values ($1, $2, now() + make_interval(secs => $3))",
    )
    .bind(token.hash())
    .bind(session)
    .bind(ttl as f64)
    .execute(db)
    .await?;
    Ok(token)
}

fn sign_access_token(state: &AppState, identity: Identity) -> Result<String> {
    state
        .keys
        .sign(
            &state.config.policy,
            &identity.user.to_string(),
            &identity.session.to_string(),
            unix_now(),
            state.config.access_ttl,
        )
        .map_err(|e| {
            AuthError::Internal(anyhow::anyhow!(
                "cannot sign: {}",
                crate::keys::safe_message(&e)
            ))
        })
}

async fn start_session(state: &AppState, user: Uuid, ip: Option<IpAddr>) -> Result<TokenPair> {
    let mut tx = state.db.begin().await?;
    let session = sessions::create(&mut tx, user).await?;
    let refresh = insert_refresh_token(&mut tx, session, state.config.refresh_ttl).await?;
    let entry = Entry::new(action::LOGIN_SUCCESS)
        .user(user)
        .session(session)
        .client_ip(ip);
    audit::record(&mut *tx, entry).await?;
    tx.commit().await?;
    let access = sign_access_token(state, Identity { user, session })?;
    state.metrics.event(event::LOGIN, "success");
    tracing::info!(user_id = %user, session_id = %session, "login success");
    Ok(TokenPair::new(access, refresh, state.config.access_ttl))
}

/// The refresh token a request presents, with its session's state.
struct Presented {
    session: Uuid,
    user: Uuid,
    family: Uuid,
    used: bool,
    expired: bool,
    live: bool,
}

async fn lock_refresh_token(db: &mut PgConnection, hash: &[u8]) -> sqlx::Result<Option<Presented>> {
    let row: Option<(Uuid, Uuid, Uuid, bool, bool, bool)> = sqlx::query_as(
        "select s.id, s.user_id, s.family_id,
                rt.used_at is not null,
                rt.expires_at <= now(),
                s.revoked_at is null and u.status = 'active' and s.token_version = u.token_version
           from refresh_tokens rt
           join sessions s on s.id = rt.session_id
           join users u on u.id = s.user_id
          where rt.token_hash = $1
          for update of rt",
    )
    .bind(hash)
    .fetch_optional(db)
    .await?;
    Ok(
        row.map(|(session, user, family, used, expired, live)| Presented {
            session,
            user,
            family,
            used,
            expired,
            live,
        }),
    )
}

fn refresh_failed(state: &AppState, presented: Option<&Presented>, reason: &str) -> AuthError {
    state.metrics.event(event::REFRESH, "failure");
    tracing::info!(
        user_id = presented.map(|p| tracing::field::display(p.user)),
        session_id = presented.map(|p| tracing::field::display(p.session)),
        reason,
        "refresh failure"
    );
    AuthError::InvalidRefreshToken
}

/// `POST /auth/refresh`: rotates the refresh token. A token presented a
/// second time means it was stolen or replayed: its whole session family
/// is revoked.
pub async fn refresh(state: &AppState, presented: &str, ip: Option<IpAddr>) -> Result<TokenPair> {
    let Some(token) = RefreshToken::parse(presented) else {
        return Err(refresh_failed(state, None, "malformed"));
    };
    ratelimit::check_refresh_address(state, ip).await?;
    let hash = token.hash();
    let mut tx = state.db.begin().await?;
    let Some(found) = lock_refresh_token(&mut tx, &hash).await? else {
        return Err(refresh_failed(state, None, "unknown"));
    };
    ratelimit::check_refresh_session(state, found.session).await?;
    if found.used {
        let revoked = sessions::revoke_family(&mut tx, found.family, "refresh_token_reuse").await?;
        let entry = Entry::new(action::REFRESH_REUSE)
            .user(found.user)
            .session(found.session)
            .client_ip(ip)
            .detail(serde_json::json!({ "family": found.family, "revoked_sessions": revoked }));
        audit::record(&mut *tx, entry).await?;
        tx.commit().await?;
        sessions::mark_revoked(state, &revoked).await;
        tracing::warn!(
            user_id = %found.user,
            session_id = %found.session,
            family_id = %found.family,
            revoked = revoked.len(),
            "session revoked: refresh token reused"
        );
        return Err(refresh_failed(state, Some(&found), "reused"));
    }
    if !found.live {
        return Err(refresh_failed(state, Some(&found), "session_revoked"));
    }
    if found.expired {
        return Err(refresh_failed(state, Some(&found), "expired"));
    }
    let next = insert_refresh_token(&mut tx, found.session, state.config.refresh_ttl).await?;
    sqlx::query(
        "update refresh_tokens set used_at = now(), replaced_by = $2 where token_hash = $1",
    )
    .bind(&hash)
    .bind(next.hash())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let identity = Identity {
        user: found.user,
        session: found.session,
    };
    let access = sign_access_token(state, identity)?;
    state.metrics.event(event::REFRESH, "success");
    tracing::info!(user_id = %found.user, session_id = %found.session, "refresh success");
    Ok(TokenPair::new(access, next, state.config.access_ttl))
}

/// The session a logout names: the bearer token's, else the refresh
/// token's (a client whose access token expired can still log out).
async fn session_to_end(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    refresh_token: Option<&str>,
) -> Result<Identity> {
    // A valid access token names the session; an expired one (the usual
    // case for a client logging out later) falls back to the refresh token.
    if sessions::bearer(headers).is_some() {
        match sessions::verify_access_token(state, headers) {
            Ok(identity) => return Ok(identity),
            Err(error) if refresh_token.is_none() => return Err(error),
            Err(_) => {}
        }
    }
    let token = refresh_token
        .and_then(RefreshToken::parse)
        .ok_or(AuthError::Unauthenticated)?;
    let row: Option<(Uuid, Uuid)> = sqlx::query_as(
        "select s.user_id, s.id from refresh_tokens rt join sessions s on s.id = rt.session_id
          where rt.token_hash = $1",
    )
    .bind(token.hash())
    .fetch_optional(&state.db)
    .await?;
    let (user, session) = row.ok_or(AuthError::Unauthenticated)?;
    Ok(Identity { user, session })
}

/// `POST /auth/logout`: ends one session. A session already ended (by a
/// logout, logout-all, a refresh-token reuse or a password reset) is a
/// 401 `session_revoked`, as on every other route that presents it.
pub async fn logout(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    refresh_token: Option<&str>,
    ip: Option<IpAddr>,
) -> Result<()> {
    let identity = session_to_end(state, headers, refresh_token).await?;
    let mut tx = state.db.begin().await?;
    if !sessions::revoke(&mut tx, identity.session, "logout").await? {
        tracing::info!(
            user_id = %identity.user,
            session_id = %identity.session,
            "logout refused: the session is already revoked"
        );
        return Err(AuthError::SessionRevoked);
    }
    let entry = Entry::new(action::LOGOUT)
        .user(identity.user)
        .session(identity.session)
        .client_ip(ip);
    audit::record(&mut *tx, entry).await?;
    tx.commit().await?;
    sessions::mark_revoked(state, &[identity.session]).await;
    state.metrics.event(event::LOGOUT, "success");
    tracing::info!(user_id = %identity.user, session_id = %identity.session, "logout");
    Ok(())
}

/// `POST /auth/logout-all`: ends every session of the user.
pub async fn logout_all(state: &AppState, identity: Identity, ip: Option<IpAddr>) -> Result<usize> {
    let mut tx = state.db.begin().await?;
    let revoked = sessions::revoke_all_of_user(&mut tx, identity.user, "logout_all").await?;
    let entry = Entry::new(action::LOGOUT_ALL)
        .user(identity.user)
        .session(identity.session)
        .client_ip(ip)
        .detail(serde_json::json!({ "revoked_sessions": revoked }));
    audit::record(&mut *tx, entry).await?;
    tx.commit().await?;
    sessions::mark_revoked(state, &revoked).await;
    state.metrics.event(event::LOGOUT_ALL, "success");
    tracing::info!(
        user_id = %identity.user,
        session_id = %identity.session,
        revoked = revoked.len(),
        "logout-all"
    );
    Ok(revoked.len())
}
