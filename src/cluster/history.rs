//! Release history in the cluster: one ConfigMap per release,
//! `kisumctl-release-<N>` in the environment's namespace, with the record
//! (`release.json`: number, outcome, manifest digest, images, schema
//! levels, who, when, a note) and the manifests themselves
//! (`manifests.json`), so that any recorded release can be applied again.
//! The manifests hold no secret value (secrets reach pods from the secret
//! backend), which is why a ConfigMap is enough.
//!
//! The rollback guard is here too, pure: the schema levels each release
//! recorded decide whether an older release may run again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::api::{ApiError, Namespace};
use super::manifest::Manifests;
use crate::matrix::schema::SchemaLevel;

pub const RELEASE_LABEL: &str = "kisum.io/release";
const ENVIRONMENT_LABEL: &str = "kisum.io/environment";
const RECORD_KEY: &str = "release.json";
const MANIFESTS_KEY: &str = "manifests.json";

/// How a release ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Rolled out and passed the smoke checks.
    Deployed,
    /// Applied, then a rollout timed out or a smoke check failed.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub number: u32,
    pub outcome: Outcome,
    pub digest: String,
    pub images: BTreeMap<String, String>,
    pub schema: BTreeMap<String, SchemaLevel>,
    pub who: String,
    /// RFC 3339.
    pub when: String,
    /// What the release was: a deploy, a rollback to N, why it failed.
    pub note: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("release history ConfigMap/{name}: {message}")]
    Malformed { name: String, message: String },
    #[error(
        "release {number} is not in the history of {environment} (see `kisumctl history {environment}`)"
    )]
    Unknown { environment: String, number: u32 },
    /// `rollback --to N` naming no recorded release: unusable input.
    #[error(
        "release {number} is not in the history of {environment}; its releases are {} (see `kisumctl history {environment}`)",
        known_releases(.known)
    )]
    NoSuchRelease {
        environment: String,
        number: u32,
        known: Vec<u32>,
    },
}

fn known_releases(known: &[u32]) -> String {
    if known.is_empty() {
        return "none yet".into();
    }
    known
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn config_map_name(number: u32) -> String {
    format!("kisumctl-release-{number}")
}

fn selector(environment: &str) -> String {
    format!("{ENVIRONMENT_LABEL}={environment},app.kubernetes.io/name=kisumctl-history")
}

/// Every recorded release of the environment, oldest first.
pub async fn list(namespace: &Namespace, environment: &str) -> Result<Vec<Record>, HistoryError> {
    let items = namespace
        .list("v1", "ConfigMap", &selector(environment))
        .await?;
    let mut records = items
        .iter()
        .map(|item| parse(item, RECORD_KEY))
        .collect::<Result<Vec<Record>, _>>()?;
    records.sort_by_key(|r| r.number);
    Ok(records)
}

/// One release's record and manifests.
pub async fn load(
    namespace: &Namespace,
    environment: &str,
    number: u32,
) -> Result<(Record, Manifests), HistoryError> {
    let name = config_map_name(number);
    let Some(item) = namespace.get("v1", "ConfigMap", &name).await? else {
        return Err(HistoryError::Unknown {
            environment: environment.to_string(),
            number,
        });
    };
    Ok((parse(&item, RECORD_KEY)?, parse(&item, MANIFESTS_KEY)?))
}

fn parse<T: serde::de::DeserializeOwned>(item: &Value, key: &str) -> Result<T, HistoryError> {
    let name = item["metadata"]["name"].as_str().unwrap_or("?").to_string();
    let text = item["data"][key]
        .as_str()
        .ok_or_else(|| HistoryError::Malformed {
            name: name.clone(),
            message: format!("no `{key}`"),
        })?;
    serde_json::from_str(text).map_err(|e| HistoryError::Malformed {
        name,
        message: format!("`{key}`: {e}"),
    })
}

/// Stores a release (server-side apply, so a rerun is harmless).
pub async fn store(
    namespace: &Namespace,
    environment: &str,
    record: &Record,
    manifests: &Manifests,
) -> Result<(), HistoryError> {
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(record.number),
            "namespace": namespace.name,
            "labels": {
                "app.kubernetes.io/managed-by": super::FIELD_MANAGER,
                "app.kubernetes.io/name": "kisumctl-history",
                ENVIRONMENT_LABEL: environment,
                RELEASE_LABEL: record.number.to_string(),
            },
        },
        "data": {
            RECORD_KEY: serde_json::to_string_pretty(record).unwrap_or_default(),
            MANIFESTS_KEY: serde_json::to_string(manifests).unwrap_or_default(),
        },
    });
    namespace.apply(&config_map, false).await?;
    Ok(())
}

