//! Auth's configuration: the variables of `common-config` and of
//! `services.auth.config` in environments/base.yaml, plus the optional
//! `TRUSTED_PROXIES`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kisum_common::config::{ConfigError, Vars, digest};
use kisum_common::internal::{Allowlist, Credential};
use kisum_common::jwt::TokenPolicy;
use kisum_common::serve::ServerSettings;

use crate::client_ip::TrustedProxies;
use crate::reset::ResetSettings;

/// Clock skew accepted on `exp`/`nbf` (`tokens.clock-skew-seconds`).
pub const CLOCK_SKEW_SECONDS: u64 = 60;
/// Bounds of `ACCESS_TOKEN_TTL` and `REFRESH_TOKEN_TTL`, shared with
/// `kisumctl validate`.
pub use kisum_common::jwt::{ACCESS_TTL_SECONDS, MAX_REFRESH_TTL_SECONDS};
/// Bounds of `PASSWORD_RESET_TTL_SECONDS`: a minute to a day.
const RESET_TTL_SECONDS: (u64, u64) = (60, 24 * 3600);
/// `services.auth.timeouts.read-seconds`: the default request timeout.
const READ_SECONDS: Duration = Duration::from_secs(15);

/// Where the signing key set comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `JWT_KEY_SET_FILE`: watched and reloaded on change.
    File(PathBuf),
    /// `JWT_KEY_SET` given inline: loaded once.
    Inline(String),
}

#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    /// Attempts of one address per window.
    pub per_ip: u64,
    /// Failed attempts on one account per window before its backoff starts.
    pub per_email: u64,
    pub window: Duration,
    /// The longest one backoff of an account lasts.
    pub backoff_max: Duration,
}

/// `POST /auth/refresh` limits, per session and per client address.
#[derive(Debug, Clone, Copy)]
pub struct RefreshLimits {
    pub per_session: u64,
    pub per_ip: u64,
    pub window: Duration,
}

#[derive(Clone)]
pub struct Config {
    pub service: String,
    pub environment: String,
    pub http: SocketAddr,
    pub internal: SocketAddr,
    pub log_level: String,
    pub database_url: String,
    pub redis_url: String,
    pub policy: TokenPolicy,
    pub keys: KeySource,
    pub access_ttl: i64,
    pub refresh_ttl: i64,
    pub core_url: String,
    pub credential: Credential,
    pub allowlist: Allowlist,
    pub rate_limits: RateLimits,
    pub refresh_limits: RefreshLimits,
    pub password_reset: ResetSettings,
    pub trusted_proxies: TrustedProxies,
    pub server: ServerSettings,
    pub config_digest: String,
}

impl std::fmt::Debug for Config {
    // URLs may carry passwords: only the digest is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("service", &self.service)
            .field("environment", &self.environment)
            .field("http", &self.http)
            .field("internal", &self.internal)
            .field("config_digest", &self.config_digest)
            .finish_non_exhaustive()
    }
}

