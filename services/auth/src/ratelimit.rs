//! Login throttling in Redis (plan 11.1), built so that nobody can lock
//! another person out:
//!
//! - `ratelimit:login:ip:{ip}` counts every attempt of a client address in
//!   a fixed window; past `LOGIN_RATE_LIMIT_PER_IP` the address gets 429s
//!   until the window ends. One address cannot spray many accounts.
//! - `ratelimit:login:email:{email}` counts the *failed* attempts on an
//!   account in the window. Past `LOGIN_RATE_LIMIT_PER_EMAIL` failures,
//!   every further failure makes the address it came from wait 1, 2, 4,
//!   ... seconds, capped at `LOGIN_BACKOFF_MAX_SECONDS` (60 by default),
//!   and sets `ratelimit:login:backoff:{email}` (the account is backing
//!   off; it lasts at most the cap after the last failure).
//! - `ratelimit:login:email-ip:{email}:{ip}` marks an address that failed
//!   on that account in the window; its value is the unix time until
//!   which that address waits. The wait runs from the address's *own*
//!   last failure: failures from other addresses never extend it, so an
//!   address that failed waits at most the cap, and its next attempt is
//!   checked. While it waits, its attempts are refused (429,
//!   `Retry-After`) before the password is checked. The owner signing in
//!   from an address that has not failed is never slowed down by someone
//!   else's guesses. A successful login clears its own address's mark; a
//!   password reset clears the account's backoff.
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

/// An address the server cannot tell shares the `unknown` mark.
fn failed_from_key(email: &str, ip: Option<IpAddr>) -> String {
    match ip {
        Some(ip) => format!("ratelimit:login:email-ip:{email}:{ip}"),
        None => format!("ratelimit:login:email-ip:{email}:unknown"),
    }
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

/// Counts one hit on each `(key, limit)` counter of a fixed `window`: the
/// seconds until the fullest exceeded one resets, if any is exceeded.
/// `Err` when Redis could not count (the caller skips the limit).
async fn over_limit(
    state: &AppState,
    counters: &[(String, u64)],
    window: Duration,
) -> std::result::Result<Option<u64>, ()> {
    let mut retry_after: Option<u64> = None;
    for (key, limit) in counters {
        let (count, ttl) = state.cache.hit(key, window).await.map_err(drop)?;
        if count > *limit {
            retry_after = Some(retry_after.unwrap_or(0).max(ttl.max(1)));
        }
    }
    Ok(retry_after)
}

/// Refuses with a 429 when `over_limit` says so; counts a skip (Redis down).
pub async fn enforce(
    state: &AppState,
    metric: &str,
    counters: &[(String, u64)],
    window: Duration,
) -> Result<()> {
    match over_limit(state, counters, window).await {
        Ok(None) => Ok(()),
        Ok(Some(retry_after)) => {
            state.metrics.event(metric, "limited");
            tracing::warn!(limit = metric, retry_after, "rate limited");
            Err(AuthError::RateLimited { retry_after })
        }
        Err(()) => {
            state.metrics.event(metric, "skipped");
            Ok(())
        }
    }
}

/// `POST /auth/refresh`, before the token is looked up: the client
/// address's refreshes (`ratelimit:refresh:ip:{ip}`).
pub async fn check_refresh_address(state: &AppState, ip: Option<IpAddr>) -> Result<()> {
    let limits = state.config.refresh_limits;
    let counters: Vec<(String, u64)> = ip
        .map(|ip| (format!("ratelimit:refresh:ip:{ip}"), limits.per_ip))
        .into_iter()
        .collect();
    enforce(state, event::REFRESH_RATE_LIMIT, &counters, limits.window).await
}

/// `POST /auth/refresh`, once the token names its session: that session's
/// refreshes (`ratelimit:refresh:session:{session}`). A client refreshing
/// in a loop is stopped before it rotates anything.
pub async fn check_refresh_session(state: &AppState, session: uuid::Uuid) -> Result<()> {
    let limits = state.config.refresh_limits;
    let counters = [(
        format!("ratelimit:refresh:session:{session}"),
        limits.per_session,
    )];
    enforce(state, event::REFRESH_RATE_LIMIT, &counters, limits.window).await
}

/// Before the password is checked: counts the attempt against the address
/// and refuses it while the address is over its limit or the account is
/// backing off for this address.
pub async fn check_login(state: &AppState, ip: Option<IpAddr>, email: &str) -> Result<()> {
    let limits = state.config.rate_limits;
    let mut skipped = false;
    let counters: Vec<(String, u64)> = ip
        .map(|ip| (ip_key(ip), limits.per_ip))
        .into_iter()
        .collect();
    let mut retry_after = match over_limit(state, &counters, limits.window).await {
        Ok(wait) => wait,
        Err(()) => {
            skipped = true;
            None
        }
    };
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
            tracing::warn!(
                client_ip = ip.map(tracing::field::display),
                retry_after,
                "login rate limited"
            );
            Err(AuthError::RateLimited { retry_after })
        }
        None => Ok(()),
    }
}

fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Seconds this address still waits on the account: only while the
/// account is backing off, and only from the address's own last failure.
async fn backing_off(
    state: &AppState,
    ip: Option<IpAddr>,
    email: &str,
) -> std::result::Result<Option<u64>, ()> {
    if !state
        .cache
        .exists(&backoff_key(email))
        .await
        .map_err(drop)?
    {
        return Ok(None);
    }
    let Some(until) = state
        .cache
        .get(&failed_from_key(email, ip))
        .await
        .map_err(drop)?
    else {
        return Ok(None);
    };
    // Milliseconds since the epoch (whole seconds from an older Auth): a
    // backoff of 1 s must last 1 s, not until the next second boundary.
    let until: i64 = until.parse().unwrap_or(0);
    let until_ms = if until < 10_000_000_000 {
        until.saturating_mul(1000)
    } else {
        until
    };
    let left_ms = until_ms.saturating_sub(unix_now_ms());
    Ok((left_ms > 0).then_some((left_ms as u64).div_ceil(1000)))
}

/// After a wrong password (or an unknown account): counts the failure,
/// marks the address and, past the limit, makes this address wait.
pub async fn login_failed(state: &AppState, ip: Option<IpAddr>, email: &str) {
    let limits = state.config.rate_limits;
    let Ok((failures, _)) = state.cache.hit(&email_key(email), limits.window).await else {
        return;
    };
    let wait = backoff(failures, limits.per_email, limits.backoff_max);
    let until = wait.map_or(0, |wait| unix_now_ms() + wait.as_millis() as i64);
    let _ = state
        .cache
        .set(
            &failed_from_key(email, ip),
            &until.to_string(),
            limits.window,
        )
        .await;
    if let Some(wait) = wait {
        let _ = state
            .cache
            .set(&backoff_key(email), "1", limits.backoff_max)
            .await;
        tracing::info!(
            failures,
            backoff_seconds = wait.as_secs(),
            "login backoff started"
        );
    }
}

/// After a successful login: this address is trusted again for the account.
pub async fn login_succeeded(state: &AppState, ip: Option<IpAddr>, email: &str) {
    let _ = state.cache.delete(&failed_from_key(email, ip)).await;
}

/// After a password reset: the account's failures and backoff are over.
pub async fn clear_account(state: &AppState, email: &str) {
    let _ = state.cache.delete(&backoff_key(email)).await;
    let _ = state.cache.delete(&email_key(email)).await;
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
