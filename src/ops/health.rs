//! The operational state `kisumctl status` adds to the processes: each
//! database's newest backup against its RPO, the last restore drill's
//! result and the JWT key set's state. Each item is `green`, `yellow`
//! (nothing to judge yet, such as no backup ever taken) or `red` (a backup
//! older than the RPO, a failed drill, a key set without exactly one active
//! key); any red makes `status` exit 1. `unknown` is what could not be
//! looked at from here (an unreachable store, a private network), with why.

use std::path::Path;
use std::str::FromStr as _;

use serde::Serialize;

use crate::backup::manifest::Manifest;
use crate::matrix::Environment;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Light {
    Green,
    Yellow,
    Unknown,
    Red,
}

impl Light {
    /// The word `status` prints for it.
    pub fn word(self) -> &'static str {
        match self {
            Light::Green => "ok",
            Light::Yellow => "note",
            Light::Unknown => "unknown",
            Light::Red => "RED",
        }
    }
}

/// One judged item.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// `backup auth-db`, `drill`, `key set`.
    pub name: String,
    pub light: Light,
    pub detail: String,
}

impl Item {
    pub fn new(name: impl Into<String>, light: Light, detail: impl Into<String>) -> Item {
        Item {
            name: name.into(),
            light,
            detail: detail.into(),
        }
    }
}

/// Per database of the matrix: the newest backup's age against the RPO.
/// `now` is in Unix seconds.
pub fn backups(env: &Environment, manifests: &[Manifest], now: i64) -> Vec<Item> {
    env.base
        .databases
        .iter()
        .map(|(id, database)| {
            let name = format!("backup {id}");
            let rpo = i64::from(database.rpo_minutes) * 60;
            let newest = crate::backup::newest(manifests, id);
            let age = newest.and_then(|m| {
                let at = jiff::Timestamp::from_str(&m.finished_at).ok()?;
                Some(now - at.as_second())
            });
            if let Some(why) = newest.and_then(|m| crate::backup::dated_in_the_future(m, now)) {
                let detail = format!("{why}: not counted as meeting the RPO");
                return Item::new(name, Light::Red, detail);
            }
            match (newest, age) {
                (None, _) => Item::new(name, Light::Yellow, "no backup yet"),
                (Some(m), None) => {
                    Item::new(name, Light::Red, format!("{}: unreadable time", m.id))
                }
                (Some(m), Some(age)) if age > rpo => Item::new(
                    name,
                    Light::Red,
                    format!(
                        "{} is {} min old, over the RPO of {} min",
                        m.id,
                        age / 60,
                        rpo / 60
                    ),
                ),
                (Some(m), Some(age)) => Item::new(
                    name,
                    Light::Green,
                    format!("{} is {} min old (RPO {} min)", m.id, age / 60, rpo / 60),
                ),
            }
        })
        .collect()
}

/// Per database: the newest backup in the environment's backup store
/// against its RPO. A store that cannot be listed is one item of light
/// `unlisted` (red where the store is this machine's, unknown where it is
/// remote), with why.
pub async fn backups_in_store(
    matrix_dir: &Path,
    env: &Environment<'_>,
    unlisted: Light,
) -> Vec<Item> {
    if !env.file.backups.enabled {
        return Vec::new();
    }
    let listed = match crate::secrets::for_environment(matrix_dir, env) {
        Ok(secrets) => match crate::backup::Context::new(matrix_dir, env, secrets).await {
            Ok(cx) => cx.store.list().await.map(|(manifests, _)| manifests),
            Err(error) => Err(error),
        },
        Err(error) => Err(error.into()),
    };
    match listed {
        Ok(manifests) => backups(env, &manifests, jiff::Timestamp::now().as_second()),
        Err(error) => vec![Item::new(
            "backups",
            unlisted,
            format!("the backup store cannot be listed: {error:#}"),
        )],
    }
}

/// The key set of the environment's secret store, judged by [`key_set`];
/// a store that cannot be read is of light `unreadable`.
pub fn key_set_in(
    base: &crate::matrix::schema::BaseFile,
    store: &dyn crate::secrets::SecretStore,
    unreadable: Light,
) -> Item {
    use crate::rotation::store::{KeyStore, KeyStoreError};
    match KeyStore::new(base, store).and_then(|keys| keys.load()) {
        Ok(keys) => key_set(Ok(keys)),
        Err(error @ KeyStoreError::Store(_)) => Item::new("key set", unreadable, error.to_string()),
        Err(error) => key_set(Err(error.to_string())),
    }
}

/// The newest drill report (`drill-*.json`) in `dir`.
pub fn last_drill(dir: &Path) -> Item {
    let mut reports: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                    name.starts_with("drill-") && name.ends_with(".json")
                })
                .collect()
        })
        .unwrap_or_default();
    // Report names carry their time (`drill-2026-12-05T020000Z.json`).
    reports.sort();
    let Some(newest) = reports.last() else {
        return Item::new("drill", Light::Yellow, "no drill yet");
    };
    let text = std::fs::read_to_string(newest).ok();
    drill_report(&newest.display().to_string(), text.as_deref())
}

