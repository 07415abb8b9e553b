//! A read-through cache of the PostgreSQL modules' reads (finance, venue,
//! ai): the JSON body of `GET /v1/<resource>` (per limit) and of
//! `GET /v1/<resource>/{id}`, per company, as the database last answered.
//!
//! Writes invalidate it:
//!
//! - every change to the table fires a trigger (migration `0002`) that
//!   sends `NOTIFY kisum_records '<table>:<company>'` at commit; each
//!   backend LISTENs on a connection of its own ([`listen`]) and drops that
//!   company's reads, so a write through any replica, or through SQL, is
//!   seen by every replica within the notification's delivery;
//! - the replica that wrote drops them itself right after its commit,
//!   before it answers, so a client reads its own writes at once.
//!
//! A read is stored only if no invalidation of its company (nor a reset)
//! happened since the read started ([`Ticket`]), so a slow read racing a
//! write can never put the old rows back. The cache is used only while the
//! listener is connected: on a lost connection everything is dropped and
//! reads go to the database until the listener is back. Each read is kept
//! at most [`MAX_AGE`] whatever happens, and all reads together at most
//! [`MAX_BYTES`].
//!
//! The company of every entry is the one Auth resolved for the request
//! (the guard ran before), the same one the database query is scoped to:
//! no entry can be served to another company. Mongo modules keep no cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use sqlx::postgres::PgListener;
use uuid::Uuid;

/// The channel the triggers notify.
pub const CHANNEL: &str = "kisum_records";
/// The longest any read is served from the cache, even if a notification
/// was lost without the listener noticing.
pub const MAX_AGE: Duration = Duration::from_secs(10);
/// All cached bodies together; past it, the reads are dropped.
pub const MAX_BYTES: usize = 32 << 20;
/// Companies tracked; past it, everything is reset.
const MAX_COMPANIES: usize = 100_000;
/// Pause before the listener connects again.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// One kind of read of one company.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Read {
    List { limit: u32 },
    Find { id: Uuid },
}

/// Taken before the database is read; [`RecordCache::put`] drops a body
/// read under a ticket that an invalidation made stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    company: Uuid,
    epoch: u64,
    generation: u64,
}

#[derive(Clone, Default)]
pub struct RecordCache {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The listener is connected: only then are reads served or stored.
    listening: AtomicBool,
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    /// Bumped by every reset: tickets taken before are stale.
    epoch: u64,
    bytes: usize,
    companies: HashMap<Uuid, Company>,
}

#[derive(Default)]
struct Company {
    /// Bumped by every invalidation of the company.
    generation: u64,
    reads: HashMap<Read, Entry>,
}

struct Entry {
    stored: Instant,
    body: Bytes,
}

impl State {
    fn generation(&self, company: Uuid) -> u64 {
        self.companies.get(&company).map_or(0, |c| c.generation)
    }

    fn reset(&mut self) {
        self.epoch += 1;
        self.bytes = 0;
        self.companies.clear();
    }
}

impl RecordCache {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.inner.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.inner.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn listening(&self) -> bool {
        self.inner.listening.load(Ordering::Acquire)
    }

    /// The body of `read` for `company`, if cached and young enough.
    pub fn get(&self, company: Uuid, read: Read) -> Option<Bytes> {
        if !self.listening() {
            return None;
        }
        let state = self.read();
        let entry = state.companies.get(&company)?.reads.get(&read)?;
        (entry.stored.elapsed() < MAX_AGE).then(|| entry.body.clone())
    }

    /// To take before reading the database; `None` while nothing may be
    /// stored.
    pub fn ticket(&self, company: Uuid) -> Option<Ticket> {
        if !self.listening() {
            return None;
        }
        let state = self.read();
        Some(Ticket {
            company,
            epoch: state.epoch,
            generation: state.generation(company),
        })
    }

