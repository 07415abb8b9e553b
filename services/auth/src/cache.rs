//! Redis, the performance layer (plan 11): never the truth, so every
//! operation may answer [`Unavailable`] and the caller falls back to
//! auth_db or Platform Core. While Redis is down, calls are skipped for a
//! short cool-down after each failure (no per-request connect attempts),
//! and the degradation is logged at most once a minute.
//!
//! The warm access check is one round trip: [`Cache::snapshot`] is one
//! `MGET` of the revocation marker, the session entry, the access epoch,
//! the company map (for an `x-org` slug), the membership entry, the
//! entitlement version and the cached access context. The keys of the last
//! three depend on values read in the same `MGET` (the company, the
//! membership, the versions), so they are the ones the `x-org` id names or
//! the previous request of this user and `x-org` ended with ([`Guess`],
//! kept in process): the caller uses what they hold only if the values
//! read name exactly those keys, else it reads again. Keys of several
//! families in one `MGET` need one Redis (standalone or with replicas),
//! not Redis Cluster.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::AsyncCommands as _;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use uuid::Uuid;

use crate::metrics::{AuthMetrics, event};

/// Longest any one Redis operation may take before it counts as a failure.
const OPERATION_TIMEOUT: Duration = Duration::from_millis(750);
/// After a failure, Redis is not tried again for this long.
pub const COOL_DOWN: Duration = Duration::from_secs(1);
/// At most one "Redis unavailable" warning per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// `redis.key-families.revoked-session.ttl-seconds`: the access-token
/// lifetime plus clock skew, so no token of a revoked session outlives it.
pub const REVOKED_MARKER_TTL: Duration = Duration::from_secs(960);
/// `redis.key-families.session.ttl-seconds` and
/// `redis.key-families.membership.ttl-seconds`: how long Redis's copy of
/// an auth_db row may be trusted when nothing told Auth it changed (a
/// write made with SQL alone, or a Redis write that failed). Every write
/// Auth makes (revocation, `/internal/invalidate`, the directory with its
/// Redis) updates Redis at once.
pub const ROW_COPY_TTL: Duration = Duration::from_secs(5);
/// `redis.key-families.access-epoch.ttl-seconds`, renewed by every bump.
pub const EPOCH_TTL: Duration = Duration::from_secs(86_400);

/// The Redis keys Auth reads and writes (`redis.key-families`).
pub mod key {
    use uuid::Uuid;

    /// Bumped after every directory write: membership entries stamped with
    /// an older epoch are not trusted.
    pub const ACCESS_EPOCH: &str = "access-epoch";

    pub fn revoked_session(session: Uuid) -> String {
        format!("revoked:session:{session}")
    }

    /// A live session (auth_db said so), holding its user.
    pub fn session(session: Uuid) -> String {
        format!("session:{session}")
    }

    pub fn company_map(raw: &str) -> String {
        format!("company-map:{raw}")
    }

    pub fn membership(company: Uuid, user: Uuid) -> String {
        format!("membership:{company}:{user}")
    }

    pub fn entitlement_version(company: Uuid) -> String {
        format!("entitlement-version:{company}")
    }

    pub fn access(company: Uuid, membership: Uuid, access: i64, entitlement: i64) -> String {
        format!("access:{company}:{membership}:{access}:{entitlement}")
    }
}

/// KEYS: the epoch. ARGV: a start value, the TTL. The current epoch,
/// started at ARGV[1] if there is none.
const ENSURE_EPOCH_SCRIPT: &str = r"
local epoch = redis.call('GET', KEYS[1])
if epoch then return epoch end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
";

/// KEYS: the epoch. ARGV: a start value, the TTL. Bumps the epoch.
const BUMP_EPOCH_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], ARGV[1]) end
local epoch = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return epoch
";

/// A new epoch starts at the current time in microseconds: above any epoch
/// an expired one reached (it would take a million bumps a second), so no
/// entry stamped before can match it.
fn epoch_start() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or_default()
        .to_string()
}

/// What names an access context in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessKey {
    pub company: Uuid,
    pub membership: Uuid,
    pub access_version: i64,
    pub entitlement_version: i64,
}

impl AccessKey {
    pub fn key(&self) -> String {
        key::access(
            self.company,
            self.membership,
            self.access_version,
            self.entitlement_version,
        )
    }
}

