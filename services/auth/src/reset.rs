//! Password reset, in two steps:
//!
//! - `POST /auth/password-reset {email}` always answers 202, whether the
//!   account exists or not, and does its work after answering (so neither
//!   the answer nor its timing tells). For an active user it records the
//!   SHA-256 of a fresh single-use token in auth_db, valid for
//!   `PASSWORD_RESET_TTL_SECONDS` (1800), and hands the token to the mailer
//!   (`PASSWORD_RESET_MAILER_URL`, an internal service that emails it,
//!   called with the credential `PASSWORD_RESET_MAILER_CREDENTIAL` that
//!   serves for nothing else; without a URL the token is recorded but not
//!   delivered, and that is logged). Throttled in Redis per client address (a 429) and per email
//!   (requests past the limit are answered 202 and dropped).
//! - `POST /auth/password-reset/confirm {token, password}` sets the new
//!   password, uses up every outstanding token of the user, and ends every
//!   session (a reset is what one does after a compromise). A token that
//!   is unknown, used or expired is a 400 `invalid_reset_token`.

use std::net::IpAddr;
use std::time::Duration;

use kisum_common::internal::Credential;
use kisum_common::telemetry::RequestContext;
use serde::Deserialize;
use uuid::Uuid;

use crate::audit::{self, Entry, action};
use crate::directory::normalize_email;
use crate::error::{AuthError, Result};
use crate::metrics::event;
use crate::password::MAX_PASSWORD_BYTES;
use crate::sessions;
use crate::state::AppState;
use crate::tokens::RefreshToken;

/// The shortest new password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// Reset settings (`PASSWORD_RESET_*`).
#[derive(Debug, Clone)]
pub struct ResetSettings {
    pub ttl: Duration,
    pub per_email: u64,
    pub per_ip: u64,
    pub window: Duration,
    /// Where tokens are handed over for delivery; `None`: not delivered.
    pub mailer_url: Option<String>,
    /// What Auth presents to the mailer (`PASSWORD_RESET_MAILER_CREDENTIAL`,
    /// required with the URL): its own, never the credential Auth uses
    /// with Core, so a mailer that leaks loses nothing else.
    pub mailer_credential: Option<Credential>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    pub email: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetConfirmation {
    pub token: String,
    pub password: String,
}

impl std::fmt::Debug for ResetConfirmation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResetConfirmation(..)")
    }
}

/// `POST /auth/password-reset`: throttles, then answers; the token is
/// made and delivered in the background.
pub async fn request(
    state: &AppState,
    context: &RequestContext,
    request: ResetRequest,
    ip: Option<IpAddr>,
) -> Result<()> {
    let email = normalize_email(&request.email);
    if email.is_empty() || email.len() > 254 {
        return Err(AuthError::BadRequest("an email is required".into()));
    }
    let settings = &state.config.password_reset;
    if let Some(ip) = ip {
        let key = format!("ratelimit:password-reset:ip:{ip}");
        crate::ratelimit::enforce(
            state,
            event::PASSWORD_RESET_RATE_LIMIT,
            &[(key, settings.per_ip)],
            settings.window,
        )
        .await?;
    }
    let key = format!("ratelimit:password-reset:email:{email}");
    let per_email = [(key, settings.per_email)];
    if crate::ratelimit::enforce(
        state,
        event::PASSWORD_RESET_RATE_LIMIT,
        &per_email,
        settings.window,
    )
    .await
    .is_err()
    {
        // Answered like any other request: the email's owner is not flooded.
        return Ok(());
    }
    let (state, context) = (state.clone(), context.clone());
    tokio::spawn(async move {
        if let Err(error) = issue(&state, &context, &email, ip).await {
            state.metrics.event(event::PASSWORD_RESET, "failure");
            tracing::error!(
                error = format!("{error:#}"),
                "password reset request failed"
            );
        }
    });
    Ok(())
}

