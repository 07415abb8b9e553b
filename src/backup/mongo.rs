//! MongoDB backups through the driver: every collection's documents as raw
//! BSON (one file per collection, documents back to back as `mongodump`
//! writes them, so every BSON type and field order survives), and each
//! collection's indexes from `listIndexes` in canonical extended JSON.
//! Views and `system.*` collections are left out.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};
use mongodb::results::CollectionType;

use super::encrypt::Recipients;
use super::manifest::{FileEntry, FileSink};
use crate::secrets::Secret;

/// Name of the file listing collections, their data files and indexes.
pub const CATALOG_FILE: &str = "collections.json";

pub struct Dumped {
    pub files: Vec<FileEntry>,
    pub counts: BTreeMap<String, u64>,
    pub tools: BTreeMap<String, String>,
}

/// The longest kisumctl waits to find a MongoDB server (and to open a
/// connection to it), whatever the connection string allows (the local
/// ones allow 60 s, for services starting beside a slow server): a backup,
/// restore or drill reports a server that is down in seconds.
const SERVER_WAIT: Duration = Duration::from_secs(10);

/// A client of the MongoDB the connection string names, checked with a
/// `ping`; a server that cannot be reached is named (host and port, never
/// the credentials) in the error.
pub async fn client(url: &Secret) -> Result<mongodb::Client> {
    let mut options = mongodb::options::ClientOptions::parse(url.expose())
        .await
        .context("reading the MongoDB connection string (which is not shown)")?;
    let bounded = |wait: Option<Duration>| Some(wait.map_or(SERVER_WAIT, |w| w.min(SERVER_WAIT)));
    options.server_selection_timeout = bounded(options.server_selection_timeout);
    options.connect_timeout = bounded(options.connect_timeout);
    let wait = options.server_selection_timeout.unwrap_or(SERVER_WAIT);
    let endpoint = options
        .hosts
        .iter()
        .map(|host| host.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let client = mongodb::Client::with_options(options)
        .with_context(|| format!("connecting to MongoDB at {endpoint}"))?;
    client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .map_err(|error| match *error.kind {
            mongodb::error::ErrorKind::ServerSelection { .. } => anyhow::anyhow!(
                "MongoDB at {endpoint} did not answer within {} s (is it running?): {}",
                wait.as_secs(),
                error.kind
            ),
            _ => anyhow::anyhow!("MongoDB at {endpoint}: {}", error.kind),
        })?;
    Ok(client)
}

/// A file name for the `n`th collection: the position keeps names unique,
/// the readable part is only for people.
fn data_file(n: usize, collection: &str) -> String {
    let readable: String = collection
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    format!("collections/{n:04}-{readable}.bson")
}

pub async fn dump(url: &Secret, name: &str, dir: &Path, recipients: &Recipients) -> Result<Dumped> {
    let client = client(url).await?;
    let db = client.database(name);
    let info = db
        .run_command(doc! { "buildInfo": 1 })
        .await
        .context("MongoDB buildInfo")?;
    let mut tools = BTreeMap::new();
    tools.insert(
        "mongodb-server".to_string(),
        info.get_str("version").unwrap_or("unknown").to_string(),
    );
    tools.insert(
        "kisumctl".into(),
        format!("{} (MongoDB driver)", env!("CARGO_PKG_VERSION")),
    );

    let mut names = Vec::new();
    let mut specs = db.list_collections().await.context("listing collections")?;
    while specs.advance().await.context("listing collections")? {
        let spec = specs.deserialize_current()?;
        if spec.collection_type == CollectionType::Collection && !spec.name.starts_with("system.") {
            names.push(spec.name);
        }
    }
    names.sort();

    let mut files = Vec::new();
    let mut counts = BTreeMap::new();
    let mut catalog = Vec::new();
    for (n, collection) in names.iter().enumerate() {
        let file = data_file(n, collection);
        let coll = db.collection::<RawDocumentBuf>(collection);
        let mut sink = FileSink::create(dir, &file, recipients)?;
        let mut count = 0u64;
        let mut cursor = coll
            .find(doc! {})
            .await
            .with_context(|| format!("reading {collection}"))?;
        while cursor
            .advance()
            .await
            .with_context(|| format!("reading {collection}"))?
        {
            sink.write_all(cursor.current().as_bytes())?;
            count += 1;
        }
        files.push(sink.finish()?);
        counts.insert(collection.clone(), count);

        let mut indexes = Vec::new();
        let mut models = coll
            .list_indexes()
            .await
            .with_context(|| format!("indexes of {collection}"))?;
        while models.advance().await? {
            let model = models.deserialize_current()?;
            let mut spec = mongodb::bson::to_document(&model)?;
            spec.remove("ns");
            indexes.push(Bson::Document(spec).into_canonical_extjson());
        }
        catalog.push(serde_json::json!({ "name": collection, "file": file, "indexes": indexes }));
    }

    let mut sink = FileSink::create(dir, CATALOG_FILE, recipients)?;
    sink.write_all(serde_json::to_string_pretty(&catalog)?.as_bytes())?;
    files.push(sink.finish()?);
    Ok(Dumped {
        files,
        counts,
        tools,
    })
}

/// Documents go back in batches of this many.
const INSERT_BATCH: usize = 1000;

/// Restores a backup (its plain files) into the new database `database`:
/// every collection, even empty ones, then its indexes. Answers the
/// document count of each collection, read back from the server.
pub async fn restore_into(
    url: &Secret,
    database: &str,
    plain: &BTreeMap<String, PathBuf>,
) -> Result<BTreeMap<String, u64>> {
    let catalog_path = plain
        .get(CATALOG_FILE)
        .context("the backup has no collection catalog")?;
    let catalog: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(catalog_path)?)
        .context("reading the collection catalog")?;
    let client = client(url).await?;
    let db = client.database(database);
    let mut counts = BTreeMap::new();
    for entry in &catalog {
        let name = entry["name"]
            .as_str()
            .context("a catalog entry has no name")?;
        let file = entry["file"]
            .as_str()
            .context("a catalog entry has no file")?;
        let path = plain
            .get(file)
            .with_context(|| format!("{file} is not in the backup"))?;
        let documents =
            documents(&std::fs::read(path)?).with_context(|| format!("reading {file}"))?;
        db.create_collection(name)
            .await
            .with_context(|| format!("creating {name}"))?;
        let coll = db.collection::<RawDocumentBuf>(name);
        for batch in documents.chunks(INSERT_BATCH) {
            coll.insert_many(batch)
                .ordered(false)
                .await
                .with_context(|| format!("inserting into {name}"))?;
        }
        let specs: Vec<Document> = index_specs(entry)?
            .into_iter()
            .filter(|spec| spec.get_str("name") != Ok("_id_"))
            .map(|mut spec| {
                spec.remove("v");
                spec
            })
            .collect();
        if !specs.is_empty() {
            db.run_command(doc! { "createIndexes": name, "indexes": specs })
                .await
                .with_context(|| format!("creating the indexes of {name}"))?;
        }
        counts.insert(name.to_string(), coll.count_documents(doc! {}).await?);
    }
    Ok(counts)
}

