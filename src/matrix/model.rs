//! The matrix after loading: references checked, and one environment's
//! view resolved from the base plus that environment's file.

use std::collections::BTreeMap;
use std::path::Path;

use super::load::{InputError, InputErrors, Loaded, Source, load_dir, printable, suggest};
use super::schema::{
    BaseFile, ConfigEntry, Database, DatabaseDeployment, Engine, EnvironmentFile, Resources,
    SecretBackend, Service,
};

/// The four environments every matrix must define.
pub const REQUIRED_ENVIRONMENTS: [&str; 4] = ["local", "dev", "staging", "production"];

/// The target name that stands for the platform's Redis in `egress`.
pub const REDIS: &str = "redis";

/// The Redis login of kisumctl's backups and restores.
pub const REDIS_ADMIN_SECRET: &str = "redis-admin-credentials";
/// The age identity that decrypts backups (key `identity`).
pub const BACKUP_IDENTITY_SECRET: &str = "backup-age-identity";

/// The administrative login of a database server of the matrix.
pub fn superuser_secret(cluster: &str) -> String {
    format!("{cluster}-superuser")
}

/// A loaded matrix whose cross references all resolve.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub loaded: Loaded,
}

impl Matrix {
    pub fn load(dir: &Path) -> Result<Matrix, InputErrors> {
        let loaded = load_dir(dir)?;
        let errors = check_references(&loaded);
        if !errors.is_empty() {
            return Err(InputErrors(errors));
        }
        let matrix = Matrix { loaded };
        let mut errors: Vec<InputError> = Vec::new();
        for name in matrix.environment_names() {
            for error in matrix
                .environment(name)
                .err()
                .map(|e| e.0)
                .unwrap_or_default()
            {
                // A broken base value breaks every environment the same way.
                let seen = errors.iter().any(|e| {
                    e.file == error.file && e.field == error.field && e.message == error.message
                });
                if !seen {
                    errors.push(error);
                }
            }
        }
        if errors.is_empty() {
            Ok(matrix)
        } else {
            Err(InputErrors(errors))
        }
    }

    pub fn base(&self) -> &BaseFile {
        &self.loaded.base
    }

    pub fn base_source(&self) -> &Source {
        &self.loaded.base_source
    }

    pub fn environment_names(&self) -> impl Iterator<Item = &str> {
        self.loaded.environments.keys().map(String::as_str)
    }

    /// The resolved view of one environment.
    pub fn environment(&self, name: &str) -> Result<Environment<'_>, InputErrors> {
        let Some((env_name, (file, source))) = self.loaded.environments.get_key_value(name) else {
            let known: Vec<&str> = self.environment_names().collect();
            return Err(InputErrors(vec![InputError {
                file: self.loaded.dir.join(format!("{name}.yaml")),
                position: None,
                field: String::new(),
                message: format!("no environment `{name}` in the matrix"),
                hint: suggest(name, &known)
                    .map(|best| format!("did you mean `{best}`?"))
                    .or_else(|| Some(format!("known environments: {}", known.join(", ")))),
            }]));
        };
        Environment::resolve(self, env_name, file, source)
    }
}

/// A configuration value as a service receives it in one environment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ConfigValue {
    Plain {
        value: String,
    },
    /// Injected from the secret named `secret` (inventory key), key `key`.
    Secret {
        secret: String,
        key: String,
    },
    /// Optional and not set in this environment.
    Unset,
}

#[derive(Debug, Clone)]
pub struct ResolvedService<'m> {
    pub id: &'m str,
    pub spec: &'m Service,
    pub host: String,
    pub replicas: u32,
    pub max_replicas: u32,
    pub resources: &'m Resources,
    pub image: String,
    pub config: BTreeMap<&'m str, ConfigValue>,
}

#[derive(Debug, Clone)]
pub struct ResolvedFrontend<'m> {
    pub id: &'m str,
    pub host: String,
}

/// One environment: base facts with this environment's values applied.
#[derive(Debug, Clone)]
pub struct Environment<'m> {
    pub name: &'m str,
    pub base: &'m BaseFile,
    pub file: &'m EnvironmentFile,
    pub source: &'m Source,
    pub base_source: &'m Source,
    pub services: BTreeMap<&'m str, ResolvedService<'m>>,
    pub frontends: BTreeMap<&'m str, ResolvedFrontend<'m>>,
}

/// `<registry>/<image>:<tag>`, `@sha256:...` for a digest, `:latest`
/// without a tag.
pub fn image_reference(registry: &str, image: &str, tag: Option<&String>) -> String {
    match tag {
        Some(tag) if tag.starts_with("sha256:") => format!("{registry}/{image}@{tag}"),
        Some(tag) => format!("{registry}/{image}:{tag}"),
        None => format!("{registry}/{image}:latest"),
    }
}

