//! The module backend's configuration, read once at start.
//!
//! | variable | meaning |
//! |---|---|
//! | `MODULE_NAME` | basic, finance, market, touring, venue or ai |
//! | `KISUM_ENVIRONMENT` | environment name, for logs and metrics |
//! | `AUTH_JWKS_URL` | Auth's JWKS |
//! | `AUTH_INTERNAL_URL` | base URL of Auth's internal port |
//! | `JWT_ISSUER`, `JWT_AUDIENCE` | checked strictly in every token |
//! | `JWKS_CACHE_SECONDS` | how long fetched keys are used before a refresh |
//! | `JWKS_MIN_REFETCH_SECONDS` | least time between two fetches triggered by tokens (default 30) |
//! | `X_ORG_POLICY` | `required`: a request without `x-org` is refused |
//! | `ACCESS_CACHE_SECONDS` | how long an access context is reused (default 5; 0 = never; at most 60) |
//! | `DATABASE_URL` | the module's PostgreSQL (`postgres://`, `postgresql://`) or MongoDB (`mongodb://`, `mongodb+srv://`) URL, as its engine needs (the URL names the database) |
//! | `REDIS_URL` | optional; only basic looks at it |
//! | `INTERNAL_CREDENTIAL` | presented to Auth as caller `MODULE_NAME` |
//! | `INTERNAL_CALLER_<SERVICE>` | who may call this service's internal routes |
//! | `HEADER_READ_TIMEOUT_SECONDS`, `REQUEST_TIMEOUT_SECONDS`, `METRICS_ENABLED` | see `kisum_common::serve::ServerSettings` |
//!
//! Secrets may arrive as `<NAME>_FILE`.

use std::time::Duration;

use kisum_common::config::{self, ConfigError, Vars};
use kisum_common::internal::{Allowlist, Credential};
use kisum_common::jwt::TokenPolicy;
use kisum_common::serve::ServerSettings;

use crate::module::{Engine, Module};

/// Clock skew allowed on `exp` and `nbf`, as Auth's tokens are issued.
const CLOCK_SKEW_SECONDS: u64 = 60;
const DEFAULT_JWKS_MIN_REFETCH_SECONDS: u64 = 30;
const DEFAULT_ACCESS_CACHE_SECONDS: u64 = 5;
/// The longest `JWKS_CACHE_SECONDS` and `JWKS_MIN_REFETCH_SECONDS`: a key
/// rotation waits out the cache (0 would fetch the JWKS on every request).
pub const MAX_JWKS_SECONDS: u64 = kisum_common::jwt::MAX_JWKS_CACHE_SECONDS;
/// The longest `ACCESS_CACHE_SECONDS`: how late a revocation may reach a
/// module at worst.
pub const MAX_ACCESS_CACHE_SECONDS: u64 = 60;

#[derive(Clone)]
pub struct Config {
    pub module: Module,
    pub environment: String,
    pub auth_jwks_url: String,
    pub auth_internal_url: String,
    pub token_policy: TokenPolicy,
    pub jwks_cache: Duration,
    pub jwks_min_refetch: Duration,
    pub access_cache: Duration,
    pub database_url: String,
    pub redis_url: Option<String>,
    pub credential: Credential,
    pub allowlist: Allowlist,
    /// Timeouts and `/metrics`, shared by every service.
    pub server: ServerSettings,
    /// Digest of the non-secret settings, shown in diagnostics.
    pub digest: String,
}