impl Config {
    pub fn from_vars(vars: &Vars) -> Result<Config, ConfigError> {
        kisum_common::config::service_ports(vars)?;
        let bind = kisum_common::command::bind_address(vars)?;
        let listen = |name: &str| -> Result<SocketAddr, ConfigError> {
            let port: u16 = vars.parsed(name)?;
            Ok(SocketAddr::new(bind, port))
        };
        let policy = TokenPolicy {
            issuer: vars.required("JWT_ISSUER")?,
            audience: vars.required("JWT_AUDIENCE")?,
            leeway_seconds: CLOCK_SKEW_SECONDS,
        };
        let (access_ttl, refresh_ttl) = token_lifetimes(vars)?;
        let rate_limits = RateLimits {
            per_ip: positive_or(vars, "LOGIN_RATE_LIMIT_PER_IP", 20)?,
            per_email: positive_or(vars, "LOGIN_RATE_LIMIT_PER_EMAIL", 5)?,
            window: Duration::from_secs(positive(
                "LOGIN_RATE_LIMIT_WINDOW_SECONDS",
                vars.parsed_or("LOGIN_RATE_LIMIT_WINDOW_SECONDS", 900)?,
            )?),
            backoff_max: Duration::from_secs(positive(
                "LOGIN_BACKOFF_MAX_SECONDS",
                vars.parsed_or("LOGIN_BACKOFF_MAX_SECONDS", 60)?,
            )?),
        };
        let refresh_limits = RefreshLimits {
            per_session: positive_or(vars, "REFRESH_RATE_LIMIT_PER_SESSION", 10)?,
            per_ip: positive_or(vars, "REFRESH_RATE_LIMIT_PER_IP", 120)?,
            window: Duration::from_secs(positive(
                "REFRESH_RATE_LIMIT_WINDOW_SECONDS",
                vars.parsed_or("REFRESH_RATE_LIMIT_WINDOW_SECONDS", 60)?,
            )?),
        };
        // A mailer URL needs the mailer's own credential.
        let mailer_url = match vars.optional("PASSWORD_RESET_MAILER_URL")? {
            Some(_) => Some(vars.http_url("PASSWORD_RESET_MAILER_URL")?),
            None => None,
        };
        let password_reset = ResetSettings {
            ttl: kisum_common::config::seconds_within(
                vars,
                "PASSWORD_RESET_TTL_SECONDS",
                Some(1800),
                RESET_TTL_SECONDS.0,
                RESET_TTL_SECONDS.1,
            )?,
            per_email: positive_or(vars, "PASSWORD_RESET_RATE_LIMIT_PER_EMAIL", 3)?,
            per_ip: positive_or(vars, "PASSWORD_RESET_RATE_LIMIT_PER_IP", 10)?,
            window: Duration::from_secs(positive(
                "PASSWORD_RESET_RATE_LIMIT_WINDOW_SECONDS",
                vars.parsed_or("PASSWORD_RESET_RATE_LIMIT_WINDOW_SECONDS", 3600)?,
            )?),
            mailer_credential: match &mailer_url {
                Some(_) => Some(Credential::new(
                    "auth",
                    vars.required("PASSWORD_RESET_MAILER_CREDENTIAL")?,
                )),
                None => None,
            },
            mailer_url,
        };
        let trusted_proxies = match vars.optional("TRUSTED_PROXIES")? {
            Some(list) => TrustedProxies::parse(&list).map_err(|reason| ConfigError::Invalid {
                name: "TRUSTED_PROXIES".into(),
                reason,
            })?,
            None => TrustedProxies::default(),
        };
        let core_url = vars.http_url("CORE_INTERNAL_URL")?;
        let server = ServerSettings::from_vars(vars, READ_SECONDS)?;
        let server_pairs = server.digest_pairs();
        let service = vars
            .optional("SERVICE_NAME")?
            .unwrap_or_else(|| "auth".into());
        let environment = kisum_common::config::environment(vars, Some("local"))?;
        let config_digest = digest([
            ("SERVICE_NAME", service.as_str()),
            ("KISUM_ENVIRONMENT", environment.as_str()),
            ("JWT_ISSUER", policy.issuer.as_str()),
            ("JWT_AUDIENCE", policy.audience.as_str()),
            ("ACCESS_TOKEN_TTL", &access_ttl.to_string()),
            ("REFRESH_TOKEN_TTL", &refresh_ttl.to_string()),
            ("CORE_INTERNAL_URL", core_url.as_str()),
            ("LOGIN_RATE_LIMIT_PER_IP", &rate_limits.per_ip.to_string()),
            (
                "LOGIN_RATE_LIMIT_PER_EMAIL",
                &rate_limits.per_email.to_string(),
            ),
            (
                "LOGIN_RATE_LIMIT_WINDOW_SECONDS",
                &rate_limits.window.as_secs().to_string(),
            ),
            (
                "LOGIN_BACKOFF_MAX_SECONDS",
                &rate_limits.backoff_max.as_secs().to_string(),
            ),
            (
                "REFRESH_RATE_LIMIT_PER_SESSION",
                &refresh_limits.per_session.to_string(),
            ),
            (
                "REFRESH_RATE_LIMIT_PER_IP",
                &refresh_limits.per_ip.to_string(),
            ),
            (
                "REFRESH_RATE_LIMIT_WINDOW_SECONDS",
                &refresh_limits.window.as_secs().to_string(),
            ),
            (
                "PASSWORD_RESET_TTL_SECONDS",
                &password_reset.ttl.as_secs().to_string(),
            ),
            (
                "PASSWORD_RESET_RATE_LIMIT_PER_EMAIL",
                &password_reset.per_email.to_string(),
            ),
            (
                "PASSWORD_RESET_RATE_LIMIT_PER_IP",
                &password_reset.per_ip.to_string(),
            ),
            (
                "PASSWORD_RESET_RATE_LIMIT_WINDOW_SECONDS",
                &password_reset.window.as_secs().to_string(),
            ),
            (
                "PASSWORD_RESET_MAILER_URL",
                password_reset.mailer_url.as_deref().unwrap_or(""),
            ),
            ("TRUSTED_PROXIES", &trusted_proxies.to_string()),
            (server_pairs[0].0, &server_pairs[0].1),
            (server_pairs[1].0, &server_pairs[1].1),
            (server_pairs[2].0, &server_pairs[2].1),
        ]);
        Ok(Config {
            http: listen("HTTP_PORT")?,
            internal: listen("INTERNAL_PORT")?,
            log_level: vars.optional("LOG_LEVEL")?.unwrap_or_else(|| "info".into()),
            database_url: vars.postgres_url("AUTH_DB_URL")?,
            redis_url: vars.required("REDIS_URL")?,
            keys: key_source(vars)?,
            access_ttl,
            refresh_ttl,
            core_url,
            credential: Credential::from_vars(vars, "auth")?,
            allowlist: Allowlist::from_vars(vars)?,
            policy,
            rate_limits,
            refresh_limits,
            password_reset,
            trusted_proxies,
            server,
            service,
            environment,
            config_digest,
        })
    }
}

