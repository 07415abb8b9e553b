//! Secrets in AWS Secrets Manager: one secret per inventory id, named
//! `<prefix><id>`, whose value is a JSON object of its keys
//! (`{"url": "...", "username": "...", "password": "..."}`).
//!
//! Every read asks for the `AWSCURRENT` stage explicitly. Every change
//! is one new version (`PutSecretValue`): Secrets Manager moves
//! `AWSCURRENT` to it and `AWSPREVIOUS` to the version before, which stays
//! readable for a rollback. A write that changes nothing makes no version.
//!
//! The store's trait is synchronous; the SDK is not. The backend runs the
//! SDK on a small runtime of its own, on a scoped thread per call, so it can
//! be used from inside or outside another Tokio runtime.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};

use super::{
    Secret, SecretStore, SecretVersion, Stage, Staged, StoreError, check_name, check_names,
};

/// A version's id and keys.
type Version = (String, BTreeMap<String, String>);

/// The stage every read asks for.
const CURRENT: &str = "AWSCURRENT";
const PENDING: &str = "AWSPENDING";
const PREVIOUS: &str = "AWSPREVIOUS";
/// Days a removed secret can still be restored.
#[allow(dead_code)]
const RECOVERY_WINDOW_DAYS: i64 = 7;

/// How to reach Secrets Manager.
#[derive(Debug, Clone)]
pub struct SecretsManagerSettings {
    pub region: String,
    /// Prepended to every secret id.
    pub prefix: String,
    /// A Secrets Manager-compatible endpoint in place of AWS's own.
    pub endpoint: Option<String>,
    /// Fixed credentials; `None` takes the SDK's default chain.
    pub static_credentials: Option<(String, String)>,
}

