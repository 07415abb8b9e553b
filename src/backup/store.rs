//! Where backups are kept: a local directory or an S3 bucket (the
//! `backups.store` of the environment file).
//!
//! Layout, the same in both: one directory (key prefix) per backup id
//! holding its files and, written last, `manifest.json`. A backup being
//! written is staged elsewhere (`<root>/.partial/<id>` for a directory, a
//! staging directory on local disk for S3) and becomes visible only once
//! complete; a backup without a manifest is not a backup. Drill reports
//! sit beside the backups under `.drills/`, which no backup id can name.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::io::AsyncReadExt;

use super::manifest::{self, Manifest};

/// Files above this size go up in parts of this size.
const PART_SIZE: usize = 16 << 20;

/// How long S3 may take to accept a connection, and to start answering a
/// request: a store that accepts and never answers fails in bounded time
/// (with the SDK's retries) instead of hanging the command.
const S3_CONNECT: std::time::Duration = std::time::Duration::from_secs(10);
const S3_FIRST_BYTE: std::time::Duration = std::time::Duration::from_secs(30);

/// For a request that sends a whole part first (the first byte of the
/// answer comes after it): at least 16 MiB in 5 minutes.
const S3_UPLOAD_FIRST_BYTE: std::time::Duration = std::time::Duration::from_secs(300);

fn s3_timeouts(first_byte: std::time::Duration) -> aws_sdk_s3::config::timeout::TimeoutConfig {
    aws_sdk_s3::config::timeout::TimeoutConfig::builder()
        .connect_timeout(S3_CONNECT)
        .read_timeout(first_byte)
        .build()
}

/// The per-request settings of an upload.
fn upload_config() -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Config::builder().timeout_config(s3_timeouts(S3_UPLOAD_FIRST_BYTE))
}

/// Where drill reports are kept beside the backups: `.drills/` under the
/// store's directory or key prefix (never a backup id, which cannot start
/// with a dot), so that `status` finds the last drill wherever it ran: on
/// a host, in an operation Job or in a CronJob.
pub const DRILLS: &str = ".drills";

/// A drill report's file name: `drill-<time>.json`, sortable by time.
fn is_drill_report(name: &str) -> bool {
    name.starts_with("drill-") && name.ends_with(".json") && check_id(name).is_ok()
}

/// Operations every backup store offers.
#[allow(async_fn_in_trait)]
pub trait BackupStore {
    /// A human description of the store (never a credential).
    fn describe(&self) -> String;

    /// Where a backup is written before [`BackupStore::commit`].
    fn staging_dir(&self, id: &str, state_dir: &Path) -> PathBuf;

    /// The ids of the complete backups, any order.
    async fn ids(&self) -> Result<Vec<String>>;

    /// The manifest of backup `id`.
    async fn manifest(&self, id: &str) -> Result<Manifest>;

    /// Makes the staged backup `id` visible; the manifest goes last.
    async fn commit(&self, id: &str, staging: &Path) -> Result<()>;

    /// A local directory holding the files of backup `id`: the backup
    /// itself for a directory store, a download into `scratch` otherwise.
    async fn fetch(&self, id: &str, manifest: &Manifest, scratch: &Path) -> Result<PathBuf>;

    /// Removes backup `id`, manifest first so that it stops counting at once.
    async fn delete(&self, id: &str) -> Result<()>;
}

/// The stores kisumctl knows.
pub enum Store {
    Local(LocalDirectory),
    S3(S3Store),
}

impl Store {
    /// Every readable manifest, oldest first; unreadable ones come back as
    /// `(id, problem)`.
    pub async fn list(&self) -> Result<(Vec<Manifest>, Vec<(String, String)>)> {
        let mut manifests = Vec::new();
        let mut problems = Vec::new();
        for id in self.ids().await? {
            match self.manifest(&id).await {
                Ok(manifest) if manifest.id == id => manifests.push(manifest),
                Ok(manifest) => problems.push((
                    id,
                    format!("manifest names another backup, {}", manifest.id),
                )),
                Err(error) => problems.push((id, format!("{error:#}"))),
            }
        }
        manifests.sort_by(|a, b| (&a.finished_at, &a.id).cmp(&(&b.finished_at, &b.id)));
        Ok((manifests, problems))
    }
}

impl Store {
    /// Keeps drill report `name` (`drill-<time>.json`) in the store,
    /// replacing one of the same name.
    pub async fn put_drill_report(&self, name: &str, json: &str) -> Result<()> {
        if !is_drill_report(name) {
            bail!("`{}` is not a drill report name", name.escape_debug());
        }
        match self {
            Store::Local(s) => s.put_drill_report(name, json),
            Store::S3(s) => s.put_drill_report(name, json).await,
        }
    }

