//! Records in MongoDB: one typed collection per resource, named after it,
//! with one index serving every read (company, newest first). Every filter
//! names the company.

use std::time::Duration;

use mongodb::bson::{self, doc};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Collection, IndexModel};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{BoxFuture, RecordStore, StoreError};
use crate::module::Module;
use crate::records::{Fields, Limit, Record};

const INDEX_NAME: &str = "by_company_newest_first";
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// A record as stored: the record's own fields sit in their own
/// sub-document, apart from the keys the backend sets.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored<F> {
    #[serde(rename = "_id")]
    id: String,
    company: String,
    created_at: bson::DateTime,
    fields: F,
}

/// Parses the URL without connecting; the URL must name the database.
pub async fn open(url: &str) -> Result<mongodb::Database, StoreError> {
    let mut options = ClientOptions::parse(url).await.map_err(mongo_error)?;
    if options.server_selection_timeout.is_none() {
        options.server_selection_timeout = Some(SERVER_SELECTION_TIMEOUT);
    }
    let database = options
        .default_database
        .clone()
        .ok_or(StoreError::NoDatabaseName)?;
    let client = mongodb::Client::with_options(options).map_err(mongo_error)?;
    Ok(client.database(&database))
}

pub async fn ping(db: &mongodb::Database) -> Result<(), StoreError> {
    db.run_command(doc! { "ping": 1 })
        .await
        .map(drop)
        .map_err(mongo_error)
}

/// The index behind every listing and lookup of the module's collection.
pub async fn create_indexes(db: &mongodb::Database, module: Module) -> Result<(), StoreError> {
    let index = IndexModel::builder()
        .keys(doc! { "company": 1, "created_at": -1, "_id": -1 })
        .options(IndexOptions::builder().name(INDEX_NAME.to_string()).build())
        .build();
    db.collection::<bson::Document>(module.resource())
        .create_index(index)
        .await
        .map(drop)
        .map_err(mongo_error)
}

fn mongo_error(error: mongodb::error::Error) -> StoreError {
    StoreError::Mongo(error.to_string())
}

/// The records of one collection.
pub struct Records<F: Fields> {
    collection: Collection<Stored<F>>,
}

impl<F: Fields> Records<F> {
    pub fn new(db: &mongodb::Database, collection: &str) -> Self {
        Records {
            collection: db.collection(collection),
        }
    }

    async fn list(&self, company: Uuid, limit: Limit) -> Result<Vec<Record<F>>, StoreError> {
        let mut cursor = self
            .collection
            .find(doc! { "company": company.to_string() })
            .sort(doc! { "created_at": -1, "_id": -1 })
            .limit(i64::from(limit.get()))
            .await
            .map_err(mongo_error)?;
        let mut records = Vec::new();
        while cursor.advance().await.map_err(mongo_error)? {
            let stored = cursor.deserialize_current().map_err(mongo_error)?;
            records.push(into_record(stored)?);
        }
        Ok(records)
    }

    async fn create(&self, company: Uuid, fields: F) -> Result<Record<F>, StoreError> {
        let stored = Stored {
            id: Uuid::new_v4().to_string(),
            company: company.to_string(),
            created_at: bson::DateTime::now(),
            fields,
        };
        self.collection
            .insert_one(&stored)
            .await
            .map_err(mongo_error)?;
        into_record(stored)
    }

    async fn find(&self, company: Uuid, id: Uuid) -> Result<Option<Record<F>>, StoreError> {
        let filter = doc! { "_id": id.to_string(), "company": company.to_string() };
        let stored = self
            .collection
            .find_one(filter)
            .await
            .map_err(mongo_error)?;
        stored.map(into_record).transpose()
    }
}

fn into_record<F>(stored: Stored<F>) -> Result<Record<F>, StoreError> {
    let uuid = |field: &str, value: &str| {
        Uuid::parse_str(value)
            .map_err(|_| StoreError::Mongo(format!("stored {field} `{value}` is not a UUID")))
    };
    Ok(Record {
        id: uuid("_id", &stored.id)?,
        company: uuid("company", &stored.company)?,
        created_at: stored
            .created_at
            .try_to_rfc3339_string()
            .map_err(|e| StoreError::Mongo(e.to_string()))?,
        fields: stored.fields,
    })
}

impl<F: Fields> RecordStore<F> for Records<F> {
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

    #[tokio::test]
    async fn a_url_without_a_database_name_is_refused() {
        // Parsing only: nothing connects.
        let error = open("mongodb://127.0.0.1:27017/?directConnection=true")
            .await
            .err()
            .unwrap();
        assert!(matches!(error, StoreError::NoDatabaseName));
    }
}
