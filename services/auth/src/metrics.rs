//! Auth's metrics (plan 20.2) on top of the shared registry: event counters
//! through `Metrics::event`, and two latency histograms.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kisum_common::telemetry::Metrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Event names and outcomes, as they appear in `kisum_events_total`.
pub mod event {
    pub const LOGIN: &str = "login";
    pub const REFRESH: &str = "refresh";
    pub const LOGOUT: &str = "logout";
    pub const LOGOUT_ALL: &str = "logout_all";
    pub const REVOKED_SESSION_USE: &str = "revoked_session_use";
    pub const ACCESS_TOKEN: &str = "access_token";
    pub const ACCESS_CACHE: &str = "access_cache";
    /// How an access-context request used Redis: `complete` (one round
    /// trip answered everything), `partial` (something was read from
    /// auth_db or Core), `unavailable` (the auth_db path).
    pub const ACCESS_SNAPSHOT: &str = "access_snapshot";
    /// The session entry of the access-context routes: `miss` when auth_db
    /// was asked (a hit is an `access_snapshot` `complete`, or `partial`).
    pub const SESSION_CACHE: &str = "session_cache";
    pub const ACCESS_AGGREGATION: &str = "access_aggregation";
    pub const ACCESS_DENIED: &str = "access_denied";
    pub const LOGIN_RATE_LIMIT: &str = "login_rate_limit";
    pub const REFRESH_RATE_LIMIT: &str = "refresh_rate_limit";
    pub const PASSWORD_RESET_RATE_LIMIT: &str = "password_reset_rate_limit";
    pub const PASSWORD_RESET: &str = "password_reset";
    pub const REDIS: &str = "redis";
}

#[derive(Clone)]
pub struct AuthMetrics {
    pub shared: Metrics,
    access_merge: Histogram,
    core_lookup: Histogram,
    /// `access_cache` `hit` with `access_snapshot` `complete`: the warm
    /// path's count, resolved on first use.
    warm: Arc<OnceLock<(Counter, Counter)>>,
}

impl AuthMetrics {
    pub fn new(service: &str, environment: &str) -> Self {
        let shared = Metrics::new(service, environment);
        let access_merge = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let core_lookup = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        shared.register(
            "auth_access_merge_seconds",
            "time to compute an access context on a cache miss (auth_db + Core merge)",
            access_merge.clone(),
        );
        shared.register(
            "auth_core_entitlement_lookup_seconds",
            "latency of Platform Core entitlement and entitlement-version lookups",
            core_lookup.clone(),
        );
        AuthMetrics {
            shared,
            access_merge,
            core_lookup,
            warm: Arc::default(),
        }
    }

    pub fn event(&self, event: &str, outcome: &str) {
        self.shared.event(event, outcome);
    }

    /// An access context answered from one Redis round trip.
    pub fn warm_hit(&self) {
        let (hit, complete) = self.warm.get_or_init(|| {
            (
                self.shared.event_counter(event::ACCESS_CACHE, "hit"),
                self.shared
                    .event_counter(event::ACCESS_SNAPSHOT, "complete"),
            )
        });
        hit.inc();
        complete.inc();
    }

    pub fn access_merge(&self, took: Duration) {
        self.access_merge.observe(took.as_secs_f64());
    }

    pub fn core_lookup(&self, took: Duration) {
        self.core_lookup.observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histograms_are_exposed() {
        let metrics = AuthMetrics::new("auth", "test");
        metrics.access_merge(Duration::from_millis(3));
        metrics.core_lookup(Duration::from_millis(7));
        let text = metrics.shared.render();
        assert!(text.contains("kisum_auth_access_merge_seconds_count 1"));
        assert!(text.contains("kisum_auth_core_entitlement_lookup_seconds_count 1"));
        metrics.warm_hit();
        metrics.warm_hit();
        let text = metrics.shared.render();
        assert!(text.contains(r#"kisum_events_total{event="access_cache",outcome="hit"} 2"#));
        assert!(
            text.contains(r#"kisum_events_total{event="access_snapshot",outcome="complete"} 2"#)
        );
    }
}
