//! Secrets as files: `<dir>/<secret>/<key>`, directories of mode 0700 and
//! files of mode 0600, each written to a temporary file, synced and renamed
//! into place so a crash never leaves half a value. A file or directory
//! that other users can read is refused rather than used.
//!
//! Rotation stages, as Secrets Manager's `AWSPENDING` and `AWSPREVIOUS`:
//! `<dir>/<secret>/.pending/<key>` holds a new value while it is tested,
//! `<dir>/<secret>/.previous/<key>` the values before the last promotion.
//! Their names start with a dot, so they are never keys. A promotion copies
//! the current keys into `.previous` (marking `.pending` with `.moved` once
//! done, so a rerun after a crash does not copy half-new values), replaces
//! each current key atomically, then removes `.pending`.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use super::{
    Secret, SecretStore, SecretVersion, Stage, Staged, StoreError, check_name, check_names,
};

const PENDING: &str = ".pending";
const PREVIOUS: &str = ".previous";
/// In `.pending`: the current keys have been copied to `.previous`.
const MOVED: &str = ".moved";

#[derive(Debug, Clone)]
pub struct LocalFiles {
    dir: PathBuf,
}

impl LocalFiles {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LocalFiles { dir: dir.into() }
    }

    /// The file of the previous value of the key whose current file is
    /// `current` (it exists only between a rotation and its retirement).
    pub fn previous_file(current: &Path) -> PathBuf {
        staged_file(current, PREVIOUS)
    }

    /// The file of the pending value of the key whose current file is
    /// `current` (it exists only while a rotation is under way).
    pub fn pending_file(current: &Path) -> PathBuf {
        staged_file(current, PENDING)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn secret_dir(&self, secret: &str) -> Result<PathBuf, StoreError> {
        check_name(secret)?;
        Ok(self.dir.join(secret))
    }

    fn key_path(&self, secret: &str, key: &str) -> Result<PathBuf, StoreError> {
        check_name(key)?;
        Ok(self.secret_dir(secret)?.join(key))
    }
}

/// `<secret>/<stage>/<key>` for the current file `<secret>/<key>`.
fn staged_file(current: &Path, stage: &str) -> PathBuf {
    let key = current.file_name().unwrap_or_default();
    current
        .parent()
        .unwrap_or(Path::new(""))
        .join(stage)
        .join(key)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Refuses a path whose mode lets group or others in: a file they could
/// read, a directory they could list or enter.
fn check_private(path: &Path, meta: &fs::Metadata) -> Result<(), StoreError> {
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StoreError::TooOpen {
            path: path.to_path_buf(),
            mode,
            directory: meta.is_dir(),
        });
    }
    Ok(())
}

