//! The manifest of a backup: what was dumped, from where, with which tools,
//! how many rows or documents each table or collection held, and the size
//! and SHA-256 of every file. It is written last, so a backup without one is
//! incomplete and ignored.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::encrypt::{self, Recipients};

/// Version of the manifest format; a reader refuses a newer one.
pub const SCHEMA_VERSION: u32 = 1;

/// Name of the manifest file inside a backup.
pub const FILE_NAME: &str = "manifest.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    Postgresql,
    Mongodb,
    Redis,
}

/// Why the backup was taken. A safety backup is taken by `restore` before it
/// replaces a database; `restore` and `drill` never pick one by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    Manual,
    Safety,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    pub id: String,
    pub environment: String,
    /// Database id of the matrix (`auth-db`), or `redis`.
    pub database: String,
    pub engine: EngineKind,
    pub trigger: Trigger,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub finished_at: String,
    pub source: Source,
    /// Program or server name to its version line.
    pub tools: BTreeMap<String, String>,
    /// Rows per table (`schema.table`), documents per collection, or keys
    /// per Redis database (`db0`), at the moment of the dump.
    pub counts: BTreeMap<String, u64>,
    pub files: Vec<FileEntry>,
    /// age recipients (public keys) the files are encrypted to; empty when
    /// the files are plain.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// Engine-specific facts a restore needs (PostgreSQL: owner, encoding
    /// and grants of the database).
    #[serde(default)]
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub host: String,
    pub port: u16,
    /// Database name on the server.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path inside the backup, `/`-separated.
    pub name: String,
    /// Size and SHA-256 (hex) of the stored bytes (encrypted when
    /// `recipients` is not empty).
    pub size: u64,
    pub sha256: String,
    /// Size and SHA-256 of the content before encryption; equal to the
    /// stored ones for plain files.
    pub plain_size: u64,
    pub plain_sha256: String,
}

