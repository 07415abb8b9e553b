//! Records in PostgreSQL: one table per resource, created by the module's
//! own embedded migrations (`migrations/<module>/`), queried with runtime
//! queries whose first condition is always the company.

use std::marker::PhantomData;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgArguments, PgPool, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, Row, SqlSafeStr as _};
use uuid::Uuid;

use super::{BoxFuture, RecordStore, StoreError};
use crate::module::Module;
use crate::records::{Fields, Invoice, Limit, Prompt, Record, Venue};

const MAX_CONNECTIONS: u32 = 10;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// The unique-violation SQLSTATE.
const UNIQUE_VIOLATION: &str = "23505";

pub fn open(url: &str) -> Result<PgPool, StoreError> {
    PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy(url)
        .map_err(postgres_error)
}

pub async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map(drop)
        .map_err(postgres_error)
}

/// The module's migrations, compiled into the binary. Only the PostgreSQL
/// modules have any: the table, then the trigger that notifies the
/// backends' read caches (`record_cache`) of every change.
fn migrations(module: Module) -> Vec<Migration> {
    let (table, notify) = match module {
        Module::Finance => (
            include_str!("../../migrations/finance/0001_invoices.sql"),
            include_str!("../../migrations/finance/0002_invoices_notify.sql"),
        ),
        Module::Venue => (
            include_str!("../../migrations/venue/0001_venues.sql"),
            include_str!("../../migrations/venue/0002_venues_notify.sql"),
        ),
        Module::Ai => (
            include_str!("../../migrations/ai/0001_prompts.sql"),
            include_str!("../../migrations/ai/0002_prompts_notify.sql"),
        ),
        Module::Basic | Module::Market | Module::Touring => return Vec::new(),
    };
    let migration = |version: i64, what: &str, sql: &'static str| {
        let description = format!("{} {}{what}", module.name(), module.resource());
        Migration::new(
            version,
            description.into(),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )
    };
    vec![
        migration(1, "", table),
        migration(2, " change notifications", notify),
    ]
}

pub async fn migrate(pool: &PgPool, module: Module) -> Result<(), StoreError> {
    Migrator::with_migrations(migrations(module))
        .run(pool)
        .await
        .map_err(|e| StoreError::Migration(e.to_string()))
}

/// `Err` naming the pending or changed migrations unless the module's
/// tables are exactly what this binary embeds.
pub async fn require_current(pool: &PgPool, module: Module) -> Result<(), StoreError> {
    let migrator = Migrator::with_migrations(migrations(module));
    kisum_common::schema::state(pool, &migrator)
        .await
        .map_err(postgres_error)?
        .require_current("kisum-module")
        .map_err(StoreError::Migration)
}

fn postgres_error(error: sqlx::Error) -> StoreError {
    StoreError::Postgres(error.to_string())
}

/// `created_at` as RFC 3339 in UTC, under a name that cannot shadow the
/// column in `ORDER BY`.
macro_rules! created_at_text {
    () => {
        "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS created_at_text"
    };
}

/// A resource's table: its three statements and how its fields map to
/// columns. Binds: `INSERT` takes `$1` id, `$2` company, then the fields;
/// `LIST` takes `$1` company, `$2` limit; `FIND` takes `$1` company, `$2` id.
pub trait Table: Fields {
    const INSERT: &'static str;
    const LIST: &'static str;
    const FIND: &'static str;
    fn bind_fields<'q>(
        &self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments>;
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error>;
}

impl Table for Invoice {
    const INSERT: &'static str = concat!(
        "INSERT INTO invoices (id, company, number, customer, amount_cents, currency, status) ",
        "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
        created_at_text!()
    );
    const LIST: &'static str = concat!(
        "SELECT id, company, number, customer, amount_cents, currency, status, ",
        created_at_text!(),
        " FROM invoices WHERE company = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
    );
    const FIND: &'static str = concat!(
        "SELECT id, company, number, customer, amount_cents, currency, status, ",
        created_at_text!(),
        " FROM invoices WHERE company = $1 AND id = $2"
    );

    fn bind_fields<'q>(
        &self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(self.number.as_str())
            .bind(self.customer.as_str())
            .bind(self.amount_cents)
            .bind(self.currency.as_str())
            .bind(self.status.as_str())
    }

    fn from_row(row: &PgRow) -> Result<Invoice, sqlx::Error> {
        Ok(Invoice {
            number: row.try_get("number")?,
            customer: row.try_get("customer")?,
            amount_cents: row.try_get("amount_cents")?,
            currency: row.try_get("currency")?,
            status: row.try_get("status")?,
        })
    }
}