pub async fn drop_database(url: &Secret, database: &str) -> Result<()> {
    let client = client(url).await?;
    client
        .database(database)
        .drop()
        .await
        .with_context(|| format!("dropping database {database}"))
}

/// Whether `database` exists: listed by `listDatabases`, or (where the
/// server cannot list them) holding a collection.
pub async fn database_exists(client: &mongodb::Client, database: &str) -> Result<bool> {
    if let Ok(names) = client.list_database_names().await {
        return Ok(names.iter().any(|name| name == database));
    }
    let collections = client
        .database(database)
        .list_collection_names()
        .await
        .with_context(|| format!("listing the collections of {database}"))?;
    Ok(!collections.is_empty())
}

/// How long [`drop_database_verified`] keeps dropping a database that
/// comes back.
pub const DROP_PATIENCE: Duration = Duration::from_secs(20);

/// Drops `database` and checks that it is gone, twice, half a second
/// apart: a write still in flight from a killed client (the server goes
/// on with a batch it had received) can create it again after the drop.
/// Each attempt drops every collection, then the database. Answers
/// whether it is gone; `false` when it still came back after `patience`.
pub async fn drop_database_verified(
    url: &Secret,
    database: &str,
    patience: Duration,
) -> Result<bool> {
    let client = client(url).await?;
    let db = client.database(database);
    let deadline = std::time::Instant::now() + patience;
    loop {
        for collection in db.list_collection_names().await.unwrap_or_default() {
            let _ = db.collection::<Document>(&collection).drop().await;
        }
        db.drop()
            .await
            .with_context(|| format!("dropping database {database}"))?;
        let mut absent = 0;
        while absent < 2 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if database_exists(&client, database).await? {
                break;
            }
            absent += 1;
        }
        if absent == 2 {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
    }
}

/// Splits a BSON data file into documents.
pub fn documents(bytes: &[u8]) -> Result<Vec<RawDocumentBuf>> {
    let mut documents = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        anyhow::ensure!(rest.len() >= 5, "truncated BSON document");
        let length = i32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let length = usize::try_from(length).context("negative BSON length")?;
        anyhow::ensure!(
            length >= 5 && length <= rest.len(),
            "truncated BSON document"
        );
        documents.push(RawDocumentBuf::from_bytes(rest[..length].to_vec())?);
        rest = &rest[length..];
    }
    Ok(documents)
}

/// Index specifications of a catalog entry, back from extended JSON.
pub fn index_specs(entry: &serde_json::Value) -> Result<Vec<Document>> {
    let mut specs = Vec::new();
    for value in entry["indexes"].as_array().into_iter().flatten() {
        match Bson::try_from(value.clone())? {
            Bson::Document(spec) => specs.push(spec),
            other => anyhow::bail!("an index specification is not a document: {other}"),
        }
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_files_are_unique_and_safe() {
        assert_eq!(data_file(3, "a/b c"), "collections/0003-a_b_c.bson");
        assert_ne!(data_file(1, "x"), data_file(2, "x"));
    }

    #[test]
    fn concatenated_documents_split_back() {
        let one = RawDocumentBuf::from_document(&doc! { "a": 1_i32, "b": "é\0" }).unwrap();
        let two = RawDocumentBuf::from_document(&doc! { "c": -0.0_f64 }).unwrap();
        let bytes = [one.as_bytes(), two.as_bytes()].concat();
        let split = documents(&bytes).unwrap();
        assert_eq!(split, vec![one, two]);
        assert!(documents(&bytes[..bytes.len() - 1]).is_err());
    }
}