impl Manifest {
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    pub fn encrypted(&self) -> bool {
        !self.recipients.is_empty()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    pub fn from_json(text: &str) -> Result<Manifest, String> {
        let manifest: Manifest = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if manifest.schema_version > SCHEMA_VERSION {
            return Err(format!(
                "manifest schema version {} is newer than this kisumctl reads ({SCHEMA_VERSION})",
                manifest.schema_version
            ));
        }
        Ok(manifest)
    }

    /// Structural checks that need no file: ids, names and the engine's
    /// expected files.
    pub fn check_consistency(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.id.contains(&self.database) {
            problems.push(format!(
                "id {} does not name database {}",
                self.id, self.database
            ));
        }
        if self.files.is_empty() {
            problems.push("the manifest lists no file".into());
        }
        let mut names: Vec<&str> = self.files.iter().map(|f| f.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            problems.push("a file is listed twice".into());
        }
        for file in &self.files {
            let bad_name = file.name.is_empty()
                || file.name.starts_with('/')
                || file
                    .name
                    .split('/')
                    .any(|part| part == ".." || part.is_empty())
                || file.name == FILE_NAME;
            if bad_name {
                problems.push(format!("file name {:?} is not allowed", file.name));
            }
            let hex_ok = |h: &str| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex_ok(&file.sha256) || !hex_ok(&file.plain_sha256) {
                problems.push(format!("{}: malformed SHA-256", file.name));
            }
            if !self.encrypted()
                && (file.sha256 != file.plain_sha256 || file.size != file.plain_size)
            {
                problems.push(format!(
                    "{}: plain file with two different digests",
                    file.name
                ));
            }
        }
        let mut time = |field: &str, text: &str| match text.parse::<jiff::Timestamp>() {
            Ok(at) => Some(at),
            Err(_) => {
                problems.push(format!("{field} is not a time: {text:?}"));
                None
            }
        };
        let started = time("started_at", &self.started_at);
        let finished = time("finished_at", &self.finished_at);
        if let (Some(started), Some(finished)) = (started, finished)
            && finished < started
        {
            problems.push("finished before it started".into());
        }
        problems
    }
}

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The inner writer, the byte count and the hex digest.
    pub fn finish(self) -> (W, u64, String) {
        (self.inner, self.count, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type Stored = HashingWriter<BufWriter<File>>;

/// One file of a backup being written: the content is hashed, encrypted
/// when there are recipients, hashed again as stored, and written, in one
/// pass; nothing is read back.
pub struct FileSink {
    name: String,
    inner: SinkInner,
}

enum SinkInner {
    Plain(Stored),
    Encrypted(HashingWriter<age::stream::StreamWriter<Stored>>),
}

impl FileSink {
    /// Creates `dir/name` (parents included).
    pub fn create(dir: &Path, name: &str, recipients: &Recipients) -> io::Result<FileSink> {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = File::options().write(true).create_new(true).open(&path)?;
        let stored = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
        let inner = if recipients.is_empty() {
            SinkInner::Plain(stored)
        } else {
            SinkInner::Encrypted(HashingWriter::new(encrypt::wrap(stored, recipients)?))
        };
        Ok(FileSink {
            name: name.to_string(),
            inner,
        })
    }

    /// Flushes and syncs the file; answers its manifest entry.
    pub fn finish(self) -> io::Result<FileEntry> {
        let (stored, plain) = match self.inner {
            SinkInner::Plain(writer) => (writer, None),
            SinkInner::Encrypted(writer) => {
                let (stream, size, digest) = writer.finish();
                (stream.finish()?, Some((size, digest)))
            }
        };
        let (buffered, size, sha256) = stored.finish();
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let (plain_size, plain_sha256) = plain.unwrap_or((size, sha256.clone()));
        Ok(FileEntry {
            name: self.name,
            size,
            sha256,
            plain_size,
            plain_sha256,
        })
    }
}

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            SinkInner::Plain(w) => w.write(buf),
            SinkInner::Encrypted(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            SinkInner::Plain(w) => w.flush(),
            SinkInner::Encrypted(w) => w.flush(),
        }
    }
}

/// Size and SHA-256 of everything `reader` yields.
pub fn digest_reader(mut reader: impl Read) -> io::Result<(u64, String)> {
    let mut hasher = HashingWriter::new(io::sink());
    io::copy(&mut reader, &mut hasher)?;
    let (_, size, digest) = hasher.finish();
    Ok((size, digest))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A consistent manifest of a backup of auth-db.
    pub(crate) fn sample() -> Manifest {
        let digest = hex::encode(Sha256::digest(b"x"));
        Manifest {
            schema_version: SCHEMA_VERSION,
            id: "20260101T000000Z-auth-db-0a1b".into(),
            environment: "local".into(),
            database: "auth-db".into(),
            engine: EngineKind::Postgresql,
            trigger: Trigger::Manual,
            started_at: "2026-01-01T00:00:00Z".into(),
            finished_at: "2026-01-01T00:00:01Z".into(),
            source: Source {
                host: "127.0.0.1".into(),
                port: 5432,
                name: "auth_db".into(),
            },
            tools: BTreeMap::new(),
            counts: BTreeMap::from([("public.users".into(), 3)]),
            files: vec![FileEntry {
                name: "auth_db.dump".into(),
                size: 1,
                sha256: digest.clone(),
                plain_size: 1,
                plain_sha256: digest,
            }],
            recipients: vec![],
            details: serde_json::Value::Null,
        }
    }

    #[test]
    fn a_manifest_survives_a_json_round_trip() {
        let manifest = sample();
        assert_eq!(Manifest::from_json(&manifest.to_json()).unwrap(), manifest);
        assert!(manifest.check_consistency().is_empty());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let mut manifest = sample();
        manifest.schema_version = SCHEMA_VERSION + 1;
        assert!(Manifest::from_json(&manifest.to_json()).is_err());
    }

    #[test]
    fn escaping_file_names_are_inconsistent() {
        let mut manifest = sample();
        manifest.files[0].name = "../etc/passwd".into();
        assert_eq!(manifest.check_consistency().len(), 1);
    }

    #[test]
    fn a_sink_hashes_what_it_writes() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::create(dir.path(), "a/b.bin", &Recipients::default()).unwrap();
        sink.write_all(b"hello").unwrap();
        let entry = sink.finish().unwrap();
        assert_eq!(entry.size, 5);
        assert_eq!(entry.sha256, hex::encode(Sha256::digest(b"hello")));
        let (size, digest) =
            digest_reader(File::open(dir.path().join("a/b.bin")).unwrap()).unwrap();
        assert_eq!((size, digest), (5, entry.sha256));
    }
}
