//! Redis, the performance layer (plan 11): never the truth, so every
//! operation may answer [`Unavailable`] and the caller falls back to
//! auth_db or Platform Core. While Redis is down, calls are skipped for a
//! short cool-down after each failure (no per-request connect attempts),
//! and the degradation is logged at most once a minute.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::metrics::{AuthMetrics, event};

/// Longest any one Redis operation may take before it counts as a failure.
const OPERATION_TIMEOUT: Duration = Duration::from_millis(750);
/// After a failure, Redis is not tried again for this long.
const COOL_DOWN: Duration = Duration::from_secs(1);
/// At most one "Redis unavailable" warning per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// Redis could not answer; the caller takes the slower, correct path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

pub type Cached<T> = Result<T, Unavailable>;

#[derive(Default)]
struct Health {
    failed_at: Option<Instant>,
    warned_at: Option<Instant>,
    suppressed: u64,
}

#[derive(Clone)]
pub struct Cache {
    manager: ConnectionManager,
    health: Arc<Mutex<Health>>,
    metrics: AuthMetrics,
}

impl Cache {
    /// Connects lazily: Auth starts (not ready) while Redis is down.
    pub fn new(url: &str, metrics: AuthMetrics) -> anyhow::Result<Cache> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("REDIS_URL is not a valid Redis URL: {:?}", e.kind()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(OPERATION_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let manager = client
            .get_connection_manager_lazy(config)
            .map_err(|e| anyhow::anyhow!("cannot set up the Redis connection: {:?}", e.kind()))?;
        Ok(Cache {
            manager,
            health: Arc::new(Mutex::new(Health::default())),
            metrics,
        })
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cooling_down(&self) -> bool {
        self.health()
            .failed_at
            .is_some_and(|at| at.elapsed() < COOL_DOWN)
    }

    fn failed(&self, operation: &str, reason: &str) {
        self.metrics.event(event::REDIS, "unavailable");
        let mut health = self.health();
        health.failed_at = Some(Instant::now());
        if health
            .warned_at
            .is_none_or(|at| at.elapsed() >= WARN_INTERVAL)
        {
            tracing::warn!(
                operation,
                error = %reason,
                suppressed_since_last_warning = health.suppressed,
                "Redis unavailable: degrading to auth_db and Platform Core (slower, still correct); \
                 login rate limiting is skipped"
            );
            health.warned_at = Some(Instant::now());
            health.suppressed = 0;
        } else {
            health.suppressed += 1;
        }
    }

    fn recovered(&self) {
        let mut health = self.health();
        if health.failed_at.take().is_some() {
            tracing::info!("Redis reachable again");
        }
    }

    /// Runs one operation with the timeout and the failure bookkeeping.
    async fn run<T, F, Fut>(&self, operation: &str, call: F) -> Cached<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.cooling_down() {
            // Not tried, but failed all the same: every failed call counts.
            self.metrics.event(event::REDIS, "unavailable");
            return Err(Unavailable);
        }
        match tokio::time::timeout(OPERATION_TIMEOUT, call(self.manager.clone())).await {
            Ok(Ok(value)) => {
                self.recovered();
                Ok(value)
            }
            Ok(Err(error)) => {
                self.failed(operation, &format!("{:?}", error.kind()));
                Err(Unavailable)
            }
            Err(_) => {
                self.failed(operation, "timed out");
                Err(Unavailable)
            }
        }
    }

    pub async fn get(&self, key: &str) -> Cached<Option<String>> {
        self.run("GET", |mut c| async move { c.get(key).await })
            .await
    }

    pub async fn set(&self, key: &str, value: &str, ttl: Duration) -> Cached<()> {
        let seconds = ttl.as_secs().max(1);
        self.run(
            "SET",
            |mut c| async move { c.set_ex(key, value, seconds).await },
        )
        .await
    }

    pub async fn delete(&self, key: &str) -> Cached<()> {
        self.run("DEL", |mut c| async move { c.del(key).await })
            .await
    }

    pub async fn exists(&self, key: &str) -> Cached<bool> {
        self.run("EXISTS", |mut c| async move { c.exists(key).await })
            .await
    }

    /// The seconds a key has left; `None` when it does not exist.
    pub async fn ttl(&self, key: &str) -> Cached<Option<u64>> {
        self.run("TTL", |mut c| async move {
            let ttl: i64 = c.ttl(key).await?;
            Ok(u64::try_from(ttl).ok())
        })
        .await
    }

    /// Counts one hit in a fixed window: the count so far (this hit
    /// included) and the seconds until the window ends.
    pub async fn hit(&self, key: &str, window: Duration) -> Cached<(u64, u64)> {
        let seconds = window.as_secs().max(1);
        self.run("INCR", |mut c| async move {
            let (count, ttl): (u64, i64) = redis::pipe()
                .atomic()
                .incr(key, 1u64)
                .cmd("EXPIRE")
                .arg(key)
                .arg(seconds)
                .arg("NX")
                .ignore()
                .ttl(key)
                .query_async(&mut c)
                .await?;
            Ok((count, u64::try_from(ttl).unwrap_or(seconds)))
        })
        .await
    }

    /// `/ready`: a PING that ignores the cool-down.
    pub async fn ping(&self) -> Result<(), String> {
        let mut connection = self.manager.clone();
        let command = redis::cmd("PING");
        let ping = command.query_async::<String>(&mut connection);
        match tokio::time::timeout(OPERATION_TIMEOUT, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("redis unreachable: {:?}", error.kind())),
            Err(_) => Err("redis unreachable: timed out".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_warn_once_a_minute_and_cool_down_between_tries() {
        let metrics = AuthMetrics::new("auth", "test");
        // Nothing listens on loopback port 1: every call fails.
        let cache = Cache::new("redis://127.0.0.1:1/", metrics.clone()).unwrap();
        assert_eq!(cache.get("k").await, Err(Unavailable));
        // Within the cool-down Redis is not even tried; each call still
        // counts as a failed one.
        assert_eq!(cache.exists("k").await, Err(Unavailable));
        assert_eq!(cache.ttl("k").await, Err(Unavailable));
        cache.failed("GET", "test");
        cache.failed("GET", "test");
        let (warned, suppressed) = {
            let health = cache.health();
            (health.warned_at.is_some(), health.suppressed)
        };
        assert!(warned);
        assert_eq!(suppressed, 2, "one warning, the rest counted");
        assert!(
            metrics
                .shared
                .render()
                .contains(r#"kisum_events_total{event="redis",outcome="unavailable"} 5"#)
        );
        assert!(cache.ping().await.is_err());
    }
}