/// An access context's JSON answer, derived from the Redis value `text`
/// and split around the session (`head` + session id + `tail`); used only
/// while Redis holds exactly `text` under the key.
#[derive(Debug)]
pub struct Rendered {
    pub text: Box<str>,
    pub head: Box<str>,
    pub tail: Box<str>,
}

/// Where the last access check of a user and `x-org` ended: the keys the
/// next one reads in the same round trip as the rest.
#[derive(Debug, Clone)]
pub struct Guess {
    pub key: AccessKey,
    pub rendered: Option<Arc<Rendered>>,
}

/// Users whose guesses are kept; past it, all are forgotten.
const MAX_GUESSED_USERS: usize = 20_000;

type Guesses = HashMap<Uuid, Vec<(Box<str>, Guess)>>;

/// What Redis holds for one request's access check, read in one round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// `revoked:session:{session}` exists.
    pub revoked: bool,
    /// `session:{session}`: the user of a session auth_db said was live.
    pub session: Option<String>,
    pub epoch: Option<String>,
    /// `company-map:{org}`, read for an `x-org` slug only.
    pub company: Option<String>,
    /// For the company expected: `membership:{company}:{user}` and
    /// `entitlement-version:{company}`.
    pub membership: Option<String>,
    pub entitlement: Option<String>,
    /// Under the guessed key.
    pub access: Option<String>,
}

impl Snapshot {
    /// The reply in the order asked: marker, session, epoch, then the
    /// company map, membership and entitlement version, access context as
    /// `asked` says.
    fn from_reply(reply: Vec<Option<String>>, asked: (bool, bool, bool)) -> Snapshot {
        let (slug, company, guess) = asked;
        let mut values = reply.into_iter();
        let mut next = |asked: bool| if asked { values.next().flatten() } else { None };
        let revoked = next(true).is_some();
        let session = next(true);
        let epoch = next(true);
        let company_map = next(slug);
        let membership = next(company);
        let entitlement = next(company);
        let access = next(guess);
        Snapshot {
            revoked,
            session,
            epoch,
            company: company_map,
            membership,
            entitlement,
            access,
        }
    }
}

/// Redis could not answer; the caller takes the slower, correct path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

pub type Cached<T> = Result<T, Unavailable>;

struct Scripts {
    ensure_epoch: Script,
    bump_epoch: Script,
}

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
    /// Set while a failure is recorded, so the healthy path takes no lock.
    degraded: Arc<AtomicBool>,
    scripts: Arc<Scripts>,
    /// By user, by `x-org`.
    guesses: Arc<RwLock<Guesses>>,
    /// Writes Redis refused that this replica honours until they land.
    unsent: Arc<Mutex<Unsent>>,
    /// Set while `unsent` holds anything, so the healthy path takes no lock.
    has_unsent: Arc<AtomicBool>,
    metrics: AuthMetrics,
}

/// What Redis has not taken yet: revocations (its marker, the removal of
/// the session entry) and an access-epoch bump, each until it lands or
/// until whatever Redis held before has expired.
#[derive(Default)]
struct Unsent {
    revoked: HashMap<Uuid, Instant>,
    epoch_until: Option<Instant>,
}

