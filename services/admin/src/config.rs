//! Platform Admin's configuration, from the variables the environment
//! matrix gives it (`environments/base.yaml`).

use std::time::Duration;

use kisum_common::config::{ConfigError, Vars, digest};
use kisum_common::internal::{Allowlist, Credential};
use kisum_common::jwt::TokenPolicy;
use kisum_common::serve::ServerSettings;

/// Clock skew allowed when checking a token's expiry and not-before.
const TOKEN_LEEWAY_SECONDS: u64 = 30;

#[derive(Clone)]
pub struct Config {
    pub service: String,
    pub environment: String,
    pub http_port: u16,
    pub internal_port: u16,
    pub log_level: String,
    /// `ADMIN_DB_URL`: a secret (it holds the password); never logged.
    pub database_url: String,
    /// Auth's public URL (where the admin frontend signs in).
    pub auth_url: String,
    pub auth_internal_url: String,
    pub core_internal_url: String,
    pub jwks_url: String,
    pub token_policy: TokenPolicy,
    /// What Admin presents to Auth and Platform Core, as `SERVICE_NAME`.
    pub credential: Credential,
    /// Who may read diagnostics (`INTERNAL_CALLER_*`: kisumctl).
    pub diagnostics_callers: Allowlist,
    /// Whether `ADMIN_BOOTSTRAP` is set. No route uses it: the first
    /// platform admin is created in Auth, which owns users and roles.
    pub bootstrap_configured: bool,
    /// Timeouts and `/metrics`, shared by every service.
    pub server: ServerSettings,
    /// Digest of the non-secret settings, for diagnostics.
    pub digest: String,
}

/// `services.platform-admin.timeouts.read-seconds`: the default request timeout.
const READ_SECONDS: Duration = Duration::from_secs(30);

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("service", &self.service)
            .field("environment", &self.environment)
            .field("auth_internal_url", &self.auth_internal_url)
            .field("core_internal_url", &self.core_internal_url)
            .field("jwks_url", &self.jwks_url)
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

impl Config {
    pub fn from_vars(vars: &Vars) -> Result<Config, ConfigError> {
        let service = vars.required("SERVICE_NAME")?;
        let credential = Credential::new(service.clone(), vars.required("INTERNAL_CREDENTIAL")?);
        let config = Config {
            environment: vars.required("KISUM_ENVIRONMENT")?,
            http_port: vars.parsed("HTTP_PORT")?,
            internal_port: vars.parsed("INTERNAL_PORT")?,
            log_level: vars.optional("LOG_LEVEL")?.unwrap_or_else(|| "info".into()),
            database_url: vars.required("ADMIN_DB_URL")?,
            auth_url: base_url(vars, "AUTH_URL")?,
            auth_internal_url: base_url(vars, "AUTH_INTERNAL_URL")?,
            core_internal_url: base_url(vars, "CORE_INTERNAL_URL")?,
            jwks_url: base_url(vars, "JWKS_URL")?,
            token_policy: TokenPolicy {
                issuer: vars.required("JWT_ISSUER")?,
                audience: vars.required("JWT_AUDIENCE")?,
                leeway_seconds: TOKEN_LEEWAY_SECONDS,
            },
            credential,
            diagnostics_callers: Allowlist::from_vars(vars)?,
            bootstrap_configured: vars
                .optional("ADMIN_BOOTSTRAP")?
                .is_some_and(|value| !value.trim().is_empty()),
            service,
            server: ServerSettings::from_vars(vars, READ_SECONDS)?,
            digest: String::new(),
        };
        Ok(Config {
            digest: config.settings_digest(),
            ..config
        })
    }

    fn settings_digest(&self) -> String {
        let (http, internal) = (self.http_port.to_string(), self.internal_port.to_string());
        let server = self.server.digest_pairs();
        let server = server.iter().map(|(name, value)| (*name, value.as_str()));
        digest(
            [
                ("SERVICE_NAME", self.service.as_str()),
                ("KISUM_ENVIRONMENT", self.environment.as_str()),
                ("HTTP_PORT", http.as_str()),
                ("INTERNAL_PORT", internal.as_str()),
                ("AUTH_URL", self.auth_url.as_str()),
                ("AUTH_INTERNAL_URL", self.auth_internal_url.as_str()),
                ("CORE_INTERNAL_URL", self.core_internal_url.as_str()),
                ("JWKS_URL", self.jwks_url.as_str()),
                ("JWT_ISSUER", self.token_policy.issuer.as_str()),
                ("JWT_AUDIENCE", self.token_policy.audience.as_str()),
            ]
            .into_iter()
            .chain(server),
        )
    }
}

/// An http(s) URL, without a trailing `/`.
fn base_url(vars: &Vars, name: &str) -> Result<String, ConfigError> {
    vars.http_url(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars::from_pairs([
            ("SERVICE_NAME", "platform-admin"),
            ("KISUM_ENVIRONMENT", "test"),
            ("HTTP_PORT", "8103"),
            ("INTERNAL_PORT", "9103"),
            (
                "ADMIN_DB_URL",
                "postgres://admin:pw@127.0.0.1/platform_admin_db",
            ),
            ("AUTH_URL", "https://auth.kisum.test/"),
            ("AUTH_INTERNAL_URL", "http://auth.internal:9101"),
            ("CORE_INTERNAL_URL", "http://core.internal:9102"),
            ("JWT_ISSUER", "https://auth.kisum.test"),
            ("JWT_AUDIENCE", "kisum-api"),
            ("JWKS_URL", "https://auth.kisum.test/.well-known/jwks.json"),
            ("INTERNAL_CREDENTIAL", "s3cr3t-credential"),
            ("INTERNAL_CALLER_KISUMCTL", "k"),
        ])
    }

    #[test]
    fn admin_presents_its_service_name_and_trims_urls() {
        let config = Config::from_vars(&vars()).unwrap();
        assert_eq!(config.credential.caller, "platform-admin");
        assert_eq!(config.auth_url, "https://auth.kisum.test");
        assert_eq!(config.diagnostics_callers.callers(), ["kisumctl"]);
        assert!(!config.bootstrap_configured);
    }

    #[test]
    fn a_url_without_a_scheme_is_named() {
        let mut vars = vars();
        vars.set("CORE_INTERNAL_URL", "core.internal:9102");
        let error = Config::from_vars(&vars).unwrap_err().to_string();
        assert!(error.starts_with("CORE_INTERNAL_URL is invalid"), "{error}");
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let text = format!("{:?}", Config::from_vars(&vars()).unwrap());
        assert!(!text.contains("pw@") && !text.contains("s3cr3t"), "{text}");
    }
}
