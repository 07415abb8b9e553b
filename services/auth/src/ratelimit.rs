//! Login throttling in Redis (plan 11.1), built so that nobody can lock
//! another person out:
//!
//! - `ratelimit:login:ip:{ip}` counts every attempt of a client address in
//!   a fixed window; past `LOGIN_RATE_LIMIT_PER_IP` the address gets 429s
//!   until the window ends. One address cannot spray many accounts.
//! - `ratelimit:login:email:{email}` counts the *failed* attempts on an
//!   account in the window. Past `LOGIN_RATE_LIMIT_PER_EMAIL` failures,
//!   every further failure sets `ratelimit:login:backoff:{email}` for
//!   1, 2, 4, ... seconds, capped at `LOGIN_BACKOFF_MAX_SECONDS` (60 by
//!   default): while it is set, attempts on that account are refused
//!   (429, `Retry-After`) before the password is checked.
//! - `ratelimit:login:email-ip:{email}:{ip}` marks an address that failed
//!   on that account in the window. The backoff applies only to marked
//!   addresses: the owner signing in from an address that has not failed
//!   is never slowed down by someone else's guesses, and one that has is
//!   slowed down for at most the cap. A successful login clears its own
//!   address's mark.
//!
//! With Redis down the limits are skipped (plan 11.6: login may lose rate
//! limiting); that is counted in
//! `kisum_events_total{event="login_rate_limit",outcome="skipped"}` and
//! logged by the cache at most once a minute.

use std::net::IpAddr;
use std::time::Duration;

use crate::error::{AuthError, Result};
use crate::metrics::event;
use crate::state::AppState;

pub fn ip_key(ip: IpAddr) -> String {
    format!("ratelimit:login:ip:{ip}")
}

pub fn email_key(email: &str) -> String {
    format!("ratelimit:login:email:{email}")
}

fn backoff_key(email: &str) -> String {
    format!("ratelimit:login:backoff:{email}")
}

fn failed_from_key(email: &str, ip: IpAddr) -> String {
    format!("ratelimit:login:email-ip:{email}:{ip}")
}

/// The backoff after the `failures`-th failure of a window: none up to the
/// limit, then 1 s, 2 s, 4 s, ... up to `max`.
pub fn backoff(failures: u64, limit: u64, max: Duration) -> Option<Duration> {
    let beyond = failures.checked_sub(limit).filter(|n| *n > 0)?;
    let seconds = 1u64
        .checked_shl((beyond - 1).min(63) as u32)
        .unwrap_or(u64::MAX);
    Some(Duration::from_secs(seconds).min(max))
}

/// Before the password is checked: counts the attempt against the address
/// and refuses it while the address is over its limit or the account is
/// backing off for this address.
pub async fn check_login(state: &AppState, ip: Option<IpAddr>, email: &str) -> Result<()> {
    let limits = state.config.rate_limits;
    let mut skipped = false;
    let mut retry_after = None;
    if let Some(ip) = ip {
        match state.cache.hit(&ip_key(ip), limits.window).await {
            Ok((count, ttl)) if count > limits.per_ip => retry_after = Some(ttl.max(1)),
            Ok(_) => {}
            Err(_) => skipped = true,
        }
    }
    if retry_after.is_none() {
        match backing_off(state, ip, email).await {
            Ok(wait) => retry_after = wait,
            Err(()) => skipped = true,
        }
    }
    if skipped {
        state.metrics.event(event::LOGIN_RATE_LIMIT, "skipped");
    }
    match retry_after {
        Some(retry_after) => {
            state.metrics.event(event::LOGIN_RATE_LIMIT, "limited");
            tracing::warn!(client_ip = ?ip, retry_after, "login rate limited");
            Err(AuthError::RateLimited { retry_after })
        }
        None => Ok(()),
    }
}

/// Seconds left of the account's backoff, when it applies to this address.
async fn backing_off(
    state: &AppState,
    ip: Option<IpAddr>,
    email: &str,
) -> std::result::Result<Option<u64>, ()> {
    let Some(left) = state.cache.ttl(&backoff_key(email)).await.map_err(drop)? else {
        return Ok(None);
    };
    let failed_here = match ip {
        Some(ip) => state
            .cache
            .exists(&failed_from_key(email, ip))
            .await
            .map_err(drop)?,
        // An address the server cannot tell: treated as one that failed.
        None => true,
    };
    Ok(failed_here.then_some(left.max(1)))
}

/// After a wrong password (or an unknown account): counts the failure and
/// starts or extends the account's backoff past the limit.
pub async fn login_failed(state: &AppState, ip: Option<IpAddr>, email: &str) {
    let limits = state.config.rate_limits;
    let Ok((failures, _)) = state.cache.hit(&email_key(email), limits.window).await else {
        return;
    };
    if let Some(ip) = ip {
        let _ = state
            .cache
            .set(&failed_from_key(email, ip), "1", limits.window)
            .await;
    }
    if let Some(wait) = backoff(failures, limits.per_email, limits.backoff_max) {
        let _ = state.cache.set(&backoff_key(email), "1", wait).await;
        tracing::info!(
            failures,
            backoff_seconds = wait.as_secs(),
            "login backoff started"
        );
    }
}

/// After a successful login: this address is trusted again for the account.
pub async fn login_succeeded(state: &AppState, ip: Option<IpAddr>, email: &str) {
    if let Some(ip) = ip {
        let _ = state.cache.delete(&failed_from_key(email, ip)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_past_the_limit_up_to_the_cap() {
        let max = Duration::from_secs(60);
        let waits: Vec<Option<u64>> = (4..=13)
            .map(|n| backoff(n, 5, max).map(|d| d.as_secs()))
            .collect();
        assert_eq!(
            waits,
            [
                None,
                None,
                Some(1),
                Some(2),
                Some(4),
                Some(8),
                Some(16),
                Some(32),
                Some(60),
                Some(60)
            ]
        );
        assert_eq!(backoff(u64::MAX, 5, max), Some(max));
    }
}