/// Records a token for an active user and hands it to the mailer.
async fn issue(
    state: &AppState,
    context: &RequestContext,
    email: &str,
    ip: Option<IpAddr>,
) -> anyhow::Result<()> {
    let settings = &state.config.password_reset;
    let user: Option<Uuid> =
        sqlx::query_scalar("select id from users where email = $1 and status = 'active'")
            .bind(email)
            .fetch_optional(&state.db)
            .await?;
    let Some(user) = user else {
        state
            .metrics
            .event(event::PASSWORD_RESET, "unknown_account");
        return Ok(());
    };
    let token = RefreshToken::generate();
    let mut tx = state.db.begin().await?;
    sqlx::query(
        "insert into password_resets (token_hash, user_id, expires_at)
         values ($1, $2, now() + make_interval(secs => $3))",
    )
    .bind(token.hash())
    .bind(user)
    .bind(settings.ttl.as_secs_f64())
    .execute(&mut *tx)
    .await?;
    let entry = Entry::new(action::PASSWORD_RESET_REQUESTED)
        .user(user)
        .client_ip(ip);
    audit::record(&mut *tx, entry).await?;
    tx.commit().await?;
    let (Some(mailer), Some(credential)) = (&settings.mailer_url, &settings.mailer_credential)
    else {
        state.metrics.event(event::PASSWORD_RESET, "undelivered");
        tracing::warn!(user_id = %user, "password reset recorded but not delivered: PASSWORD_RESET_MAILER_URL is not set");
        return Ok(());
    };
    let mut headers = context.outgoing();
    credential.apply(&mut headers);
    let body = serde_json::json!({
        "email": email,
        "token": token.into_string(),
        "expires_in": settings.ttl.as_secs(),
    });
    let response = reqwest::Client::new()
        .post(format!("{mailer}/password-reset"))
        .headers(headers)
        .timeout(Duration::from_secs(10))
        .json(&body)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("the mailer is unreachable: {}", e.without_url()))?;
    anyhow::ensure!(
        response.status().is_success(),
        "the mailer answered {}",
        response.status()
    );
    state.metrics.event(event::PASSWORD_RESET, "delivered");
    tracing::info!(user_id = %user, "password reset token handed to the mailer");
    Ok(())
}

/// `POST /auth/password-reset/confirm`.
pub async fn confirm(
    state: &AppState,
    confirmation: ResetConfirmation,
    ip: Option<IpAddr>,
) -> Result<()> {
    let password = confirmation.password;
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::BadRequest(format!(
            "the new password needs {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    let invalid = || {
        state.metrics.event(event::PASSWORD_RESET, "invalid_token");
        AuthError::InvalidResetToken
    };
    let token = RefreshToken::parse(&confirmation.token).ok_or_else(invalid)?;
    // Hashing is costly: only for a token that is live now (checked again
    // under the row lock below).
    let live: bool = sqlx::query_scalar(
        "select exists (select 1 from password_resets
                         where token_hash = $1 and used_at is null and expires_at > now())",
    )
    .bind(token.hash())
    .fetch_one(&state.db)
    .await?;
    if !live {
        return Err(invalid());
    }
    let hash = state.passwords.hash(password).await?;
    let mut tx = state.db.begin().await?;
    let found: Option<(Uuid, String)> = sqlx::query_as(
        "select r.user_id, u.email from password_resets r join users u on u.id = r.user_id
          where r.token_hash = $1 and r.used_at is null and r.expires_at > now()
            and u.status = 'active'
          for update of r",
    )
    .bind(token.hash())
    .fetch_optional(&mut *tx)
    .await?;
    let (user, email) = found.ok_or_else(invalid)?;
    sqlx::query("update users set password_hash = $2 where id = $1")
        .bind(user)
        .bind(&hash)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "update password_resets set used_at = now() where user_id = $1 and used_at is null",
    )
    .bind(user)
    .execute(&mut *tx)
    .await?;
    let revoked = sessions::revoke_all_of_user(&mut tx, user, "password_reset").await?;
    let entry = Entry::new(action::PASSWORD_RESET)
        .user(user)
        .client_ip(ip)
        .detail(serde_json::json!({ "revoked_sessions": revoked }));
    audit::record(&mut *tx, entry).await?;
    tx.commit().await?;
    sessions::mark_revoked(state, &revoked).await;
    crate::ratelimit::clear_account(state, &email).await;
    state.metrics.event(event::PASSWORD_RESET, "success");
    tracing::info!(user_id = %user, revoked = revoked.len(), "password reset");
    Ok(())
}
