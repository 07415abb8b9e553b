//! Typed configuration from environment variables (plan section 13.1).
//!
//! A variable `NAME` may instead be given as `NAME_FILE`, the path of a
//! file holding the value: that is how secrets reach a service (mounted
//! files, never values in the environment). A missing or malformed
//! critical value stops the service with a message naming the variable.

use std::collections::BTreeMap;
use std::str::FromStr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{name} is required but not set (nor {name}_FILE)")]
    Missing { name: String },
    #[error("{name} is invalid: {reason}")]
    Invalid { name: String, reason: String },
    #[error("{name}_FILE={path} cannot be read: {reason}")]
    File {
        name: String,
        path: String,
        reason: String,
    },
}

impl ConfigError {
    /// The variable the error is about.
    pub fn variable(&self) -> &str {
        match self {
            ConfigError::Missing { name }
            | ConfigError::Invalid { name, .. }
            | ConfigError::File { name, .. } => name,
        }
    }
}

/// The variables a service reads; built from the process environment or,
/// in tests, from a map.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    values: BTreeMap<String, String>,
}

impl Vars {
    pub fn from_env() -> Self {
        Vars {
            values: std::env::vars().collect(),
        }
    }

    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Vars {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.values.insert(name.into(), value.into());
    }

    /// `NAME`, else the trimmed content of the file `NAME_FILE` names;
    /// both at once is an error (which one would win is nowhere to see).
    pub fn optional(&self, name: &str) -> Result<Option<String>, ConfigError> {
        let path = self.file_path_of(name)?;
        if let Some(value) = self.values.get(name) {
            return Ok(Some(value.clone()));
        }
        let Some(path) = path else {
            return Ok(None);
        };
        std::fs::read_to_string(path)
            .map(|text| Some(text.trim_end_matches(['\n', '\r']).to_string()))
            .map_err(|error| ConfigError::File {
                name: name.to_string(),
                path: path.clone(),
                reason: error.to_string(),
            })
    }

    pub fn required(&self, name: &str) -> Result<String, ConfigError> {
        match self.optional(name)? {
            Some(value) if !value.trim().is_empty() => Ok(value),
            _ => Err(ConfigError::Missing {
                name: name.to_string(),
            }),
        }
    }

    /// A required PostgreSQL URL (`postgres://` or `postgresql://`): a
    /// malformed one stops the start here rather than at the first
    /// connection, its password masked.
    pub fn postgres_url(&self, name: &str) -> Result<String, ConfigError> {
        let url = self.required(name)?;
        let scheme = url.trim().split_once("://").map(|(scheme, _)| scheme);
        if matches!(scheme, Some("postgres" | "postgresql")) {
            return Ok(url);
        }
        let got = match scheme {
            Some(scheme) => format!("a {scheme}:// URL"),
            // Without `://` nothing tells a password apart: not shown.
            None => "a value that is no URL (not shown)".to_string(),
        };
        Err(ConfigError::Invalid {
            name: name.to_string(),
            reason: format!("expected a postgres:// or postgresql:// URL, got {got}"),
        })
    }

    /// A required value parsed as `T`.
    pub fn parsed<T>(&self, name: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        parse(name, &self.required(name)?)
    }

    /// An optional value parsed as `T`, or `default`.
    pub fn parsed_or<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.optional(name)? {
            Some(value) => parse(name, &value),
            None => Ok(default),
        }
    }

    /// A required http(s) URL with a host, without a trailing `/`.
    pub fn http_url(&self, name: &str) -> Result<String, ConfigError> {
        let url = self
            .required(name)?
            .trim()
            .trim_end_matches('/')
            .to_string();
        let parsed = reqwest::Url::parse(&url);
        let valid = parsed.as_ref().is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        });
        if valid {
            Ok(url)
        } else {
            Err(ConfigError::Invalid {
                name: name.to_string(),
                reason: format!(
                    "`{}` is not an http(s) URL with a host",
                    redact_userinfo(&url)
                ),
            })
        }
    }

    /// The path a `NAME_FILE` variable points at, when it is given that
    /// way; an error when `NAME` is set too.
    pub fn file_path(&self, name: &str) -> Result<Option<String>, ConfigError> {
        self.file_path_of(name).map(|path| path.cloned())
    }

    fn file_path_of(&self, name: &str) -> Result<Option<&String>, ConfigError> {
        let path = self.values.get(&format!("{name}_FILE"));
        if path.is_some() && self.values.contains_key(name) {
            return Err(ConfigError::Invalid {
                name: name.to_string(),
                reason: format!("set both as {name} and as {name}_FILE; give only one"),
            });
        }
        Ok(path)
    }

    /// The `SUFFIX`es of every `PREFIX<SUFFIX>` (or `PREFIX<SUFFIX>_FILE`)
    /// variable, sorted, without reading any value.
    pub fn suffixes(&self, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .values
            .keys()
            .filter_map(|key| key.strip_prefix(prefix))
            .map(|rest| rest.strip_suffix("_FILE").unwrap_or(rest).to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Every `PREFIX<SUFFIX>` variable (or `PREFIX<SUFFIX>_FILE`), by suffix.
    pub fn with_prefix(&self, prefix: &str) -> Result<BTreeMap<String, String>, ConfigError> {
        self.suffixes(prefix)
            .into_iter()
            .map(|suffix| {
                let value = self.required(&format!("{prefix}{suffix}"))?;
                Ok((suffix, value))
            })
            .collect()
    }
}

fn parse<T>(name: &str, value: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|error: T::Err| ConfigError::Invalid {
            name: name.to_string(),
            reason: format!("`{}` does not parse: {error}", value.trim()),
        })
}