/// A drill report (the JSON `kisumctl drill` writes) read from `origin`:
/// green when every database passed, red naming those that failed.
pub fn drill_report(origin: &str, text: Option<&str>) -> Item {
    let report: Option<serde_json::Value> = text.and_then(|text| serde_json::from_str(text).ok());
    let Some(report) = report else {
        return Item::new("drill", Light::Red, format!("{origin}: unreadable"));
    };
    let at = report["at"].as_str().unwrap_or("?");
    let failed: Vec<&str> = report["databases"]
        .as_array()
        .map(|dbs| {
            dbs.iter()
                .filter(|d| d["passed"] != true)
                .filter_map(|d| d["database"].as_str())
                .collect()
        })
        .unwrap_or_default();
    if report["passed"] == true {
        Item::new("drill", Light::Green, format!("passed at {at}"))
    } else {
        Item::new(
            "drill",
            Light::Red,
            format!("failed at {at}: {}", failed.join(", ")),
        )
    }
}

/// The key set: exactly one active key; a `next` or `retiring` key means
/// a rotation is under way (`rotate-jwt-key --status` tells more).
pub fn key_set(keys: Result<kisum_common::keys::KeySet, String>) -> Item {
    use kisum_common::keys::KeyState;
    let keys = match keys {
        Ok(keys) => keys,
        Err(reason) => return Item::new("key set", Light::Red, reason),
    };
    let count = |state: KeyState| keys.keys.iter().filter(|k| k.state == state).count();
    let (active, next, retiring) = (
        count(KeyState::Active),
        count(KeyState::Next),
        count(KeyState::Retiring),
    );
    if active != 1 || next > 1 || retiring > 1 {
        return Item::new(
            "key set",
            Light::Red,
            format!("{active} active, {next} next, {retiring} retiring: irregular"),
        );
    }
    let kid = &keys.active().kid;
    if next + retiring > 0 {
        Item::new(
            "key set",
            Light::Yellow,
            format!("active {kid}; a rotation is under way ({next} next, {retiring} retiring)"),
        )
    } else {
        Item::new("key set", Light::Green, format!("active {kid}, settled"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kisum_common::keys::{Key, KeySet, KeyState};

    #[test]
    fn the_key_set_is_green_when_settled_yellow_while_rotating_red_when_irregular() {
        let mut keys = KeySet::generate(1_800_000_000).unwrap();
        assert_eq!(key_set(Ok(keys.clone())).light, Light::Green);
        keys.keys
            .push(Key::generate(KeyState::Next, 1_800_000_000).unwrap());
        assert_eq!(key_set(Ok(keys.clone())).light, Light::Yellow);
        keys.keys[0].state = KeyState::Next;
        assert_eq!(key_set(Ok(keys)).light, Light::Red);
        assert_eq!(key_set(Err("missing".into())).light, Light::Red);
    }

    #[test]
    fn a_backup_dated_in_the_future_does_not_meet_the_rpo() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("environments");
        let matrix = crate::matrix::Matrix::load(&dir).unwrap();
        let env = matrix.environment("local").unwrap();
        let now = jiff::Timestamp::now().as_second();
        let mut manifest = crate::backup::manifest::tests::sample();
        let light_at = |manifest: &Manifest, seconds_ahead: i64| {
            let mut manifest = manifest.clone();
            let at = jiff::Timestamp::from_second(now + seconds_ahead).unwrap();
            manifest.finished_at = at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
            let items = backups(&env, &[manifest], now);
            let item = items.into_iter().find(|i| i.name == "backup auth-db");
            let item = item.unwrap();
            (item.light, item.detail)
        };
        manifest.started_at = "2000-01-01T00:00:00Z".into();

        let (light, detail) = light_at(&manifest, 120);
        assert_eq!(
            light,
            Light::Green,
            "within the clock skew allowed: {detail}"
        );
        let (light, detail) = light_at(&manifest, 3 * 3600);
        assert_eq!(light, Light::Red, "{detail}");
        assert!(detail.contains("dated in the future"), "{detail}");
        assert!(
            detail.contains("not counted as meeting the RPO"),
            "{detail}"
        );
    }

    #[test]
    fn the_newest_drill_report_decides() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(last_drill(dir.path()).light, Light::Yellow);
        let write = |name: &str, passed: bool| {
            let report = serde_json::json!({
                "at": name, "passed": passed,
                "databases": [{"database": "auth-db", "passed": passed}],
            });
            std::fs::write(
                dir.path().join(format!("drill-{name}.json")),
                report.to_string(),
            )
            .unwrap();
        };
        write("2026-12-01T000000Z", true);
        write("2026-12-02T000000Z", false);
        let item = last_drill(dir.path());
        assert_eq!(item.light, Light::Red);
        assert_eq!(item.detail, "failed at 2026-12-02T000000Z: auth-db");
        write("2026-12-03T000000Z", true);
        assert_eq!(last_drill(dir.path()).light, Light::Green);
    }
}
