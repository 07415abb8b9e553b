//! Where the smoke checks send their requests: the public base URLs of
//! Auth, Platform Admin and the finance backend.
//!
//! `local` runs every service on loopback ports chosen by `kisumctl deploy
//! local`, which writes them to `<state-dir>/endpoints.json`. Every other
//! environment is reached at `https://<host>` of each public service, as
//! the matrix resolves the host for that environment.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use reqwest::Url;
use serde::Serialize;

use crate::matrix::Environment;
use crate::matrix::schema::Exposure;

/// The service ids of the matrix whose public URLs the checks use.
pub const AUTH: &str = "auth";
pub const ADMIN: &str = "platform-admin";
pub const FINANCE: &str = "finance";

/// The file `deploy local` writes in the state directory.
pub const ENDPOINTS_FILE: &str = "endpoints.json";

/// Base URLs, without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub auth: String,
    #[serde(rename = "platform-admin")]
    pub admin: String,
    pub finance: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{env} is not deployed: run `kisumctl deploy {env}` ({} does not exist)", path.display())]
    NotDeployed { env: String, path: PathBuf },
    #[error("{}", missing_endpoints_file(env, path))]
    EndpointsFileMissing { env: String, path: PathBuf },
    #[error("{}: {message}", path.display())]
    Endpoints { path: PathBuf, message: String },
    #[error("service `{service}` of environment {env}: {message}")]
    Service {
        env: String,
        service: &'static str,
        message: String,
    },
}

impl Target {
    /// The target of `env`; `state_dir` is the environment's state
    /// directory, already resolved (only `local` reads it).
    pub fn for_environment(env: &Environment, state_dir: &Path) -> Result<Target, TargetError> {
        if env.name == "local" {
            Target::from_endpoints(env.name, &state_dir.join(ENDPOINTS_FILE))
        } else {
            Target::from_hosts(env)
        }
    }

    /// `https://<host>` of each public service. Pure: nothing is resolved
    /// or contacted.
    pub fn from_hosts(env: &Environment) -> Result<Target, TargetError> {
        let url = |service: &'static str| {
            let problem = |message: &str| TargetError::Service {
                env: env.name.to_string(),
                service,
                message: message.to_string(),
            };
            let resolved = env
                .services
                .get(service)
                .ok_or_else(|| problem("not in the matrix"))?;
            if resolved.spec.exposure != Exposure::Public {
                return Err(problem("not public: the smoke checks use public URLs only"));
            }
            base_url(&format!("https://{}", resolved.host)).map_err(|m| problem(&m))
        };
        Ok(Target {
            auth: url(AUTH)?,
            admin: url(ADMIN)?,
            finance: url(FINANCE)?,
        })
    }

    /// The public URLs in an `endpoints.json` of `deploy local`:
    /// `{"auth": URL, "platform-admin": URL, "finance": URL, ...,
    /// "internal": {...}}`.
    pub fn from_endpoints(env: &str, path: &Path) -> Result<Target, TargetError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TargetError::NotDeployed {
                    env: env.to_string(),
                    path: path.to_path_buf(),
                });
            }
            Err(e) => return Err(endpoints_error(path, e.to_string())),
        };
        let document: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| endpoints_error(path, format!("not valid JSON: {e}")))?;
        let url = |service: &str| {
            let value = document
                .get(service)
                .and_then(|v| v.as_str())
                .ok_or_else(|| endpoints_error(path, format!("no URL for `{service}`")))?;
            base_url(value).map_err(|m| endpoints_error(path, format!("`{service}`: {m}")))
        };
        Ok(Target {
            auth: url(AUTH)?,
            admin: url(ADMIN)?,
            finance: url(FINANCE)?,
        })
    }

    /// True when every URL names a loopback address: nothing goes through
    /// a proxy then.
    pub fn is_loopback(&self) -> bool {
        [&self.auth, &self.admin, &self.finance].iter().all(|url| {
            let url = Url::parse(url).ok();
            let host = url.as_ref().and_then(|u| u.host_str()).unwrap_or_default();
            let ip = host.trim_start_matches('[').trim_end_matches(']');
            host == "localhost" || ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        })
    }
}

