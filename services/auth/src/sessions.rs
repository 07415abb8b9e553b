//! Sessions: creation, the liveness check every authenticated request
//! makes (Redis revocation marker first, auth_db as the truth), and
//! revocation (auth_db first, then the marker and the removal of the
//! session entry, retried in the background while Redis is unreachable).
//!
//! The access-context routes read the marker and the session entry
//! (`session:{id}`, written only after auth_db said the session is live,
//! kept [`ROW_COPY_TTL`]) in their one Redis round trip
//! (`access::for_session`); the marker always wins over the entry, so a
//! request that read auth_db just before a revocation and writes the entry
//! just after it still cannot bring the session back.

use std::time::Duration;

use axum::http::{HeaderMap, header};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::cache::{COOL_DOWN, Cache, ROW_COPY_TTL, key};
use crate::error::{AuthError, Result};
use crate::metrics::event;
use crate::state::AppState;

/// How often a Redis write of a revocation or an epoch bump is retried
/// after a failure (just past the cool-down, so each retry reaches Redis).
const RETRY_INTERVAL: Duration = Duration::from_millis(COOL_DOWN.as_millis() as u64 + 100);
/// Retries cover the lifetime of a session entry or membership entry
/// written before the failure: after it, nothing in Redis can vouch for
/// what auth_db changed.
const RETRIES: u32 = (ROW_COPY_TTL.as_millis() / RETRY_INTERVAL.as_millis()) as u32 + 2;
/// How long this replica honours a write Redis refused: as long as the
/// retries last, past which nothing Redis held from before can remain.
const HOLD: Duration = Duration::from_millis(RETRY_INTERVAL.as_millis() as u64 * RETRIES as u64);

fn revoked_key(session: Uuid) -> String {
    key::revoked_session(session)
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
        return Err(refuse_revoked(state, identity));
    }
    Ok(())
}

/// auth_db's answer for a session no marker names, remembered in the
/// session entry when it is live.
pub async fn ensure_live_in_db(state: &AppState, identity: Identity) -> Result<()> {
    if !is_live_in_db(&state.db, identity).await? {
        mark_revoked(state, &[identity.session]).await;
        return Err(refuse_revoked(state, identity));
    }
    let _ = state
        .cache
        .set(
            &key::session(identity.session),
            &identity.user.to_string(),
            ROW_COPY_TTL,
        )
        .await;
    Ok(())
}

/// The answer to a request of a revoked or inactive session.
pub fn refuse_revoked(state: &AppState, identity: Identity) -> AuthError {
    state.metrics.event(event::REVOKED_SESSION_USE, "denied");
    tracing::warn!(
        user_id = %identity.user,
        session_id = %identity.session,
        "access denied: session revoked or inactive"
    );
    AuthError::SessionRevoked
}

/// Tells Redis about sessions auth_db already holds revoked: each gets its
/// marker and loses its session entry. Redis unreachable from here: this
/// replica reads auth_db meanwhile (every failure sends it there), and the
/// write is retried in the background, so that another replica that still
/// reaches Redis cannot trust a session entry for long.
pub async fn mark_revoked(state: &AppState, sessions: &[Uuid]) {
    if sessions.is_empty() || state.cache.revoke_sessions(sessions).await.is_ok() {
        return;
    }
    // Until Redis takes it, this replica refuses these sessions itself
    // (Redis may still answer reads with their session entries).
    state.cache.hold_revoked(sessions, HOLD);
    let sessions = sessions.to_vec();
    retry_in_background(&state.cache, "revocation", move |cache| {
        let sessions = sessions.clone();
        async move {
            let sent = cache.revoke_sessions(&sessions).await.is_ok();
            if sent {
                cache.sent_revoked(&sessions);
            }
            sent
        }
    });
}

/// After a write that changes access (`/internal/invalidate`): bumps the
/// access epoch, so no membership entry read before the write is trusted.
pub async fn bump_epoch(state: &AppState) {
    if state.cache.bump_epoch().await.is_ok() {
        return;
    }
    state.cache.hold_epoch(HOLD);
    retry_in_background(&state.cache, "access epoch bump", |cache| async move {
        let sent = cache.bump_epoch().await.is_ok();
        if sent {
            cache.sent_epoch();
        }
        sent
    });
}

fn retry_in_background<F, Fut>(cache: &Cache, what: &'static str, attempt: F)
where
    F: Fn(Cache) -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let cache = cache.clone();
    tokio::spawn(async move {
        for _ in 0..RETRIES {
            tokio::time::sleep(RETRY_INTERVAL).await;
            if attempt(cache.clone()).await {
                tracing::info!(what, "Redis write done after a retry");
                return;
            }
        }
        tracing::warn!(
            what,
            "Redis write abandoned: whatever Redis kept has expired by now"
        );
    });
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
