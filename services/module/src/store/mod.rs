//! Where a module's records live: PostgreSQL (finance, venue, ai) or
//! MongoDB (basic, market, touring). Every operation takes the company
//! the record belongs to, so no query can reach another company's rows.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::module::{Engine, Module};
use crate::records::{Contact, Fields, Invoice, Limit, Listing, Prompt, Record, Tour, Venue};

pub mod mongo;
pub mod postgres;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long a readiness ping may take.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("postgresql: {0}")]
    Postgres(String),
    #[error("mongodb: {0}")]
    Mongo(String),
    #[error("that {0} already exists")]
    Duplicate(&'static str),
    #[error("{0} did not answer within {1:?}")]
    Timeout(&'static str, Duration),
    #[error("DATABASE_URL names no database; give it as mongodb://host/<database>")]
    NoDatabaseName,
    #[error("the {0} module was given a database of the wrong engine")]
    EngineMismatch(Module),
    #[error("migration failed: {0}")]
    Migration(String),
}

/// The records of one kind, always within one company.
pub trait RecordStore<F: Fields>: Send + Sync {
    /// The company's newest records first.
    fn list(
        &self,
        company: Uuid,
        limit: Limit,
    ) -> BoxFuture<'_, Result<Vec<Record<F>>, StoreError>>;
    fn create(&self, company: Uuid, fields: F) -> BoxFuture<'_, Result<Record<F>, StoreError>>;
    /// The record `id` if it exists and belongs to `company`.
    fn find(&self, company: Uuid, id: Uuid)
    -> BoxFuture<'_, Result<Option<Record<F>>, StoreError>>;
}

/// A module's database connection.
#[derive(Clone)]
pub enum Database {
    Postgres(sqlx::PgPool),
    Mongo(mongodb::Database),
}

impl Database {
    /// Prepares the connection without reaching the server: an unreachable
    /// database makes the service unready, not unable to start.
    pub async fn open(module: Module, url: &str) -> Result<Database, StoreError> {
        match module.engine() {
            Engine::Postgres => postgres::open(url).map(Database::Postgres),
            Engine::Mongo => mongo::open(url).await.map(Database::Mongo),
        }
    }

    /// Whether the server answers now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let ping = async {
            match self {
                Database::Postgres(pool) => postgres::ping(pool).await,
                Database::Mongo(db) => mongo::ping(db).await,
            }
        };
        tokio::time::timeout(PING_TIMEOUT, ping)
            .await
            .map_err(|_| StoreError::Timeout("the database", PING_TIMEOUT))?
    }

    /// PostgreSQL: applies the module's embedded migrations. MongoDB:
    /// creates the module's indexes. Both are safe to repeat.
    pub async fn migrate(&self, module: Module) -> Result<(), StoreError> {
        match self {
            Database::Postgres(pool) => postgres::migrate(pool, module).await,
            Database::Mongo(db) => mongo::create_indexes(db, module).await,
        }
    }

    /// PostgreSQL: refuses a schema behind (or different from) the binary.
    /// MongoDB keeps no schema: indexes are created by `migrate`.
    pub async fn require_current(&self, module: Module) -> Result<(), StoreError> {
        match self {
            Database::Postgres(pool) => postgres::require_current(pool, module).await,
            Database::Mongo(_) => Ok(()),
        }
    }

    pub async fn close(&self) {
        match self {
            Database::Postgres(pool) => pool.close().await,
            // The driver closes its pool when the last handle is dropped.
            Database::Mongo(_) => {}
        }
    }
}

/// The one resource of each module, with the store that holds it. The
/// variant follows the module, so handlers stay generic over the fields.
pub enum Resource {
    Contacts(Arc<dyn RecordStore<Contact>>),
    Invoices(Arc<dyn RecordStore<Invoice>>),
    Listings(Arc<dyn RecordStore<Listing>>),
    Tours(Arc<dyn RecordStore<Tour>>),
    Venues(Arc<dyn RecordStore<Venue>>),
    Prompts(Arc<dyn RecordStore<Prompt>>),
}

impl Resource {
    pub fn of(module: Module, database: &Database) -> Result<Resource, StoreError> {
        let collection = module.resource();
        Ok(match (module, database) {
            (Module::Finance, Database::Postgres(pool)) => {
                Resource::Invoices(Arc::new(postgres::Records::new(pool.clone())))
            }
            (Module::Venue, Database::Postgres(pool)) => {
                Resource::Venues(Arc::new(postgres::Records::new(pool.clone())))
            }
            (Module::Ai, Database::Postgres(pool)) => {
                Resource::Prompts(Arc::new(postgres::Records::new(pool.clone())))
            }
            (Module::Basic, Database::Mongo(db)) => {
                Resource::Contacts(Arc::new(mongo::Records::new(db, collection)))
            }
            (Module::Market, Database::Mongo(db)) => {
                Resource::Listings(Arc::new(mongo::Records::new(db, collection)))
            }
            (Module::Touring, Database::Mongo(db)) => {
                Resource::Tours(Arc::new(mongo::Records::new(db, collection)))
            }
            _ => return Err(StoreError::EngineMismatch(module)),
        })
    }
}