/// An existing directory of the store must be private; a missing one is
/// fine (nothing is in it).
fn check_private_dir(path: &Path) -> Result<(), StoreError> {
    match fs::metadata(path) {
        Ok(meta) => check_private(path, &meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

/// Only `path` itself is private: missing parents (the state directory)
/// are made as `deploy local` makes them, so other users can traverse.
fn make_private_dir(path: &Path) -> Result<(), StoreError> {
    if let Some(parent) = path.parent() {
        crate::local::state::create_dirs(parent).map_err(io(parent))?;
    }
    match fs::metadata(path) {
        Ok(meta) => check_private(path, &meta),
        Err(_) => match fs::DirBuilder::new().mode(0o700).create(path) {
            // Made by a concurrent run meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                check_private(path, &fs::metadata(path).map_err(io(path))?)
            }
            made => made.map_err(io(path)),
        },
    }
}

fn sorted_names(dir: &Path) -> Result<Vec<String>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry.map_err(io(dir))?.file_name();
        let name = name.to_string_lossy();
        if check_name(&name).is_ok() {
            names.push(name.into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Writes `<dir>/<key>` through a synced temporary file and a rename.
fn write_file(dir: &Path, key: &str, value: &Secret) -> Result<(), StoreError> {
    let path = dir.join(key);
    let temporary = write_aside(dir, key, value)?;
    fs::rename(&temporary, &path).map_err(io(&path))?;
    sync_dir(dir)
}

/// Writes `key` only when it does not exist (a hard link, which never
/// replaces a file, so two writers at once leave the first one's value);
/// `true` when this call wrote it.
fn create_file(dir: &Path, key: &str, value: &Secret) -> Result<bool, StoreError> {
    let path = dir.join(key);
    let temporary = write_aside(dir, key, value)?;
    let linked = fs::hard_link(&temporary, &path);
    fs::remove_file(&temporary).map_err(io(&temporary))?;
    match linked {
        Ok(()) => sync_dir(dir).map(|()| true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io(&path)(e)),
    }
}

/// The value in a 0600 temporary file beside `key`, synced; its path.
fn write_aside(dir: &Path, key: &str, value: &Secret) -> Result<PathBuf, StoreError> {
    let temporary = dir.join(format!(".{key}.{}.tmp", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(io(&temporary))?;
    // A leftover temporary file of another mode is reset to 0600.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io(&temporary))?;
    file.write_all(value.expose().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io(&temporary))?;
    Ok(temporary)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

fn remove_dir(dir: &Path) -> Result<(), StoreError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(dir)(e)),
    }
}

/// Every key file of a private directory, values checked private too.
fn read_dir_keys(dir: &Path) -> Result<BTreeMap<String, Secret>, StoreError> {
    check_private_dir(dir)?;
    let mut keys = BTreeMap::new();
    for name in sorted_names(dir)? {
        let path = dir.join(&name);
        let meta = fs::metadata(&path).map_err(io(&path))?;
        if !meta.is_file() {
            continue;
        }
        check_private(&path, &meta)?;
        let value = fs::read_to_string(&path).map_err(io(&path))?;
        keys.insert(name, Secret::new(value));
    }
    Ok(keys)
}

/// The newest modification time of the key files in `dir`.
fn newest_mtime(dir: &Path) -> Result<Option<i64>, StoreError> {
    let mut newest = None;
    for name in sorted_names(dir)? {
        let path = dir.join(&name);
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let seconds = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64);
        newest = newest.max(seconds);
    }
    Ok(newest)
}

impl SecretStore for LocalFiles {
    fn describe(&self) -> String {
        format!("local files in {}", self.dir.display())
    }

    fn read(&self, secret: &str, key: &str) -> Result<Option<Secret>, StoreError> {
        let path = self.key_path(secret, key)?;
        check_private_dir(&self.dir)?;
        check_private_dir(&self.secret_dir(secret)?)?;
        let meta = match fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        check_private(&path, &meta)?;
        let value = fs::read_to_string(&path).map_err(io(&path))?;
        Ok(Some(Secret::new(value)))
    }

    fn write(&self, secret: &str, key: &str, value: &Secret) -> Result<(), StoreError> {
        check_name(key)?;
        make_private_dir(&self.dir)?;
        let dir = self.secret_dir(secret)?;
        make_private_dir(&dir)?;
        write_file(&dir, key, value)
    }

    fn write_absent(
        &self,
        secret: &str,
        keys: &BTreeMap<String, Secret>,
    ) -> Result<Vec<String>, StoreError> {
        check_names(keys)?;
        make_private_dir(&self.dir)?;
        let dir = self.secret_dir(secret)?;
        make_private_dir(&dir)?;
        let mut written = Vec::new();
        for (key, value) in keys {
            if create_file(&dir, key, value)? {
                written.push(key.clone());
            }
        }
        Ok(written)
    }

    fn read_stage(&self, secret: &str, stage: Stage) -> Result<Option<Staged>, StoreError> {
        let dir = self.secret_dir(secret)?;
        check_private_dir(&self.dir)?;
        let dir = match stage {
            Stage::Current => dir,
            Stage::Pending => dir.join(PENDING),
            Stage::Previous => dir.join(PREVIOUS),
        };
        if !dir.is_dir() {
            return Ok(None);
        }
        Ok(Some(Staged {
            keys: read_dir_keys(&dir)?,
        }))
    }

    fn put_pending(&self, secret: &str, keys: &BTreeMap<String, Secret>) -> Result<(), StoreError> {
        let dir = self.secret_dir(secret)?;
        check_private_dir(&self.dir)?;
        make_private_dir(&dir)?;
        // Written aside and renamed in: a crash never leaves half a version.
        let fresh = dir.join(format!(".pending-new.{}", std::process::id()));
        remove_dir(&fresh)?;
        make_private_dir(&fresh)?;
        for (key, value) in keys {
            check_name(key)?;
            write_file(&fresh, key, value)?;
        }
        let pending = dir.join(PENDING);
        remove_dir(&pending)?;
        fs::rename(&fresh, &pending).map_err(io(&pending))?;
        sync_dir(&dir)
    }

    fn promote_pending(&self, secret: &str) -> Result<(), StoreError> {
        let dir = self.secret_dir(secret)?;
        check_private_dir(&self.dir)?;
        let pending = dir.join(PENDING);
        if !pending.is_dir() {
            return Ok(());
        }
        check_private_dir(&pending)?;
        if !pending.join(MOVED).exists() {
            let current = read_dir_keys(&dir)?;
            let fresh = dir.join(format!(".previous-new.{}", std::process::id()));
            remove_dir(&fresh)?;
            make_private_dir(&fresh)?;
            for (key, value) in &current {
                write_file(&fresh, key, value)?;
            }
            let previous = dir.join(PREVIOUS);
            remove_dir(&previous)?;
            fs::rename(&fresh, &previous).map_err(io(&previous))?;
            write_file(&pending, MOVED, &Secret::new(""))?;
        }
        for (key, value) in read_dir_keys(&pending)? {
            write_file(&dir, &key, &value)?;
        }
        remove_dir(&pending)?;
        sync_dir(&dir)
    }

    fn retire_previous(&self, secret: &str) -> Result<(), StoreError> {
        let dir = self.secret_dir(secret)?;
        check_private_dir(&self.dir)?;
        remove_dir(&dir.join(PREVIOUS))?;
        sync_dir(&dir)
    }

    fn stages(&self, secret: &str) -> Result<Vec<SecretVersion>, StoreError> {
        let dir = self.secret_dir(secret)?;
        let mut stages = Vec::new();
        for (stage, path) in [
            (Stage::Pending, dir.join(PENDING)),
            (Stage::Current, dir.clone()),
            (Stage::Previous, dir.join(PREVIOUS)),
        ] {
            if path.is_dir() && (stage != Stage::Current || !read_dir_keys(&path)?.is_empty()) {
                stages.push(SecretVersion {
                    id: match stage {
                        Stage::Current => "current".into(),
                        Stage::Pending => PENDING.into(),
                        Stage::Previous => PREVIOUS.into(),
                    },
                    stages: vec![stage.label().to_string()],
                    created_at: newest_mtime(&path)?,
                });
            }
        }
        Ok(stages)
    }

    fn changed_at(&self, secret: &str) -> Result<Option<i64>, StoreError> {
        newest_mtime(&self.secret_dir(secret)?)
    }

    fn list(&self) -> Result<Vec<String>, StoreError> {
        check_private_dir(&self.dir)?;
        let mut names = sorted_names(&self.dir)?;
        names.retain(|n| self.dir.join(n).is_dir());
        Ok(names)
    }

    fn keys(&self, secret: &str) -> Result<Vec<String>, StoreError> {
        let dir = self.secret_dir(secret)?;
        check_private_dir(&self.dir)?;
        check_private_dir(&dir)?;
        let mut names = sorted_names(&dir)?;
        names.retain(|n| dir.join(n).is_file());
        Ok(names)
    }

    fn remove(&self, secret: &str) -> Result<bool, StoreError> {
        let dir = self.secret_dir(secret)?;
        let existed = dir.exists();
        remove_dir(&dir)?;
        Ok(existed)
    }

    fn file(&self, secret: &str, key: &str) -> Option<PathBuf> {
        self.key_path(secret, key).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn values_round_trip_with_private_modes() {
        let root = tempfile::tempdir().unwrap();
        let store = LocalFiles::new(root.path().join("secrets"));
        assert_eq!(store.read("auth-db-credentials", "password").unwrap(), None);
        store
            .write("auth-db-credentials", "password", &Secret::new("s3cret"))
            .unwrap();
        store
            .write(
                "auth-db-credentials",
                "username",
                &Secret::new("auth_app_a"),
            )
            .unwrap();
        let value = store
            .read("auth-db-credentials", "password")
            .unwrap()
            .unwrap();
        assert_eq!(value.expose(), "s3cret");
        assert_eq!(mode(store.dir()), 0o700);
        assert_eq!(mode(&store.dir().join("auth-db-credentials")), 0o700);
        assert_eq!(
            mode(&store.file("auth-db-credentials", "password").unwrap()),
            0o600
        );
        assert_eq!(store.list().unwrap(), ["auth-db-credentials"]);
        assert_eq!(
            store.keys("auth-db-credentials").unwrap(),
            ["password", "username"]
        );
        store
            .write("auth-db-credentials", "password", &Secret::new("next"))
            .unwrap();
        let value = store
            .read("auth-db-credentials", "password")
            .unwrap()
            .unwrap();
        assert_eq!(value.expose(), "next");
        assert!(store.remove("auth-db-credentials").unwrap());
        assert!(!store.remove("auth-db-credentials").unwrap());
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn ensure_generates_once() {
        let root = tempfile::tempdir().unwrap();
        let store = LocalFiles::new(root.path().join("secrets"));
        let mut calls = 0;
        let mut generate = || {
            calls += 1;
            Secret::random_password()
        };
        let (first, created) = store
            .ensure("internal-credentials", "auth", &mut generate)
            .unwrap();
        assert!(created);
        let (second, created) = store
            .ensure("internal-credentials", "auth", &mut generate)
            .unwrap();
        assert!(!created);
        assert_eq!(first, second);
        assert_eq!(calls, 1);
    }

    #[test]
    fn readable_files_are_refused_and_named() {
        let root = tempfile::tempdir().unwrap();
        let store = LocalFiles::new(root.path().join("secrets"));
        store.write("smoke", "password", &Secret::new("x")).unwrap();
        let path = store.file("smoke", "password").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let error = store.read("smoke", "password").unwrap_err().to_string();
        assert!(error.contains("open to other users"), "{error}");
        assert!(error.contains("chmod 600"), "{error}");
    }

    #[test]
    fn open_directories_are_refused_and_named_even_for_reading() {
        let root = tempfile::tempdir().unwrap();
        let store = LocalFiles::new(root.path().join("secrets"));
        store.write("smoke", "password", &Secret::new("x")).unwrap();
        for dir in [store.dir().to_path_buf(), store.dir().join("smoke")] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
            for error in [
                store.read("smoke", "password").unwrap_err(),
                store.keys("smoke").unwrap_err(),
                store
                    .write("smoke", "other", &Secret::new("y"))
                    .unwrap_err(),
            ] {
                let error = error.to_string();
                assert!(error.contains(&dir.display().to_string()), "{error}");
                assert!(error.contains("mode 755"), "{error}");
                assert!(error.contains("chmod 700"), "{error}");
            }
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        }
        assert_eq!(
            store.read("smoke", "password").unwrap().unwrap().expose(),
            "x"
        );
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let store = LocalFiles::new(root.path().join("s"));
        assert!(store.write("../escape", "k", &Secret::new("v")).is_err());
        assert!(store.write("ok", "../../k", &Secret::new("v")).is_err());
        assert!(store.read("ok", "/etc/passwd").is_err());
        assert!(!root.path().join("escape").exists());
    }
}