impl Table for Venue {
    const INSERT: &'static str = concat!(
        "INSERT INTO venues (id, company, name, city, capacity) ",
        "VALUES ($1, $2, $3, $4, $5) RETURNING ",
        created_at_text!()
    );
    const LIST: &'static str = concat!(
        "SELECT id, company, name, city, capacity, ",
        created_at_text!(),
        " FROM venues WHERE company = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
    );
    const FIND: &'static str = concat!(
        "SELECT id, company, name, city, capacity, ",
        created_at_text!(),
        " FROM venues WHERE company = $1 AND id = $2"
    );

    fn bind_fields<'q>(
        &self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(self.name.as_str())
            .bind(self.city.as_str())
            .bind(self.capacity)
    }

    fn from_row(row: &PgRow) -> Result<Venue, sqlx::Error> {
        Ok(Venue {
            name: row.try_get("name")?,
            city: row.try_get("city")?,
            capacity: row.try_get("capacity")?,
        })
    }
}

impl Table for Prompt {
    const INSERT: &'static str = concat!(
        "INSERT INTO prompts (id, company, prompt, response, model) ",
        "VALUES ($1, $2, $3, $4, $5) RETURNING ",
        created_at_text!()
    );
    const LIST: &'static str = concat!(
        "SELECT id, company, prompt, response, model, ",
        created_at_text!(),
        " FROM prompts WHERE company = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
    );
    const FIND: &'static str = concat!(
        "SELECT id, company, prompt, response, model, ",
        created_at_text!(),
        " FROM prompts WHERE company = $1 AND id = $2"
    );

    fn bind_fields<'q>(
        &self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(self.prompt.as_str())
            .bind(self.response.as_str())
            .bind(self.model.as_str())
    }

    fn from_row(row: &PgRow) -> Result<Prompt, sqlx::Error> {
        Ok(Prompt {
            prompt: row.try_get("prompt")?,
            response: row.try_get("response")?,
            model: row.try_get("model")?,
        })
    }
}

/// The records of table `F` in one pool.
pub struct Records<F> {
    pool: PgPool,
    fields: PhantomData<fn() -> F>,
}

impl<F: Table> Records<F> {
    pub fn new(pool: PgPool) -> Self {
        Records {
            pool,
            fields: PhantomData,
        }
    }

    async fn list(&self, company: Uuid, limit: Limit) -> Result<Vec<Record<F>>, StoreError> {
        let rows = sqlx::query(F::LIST)
            .bind(company)
            .bind(i64::from(limit.get()))
            .fetch_all(&self.pool)
            .await
            .map_err(postgres_error)?;
        rows.iter()
            .map(record_from_row)
            .collect::<Result<_, _>>()
            .map_err(postgres_error)
    }

    async fn create(&self, company: Uuid, fields: F) -> Result<Record<F>, StoreError> {
        let id = Uuid::new_v4();
        let query = sqlx::query(F::INSERT).bind(id).bind(company);
        let row = fields
            .bind_fields(query)
            .fetch_one(&self.pool)
            .await
            .map_err(insert_error::<F>)?;
        Ok(Record {
            id,
            company,
            created_at: row.try_get("created_at_text").map_err(postgres_error)?,
            fields,
        })
    }

    async fn find(&self, company: Uuid, id: Uuid) -> Result<Option<Record<F>>, StoreError> {
        let row = sqlx::query(F::FIND)
            .bind(company)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(postgres_error)?;
        row.as_ref()
            .map(record_from_row)
            .transpose()
            .map_err(postgres_error)
    }
}

fn record_from_row<F: Table>(row: &PgRow) -> Result<Record<F>, sqlx::Error> {
    Ok(Record {
        id: row.try_get("id")?,
        company: row.try_get("company")?,
        created_at: row.try_get("created_at_text")?,
        fields: F::from_row(row)?,
    })
}

fn insert_error<F: Fields>(error: sqlx::Error) -> StoreError {
    let unique = error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == UNIQUE_VIOLATION);
    if unique {
        StoreError::Duplicate(F::NOUN)
    } else {
        postgres_error(error)
    }
}

impl<F: Table> RecordStore<F> for Records<F> {
    fn list(
        &self,
        company: Uuid,
        limit: Limit,
    ) -> BoxFuture<'_, Result<Vec<Record<F>>, StoreError>> {
        Box::pin(Records::list(self, company, limit))
    }

    fn create(&self, company: Uuid, fields: F) -> BoxFuture<'_, Result<Record<F>, StoreError>> {
        Box::pin(Records::create(self, company, fields))
    }

    fn find(
        &self,
        company: Uuid,
        id: Uuid,
    ) -> BoxFuture<'_, Result<Option<Record<F>>, StoreError>> {
        Box::pin(Records::find(self, company, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_is_scoped_to_the_company() {
        for sql in [
            Invoice::LIST,
            Invoice::FIND,
            Venue::LIST,
            Venue::FIND,
            Prompt::LIST,
            Prompt::FIND,
        ] {
            assert!(sql.contains("WHERE company = $1"), "{sql}");
        }
    }

    #[test]
    fn only_the_postgres_modules_have_migrations() {
        for module in Module::ALL {
            let expected = module.engine() == crate::module::Engine::Postgres;
            assert_eq!(!migrations(module).is_empty(), expected, "{module}");
        }
    }
}
