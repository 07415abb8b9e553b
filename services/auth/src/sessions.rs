//! Sessions: creation, the liveness check every authenticated request
//! makes (Redis revocation marker first, auth_db as the truth), and
//! revocation (auth_db first, then the marker, best effort).

use std::time::Duration;

use axum::http::{HeaderMap, header};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::{AuthError, Result};
use crate::metrics::event;
use crate::state::AppState;

/// `redis.key-families.revoked-session.ttl-seconds`: the access-token
/// lifetime plus clock skew, so no token of a revoked session outlives it.
const REVOKED_MARKER_TTL: Duration = Duration::from_secs(960);

fn revoked_key(session: Uuid) -> String {
    format!("revoked:session:{session}")
}

/// Who an authenticated request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub user: Uuid,
    pub session: Uuid,
}

/// Starts a session for the user; the session is its own family.
pub async fn create(tx: &mut PgConnection, user: Uuid) -> sqlx::Result<Uuid> {
    let id = Uuid::new_v4();
    sqlx::query(
        "insert into sessions (id, user_id, family_id, token_version)
         select $1, id, $1, token_version from users where id = $2",
    )
    .bind(id)
    .bind(user)
    .execute(&mut *tx)
    .await?;
    Ok(id)
}

/// Whether auth_db holds the session as live: not revoked, of this user,
/// the user active and not logged out everywhere since.
async fn is_live_in_db(db: &PgPool, identity: Identity) -> sqlx::Result<bool> {
    let live: Option<bool> = sqlx::query_scalar(
        "select s.revoked_at is null and u.status = 'active' and s.token_version = u.token_version
           from sessions s join users u on u.id = s.user_id
          where s.id = $1 and s.user_id = $2",
    )
    .bind(identity.session)
    .bind(identity.user)
    .fetch_optional(db)
    .await?;
    Ok(live.unwrap_or(false))
}

/// The check of every authenticated request.
pub async fn ensure_live(state: &AppState, identity: Identity) -> Result<()> {
    let marked = state.cache.exists(&revoked_key(identity.session)).await == Ok(true);
    if marked || !is_live_in_db(&state.db, identity).await? {
        if !marked {
            mark_revoked(state, &[identity.session]).await;
        }
        state.metrics.event(event::REVOKED_SESSION_USE, "denied");
        tracing::warn!(
            user_id = %identity.user,
            session_id = %identity.session,
            "access denied: session revoked or inactive"
        );
        return Err(AuthError::SessionRevoked);
    }
    Ok(())
}

/// Sets the Redis markers of revoked sessions (auth_db already says so).
pub async fn mark_revoked(state: &AppState, sessions: &[Uuid]) {
    for session in sessions {
        let key = revoked_key(*session);
        if state
            .cache
            .set(&key, "1", REVOKED_MARKER_TTL)
            .await
            .is_err()
        {
            // Redis is down: auth_db alone enforces the revocation.
            return;
        }
    }
}

/// Revokes one live session; returns whether it was live.
pub async fn revoke(db: &mut PgConnection, session: Uuid, reason: &str) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update sessions set revoked_at = now(), revoked_reason = $2
          where id = $1 and revoked_at is null",
    )
    .bind(session)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Revokes every live session of a family; returns their ids.
pub async fn revoke_family(
    db: &mut PgConnection,
    family: Uuid,
    reason: &str,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "update sessions set revoked_at = now(), revoked_reason = $2
          where family_id = $1 and revoked_at is null
         returning id",
    )
    .bind(family)
    .bind(reason)
    .fetch_all(db)
    .await
}

/// Revokes every live session of a user and bumps the user's token
/// version, so no session created before this moment can come back.
pub async fn revoke_all_of_user(
    db: &mut PgConnection,
    user: Uuid,
    reason: &str,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query("update users set token_version = token_version + 1 where id = $1")
        .bind(user)
        .execute(&mut *db)
        .await?;
    sqlx::query_scalar(
        "update sessions set revoked_at = now(), revoked_reason = $2
          where user_id = $1 and revoked_at is null
         returning id",
    )
    .bind(user)
    .bind(reason)
    .fetch_all(db)
    .await
}

/// The bearer token of the `Authorization` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The identity a valid access token names, signature and claims checked
/// but not yet the session.
pub fn verify_access_token(state: &AppState, headers: &HeaderMap) -> Result<Identity> {
    let token = bearer(headers).ok_or(AuthError::Unauthenticated)?;
    let claims = state
        .keys
        .verify(&state.config.policy, token)
        .map_err(|error| {
            state.metrics.event(event::ACCESS_TOKEN, "rejected");
            tracing::info!(reason = %error, "access token rejected");
            AuthError::Unauthenticated
        })?;
    let parse = |value: &str| Uuid::parse_str(value).map_err(|_| AuthError::Unauthenticated);
    Ok(Identity {
        user: parse(&claims.sub)?,
        session: parse(&claims.sid)?,
    })
}

/// A valid access token whose session is live.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Identity> {
    let identity = verify_access_token(state, headers)?;
    ensure_live(state, identity).await?;
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn only_a_bearer_authorization_carries_a_token() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&headers), None);
    }
}