pub struct SecretsManager {
    client: Client,
    settings: SecretsManagerSettings,
    /// Attempts per request (the retry policy shared with Route53).
    attempts: u32,
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for SecretsManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsManager")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Drop for SecretsManager {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which Tokio forbids inside another one.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl SecretsManager {
    /// Credentials come from the settings or the SDK's default chain
    /// (environment, profile, web identity, instance role); the endpoint
    /// from the settings, else from `AWS_ENDPOINT_URL_SECRETS_MANAGER` /
    /// `AWS_ENDPOINT_URL`, else AWS.
    pub fn connect(settings: SecretsManagerSettings) -> Result<SecretsManager, StoreError> {
        use aws_config::timeout::TimeoutConfig;
        use aws_config::{BehaviorVersion, Region};

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kisumctl-secrets")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Remote {
                store: "AWS Secrets Manager".into(),
                secret: String::new(),
                message: format!("cannot start the SDK's runtime: {e}"),
            })?;
        let (attempts, retry) = crate::aws::retry_policy();
        let load = {
            let settings = settings.clone();
            async move {
                let timeouts = TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(20))
                    .operation_timeout(Duration::from_secs(60))
                    .build();
                let region = Region::new(settings.region.clone());
                let config = match &settings.static_credentials {
                    Some((key, secret)) => aws_sdk_secretsmanager::config::Builder::new()
                        .behavior_version(BehaviorVersion::latest())
                        .region(region)
                        .timeout_config(timeouts)
                        .retry_config(retry)
                        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                            key,
                            secret,
                            None,
                            None,
                            "kisumctl-static",
                        )),
                    None => {
                        let shared = aws_config::defaults(BehaviorVersion::latest())
                            .region(region)
                            .timeout_config(timeouts)
                            .retry_config(retry)
                            .load()
                            .await;
                        aws_sdk_secretsmanager::config::Builder::from(&shared)
                    }
                };
                let config = match &settings.endpoint {
                    Some(endpoint) => config.endpoint_url(endpoint),
                    None => config,
                };
                Client::from_conf(config.build())
            }
        };
        let client = std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(load))
                .join()
                .expect("the SDK's configuration does not panic")
        });
        Ok(SecretsManager {
            client,
            settings,
            attempts,
            runtime: Some(runtime),
        })
    }

    fn name(&self, secret: &str) -> Result<String, StoreError> {
        check_name(secret)?;
        Ok(format!("{}{secret}", self.settings.prefix))
    }

    /// Runs an SDK call to completion on the backend's runtime.
    fn call<T: Send>(&self, future: impl Future<Output = T> + Send) -> T {
        let runtime = self.runtime.as_ref().expect("runtime present until drop");
        std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(future))
                .join()
                .expect("an SDK call does not panic")
        })
    }

    fn error<E>(&self, secret: &str, what: &str, error: SdkError<E, HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let service = crate::aws::Service::new(
            "Secrets Manager",
            "SECRETS_MANAGER",
            self.settings.endpoint.as_deref(),
        )
        .with_attempts(self.attempts);
        StoreError::Remote {
            store: self.describe(),
            secret: secret.to_string(),
            message: service.describe(what, &error),
        }
    }

    /// The keys of `secret` at `AWSCURRENT`; `None` when it does not exist.
    fn current(&self, secret: &str) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        self.at_stage(secret, CURRENT)
    }

    /// The keys of `secret` at `stage`; `None` when the secret or the
    /// stage does not exist.
    fn at_stage(
        &self,
        secret: &str,
        stage: &str,
    ) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        Ok(self.version_at(secret, stage)?.map(|(_, keys)| keys))
    }

    /// The id and keys of the version of `secret` labelled `stage`.
    fn version_at(&self, secret: &str, stage: &str) -> Result<Option<Version>, StoreError> {
        let name = self.name(secret)?;
        let request = self
            .client
            .get_secret_value()
            .secret_id(&name)
            .version_stage(stage);
        let output = match self.call(request.send()) {
            Ok(output) => output,
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                return Ok(None);
            }
            Err(error) => return Err(self.error(secret, &format!("reading {stage}"), error)),
        };
        let text = output.secret_string().unwrap_or_default();
        let malformed = |message: String| StoreError::Malformed {
            store: self.describe(),
            secret: secret.to_string(),
            message,
        };
        let version = output.version_id().unwrap_or_default().to_string();
        Ok(Some((version, keys_of(text, stage).map_err(malformed)?)))
    }

    /// One attempt of [`SecretStore::write_absent`]: `Ok(None)` when
    /// another writer changed the secret between the read and the write.
    fn try_write_absent(
        &self,
        secret: &str,
        keys: &BTreeMap<String, Secret>,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let current = self.version_at(secret, CURRENT)?;
        let (version, mut after) = match current {
            Some((version, keys)) => (Some(version), keys),
            None => (None, BTreeMap::new()),
        };
        let mut written = Vec::new();
        for (key, value) in keys {
            if !after.contains_key(key) {
                after.insert(key.clone(), value.expose().to_string());
                written.push(key.clone());
            }
        }
        if written.is_empty() {
            return Ok(Some(written));
        }
        let name = self.name(secret)?;
        let text = serde_json::to_string(&after).unwrap_or_default();
        let outcome = match &version {
            // Creating fails with ResourceExistsException when another
            // writer created the secret first.
            None => self
                .call(
                    self.client
                        .create_secret()
                        .name(&name)
                        .secret_string(text)
                        .client_request_token(uuid::Uuid::new_v4().to_string())
                        .send(),
                )
                .map(|_| ())
                .map_err(|e| (exists(&e), self.error(secret, "creating the secret", e))),
            // Every writer that read this version asks for the same new
            // version id: the first one makes it, the others' different
            // values are refused (ResourceExistsException), never stacked.
            Some(version) => self
                .call(
                    self.client
                        .put_secret_value()
                        .secret_id(&name)
                        .secret_string(text)
                        .client_request_token(successor(version))
                        .send(),
                )
                .map(|_| ())
                .map_err(|e| (exists(&e), self.error(secret, "writing a new version", e))),
        };
        match outcome {
            Ok(()) => Ok(Some(written)),
            Err((true, _)) => Ok(None),
            Err((false, error)) => Err(error),
        }
    }

    /// Moves `stage` to version `to` (from whichever version has it).
    fn move_stage(
        &self,
        secret: &str,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), StoreError> {
        let name = self.name(secret)?;
        let mut request = self
            .client
            .update_secret_version_stage()
            .secret_id(&name)
            .version_stage(stage);
        if let Some(to) = to {
            request = request.move_to_version_id(to);
        }
        if let Some(from) = from {
            request = request.remove_from_version_id(from);
        }
        self.call(request.send())
            .map(|_| ())
            .map_err(|e| self.error(secret, &format!("moving {stage}"), e))
    }

    fn put(
        &self,
        secret: &str,
        keys: &BTreeMap<String, String>,
        exists: bool,
    ) -> Result<(), StoreError> {
        self.put_at(secret, keys, exists, None)
    }

    /// A new version of `keys`; with `stage`, labelled only with it (the
    /// current version stays current).
    fn put_at(
        &self,
        secret: &str,
        keys: &BTreeMap<String, String>,
        exists: bool,
        stage: Option<&str>,
    ) -> Result<(), StoreError> {
        let name = self.name(secret)?;
        let text = serde_json::to_string(keys).unwrap_or_default();
        // One token per change: the SDK's own retries of it make one
        // version, not several.
        let token = uuid::Uuid::new_v4().to_string();
        if exists {
            let mut request = self
                .client
                .put_secret_value()
                .secret_id(&name)
                .secret_string(text)
                .client_request_token(token);
            if let Some(stage) = stage {
                request = request.version_stages(stage);
            }
            self.call(request.send())
                .map(|_| ())
                .map_err(|e| self.error(secret, "writing a new version", e))
        } else {
            self.call(
                self.client
                    .create_secret()
                    .name(&name)
                    .secret_string(text)
                    .client_request_token(token)
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| self.error(secret, "creating the secret", e))
        }
    }
}

