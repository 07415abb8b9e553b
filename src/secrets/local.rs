//! Secrets as files: `<dir>/<secret>/<key>`, directories of mode 0700 and
//! files of mode 0600, each written to a temporary file, synced and renamed
//! into place so a crash never leaves half a value. A file or directory
//! that other users can read is refused rather than used.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::{Secret, SecretStore, StoreError, check_name};

#[derive(Debug, Clone)]
pub struct LocalFiles {
    dir: PathBuf,
}

impl LocalFiles {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LocalFiles { dir: dir.into() }
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

fn make_private_dir(path: &Path) -> Result<(), StoreError> {
    match fs::metadata(path) {
        Ok(meta) => check_private(path, &meta),
        Err(_) => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io(path)),
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
        let path = self.key_path(secret, key)?;
        make_private_dir(&self.dir)?;
        let dir = self.secret_dir(secret)?;
        make_private_dir(&dir)?;
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
        fs::rename(&temporary, &path).map_err(io(&path))?;
        fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&dir))
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
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(&dir)(e)),
        }
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
