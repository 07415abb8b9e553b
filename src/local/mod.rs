//! `deploy local` and its companions: the whole platform as supervised
//! processes on one machine (docs/deploy-local.md).
//!
//! `plan` computes the desired state from the matrix; `postgres`, `redis`
//! and `mongo` prepare and describe the data services; `credentials` and
//! `seed` fill the secret store and the databases (the databases, roles and
//! migrations themselves come from `crate::db`, as for every environment);
//! `supervisor` runs the processes; `deploy` orders it all; `status` reads
//! it back. Nothing here prints: the command files under `cli` do.

pub mod checks;
pub mod credentials;
pub mod deploy;
pub mod lock;
pub mod mongo;
pub mod plan;
pub mod ports;
pub mod postgres;
pub mod probe;
pub mod programs;
pub mod redis;
pub mod seed;
pub mod state;
pub mod status;
pub mod supervisor;

use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::matrix::schema::SecretBackend;
use crate::matrix::{Environment, normalize};
use crate::secrets::LocalFiles;
use state::StateDir;

/// Where one environment's local state and secrets live.
pub struct Context {
    pub state: StateDir,
    pub store: LocalFiles,
    /// The directory relative matrix paths resolve against: the parent of
    /// the matrix directory (the repository root for `environments`).
    pub repo: PathBuf,
}

impl Context {
    pub fn for_environment(env: &Environment, matrix_dir: &Path) -> anyhow::Result<Context> {
        let matrix_dir = absolute(matrix_dir)?;
        let repo = matrix_dir
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        let resolve = |path: &str| normalize(&repo.join(path));
        let secrets = match &env.file.secrets {
            SecretBackend::LocalFiles { path } => resolve(path),
            SecretBackend::AwsSecretsManager { .. } => bail!(
                "environment `{}` keeps its secrets in AWS Secrets Manager; local processes need the local-files backend",
                env.name
            ),
        };
        Ok(Context {
            state: StateDir::new(resolve(&env.file.state_dir)),
            store: LocalFiles::new(secrets),
            repo,
        })
    }
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(normalize(path));
    }
    Ok(normalize(&std::env::current_dir()?.join(path)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;
    use crate::secrets::SecretStore as _;

    #[test]
    fn relative_paths_resolve_against_the_matrix_parent() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("environments");
        let matrix = Matrix::load(&dir).unwrap();
        let env = matrix.environment("local").unwrap();
        let context = Context::for_environment(&env, &dir.join(".")).unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert_eq!(context.repo, repo);
        assert_eq!(context.state.root(), repo.join(".kisum/local"));
        assert!(context.store.describe().contains(".kisum/local/secrets"));
        assert_eq!(normalize(Path::new("/a/./b/../c")), Path::new("/a/c"));
    }
}