/// Attempts of [`SecretStore::write_absent`] before it gives up on a
/// secret other writers keep changing.
const WRITE_ABSENT_ATTEMPTS: usize = 5;

/// The version id a write based on `version` asks for: the same for every
/// writer that read `version`, new for each version.
fn successor(version: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("kisumctl write-absent after {version}"));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Uuid::from_bytes(bytes).to_string()
}

/// Whether an SDK error is Secrets Manager's ResourceExistsException.
fn exists<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    error.code() == Some("ResourceExistsException")
}

/// The keys of a stored value: a JSON object of strings. The value is
/// never quoted back (it may be a credential): the message names the
/// stage, and the key whose value is not a string.
fn keys_of(text: &str, stage: &str) -> Result<BTreeMap<String, String>, String> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|_| format!("{stage} is not JSON (a JSON object of string values is expected)"))?;
    let serde_json::Value::Object(object) = value else {
        return Err(format!(
            "{stage} is not a JSON object of string values (it is a JSON {})",
            kind(&value)
        ));
    };
    let mut keys = BTreeMap::new();
    for (key, value) in object {
        match value {
            serde_json::Value::String(text) => {
                keys.insert(key, text);
            }
            other => {
                return Err(format!(
                    "key `{}` of {stage} is a JSON {}, not a string",
                    key.escape_debug(),
                    kind(&other)
                ));
            }
        }
    }
    Ok(keys)
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// The id of the version labelled `stage`.
fn version_with(versions: &[SecretVersion], stage: &str) -> Option<String> {
    versions
        .iter()
        .find(|v| v.stages.iter().any(|s| s == stage))
        .map(|v| v.id.clone())
}

fn exposed(keys: &BTreeMap<String, Secret>) -> BTreeMap<String, String> {
    keys.iter()
        .map(|(k, v)| (k.clone(), v.expose().to_string()))
        .collect()
}