impl<'m> Environment<'m> {
    fn resolve(
        matrix: &'m Matrix,
        name: &'m str,
        file: &'m EnvironmentFile,
        source: &'m Source,
    ) -> Result<Self, InputErrors> {
        let base = matrix.base();
        let mut errors = Vec::new();
        let mut hosts = BTreeMap::new();
        let services = base.services.iter().map(|(id, s)| {
            let explicit = file.services.get(id).and_then(|o| o.host.clone());
            ("services", id, &s.host, &s.zone, explicit)
        });
        let frontends = base.frontends.iter().map(|(id, f)| {
            let explicit = file.frontends.get(id).and_then(|o| o.host.clone());
            ("frontends", id, &f.host, &f.zone, explicit)
        });
        for (kind, id, production_host, zone, explicit) in services.chain(frontends) {
            let path = format!("{kind}.{id}.host");
            let origin = if explicit.is_some() {
                source
            } else {
                matrix.base_source()
            };
            let host = match explicit {
                Some(host) => check_override(base, file, host, zone),
                None => derive_host(base, file, production_host, zone),
            };
            match host {
                Ok(host) => {
                    hosts.insert(id.as_str(), host);
                }
                Err(message) => errors.push(error_at(origin, &path, message)),
            }
        }
        if !errors.is_empty() {
            return Err(InputErrors(errors));
        }

        let shared = template_context(base, file, name, &hosts);
        let mut services = BTreeMap::new();
        for (id, spec) in &base.services {
            let local = file.services.get(id).cloned().unwrap_or_default();
            let mut context = shared.clone();
            context.insert("service", id);
            context.insert("ports", &spec.ports);
            let mut config = BTreeMap::new();
            let entries = base.common_config.iter().chain(&spec.config);
            for (key, entry) in entries {
                // Where the value is written: the environment's override,
                // the service's entry or the common one.
                let origin = || {
                    if local.config.contains_key(key) {
                        (source, format!("services.{id}.config.{key}"))
                    } else if spec.config.contains_key(key) {
                        (
                            matrix.base_source(),
                            format!("services.{id}.config.{key}.value"),
                        )
                    } else {
                        (matrix.base_source(), format!("common-config.{key}.value"))
                    }
                };
                let checked =
                    resolve_config(key, entry, local.config.get(key), &context).and_then(|value| {
                        match log_setting_error(key, &value)
                            .or_else(|| seconds_setting_error(key, &value))
                        {
                            Some(message) => Err(message),
                            None => Ok(value),
                        }
                    });
                let value = match checked {
                    Ok(value) => value,
                    Err(message) => {
                        let (source, field) = origin();
                        errors.push(error_at(source, &field, message));
                        continue;
                    }
                };
                config.insert(key.as_str(), value);
            }
            let tag = local.image_tag.as_ref().or(file.image_tag.as_ref());
            let image = image_reference(&base.platform.image_registry, &spec.image, tag);
            services.insert(
                id.as_str(),
                ResolvedService {
                    id,
                    spec,
                    host: hosts[id.as_str()].clone(),
                    replicas: local
                        .replicas
                        .or(file.scale.map(|scale| scale.replicas))
                        .unwrap_or(spec.replicas),
                    max_replicas: local
                        .max_replicas
                        .or(file.scale.map(|scale| scale.max_replicas))
                        .unwrap_or(spec.max_replicas),
                    resources: file
                        .services
                        .get(id)
                        .and_then(|o| o.resources.as_ref())
                        .unwrap_or(&spec.resources),
                    image,
                    config,
                },
            );
        }
        if !errors.is_empty() {
            return Err(InputErrors(errors));
        }
        let frontends = base
            .frontends
            .keys()
            .map(|id| {
                let host = hosts[id.as_str()].clone();
                (id.as_str(), ResolvedFrontend { id, host })
            })
            .collect();
        Ok(Environment {
            name,
            base,
            file,
            source,
            base_source: matrix.base_source(),
            services,
            frontends,
        })
    }

    pub fn is_production(&self) -> bool {
        self.file.tier == super::schema::Tier::Production
    }

    /// Databases whose engine is decided, with their deployment here.
    pub fn deployed_databases(
        &self,
    ) -> impl Iterator<Item = (&'m str, &'m Database, Option<&'m DatabaseDeployment>)> {
        let file = self.file;
        self.base
            .databases
            .iter()
            .filter(|(_, db)| db.engine != Engine::Undecided)
            .map(move |(id, db)| (id.as_str(), db, file.databases.get(id)))
    }

    /// Where a secret of the inventory lives in this environment.
    pub fn secret_location(&self, secret: &str) -> String {
        match &self.file.secrets {
            SecretBackend::LocalFiles { path } => {
                format!("file:{}/{secret}", super::rules::normal_path(path))
            }
            SecretBackend::AwsSecretsManager {
                account,
                region,
                prefix,
                ..
            } => format!("aws:{account}:{region}:{prefix}{secret}"),
        }
    }

    /// Every public host name of this environment: services and frontends.
    pub fn public_hosts(&self) -> Vec<(String, &'m str)> {
        let mut hosts: Vec<(String, &str)> = self
            .services
            .values()
            .filter(|s| s.spec.exposure == super::schema::Exposure::Public)
            .map(|s| (s.host.clone(), s.id))
            .chain(self.frontends.values().map(|f| (f.host.clone(), f.id)))
            .collect();
        hosts.sort();
        hosts
    }

    /// Locates a field: in the environment file when written there,
    /// otherwise in the base file.
    pub fn locate(&self, field: &str) -> (&'m Source, Option<super::index::Position>) {
        if self.source.has(field) {
            (self.source, self.source.locate(field))
        } else {
            (self.base_source, self.base_source.locate(field))
        }
    }
}

/// A host written in an environment file must still be inside the zone's
/// domain as this environment sees it.
fn check_override(
    base: &BaseFile,
    file: &EnvironmentFile,
    host: String,
    zone: &str,
) -> Result<String, String> {
    let domain = &base.dns.zones[zone].domain;
    let domain = file.dns.domain_overrides.get(zone).unwrap_or(domain);
    if host.ends_with(&format!(".{domain}")) {
        Ok(host)
    } else {
        Err(format!(
            "host `{host}` is not inside its zone `{zone}` ({domain})"
        ))
    }
}

/// `auth.kisum.io` in zone `kisum.io`, suffix `-staging`: `auth-staging.kisum.io`.
fn derive_host(
    base: &BaseFile,
    file: &EnvironmentFile,
    production_host: &str,
    zone: &str,
) -> Result<String, String> {
    let domain = &base.dns.zones[zone].domain;
    let Some(label) = production_host.strip_suffix(&format!(".{domain}")) else {
        return Err(format!(
            "host `{production_host}` is not inside its zone `{zone}` ({domain})"
        ));
    };
    let (first, rest) = match label.split_once('.') {
        Some((first, rest)) => (first, format!(".{rest}")),
        None => (label, String::new()),
    };
    let domain = file.dns.domain_overrides.get(zone).unwrap_or(domain);
    Ok(format!("{first}{}{rest}.{domain}", file.dns.host_suffix))
}