/// Why the `kubernetes.smoke-endpoints` file of a cluster environment
/// is of no use when it does not exist: kisumctl never writes it.
pub fn missing_endpoints_file(env: &str, path: &Path) -> String {
    format!(
        "the smoke-endpoints file {} does not exist (`kubernetes.smoke-endpoints` of environments/{env}.yaml); kisumctl does not write it: whoever opens the tunnel or test server in front of {env} writes it, as JSON {{\"auth\": URL, \"platform-admin\": URL, \"finance\": URL}} (the shape of `deploy local`'s endpoints.json); or leave `smoke-endpoints` out to check `https://<host>`",
        path.display()
    )
}

/// The URLs of a cluster environment's `kubernetes.smoke-endpoints` file.
pub fn from_smoke_endpoints(env: &str, path: &Path) -> Result<Target, TargetError> {
    Target::from_endpoints(env, path).map_err(|error| match error {
        TargetError::NotDeployed { env, path } => TargetError::EndpointsFileMissing { env, path },
        other => other,
    })
}

fn endpoints_error(path: &Path, message: String) -> TargetError {
    TargetError::Endpoints {
        path: path.to_path_buf(),
        message,
    }
}

/// An http(s) base URL without credentials, query or fragment, answered
/// without its trailing slash.
fn base_url(text: &str) -> Result<String, String> {
    let url = Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("`{text}` is not an http(s) URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a URL must not carry credentials".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{text}` has a query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;

    fn shipped() -> Matrix {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("environments");
        Matrix::load(&dir).expect("the shipped matrix loads")
    }

    #[test]
    fn other_environments_use_https_on_the_public_hosts_of_the_matrix() {
        let matrix = shipped();
        let staging = matrix.environment("staging").unwrap();
        let target = Target::for_environment(&staging, Path::new("/nonexistent")).unwrap();
        assert_eq!(target.auth, "https://auth-staging.kisum.io");
        assert_eq!(target.admin, "https://admin-api-staging.kisum.io");
        assert_eq!(target.finance, "https://api-v2-finance-staging.kisum.dev");
        let production = matrix.environment("production").unwrap();
        let target = Target::from_hosts(&production).unwrap();
        assert_eq!(target.auth, "https://auth.kisum.io");
        assert!(!target.is_loopback());
    }

    #[test]
    fn local_reads_the_endpoints_of_the_deploy() {
        let matrix = shipped();
        let local = matrix.environment("local").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(ENDPOINTS_FILE),
            r#"{"auth": "http://127.0.0.1:41001/", "platform-admin": "http://127.0.0.1:41002",
                "finance": "http://127.0.0.1:41003", "market": "http://127.0.0.1:41004",
                "internal": {"platform-core": "http://127.0.0.1:42001"}}"#,
        )
        .unwrap();
        let target = Target::for_environment(&local, dir.path()).unwrap();
        assert_eq!(
            target,
            Target {
                auth: "http://127.0.0.1:41001".into(),
                admin: "http://127.0.0.1:41002".into(),
                finance: "http://127.0.0.1:41003".into(),
            }
        );
        assert!(target.is_loopback());
    }

    #[test]
    fn local_without_endpoints_is_not_deployed() {
        let matrix = shipped();
        let local = matrix.environment("local").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let error = Target::for_environment(&local, dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("local is not deployed: run `kisumctl deploy local`"),
            "{error}"
        );
    }

    #[test]
    fn malformed_endpoints_are_refused_with_the_file_and_service() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ENDPOINTS_FILE);
        for (text, expected) in [
            ("{", "not valid JSON"),
            (
                r#"{"auth": "http://127.0.0.1:1"}"#,
                "no URL for `platform-admin`",
            ),
            (
                r#"{"auth": "ftp://127.0.0.1", "platform-admin": "x", "finance": "y"}"#,
                "`auth`: `ftp://127.0.0.1` is not an http(s) URL",
            ),
            (
                r#"{"auth": "http://u:p@127.0.0.1", "platform-admin": "x", "finance": "y"}"#,
                "must not carry credentials",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = Target::from_endpoints("local", &path)
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{text}: {error}");
            assert!(error.contains(ENDPOINTS_FILE), "{error}");
        }
    }
}