    /// Stores what was read under `ticket`, unless the company was
    /// invalidated (or everything reset) since the ticket was taken.
    pub fn put(&self, ticket: Option<Ticket>, read: Read, body: Bytes) {
        let Some(ticket) = ticket else {
            return;
        };
        if !self.listening() || body.len() > MAX_BYTES / 16 {
            return;
        }
        let mut state = self.write();
        if state.epoch != ticket.epoch || state.generation(ticket.company) != ticket.generation {
            return;
        }
        if state.bytes + body.len() > MAX_BYTES {
            // Drop the reads, keep the generations (tickets stay checked).
            for company in state.companies.values_mut() {
                company.reads.clear();
            }
            state.bytes = 0;
        }
        if state.companies.len() >= MAX_COMPANIES && !state.companies.contains_key(&ticket.company)
        {
            state.reset();
            return;
        }
        let added = body.len();
        let entry = Entry {
            stored: Instant::now(),
            body,
        };
        let company = state.companies.entry(ticket.company).or_default();
        let replaced = company
            .reads
            .insert(read, entry)
            .map_or(0, |old| old.body.len());
        state.bytes = state.bytes + added - replaced;
    }

    /// Drops the company's reads; reads in flight for it will not be stored.
    pub fn invalidate(&self, company: Uuid) {
        let mut state = self.write();
        let entry = state.companies.entry(company).or_default();
        entry.generation += 1;
        let freed: usize = entry.reads.drain().map(|(_, e)| e.body.len()).sum();
        state.bytes -= freed;
        if state.companies.len() > MAX_COMPANIES {
            state.reset();
        }
    }

    /// Drops everything; reads in flight will not be stored.
    pub fn reset(&self) {
        self.write().reset();
    }

    /// The listener is connected (and listening): start from nothing.
    fn resume(&self) {
        self.reset();
        self.inner.listening.store(true, Ordering::Release);
    }

    /// The listener lost its connection: notifications may be missed, so
    /// nothing is served or stored until it is back.
    fn suspend(&self) {
        self.inner.listening.store(false, Ordering::Release);
        self.reset();
    }

    /// What a notification of `table` says: drop one company, or all.
    fn notified(&self, table: &str, payload: &str) {
        let Some((from, company)) = payload.split_once(':') else {
            return;
        };
        if from != table {
            return;
        }
        match Uuid::parse_str(company) {
            Ok(company) => self.invalidate(company),
            // `*` (a TRUNCATE), or anything unexpected: drop everything.
            Err(_) => self.reset(),
        }
    }
}

/// Keeps a connection LISTENing on [`CHANNEL`] for the changes of `table`
/// and feeds them to `cache`; reconnects for as long as it runs. The cache
/// serves reads only while this is connected.
pub fn listen(cache: RecordCache, database_url: String, table: &'static str) -> ListenerTask {
    let task = tokio::spawn(async move {
        let mut warned = false;
        loop {
            match connect(&database_url).await {
                Ok(mut listener) => {
                    // Eager reconnection would hide the gap in which
                    // notifications were lost; reconnect here instead.
                    listener.eager_reconnect(false);
                    cache.resume();
                    if warned {
                        tracing::info!(table, "record cache listener connected again");
                    }
                    warned = false;
                    // `Ok(None)`: the connection was lost; `Err`: it failed.
                    while let Ok(Some(notification)) = listener.try_recv().await {
                        cache.notified(table, notification.payload());
                    }
                    cache.suspend();
                }
                Err(error) => {
                    if !warned {
                        tracing::warn!(
                            table,
                            error = %error,
                            "record cache off: cannot listen for changes (reads go to the database)"
                        );
                        warned = true;
                    }
                }
            }
            tokio::time::sleep(RECONNECT_DELAY).await;
        }
    });
    ListenerTask(task)
}