impl SecretStore for SecretsManager {
    fn describe(&self) -> String {
        let endpoint = match &self.settings.endpoint {
            Some(endpoint) => format!(" at {endpoint}"),
            None => String::new(),
        };
        format!(
            "AWS Secrets Manager ({}, names {}*){endpoint}",
            self.settings.region, self.settings.prefix
        )
    }

    fn read(&self, secret: &str, key: &str) -> Result<Option<Secret>, StoreError> {
        check_name(key)?;
        Ok(self
            .current(secret)?
            .and_then(|mut keys| keys.remove(key))
            .map(Secret::new))
    }

    /// A new version holding every key of the current one, `key` set to
    /// `value`; none when the value is already current.
    fn write(&self, secret: &str, key: &str, value: &Secret) -> Result<(), StoreError> {
        check_name(key)?;
        let current = self.current(secret)?;
        let exists = current.is_some();
        let mut keys = current.unwrap_or_default();
        if keys.get(key).map(String::as_str) == Some(value.expose()) {
            return Ok(());
        }
        keys.insert(key.to_string(), value.expose().to_string());
        self.put(secret, &keys, exists)
    }

    /// One new version with every given key set, the others kept; none
    /// when nothing changes.
    fn write_keys(&self, secret: &str, keys: &BTreeMap<String, Secret>) -> Result<(), StoreError> {
        check_names(keys)?;
        let current = self.current(secret)?;
        let exists = current.is_some();
        let before = current.unwrap_or_default();
        let mut after = before.clone();
        after.extend(exposed(keys));
        if exists && after == before {
            return Ok(());
        }
        self.put(secret, &after, exists)
    }

    /// Re-reads and retries when another writer created or changed the
    /// secret in between (the loser of a race keeps the winner's keys).
    fn write_absent(
        &self,
        secret: &str,
        keys: &BTreeMap<String, Secret>,
    ) -> Result<Vec<String>, StoreError> {
        check_names(keys)?;
        for _ in 0..WRITE_ABSENT_ATTEMPTS {
            if let Some(written) = self.try_write_absent(secret, keys)? {
                return Ok(written);
            }
        }
        Err(StoreError::Remote {
            store: self.describe(),
            secret: secret.to_string(),
            message: format!(
                "other writers changed the secret during each of {WRITE_ABSENT_ATTEMPTS} \
                 attempts; nothing was written"
            ),
        })
    }

    fn read_stage(&self, secret: &str, stage: Stage) -> Result<Option<Staged>, StoreError> {
        Ok(self.at_stage(secret, stage.label())?.map(|keys| Staged {
            keys: keys.into_iter().map(|(k, v)| (k, Secret::new(v))).collect(),
        }))
    }

    /// A version labelled `AWSPENDING` only (Secrets Manager takes the
    /// label off any earlier pending version).
    fn put_pending(&self, secret: &str, keys: &BTreeMap<String, Secret>) -> Result<(), StoreError> {
        check_names(keys)?;
        self.put_at(secret, &exposed(keys), true, Some(PENDING))
    }

    /// `AWSCURRENT` moved to the pending version (Secrets Manager moves
    /// `AWSPREVIOUS` to the version that was current; it is moved here
    /// when the server did not), then `AWSPENDING` removed.
    fn promote_pending(&self, secret: &str) -> Result<(), StoreError> {
        let versions = self.versions(secret)?;
        let holder = |stage: &str| version_with(&versions, stage);
        let Some(pending) = holder(PENDING) else {
            return Ok(());
        };
        let current = holder(CURRENT);
        if current.as_deref() != Some(pending.as_str()) {
            self.move_stage(secret, CURRENT, Some(&pending), current.as_deref())?;
            let previous = self
                .versions(secret)?
                .into_iter()
                .find(|v| v.stages.iter().any(|s| s == PREVIOUS))
                .map(|v| v.id);
            if let Some(old) = &current
                && previous.as_ref() != Some(old)
            {
                self.move_stage(secret, PREVIOUS, Some(old), previous.as_deref())?;
            }
        }
        self.move_stage(secret, PENDING, None, Some(&pending))
    }

