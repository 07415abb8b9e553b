//! Auth's metrics (plan 20.2) on top of the shared registry: event counters
//! through `Metrics::event`, and two latency histograms.

use std::time::Duration;

use kisum_common::telemetry::Metrics;
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
        }
    }

    pub fn event(&self, event: &str, outcome: &str) {
        self.shared.event(event, outcome);
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
    }
}
