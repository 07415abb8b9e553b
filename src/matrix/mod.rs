//! The environment matrix: the single source of truth about the platform.

pub mod index;
pub mod load;
pub mod model;
pub mod provisioning;
pub mod rules;
pub mod schema;
pub mod syntax;

pub use load::InputError;
pub use model::{ConfigValue, Environment, Matrix, ResolvedService};

use std::path::{Path, PathBuf};

/// A path written in the matrix (`state-dir`, `secrets.path`, ...): an
/// absolute one as it is, a relative one against the directory that holds
/// the matrix directory (the repository root for `environments/`).
/// The repository's own matrix, for unit tests.
#[cfg(test)]
pub fn shipped() -> Matrix {
    Matrix::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("environments")).unwrap()
}

pub fn resolve_path(matrix_dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        return path.to_path_buf();
    }
    root(matrix_dir).join(path)
}

/// The directory relative matrix paths resolve against: the parent of the
/// matrix directory.
pub fn root(matrix_dir: &Path) -> PathBuf {
    let matrix_dir = std::fs::canonicalize(matrix_dir).unwrap_or_else(|_| matrix_dir.to_path_buf());
    matrix_dir.parent().unwrap_or(Path::new(".")).to_path_buf()
}

/// Removes `.` and resolves `..` lexically (symbolic links are not
/// followed).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_paths_resolve_against_the_parent_of_the_matrix_directory() {
        let root = tempfile::tempdir().unwrap();
        let matrix = root.path().join("environments");
        std::fs::create_dir(&matrix).unwrap();
        let root = std::fs::canonicalize(root.path()).unwrap();
        assert_eq!(
            resolve_path(&matrix, ".kisum/local/secrets"),
            root.join(".kisum/local/secrets")
        );
        assert_eq!(resolve_path(&matrix, "/var/kisum"), Path::new("/var/kisum"));
    }
}