    /// The newest drill report of the store, by name (which carries its
    /// time): `(name, JSON text)`.
    pub async fn newest_drill_report(&self) -> Result<Option<(String, String)>> {
        match self {
            Store::Local(s) => s.newest_drill_report(),
            Store::S3(s) => s.newest_drill_report().await,
        }
    }
}

impl BackupStore for Store {
    fn describe(&self) -> String {
        match self {
            Store::Local(s) => s.describe(),
            Store::S3(s) => s.describe(),
        }
    }

    fn staging_dir(&self, id: &str, state_dir: &Path) -> PathBuf {
        match self {
            Store::Local(s) => s.staging_dir(id, state_dir),
            Store::S3(s) => s.staging_dir(id, state_dir),
        }
    }

    async fn ids(&self) -> Result<Vec<String>> {
        match self {
            Store::Local(s) => s.ids().await,
            Store::S3(s) => s.ids().await,
        }
    }

    async fn manifest(&self, id: &str) -> Result<Manifest> {
        match self {
            Store::Local(s) => s.manifest(id).await,
            Store::S3(s) => s.manifest(id).await,
        }
    }

    async fn commit(&self, id: &str, staging: &Path) -> Result<()> {
        match self {
            Store::Local(s) => s.commit(id, staging).await,
            Store::S3(s) => s.commit(id, staging).await,
        }
    }

    async fn fetch(&self, id: &str, manifest: &Manifest, scratch: &Path) -> Result<PathBuf> {
        match self {
            Store::Local(s) => s.fetch(id, manifest, scratch).await,
            Store::S3(s) => s.fetch(id, manifest, scratch).await,
        }
    }

    async fn delete(&self, id: &str) -> Result<()> {
        match self {
            Store::Local(s) => s.delete(id).await,
            Store::S3(s) => s.delete(id).await,
        }
    }
}

/// A backup id is a safe single path component.
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        bail!("`{}` is not a backup id", id.escape_debug());
    }
    Ok(())
}

/// Backups as directories under `root`.
pub struct LocalDirectory {
    root: PathBuf,
}

impl LocalDirectory {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalDirectory { root: root.into() }
    }
}

impl LocalDirectory {
    fn put_drill_report(&self, name: &str, json: &str) -> Result<()> {
        let dir = self.root.join(DRILLS);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(name);
        let partial = dir.join(format!(".{name}.partial"));
        std::fs::write(&partial, json)
            .and_then(|_| std::fs::rename(&partial, &path))
            .with_context(|| format!("writing {}", path.display()))
    }

    fn newest_drill_report(&self) -> Result<Option<(String, String)>> {
        let dir = self.root.join(DRILLS);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        let newest = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| is_drill_report(name))
            .max();
        let Some(name) = newest else {
            return Ok(None);
        };
        let path = dir.join(&name);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(Some((name, text)))
    }
}

impl BackupStore for LocalDirectory {
    fn describe(&self) -> String {
        format!("directory {}", self.root.display())
    }

    fn staging_dir(&self, id: &str, _state_dir: &Path) -> PathBuf {
        self.root.join(".partial").join(id)
    }

    async fn ids(&self) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e).with_context(|| format!("listing {}", self.root.display())),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", self.root.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if check_id(&name).is_ok() && entry.path().join(manifest::FILE_NAME).is_file() {
                ids.push(name);
            }
        }
        Ok(ids)
    }

    async fn manifest(&self, id: &str) -> Result<Manifest> {
        check_id(id)?;
        let path = self.root.join(id).join(manifest::FILE_NAME);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Manifest::from_json(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    async fn commit(&self, id: &str, staging: &Path) -> Result<()> {
        check_id(id)?;
        let target = self.root.join(id);
        std::fs::rename(staging, &target)
            .with_context(|| format!("moving {} to {}", staging.display(), target.display()))?;
        let _ = std::fs::remove_dir(self.root.join(".partial"));
        Ok(())
    }

    async fn fetch(&self, id: &str, _manifest: &Manifest, _scratch: &Path) -> Result<PathBuf> {
        check_id(id)?;
        Ok(self.root.join(id))
    }

    async fn delete(&self, id: &str) -> Result<()> {
        check_id(id)?;
        let dir = self.root.join(id);
        let manifest = dir.join(manifest::FILE_NAME);
        std::fs::remove_file(&manifest)
            .with_context(|| format!("removing {}", manifest.display()))?;
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))
    }
}

