//! Login rate limits in Redis: fixed windows per client address and per
//! account email. Every attempt counts. With Redis down the limits are
//! skipped (plan 11.6: login may lose rate limiting); that is counted in
//! `kisum_events_total{event="login_rate_limit",outcome="skipped"}` and
//! logged by the cache at most once a minute.

use std::net::IpAddr;

use crate::error::{AuthError, Result};
use crate::metrics::event;
use crate::state::AppState;

pub fn ip_key(ip: IpAddr) -> String {
    format!("ratelimit:login:ip:{ip}")
}

pub fn email_key(email: &str) -> String {
    format!("ratelimit:login:email:{email}")
}

/// Counts a login attempt; `RateLimited` once either limit is exceeded.
pub async fn check_login(state: &AppState, ip: Option<IpAddr>, email: &str) -> Result<()> {
    let limits = state.config.rate_limits;
    let mut counters = vec![(email_key(email), limits.per_email)];
    if let Some(ip) = ip {
        counters.push((ip_key(ip), limits.per_ip));
    }
    let mut retry_after = None;
    let mut skipped = false;
    for (key, limit) in counters {
        match state.cache.hit(&key, limits.window).await {
            Ok((count, ttl)) if count > limit => {
                retry_after = Some(retry_after.unwrap_or(0).max(ttl.max(1)));
            }
            Ok(_) => {}
            Err(_) => skipped = true,
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