/// `ACCESS_TOKEN_TTL` within [`ACCESS_TTL_SECONDS`], and
/// `REFRESH_TOKEN_TTL` longer than it (a refresh token that dies first
/// would end every session at the first expiry) and at most 90 days.
fn token_lifetimes(vars: &Vars) -> Result<(i64, i64), ConfigError> {
    let access: i64 = vars.parsed("ACCESS_TOKEN_TTL")?;
    let (min, max) = ACCESS_TTL_SECONDS;
    if !(min..=max).contains(&access) {
        return Err(ConfigError::Invalid {
            name: "ACCESS_TOKEN_TTL".into(),
            reason: format!("{access} s is outside {min} s to {max} s"),
        });
    }
    let refresh: i64 = vars.parsed("REFRESH_TOKEN_TTL")?;
    if refresh <= access || refresh > MAX_REFRESH_TTL_SECONDS {
        return Err(ConfigError::Invalid {
            name: "REFRESH_TOKEN_TTL".into(),
            reason: format!(
                "{refresh} s must be longer than ACCESS_TOKEN_TTL ({access} s) and at most \
                 {MAX_REFRESH_TTL_SECONDS} s (90 days)"
            ),
        });
    }
    Ok((access, refresh))
}

fn key_source(vars: &Vars) -> Result<KeySource, ConfigError> {
    if let Some(path) = vars.file_path("JWT_KEY_SET")? {
        return Ok(KeySource::File(PathBuf::from(path)));
    }
    vars.required("JWT_KEY_SET").map(KeySource::Inline)
}

/// An optional count of at least 1: a limit of 0 would refuse everything.
fn positive_or(vars: &Vars, name: &str, default: u64) -> Result<u64, ConfigError> {
    positive(name, vars.parsed_or(name, default)?)
}

