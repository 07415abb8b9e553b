//! Where the runbook checks reach each service: `local` at the loopback
//! URLs `kisumctl deploy local` wrote to `<state-dir>/endpoints.json`;
//! any other environment at `https://<host>` for a public service's public
//! routes and at the in-cluster address `http://<service>.<namespace>.svc`
//! for the rest (kisumctl runs as a Job in the cluster there, as for
//! `rotate-jwt-key`), unless the matrix's `kubernetes.smoke-endpoints`
//! names a file of URLs (a tunnel, a test), as `status` and `smoke` honour
//! it: then every URL comes from that file (the shape of `endpoints.json`:
//! the public URLs at the top, the internal ones under `internal`) and a
//! service it does not name has none.

use std::collections::BTreeMap;
use std::path::Path;

use crate::local::plan::Endpoints;
use crate::matrix::Environment;
use crate::matrix::schema::Exposure;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{env} is not deployed: run `kisumctl deploy {env}` ({path} does not exist)")]
    NotDeployed { env: String, path: String },
    #[error("{path}: {message}")]
    Endpoints { path: String, message: String },
    #[error("{0}")]
    Missing(String),
}

/// The public and internal base URL of every service of `env`; `dir` is
/// the matrix directory (the smoke-endpoints file is relative to it).
pub fn endpoints(
    dir: &Path,
    env: &Environment,
    state_dir: &Path,
) -> Result<Endpoints, TargetError> {
    if env.name != "local" {
        return match &env.file.kubernetes.smoke_endpoints {
            Some(file) => smoke_endpoints(env, &crate::matrix::resolve_path(dir, file)),
            None => Ok(cluster_endpoints(env)),
        };
    }
    let path = crate::local::state::StateDir::new(state_dir.to_path_buf()).endpoints();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(TargetError::NotDeployed {
                env: env.name.to_string(),
                path: path.display().to_string(),
            });
        }
        Err(e) => {
            return Err(TargetError::Endpoints {
                path: path.display().to_string(),
                message: e.to_string(),
            });
        }
    };
    let mut endpoints: Endpoints =
        serde_json::from_str(&text).map_err(|e| TargetError::Endpoints {
            path: path.display().to_string(),
            message: format!("not an endpoints file: {e}"),
        })?;
    let trim = |urls: &mut BTreeMap<String, String>| {
        for url in urls.values_mut() {
            *url = url.trim_end_matches('/').to_string();
        }
    };
    trim(&mut endpoints.public);
    trim(&mut endpoints.internal);
    Ok(endpoints)
}

/// The URLs of the `kubernetes.smoke-endpoints` file at `path`.
fn smoke_endpoints(env: &Environment, path: &Path) -> Result<Endpoints, TargetError> {
    let failed = |message: String| TargetError::Endpoints {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            TargetError::Missing(crate::smoke::missing_endpoints_file(env.name, path))
        }
        _ => failed(e.to_string()),
    })?;
    let document: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| failed(format!("not valid JSON: {e}")))?;
    let urls = |value: &serde_json::Value| -> BTreeMap<String, String> {
        value
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(service, url)| {
                let url = url.as_str()?.trim_end_matches('/').to_string();
                Some((service.clone(), url))
            })
            .collect()
    };
    Ok(Endpoints {
        public: urls(&document),
        internal: urls(&document["internal"]),
    })
}

fn cluster_endpoints(env: &Environment) -> Endpoints {
    let mut endpoints = Endpoints::default();
    for service in env.services.values() {
        let in_cluster =
            |port: u16| format!("http://{}.{}.svc:{port}", service.id, env.file.namespace);
        let public = if service.spec.exposure == Exposure::Public {
            format!("https://{}", service.host)
        } else {
            in_cluster(service.spec.ports.http)
        };
        endpoints.public.insert(service.id.to_string(), public);
        endpoints.internal.insert(
            service.id.to_string(),
            in_cluster(service.spec.ports.internal),
        );
    }
    endpoints
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;

    #[test]
    fn other_environments_use_public_hosts_and_cluster_addresses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("environments");
        let matrix = Matrix::load(&dir).unwrap();
        let staging = matrix.environment("staging").unwrap();
        let mut staging = staging;
        let mut file = staging.file.clone();
        file.kubernetes.smoke_endpoints = None;
        staging.file = &file;
        let endpoints = endpoints(&dir, &staging, Path::new("/nonexistent")).unwrap();
        assert_eq!(endpoints.public["auth"], "https://auth-staging.kisum.io");
        assert!(
            endpoints.public["platform-core"]
                .starts_with("http://platform-core.kisum-staging.svc:"),
            "{:?}",
            endpoints.public
        );
        assert!(endpoints.internal["auth"].starts_with("http://auth.kisum-staging.svc:"));
    }
}
