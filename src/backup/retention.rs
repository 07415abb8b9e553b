//! Retention: which backups `backup prune` keeps.
//!
//! The policy, per database of an environment, with N the retention of the
//! matrix (`databases.<id>.retention-days` of the environment file, else
//! `backup.retention-days` of `base.yaml`; Redis takes the longest of the
//! databases):
//!
//! - every backup that finished less than N days (N x 86,400 seconds) ago
//!   is kept, safety backups included;
//! - the newest backup that is not a safety backup is always kept, however
//!   old, so that a database never loses its last restore point; when a
//!   database has only safety backups, the newest of them is kept;
//! - everything else is deleted.

use serde::Serialize;

use super::{Manifest, Trigger};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: String,
    pub database: String,
    pub keep: bool,
    pub reason: String,
}

/// Applies the policy to the backups of `database` at time `now` (Unix
/// seconds). A backup whose time cannot be read is kept.
pub fn decide(
    manifests: &[Manifest],
    database: &str,
    retention_days: u32,
    now: i64,
) -> Vec<Decision> {
    // The newest restore point: a safety backup only when the database
    // has nothing else.
    let newest = super::newest(manifests, database)
        .or_else(|| {
            manifests
                .iter()
                .filter(|m| m.database == database)
                .max_by(|a, b| (&a.finished_at, &a.id).cmp(&(&b.finished_at, &b.id)))
        })
        .map(|m| m.id.clone());
    let limit = i64::from(retention_days) * 86_400;
    manifests
        .iter()
        .filter(|m| m.database == database)
        .map(|m| {
            let finished = m
                .finished_at
                .parse::<jiff::Timestamp>()
                .map(|t| t.as_second());
            let (keep, reason) = match finished {
                Err(_) => (true, "unreadable time: kept".to_string()),
                Ok(_) if Some(&m.id) == newest.as_ref() => {
                    (true, "the newest backup is always kept".to_string())
                }
                Ok(at) if now - at < limit => {
                    (true, format!("younger than {retention_days} day(s)"))
                }
                Ok(_) => {
                    let kind = if m.trigger == Trigger::Safety {
                        "safety backup "
                    } else {
                        ""
                    };
                    (false, format!("{kind}older than {retention_days} day(s)"))
                }
            };
            Decision {
                id: m.id.clone(),
                database: database.to_string(),
                keep,
                reason,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::manifest::{EngineKind, Source};

    fn backup(id: &str, database: &str, finished_at: &str, trigger: Trigger) -> Manifest {
        Manifest {
            schema_version: 1,
            id: id.into(),
            environment: "local".into(),
            database: database.into(),
            engine: EngineKind::Postgresql,
            trigger,
            started_at: finished_at.into(),
            finished_at: finished_at.into(),
            source: Source {
                host: "127.0.0.1".into(),
                port: 1,
                name: "x".into(),
            },
            tools: Default::default(),
            counts: Default::default(),
            files: vec![],
            recipients: vec![],
            details: serde_json::Value::Null,
        }
    }

    fn now() -> i64 {
        "2026-03-10T12:00:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_second()
    }

    fn kept(decisions: &[Decision]) -> Vec<&str> {
        decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.id.as_str())
            .collect()
    }

    #[test]
    fn backups_younger_than_the_retention_are_kept_and_older_ones_pruned() {
        let manifests = vec![
            backup("a", "auth-db", "2026-03-01T00:00:00Z", Trigger::Manual),
            backup("b", "auth-db", "2026-03-07T12:00:01Z", Trigger::Manual),
            backup("c", "auth-db", "2026-03-09T00:00:00Z", Trigger::Safety),
            backup("d", "auth-db", "2026-03-10T00:00:00Z", Trigger::Manual),
            backup("e", "main-db", "2026-01-01T00:00:00Z", Trigger::Manual),
        ];
        assert_eq!(
            kept(&decide(&manifests, "auth-db", 3, now())),
            ["b", "c", "d"]
        );
    }

    #[test]
    fn the_newest_backup_survives_however_old() {
        let manifests = vec![
            backup("a", "auth-db", "2025-01-01T00:00:00Z", Trigger::Manual),
            backup("b", "auth-db", "2025-02-01T00:00:00Z", Trigger::Manual),
            backup("c", "auth-db", "2025-03-01T00:00:00Z", Trigger::Safety),
        ];
        assert_eq!(kept(&decide(&manifests, "auth-db", 3, now())), ["b"]);
    }

    #[test]
    fn a_database_with_only_old_safety_backups_keeps_the_newest() {
        let manifests = vec![
            backup("a", "ai-db", "2026-02-01T00:00:00Z", Trigger::Safety),
            backup("b", "ai-db", "2026-02-02T00:00:00Z", Trigger::Safety),
        ];
        let decisions = decide(&manifests, "ai-db", 3, now());
        assert_eq!(kept(&decisions), ["b"]);
    }

    #[test]
    fn exactly_n_days_old_is_pruned() {
        let manifests = vec![
            backup("a", "auth-db", "2026-03-07T12:00:00Z", Trigger::Manual),
            backup("b", "auth-db", "2026-03-10T00:00:00Z", Trigger::Manual),
        ];
        assert_eq!(kept(&decide(&manifests, "auth-db", 3, now())), ["b"]);
    }
}