    fn retire_previous(&self, secret: &str) -> Result<(), StoreError> {
        let versions = self.versions(secret)?;
        let holder = |stage: &str| version_with(&versions, stage);
        let (Some(current), previous) = (holder(CURRENT), holder(PREVIOUS)) else {
            return Ok(());
        };
        if previous.as_deref() == Some(current.as_str()) {
            return Ok(());
        }
        self.move_stage(secret, PREVIOUS, Some(&current), previous.as_deref())
    }

    fn ensure_previous_stage(&self, secret: &str) -> Result<bool, StoreError> {
        let versions = self.versions(secret)?;
        let holder = |stage: &str| version_with(&versions, stage);
        match (holder(CURRENT), holder(PREVIOUS)) {
            (Some(current), None) => {
                self.move_stage(secret, PREVIOUS, Some(&current), None)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn changed_at(&self, secret: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .versions(secret)?
            .into_iter()
            .find(|v| v.stages.iter().any(|s| s == CURRENT))
            .and_then(|v| v.created_at))
    }

    fn list(&self) -> Result<Vec<String>, StoreError> {
        let prefix = &self.settings.prefix;
        let mut request = self.client.list_secrets();
        if !prefix.is_empty() {
            let filter = Filter::builder()
                .key(FilterNameStringType::Name)
                .values(prefix)
                .build();
            request = request.filters(filter);
        }
        let pages =
            self.call(async move { request.into_paginator().send().collect::<Vec<_>>().await });
        let mut names = Vec::new();
        for page in pages {
            let page = page.map_err(|e| self.error("", "listing secrets", e))?;
            for entry in page.secret_list() {
                let id = entry
                    .name()
                    .and_then(|name| name.strip_prefix(prefix.as_str()));
                if let Some(id) = id.filter(|id| check_name(id).is_ok()) {
                    names.push(id.to_string());
                }
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn keys(&self, secret: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .current(secret)?
            .map(|keys| keys.into_keys().collect())
            .unwrap_or_default())
    }

    /// Deletes with a recovery window of seven days: a mistaken removal
    /// can still be undone with `aws secretsmanager restore-secret`.
    fn remove(&self, secret: &str) -> Result<bool, StoreError> {
        let name = self.name(secret)?;
        let request = self
            .client
            .delete_secret()
            .secret_id(&name)
            .recovery_window_in_days(RECOVERY_WINDOW_DAYS);
        match self.call(request.send()) {
            Ok(_) => Ok(true),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(false)
            }
            Err(error) => Err(self.error(secret, "deleting", error)),
        }
    }

    fn file(&self, _secret: &str, _key: &str) -> Option<std::path::PathBuf> {
        None
    }

    fn versions(&self, secret: &str) -> Result<Vec<SecretVersion>, StoreError> {
        // Asked first because moto answers ListSecretVersionIds of a
        // missing secret with a 500 rather than ResourceNotFound.
        if self.current(secret)?.is_none() {
            return Ok(Vec::new());
        }
        let name = self.name(secret)?;
        let request = self.client.list_secret_version_ids().secret_id(&name);
        let pages =
            self.call(async move { request.into_paginator().send().collect::<Vec<_>>().await });
        let mut versions = Vec::new();
        for page in pages {
            let page = match page {
                Ok(page) => page,
                Err(error)
                    if error
                        .as_service_error()
                        .is_some_and(|e| e.is_resource_not_found_exception()) =>
                {
                    return Ok(Vec::new());
                }
                Err(error) => return Err(self.error(secret, "listing versions", error)),
            };
            versions.extend(page.versions().iter().map(|entry| SecretVersion {
                id: entry.version_id().unwrap_or_default().to_string(),
                stages: entry.version_stages().to_vec(),
                created_at: entry.created_date().map(|d| d.secs()),
            }));
        }
        versions.sort_by_key(|v| std::cmp::Reverse(v.created_at));
        Ok(versions)
    }
}

#[cfg(test)]
mod tests {
    use kisum_testkit::Moto;

    use super::*;

    fn store(moto: &Moto, prefix: &str) -> SecretsManager {
        SecretsManager::connect(SecretsManagerSettings {
            region: "eu-west-1".into(),
            prefix: prefix.into(),
            endpoint: Some(moto.endpoint()),
            static_credentials: Some(("test".into(), "test".into())),
        })
        .unwrap()
    }

    #[test]
    fn keys_round_trip_and_every_change_is_a_version() {
        let moto = Moto::start().unwrap();
        let store = store(&moto, "kisum/test/");
        assert_eq!(store.read("db-credentials", "password").unwrap(), None);
        assert!(store.versions("db-credentials").unwrap().is_empty());

        store
            .write("db-credentials", "password", &Secret::new("one"))
            .unwrap();
        store
            .write("db-credentials", "username", &Secret::new("svc"))
            .unwrap();
        // The same value again makes no version.
        store
            .write("db-credentials", "username", &Secret::new("svc"))
            .unwrap();
        let read = |key| store.read("db-credentials", key).unwrap().unwrap();
        assert_eq!(read("password").expose(), "one");
        assert_eq!(read("username").expose(), "svc");
        assert_eq!(
            store.keys("db-credentials").unwrap(),
            ["password", "username"]
        );
        let versions = store.versions("db-credentials").unwrap();
        assert_eq!(versions.len(), 2, "{versions:?}");
        let staged = |stage: &str| {
            versions
                .iter()
                .filter(|v| v.stages.iter().any(|s| s == stage))
                .count()
        };
        assert_eq!(staged("AWSCURRENT"), 1, "{versions:?}");
        assert_eq!(staged("AWSPREVIOUS"), 1, "{versions:?}");

        store.write("other", "token", &Secret::new("t")).unwrap();
        store.write("unrelated", "x", &Secret::new("y")).unwrap();
        let elsewhere = self::store(&moto, "kisum/elsewhere/");
        elsewhere.write("hidden", "k", &Secret::new("v")).unwrap();
        assert_eq!(
            store.list().unwrap(),
            ["db-credentials", "other", "unrelated"]
        );
        assert!(store.remove("other").unwrap());
        assert!(!store.list().unwrap().contains(&"other".to_string()));
        assert!(store.describe().contains("kisum/test/"));
    }

    #[test]
    fn the_loser_of_a_creation_race_gets_one_line_with_the_service_code() {
        let moto = Moto::start().unwrap();
        let store = store(&moto, "kisum/test/");
        let keys = BTreeMap::from([("token".to_string(), "hunter2-first".to_string())]);
        store.put("raced", &keys, false).unwrap();
        // The second creator planned before the first one wrote.
        let error = store.put("raced", &keys, false).unwrap_err().to_string();
        assert!(
            error.contains(
                "raced: creating the secret: Secrets Manager answered ResourceExistsException"
            ),
            "{error}"
        );
        for dump in ["{ ", "ErrorMetadata", "hunter2", "\n"] {
            assert!(!error.contains(dump), "{error}");
        }
    }

    #[test]
    fn a_value_that_is_not_a_json_object_is_refused_without_quoting_it() {
        let moto = Moto::start().unwrap();
        let store = store(&moto, "kisum/test/");
        let create = store
            .client
            .create_secret()
            .name("kisum/test/broken")
            .secret_string("hunter2-not-json")
            .send();
        store.call(create).unwrap();
        let error = store.read("broken", "k").unwrap_err().to_string();
        assert!(error.contains("is not JSON"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}