async fn connect(database_url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(database_url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Stops the listener when dropped.
pub struct ListenerTask(tokio::task::JoinHandle<()>);

impl Drop for ListenerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listening() -> RecordCache {
        let cache = RecordCache::default();
        cache.resume();
        cache
    }

    const LIST: Read = Read::List { limit: 50 };

    #[test]
    fn nothing_is_served_or_stored_while_not_listening() {
        let cache = RecordCache::default();
        let company = Uuid::new_v4();
        assert!(cache.ticket(company).is_none());
        cache.put(cache.ticket(company), LIST, Bytes::from_static(b"[]"));
        assert!(cache.get(company, LIST).is_none());
    }

    #[test]
    fn a_read_is_served_to_its_company_only() {
        let cache = listening();
        let (company, other) = (Uuid::new_v4(), Uuid::new_v4());
        cache.put(cache.ticket(company), LIST, Bytes::from_static(b"[1]"));
        assert_eq!(cache.get(company, LIST).unwrap(), "[1]");
        assert!(cache.get(other, LIST).is_none());
        assert!(cache.get(company, Read::List { limit: 1 }).is_none());
    }

    #[test]
    fn an_invalidation_drops_the_reads_and_stales_tickets_in_flight() {
        let cache = listening();
        let company = Uuid::new_v4();
        cache.put(cache.ticket(company), LIST, Bytes::from_static(b"[1]"));
        let in_flight = cache.ticket(company);
        cache.invalidate(company);
        assert!(cache.get(company, LIST).is_none());
        // A read that started before the write must not come back.
        cache.put(in_flight, LIST, Bytes::from_static(b"[1]"));
        assert!(cache.get(company, LIST).is_none());
        cache.put(cache.ticket(company), LIST, Bytes::from_static(b"[1,2]"));
        assert_eq!(cache.get(company, LIST).unwrap(), "[1,2]");
    }

    #[test]
    fn a_ticket_of_a_company_never_seen_goes_stale_too() {
        let cache = listening();
        let company = Uuid::new_v4();
        let in_flight = cache.ticket(company);
        cache.invalidate(company);
        cache.put(in_flight, LIST, Bytes::from_static(b"[]"));
        assert!(cache.get(company, LIST).is_none());
    }

    #[test]
    fn a_lost_listener_drops_everything_and_stores_nothing() {
        let cache = listening();
        let company = Uuid::new_v4();
        cache.put(cache.ticket(company), LIST, Bytes::from_static(b"[1]"));
        let in_flight = cache.ticket(company);
        cache.suspend();
        assert!(cache.get(company, LIST).is_none());
        cache.resume();
        cache.put(in_flight, LIST, Bytes::from_static(b"[1]"));
        assert!(
            cache.get(company, LIST).is_none(),
            "a ticket from before the gap"
        );
    }

    #[test]
    fn notifications_name_a_table_and_a_company_or_all() {
        let cache = listening();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        for company in [a, b] {
            cache.put(cache.ticket(company), LIST, Bytes::from_static(b"[]"));
        }
        cache.notified("invoices", &format!("venues:{a}"));
        assert!(cache.get(a, LIST).is_some(), "another table's change");
        cache.notified("invoices", &format!("invoices:{a}"));
        assert!(cache.get(a, LIST).is_none());
        assert!(cache.get(b, LIST).is_some());
        cache.notified("invoices", "invoices:*");
        assert!(cache.get(b, LIST).is_none());
    }

    #[test]
    fn the_bytes_stay_bounded() {
        let cache = listening();
        let body = Bytes::from(vec![b' '; MAX_BYTES / 16]);
        for _ in 0..40 {
            let company = Uuid::new_v4();
            cache.put(cache.ticket(company), LIST, body.clone());
        }
        assert!(cache.read().bytes <= MAX_BYTES);
        let too_big = Bytes::from(vec![b' '; MAX_BYTES / 16 + 1]);
        let company = Uuid::new_v4();
        cache.put(cache.ticket(company), LIST, too_big);
        assert!(cache.get(company, LIST).is_none());
    }
}