fn template_context(
    base: &BaseFile,
    file: &EnvironmentFile,
    name: &str,
    hosts: &BTreeMap<&str, String>,
) -> tera::Context {
    let mut context = tera::Context::new();
    context.insert("environment", name);
    context.insert("namespace", &file.namespace);
    context.insert("hosts", hosts);
    context.insert("tokens", &base.tokens);
    let urls: BTreeMap<&str, String> = base
        .services
        .iter()
        .map(|(id, s)| {
            let url = format!("http://{id}.{}.svc:{}", file.namespace, s.ports.http);
            (id.as_str(), url)
        })
        .collect();
    let internal_urls: BTreeMap<&str, String> = base
        .services
        .iter()
        .map(|(id, s)| {
            let url = format!("http://{id}.{}.svc:{}", file.namespace, s.ports.internal);
            (id.as_str(), url)
        })
        .collect();
    context.insert("urls", &urls);
    context.insert("internal_urls", &internal_urls);
    context
}

fn resolve_config(
    variable: &str,
    entry: &ConfigEntry,
    local: Option<&String>,
    context: &tera::Context,
) -> Result<ConfigValue, String> {
    if let Some(secret) = &entry.secret {
        return Ok(ConfigValue::Secret {
            secret: secret.clone(),
            key: entry
                .secret_key
                .clone()
                .unwrap_or_else(|| variable.to_string()),
        });
    }
    let Some(template) = local.or(entry.value.as_ref()) else {
        return Ok(ConfigValue::Unset);
    };
    let tera = tera::Tera::default();
    tera.render_str(template, context, false)
        .map(|value| ConfigValue::Plain { value })
        .map_err(|error| {
            let detail = error.to_string().replace("__tera_one_off", "value");
            format!("cannot expand the value template `{template}`: {detail}")
        })
}

/// The services' settings in seconds that they refuse at start outside
/// these bounds (kisum-common's constants, as the services use them).
/// `REFRESH_TOKEN_TTL` must also be longer than `ACCESS_TOKEN_TTL`, which
/// `tokens` of base.yaml is checked for.
fn seconds_bounds(key: &str) -> Option<(u64, u64)> {
    use kisum_common::jwt::{ACCESS_TTL_SECONDS, MAX_JWKS_CACHE_SECONDS, MAX_REFRESH_TTL_SECONDS};
    let (access_min, access_max) = ACCESS_TTL_SECONDS;
    let unsigned = |n: i64| u64::try_from(n).unwrap_or(0);
    match key {
        "ACCESS_TOKEN_TTL" => Some((unsigned(access_min), unsigned(access_max))),
        "REFRESH_TOKEN_TTL" => Some((1, unsigned(MAX_REFRESH_TTL_SECONDS))),
        "JWKS_CACHE_SECONDS" | "JWKS_MIN_REFETCH_SECONDS" => Some((1, MAX_JWKS_CACHE_SECONDS)),
        "HEADER_READ_TIMEOUT_SECONDS" | "REQUEST_TIMEOUT_SECONDS" => {
            Some((1, kisum_common::serve::MAX_TIMEOUT_SECONDS))
        }
        _ => None,
    }
}

/// A value of one of [`seconds_bounds`]'s settings, checked as the
/// services check it at start (kisum-common's `seconds_within`).
fn seconds_setting_error(key: &str, value: &ConfigValue) -> Option<String> {
    let ConfigValue::Plain { value } = value else {
        return None;
    };
    let (min, max) = seconds_bounds(key)?;
    let vars = kisum_common::config::Vars::from_pairs([(key, value.as_str())]);
    match kisum_common::config::seconds_within(&vars, key, None, min, max) {
        Ok(_) => None,
        Err(kisum_common::config::ConfigError::Invalid { reason, .. }) => {
            Some(format!("{key}: {reason}"))
        }
        Err(error) => Some(error.to_string()),
    }
}

/// `LOG_LEVEL` and `LOG_FORMAT` are checked as the services check them at
/// start (kisum-common's `LogSettings`): a value they would refuse is an
/// input error here, not a service that exits at deploy time.
fn log_setting_error(key: &str, value: &ConfigValue) -> Option<String> {
    let ConfigValue::Plain { value } = value else {
        return None;
    };
    if key != "LOG_LEVEL" && key != "LOG_FORMAT" {
        return None;
    }
    let vars = kisum_common::config::Vars::from_pairs([(key, value.as_str())]);
    match kisum_common::telemetry::LogSettings::from_vars(&vars) {
        Ok(_) => None,
        Err(kisum_common::config::ConfigError::Invalid { reason, .. }) => Some(reason),
        Err(error) => Some(error.to_string()),
    }
}

fn error_at(source: &Source, field: &str, message: String) -> InputError {
    InputError {
        file: source.path.clone(),
        position: source.locate(field),
        field: field.to_string(),
        message,
        hint: None,
    }
}