fn positive<T: Default + PartialOrd + std::fmt::Display>(
    name: &str,
    value: T,
) -> Result<T, ConfigError> {
    if value > T::default() {
        Ok(value)
    } else {
        Err(ConfigError::Invalid {
            name: name.into(),
            reason: format!("must be positive, got {value}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAIRS: [(&str, &str); 12] = [
        ("HTTP_PORT", "8101"),
        ("INTERNAL_PORT", "9101"),
        ("AUTH_DB_URL", "postgres://auth@127.0.0.1/auth_db"),
        ("REDIS_URL", "redis://127.0.0.1/"),
        ("JWT_ISSUER", "https://auth.kisum.io"),
        ("JWT_AUDIENCE", "kisum-api"),
        ("JWT_KEY_SET_FILE", "/run/secrets/key-set.json"),
        ("ACCESS_TOKEN_TTL", "900"),
        ("REFRESH_TOKEN_TTL", "2592000"),
        ("CORE_INTERNAL_URL", "http://127.0.0.1:9102/"),
        ("INTERNAL_CREDENTIAL", "auth-credential-of-32-bytes-00000"),
        (
            "INTERNAL_CALLER_KISUMCTL",
            "kisumctl-credential-of-32-bytes-0",
        ),
    ];

    fn vars() -> Vars {
        Vars::from_pairs(PAIRS)
    }

    #[test]
    fn defaults_follow_base_yaml() {
        let config = Config::from_vars(&vars()).unwrap();
        assert_eq!(config.rate_limits.per_ip, 20);
        assert_eq!(config.rate_limits.per_email, 5);
        assert_eq!(config.rate_limits.window, Duration::from_secs(900));
        assert_eq!(config.rate_limits.backoff_max, Duration::from_secs(60));
        assert_eq!(config.core_url, "http://127.0.0.1:9102");
        assert!(matches!(config.keys, KeySource::File(_)));
        assert!(!format!("{config:?}").contains("postgres://"));
    }

    /// The variable `vars` stop the start on.
    fn refused(vars: &Vars) -> String {
        Config::from_vars(vars).unwrap_err().variable().to_string()
    }

    #[test]
    fn a_rate_limit_of_zero_is_refused_by_name() {
        for name in [
            "LOGIN_RATE_LIMIT_PER_IP",
            "LOGIN_RATE_LIMIT_PER_EMAIL",
            "REFRESH_RATE_LIMIT_PER_SESSION",
            "REFRESH_RATE_LIMIT_PER_IP",
            "PASSWORD_RESET_RATE_LIMIT_PER_EMAIL",
            "PASSWORD_RESET_RATE_LIMIT_PER_IP",
        ] {
            let mut vars = vars();
            vars.set(name, "0");
            assert_eq!(refused(&vars), name);
            vars.set(name, "1");
            Config::from_vars(&vars).unwrap();
        }
    }

    #[test]
    fn absurd_token_lifetimes_are_refused_by_name() {
        for (access, refresh, refused_by) in [
            ("0", "2592000", Some("ACCESS_TOKEN_TTL")),
            ("9", "2592000", Some("ACCESS_TOKEN_TTL")),
            ("3601", "2592000", Some("ACCESS_TOKEN_TTL")),
            ("86400", "2592000", Some("ACCESS_TOKEN_TTL")),
            ("900", "900", Some("REFRESH_TOKEN_TTL")),
            ("900", "600", Some("REFRESH_TOKEN_TTL")),
            ("900", "7776001", Some("REFRESH_TOKEN_TTL")),
            ("10", "11", None),
            ("3600", "7776000", None),
        ] {
            let mut vars = vars();
            vars.set("ACCESS_TOKEN_TTL", access);
            vars.set("REFRESH_TOKEN_TTL", refresh);
            match refused_by {
                Some(name) => assert_eq!(refused(&vars), name, "{access}/{refresh}"),
                None => {
                    let config = Config::from_vars(&vars).unwrap();
                    assert_eq!(config.access_ttl.to_string(), access);
                }
            }
        }
    }

    #[test]
    fn an_unknown_environment_and_an_absurd_reset_lifetime_are_refused_by_name() {
        let mut vars = vars();
        assert_eq!(Config::from_vars(&vars).unwrap().environment, "local");
        vars.set("KISUM_ENVIRONMENT", "prod");
        assert_eq!(refused(&vars), "KISUM_ENVIRONMENT");
        vars.set("KISUM_ENVIRONMENT", "production");
        assert_eq!(Config::from_vars(&vars).unwrap().environment, "production");
        for ttl in ["0", "59", "86401"] {
            vars.set("PASSWORD_RESET_TTL_SECONDS", ttl);
            assert_eq!(refused(&vars), "PASSWORD_RESET_TTL_SECONDS", "{ttl}");
        }
    }

    #[test]
    fn short_internal_credentials_and_doubled_variables_are_refused_by_name() {
        for (name, value) in [
            ("INTERNAL_CREDENTIAL", "c"),
            ("INTERNAL_CALLER_FINANCE", "f"),
            // Beside JWT_KEY_SET_FILE.
            ("JWT_KEY_SET", "{}"),
        ] {
            let mut vars = vars();
            vars.set(name, value);
            assert_eq!(refused(&vars), name);
        }
    }

    #[test]
    fn a_missing_key_set_is_named() {
        let pairs = PAIRS.iter().filter(|(name, _)| *name != "JWT_KEY_SET_FILE");
        let error = Config::from_vars(&Vars::from_pairs(pairs.copied())).unwrap_err();
        assert_eq!(
            error.to_string(),
            "JWT_KEY_SET is required but not set (nor JWT_KEY_SET_FILE)"
        );
    }

    #[test]
    fn a_bad_proxy_list_is_refused() {
        let mut vars = vars();
        vars.set("TRUSTED_PROXIES", "10.0.0.0/33");
        let error = Config::from_vars(&vars).unwrap_err();
        assert!(error.to_string().starts_with("TRUSTED_PROXIES is invalid"));
    }

    #[test]
    fn a_mailer_url_needs_the_mailers_own_credential() {
        let mut vars = vars();
        vars.set("PASSWORD_RESET_MAILER_URL", "http://127.0.0.1:9300");
        let error = Config::from_vars(&vars).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("PASSWORD_RESET_MAILER_CREDENTIAL"),
            "{error}"
        );
        vars.set("PASSWORD_RESET_MAILER_CREDENTIAL", "mailer-secret-value");
        let config = Config::from_vars(&vars).unwrap();
        assert!(!format!("{config:?}").contains("mailer-secret-value"));
        let credential = config.password_reset.mailer_credential.unwrap();
        assert_eq!(credential.caller, "auth");
    }
}