/// Backups as objects `<prefix><id>/<file>` of an S3 bucket.
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    /// Where it is, for error messages.
    service: crate::aws::Service,
}

/// How to reach S3.
pub struct S3Settings {
    pub bucket: String,
    pub prefix: String,
    pub region: String,
    /// An S3-compatible endpoint (path-style addressing is used with it).
    pub endpoint: Option<String>,
    /// Fixed credentials; `None` takes the SDK's default chain (environment,
    /// profile, web identity, instance role).
    pub static_credentials: Option<(String, String)>,
}

impl S3Store {
    pub async fn connect(settings: S3Settings) -> S3Store {
        use aws_config::{BehaviorVersion, Region};

        let region = Region::new(settings.region.clone());
        let config = match &settings.static_credentials {
            Some((key, secret)) => {
                let credentials = aws_sdk_s3::config::Credentials::new(
                    key,
                    secret,
                    None,
                    None,
                    "kisumctl-static",
                );
                aws_sdk_s3::config::Builder::new()
                    .behavior_version(BehaviorVersion::latest())
                    .region(region)
                    .credentials_provider(credentials)
            }
            None => {
                let shared = aws_config::defaults(BehaviorVersion::latest())
                    .region(region)
                    .load()
                    .await;
                aws_sdk_s3::config::Builder::from(&shared)
            }
        };
        let config = config.timeout_config(s3_timeouts(S3_FIRST_BYTE));
        let config = match &settings.endpoint {
            Some(endpoint) => config.endpoint_url(endpoint).force_path_style(true),
            None => config,
        };
        S3Store {
            service: crate::aws::Service::new("S3", "S3", settings.endpoint.as_deref()),
            client: aws_sdk_s3::Client::from_conf(config.build()),
            bucket: settings.bucket,
            prefix: settings.prefix,
        }
    }

    fn key(&self, id: &str, name: &str) -> String {
        format!("{}{id}/{name}", self.prefix)
    }

    async fn upload(&self, key: &str, path: &Path) -> Result<()> {
        let size = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        if size <= PART_SIZE as u64 {
            let body = ByteStream::from_path(path)
                .await
                .with_context(|| format!("reading {}", path.display()))?;
            return self.put(key, body, None).await;
        }
        self.upload_in_parts(key, path).await
    }

    /// Writes object `key` in one request.
    async fn put(&self, key: &str, body: ByteStream, content_type: Option<&str>) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .set_content_type(content_type.map(str::to_string))
            .body(body)
            .customize()
            .config_override(upload_config())
            .send()
            .await
            .map_err(|e| {
                let what = format!("uploading s3://{}/{key}", self.bucket);
                self.service.error(&what, e)
            })?;
        Ok(())
    }

    async fn upload_in_parts(&self, key: &str, path: &Path) -> Result<()> {
        let what = || format!("uploading s3://{}/{key} in parts", self.bucket);
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.service.error(&what(), e))?;
        let upload_id = upload.upload_id().context("no upload id")?.to_string();
        let result = self.send_parts(key, path, &upload_id).await;
        match result {
            Ok(parts) => {
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| self.service.error(&what(), e))?;
                Ok(())
            }
            Err(error) => {
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                Err(error.context(what()))
            }
        }
    }

    async fn send_parts(
        &self,
        key: &str,
        path: &Path,
        upload_id: &str,
    ) -> Result<Vec<CompletedPart>> {
        let mut file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        let mut parts = Vec::new();
        for number in 1.. {
            let mut chunk = Vec::with_capacity(PART_SIZE);
            (&mut file)
                .take(PART_SIZE as u64)
                .read_to_end(&mut chunk)
                .await?;
            if chunk.is_empty() {
                break;
            }
            let part = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(chunk))
                .customize()
                .config_override(upload_config())
                .send()
                .await
                .map_err(|e| {
                    let what = format!("uploading part {number} of s3://{}/{key}", self.bucket);
                    self.service.error(&what, e)
                })?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .build(),
            );
        }
        Ok(parts)
    }

    async fn download(&self, key: &str, path: &Path) -> Result<()> {
        let what = || format!("downloading s3://{}/{key}", self.bucket);
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.service.error(&what(), e))?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut body = object.body.into_async_read();
        let mut file = tokio::fs::File::create(path)
            .await
            .with_context(|| format!("creating {}", path.display()))?;
        tokio::io::copy(&mut body, &mut file)
            .await
            .with_context(what)?;
        file.sync_all().await?;
        Ok(())
    }
}