/// Whether this replica may use Redis's copies for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Nothing unsent concerns it.
    Clear,
    /// Its revocation has not reached Redis: refuse it.
    Revoked,
    /// An epoch bump has not reached Redis: read auth_db.
    Epoch,
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
            degraded: Arc::new(AtomicBool::new(false)),
            scripts: Arc::new(Scripts {
                ensure_epoch: Script::new(ENSURE_EPOCH_SCRIPT),
                bump_epoch: Script::new(BUMP_EPOCH_SCRIPT),
            }),
            guesses: Arc::default(),
            unsent: Arc::default(),
            has_unsent: Arc::new(AtomicBool::new(false)),
            metrics,
        })
    }

    fn unsent(&self) -> std::sync::MutexGuard<'_, Unsent> {
        self.unsent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Revocations Redis refused: refused here until [`Cache::sent_revoked`]
    /// or for `hold`.
    pub fn hold_revoked(&self, sessions: &[Uuid], hold: Duration) {
        let until = Instant::now() + hold;
        let mut unsent = self.unsent();
        for session in sessions {
            unsent.revoked.insert(*session, until);
        }
        self.has_unsent.store(true, Ordering::Release);
    }

    pub fn sent_revoked(&self, sessions: &[Uuid]) {
        let mut unsent = self.unsent();
        for session in sessions {
            unsent.revoked.remove(session);
        }
    }

    /// An epoch bump Redis refused: membership copies are not trusted here
    /// until [`Cache::sent_epoch`] or for `hold`.
    pub fn hold_epoch(&self, hold: Duration) {
        self.unsent().epoch_until = Some(Instant::now() + hold);
        self.has_unsent.store(true, Ordering::Release);
    }

    pub fn sent_epoch(&self) {
        self.unsent().epoch_until = None;
    }

    /// What unsent writes mean for `session` now.
    pub fn held(&self, session: Uuid) -> Held {
        if !self.has_unsent.load(Ordering::Acquire) {
            return Held::Clear;
        }
        let now = Instant::now();
        let mut unsent = self.unsent();
        unsent.revoked.retain(|_, until| *until > now);
        if unsent.epoch_until.is_some_and(|until| until <= now) {
            unsent.epoch_until = None;
        }
        if unsent.revoked.is_empty() && unsent.epoch_until.is_none() {
            self.has_unsent.store(false, Ordering::Release);
            return Held::Clear;
        }
        if unsent.revoked.contains_key(&session) {
            Held::Revoked
        } else if unsent.epoch_until.is_some() {
            Held::Epoch
        } else {
            Held::Clear
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cooling_down(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
            && self
                .health()
                .failed_at
                .is_some_and(|at| at.elapsed() < COOL_DOWN)
    }

    fn failed(&self, operation: &str, reason: &str) {
        self.metrics.event(event::REDIS, "unavailable");
        let mut health = self.health();
        health.failed_at = Some(Instant::now());
        self.degraded.store(true, Ordering::Release);
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
        if !self.degraded.load(Ordering::Acquire) {
            return;
        }
        let mut health = self.health();
        if health.failed_at.take().is_some() {
            tracing::info!("Redis reachable again");
        }
        self.degraded.store(false, Ordering::Release);
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

    /// The access check's keys in one `MGET` (see [`Snapshot`]): the
    /// company map for an `x-org` slug (`None`: the `x-org` is an id), the
    /// membership entry and entitlement version of the `company` expected,
    /// the access context under `guess`.
    pub async fn snapshot(
        &self,
        session: Uuid,
        user: Uuid,
        slug: Option<&str>,
        company: Option<Uuid>,
        guess: Option<&AccessKey>,
    ) -> Cached<Snapshot> {
        let mut command = redis::cmd("MGET");
        command
            .arg(key::revoked_session(session))
            .arg(key::session(session))
            .arg(key::ACCESS_EPOCH);
        if let Some(slug) = slug {
            command.arg(key::company_map(slug));
        }
        if let Some(company) = company {
            command
                .arg(key::membership(company, user))
                .arg(key::entitlement_version(company));
        }
        if let Some(guess) = guess {
            command.arg(guess.key());
        }
        let asked = (slug.is_some(), company.is_some(), guess.is_some());
        self.run("MGET", |mut c| async move {
            let reply: Vec<Option<String>> = command.query_async(&mut c).await?;
            Ok(Snapshot::from_reply(reply, asked))
        })
        .await
    }

    /// Where the last access check of `user` with `org` ended.
    pub fn guess(&self, user: Uuid, org: &str) -> Option<Guess> {
        let guesses = self.guesses.read().unwrap_or_else(|p| p.into_inner());
        guesses
            .get(&user)?
            .iter()
            .find(|(known, _)| &**known == org)
            .map(|(_, guess)| guess.clone())
    }

    /// Remembers where this access check ended, for the next one.
    pub fn remember(&self, user: Uuid, org: &str, guess: Guess) {
        let mut guesses = self.guesses.write().unwrap_or_else(|p| p.into_inner());
        if guesses.len() >= MAX_GUESSED_USERS && !guesses.contains_key(&user) {
            guesses.clear();
        }
        let orgs = guesses.entry(user).or_default();
        if let Some((_, known)) = orgs.iter_mut().find(|(known, _)| &**known == org) {
            *known = guess;
            return;
        }
        if orgs.len() >= 16 {
            orgs.clear();
        }
        orgs.push((org.into(), guess));
    }

    /// The current access epoch, starting one if Redis has none.
    pub async fn ensure_epoch(&self) -> Cached<String> {
        let mut invocation = self.scripts.ensure_epoch.prepare_invoke();
        invocation
            .key(key::ACCESS_EPOCH)
            .arg(epoch_start())
            .arg(EPOCH_TTL.as_secs());
        self.run("EVALSHA epoch", |mut c| async move {
            invocation.invoke_async(&mut c).await
        })
        .await
    }

    /// After a directory write: every membership entry read before it
    /// stops being trusted.
    pub async fn bump_epoch(&self) -> Cached<()> {
        let mut invocation = self.scripts.bump_epoch.prepare_invoke();
        invocation
            .key(key::ACCESS_EPOCH)
            .arg(epoch_start())
            .arg(EPOCH_TTL.as_secs());
        self.run("EVALSHA bump", |mut c| async move {
            let _: i64 = invocation.invoke_async(&mut c).await?;
            Ok(())
        })
        .await
    }

    /// After a committed directory write: bumps the epoch, or says when
    /// Redis could not be told (the copies then expire within 5 s).
    pub async fn directory_changed(&self) {
        if self.bump_epoch().await.is_err() {
            // Not trusted here either until the copies expire.
            self.hold_epoch(ROW_COPY_TTL + COOL_DOWN);
            tracing::warn!(
                "Redis unreachable: the running Auth sees this directory change within 5 s"
            );
        }
    }

    /// Revoked sessions: each gets its marker, and its session entry goes.
    pub async fn revoke_sessions(&self, sessions: &[Uuid]) -> Cached<()> {
        let mut pipe = redis::pipe();
        for session in sessions {
            pipe.set_ex(
                key::revoked_session(*session),
                "1",
                REVOKED_MARKER_TTL.as_secs(),
            )
            .ignore()
            .del(key::session(*session))
            .ignore();
        }
        self.run("SET revoked", |mut c| async move {
            pipe.query_async::<()>(&mut c).await
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

    fn some(text: &str) -> Option<String> {
        Some(text.to_string())
    }

    #[test]
    fn a_snapshot_reads_the_reply_in_the_order_asked() {
        let reply = vec![
            None,
            some("u"),
            some("7"),
            some("c"),
            some("m"),
            some("5"),
            some("a"),
        ];
        let all = Snapshot::from_reply(reply, (true, true, true));
        assert_eq!(
            all,
            Snapshot {
                revoked: false,
                session: some("u"),
                epoch: some("7"),
                company: some("c"),
                membership: some("m"),
                entitlement: some("5"),
                access: some("a"),
            }
        );
        // An `x-org` id, no guess: no company map, no access context.
        let reply = vec![some("1"), None, some("7"), some("m"), None];
        let by_id = Snapshot::from_reply(reply, (false, true, false));
        assert!(by_id.revoked, "any marker value counts");
        assert_eq!(
            (
                by_id.company,
                by_id.membership,
                by_id.entitlement,
                by_id.access
            ),
            (None, some("m"), None, None)
        );
    }

    /// A Redis URL on a loopback port this test bound and let go: every
    /// call to it fails at once.
    fn unreachable() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("redis://{}/", listener.local_addr().unwrap())
    }

    #[tokio::test]
    async fn guesses_are_kept_per_user_and_org_and_stay_bounded() {
        let cache = Cache::new(&unreachable(), AuthMetrics::new("auth", "test")).unwrap();
        let user = Uuid::new_v4();
        let key = AccessKey {
            company: Uuid::new_v4(),
            membership: Uuid::new_v4(),
            access_version: 3,
            entitlement_version: 4,
        };
        assert!(cache.guess(user, "acme").is_none());
        cache.remember(
            user,
            "acme",
            Guess {
                key,
                rendered: None,
            },
        );
        assert_eq!(cache.guess(user, "acme").unwrap().key, key);
        assert!(cache.guess(user, "globex").is_none());
        assert!(cache.guess(Uuid::new_v4(), "acme").is_none());
        for n in 0..40 {
            cache.remember(
                user,
                &format!("org-{n}"),
                Guess {
                    key,
                    rendered: None,
                },
            );
        }
        let kept = cache.guesses.read().unwrap()[&user].len();
        assert!(kept <= 16, "{kept}");
        assert!(key.key().starts_with("access:"));
    }

    #[tokio::test]
    async fn failures_warn_once_a_minute_and_cool_down_between_tries() {
        let metrics = AuthMetrics::new("auth", "test");
        let cache = Cache::new(&unreachable(), metrics.clone()).unwrap();
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