impl std::fmt::Debug for Config {
    // URLs of databases carry passwords: they stay out of the output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("module", &self.module)
            .field("environment", &self.environment)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl Config {
    pub fn from_vars(vars: &Vars) -> Result<Config, ConfigError> {
        let module: Module = vars.parsed("MODULE_NAME")?;
        require_org_policy(vars)?;
        Ok(Config {
            module,
            environment: config::environment(vars, None)?,
            auth_jwks_url: vars.http_url("AUTH_JWKS_URL")?,
            auth_internal_url: vars.http_url("AUTH_INTERNAL_URL")?,
            token_policy: TokenPolicy {
                issuer: vars.required("JWT_ISSUER")?,
                audience: vars.required("JWT_AUDIENCE")?,
                leeway_seconds: CLOCK_SKEW_SECONDS,
            },
            jwks_cache: config::seconds_within(
                vars,
                "JWKS_CACHE_SECONDS",
                None,
                1,
                MAX_JWKS_SECONDS,
            )?,
            jwks_min_refetch: config::seconds_within(
                vars,
                "JWKS_MIN_REFETCH_SECONDS",
                Some(DEFAULT_JWKS_MIN_REFETCH_SECONDS),
                1,
                MAX_JWKS_SECONDS,
            )?,
            access_cache: Duration::from_secs(access_cache_seconds(vars)?),
            database_url: database_url(vars, module)?,
            redis_url: vars
                .optional("REDIS_URL")?
                .filter(|url| !url.trim().is_empty()),
            credential: Credential::from_vars(vars, module.name())?,
            allowlist: Allowlist::from_vars(vars)?,
            server: ServerSettings::from_vars(vars, module.read_timeout())?,
            digest: digest(vars),
        })
    }
}

/// Only `required` is defined: every request names its company.
fn require_org_policy(vars: &Vars) -> Result<(), ConfigError> {
    let policy = vars.required("X_ORG_POLICY")?;
    if policy.trim() == "required" {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        name: "X_ORG_POLICY".into(),
        reason: format!("`{policy}` is not supported; the module backends need `required`"),
    })
}

fn access_cache_seconds(vars: &Vars) -> Result<u64, ConfigError> {
    let value = vars.parsed_or("ACCESS_CACHE_SECONDS", DEFAULT_ACCESS_CACHE_SECONDS)?;
    if value <= MAX_ACCESS_CACHE_SECONDS {
        return Ok(value);
    }
    Err(ConfigError::Invalid {
        name: "ACCESS_CACHE_SECONDS".into(),
        reason: format!(
            "{value} is more than {MAX_ACCESS_CACHE_SECONDS}: a revocation would reach this module that late"
        ),
    })
}

/// `DATABASE_URL`, with the scheme the module's engine speaks: a MongoDB
/// URL for a PostgreSQL module (or the reverse) stops the start.
pub fn database_url(vars: &Vars, module: Module) -> Result<String, ConfigError> {
    let url = vars.required("DATABASE_URL")?;
    let schemes: &[&str] = match module.engine() {
        Engine::Postgres => &["postgres", "postgresql"],
        Engine::Mongo => &["mongodb", "mongodb+srv"],
    };
    let scheme = url.trim().split_once("://").map(|(scheme, _)| scheme);
    if scheme.is_some_and(|scheme| schemes.contains(&scheme)) {
        return Ok(url);
    }
    Err(ConfigError::Invalid {
        name: "DATABASE_URL".into(),
        reason: format!(
            "the {module} module keeps its data in {}: expected a {} URL, got `{}`",
            match module.engine() {
                Engine::Postgres => "PostgreSQL",
                Engine::Mongo => "MongoDB",
            },
            schemes
                .iter()
                .map(|scheme| format!("{scheme}://"))
                .collect::<Vec<_>>()
                .join(" or "),
            config::redact_userinfo(&url)
        ),
    })
}