impl S3Store {
    async fn put_drill_report(&self, name: &str, json: &str) -> Result<()> {
        let body = ByteStream::from(json.as_bytes().to_vec());
        self.put(&self.key(DRILLS, name), body, Some("application/json"))
            .await
    }

    async fn newest_drill_report(&self) -> Result<Option<(String, String)>> {
        let prefix = format!("{}{DRILLS}/", self.prefix);
        let newest = self
            .keys(&prefix)
            .await?
            .into_iter()
            .filter_map(|key| key.strip_prefix(&prefix).map(str::to_string))
            .filter(|name| is_drill_report(name))
            .max();
        let Some(name) = newest else {
            return Ok(None);
        };
        let bytes = self.read_object(&self.key(DRILLS, &name)).await?;
        Ok(Some((name, String::from_utf8_lossy(&bytes).into_owned())))
    }

    /// Every key under `prefix`, page by page.
    async fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                self.service
                    .error(&format!("listing s3://{}/{prefix}", self.bucket), e)
            })?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        Ok(keys)
    }

    /// The whole body of object `key`, in memory (for small objects).
    async fn read_object(&self, key: &str) -> Result<Vec<u8>> {
        let what = || format!("reading s3://{}/{key}", self.bucket);
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.service.error(&what(), e))?;
        let bytes = object.body.collect().await.with_context(what)?;
        Ok(bytes.into_bytes().to_vec())
    }
}

/// Where an upload in progress is announced: `<prefix>.partial/<id>`
/// (never a backup id, which cannot start with a dot).
const PARTIAL: &str = ".partial";

/// What the marker of an upload in progress says.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct UploadMarker {
    pub host: String,
    pub pid: u32,
    pub started_at: String,
}

/// An upload announced by a marker: its backup id, the marker (`None`
/// when unreadable) and its age in seconds (from the bucket's clock).
pub struct MarkedUpload {
    pub id: String,
    pub location: String,
    pub marker: Option<UploadMarker>,
    pub age_seconds: Option<i64>,
}

impl S3Store {
    fn marker_key(&self, id: &str) -> String {
        format!("{}{PARTIAL}/{id}", self.prefix)
    }

    /// Announces that this process starts uploading backup `id`.
    async fn put_marker(&self, id: &str) -> Result<()> {
        let marker = UploadMarker {
            host: crate::ops::journal::host(),
            pid: std::process::id(),
            started_at: super::now_rfc3339(),
        };
        let body = ByteStream::from(serde_json::to_vec(&marker)?);
        self.put(&self.marker_key(id), body, Some("application/json"))
            .await
    }

