//! Deploys to a Kubernetes cluster: `kisumctl deploy|history|rollback|diff`
//! for every environment but `local`.
//!
//! - [`manifest`]: the rendered files as objects, in waves (spec 14.4),
//!   with the release's digest, images and schema levels;
//! - [`api`]: the cluster through kube (server-side apply with kisumctl's
//!   field manager, reads, lists, deletes), every error naming the object;
//! - [`rollout`]: when a Deployment's rollout or a Job is done (pure);
//! - [`lease`]: the environment lock, a `coordination.k8s.io` Lease;
//! - [`history`]: one ConfigMap per release, and the rollback guard;
//! - [`release`]: deploy, rollback, prune and diff, which never print:
//!   they report through [`release::Progress`] and answer values.
//!
//! Verified against the in-process fake API server of kisum-testkit only,
//! never against a real cluster (see docs/deploy-kubernetes.md).

pub mod api;
pub mod history;
pub mod job;
pub mod lease;
pub mod manifest;
pub mod operation;
pub mod release;
pub mod rollout;

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::matrix::Environment;

/// Field manager of every apply, and the value of the ownership label.
pub const FIELD_MANAGER: &str = crate::render::MANAGER;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("context `{context}` of {source_name}: {message}")]
    Context {
        context: String,
        source_name: String,
        message: String,
    },
    #[error("cannot build a Kubernetes client for context `{context}`: {message}")]
    Client { context: String, message: String },
}

/// A client for the environment's cluster: the kubeconfig the matrix names
/// (relative to the matrix's parent), or the standard lookup, with the
/// matrix's context.
pub async fn connect(
    matrix_dir: &Path,
    env: &Environment<'_>,
) -> Result<kube::Client, ConnectError> {
    let target = &env.file.kubernetes;
    let options = KubeConfigOptions {
        context: Some(target.context.clone()),
        ..KubeConfigOptions::default()
    };
    let context_error =
        |source_name: String, e: kube::config::KubeconfigError| ConnectError::Context {
            context: target.context.clone(),
            source_name,
            message: e.to_string(),
        };
    let config = match &target.kubeconfig {
        Some(path) => {
            let path = crate::matrix::resolve_path(matrix_dir, path);
            let shown = path.display().to_string();
            let kubeconfig =
                Kubeconfig::read_from(&path).map_err(|e| ConnectError::Kubeconfig {
                    path: shown.clone(),
                    message: e.to_string(),
                })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| context_error(shown, e))?
        }
        None => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| context_error("the default kubeconfig".into(), e))?,
    };
    kube::Client::try_from(config).map_err(|e| ConnectError::Client {
        context: target.context.clone(),
        message: e.to_string(),
    })
}