/// The environments a service may run in: the matrix's four, and `test`,
/// which the services' own test suites use.
pub const ENVIRONMENTS: [&str; 5] = ["local", "dev", "staging", "production", "test"];

/// `KISUM_ENVIRONMENT`, one of [`ENVIRONMENTS`]; `default` when unset
/// (Auth's `local`), else required. Logs and metrics carry it, so a typo
/// would file a service's signals under an environment nobody watches.
pub fn environment(vars: &Vars, default: Option<&str>) -> Result<String, ConfigError> {
    const NAME: &str = "KISUM_ENVIRONMENT";
    let value = match (vars.optional(NAME)?, default) {
        (Some(value), _) => value,
        (None, Some(default)) => default.to_string(),
        (None, None) => vars.required(NAME)?,
    };
    if ENVIRONMENTS.contains(&value.trim()) {
        return Ok(value.trim().to_string());
    }
    Err(ConfigError::Invalid {
        name: NAME.into(),
        reason: format!(
            "`{}` is not an environment; expected one of {}",
            value.escape_debug(),
            ENVIRONMENTS.join(", ")
        ),
    })
}

/// A whole number of seconds within `min..=max` (`default` when unset):
/// a cache or timeout of 0, or of days, is a typo, not a setting.
pub fn seconds_within(
    vars: &Vars,
    name: &str,
    default: Option<u64>,
    min: u64,
    max: u64,
) -> Result<std::time::Duration, ConfigError> {
    let value: u64 = match default {
        Some(default) => vars.parsed_or(name, default)?,
        None => vars.parsed(name)?,
    };
    if (min..=max).contains(&value) {
        return Ok(std::time::Duration::from_secs(value));
    }
    Err(ConfigError::Invalid {
        name: name.into(),
        reason: format!("{value} s is outside {min} s to {max} s"),
    })
}

/// The settings every service has (`common-config` in
/// environments/base.yaml): who it is, where it listens, how it treats
/// slow clients and whether it exposes `/metrics`.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    /// `SERVICE_NAME`: also the caller name this service presents.
    pub service: String,
    /// `KISUM_ENVIRONMENT`.
    pub environment: String,
    pub http_port: u16,
    pub internal_port: u16,
    pub server: crate::serve::ServerSettings,
}

/// `HTTP_PORT` and `INTERNAL_PORT`, refused when they are the same fixed
/// port (the error names both variables). 0 binds a free port (the
/// services' tests use it; the `serving` event logs the port bound); two
/// equal fixed ports would only fail later, at bind, naming neither.
pub fn service_ports(vars: &Vars) -> Result<(u16, u16), ConfigError> {
    let http_port: u16 = vars.parsed("HTTP_PORT")?;
    let internal_port: u16 = vars.parsed("INTERNAL_PORT")?;
    if http_port != 0 && http_port == internal_port {
        return Err(ConfigError::Invalid {
            name: "INTERNAL_PORT".into(),
            reason: format!(
                "equals HTTP_PORT ({http_port}); public and internal routes need their own ports: \
                 set HTTP_PORT and INTERNAL_PORT to two different ports"
            ),
        });
    }
    Ok((http_port, internal_port))
}

impl CommonConfig {
    /// `default_request_timeout` is the service's `timeouts.read-seconds`.
    pub fn from_vars(
        vars: &Vars,
        default_request_timeout: std::time::Duration,
    ) -> Result<CommonConfig, ConfigError> {
        let service = vars.required("SERVICE_NAME")?;
        let environment = environment(vars, None)?;
        let (http_port, internal_port) = service_ports(vars)?;
        Ok(CommonConfig {
            service,
            environment,
            http_port,
            internal_port,
            server: crate::serve::ServerSettings::from_vars(vars, default_request_timeout)?,
        })
    }

    /// The public and internal ports.
    pub fn ports(&self) -> (u16, u16) {
        (self.http_port, self.internal_port)
    }

