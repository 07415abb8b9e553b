//! JWT signing-key rotation (`kisumctl rotate-jwt-key`, plan 12.3): a new
//! key is published before it signs, and an old key leaves the JWKS only
//! after every token it signed has expired, so no user notices; in an
//! emergency a key is removed at once and every service reloads.
//!
//! - [`keyset`]: the stage a key set is in and what each phase changes (pure);
//! - [`timeline`]: what was written and seen, with times;
//! - [`store`]: the key set, its JWKS and the timeline in the secret store;
//! - [`fleet`]: the services' diagnostics and key reloads;
//! - [`workflow`]: the phases with their waits, and the status report.
//!
//! Nothing here prints: progress goes to a callback, results are returned.

pub mod fleet;
pub mod keyset;
pub mod store;
pub mod timeline;
pub mod workflow;

use std::time::Duration;

use crate::matrix::schema::TokenPolicy;

/// Time for a changed key set to reach every Auth instance on top of the
/// verifiers' cache lifetime: Auth re-reads its key-set file every 2 s, but
/// in Kubernetes the file is a Secret volume that the kubelet refreshes
/// about once a minute after the secret store changed.
pub const KEY_SYNC_ALLOWANCE: Duration = Duration::from_secs(60);

/// The waits of a rotation, from the matrix's `tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `tokens.access-ttl-seconds`.
    pub access_ttl: u64,
    /// `tokens.clock-skew-seconds`.
    pub clock_skew: u64,
    /// `tokens.jwks-cache-seconds`: how long a verifier uses the keys it
    /// fetched.
    pub jwks_cache: u64,
    /// How long to wait for every service to show a key change.
    pub propagation_timeout: Duration,
}

impl Settings {
    /// The propagation timeout is the JWKS cache lifetime plus
    /// [`KEY_SYNC_ALLOWANCE`] unless given.
    pub fn from_matrix(tokens: &TokenPolicy, propagation_timeout: Option<Duration>) -> Settings {
        let jwks_cache = u64::from(tokens.jwks_cache_seconds);
        Settings {
            access_ttl: u64::from(tokens.access_ttl_seconds),
            clock_skew: u64::from(tokens.clock_skew_seconds),
            jwks_cache,
            propagation_timeout: propagation_timeout
                .unwrap_or(Duration::from_secs(jwks_cache) + KEY_SYNC_ALLOWANCE),
        }
    }

    /// How long a token stays acceptable after it was signed: its lifetime
    /// plus the clock skew verifiers allow.
    pub fn token_lifetime(&self) -> i64 {
        (self.access_ttl + self.clock_skew) as i64
    }
}

/// Now, in seconds since the Unix epoch.
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A time of the timeline as `2026-12-01T10:00:00Z`.
pub fn format_time(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| seconds.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waits_come_from_the_matrix() {
        let tokens = TokenPolicy {
            audience: "kisum-api".into(),
            access_ttl_seconds: 900,
            refresh_ttl_seconds: 1,
            jwks_cache_seconds: 300,
            clock_skew_seconds: 60,
        };
        let settings = Settings::from_matrix(&tokens, None);
        assert_eq!(settings.token_lifetime(), 960);
        assert_eq!(settings.propagation_timeout, Duration::from_secs(360));
        let quick = Settings::from_matrix(&tokens, Some(Duration::from_secs(5)));
        assert_eq!(quick.propagation_timeout, Duration::from_secs(5));
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
    }
}