/// Deletes the oldest records beyond `limit`, never `keep`.
pub async fn trim(
    namespace: &Namespace,
    records: &[Record],
    limit: u32,
    keep: u32,
) -> Result<Vec<u32>, HistoryError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let excess = records.len().saturating_sub(limit);
    let mut removed = Vec::new();
    for record in records.iter().filter(|r| r.number != keep).take(excess) {
        namespace
            .delete("v1", "ConfigMap", &config_map_name(record.number), false)
            .await?;
        removed.push(record.number);
    }
    Ok(removed)
}

/// The release running now: the newest that deployed.
pub fn current(records: &[Record]) -> Option<&Record> {
    records
        .iter()
        .rev()
        .find(|r| r.outcome == Outcome::Deployed)
}

/// A service whose code in the target release cannot run on the schema a
/// newer release migrated to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Crossing {
    pub service: String,
    /// The schema level the target release migrated to.
    pub target_level: u32,
    /// The newer release whose code needs at least `oldest`.
    pub release: u32,
    pub oldest: u32,
}

impl std::fmt::Display for Crossing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: release {} runs on schema level {} and newer, so its migrations past level {} (where the target stops) are ones older code cannot run on",
            self.service, self.release, self.oldest, self.target_level
        )
    }
}

/// The guard: rolling back to `target` leaves every database at the level
/// the newest releases migrated to (migrations are never reversed). A
/// release after `target` whose code runs only on schema level `oldest`
/// and newer marks a migration past `target`'s level that `target`'s code
/// may not run on: each such crossing is returned.
pub fn crossings(records: &[Record], target: &Record) -> Vec<Crossing> {
    let mut found = Vec::new();
    for newer in records.iter().filter(|r| r.number > target.number) {
        for (service, schema) in &newer.schema {
            let Some(old) = target.schema.get(service) else {
                continue;
            };
            if old.level < schema.oldest {
                found.push(Crossing {
                    service: service.clone(),
                    target_level: old.level,
                    release: newer.number,
                    oldest: schema.oldest,
                });
            }
        }
    }
    found.sort_by(|a, b| (&a.service, a.release).cmp(&(&b.service, b.release)));
    found.dedup_by(|a, b| a.service == b.service);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(number: u32, level: u32, oldest: u32) -> Record {
        Record {
            number,
            outcome: Outcome::Deployed,
            digest: String::new(),
            images: BTreeMap::new(),
            schema: BTreeMap::from([("auth".to_string(), SchemaLevel { level, oldest })]),
            who: String::new(),
            when: String::new(),
            note: String::new(),
        }
    }

    #[test]
    fn a_rollback_across_a_raised_oldest_level_is_a_crossing() {
        let records = [record(1, 4, 3), record(2, 5, 3), record(3, 6, 5)];
        assert!(crossings(&records, &records[1]).is_empty());
        let found = crossings(&records, &records[0]);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].target_level, found[0].release, found[0].oldest),
            (4, 3, 5)
        );
    }

    #[test]
    fn the_current_release_is_the_newest_that_deployed() {
        let mut failed = record(3, 5, 3);
        failed.outcome = Outcome::Failed;
        let records = [record(1, 4, 3), record(2, 5, 3), failed];
        assert_eq!(current(&records).map(|r| r.number), Some(2));
    }
}