    /// These settings as `(variable, value)` pairs, for a digest.
    pub fn digest_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            ("SERVICE_NAME", self.service.clone()),
            ("KISUM_ENVIRONMENT", self.environment.clone()),
            ("HTTP_PORT", self.http_port.to_string()),
            ("INTERNAL_PORT", self.internal_port.to_string()),
        ];
        pairs.extend(self.server.digest_pairs());
        pairs
    }
}

/// A digest of the common settings followed by `pairs`.
pub fn digest_with(common: &CommonConfig, pairs: &[(&str, &str)]) -> String {
    let common = common.digest_pairs();
    let common = common.iter().map(|(name, value)| (*name, value.as_str()));
    digest(common.chain(pairs.iter().copied()))
}

/// A SHA-256 digest of the non-secret configuration, for diagnostics:
/// two instances with the same digest run the same configuration.
pub fn digest<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for (key, value) in pairs {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

/// `value` with the userinfo (`user:password@`) of a URL replaced by
/// `***@`, for error messages: a configuration error never echoes
/// credentials, even of a value that does not parse as a URL.
pub fn redact_userinfo(value: &str) -> String {
    let Some(start) = value.find("://").map(|i| i + 3) else {
        return value.to_string();
    };
    let rest = &value[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &value[..start], &rest[at..]),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_without_a_postgres_scheme_is_refused_without_its_value() {
        for (value, expected) in [
            ("notaurl:SuperSecretPw123@@", "no URL"),
            ("mysql://u:SuperSecretPw123@h/db", "a mysql:// URL"),
        ] {
            let vars = Vars::from_pairs([("CORE_DB_URL", value)]);
            let error = vars.postgres_url("CORE_DB_URL").unwrap_err().to_string();
            assert!(error.starts_with("CORE_DB_URL is invalid"), "{error}");
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains("SuperSecret"), "{error}");
        }
        let vars = Vars::from_pairs([("CORE_DB_URL", "postgresql://u:p@h/db")]);
        assert_eq!(
            vars.postgres_url("CORE_DB_URL").unwrap(),
            "postgresql://u:p@h/db"
        );
    }

    #[test]
    fn a_missing_required_variable_is_named() {
        let vars = Vars::default();
        let error = vars.required("AUTH_DB_URL").unwrap_err();
        assert_eq!(
            error.to_string(),
            "AUTH_DB_URL is required but not set (nor AUTH_DB_URL_FILE)"
        );
    }

    #[test]
    fn a_value_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("url");
        std::fs::write(&path, "postgres://x\n").unwrap();
        let vars = Vars::from_pairs([("AUTH_DB_URL_FILE", path.to_str().unwrap())]);
        assert_eq!(vars.required("AUTH_DB_URL").unwrap(), "postgres://x");
    }

    #[test]
    fn a_value_given_both_inline_and_as_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("url");
        std::fs::write(&path, "postgres://from-file\n").unwrap();
        let vars = Vars::from_pairs([
            ("AUTH_DB_URL", "postgres://inline"),
            ("AUTH_DB_URL_FILE", path.to_str().unwrap()),
        ]);
        for error in [
            vars.required("AUTH_DB_URL").unwrap_err(),
            vars.file_path("AUTH_DB_URL").unwrap_err(),
        ] {
            let error = error.to_string();
            assert!(error.starts_with("AUTH_DB_URL is invalid"), "{error}");
            assert!(error.contains("AUTH_DB_URL_FILE"), "{error}");
            assert!(!error.contains("postgres://"), "{error}");
        }
        let vars = Vars::from_pairs([
            ("INTERNAL_CALLER_AI", "a"),
            ("INTERNAL_CALLER_AI_FILE", "b"),
        ]);
        let error = vars.with_prefix("INTERNAL_CALLER_").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("INTERNAL_CALLER_AI is invalid")
        );
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_the_variable() {
        let vars = Vars::from_pairs([("X_FILE", "/nonexistent/kisum")]);
        let error = vars.optional("X").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("X_FILE=/nonexistent/kisum cannot be read")
        );
    }

    #[test]
    fn a_malformed_number_is_named() {
        let vars = Vars::from_pairs([("HTTP_PORT", "eighty")]);
        let error = vars.parsed::<u16>("HTTP_PORT").unwrap_err();
        assert!(matches!(error, ConfigError::Invalid { ref name, .. } if name == "HTTP_PORT"));
    }

    #[test]
    fn url_errors_never_echo_credentials() {
        let vars = Vars::from_pairs([
            ("CORE_INTERNAL_URL", "ftp://svc:coreS3cretPW@core:9102/x"),
            ("B", "http://svc:p%40ss@/path"),
        ]);
        for name in ["CORE_INTERNAL_URL", "B"] {
            let error = vars.http_url(name).unwrap_err().to_string();
            assert!(error.contains(name), "{error}");
            assert!(
                !error.contains("coreS3cretPW") && !error.contains("svc:"),
                "{error}"
            );
            assert!(error.contains("***@"), "{error}");
        }
        assert_eq!(redact_userinfo("no url"), "no url");
        assert_eq!(redact_userinfo("http://h/a@b"), "http://h/a@b");
    }

    #[test]
    fn urls_must_be_http_with_a_host() {
        let vars = Vars::from_pairs([
            ("A", "http://core:9102/"),
            ("B", "not-a-url"),
            ("C", "ftp://x"),
        ]);
        assert_eq!(vars.http_url("A").unwrap(), "http://core:9102");
        assert!(matches!(
            vars.http_url("B"),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(matches!(
            vars.http_url("C"),
            Err(ConfigError::Invalid { .. })
        ));
    }

    #[test]
    fn the_common_settings_are_read_once_for_every_service() {
        let vars = Vars::from_pairs([
            ("SERVICE_NAME", "platform-core"),
            ("KISUM_ENVIRONMENT", "dev"),
            ("HTTP_PORT", "8102"),
            ("INTERNAL_PORT", "9102"),
            ("METRICS_ENABLED", "false"),
        ]);
        let common = CommonConfig::from_vars(&vars, std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(common.ports(), (8102, 9102));
        assert_eq!(common.server.request_timeout.as_secs(), 10);
        assert!(!common.server.metrics_enabled);
        let other = CommonConfig {
            http_port: 8103,
            ..common.clone()
        };
        assert_ne!(digest_with(&common, &[]), digest_with(&other, &[]));
        let same = Vars::from_pairs([
            ("SERVICE_NAME", "platform-core"),
            ("KISUM_ENVIRONMENT", "dev"),
            ("HTTP_PORT", "8102"),
            ("INTERNAL_PORT", "8102"),
        ]);
        let error = CommonConfig::from_vars(&same, std::time::Duration::from_secs(1)).unwrap_err();
        assert_eq!(error.variable(), "INTERNAL_PORT", "{error}");
        let error = CommonConfig::from_vars(&Vars::default(), std::time::Duration::from_secs(1));
        assert_eq!(
            error.unwrap_err().to_string(),
            "SERVICE_NAME is required but not set (nor SERVICE_NAME_FILE)"
        );
    }

    #[test]
    fn an_unknown_environment_is_refused_by_name() {
        let vars = |value: &str| {
            Vars::from_pairs([
                ("SERVICE_NAME", "platform-core"),
                ("KISUM_ENVIRONMENT", value),
                ("HTTP_PORT", "8102"),
                ("INTERNAL_PORT", "9102"),
            ])
        };
        let timeout = std::time::Duration::from_secs(10);
        for name in ENVIRONMENTS {
            let common = CommonConfig::from_vars(&vars(name), timeout).unwrap();
            assert_eq!(common.environment, name);
        }
        for typo in ["prod", "Production", "stagging", " "] {
            let error = CommonConfig::from_vars(&vars(typo), timeout).unwrap_err();
            assert_eq!(error.variable(), "KISUM_ENVIRONMENT", "{typo}: {error}");
        }
        let error = environment(&vars("qa"), None).unwrap_err().to_string();
        assert!(
            error.contains("`qa`") && error.contains("local, dev"),
            "{error}"
        );
        assert_eq!(
            environment(&Vars::default(), Some("local")).unwrap(),
            "local"
        );
        assert!(environment(&Vars::default(), None).is_err());
    }

    #[test]
    fn seconds_outside_their_bounds_are_refused_by_name() {
        let vars = Vars::from_pairs([("CACHE", "0"), ("BIG", "86401"), ("FINE", "300")]);
        for name in ["CACHE", "BIG"] {
            let error = seconds_within(&vars, name, None, 1, 86_400).unwrap_err();
            assert_eq!(error.variable(), name);
        }
        let fine = seconds_within(&vars, "FINE", None, 1, 86_400).unwrap();
        assert_eq!(fine.as_secs(), 300);
        let default = seconds_within(&vars, "UNSET", Some(30), 1, 60).unwrap();
        assert_eq!(default.as_secs(), 30);
        assert!(seconds_within(&vars, "UNSET", None, 1, 60).is_err());
    }

    #[test]
    fn prefixed_variables_are_collected_by_suffix() {
        let vars = Vars::from_pairs([
            ("INTERNAL_CALLER_AUTH", "a"),
            ("INTERNAL_CALLER_PLATFORM_ADMIN", "b"),
            ("OTHER", "c"),
        ]);
        let callers = vars.with_prefix("INTERNAL_CALLER_").unwrap();
        assert_eq!(callers.len(), 2);
        assert_eq!(callers["PLATFORM_ADMIN"], "b");
    }
}