    async fn delete_key(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                let what = format!("deleting s3://{}/{key}", self.bucket);
                self.service.error(&what, e)
            })?;
        Ok(())
    }

    /// The uploads announced in the bucket, complete or not: a marker
    /// whose backup has a manifest is a leftover of a run stopped after
    /// its manifest went up, and is listed too (its removal then leaves
    /// the backup alone, see [`S3Store::discard`]).
    pub async fn marked_uploads(&self) -> Result<Vec<MarkedUpload>> {
        let prefix = format!("{}{PARTIAL}/", self.prefix);
        let mut found = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        let now = jiff::Timestamp::now().as_second();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                self.service
                    .error(&format!("listing s3://{}/{prefix}", self.bucket), e)
            })?;
            for object in page.contents() {
                let Some(id) = object.key().and_then(|k| k.strip_prefix(&prefix)) else {
                    continue;
                };
                if check_id(id).is_err() {
                    continue;
                }
                let marker = self
                    .read_object(&self.marker_key(id))
                    .await
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok());
                found.push(MarkedUpload {
                    id: id.to_string(),
                    location: format!("s3://{}/{}{id}/", self.bucket, self.prefix),
                    marker,
                    age_seconds: object.last_modified().map(|at| now - at.secs()),
                });
            }
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }

    /// The ids (with their key prefix, for people) that have objects under
    /// `<prefix><id>/` but neither a manifest nor a marker.
    pub async fn unmarked_uploads(&self) -> Result<Vec<(String, String)>> {
        let marked = format!("{}{PARTIAL}/", self.prefix);
        let mut ids = std::collections::BTreeMap::<String, bool>::new();
        for key in self.keys(&self.prefix).await? {
            if key.starts_with(&marked) {
                let id = &key[marked.len()..];
                ids.insert(id.to_string(), true);
                continue;
            }
            let Some((id, name)) = key[self.prefix.len()..].split_once('/') else {
                continue;
            };
            if check_id(id).is_ok() {
                *ids.entry(id.to_string()).or_default() |= name == manifest::FILE_NAME;
            }
        }
        Ok(ids
            .into_iter()
            .filter(|(_, settled)| !settled)
            .map(|(id, _)| {
                let location = format!("s3://{}/{}{id}/", self.bucket, self.prefix);
                (id, location)
            })
            .collect())
    }

    /// Removes what an unfinished upload of backup `id` left: its objects
    /// (unless its manifest made it a backup), its open multipart uploads
    /// and its marker, the marker last so that a failure is found again.
    pub async fn discard(&self, id: &str) -> Result<()> {
        check_id(id)?;
        let prefix = format!("{}{id}/", self.prefix);
        let keys = self.keys(&prefix).await?;
        if !keys.iter().any(|k| k.ends_with(manifest::FILE_NAME)) {
            for key in &keys {
                self.delete_key(key).await?;
            }
        }
        self.abort_uploads(&prefix).await?;
        self.delete_key(&self.marker_key(id)).await
    }

    /// Aborts every multipart upload under `prefix`.
    async fn abort_uploads(&self, prefix: &str) -> Result<()> {
        let what = || {
            format!(
                "listing the multipart uploads of s3://{}/{prefix}",
                self.bucket
            )
        };
        let mut markers: (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(markers.0.take())
                .set_upload_id_marker(markers.1.take())
                .send()
                .await
                .map_err(|e| self.service.error(&what(), e))?;
            for upload in page.uploads() {
                let (Some(key), Some(upload_id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .send()
                    .await
                    .map_err(|e| {
                        let what = format!("aborting the upload of s3://{}/{key}", self.bucket);
                        self.service.error(&what, e)
                    })?;
            }
            if page.is_truncated() != Some(true) {
                return Ok(());
            }
            markers = (
                page.next_key_marker().map(str::to_string),
                page.next_upload_id_marker().map(str::to_string),
            );
        }
    }
}

impl BackupStore for S3Store {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn staging_dir(&self, id: &str, state_dir: &Path) -> PathBuf {
        state_dir.join("backup-staging").join(id)
    }

    async fn ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for key in self.keys(&self.prefix).await? {
            let Some(rest) = key.strip_prefix(&self.prefix) else {
                continue;
            };
            if let Some((id, name)) = rest.split_once('/')
                && name == manifest::FILE_NAME
                && check_id(id).is_ok()
            {
                ids.push(id.to_string());
            }
        }
        Ok(ids)
    }

    async fn manifest(&self, id: &str) -> Result<Manifest> {
        check_id(id)?;
        let key = self.key(id, manifest::FILE_NAME);
        let bytes = self.read_object(&key).await?;
        let text = String::from_utf8(bytes).context("the manifest is not UTF-8")?;
        Manifest::from_json(&text).map_err(|e| anyhow::anyhow!("s3://{}/{key}: {e}", self.bucket))
    }

    async fn commit(&self, id: &str, staging: &Path) -> Result<()> {
        check_id(id)?;
        let text = std::fs::read_to_string(staging.join(manifest::FILE_NAME))?;
        let manifest = Manifest::from_json(&text).map_err(|e| anyhow::anyhow!(e))?;
        self.put_marker(id).await?;
        for file in &manifest.files {
            self.upload(&self.key(id, &file.name), &staging.join(&file.name))
                .await?;
        }
        self.upload(
            &self.key(id, manifest::FILE_NAME),
            &staging.join(manifest::FILE_NAME),
        )
        .await?;
        // The backup is complete once its manifest is there: a marker left
        // over by a failure here is only reported, then swept.
        let _ = self.delete_key(&self.marker_key(id)).await;
        std::fs::remove_dir_all(staging).with_context(|| format!("removing {}", staging.display()))
    }

    async fn fetch(&self, id: &str, manifest: &Manifest, scratch: &Path) -> Result<PathBuf> {
        check_id(id)?;
        let dir = scratch.join(id);
        for file in &manifest.files {
            self.download(&self.key(id, &file.name), &dir.join(&file.name))
                .await?;
        }
        Ok(dir)
    }

    async fn delete(&self, id: &str) -> Result<()> {
        check_id(id)?;
        let manifest = self.manifest(id).await?;
        let mut keys = vec![self.key(id, manifest::FILE_NAME)];
        keys.extend(manifest.files.iter().map(|f| self.key(id, &f.name)));
        for key in keys {
            self.delete_key(&key).await?;
        }
        Ok(())
    }
}