/// Every name a reference points at must exist; reported with a hint.
fn check_references(loaded: &Loaded) -> Vec<InputError> {
    let base = &loaded.base;
    let src = &loaded.base_source;
    let mut errors = Vec::new();
    let services: Vec<&str> = base.services.keys().map(String::as_str).collect();
    let databases: Vec<&str> = base.databases.keys().map(String::as_str).collect();
    let secrets: Vec<&str> = base.secrets.keys().map(String::as_str).collect();
    let zones: Vec<&str> = base.dns.zones.keys().map(String::as_str).collect();
    let frontends: Vec<&str> = base.frontends.keys().map(String::as_str).collect();
    let targets: Vec<&str> = services
        .iter()
        .chain(&databases)
        .copied()
        .chain(std::iter::once(REDIS))
        .chain(base.externals.keys().map(String::as_str))
        .collect();
    let mut check = |source: &Source, field: String, name: &str, kind: &str, known: &[&str]| {
        if known.contains(&name) {
            return;
        }
        errors.push(InputError {
            file: source.path.clone(),
            position: source.locate(&field),
            message: format!("unknown {kind} `{name}`"),
            hint: suggest(name, known).map(|best| format!("did you mean `{best}`?")),
            field,
        });
    };

    for (id, service) in &base.services {
        check(
            src,
            format!("services.{id}.zone"),
            &service.zone,
            "zone",
            &zones,
        );
        if let Some(db) = &service.database {
            check(
                src,
                format!("services.{id}.database"),
                db,
                "database",
                &databases,
            );
        }
        for (n, target) in service.egress.iter().enumerate() {
            check(
                src,
                format!("services.{id}.egress.{n}"),
                target,
                "egress target",
                &targets,
            );
        }
        for (key, entry) in &service.config {
            let field = format!("services.{id}.config.{key}");
            if let Some(secret) = &entry.secret {
                check(src, format!("{field}.secret"), secret, "secret", &secrets);
            }
        }
    }
    for (key, entry) in &base.common_config {
        if let Some(secret) = &entry.secret {
            let field = format!("common-config.{key}.secret");
            check(src, field, secret, "secret", &secrets);
        }
    }
    let entries = base
        .common_config
        .iter()
        .map(|(k, e)| (format!("common-config.{k}"), k, e))
        .chain(base.services.iter().flat_map(|(id, service)| {
            service
                .config
                .iter()
                .map(move |(k, e)| (format!("services.{id}.config.{k}"), k, e))
        }));
    for (field, key, entry) in entries {
        let Some(secret) = entry.secret.as_ref().and_then(|s| base.secrets.get(s)) else {
            continue;
        };
        let item = entry.secret_key.as_deref().unwrap_or(key);
        let keys: Vec<&str> = secret.keys.iter().map(String::as_str).collect();
        let field = format!("{field}.secret-key");
        check(src, field, item, "key of that secret", &keys);
    }
    for (id, frontend) in &base.frontends {
        check(
            src,
            format!("frontends.{id}.zone"),
            &frontend.zone,
            "zone",
            &zones,
        );
        for (n, callee) in frontend.calls.iter().enumerate() {
            check(
                src,
                format!("frontends.{id}.calls.{n}"),
                callee,
                "service",
                &services,
            );
        }
    }
    for (caller, allowed) in &base.traffic {
        check(
            src,
            format!("traffic.{caller}"),
            caller,
            "service",
            &services,
        );
        for (n, target) in allowed.iter().enumerate() {
            check(
                src,
                format!("traffic.{caller}.{n}"),
                target,
                "traffic target",
                &targets,
            );
        }
    }
    for (id, db) in &base.databases {
        check(
            src,
            format!("databases.{id}.owner"),
            &db.owner,
            "service",
            &services,
        );
        check(
            src,
            format!("databases.{id}.credentials"),
            &db.credentials,
            "secret",
            &secrets,
        );
        if let Some(secret) = &db.migration_credentials {
            let field = format!("databases.{id}.migration-credentials");
            check(src, field, secret, "secret", &secrets);
        }
    }
    for (id, family) in &base.redis.key_families {
        let field = format!("redis.key-families.{id}.owner");
        check(src, field, &family.owner, "service", &services);
    }
    let verifiers: Vec<&str> = targets.clone();
    for (id, secret) in &base.secrets {
        for (n, verifier) in secret.verified_by.iter().enumerate() {
            let field = format!("secrets.{id}.verified-by.{n}");
            check(src, field, verifier, "service or database", &verifiers);
        }
    }
    for (env, (file, source)) in &loaded.environments {
        let _ = env;
        for (id, local) in &file.services {
            check(source, format!("services.{id}"), id, "service", &services);
            let Some(service) = base.services.get(id) else {
                continue;
            };
            let keys: Vec<&str> = base
                .common_config
                .keys()
                .chain(service.config.keys())
                .map(String::as_str)
                .collect();
            for key in local.config.keys() {
                let field = format!("services.{id}.config.{key}");
                check(source, field, key, "config key", &keys);
            }
        }
        for id in file.frontends.keys() {
            check(
                source,
                format!("frontends.{id}"),
                id,
                "frontend",
                &frontends,
            );
        }
        for id in file.databases.keys() {
            check(
                source,
                format!("databases.{id}"),
                id,
                "database",
                &databases,
            );
        }
        for zone in file.dns.domain_overrides.keys() {
            check(
                source,
                format!("dns.domain-overrides.{zone}"),
                zone,
                "zone",
                &zones,
            );
        }
    }
    errors.extend(config_entry_shape(loaded));
    errors.extend(value_shapes(loaded));
    errors.extend(super::provisioning::check(loaded));
    errors.extend(local_paths(loaded));
    errors.extend(local_ports(loaded));
    errors.extend(kubernetes_targets(loaded));
    errors.extend(token_lifetimes(loaded));
    errors.extend(operations(loaded));
    errors.extend(schema_levels(loaded));
    errors
}

/// `tokens` of base.yaml within what the services accept at start
/// (kisum-common's bounds): Auth's access-token lifetime, a refresh
/// token outliving it by at most 90 days, and the backends' JWKS cache.
fn token_lifetimes(loaded: &Loaded) -> Vec<InputError> {
    use kisum_common::jwt::{ACCESS_TTL_SECONDS, MAX_JWKS_CACHE_SECONDS, MAX_REFRESH_TTL_SECONDS};
    let tokens = &loaded.base.tokens;
    let src = &loaded.base_source;
    let mut errors = Vec::new();
    let (min, max) = ACCESS_TTL_SECONDS;
    let access = i64::from(tokens.access_ttl_seconds);
    if !(min..=max).contains(&access) {
        let message =
            format!("{access} is not between {min} and {max} seconds (Auth's ACCESS_TOKEN_TTL)");
        errors.push(error_at(src, "tokens.access-ttl-seconds", message));
    }
    let refresh = i64::from(tokens.refresh_ttl_seconds);
    if refresh <= access || refresh > MAX_REFRESH_TTL_SECONDS {
        let message = format!(
            "{refresh} must be longer than access-ttl-seconds ({access}) and at most \
             {MAX_REFRESH_TTL_SECONDS} seconds, 90 days (Auth's REFRESH_TOKEN_TTL)"
        );
        errors.push(error_at(src, "tokens.refresh-ttl-seconds", message));
    }
    let cache = u64::from(tokens.jwks_cache_seconds);
    if !(1..=MAX_JWKS_CACHE_SECONDS).contains(&cache) {
        let message = format!(
            "{cache} is not between 1 and {MAX_JWKS_CACHE_SECONDS} seconds (the backends' \
             JWKS_CACHE_SECONDS)"
        );
        errors.push(error_at(src, "tokens.jwks-cache-seconds", message));
    }
    errors
}

