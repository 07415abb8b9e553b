//! Platform Core's configuration, from the variables the environment matrix
//! gives it (`environments/base.yaml`).

use std::collections::BTreeMap;
use std::time::Duration;

use kisum_common::config::{CommonConfig, ConfigError, Vars, digest_with};
use kisum_common::internal::{Allowlist, CallerCredentials, caller_credentials};

const CALLER_PREFIX: &str = "INTERNAL_CALLER_";

#[derive(Clone)]
pub struct Config {
    /// Service name, environment, ports, timeouts, `/metrics`.
    pub common: CommonConfig,
    /// `CORE_DB_URL`: a secret (it holds the password); never logged.
    pub database_url: String,
    /// The callers of the entitlement API (`INTERNAL_ALLOWED_CALLERS`).
    pub api_callers: Allowlist,
    /// Every `INTERNAL_CALLER_*`: who may read diagnostics (kisumctl too);
    /// a caller proven here but not among `api_callers` gets a 403 from
    /// the entitlement API.
    pub diagnostics_callers: Allowlist,
    /// Whether `BILLING_PROVIDER_KEY` is set; the key itself is not used yet.
    pub billing_provider_configured: bool,
    pub self_service_billing: bool,
    /// Digest of the non-secret settings, for diagnostics.
    pub digest: String,
}

/// `services.platform-core.timeouts.read-seconds`: the default request timeout.
const READ_SECONDS: Duration = Duration::from_secs(10);

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("common", &self.common)
            .field("api_callers", &self.api_callers)
            .field("diagnostics_callers", &self.diagnostics_callers)
            .field("self_service_billing", &self.self_service_billing)
            .finish_non_exhaustive()
    }
}

impl Config {
    pub fn from_vars(vars: &Vars) -> Result<Config, ConfigError> {
        let credentials = caller_credentials(vars)?;
        let allowed = allowed_callers(vars)?;
        let api_callers = api_allowlist(&credentials, &allowed)?;
        let common = CommonConfig::from_vars(vars, READ_SECONDS)?;
        let billing_provider_configured = vars
            .optional("BILLING_PROVIDER_KEY")?
            .is_some_and(|key| !key.trim().is_empty());
        let self_service_billing = vars.parsed_or("SELF_SERVICE_BILLING", false)?;
        let digest = digest_with(
            &common,
            &[
                ("INTERNAL_ALLOWED_CALLERS", &allowed.join(",")),
                (
                    "BILLING_PROVIDER_KEY set",
                    &billing_provider_configured.to_string(),
                ),
                ("SELF_SERVICE_BILLING", &self_service_billing.to_string()),
            ],
        );
        Ok(Config {
            common,
            database_url: vars.postgres_url("CORE_DB_URL")?,
            api_callers,
            diagnostics_callers: Allowlist::from_credentials(credentials),
            billing_provider_configured,
            self_service_billing,
            digest,
        })
    }
}

fn allowed_callers(vars: &Vars) -> Result<Vec<String>, ConfigError> {
    let allowed: Vec<String> = vars
        .required("INTERNAL_ALLOWED_CALLERS")?
        .split(',')
        .map(|caller| caller.trim().to_string())
        .filter(|caller| !caller.is_empty())
        .collect();
    if allowed.is_empty() {
        return Err(ConfigError::Invalid {
            name: "INTERNAL_ALLOWED_CALLERS".into(),
            reason: "names no caller".into(),
        });
    }
    Ok(allowed)
}

/// The allowed callers with their credentials; an allowed caller without an
/// `INTERNAL_CALLER_*` credential is a configuration error.
fn api_allowlist(
    credentials: &BTreeMap<String, CallerCredentials>,
    allowed: &[String],
) -> Result<Allowlist, ConfigError> {
    let pairs = allowed
        .iter()
        .map(|caller| match credentials.get(caller) {
            Some(credential) => Ok((caller.clone(), credential.clone())),
            None => Err(ConfigError::Invalid {
                name: "INTERNAL_ALLOWED_CALLERS".into(),
                reason: format!(
                    "names `{caller}` but {CALLER_PREFIX}{} is not set",
                    caller.to_ascii_uppercase().replace('-', "_")
                ),
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Allowlist::from_credentials(pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars::from_pairs([
            ("SERVICE_NAME", "platform-core"),
            ("KISUM_ENVIRONMENT", "test"),
            ("HTTP_PORT", "8102"),
            ("INTERNAL_PORT", "9102"),
            (
                "CORE_DB_URL",
                "postgres://core:pw@127.0.0.1/platform_core_db",
            ),
            ("INTERNAL_ALLOWED_CALLERS", "auth, platform-admin"),
            ("INTERNAL_CALLER_AUTH", "auth-credential-of-32-bytes-00000"),
            (
                "INTERNAL_CALLER_PLATFORM_ADMIN",
                "admin-credential-of-32-bytes-000",
            ),
            (
                "INTERNAL_CALLER_KISUMCTL",
                "kisumctl-credential-of-32-bytes0",
            ),
        ])
    }

    #[test]
    fn the_api_admits_only_the_allowed_callers_and_diagnostics_every_caller() {
        let config = Config::from_vars(&vars()).unwrap();
        assert_eq!(config.api_callers.callers(), ["auth", "platform-admin"]);
        assert_eq!(
            config.diagnostics_callers.callers(),
            ["auth", "kisumctl", "platform-admin"]
        );
        assert!(!config.self_service_billing);
        assert!(!config.billing_provider_configured);
    }

    #[test]
    fn an_allowed_caller_without_a_credential_is_named() {
        let mut vars = vars();
        vars.set("INTERNAL_ALLOWED_CALLERS", "auth,platform-admin,finance");
        let error = Config::from_vars(&vars).unwrap_err().to_string();
        assert!(error.contains("INTERNAL_CALLER_FINANCE"), "{error}");
    }

    #[test]
    fn debug_output_holds_no_database_url() {
        let config = Config::from_vars(&vars()).unwrap();
        assert!(!format!("{config:?}").contains("pw@"));
    }
}