fn digest(vars: &Vars) -> String {
    const NON_SECRET: [&str; 13] = [
        "MODULE_NAME",
        "KISUM_ENVIRONMENT",
        "AUTH_JWKS_URL",
        "AUTH_INTERNAL_URL",
        "JWT_ISSUER",
        "JWT_AUDIENCE",
        "JWKS_CACHE_SECONDS",
        "JWKS_MIN_REFETCH_SECONDS",
        "X_ORG_POLICY",
        "ACCESS_CACHE_SECONDS",
        "HEADER_READ_TIMEOUT_SECONDS",
        "REQUEST_TIMEOUT_SECONDS",
        "METRICS_ENABLED",
    ];
    let values: Vec<(&str, String)> = NON_SECRET
        .iter()
        .map(|name| {
            (
                *name,
                vars.optional(name).ok().flatten().unwrap_or_default(),
            )
        })
        .collect();
    config::digest(values.iter().map(|(name, value)| (*name, value.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars::from_pairs([
            ("MODULE_NAME", "finance"),
            ("KISUM_ENVIRONMENT", "test"),
            ("AUTH_JWKS_URL", "http://127.0.0.1:1/.well-known/jwks.json"),
            ("AUTH_INTERNAL_URL", "http://127.0.0.1:2/"),
            ("JWT_ISSUER", "https://auth.kisum.test"),
            ("JWT_AUDIENCE", "kisum-api"),
            ("JWKS_CACHE_SECONDS", "300"),
            ("X_ORG_POLICY", "required"),
            ("DATABASE_URL", "postgres://127.0.0.1:3/finance_db"),
            ("INTERNAL_CREDENTIAL", "s3cr3t-credential-of-32-bytes-000"),
            (
                "INTERNAL_CALLER_KISUMCTL",
                "kisumctl-credential-of-32-bytes-0",
            ),
        ])
    }

    #[test]
    fn the_base_variables_give_a_finance_backend_with_defaults() {
        let config = Config::from_vars(&vars()).unwrap();
        assert_eq!(config.module, Module::Finance);
        assert_eq!(config.auth_internal_url, "http://127.0.0.1:2");
        assert_eq!(config.jwks_min_refetch, Duration::from_secs(30));
        assert_eq!(config.access_cache, Duration::from_secs(5));
        assert_eq!(config.credential.caller, "finance");
        assert_eq!(config.allowlist.callers(), ["kisumctl"]);
        assert!(config.redis_url.is_none());
    }

    #[test]
    fn an_unknown_module_is_named() {
        let mut vars = vars();
        vars.set("MODULE_NAME", "payroll");
        let error = Config::from_vars(&vars).unwrap_err();
        assert!(error.to_string().contains("MODULE_NAME"), "{error}");
    }

    #[test]
    fn a_database_url_of_the_other_engine_is_refused_by_name() {
        for (module, url) in [
            (
                "finance",
                "mongodb://svc:dbS3cretPW@127.0.0.1:27017/finance_db",
            ),
            ("basic", "postgres://svc:dbS3cretPW@127.0.0.1:5432/basic_db"),
            ("venue", "127.0.0.1:5432/venue_db"),
        ] {
            let mut vars = vars();
            vars.set("MODULE_NAME", module);
            vars.set("DATABASE_URL", url);
            let error = Config::from_vars(&vars).unwrap_err().to_string();
            assert!(error.starts_with("DATABASE_URL is invalid"), "{error}");
            assert!(!error.contains("dbS3cretPW"), "{error}");
        }
        let mut vars = vars();
        vars.set("MODULE_NAME", "market");
        vars.set("DATABASE_URL", "mongodb://127.0.0.1:27017/market_db");
        Config::from_vars(&vars).unwrap();
        vars.set("MODULE_NAME", "ai");
        vars.set("DATABASE_URL", "postgresql://127.0.0.1/ai_db");
        Config::from_vars(&vars).unwrap();
    }

    #[test]
    fn the_access_cache_is_bounded() {
        let mut vars = vars();
        vars.set("ACCESS_CACHE_SECONDS", "61");
        let error = Config::from_vars(&vars).unwrap_err();
        assert_eq!(error.variable(), "ACCESS_CACHE_SECONDS", "{error}");
        for fine in ["0", "60"] {
            vars.set("ACCESS_CACHE_SECONDS", fine);
            Config::from_vars(&vars).unwrap();
        }
    }

    #[test]
    fn zero_or_absurd_key_caches_and_unknown_environments_are_refused_by_name() {
        for (name, value) in [
            ("JWKS_CACHE_SECONDS", "0"),
            ("JWKS_CACHE_SECONDS", "3601"),
            ("JWKS_MIN_REFETCH_SECONDS", "0"),
            ("JWKS_MIN_REFETCH_SECONDS", "86400"),
            ("KISUM_ENVIRONMENT", "prod"),
        ] {
            let mut vars = vars();
            vars.set(name, value);
            let error = Config::from_vars(&vars).unwrap_err();
            assert_eq!(error.variable(), name, "{value}: {error}");
        }
        let mut vars = vars();
        vars.set("JWKS_CACHE_SECONDS", "1");
        vars.set("JWKS_MIN_REFETCH_SECONDS", "1");
        let config = Config::from_vars(&vars).unwrap();
        assert_eq!(config.jwks_cache, Duration::from_secs(1));
    }

    #[test]
    fn an_optional_org_policy_is_refused() {
        let mut vars = vars();
        vars.set("X_ORG_POLICY", "optional");
        let error = Config::from_vars(&vars).unwrap_err();
        assert!(error.to_string().contains("X_ORG_POLICY"), "{error}");
    }

    #[test]
    fn the_debug_form_hides_urls_and_credentials() {
        let text = format!("{:?}", Config::from_vars(&vars()).unwrap());
        assert!(
            !text.contains("postgres://") && !text.contains("s3cr3t"),
            "{text}"
        );
    }
}