/// The longest wait for one rollout that an environment may set.
const MAX_ROLLOUT_SECONDS: u32 = 3600;

/// Each environment's `kubernetes` block: timeouts of at least a second
/// and at most an hour, for services that exist; a history of 1 to 100
/// releases; paths without control characters.
fn kubernetes_targets(loaded: &Loaded) -> Vec<InputError> {
    let mut errors = Vec::new();
    let timeout_problem = |seconds: u32| {
        (seconds == 0 || seconds > MAX_ROLLOUT_SECONDS)
            .then(|| format!("{seconds} is not between 1 and {MAX_ROLLOUT_SECONDS} seconds"))
    };
    for (file, source) in loaded.environments.values() {
        let target = &file.kubernetes;
        let mut bad =
            |field: String, message: String| errors.push(error_at(source, &field, message));
        if let Some(message) = timeout_problem(target.rollout_timeout_seconds) {
            bad("kubernetes.rollout-timeout-seconds".into(), message);
        }
        for (service, seconds) in &target.rollout_timeouts {
            let field = format!("kubernetes.rollout-timeouts.{service}");
            if !loaded.base.services.contains_key(service) {
                bad(field, format!("`{service}` is not a service of base.yaml"));
            } else if let Some(message) = timeout_problem(*seconds) {
                bad(field, message);
            }
        }
        if !(1..=100).contains(&target.history_limit) {
            let message = format!("{} is not between 1 and 100 releases", target.history_limit);
            bad("kubernetes.history-limit".into(), message);
        }
        let paths = [
            ("kubernetes.kubeconfig", &target.kubeconfig),
            ("kubernetes.smoke-endpoints", &target.smoke_endpoints),
        ];
        for (field, path) in paths {
            if path
                .as_deref()
                .is_some_and(|p| p.is_empty() || p.chars().any(char::is_control))
            {
                bad(
                    field.into(),
                    "is empty or contains a control character".into(),
                );
            }
        }
    }
    errors
}

/// The longest an operations Job may be waited for: a day.
const MAX_OPERATION_SECONDS: u32 = 86_400;

/// Each environment's `operations` block: a host name with `runner: host`
/// (and none of the Job's settings), a valid image tag, ServiceAccount
/// and timeout with `runner: job`; `local` has no private network.
fn operations(loaded: &Loaded) -> Vec<InputError> {
    use super::schema::Runner;
    use super::syntax::is_host_name;
    let mut errors = Vec::new();
    for (name, (file, source)) in &loaded.environments {
        let Some(operations) = &file.operations else {
            continue;
        };
        let mut bad = |field: &str, message: String| errors.push(error_at(source, field, message));
        if name == "local" {
            bad(
                "operations",
                "`local` runs its databases on this machine: leave `operations` out".into(),
            );
            continue;
        }
        if operations.image_tag.is_some() {
            bad(
                "operations.image-tag",
                "is no longer read: operation Jobs and CronJobs run one kisumctl image, `kisumctl.image` of base.yaml tagged with this file's `image-tag`; remove it (and set `image-tag` for another tag)".into(),
            );
        }
        if operations.service_account.is_some() {
            bad(
                "operations.service-account",
                "is no longer read: operation Jobs and CronJobs run under one ServiceAccount, `kisumctl.service-account` of base.yaml; remove it (and name the account there)".into(),
            );
        }
        match operations.runner {
            Runner::Host => {
                match &operations.host {
                    None => bad(
                        "operations.runner",
                        "`runner: host` needs `operations.host`, the machine with access to the private network".into(),
                    ),
                    Some(host) if !is_host_name(host) => bad(
                        "operations.host",
                        format!("`{}` is not a host name", printable(host)),
                    ),
                    Some(_) => {}
                }
            }
            Runner::Job => {
                if operations.host.is_some() {
                    bad(
                        "operations.host",
                        "is for `runner: host`; with `runner: job` the commands run in the cluster"
                            .into(),
                    );
                }
                let seconds = operations.job_timeout_seconds;
                if seconds == 0 || seconds > MAX_OPERATION_SECONDS {
                    bad(
                        "operations.job-timeout-seconds",
                        format!("{seconds} is not between 1 and {MAX_OPERATION_SECONDS} seconds"),
                    );
                }
            }
        }
    }
    errors
}

/// `schema-levels` of base.yaml: services with a database, and an oldest
/// level no newer than the level.
fn schema_levels(loaded: &Loaded) -> Vec<InputError> {
    let source = &loaded.base_source;
    let mut errors = Vec::new();
    for (service, schema) in &loaded.base.schema_levels {
        let field = format!("schema-levels.{service}");
        match loaded.base.services.get(service) {
            None => errors.push(error_at(
                source,
                &field,
                format!("`{service}` is not a service"),
            )),
            Some(spec) if spec.database.is_none() => errors.push(error_at(
                source,
                &field,
                format!("`{service}` has no database, so no schema level"),
            )),
            Some(_) if schema.oldest > schema.level => errors.push(error_at(
                source,
                &format!("{field}.oldest"),
                format!(
                    "{} is newer than the level {} this release migrates to",
                    schema.oldest, schema.level
                ),
            )),
            Some(_) => {
                if let Some(message) = unknown_level(loaded, service, schema.level) {
                    errors.push(error_at(source, &format!("{field}.level"), message));
                }
            }
        }
    }
    errors
}

