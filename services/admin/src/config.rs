//! Platform Admin's configuration, from the variables the environment
//! matrix gives it (`environments/base.yaml`).

use std::time::Duration;

use kisum_common::config::{CommonConfig, ConfigError, Vars, digest_with};
use kisum_common::internal::{Allowlist, Credential};
use kisum_common::jwt::TokenPolicy;

/// Clock skew allowed when checking a token's expiry and not-before.
const TOKEN_LEEWAY_SECONDS: u64 = 30;

#[derive(Clone)]
pub struct Config {
    /// Service name (also the caller Admin presents), environment, ports,
    /// timeouts, `/metrics`.
    pub common: CommonConfig,
    /// `ADMIN_DB_URL`: a secret (it holds the password); never logged.
    pub database_url: String,
    /// Auth's public URL (where the admin frontend signs in).
    pub auth_url: String,
    pub auth_internal_url: String,
    pub core_internal_url: String,
    pub jwks_url: String,
    /// `JWKS_CACHE_SECONDS` (300 by default, the matrix's
    /// `tokens.jwks-cache-seconds`): how long Auth's keys are used before
    /// a refetch. kisumctl's key rotation waits on it.
    pub jwks_cache: Duration,
    pub token_policy: TokenPolicy,
    /// What Admin presents to Auth and Platform Core, as `SERVICE_NAME`.
    pub credential: Credential,
    /// Who may read diagnostics (`INTERNAL_CALLER_*`: kisumctl).
    pub diagnostics_callers: Allowlist,
    /// Whether `ADMIN_BOOTSTRAP` is set. No route uses it: the first
    /// platform admin is created in Auth, which owns users and roles.
    pub bootstrap_configured: bool,
    /// Digest of the non-secret settings, for diagnostics.
    pub digest: String,
}

/// `JWKS_CACHE_SECONDS` when not set.
const DEFAULT_JWKS_CACHE_SECONDS: u64 = 300;

/// `services.platform-admin.timeouts.read-seconds`: the default request timeout.
const READ_SECONDS: Duration = Duration::from_secs(30);

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("common", &self.common)
            .field("auth_internal_url", &self.auth_internal_url)
            .field("core_internal_url", &self.core_internal_url)
            .field("jwks_url", &self.jwks_url)
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

impl Config {
    pub fn from_vars(vars: &Vars) -> Result<Config, ConfigError> {
        let common = CommonConfig::from_vars(vars, READ_SECONDS)?;
        let credential = Credential::from_vars(vars, common.service.clone())?;
        let token_policy = TokenPolicy {
            issuer: vars.required("JWT_ISSUER")?,
            audience: vars.required("JWT_AUDIENCE")?,
            leeway_seconds: TOKEN_LEEWAY_SECONDS,
        };
        let (auth_url, auth_internal_url) = (
            vars.http_url("AUTH_URL")?,
            vars.http_url("AUTH_INTERNAL_URL")?,
        );
        let (core_internal_url, jwks_url) = (
            vars.http_url("CORE_INTERNAL_URL")?,
            vars.http_url("JWKS_URL")?,
        );
        let jwks_cache = kisum_common::config::seconds_within(
            vars,
            "JWKS_CACHE_SECONDS",
            Some(DEFAULT_JWKS_CACHE_SECONDS),
            1,
            kisum_common::jwt::MAX_JWKS_CACHE_SECONDS,
        )?;
        let jwks_cache_seconds = jwks_cache.as_secs();
        let digest = digest_with(
            &common,
            &[
                ("AUTH_URL", &auth_url),
                ("AUTH_INTERNAL_URL", &auth_internal_url),
                ("CORE_INTERNAL_URL", &core_internal_url),
                ("JWKS_URL", &jwks_url),
                ("JWKS_CACHE_SECONDS", &jwks_cache_seconds.to_string()),
                ("JWT_ISSUER", &token_policy.issuer),
                ("JWT_AUDIENCE", &token_policy.audience),
            ],
        );
        Ok(Config {
            database_url: vars.postgres_url("ADMIN_DB_URL")?,
            auth_url,
            auth_internal_url,
            core_internal_url,
            jwks_url,
            jwks_cache,
            token_policy,
            credential,
            diagnostics_callers: Allowlist::from_vars(vars)?,
            bootstrap_configured: vars
                .optional("ADMIN_BOOTSTRAP")?
                .is_some_and(|value| !value.trim().is_empty()),
            common,
            digest,
        })
    }
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
            ("INTERNAL_CREDENTIAL", "s3cr3t-credential-of-32-bytes-000"),
            (
                "INTERNAL_CALLER_KISUMCTL",
                "kisumctl-credential-of-32-bytes-0",
            ),
        ])
    }

    #[test]
    fn admin_presents_its_service_name_and_trims_urls() {
        let config = Config::from_vars(&vars()).unwrap();
        assert_eq!(config.credential.caller, "platform-admin");
        assert_eq!(config.auth_url, "https://auth.kisum.test");
        assert_eq!(config.diagnostics_callers.callers(), ["kisumctl"]);
        assert!(!config.bootstrap_configured);
        assert_eq!(config.jwks_cache, Duration::from_secs(300));
    }

    #[test]
    fn the_jwks_cache_lifetime_comes_from_the_matrix() {
        let mut vars = vars();
        vars.set("JWKS_CACHE_SECONDS", "5");
        let config = Config::from_vars(&vars).unwrap();
        assert_eq!(config.jwks_cache, Duration::from_secs(5));
        for absurd in ["0", "3601"] {
            vars.set("JWKS_CACHE_SECONDS", absurd);
            let error = Config::from_vars(&vars).unwrap_err().to_string();
            assert!(
                error.starts_with("JWKS_CACHE_SECONDS is invalid"),
                "{error}"
            );
        }
        vars.set("JWKS_CACHE_SECONDS", "5");
        vars.set("KISUM_ENVIRONMENT", "Staging");
        let error = Config::from_vars(&vars).unwrap_err();
        assert_eq!(error.variable(), "KISUM_ENVIRONMENT", "{error}");
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