/// Why `level` is not a migration version of `service`'s database: the
/// versions of the migration files in its `databases.<id>.migrations`
/// directory. `None` when it is one, or when that directory is not at hand
/// (a matrix copied without the services' sources, as in kisumctl's
/// image): there is nothing to check it against then.
fn unknown_level(loaded: &Loaded, service: &str, level: u32) -> Option<String> {
    let database = loaded
        .base
        .databases
        .values()
        .find(|d| d.owner == service && d.migrations.is_some())?;
    let relative = database.migrations.as_deref()?;
    let root = loaded.dir.parent().unwrap_or(Path::new("."));
    let dir = root.join(relative);
    let versions = migration_versions(&dir)?;
    if versions.contains(&level) {
        return None;
    }
    let listed = versions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "{level} is not a migration version of {service}: {relative} holds {} (the level is the version of the newest, {})",
        if listed.is_empty() {
            "none".to_string()
        } else {
            format!("versions {listed}")
        },
        versions.last().map_or("-".to_string(), ToString::to_string)
    ))
}

/// The versions of the up migrations (`<version>_<name>.sql`) in `dir`,
/// ascending; `None` when it cannot be read.
fn migration_versions(dir: &Path) -> Option<Vec<u32>> {
    let mut versions: Vec<u32> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".sql")?;
            if stem.ends_with(".down") {
                return None;
            }
            let (version, _) = stem.split_once('_')?;
            version.parse().ok()
        })
        .collect();
    versions.sort_unstable();
    Some(versions)
}

/// The lowest port an unprivileged process may listen on.
const FIRST_UNPRIVILEGED_PORT: u32 = 1024;

/// Every environment's `state-dir` and local `secrets.path`: paths kisumctl
/// creates, fills with databases and keys, and removes with `down --purge`.
fn local_paths(loaded: &Loaded) -> Vec<InputError> {
    let matrix_dir = std::fs::canonicalize(&loaded.dir).unwrap_or_else(|_| loaded.dir.clone());
    let repo = super::normalize(matrix_dir.parent().unwrap_or(Path::new("/")));
    let problem = |path: &str| -> Option<String> {
        if path.trim().is_empty() {
            return Some("is empty: name the directory to use".into());
        }
        if path.chars().any(char::is_control) {
            return Some("contains a control character".into());
        }
        let resolved = super::normalize(&super::resolve_path(&loaded.dir, path));
        repo.starts_with(&resolved).then(|| {
            format!(
                "`{path}` is {}, which `kisumctl down --purge` would remove",
                if resolved == repo {
                    "the repository itself".to_string()
                } else {
                    format!(
                        "{}, a directory that holds the repository",
                        resolved.display()
                    )
                }
            )
        })
    };
    let mut errors = Vec::new();
    for (file, source) in loaded.environments.values() {
        let mut paths = vec![("state-dir", file.state_dir.as_str())];
        if let SecretBackend::LocalFiles { path } = &file.secrets {
            paths.push(("secrets.path", path.as_str()));
        }
        for (field, path) in &paths {
            if let Some(message) = problem(path) {
                errors.push(error_at(source, field, message));
            }
        }
        if let [(_, state), (_, secrets)] = paths[..]
            && super::rules::normal_path(state) == super::rules::normal_path(secrets)
        {
            let mut error = error_at(
                source,
                "secrets.path",
                "is the state directory itself: the secret store needs a directory of its own"
                    .into(),
            );
            error.hint = Some(format!("such as {}/secrets", state.trim_end_matches('/')));
            errors.push(error);
        }
    }
    errors
}

/// The ports of an environment that runs as processes (`local-runtime`):
/// each between 1024 and 65535, none used twice, and one server per
/// database engine (every PostgreSQL database on one port, every MongoDB
/// database on one port), as `deploy local` runs them.
fn local_ports(loaded: &Loaded) -> Vec<InputError> {
    let base = &loaded.base;
    let mut errors = Vec::new();
    for (file, source) in loaded.environments.values() {
        let Some(runtime) = file.local_runtime else {
            continue;
        };
        let mut bad = |field: &str, message: String| errors.push(error_at(source, field, message));
        // Port -> who listens on it, for the collision messages.
        let mut taken: BTreeMap<u32, String> = BTreeMap::new();
        let mut servers: BTreeMap<&str, (u32, String)> = BTreeMap::new();
        let databases = base.databases.iter().filter_map(|(id, db)| {
            let server = match db.engine {
                Engine::Postgresql => "postgres",
                Engine::Mongodb => "mongo",
                Engine::Undecided => return None,
            };
            let endpoint = &file.databases.get(id)?.endpoint;
            Some((
                format!("databases.{id}.endpoint.port"),
                server,
                endpoint.port,
            ))
        });
        let data = databases.chain(std::iter::once((
            "redis.endpoint.port".to_string(),
            "redis",
            file.redis.endpoint.port,
        )));
        for (field, server, port) in data {
            let port = u32::from(port);
            if port < FIRST_UNPRIVILEGED_PORT {
                bad(
                    &field,
                    format!(
                        "port {port} is below {FIRST_UNPRIVILEGED_PORT}: `deploy local` runs {server} as an unprivileged process"
                    ),
                );
                continue;
            }
            match servers.get(server) {
                Some((first, first_field)) if *first != port => bad(
                    &field,
                    format!(
                        "port {port} differs from {first} of `{first_field}`: `deploy local` runs one {server} server for every database of its engine"
                    ),
                ),
                Some(_) => {}
                None => {
                    servers.insert(server, (port, field.clone()));
                    if let Some(owner) = taken.insert(port, format!("{server} (`{field}`)")) {
                        bad(&field, format!("port {port} is also {owner}'s"));
                    }
                }
            }
        }
        let offset = u32::from(runtime.port_offset);
        let mut outside = Vec::new();
        for (id, service) in &base.services {
            for (kind, port) in [
                ("http", service.ports.http),
                ("internal", service.ports.internal),
            ] {
                let local = u32::from(port) + offset;
                let who = format!("`{id}`'s {kind} port ({port} + {offset} = {local})");
                if !(FIRST_UNPRIVILEGED_PORT..=u32::from(u16::MAX)).contains(&local) {
                    outside.push(who);
                } else if let Some(owner) = taken.insert(local, who.clone()) {
                    bad(
                        "local-runtime.port-offset",
                        format!("puts {who} on a port that {owner} uses already"),
                    );
                }
            }
        }
        if !outside.is_empty() {
            let more = match outside.len() {
                0..=3 => String::new(),
                n => format!(" and {} more", n - 3),
            };
            bad(
                "local-runtime.port-offset",
                format!(
                    "puts {}{more} outside {FIRST_UNPRIVILEGED_PORT}-65535",
                    outside[..outside.len().min(3)].join(", ")
                ),
            );
        }
    }
    errors
}

/// Service ids that name something else in the platform.
const RESERVED_IDS: [&str; 2] = ["kisumctl", "redis"];

/// Every value that reaches a manifest has a shape Kubernetes accepts.
fn value_shapes(loaded: &Loaded) -> Vec<InputError> {
    use super::syntax::*;
    let base = &loaded.base;
    let mut errors = Vec::new();
    let mut bad = |source: &Source, field: String, message: String, hint: Option<&str>| {
        errors.push(InputError {
            file: source.path.clone(),
            position: source.locate(&field),
            field,
            message,
            hint: hint.map(str::to_string),
        });
    };
    let src = &loaded.base_source;
    let label_hint = Some("lowercase letters, digits and `-`, at most 63");
    for id in base
        .services
        .keys()
        .chain(base.frontends.keys())
        .chain(base.databases.keys())
    {
        if !is_dns_label(id) || RESERVED_IDS.contains(&id.as_str()) {
            let kind = if base.services.contains_key(id) {
                "services"
            } else if base.frontends.contains_key(id) {
                "frontends"
            } else {
                "databases"
            };
            let message = format!("`{id}` cannot name a Kubernetes object or is reserved");
            bad(src, format!("{kind}.{id}"), message, label_hint);
        }
    }
    for (id, secret) in &base.secrets {
        if !is_dns_label(id) {
            bad(
                src,
                format!("secrets.{id}"),
                format!("`{id}` cannot name a Secret"),
                label_hint,
            );
        }
        for (n, key) in secret.keys.iter().enumerate() {
            if !is_secret_key(key) {
                let message = format!("`{key}` is not a usable key (letters, digits, `-_.`)");
                bad(src, format!("secrets.{id}.keys.{n}"), message, None);
            }
        }
    }
    let kisumctl = &base.kisumctl;
    if !is_image_path_part(&kisumctl.image) {
        let message = format!("`{}` is not an image name", kisumctl.image);
        bad(src, "kisumctl.image".into(), message, None);
    }
    if !kisumctl.matrix_dir.starts_with('/') {
        let message = format!("`{}` is not an absolute path", kisumctl.matrix_dir);
        bad(src, "kisumctl.matrix-dir".into(), message, None);
    }
    if !is_dns_label(&kisumctl.service_account) {
        let message = format!(
            "`{}` is not a ServiceAccount name",
            kisumctl.service_account
        );
        bad(src, "kisumctl.service-account".into(), message, label_hint);
    }
    let schedules = &base.schedules;
    for (field, set) in [
        ("image", schedules.image.is_some()),
        ("matrix-dir", schedules.matrix_dir.is_some()),
    ] {
        if set {
            let message = format!(
                "is no longer read: the CronJobs and the operation Jobs share one kisumctl image; write it as `kisumctl.{field}` and remove `schedules.{field}`"
            );
            bad(src, format!("schedules.{field}"), message, None);
        }
    }
    for (field, schedule) in [
        ("certificate-renewal", &schedules.certificate_renewal),
        ("secrets-check", &schedules.secrets_check),
    ] {
        if let Err(message) = super::rules::cron_interval_minutes(schedule) {
            bad(src, format!("schedules.{field}"), message, None);
        }
    }
    if schedules.deadline_minutes == 0 {
        let message = "a scheduled run needs a positive deadline".to_string();
        bad(src, "schedules.deadline-minutes".into(), message, None);
    }
    for (id, zone) in &base.dns.zones {
        if !is_host_name(&zone.domain) {
            bad(
                src,
                format!("dns.zones.{id}.domain"),
                format!("`{}` is not a domain", zone.domain),
                None,
            );
        }
    }
    let host_hint = Some("lowercase ASCII labels separated by dots, no trailing dot");
    for (id, service) in &base.services {
        if !is_host_name(&service.host) {
            bad(
                src,
                format!("services.{id}.host"),
                format!("`{}` is not a host name", service.host),
                host_hint,
            );
        }
        if !is_body_size(&service.request_body_limit) {
            let message = format!(
                "`{}` is not a size such as 64k or 10m",
                service.request_body_limit
            );
            bad(
                src,
                format!("services.{id}.request-body-limit"),
                message,
                None,
            );
        }
        if !is_image_path_part(&service.image) {
            bad(
                src,
                format!("services.{id}.image"),
                format!("`{}` is not an image name", service.image),
                None,
            );
        }
        for key in service.config.keys() {
            if !is_variable_name(key) {
                bad(
                    src,
                    format!("services.{id}.config.{key}"),
                    format!("`{key}` is not a variable name"),
                    None,
                );
            }
        }
    }
    for key in base.common_config.keys() {
        if !is_variable_name(key) {
            bad(
                src,
                format!("common-config.{key}"),
                format!("`{key}` is not a variable name"),
                None,
            );
        }
    }
    for (id, frontend) in &base.frontends {
        if !is_host_name(&frontend.host) {
            bad(
                src,
                format!("frontends.{id}.host"),
                format!("`{}` is not a host name", frontend.host),
                host_hint,
            );
        }
    }
    if !is_image_registry(&base.platform.image_registry) {
        let message = format!(
            "`{}` is not a registry host and path",
            base.platform.image_registry
        );
        bad(
            src,
            "platform.image-registry".into(),
            message,
            Some("like registry.kisum.io/kisum, no scheme or credentials"),
        );
    }
    if !(1..=2_147_483_647).contains(&base.platform.run_as_user) {
        bad(
            src,
            "platform.run-as-user".into(),
            "must be a non-root UID (1 or more)".into(),
            None,
        );
    }
    for (file, source) in loaded.environments.values() {
        if !is_dns_label(&file.namespace) {
            bad(
                source,
                "namespace".into(),
                format!("`{}` is not a namespace name", file.namespace),
                label_hint,
            );
        }
        for (zone, domain) in &file.dns.domain_overrides {
            if !is_host_name(domain) {
                bad(
                    source,
                    format!("dns.domain-overrides.{zone}"),
                    format!("`{domain}` is not a domain"),
                    host_hint,
                );
            }
        }
        if !file.dns.host_suffix.is_empty() && !is_dns_label(&format!("a{}", file.dns.host_suffix))
        {
            let message = format!("`{}` cannot extend a host label", file.dns.host_suffix);
            bad(
                source,
                "dns.host-suffix".into(),
                message,
                Some("like -staging"),
            );
        }
        if let Some(tag) = &file.image_tag
            && !is_image_tag(tag)
        {
            bad(
                source,
                "image-tag".into(),
                format!("`{tag}` is not an image tag or sha256 digest"),
                None,
            );
        }
        for (id, local) in &file.services {
            if let Some(tag) = &local.image_tag
                && !is_image_tag(tag)
            {
                let message = format!("`{tag}` is not an image tag or sha256 digest");
                bad(source, format!("services.{id}.image-tag"), message, None);
            }
            if let Some(host) = &local.host
                && !is_host_name(host)
            {
                bad(
                    source,
                    format!("services.{id}.host"),
                    format!("`{host}` is not a host name"),
                    host_hint,
                );
            }
        }
        for (id, local) in &file.frontends {
            if let Some(host) = &local.host
                && !is_host_name(host)
            {
                bad(
                    source,
                    format!("frontends.{id}.host"),
                    format!("`{host}` is not a host name"),
                    host_hint,
                );
            }
        }
        if let SecretBackend::AwsSecretsManager {
            account,
            region,
            prefix,
            ..
        } = &file.secrets
        {
            if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
                bad(
                    source,
                    "secrets.account".into(),
                    format!("`{account}` is not a 12-digit AWS account"),
                    None,
                );
            }
            if !is_dns_label(region) {
                bad(
                    source,
                    "secrets.region".into(),
                    format!("`{region}` is not an AWS region"),
                    None,
                );
            }
            let prefix_ok = prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c));
            if !prefix_ok {
                bad(
                    source,
                    "secrets.prefix".into(),
                    format!("`{prefix}` is not a secret name prefix"),
                    None,
                );
            }
        }
        if let super::schema::BackupStore::S3 { bucket, region, .. } = &file.backups.store
            && !(is_host_name(bucket) || is_dns_label(bucket)) | !is_dns_label(region)
        {
            let message = format!("`{bucket}` in `{region}` is not an S3 bucket and region");
            bad(source, "backups.store".into(), message, None);
        }
        let endpoints = file
            .databases
            .iter()
            .map(|(id, d)| (format!("databases.{id}.endpoint"), &d.endpoint))
            .chain(std::iter::once((
                "redis.endpoint".to_string(),
                &file.redis.endpoint,
            )));
        for (field, endpoint) in endpoints {
            if parse_cidr(&endpoint.cidr).is_none() {
                let message = format!(
                    "`{}` is not an IPv4 network like 10.0.1.0/28",
                    endpoint.cidr
                );
                bad(source, format!("{field}.cidr"), message, None);
            }
            let is_ip = endpoint.host.parse::<std::net::Ipv4Addr>().is_ok();
            if !is_ip && !is_host_name(&endpoint.host) {
                bad(
                    source,
                    format!("{field}.host"),
                    format!("`{}` is not a host", endpoint.host),
                    host_hint,
                );
            }
        }
    }
    errors
}

/// A config entry is a plain value or a secret reference, never both.
fn config_entry_shape(loaded: &Loaded) -> Vec<InputError> {
    let mut errors = Vec::new();
    let common = loaded
        .base
        .common_config
        .iter()
        .map(|(k, e)| ("common-config".to_string(), k, e));
    let per_service = loaded.base.services.iter().flat_map(|(id, service)| {
        service
            .config
            .iter()
            .map(move |(k, e)| (format!("services.{id}.config"), k, e))
    });
    for (prefix, key, entry) in common.chain(per_service) {
        {
            if entry.value.is_some() && entry.secret.is_some() {
                let field = format!("{prefix}.{key}");
                errors.push(InputError {
                    file: loaded.base_source.path.clone(),
                    position: loaded.base_source.locate(&field),
                    message: "has both `value` and `secret`".into(),
                    hint: Some("a secret is never written inline: keep only `secret`".into()),
                    field,
                });
            }
            if entry.secret_key.is_some() && entry.secret.is_none() {
                let field = format!("{prefix}.{key}.secret-key");
                errors.push(InputError {
                    file: loaded.base_source.path.clone(),
                    position: loaded.base_source.locate(&field),
                    message: "`secret-key` without `secret`".into(),
                    hint: None,
                    field,
                });
            }
        }
    }
    errors
}
