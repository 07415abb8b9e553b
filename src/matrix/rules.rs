//! The checks of `kisumctl validate`: the plan's security review (section
//! 27) and component checklists (section 28), as far as the matrix alone
//! can answer them. Every rule has a stable id; findings point at the file,
//! line and field that must change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;

use super::index::Position;
use super::load::Source;
use super::model::{ConfigValue, Environment, Matrix, REDIS, REQUIRED_ENVIRONMENTS};
use super::schema::{
    Engine, Exposure, Generation, RedisPersistence, RedisUse, SecretBackend, SecretCategory,
    TlsMode,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warning,
}

/// One rule of `validate`.
pub struct Rule {
    pub id: &'static str,
    pub level: Level,
    /// Plan sections the rule comes from.
    pub sections: &'static str,
    pub summary: &'static str,
    check: fn(&Context) -> Vec<Finding>,
}

/// One thing a rule found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub rule: &'static str,
    pub level: Level,
    /// `None` for findings about the base file as a whole.
    pub environment: Option<String>,
    pub file: PathBuf,
    pub position: Option<Position>,
    pub field: String,
    pub message: String,
}

/// What the rules look at: the matrix and every environment resolved.
pub struct Context<'m> {
    pub matrix: &'m Matrix,
    pub environments: Vec<Environment<'m>>,
}

impl<'m> Context<'m> {
    pub fn new(matrix: &'m Matrix) -> Self {
        let environments = matrix
            .environment_names()
            .filter_map(|name| matrix.environment(name).ok())
            .collect();
        Context {
            matrix,
            environments,
        }
    }

    fn base_finding(&self, field: &str, message: String) -> Finding {
        at(self.matrix.base_source(), None, field, message)
    }
}

fn at(source: &Source, environment: Option<&str>, field: &str, message: String) -> Finding {
    Finding {
        rule: "",
        level: Level::Error,
        environment: environment.map(str::to_string),
        file: source.path.clone(),
        position: source.locate(field),
        field: field.to_string(),
        message,
    }
}

/// A finding about `field` of one environment: placed in the environment
/// file when the field is written there, else in the base file.
fn in_env(env: &Environment, field: &str, message: String) -> Finding {
    let (source, position) = env.locate(field);
    Finding {
        rule: "",
        level: Level::Error,
        environment: Some(env.name.to_string()),
        file: source.path.clone(),
        position,
        field: field.to_string(),
        message,
    }
}

/// Runs every rule; findings sorted by level, rule, file and line.
pub fn check(matrix: &Matrix) -> Vec<Finding> {
    let context = Context::new(matrix);
    let mut findings = Vec::new();
    for rule in RULES {
        for mut finding in (rule.check)(&context) {
            finding.rule = rule.id;
            finding.level = rule.level;
            findings.push(finding);
        }
    }
    let key = |f: &Finding| {
        let line = f.position.map(|p| p.line);
        (
            f.level,
            f.rule,
            f.file.clone(),
            line,
            f.field.clone(),
            f.environment.clone(),
        )
    };
    findings.sort_by_key(key);
    // A rule may reach the same field twice (say, through two callers).
    findings.dedup_by(|a, b| key(a) == key(b) && a.message == b.message);
    findings
}

pub static RULES: &[Rule] = &[
    Rule {
        id: "required-environments",
        level: Level::Error,
        sections: "3",
        summary: "local, dev, staging and production exist; only production has the production tier",
        check: required_environments,
    },
    Rule {
        id: "deployment-units",
        level: Level::Error,
        sections: "7.3",
        summary: "each deployment unit of the plan is exactly one service",
        check: deployment_units,
    },
    Rule {
        id: "environment-separation",
        level: Level::Error,
        sections: "3, 4.3, 27",
        summary: "environments never share a namespace, cluster context, state directory or backup location",
        check: environment_separation,
    },
    Rule {
        id: "config-override",
        level: Level::Error,
        sections: "13.1, 27",
        summary: "an environment changes only the settings marked per-environment",
        check: config_override,
    },
    Rule {
        id: "production-secret-manager",
        level: Level::Error,
        sections: "12.2, 27",
        summary: "production secrets live in a secret manager, not in files",
        check: production_secret_manager,
    },
    Rule {
        id: "core-internal",
        level: Level::Error,
        sections: "2.2, 6.2, 27",
        summary: "Platform Core is internal-only",
        check: core_internal,
    },
    Rule {
        id: "internal-host-private",
        level: Level::Error,
        sections: "4.1, 6.1",
        summary: "internal services use private zones; public services use public zones",
        check: internal_host_private,
    },
    Rule {
        id: "data-private",
        level: Level::Error,
        sections: "6.1, 6.4, 27",
        summary: "databases and Redis never accept public traffic and require TLS outside local",
        check: data_private,
    },
    Rule {
        id: "public-tls",
        level: Level::Error,
        sections: "5.1, 27, 28.9",
        summary: "every public host has TLS, from ACME wherever DNS is managed",
        check: public_tls,
    },
    Rule {
        id: "dns-separation",
        level: Level::Error,
        sections: "4.3, 27",
        summary: "no host name is shared between environments or between two services",
        check: dns_separation,
    },
    Rule {
        id: "secret-separation",
        level: Level::Error,
        sections: "12.2, 27",
        summary: "no secret location is shared between production and non-production",
        check: secret_separation,
    },
    Rule {
        id: "secret-account-separation",
        level: Level::Warning,
        sections: "12.2, 27",
        summary: "production secrets live in an AWS account no other environment uses",
        check: secret_account_separation,
    },
    Rule {
        id: "no-inline-secret",
        level: Level::Error,
        sections: "12.2, 13.1, 27",
        summary: "secret-bearing settings are secret references, never values in the matrix",
        check: no_inline_secret,
    },
    Rule {
        id: "db-credential-unshared",
        level: Level::Error,
        sections: "9.1, 10.2, 12.2",
        summary: "each database or Redis credential is used by one service, its owner",
        check: db_credential_unshared,
    },
    Rule {
        id: "egress-in-traffic-matrix",
        level: Level::Error,
        sections: "6.4",
        summary: "each service calls only what its row of the traffic matrix allows",
        check: egress_in_traffic_matrix,
    },
    Rule {
        id: "data-owner-only",
        level: Level::Error,
        sections: "6.4, 8, 11",
        summary: "a database is reached only by its owner, Redis only by services that use it",
        check: data_owner_only,
    },
    Rule {
        id: "core-callers",
        level: Level::Error,
        sections: "6.2, 16.3",
        summary: "only Auth and Admin call Platform Core, and Core calls no one inside",
        check: core_callers,
    },
    Rule {
        id: "service-auth",
        level: Level::Error,
        sections: "12.4, 16, 27",
        summary: "every internal call carries a credential the callee verifies",
        check: service_auth,
    },
    Rule {
        id: "required-config",
        level: Level::Error,
        sections: "13.1",
        summary: "every required setting has a value or a secret in every environment",
        check: required_config,
    },
    Rule {
        id: "jwt-keys",
        level: Level::Error,
        sections: "12.3, 27, 28.1",
        summary: "the JWT key set is an RSA key set with kids, read only by Auth",
        check: jwt_keys,
    },
    Rule {
        id: "health-endpoints",
        level: Level::Error,
        sections: "15.1",
        summary: "every service exposes /health and /ready",
        check: health_endpoints,
    },
    Rule {
        id: "backups-complete",
        level: Level::Error,
        sections: "9.4, 10.3, 22, 23.1",
        summary: "every stateful database has backups, retention, a drill and RPO/RTO it can meet",
        check: backups_complete,
    },
    Rule {
        id: "restore-order",
        level: Level::Error,
        sections: "22.4",
        summary: "restore priorities are unique and follow Auth, Core, Redis, Main, Finance",
        check: restore_order,
    },
    Rule {
        id: "production-backups",
        level: Level::Error,
        sections: "3.4, 27, 28.1",
        summary: "production has backups on and a deployment for every decided database",
        check: production_backups,
    },
    Rule {
        id: "production-alerts",
        level: Level::Error,
        sections: "3.3, 3.4, 27",
        summary: "production and staging have metrics, alerts and access logs on",
        check: production_alerts,
    },
    Rule {
        id: "mandatory-alerts",
        level: Level::Error,
        sections: "20.5",
        summary: "every alert of section 20.5 is defined with a threshold",
        check: mandatory_alerts,
    },
    Rule {
        id: "redis-policy",
        level: Level::Error,
        sections: "11.3, 11.4, 11.5, 28.8",
        summary: "Redis persistence is documented, memory is bounded, key families and TTLs follow 11.4/11.5",
        check: redis_policy,
    },
    Rule {
        id: "upstream-timeouts",
        level: Level::Error,
        sections: "17.4",
        summary: "timeouts are set, connect <= read, and AI allows longer than Auth",
        check: upstream_timeouts,
    },
    Rule {
        id: "tls-policy",
        level: Level::Error,
        sections: "5.3, 5.4",
        summary: "renewal starts before the expiry alert; HSTS lasts at least 180 days",
        check: tls_policy,
    },
    Rule {
        id: "unique-ports",
        level: Level::Error,
        sections: "7.3",
        summary: "every service has its own HTTP and internal ports",
        check: unique_ports,
    },
    Rule {
        id: "scaling",
        level: Level::Error,
        sections: "24",
        summary: "1 <= replicas <= max-replicas; requests do not exceed limits",
        check: scaling,
    },
    Rule {
        id: "production-redundancy",
        level: Level::Warning,
        sections: "3.4, 24.2",
        summary: "production runs at least two instances of every service",
        check: production_redundancy,
    },
    Rule {
        id: "image-tagged",
        level: Level::Error,
        sections: "7.3, 14",
        summary: "outside local, every service image has an explicit tag or digest",
        check: image_tagged,
    },
    Rule {
        id: "frontend-headers",
        level: Level::Error,
        sections: "5.4",
        summary: "frontends have a Content-Security-Policy with default-src and frame-ancestors 'none' or 'self'",
        check: frontend_headers,
    },
    Rule {
        id: "unused-secret",
        level: Level::Warning,
        sections: "12.1, 29",
        summary: "every secret of the inventory is read by a service or by kisumctl",
        check: unused_secret,
    },
    Rule {
        id: "operator-secrets",
        level: Level::Error,
        sections: "9.1, 10.2, 12.1, 22",
        summary: "the secrets kisumctl logs in with are in the inventory: every server's superuser, every PostgreSQL database's migration role, the Redis backup login, the backup identity",
        check: operator_secrets,
    },
    Rule {
        id: "backup-encryption",
        level: Level::Warning,
        sections: "9.4",
        summary: "production backups are encrypted with age recipients from the matrix",
        check: backup_encryption,
    },
    Rule {
        id: "assumption-path",
        level: Level::Error,
        sections: "29",
        summary: "every assumption points at a value that exists",
        check: assumption_path,
    },
    Rule {
        id: "open-decision",
        level: Level::Warning,
        sections: "8.6, 8.7",
        summary: "a question the plan leaves open; undecided engines must be listed",
        check: open_decision,
    },
];

/// Plan knowledge: deployment units that must never be public (2.2).
const INTERNAL_ONLY_UNITS: [&str; 1] = ["platform-core-backend"];

/// Plan knowledge: the deployment units of section 7.3.
const PLAN_UNITS: [&str; 9] = [
    "auth-backend",
    "platform-core-backend",
    "platform-admin-backend",
    "basic-backend",
    "finance-backend",
    "market-backend",
    "touring-backend",
    "venue-backend",
    "ai-backend",
];

/// More instances than this is a typo, not a plan.
const MAX_REPLICAS: u32 = 1000;

/// Namespaces that belong to the cluster, not to an environment.
const SYSTEM_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];

/// Shortest backup retention production accepts, in days.
const PRODUCTION_MIN_RETENTION_DAYS: u32 = 7;

/// Plan knowledge: the services allowed to call Platform Core (6.2).
const CORE_CALLER_UNITS: [&str; 2] = ["auth-backend", "platform-admin-backend"];

/// Plan knowledge: alerts every environment with alerting must have (20.5).
const MANDATORY_ALERTS: [&str; 10] = [
    "service-down",
    "readiness-failing",
    "database-unavailable",
    "redis-unavailable",
    "elevated-5xx",
    "elevated-login-failures",
    "auth-denial-spike",
    "slow-access-aggregation",
    "certificate-expiry",
    "backup-failure",
];

/// Alerts whose rule fires on `>= threshold` of a count, `> threshold` of an
/// age, latency or rate multiple, or `< threshold` of days left: a
/// threshold of 0 makes them fire always (or never).
const ALERTS_ABOVE_ZERO: [&str; 6] = [
    "readiness-failing",
    "database-unavailable",
    "redis-unavailable",
    "slow-access-aggregation",
    "certificate-expiry",
    "backup-failure",
];

/// Plan knowledge: the Redis key design of section 11.4.
const REDIS_KEY_PATTERNS: [&str; 6] = [
    "access:{companyId}:{membershipId}:{accessVersion}:{entitlementVersion}",
    "session:{sessionId}",
    "revoked:session:{sessionId}",
    "ratelimit:login:ip:{ip}",
    "ratelimit:login:email:{email}",
    "company-map:{raw-x-org}",
];

fn required_environments(cx: &Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    let names: BTreeSet<&str> = cx.matrix.environment_names().collect();
    for required in REQUIRED_ENVIRONMENTS {
        if !names.contains(required) {
            let message = format!("no `{required}.yaml`: the plan requires {required} (section 3)");
            findings.push(cx.base_finding("", message));
        }
    }
    for env in &cx.environments {
        let production_name = env.name == "production";
        if env.is_production() != production_name {
            let message = if production_name {
                "production must have `tier: production`".to_string()
            } else {
                format!(
                    "`{}` has the production tier; only production may",
                    env.name
                )
            };
            findings.push(in_env(env, "tier", message));
        }
    }
    findings
}

fn deployment_units(cx: &Context) -> Vec<Finding> {
    let base = cx.matrix.base();
    let mut findings = Vec::new();
    for unit in PLAN_UNITS {
        let holders: Vec<&String> = base
            .services
            .iter()
            .filter(|(_, s)| s.unit == unit)
            .map(|(id, _)| id)
            .collect();
        match holders.as_slice() {
            [_] => {}
            [] => findings
                .push(cx.base_finding("services", format!("no service is the unit `{unit}`"))),
            [_, rest @ ..] => {
                for id in rest {
                    let message = format!("`{unit}` is already another service's unit");
                    findings.push(cx.base_finding(&format!("services.{id}.unit"), message));
                }
            }
        }
    }
    for (id, service) in &base.services {
        if !PLAN_UNITS.contains(&service.unit.as_str()) {
            let message = format!("`{}` is not a deployment unit of the plan", service.unit);
            findings.push(cx.base_finding(&format!("services.{id}.unit"), message));
        }
    }
    findings
}

/// Local filesystem paths compared by their components.
pub fn normal_path(path: &str) -> String {
    let absolute = path.starts_with('/');
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("{}{}", if absolute { "/" } else { "" }, parts.join("/"))
}

fn environment_separation(cx: &Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut seen: BTreeMap<(&str, String), &str> = BTreeMap::new();
    for env in &cx.environments {
        let file = env.file;
        if SYSTEM_NAMESPACES.contains(&file.namespace.as_str())
            || file.namespace.starts_with("kube-")
        {
            let message = format!(
                "`{}` belongs to the cluster, not to an environment",
                file.namespace
            );
            findings.push(in_env(env, "namespace", message));
        }
        let backup = match &file.backups.store {
            super::schema::BackupStore::LocalDirectory { path } => {
                format!("dir:{}", normal_path(path))
            }
            super::schema::BackupStore::S3 { bucket, prefix, .. } => {
                format!("s3:{bucket}/{prefix}")
            }
        };
        let owned = [
            ("namespace", "namespace", file.namespace.clone()),
            (
                "kubernetes.context",
                "cluster context",
                file.kubernetes.context.clone(),
            ),
            ("state-dir", "state directory", normal_path(&file.state_dir)),
            ("backups.store", "backup location", backup),
        ];
        for (field, what, value) in owned {
            if let Some(other) = seen.insert((field, value.clone()), env.name) {
                let message = format!("{what} `{value}` is also {other}'s");
                findings.push(in_env(env, field, message));
            }
        }
    }
    findings
}

fn config_override(cx: &Context) -> Vec<Finding> {
    let base = cx.matrix.base();
    let mut findings = Vec::new();
    for env in &cx.environments {
        for (id, local) in &env.file.services {
            let Some(service) = base.services.get(id) else {
                continue;
            };
            for key in local.config.keys() {
                let entry = service
                    .config
                    .get(key)
                    .or_else(|| base.common_config.get(key));
                if entry.is_some_and(|e| !e.per_environment) {
                    let field = format!("services.{id}.config.{key}");
                    let message = format!(
                        "`{key}` is the same in every environment; only settings marked `per-environment: true` may differ"
                    );
                    findings.push(in_env(env, &field, message));
                }
            }
        }
    }
    findings
}

fn production_secret_manager(cx: &Context) -> Vec<Finding> {
    cx.environments
        .iter()
        .filter(|env| env.is_production())
        .filter(|env| matches!(env.file.secrets, SecretBackend::LocalFiles { .. }))
        .map(|env| {
            in_env(
                env,
                "secrets.backend",
                "production secrets are plain files".into(),
            )
        })
        .collect()
}

fn core_internal(cx: &Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (id, service) in &cx.matrix.base().services {
        if INTERNAL_ONLY_UNITS.contains(&service.unit.as_str())
            && service.exposure != Exposure::Internal
        {
            let message = format!("{} must be internal-only, not public", service.title);
            findings.push(cx.base_finding(&format!("services.{id}.exposure"), message));
        }
    }
    findings
}

fn internal_host_private(cx: &Context) -> Vec<Finding> {
    let base = cx.matrix.base();
    let mut findings = Vec::new();
    for (id, service) in &base.services {
        let Some(zone) = base.dns.zones.get(&service.zone) else {
            continue;
        };
        let wanted = match service.exposure {
            Exposure::Internal => super::schema::Visibility::Private,
            Exposure::Public => super::schema::Visibility::Public,
        };
        if zone.visibility != wanted {
            let message = format!(
                "{:?} service in {:?} zone `{}`",
                service.exposure, zone.visibility, service.zone
            )
            .to_lowercase();
            findings.push(cx.base_finding(&format!("services.{id}.zone"), message));
        }
    }
    for (id, frontend) in &base.frontends {
        let Some(zone) = base.dns.zones.get(&frontend.zone) else {
            continue;
        };
        if zone.visibility != super::schema::Visibility::Public {
            let message = format!("frontend in private zone `{}`", frontend.zone);
            findings.push(cx.base_finding(&format!("frontends.{id}.zone"), message));
        }
    }
    findings
}

fn data_private(cx: &Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    for env in &cx.environments {
        let local = env.name == "local";
        for (id, deployment) in &env.file.databases {
            if deployment.publicly_accessible {
                let field = format!("databases.{id}.publicly-accessible");
                findings.push(in_env(
                    env,
                    &field,
                    "database open to public traffic".into(),
                ));
            }
            if !deployment.tls_required && !local {
                let field = format!("databases.{id}.tls-required");
                findings.push(in_env(
                    env,
                    &field,
                    "database connections without TLS".into(),
                ));
            }
        }
        let endpoints = env
            .file
            .databases
            .iter()
            .map(|(id, d)| (format!("databases.{id}.endpoint.cidr"), &d.endpoint.cidr))
            .chain(std::iter::once((
                "redis.endpoint.cidr".to_string(),
                &env.file.redis.endpoint.cidr,
            )));
        for (field, cidr) in endpoints {
            if !super::syntax::is_private_network(cidr) {
                let message = format!(
                    "`{cidr}` is not a private network; data servers never face the internet"
                );
                findings.push(in_env(env, &field, message));
            }
        }
        if !local {
            findings.extend(shared_networks(env));
        }
        if env.file.redis.publicly_accessible {
            let field = "redis.publicly-accessible";
            findings.push(in_env(env, field, "Redis open to public traffic".into()));
        }
        if !env.file.redis.tls_required && !local {
            findings.push(in_env(
                env,
                "redis.tls-required",
                "Redis connections without TLS".into(),
            ));
        }
    }
    findings
}

/// Databases of different clusters must not share a network, or the
/// NetworkPolicy of one owner would reach another owner's server.
fn shared_networks(env: &Environment) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut by_network: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    for (id, deployment) in &env.file.databases {
        let Some(db) = env.base.databases.get(id) else {
            continue;
        };
        let cidr = deployment.endpoint.cidr.as_str();
        match by_network.get(cidr) {
            Some((other, cluster)) if *cluster != db.cluster => {
                let message = format!("{id} shares network {cidr} with {other} of another cluster");
                findings.push(in_env(
                    env,
                    &format!("databases.{id}.endpoint.cidr"),
                    message,
                ));
            }
            Some(_) => {}
            None => {
                by_network.insert(cidr, (id.as_str(), db.cluster.as_str()));
            }
        }
    }
    if let Some((other, _)) = by_network.get(env.file.redis.endpoint.cidr.as_str()) {
        let message = format!("Redis shares its network with {other}");
        findings.push(in_env(env, "redis.endpoint.cidr", message));
    }
    findings
}

fn public_tls(cx: &Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    for env in &cx.environments {
        let hosts = env.public_hosts();
        if hosts.is_empty() {
            continue;
        }
        let listed = hosts
            .iter()
            .map(|(h, _)| h.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if env.file.tls.mode == TlsMode::Disabled {
            findings.push(in_env(
                env,
                "tls.mode",
                format!("public hosts without TLS: {listed}"),
            ));
        } else if (env.file.dns.managed || env.is_production() || env.name == "staging")
            && env.file.tls.mode != TlsMode::Acme
        {
            let message = "public DNS is managed here, so certificates must come from ACME, \
                           not a private CA browsers do not trust";
            findings.push(in_env(env, "tls.mode", message.into()));
        }
    }
    findings
}

fn dns_separation(cx: &Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut owners: BTreeMap<String, (&str, &str)> = BTreeMap::new();
    // Production's names are the reference: a clash is the other's fault.
    let mut ordered: Vec<&Environment> = cx.environments.iter().collect();
    ordered.sort_by_key(|env| !env.is_production());
    for env in ordered {
        let services = env
            .services
            .values()
            .map(|s| (s.host.clone(), s.id, "services"));
        let frontends = env
            .frontends
            .values()
            .map(|f| (f.host.clone(), f.id, "frontends"));
        for (host, id, kind) in services.chain(frontends) {
            let overridden = match kind {
                "services" => env.file.services.get(id).is_some_and(|s| s.host.is_some()),
                _ => env.file.frontends.get(id).is_some_and(|f| f.host.is_some()),
            };
            let field = if overridden || env.is_production() {
                format!("{kind}.{id}.host")
            } else {
                "dns.host-suffix".to_string()
            };
            if let Some((other_env, other_id)) = owners.get(&host) {
                let message = format!("`{host}` is also the host of {other_id} in {other_env}");
                findings.push(in_env(env, &field, message));
            } else {
                owners.insert(host, (env.name, id));
            }
        }
    }
    findings
}

fn secret_separation(cx: &Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    let Some(production) = cx.environments.iter().find(|env| env.is_production()) else {
        return findings;
    };
    let secrets = &cx.matrix.base().secrets;
    let production_locations: BTreeSet<String> = secrets
        .keys()
        .map(|id| production.secret_location(id))
        .collect();
    for env in cx.environments.iter().filter(|env| !env.is_production()) {
        let shared: Vec<&String> = secrets
            .keys()
            .filter(|id| production_locations.contains(&env.secret_location(id)))
            .collect();
        if !shared.is_empty() {
            let names = shared
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let message = format!("reads the same secrets as production: {names}");
            findings.push(in_env(env, "secrets", message));
        }
    }
    findings
}

fn secret_account_separation(cx: &Context) -> Vec<Finding> {
    let account = |env: &Environment| match &env.file.secrets {
        SecretBackend::AwsSecretsManager { account, .. } => Some(account.clone()),
        SecretBackend::LocalFiles { .. } => None,
    };
    let mut findings = Vec::new();
    let Some(production) = cx.environments.iter().find(|env| env.is_production()) else {
        return findings;
    };
    let Some(production_account) = account(production) else {
        return findings;
    };
    for env in cx.environments.iter().filter(|env| !env.is_production()) {
        if account(env).as_deref() == Some(production_account.as_str()) {
            let message = format!("uses production's AWS account {production_account}");
            findings.push(in_env(env, "secrets.account", message));
        }
    }
    findings
}

/// Whether a variable name says it carries a credential.
pub fn is_secret_name(key: &str) -> bool {
    const MARKERS: [&str; 13] = [
        "PASSWORD",
        "PASSWD",
        "PASS",
        "PWD",
        "AUTH_HEADER",
        "SECRET",
        "TOKEN",
        "PRIVATE_KEY",
        "API_KEY",
        "CREDENTIAL",
        "DB_URL",
        "DATABASE_URL",
        "REDIS_URL",
    ];
    let upper = key.to_ascii_uppercase();
    let is_ttl = upper.ends_with("_TTL");
    !is_ttl
        && (MARKERS.iter().any(|marker| upper.contains(marker))
            || upper.ends_with("_KEY")
            || upper.starts_with("INTERNAL_CALLER_"))
}

/// Whether a value looks like a credential whatever its name.
pub fn looks_like_secret_value(value: &str) -> bool {
    const PREFIXES: [&str; 9] = [
        "AKIA",
        "ASIA",
        "ghp_",
        "gho_",
        "github_pat_",
        "sk_live_",
        "rk_live_",
        "xoxb-",
        "xoxp-",
    ];
    let trimmed = value.trim();
    let authority = trimmed
        .split_once("://")
        .map_or(trimmed, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    // user:password@host, with or without a scheme.
    let userinfo = authority
        .split_once('@')
        .is_some_and(|(user, host)| user.contains(':') && !host.is_empty());
    let lower = trimmed.to_ascii_lowercase();
    let keyword = ["password=", "passwd=", "pwd=", "secret=", "bearer "]
        .iter()
        .any(|k| lower.contains(k));
    let jwt = trimmed.starts_with("eyJ") && trimmed.matches('.').count() == 2;
    userinfo
        || keyword
        || jwt
        || trimmed.contains("-----BEGIN")
        || PREFIXES.iter().any(|p| trimmed.starts_with(p))
}

fn no_inline_secret(cx: &Context) -> Vec<Finding> {
    let mut findings = resolved_secrets(cx);
    let base = cx.matrix.base();
    let common = base
        .common_config
        .iter()
        .map(|(k, e)| (format!("common-config.{k}"), k, e));
    let per_service = base.services.iter().flat_map(|(id, service)| {
        service
            .config
            .iter()
            .map(move |(k, e)| (format!("services.{id}.config.{k}"), k, e))
    });
    for (field, key, entry) in common.chain(per_service) {
        if let Some(value) = &entry.value {
            if is_secret_name(key) || looks_like_secret_value(value) {
                let message = format!("`{key}` carries a credential: use `secret:`, not `value:`");
                findings.push(cx.base_finding(&format!("{field}.value"), message));
            }
        } else if entry.secret.is_none() && is_secret_name(key) && entry.required {
            let message = format!("`{key}` is a required credential with no `secret:` reference");
            findings.push(cx.base_finding(&field, message));
        }
    }
    for env in &cx.environments {
        for (id, local) in &env.file.services {
            for (key, value) in &local.config {
                let service = &base.services[id];
                let is_secret_entry = base
                    .common_config
                    .get(key)
                    .or_else(|| service.config.get(key))
                    .is_some_and(|entry| entry.secret.is_some());
                if is_secret_entry || is_secret_name(key) || looks_like_secret_value(value) {
                    let field = format!("services.{id}.config.{key}");
                    let message = format!(
                        "`{key}` is set inline; credentials come only from the secret backend"
                    );
                    findings.push(in_env(env, &field, message));
                }
            }
        }
    }
    findings
}

/// What a value template expands to is checked too: a template can build
/// a credential that no written value shows.
fn resolved_secrets(cx: &Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    for env in &cx.environments {
        for service in env.services.values() {
            for (key, value) in &service.config {
                let ConfigValue::Plain { value } = value else {
                    continue;
                };
                if !looks_like_secret_value(value) {
                    continue;
                }
                let overridden = env
                    .file
                    .services
                    .get(service.id)
                    .is_some_and(|s| s.config.contains_key(*key));
                let field = if overridden || service.spec.config.contains_key(*key) {
                    format!("services.{}.config.{key}", service.id)
                } else {
                    format!("common-config.{key}")
                };
                let message =
                    format!("`{key}` expands to what looks like a credential; use `secret:`");
                findings.push(in_env(env, &field, message));
            }
        }
    }
    findings
}

fn db_credential_unshared(cx: &Context) -> Vec<Finding> {
    let base = cx.matrix.base();
    let mut findings = Vec::new();
    let Some(env) = cx.environments.first() else {
        return findings;
    };
    let mut readers: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for service in env.services.values() {
        for (key, value) in &service.config {
            if let ConfigValue::Secret { secret, .. } = value {
                readers
                    .entry(secret.as_str())
                    .or_default()
                    .push((service.id, key));
            }
        }
    }
    for (secret_id, secret) in &base.secrets {
        let credential = matches!(
            secret.category,
            SecretCategory::DatabaseCredential | SecretCategory::RedisCredential
        );
        let users = readers.get(secret_id.as_str()).cloned().unwrap_or_default();
        let distinct: BTreeSet<&str> = users.iter().map(|(service, _)| *service).collect();
        if credential && distinct.len() > 1 {
            let names = distinct.iter().copied().collect::<Vec<_>>().join(", ");
            let message = format!("credential `{secret_id}` is shared by {names}");
            findings.push(cx.base_finding(&format!("secrets.{secret_id}"), message));
        }
    }
    for (db_id, db) in &base.databases {
        for (service, key) in readers
            .get(db.credentials.as_str())
            .cloned()
            .unwrap_or_default()
        {
            if service != db.owner {
                let message = format!(
                    "reads `{}`, the credential of {db_id} owned by {}",
                    db.credentials, db.owner
                );
                findings
                    .push(cx.base_finding(&format!("services.{service}.config.{key}"), message));
            }
        }
    }
    for (id, service) in &base.services {
        let Some(db_id) = &service.database else {
            continue;
        };
        let own = &base.databases[db_id].credentials;
        for (key, entry) in &service.config {
            let Some(secret) = &entry.secret else {
                continue;
            };
            let category = base.secrets.get(secret).map(|s| s.category);
            if category == Some(SecretCategory::DatabaseCredential) && secret != own {
                let message = format!("reads `{secret}`, but its database {db_id} uses `{own}`");
                findings.push(cx.base_finding(&format!("services.{id}.config.{key}"), message));
            }
        }
    }
    findings
}

fn egress_in_traffic_matrix(cx: &Context) -> Vec<Finding> {
    let base = cx.matrix.base();
    let mut findings = Vec::new();
    for (id, service) in &base.services {
        let Some(allowed) = base.traffic.get(id) else {
            let message = format!("{id} has no row in the traffic matrix");
            findings.push(cx.base_finding(&format!("services.{id}.egress"), message));
            continue;
        };
        for (n, target) in service.egress.iter().enumerate() {
            if !allowed.contains(target) {
                let message = format!("{id} -> {target} is not allowed by the traffic matrix");
                findings.push(cx.base_finding(&format!("services.{id}.egress.{n}"), message));
            }
        }
    }
    findings
}

fn data_owner_only(cx: &Context) -> Vec<Finding> {
    let base = cx.matrix.base();
    let mut findings = Vec::new();
    for (id, service) in &base.services {
        for (n, target) in service.egress.iter().enumerate() {
            let field = format!("services.{id}.egress.{n}");
            if let Some(db) = base.databases.get(target)
                && db.owner != *id
            {
                let message = format!("{id} reaches {target}, which belongs to {}", db.owner);
                findings.push(cx.base_finding(&field, message));
            }
            if target == REDIS && service.redis == RedisUse::None {
                let message = format!("{id} reaches Redis but declares `redis: none`");
                findings.push(cx.base_finding(&field, message));
            }
        }
        if let Some(db) = &service.database
            && !service.egress.contains(db)
        {
            let message = format!("{id} owns {db} but has no egress to it");
            findings.push(cx.base_finding(&format!("services.{id}.egress"), message));
        }
        if service.redis != RedisUse::None && !service.egress.iter().any(|t| t == REDIS) {
            let message = format!("{id} uses Redis but has no egress to it");
            findings.push(cx.base_finding(&format!("services.{id}.egress"), message));
        }
        if let Some(db) = &service.database
            && base.databases.get(db).is_some_and(|d| d.owner != *id)
        {
            let message =
                format!("{id} names {db} as its database, but {db} belongs to another service");
            findings.push(cx.base_finding(&format!("services.{id}.database"), message));
        }
    }
    findings
}

fn core_callers(cx: &Context) -> Vec<Finding> {
    let base = cx.matrix.base();
    let mut findings = Vec::new();
    let core_ids: Vec<&str> = base
        .services
        .iter()
        .filter(|(_, s)| INTERNAL_ONLY_UNITS.contains(&s.unit.as_str()))
        .map(|(id, _)| id.as_str())
        .collect();
    for (id, service) in &base.services {
        for (n, target) in service.egress.iter().enumerate() {
            let field = format!("services.{id}.egress.{n}");
            if core_ids.contains(&target.as_str())
                && !CORE_CALLER_UNITS.contains(&service.unit.as_str())
            {
                let message = format!("{id} calls Platform Core; only Auth and Admin may");
                findings.push(cx.base_finding(&field, message));
            }
            if core_ids.contains(&id.as_str()) && base.services.contains_key(target) {
                let message = format!("Platform Core calls {target}; Core calls no other service");
                findings.push(cx.base_finding(&field, message));
            }
        }
    }
    findings
}

fn service_auth(cx: &Context) -> Vec<Finding> {
    let base = cx.matrix.base();
    let mut findings = Vec::new();
    for (caller, service) in &base.services {
        for (n, callee) in service.egress.iter().enumerate() {
            let Some(callee_service) = base.services.get(callee) else {
                continue;
            };
            let field = format!("services.{caller}.egress.{n}");
            let presented: Vec<&String> = service
                .config
                .values()
                .filter_map(|e| e.secret.as_ref())
                .filter(|s| {
                    base.secrets.get(*s).is_some_and(|secret| {
                        secret.category == SecretCategory::InternalServiceCredential
                            && secret.verified_by.contains(callee)
                    })
                })
                .collect();
            let Some(credential) = presented.first() else {
                let message = format!(
                    "{caller} calls {callee} without an internal credential {callee} verifies"
                );
                findings.push(cx.base_finding(&field, message));
                continue;
            };
            let verified = callee_service
                .config
                .values()
                .chain(base.common_config.values())
                .any(|e| e.secret.as_ref() == Some(*credential));
            if !verified {
                let message =
                    format!("{callee} does not read `{credential}`, so it cannot verify {caller}");
                findings.push(cx.base_finding(&format!("services.{callee}.config"), message));
            }
        }
    }
    findings
}

fn required_config(cx: &Context) -> Vec<Finding> {
    let base = cx.matrix.base();
    let mut findings = Vec::new();
    for env in &cx.environments {
        for service in env.services.values() {
            for (key, value) in &service.config {
                let entry = service
                    .spec
                    .config
                    .get(*key)
                    .or_else(|| base.common_config.get(*key));
                if *value == ConfigValue::Unset && entry.is_some_and(|e| e.required) {
                    let field = if service.spec.config.contains_key(*key) {
                        format!("services.{}.config.{key}", service.id)
                    } else {
                        format!("common-config.{key}")
                    };
                    let message = format!(
                        "{} requires `{key}` but {} gives it no value",
                        service.id, env.name
                    );
                    findings.push(in_env(env, &field, message));
                }
            }
        }
    }
    findings
}

fn jwt_keys(cx: &Context) -> Vec<Finding> {
    let base = cx.matrix.base();
    let mut findings = Vec::new();
    let signing: Vec<(&String, &super::schema::Secret)> = base
        .secrets
        .iter()
        .filter(|(_, s)| s.category == SecretCategory::JwtSigningKey)
        .collect();
    if signing.is_empty() {
        findings.push(cx.base_finding("secrets", "no secret of category jwt-signing-key".into()));
    }
    for (id, secret) in &signing {
        if secret.generate != Generation::RsaKeySet {
            let field = format!("secrets.{id}.generate");
            findings.push(cx.base_finding(
                &field,
                "JWT keys must be an rsa-key-set (kid rotation)".into(),
            ));
        }
        if secret.rotation_days > 365 {
            let field = format!("secrets.{id}.rotation-days");
            findings.push(cx.base_finding(&field, "JWT keys must rotate at least yearly".into()));
        }
        for (key, entry) in &base.common_config {
            if entry.secret.as_ref() == Some(*id) {
                let field = format!("common-config.{key}");
                let message =
                    "common config reaches every service; only Auth may read the signing keys";
                findings.push(cx.base_finding(&field, message.into()));
            }
        }
        for (service_id, service) in &base.services {
            for (key, entry) in &service.config {
                if entry.secret.as_ref() == Some(*id)
                    && base.services[service_id].unit != "auth-backend"
                {
                    let field = format!("services.{service_id}.config.{key}");
                    let message =
                        format!("{service_id} reads the private signing keys; only Auth may");
                    findings.push(cx.base_finding(&field, message));
                }
            }
        }
    }
    findings
}

fn health_endpoints(cx: &Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (id, service) in &cx.matrix.base().services {
        if service.health.liveness != "/health" {
            let field = format!("services.{id}.health.liveness");
            findings.push(cx.base_finding(&field, "liveness must be /health".into()));
        }
        if service.health.readiness != "/ready" {
            let field = format!("services.{id}.health.readiness");
            findings.push(cx.base_finding(&field, "readiness must be /ready".into()));
        }
    }
    findings
}

/// The shortest interval between runs of a simple cron schedule, in
/// minutes, or an error for what is not a five-field cron expression.
pub fn cron_interval_minutes(schedule: &str) -> Result<u32, String> {
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!("`{schedule}` is not a five-field cron expression"));
    }
    let valid = |field: &str| {
        field.split(',').all(|part| {
            part.split(['/', '-'])
                .all(|n| n == "*" || n.parse::<u32>().is_ok())
        })
    };
    if let Some(bad) = fields.iter().find(|field| !valid(field)) {
        return Err(format!("`{bad}` in `{schedule}` is not a cron field"));
    }
    let step = |field: &str, unit: u32, span: u32| match field.split_once("*/") {
        Some((_, n)) => n.parse::<u32>().map(|n| n * unit).unwrap_or(span),
        None if field == "*" => unit,
        None => span,
    };
    let minutes = step(fields[0], 1, 60);
    let hours = step(fields[1], 60, 1440);
    let days = if fields[2] == "*" && fields[4] == "*" {
        1440
    } else {
        10080
    };
    Ok(if fields[0] == "*" || fields[0].starts_with("*/") {
        minutes
    } else if fields[1] == "*" || fields[1].starts_with("*/") {
        hours
    } else {
        days
    })
}

fn backups_complete(cx: &Context) -> Vec<Finding> {
    let base = cx.matrix.base();
    let mut findings = Vec::new();
    for (id, db) in &base.databases {
        let field = |name: &str| format!("databases.{id}.{name}");
        for (name, schedule) in [
            ("backup.schedule", &db.backup.schedule),
            ("backup.drill-schedule", &db.backup.drill_schedule),
        ] {
            if let Err(message) = cron_interval_minutes(schedule) {
                findings.push(cx.base_finding(&field(name), message));
            }
        }
        if db.backup.retention_days == 0 {
            findings.push(cx.base_finding(&field("backup.retention-days"), "no retention".into()));
        }
        if db.rpo_minutes == 0 || db.rto_minutes == 0 {
            let message = "RPO and RTO must be positive targets".into();
            findings.push(cx.base_finding(&field("rpo-minutes"), message));
        }
        if let Ok(interval) = cron_interval_minutes(&db.backup.schedule)
            && interval > db.rpo_minutes
            && !db.backup.point_in_time_recovery
        {
            let message = format!(
                "backups every {interval} min cannot meet an RPO of {} min without point-in-time recovery",
                db.rpo_minutes
            );
            findings.push(cx.base_finding(&field("rpo-minutes"), message));
        }
    }
    for env in &cx.environments {
        for (id, _, deployment) in env.deployed_databases() {
            if let Some(d) = deployment
                && d.retention_days == Some(0)
            {
                let field = format!("databases.{id}.retention-days");
                findings.push(in_env(env, &field, "no retention".into()));
            }
        }
    }
    findings
}

fn restore_order(cx: &Context) -> Vec<Finding> {
    let base = cx.matrix.base();
    let mut findings = Vec::new();
    let mut seen: BTreeMap<u8, String> = BTreeMap::new();
    seen.insert(base.redis.restore_priority, "redis".into());
    for (id, db) in &base.databases {
        if let Some(other) = seen.insert(db.restore_priority, id.clone()) {
            let message = format!("restore priority {} is also {other}'s", db.restore_priority);
            findings.push(cx.base_finding(&format!("databases.{id}.restore-priority"), message));
        }
    }
    // Section 22.4: Auth DB, Core DB, Redis, Basic/Main DB, Finance DB, others.
    let priority_of_owner = |unit: &str| {
        base.databases
            .iter()
            .find(|(_, db)| base.services.get(&db.owner).is_some_and(|s| s.unit == unit))
            .map(|(id, db)| (id.clone(), db.restore_priority))
    };
    let mut chain: Vec<(String, u8)> = Vec::new();
    for unit in ["auth-backend", "platform-core-backend"] {
        chain.extend(priority_of_owner(unit));
    }
    chain.push(("redis".into(), base.redis.restore_priority));
    for unit in ["basic-backend", "finance-backend"] {
        chain.extend(priority_of_owner(unit));
    }
    let others_min = base
        .databases
        .iter()
        .filter(|(id, _)| !chain.iter().any(|(c, _)| c == *id))
        .map(|(id, db)| (id.clone(), db.restore_priority))
        .min_by_key(|(_, p)| *p);
    chain.extend(others_min);
    for pair in chain.windows(2) {
        if pair[0].1 >= pair[1].1 {
            let field = if pair[1].0 == "redis" {
                "redis.restore-priority".to_string()
            } else {
                format!("databases.{}.restore-priority", pair[1].0)
            };
            let message = format!(
                "{} must be restored after {} (section 22.4)",
                pair[1].0, pair[0].0
            );
            findings.push(cx.base_finding(&field, message));
        }
    }
    findings
}

fn production_backups(cx: &Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    for env in cx.environments.iter().filter(|env| env.is_production()) {
        if !env.file.backups.enabled {
            findings.push(in_env(
                env,
                "backups.enabled",
                "production backups are off".into(),
            ));
        }
        for (id, db, deployment) in env.deployed_databases() {
            let Some(deployment) = deployment else {
                let message = format!("no deployment for {id}, so nothing can back it up");
                findings.push(in_env(env, "databases", message));
                continue;
            };
            let retention = deployment
                .retention_days
                .unwrap_or(db.backup.retention_days);
            if retention < PRODUCTION_MIN_RETENTION_DAYS {
                let field = format!("databases.{id}.retention-days");
                let message = format!(
                    "{retention} day(s) of retention; production keeps at least {PRODUCTION_MIN_RETENTION_DAYS}"
                );
                findings.push(in_env(env, &field, message));
            }
        }
    }
    findings
}

fn production_alerts(cx: &Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    for env in &cx.environments {
        if !(env.is_production() || env.name == "staging") {
            continue;
        }
        let monitoring = &env.file.monitoring;
        for (field, on) in [
            ("monitoring.metrics", monitoring.metrics),
            ("monitoring.alerts", monitoring.alerts),
            ("monitoring.access-logs", monitoring.access_logs),
        ] {
            if !on {
                findings.push(in_env(
                    env,
                    field,
                    format!("{} must have this on", env.name),
                ));
            }
        }
    }
    findings
}

fn mandatory_alerts(cx: &Context) -> Vec<Finding> {
    let base = cx.matrix.base();
    let mut findings = Vec::new();
    for id in MANDATORY_ALERTS {
        if !base.alerts.contains_key(id) {
            findings.push(
                cx.base_finding("alerts", format!("alert `{id}` of section 20.5 is missing")),
            );
        }
    }
    for (id, alert) in &base.alerts {
        if !alert.threshold.is_finite() || alert.threshold < 0.0 {
            let message = "threshold must be a non-negative number".into();
            findings.push(cx.base_finding(&format!("alerts.{id}.threshold"), message));
        } else if alert.threshold == 0.0 && ALERTS_ABOVE_ZERO.contains(&id.as_str()) {
            let message = format!(
                "threshold 0 makes `{id}` always fire (or never): its rule compares a count, \
                 an age or a ratio that is never below 0; give a threshold above 0"
            );
            findings.push(cx.base_finding(&format!("alerts.{id}.threshold"), message));
        }
        for (field, text) in [("summary", &alert.summary), ("unit", &alert.unit)] {
            if text.contains("{{") || text.contains("}}") {
                let message = "`{{` and `}}` are not allowed: the text becomes a \
                               PrometheusRule annotation, where they open a template"
                    .to_string();
                findings.push(cx.base_finding(&format!("alerts.{id}.{field}"), message));
            }
        }
    }
    if let Some(expiry) = base.alerts.get("certificate-expiry")
        && expiry.threshold != f64::from(base.tls.expiry_alert_days)
    {
        let message = format!(
            "certificate-expiry fires at {} days but tls.expiry-alert-days is {}",
            expiry.threshold, base.tls.expiry_alert_days
        );
        findings.push(cx.base_finding("alerts.certificate-expiry.threshold", message));
    }
    findings
}

const MAXMEMORY_POLICIES: [&str; 8] = [
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
];

/// A Redis memory size (`1gb`, `512mb`, `100m`, `1024`) in bytes.
pub fn redis_memory(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    const UNITS: [(&str, u64); 6] = [
        ("kb", 1 << 10),
        ("mb", 1 << 20),
        ("gb", 1 << 30),
        ("k", 1_000),
        ("m", 1_000_000),
        ("g", 1_000_000_000),
    ];
    for (unit, factor) in UNITS {
        if let Some(number) = lower.strip_suffix(unit) {
            return number.parse::<u64>().ok()?.checked_mul(factor);
        }
    }
    lower.parse().ok()
}

fn redis_policy(cx: &Context) -> Vec<Finding> {
    let base = cx.matrix.base();
    let redis = &base.redis;
    let mut findings = Vec::new();
    if redis.persistence_reason.trim().is_empty() {
        let message = "the persistence decision needs its reason (28.8)".into();
        findings.push(cx.base_finding("redis.persistence-reason", message));
    }
    if !MAXMEMORY_POLICIES.contains(&redis.maxmemory_policy.as_str()) {
        let message = format!("unknown policy; one of {}", MAXMEMORY_POLICIES.join(", "));
        findings.push(cx.base_finding("redis.maxmemory-policy", message));
    }
    if redis_memory(&redis.maxmemory).is_none_or(|bytes| bytes == 0) {
        let message = format!(
            "`{}` is not a positive memory size such as 1gb",
            redis.maxmemory
        );
        findings.push(cx.base_finding("redis.maxmemory", message));
    }
    if redis.maxmemory_policy == "noeviction" && redis.persistence == RedisPersistence::None {
        let message = "a cache that cannot evict fails writes when full".into();
        findings.push(cx.base_finding("redis.maxmemory-policy", message));
    }
    let patterns: BTreeSet<&str> = redis
        .key_families
        .values()
        .map(|f| f.pattern.as_str())
        .collect();
    for pattern in REDIS_KEY_PATTERNS {
        if !patterns.contains(pattern) {
            let message = format!("key family `{pattern}` of section 11.4 is missing");
            findings.push(cx.base_finding("redis.key-families", message));
        }
    }
    for (id, family) in &redis.key_families {
        let field = format!("redis.key-families.{id}.ttl-seconds");
        if family.ttl_seconds == 0 {
            let message = "every key needs a TTL: Redis is never the source of truth".into();
            findings.push(cx.base_finding(&field, message));
        }
        if family.pattern.starts_with("access:") && !(300..=900).contains(&family.ttl_seconds) {
            let message = "access cache TTL must be 5-15 minutes (11.5)".into();
            findings.push(cx.base_finding(&field, message));
        }
        let floor = base.tokens.access_ttl_seconds + base.tokens.clock_skew_seconds;
        if family.pattern.starts_with("revoked:") && family.ttl_seconds < floor {
            let message =
                format!("revocation markers must outlive access tokens: at least {floor} s (11.5)");
            findings.push(cx.base_finding(&field, message));
        }
    }
    findings
}

fn upstream_timeouts(cx: &Context) -> Vec<Finding> {
    let base = cx.matrix.base();
    let mut findings = Vec::new();
    for (id, service) in &base.services {
        let t = service.timeouts;
        let field = format!("services.{id}.timeouts");
        if t.connect_seconds == 0 || t.read_seconds == 0 || t.idle_seconds == 0 {
            findings.push(cx.base_finding(&field, "timeouts must be positive".into()));
        } else if t.connect_seconds > t.read_seconds {
            findings.push(cx.base_finding(&field, "connect timeout exceeds read timeout".into()));
        }
    }
    let by_unit = |unit: &str| base.services.iter().find(|(_, s)| s.unit == unit);
    if let (Some((_, auth)), Some((ai_id, ai))) = (by_unit("auth-backend"), by_unit("ai-backend"))
        && ai.timeouts.read_seconds <= auth.timeouts.read_seconds
    {
        let message = "AI endpoints need a longer read timeout than Auth (17.4)".into();
        findings.push(cx.base_finding(&format!("services.{ai_id}.timeouts.read-seconds"), message));
    }
    findings
}

fn tls_policy(cx: &Context) -> Vec<Finding> {
    let tls = &cx.matrix.base().tls;
    let mut findings = Vec::new();
    if tls.expiry_alert_days == 0 || tls.renewal_window_days <= tls.expiry_alert_days {
        let message = "renewal must start before the expiry alert would fire".into();
        findings.push(cx.base_finding("tls.renewal-window-days", message));
    }
    if tls.renewal_window_days >= 90 {
        let message = "a window of 90 days or more renews ACME certificates on every run".into();
        findings.push(cx.base_finding("tls.renewal-window-days", message));
    }
    if tls.hsts_max_age_seconds < 15_552_000 {
        let message = "HSTS max-age below 180 days".into();
        findings.push(cx.base_finding("tls.hsts-max-age-seconds", message));
    }
    if !tls.acme_directory.starts_with("https://") {
        findings.push(cx.base_finding("tls.acme-directory", "ACME directory must be https".into()));
    }
    findings
}

fn unique_ports(cx: &Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut taken: BTreeMap<u16, String> = BTreeMap::new();
    for (id, service) in &cx.matrix.base().services {
        for (name, port) in [
            ("http", service.ports.http),
            ("internal", service.ports.internal),
        ] {
            let field = format!("services.{id}.ports.{name}");
            if port < 1024 {
                let message = "ports below 1024 need privileges a non-root container lacks".into();
                findings.push(cx.base_finding(&field, message));
            }
            if let Some(other) = taken.insert(port, field.clone()) {
                findings.push(cx.base_finding(&field, format!("port {port} is also {other}")));
            }
        }
    }
    findings
}

/// Kubernetes quantity to a plain number (cores or bytes).
pub fn quantity(text: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 8] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("m", 0.001),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
    ];
    for (suffix, factor) in SUFFIXES {
        if let Some(number) = text.strip_suffix(suffix) {
            return number.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    text.parse().ok()
}

fn scaling(cx: &Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    for env in &cx.environments {
        for service in env.services.values() {
            let id = service.id;
            if service.replicas == 0
                || service.max_replicas < service.replicas
                || service.max_replicas > MAX_REPLICAS
            {
                let message = format!(
                    "{id}: replicas {} and max-replicas {} must satisfy 1 <= replicas <= max <= {MAX_REPLICAS}",
                    service.replicas, service.max_replicas
                );
                findings.push(in_env(env, &replicas_origin(env, id), message));
            }
            let r = service.resources;
            for (name, request, limit) in [
                ("cpu", &r.cpu_request, &r.cpu_limit),
                ("memory", &r.memory_request, &r.memory_limit),
            ] {
                let field = format!("services.{id}.resources");
                match (quantity(request), quantity(limit)) {
                    (Some(request_value), Some(limit_value)) if request_value > limit_value => {
                        let message = format!("{name} request {request} exceeds limit {limit}");
                        findings.push(in_env(env, &field, message));
                    }
                    (Some(_), Some(_)) => {}
                    _ => {
                        let message =
                            format!("{name} `{request}`/`{limit}` is not a Kubernetes quantity");
                        findings.push(in_env(env, &field, message));
                    }
                }
            }
        }
    }
    findings
}

/// The field that set a service's replica count in this environment.
fn replicas_origin(env: &Environment, id: &str) -> String {
    let own = env
        .file
        .services
        .get(id)
        .is_some_and(|s| s.replicas.is_some());
    if own {
        format!("services.{id}.replicas")
    } else if env.file.scale.is_some() {
        "scale.replicas".to_string()
    } else {
        format!("services.{id}.replicas")
    }
}

fn production_redundancy(cx: &Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    for env in cx.environments.iter().filter(|env| env.is_production()) {
        for service in env.services.values().filter(|s| s.replicas < 2) {
            let field = replicas_origin(env, service.id);
            let message = format!("{} runs a single instance in production", service.id);
            findings.push(in_env(env, &field, message));
        }
    }
    findings
}

fn image_tagged(cx: &Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    for env in cx.environments.iter().filter(|env| env.name != "local") {
        let mut untagged = Vec::new();
        let explicit_latest = env.file.image_tag.as_deref() == Some("latest");
        for service in env
            .services
            .values()
            .filter(|s| s.image.ends_with(":latest"))
        {
            let own = env
                .file
                .services
                .get(service.id)
                .is_some_and(|s| s.image_tag.is_some());
            if own {
                let field = format!("services.{}.image-tag", service.id);
                let message = format!("{} would run `:latest`; pin a version", service.id);
                findings.push(in_env(env, &field, message));
            } else {
                untagged.push(service.id);
            }
        }
        if !untagged.is_empty() {
            let message = if explicit_latest {
                format!(
                    "`latest` is not a version: {} would run whatever was pushed last",
                    untagged.join(", ")
                )
            } else {
                format!(
                    "no `image-tag`, so {} would run `:latest`; set one for the environment",
                    untagged.join(", ")
                )
            };
            findings.push(at(env.source, Some(env.name), "image-tag", message));
        }
    }
    findings
}

fn frontend_headers(cx: &Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (id, frontend) in &cx.matrix.base().frontends {
        let csp = &frontend.content_security_policy;
        let framing = csp
            .split(';')
            .map(str::trim)
            .find_map(|directive| directive.strip_prefix("frame-ancestors"))
            .map(str::trim);
        let no_framing = matches!(framing, Some("'none'" | "'self'"));
        let wide_open = csp.split(';').map(str::trim).any(|directive| {
            let mut words = directive.split_whitespace();
            let name = words.next().unwrap_or_default();
            let sources: Vec<&str> = words.collect();
            (name == "default-src" || name == "script-src")
                && sources
                    .iter()
                    .any(|s| *s == "*" || *s == "'unsafe-eval'" || *s == "data:")
        });
        if wide_open {
            let field = format!("frontends.{id}.content-security-policy");
            let message = "CSP allows any origin, data: or eval for scripts (5.4)".into();
            findings.push(cx.base_finding(&field, message));
        }
        if !no_framing || !csp.contains("default-src") {
            let field = format!("frontends.{id}.content-security-policy");
            let message = "CSP needs default-src and frame-ancestors 'none' or 'self' (5.4)".into();
            findings.push(cx.base_finding(&field, message));
        }
    }
    findings
}

fn unused_secret(cx: &Context) -> Vec<Finding> {
    let base = cx.matrix.base();
    let read: BTreeSet<&String> = base
        .services
        .values()
        .flat_map(|s| s.config.values())
        .chain(base.common_config.values())
        .filter_map(|e| e.secret.as_ref())
        .chain(base.databases.values().map(|d| &d.credentials))
        .chain(
            base.databases
                .values()
                .filter_map(|d| d.migration_credentials.as_ref()),
        )
        .collect();
    let kisumctl_only = [
        SecretCategory::JwtPublicKeys,
        SecretCategory::AcmeAccountKey,
        SecretCategory::TlsCertificate,
        SecretCategory::SmokeTestCredential,
        SecretCategory::DatabaseAdminCredential,
        SecretCategory::RedisAdminCredential,
        SecretCategory::BackupEncryptionKey,
    ];
    base.secrets
        .iter()
        .filter(|(id, secret)| !read.contains(id) && !kisumctl_only.contains(&secret.category))
        .map(|(id, _)| {
            cx.base_finding(
                &format!("secrets.{id}"),
                format!("`{id}` is read by nothing"),
            )
        })
        .collect()
}

/// The secrets kisumctl itself logs in with are declared, each of the
/// category its use needs, so that `inventory` lists them and a missing one
/// is found before an incident rather than during it.
fn operator_secrets(cx: &Context) -> Vec<Finding> {
    let base = cx.matrix.base();
    let mut wanted: Vec<(String, String, SecretCategory, &str)> = Vec::new();
    let mut findings = Vec::new();
    for (id, db) in &base.databases {
        if db.engine == Engine::Undecided {
            continue;
        }
        wanted.push((
            format!("databases.{id}.cluster"),
            super::model::superuser_secret(&db.cluster),
            SecretCategory::DatabaseAdminCredential,
            "database-admin-credential",
        ));
        if db.engine != Engine::Postgresql {
            continue;
        }
        match &db.migration_credentials {
            Some(secret) => wanted.push((
                format!("databases.{id}.migration-credentials"),
                secret.clone(),
                SecretCategory::DatabaseMigrationCredential,
                "database-migration-credential",
            )),
            None => findings.push(cx.base_finding(
                &format!("databases.{id}"),
                "a PostgreSQL database needs `migration-credentials`: the login of the role that owns its objects".into(),
            )),
        }
    }
    for (secret, category, name) in [
        (
            super::model::REDIS_ADMIN_SECRET,
            SecretCategory::RedisAdminCredential,
            "redis-admin-credential",
        ),
        (
            super::model::BACKUP_IDENTITY_SECRET,
            SecretCategory::BackupEncryptionKey,
            "backup-encryption-key",
        ),
    ] {
        wanted.push(("secrets".into(), secret.into(), category, name));
    }
    for (field, secret, category, name) in wanted {
        let message = match base.secrets.get(&secret) {
            Some(entry) if entry.category == category => continue,
            Some(_) => format!("`{secret}` must be of category `{name}`"),
            None => format!("`{secret}` is not in the secrets inventory (category `{name}`)"),
        };
        findings.push(cx.base_finding(&field, message));
    }
    findings
}

fn backup_encryption(cx: &Context) -> Vec<Finding> {
    cx.environments
        .iter()
        .filter(|env| env.is_production() && env.file.backups.age_recipients.is_empty())
        .map(|env| {
            let message = "no age recipients: backups rely on the store's own encryption".into();
            in_env(env, "backups", message)
        })
        .collect()
}

fn assumption_path(cx: &Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    let base_source = cx.matrix.base_source();
    let files = std::iter::once((None, base_source, &cx.matrix.base().assumptions)).chain(
        cx.environments
            .iter()
            .map(|env| (Some(env.name), env.source, &env.file.assumptions)),
    );
    for (environment, source, assumptions) in files {
        for (n, assumption) in assumptions.iter().enumerate() {
            if !source.has(&assumption.path) {
                let message = format!("`{}` does not exist in this file", assumption.path);
                findings.push(at(
                    source,
                    environment,
                    &format!("assumptions.{n}.path"),
                    message,
                ));
            }
        }
    }
    findings
}

fn open_decision(cx: &Context) -> Vec<Finding> {
    let base = cx.matrix.base();
    let mut findings = Vec::new();
    for (n, decision) in base.open_decisions.iter().enumerate() {
        let message = format!("open: {} (section {})", decision.question, decision.section);
        findings.push(cx.base_finding(&format!("open-decisions.{n}"), message));
    }
    for (id, db) in &base.databases {
        let path = format!("databases.{id}.engine");
        let listed = base
            .open_decisions
            .iter()
            .any(|d| d.affects.contains(&path));
        if db.engine == Engine::Undecided && !listed {
            let message = format!("{id} has no engine and no open decision lists it");
            findings.push(cx.base_finding(&path, message));
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::matrix::load::Loaded;
    use crate::matrix::schema::{Assumption, Visibility};

    fn shipped() -> Matrix {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("environments");
        Matrix::load(&dir).expect("the shipped matrix loads")
    }

    /// Findings of `rule` after `edit` is applied to the shipped matrix.
    fn flagged(rule: &str, edit: impl FnOnce(&mut Loaded)) -> Vec<Finding> {
        let mut matrix = shipped();
        edit(&mut matrix.loaded);
        check(&matrix)
            .into_iter()
            .filter(|f| f.rule == rule)
            .collect()
    }

    fn env_file<'a>(
        loaded: &'a mut Loaded,
        name: &str,
    ) -> &'a mut super::super::schema::EnvironmentFile {
        &mut loaded
            .environments
            .get_mut(name)
            .expect("environment exists")
            .0
    }

    fn assert_one_at(findings: &[Finding], field: &str) {
        assert!(
            findings.iter().any(|f| f.field == field),
            "expected a finding at {field}, got {findings:#?}"
        );
    }

    #[test]
    fn the_shipped_matrix_violates_no_rule() {
        let errors: Vec<Finding> = check(&shipped())
            .into_iter()
            .filter(|f| f.level == Level::Error)
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
    }

    #[test]
    fn rule_ids_are_unique() {
        let ids: BTreeSet<&str> = RULES.iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), RULES.len());
    }

    #[test]
    fn required_environments_flags_a_missing_one_and_a_second_production_tier() {
        let findings = flagged("required-environments", |m| {
            m.environments.remove("dev");
            env_file(m, "staging").tier = super::super::schema::Tier::Production;
        });
        assert!(findings.iter().any(|f| f.message.contains("dev.yaml")));
        assert_one_at(&findings, "tier");
    }

    #[test]
    fn core_internal_flags_a_public_core() {
        let findings = flagged("core-internal", |m| {
            m.base.services.get_mut("platform-core").unwrap().exposure = Exposure::Public;
        });
        assert_one_at(&findings, "services.platform-core.exposure");
    }

    #[test]
    fn internal_host_private_flags_core_in_a_public_zone() {
        let findings = flagged("internal-host-private", |m| {
            m.base.services.get_mut("platform-core").unwrap().zone = "kisum-io".into();
            m.base.services.get_mut("platform-core").unwrap().host = "core.kisum.io".into();
        });
        assert_one_at(&findings, "services.platform-core.zone");
    }

    #[test]
    fn internal_host_private_flags_a_frontend_in_a_private_zone() {
        let findings = flagged("internal-host-private", |m| {
            m.base.dns.zones.get_mut("kisum-io").unwrap().visibility = Visibility::Private;
        });
        assert_one_at(&findings, "frontends.app.zone");
    }

    #[test]
    fn data_private_flags_public_databases_redis_and_plain_connections() {
        let findings = flagged("data-private", |m| {
            let prod = env_file(m, "production");
            prod.databases
                .get_mut("auth-db")
                .unwrap()
                .publicly_accessible = true;
            prod.redis.tls_required = false;
        });
        assert_one_at(&findings, "databases.auth-db.publicly-accessible");
        assert_one_at(&findings, "redis.tls-required");
    }

    #[test]
    fn data_private_allows_plain_connections_on_local_loopback() {
        assert!(flagged("data-private", |_| {}).is_empty());
    }

    #[test]
    fn public_tls_flags_disabled_tls_and_a_private_ca_on_managed_dns() {
        let findings = flagged("public-tls", |m| {
            env_file(m, "staging").tls.mode = TlsMode::Disabled;
            env_file(m, "dev").tls.mode = TlsMode::SelfSigned;
        });
        assert_eq!(findings.len(), 2, "{findings:#?}");
        assert!(
            findings
                .iter()
                .any(|f| f.message.contains("auth-staging.kisum.io"))
        );
    }

    #[test]
    fn dns_separation_flags_a_production_host_reused_in_staging() {
        let findings = flagged("dns-separation", |m| {
            let staging = env_file(m, "staging");
            staging.services.entry("auth".into()).or_default().host = Some("auth.kisum.io".into());
        });
        assert_one_at(&findings, "services.auth.host");
        assert!(findings[0].message.contains("production"), "{findings:#?}");
    }

    #[test]
    fn secret_separation_flags_staging_reading_production_secrets() {
        let findings = flagged("secret-separation", |m| {
            let production = env_file(m, "production").secrets.clone();
            env_file(m, "staging").secrets = production;
        });
        assert_eq!(findings[0].environment.as_deref(), Some("staging"));
    }

    #[test]
    fn secret_account_separation_warns_on_a_shared_aws_account() {
        let findings = flagged("secret-account-separation", |m| {
            if let SecretBackend::AwsSecretsManager { account, .. } =
                &mut env_file(m, "dev").secrets
            {
                *account = "210987654321".into();
            }
        });
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].level, Level::Warning);
    }

    #[test]
    fn no_inline_secret_flags_values_for_credentials_and_inline_overrides() {
        let findings = flagged("no-inline-secret", |m| {
            let entry = m
                .base
                .services
                .get_mut("finance")
                .unwrap()
                .config
                .get_mut("DATABASE_URL");
            let entry = entry.unwrap();
            entry.secret = None;
            entry.secret_key = None;
            entry.value = Some("postgres://finance:hunter2@db/finance".into());
            let local = env_file(m, "local")
                .services
                .entry("auth".into())
                .or_default();
            local
                .config
                .insert("AUTH_DB_URL".into(), "postgres://x".into());
        });
        assert_one_at(&findings, "services.finance.config.DATABASE_URL.value");
        assert_one_at(&findings, "services.auth.config.AUTH_DB_URL");
    }

    #[test]
    fn secret_names_and_values_are_recognised() {
        assert!(is_secret_name("AUTH_DB_URL"));
        assert!(is_secret_name("EMAIL_PROVIDER_KEY"));
        assert!(!is_secret_name("ACCESS_TOKEN_TTL"));
        assert!(!is_secret_name("JWT_AUDIENCE"));
        assert!(looks_like_secret_value("redis://user:pw@host:6379"));
        assert!(!looks_like_secret_value("https://auth.kisum.io"));
    }

    #[test]
    fn db_credential_unshared_flags_a_second_reader() {
        let findings = flagged("db-credential-unshared", |m| {
            let market = m.base.services.get_mut("market").unwrap();
            market.config.get_mut("DATABASE_URL").unwrap().secret =
                Some("touring-db-credentials".into());
        });
        assert!(
            findings
                .iter()
                .any(|f| f.field == "secrets.touring-db-credentials")
        );
        assert_one_at(&findings, "services.market.config.DATABASE_URL");
    }

    #[test]
    fn egress_in_traffic_matrix_flags_an_unlisted_call() {
        let findings = flagged("egress-in-traffic-matrix", |m| {
            m.base
                .services
                .get_mut("finance")
                .unwrap()
                .egress
                .push("redis".into());
        });
        assert_one_at(&findings, "services.finance.egress.2");
    }

    #[test]
    fn data_owner_only_flags_another_services_database() {
        let findings = flagged("data-owner-only", |m| {
            m.base
                .traffic
                .get_mut("auth")
                .unwrap()
                .push("finance-db".into());
            m.base
                .services
                .get_mut("auth")
                .unwrap()
                .egress
                .push("finance-db".into());
        });
        assert_one_at(&findings, "services.auth.egress.4");
    }

    #[test]
    fn data_owner_only_flags_an_owner_without_egress_to_its_database() {
        let findings = flagged("data-owner-only", |m| {
            m.base
                .services
                .get_mut("finance")
                .unwrap()
                .egress
                .retain(|t| t != "finance-db");
        });
        assert_one_at(&findings, "services.finance.egress");
    }

    #[test]
    fn core_callers_flags_a_module_calling_core() {
        let findings = flagged("core-callers", |m| {
            m.base
                .services
                .get_mut("basic")
                .unwrap()
                .egress
                .push("platform-core".into());
        });
        assert_one_at(&findings, "services.basic.egress.3");
    }

    #[test]
    fn core_callers_flags_core_calling_auth() {
        let findings = flagged("core-callers", |m| {
            m.base
                .services
                .get_mut("platform-core")
                .unwrap()
                .egress
                .push("auth".into());
        });
        assert_one_at(&findings, "services.platform-core.egress.2");
    }

    #[test]
    fn service_auth_flags_a_callee_that_cannot_verify_the_caller() {
        let findings = flagged("service-auth", |m| {
            m.base
                .services
                .get_mut("auth")
                .unwrap()
                .config
                .remove("INTERNAL_CALLER_FINANCE");
        });
        assert!(
            findings
                .iter()
                .any(|f| f.message.contains("cannot verify finance")),
            "{findings:#?}"
        );
    }

    #[test]
    fn service_auth_flags_a_call_without_credential() {
        let findings = flagged("service-auth", |m| {
            m.base
                .services
                .get_mut("finance")
                .unwrap()
                .config
                .remove("INTERNAL_CREDENTIAL");
        });
        assert_one_at(&findings, "services.finance.egress.1");
    }

    #[test]
    fn jwt_keys_flags_a_module_reading_the_signing_keys() {
        let findings = flagged("jwt-keys", |m| {
            let auth_entry = m.base.services["auth"].config["JWT_KEY_SET"].clone();
            let ai = m.base.services.get_mut("ai").unwrap();
            ai.config.insert("JWT_KEY_SET".into(), auth_entry);
        });
        assert_one_at(&findings, "services.ai.config.JWT_KEY_SET");
    }

    #[test]
    fn health_endpoints_flags_other_paths() {
        let findings = flagged("health-endpoints", |m| {
            m.base.services.get_mut("venue").unwrap().health.readiness = "/healthz".into();
        });
        assert_one_at(&findings, "services.venue.health.readiness");
    }

    #[test]
    fn backups_complete_flags_an_rpo_the_schedule_cannot_meet() {
        let findings = flagged("backups-complete", |m| {
            let db = m.base.databases.get_mut("finance-db").unwrap();
            db.backup.point_in_time_recovery = false;
        });
        assert_one_at(&findings, "databases.finance-db.rpo-minutes");
    }

    #[test]
    fn backups_complete_flags_a_malformed_schedule() {
        let findings = flagged("backups-complete", |m| {
            m.base
                .databases
                .get_mut("main-db")
                .unwrap()
                .backup
                .drill_schedule = "weekly".into();
        });
        assert_one_at(&findings, "databases.main-db.backup.drill-schedule");
    }

    #[test]
    fn cron_intervals_are_read_from_the_fields() {
        assert_eq!(cron_interval_minutes("*/5 * * * *"), Ok(5));
        assert_eq!(cron_interval_minutes("0 * * * *"), Ok(60));
        assert_eq!(cron_interval_minutes("0 */4 * * *"), Ok(240));
        assert_eq!(cron_interval_minutes("0 2 * * *"), Ok(1440));
        assert_eq!(cron_interval_minutes("0 5 * * 1"), Ok(10080));
        assert!(cron_interval_minutes("0 2 * *").is_err());
    }

    #[test]
    fn restore_order_flags_duplicates_and_core_before_auth() {
        let findings = flagged("restore-order", |m| {
            m.base
                .databases
                .get_mut("platform-core-db")
                .unwrap()
                .restore_priority = 1;
        });
        assert_one_at(&findings, "databases.platform-core-db.restore-priority");
    }

    #[test]
    fn production_backups_flags_backups_off() {
        let findings = flagged("production-backups", |m| {
            env_file(m, "production").backups.enabled = false;
        });
        assert_one_at(&findings, "backups.enabled");
    }

    #[test]
    fn production_backups_flags_a_database_with_no_deployment() {
        let findings = flagged("production-backups", |m| {
            env_file(m, "production").databases.remove("finance-db");
        });
        assert!(findings[0].message.contains("finance-db"));
    }

    #[test]
    fn production_alerts_flags_alerts_off_in_staging_but_not_dev() {
        let findings = flagged("production-alerts", |m| {
            env_file(m, "staging").monitoring.alerts = false;
        });
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].environment.as_deref(), Some("staging"));
    }

    #[test]
    fn mandatory_alerts_flags_a_missing_alert_and_a_mismatched_expiry() {
        let findings = flagged("mandatory-alerts", |m| {
            m.base.alerts.remove("backup-failure");
            m.base.tls.expiry_alert_days = 7;
        });
        assert!(
            findings
                .iter()
                .any(|f| f.message.contains("backup-failure"))
        );
        assert_one_at(&findings, "alerts.certificate-expiry.threshold");
    }

    #[test]
    fn mandatory_alerts_flags_a_zero_threshold_that_always_fires_and_template_braces() {
        let findings = flagged("mandatory-alerts", |m| {
            m.base
                .alerts
                .get_mut("readiness-failing")
                .unwrap()
                .threshold = 0.0;
        });
        assert_one_at(&findings, "alerts.readiness-failing.threshold");
        let findings = flagged("mandatory-alerts", |m| {
            m.base.alerts.get_mut("elevated-5xx").unwrap().unit = "ratio {{ of responses".into();
        });
        assert_one_at(&findings, "alerts.elevated-5xx.unit");
        // service-down fires at `<= 0` ready instances: 0 is its threshold.
        assert!(
            flagged("mandatory-alerts", |m| {
                m.base.alerts.get_mut("service-down").unwrap().threshold = 0.0;
            })
            .is_empty()
        );
    }

    #[test]
    fn redis_policy_flags_short_revocation_markers_and_missing_families() {
        let findings = flagged("redis-policy", |m| {
            let families = &mut m.base.redis.key_families;
            families.get_mut("revoked-session").unwrap().ttl_seconds = 60;
            families.remove("company-map");
            families.get_mut("access-context").unwrap().ttl_seconds = 3600;
        });
        assert_one_at(&findings, "redis.key-families.revoked-session.ttl-seconds");
        assert_one_at(&findings, "redis.key-families.access-context.ttl-seconds");
        assert!(
            findings
                .iter()
                .any(|f| f.message.contains("company-map:{raw-x-org}"))
        );
    }

    #[test]
    fn redis_memory_sizes_follow_redis_units() {
        assert_eq!(redis_memory("1gb"), Some(1 << 30));
        assert_eq!(redis_memory("100m"), Some(100_000_000));
        assert_eq!(redis_memory("4096"), Some(4096));
        assert_eq!(redis_memory("lots"), None);
    }

    #[test]
    fn redis_policy_flags_unbounded_memory() {
        let findings = flagged("redis-policy", |m| m.base.redis.maxmemory = "0".into());
        assert_one_at(&findings, "redis.maxmemory");
    }

    #[test]
    fn frontend_headers_flags_framing_allowed_for_everyone() {
        let findings = flagged("frontend-headers", |m| {
            let csp = "default-src 'self'; frame-ancestors *".to_string();
            m.base
                .frontends
                .get_mut("admin")
                .unwrap()
                .content_security_policy = csp;
        });
        assert_one_at(&findings, "frontends.admin.content-security-policy");
    }

    #[test]
    fn required_config_flags_a_required_setting_without_value() {
        let findings = flagged("required-config", |m| {
            let entry = m
                .base
                .services
                .get_mut("auth")
                .unwrap()
                .config
                .get_mut("JWT_AUDIENCE");
            entry.unwrap().value = None;
        });
        assert_one_at(&findings, "services.auth.config.JWT_AUDIENCE");
        assert_eq!(findings.len(), 4, "one per environment: {findings:#?}");
    }

    #[test]
    fn jwt_keys_flags_signing_keys_in_common_config() {
        let findings = flagged("jwt-keys", |m| {
            let entry = m.base.services["auth"].config["JWT_KEY_SET"].clone();
            m.base.common_config.insert("JWT_KEY_SET".into(), entry);
        });
        assert_one_at(&findings, "common-config.JWT_KEY_SET");
    }

    #[test]
    fn redis_policy_flags_an_unknown_eviction_policy() {
        let findings = flagged("redis-policy", |m| {
            m.base.redis.maxmemory_policy = "lru".into()
        });
        assert_one_at(&findings, "redis.maxmemory-policy");
    }

    #[test]
    fn upstream_timeouts_flags_ai_not_longer_than_auth() {
        let findings = flagged("upstream-timeouts", |m| {
            m.base.services.get_mut("ai").unwrap().timeouts.read_seconds = 15;
        });
        assert_one_at(&findings, "services.ai.timeouts.read-seconds");
    }

    #[test]
    fn tls_policy_flags_renewal_after_the_alert() {
        let findings = flagged("tls-policy", |m| m.base.tls.renewal_window_days = 10);
        assert_one_at(&findings, "tls.renewal-window-days");
    }

    #[test]
    fn unique_ports_flags_a_clash() {
        let findings = flagged("unique-ports", |m| {
            m.base.services.get_mut("venue").unwrap().ports.http = 8101;
        });
        assert_one_at(&findings, "services.venue.ports.http");
    }

    #[test]
    fn scaling_flags_requests_above_limits_and_zero_replicas() {
        let findings = flagged("scaling", |m| {
            let auth = m.base.services.get_mut("auth").unwrap();
            auth.resources.cpu_request = "2".into();
            env_file(m, "production")
                .services
                .entry("ai".into())
                .or_default()
                .replicas = Some(0);
        });
        assert_one_at(&findings, "services.auth.resources");
        assert_one_at(&findings, "services.ai.replicas");
    }

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(quantity("250m"), Some(0.25));
        assert_eq!(quantity("2"), Some(2.0));
        assert_eq!(quantity("512Mi"), Some(536870912.0));
        assert_eq!(quantity("lots"), None);
    }

    #[test]
    fn production_redundancy_warns_on_a_single_instance() {
        let findings = flagged("production-redundancy", |m| {
            env_file(m, "production")
                .services
                .entry("venue".into())
                .or_default()
                .replicas = Some(1);
        });
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].level, Level::Warning);
    }

    #[test]
    fn image_tagged_flags_latest_outside_local() {
        let findings = flagged("image-tagged", |m| {
            let staging = env_file(m, "staging");
            staging.image_tag = None;
            let finance = staging.services.entry("finance".into()).or_default();
            finance.image_tag = Some("latest".into());
        });
        assert_one_at(&findings, "services.finance.image-tag");
        assert_one_at(&findings, "image-tag");
    }

    #[test]
    fn frontend_headers_flags_a_csp_that_allows_framing() {
        let findings = flagged("frontend-headers", |m| {
            m.base
                .frontends
                .get_mut("app")
                .unwrap()
                .content_security_policy = "default-src 'self'".into();
        });
        assert_one_at(&findings, "frontends.app.content-security-policy");
    }

    #[test]
    fn unused_secret_warns_on_an_orphan() {
        let findings = flagged("unused-secret", |m| {
            m.base
                .services
                .get_mut("ai")
                .unwrap()
                .config
                .remove("AI_PROVIDER_KEY");
        });
        assert_one_at(&findings, "secrets.ai-provider-key");
    }

    #[test]
    fn operator_secrets_must_be_declared_with_their_category() {
        assert!(flagged("operator-secrets", |_| {}).is_empty());
        let findings = flagged("operator-secrets", |m| {
            m.base.secrets.remove("core-postgres-superuser");
            let finance = m.base.databases.get_mut("finance-db").unwrap();
            finance.migration_credentials = None;
            let identity = m.base.secrets.get_mut("backup-age-identity").unwrap();
            identity.category = SecretCategory::DatabaseCredential;
        });
        let fields: Vec<&str> = findings.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "databases.platform-core-db.cluster",
                "databases.finance-db",
                "secrets"
            ]
        );
    }

    #[test]
    fn backup_encryption_warns_until_recipients_are_set() {
        assert_eq!(flagged("backup-encryption", |_| {}).len(), 1);
        let findings = flagged("backup-encryption", |m| {
            env_file(m, "production").backups.age_recipients = vec!["age1example".into()];
        });
        assert!(findings.is_empty());
    }

    #[test]
    fn assumption_path_flags_a_stale_assumption() {
        let findings = flagged("assumption-path", |m| {
            m.base.assumptions.push(Assumption {
                path: "services.nothing.host".into(),
                reason: "gone".into(),
            });
        });
        assert_eq!(findings.len(), 1);
        assert!(findings[0].message.contains("services.nothing.host"));
    }

    #[test]
    fn open_decision_lists_each_question_and_an_unlisted_undecided_engine() {
        assert!(flagged("open-decision", |_| {}).is_empty());
        let findings = flagged("open-decision", |m| {
            let venue = m.base.databases.get_mut("venue-db").unwrap();
            venue.engine = super::super::schema::Engine::Undecided;
        });
        assert_one_at(&findings, "databases.venue-db.engine");
        let findings = flagged("open-decision", |m| {
            m.base.databases.get_mut("ai-db").unwrap().engine =
                super::super::schema::Engine::Undecided;
            m.base
                .open_decisions
                .push(super::super::schema::OpenDecision {
                    id: "ai-storage".into(),
                    question: "which store the AI backend uses".into(),
                    section: "8.7".into(),
                    affects: vec!["databases.ai-db.engine".into()],
                });
        });
        assert_eq!(
            findings.len(),
            1,
            "listed once, not also as unlisted: {findings:#?}"
        );
        assert!(findings[0].message.contains("which store"));
    }

    #[test]
    fn deployment_units_flags_a_renamed_unit_and_a_duplicate() {
        let findings = flagged("deployment-units", |m| {
            m.base.services.get_mut("platform-core").unwrap().unit = "platform-core".into();
            m.base.services.get_mut("market").unwrap().unit = "auth-backend".into();
        });
        assert_one_at(&findings, "services.platform-core.unit");
        assert_one_at(&findings, "services.market.unit");
        assert!(
            findings
                .iter()
                .any(|f| f.message.contains("platform-core-backend"))
        );
    }

    #[test]
    fn environment_separation_flags_a_shared_namespace_and_a_system_one() {
        let findings = flagged("environment-separation", |m| {
            env_file(m, "staging").namespace = "kisum-production".into();
            env_file(m, "dev").namespace = "kube-system".into();
        });
        assert!(
            findings
                .iter()
                .any(|f| f.environment.as_deref() == Some("staging"))
        );
        assert!(findings.iter().any(|f| f.message.contains("kube-system")));
    }

    #[test]
    fn environment_separation_flags_a_shared_backup_bucket() {
        let findings = flagged("environment-separation", |m| {
            let store = env_file(m, "production").backups.store.clone();
            env_file(m, "staging").backups.store = store;
        });
        assert_one_at(&findings, "backups.store");
    }

    #[test]
    fn config_override_flags_an_issuer_changed_per_environment() {
        let findings = flagged("config-override", |m| {
            let ai = env_file(m, "production")
                .services
                .entry("ai".into())
                .or_default();
            ai.config
                .insert("JWT_ISSUER".into(), "https://attacker.example".into());
            let auth = env_file(m, "production")
                .services
                .entry("auth".into())
                .or_default();
            auth.config.insert("LOG_LEVEL".into(), "debug".into());
        });
        assert_one_at(&findings, "services.ai.config.JWT_ISSUER");
        assert_eq!(findings.len(), 1, "LOG_LEVEL may vary: {findings:#?}");
    }

    #[test]
    fn production_secret_manager_flags_plain_files() {
        let findings = flagged("production-secret-manager", |m| {
            env_file(m, "production").secrets = SecretBackend::LocalFiles {
                path: "/srv/secrets".into(),
            };
        });
        assert_eq!(findings.len(), 1);
    }

    #[test]
    fn data_private_flags_a_public_network_and_a_network_shared_across_clusters() {
        let findings = flagged("data-private", |m| {
            let prod = env_file(m, "production");
            prod.databases.get_mut("finance-db").unwrap().endpoint.cidr = "0.0.0.0/0".into();
            let auth_cidr = prod.databases["auth-db"].endpoint.cidr.clone();
            prod.databases
                .get_mut("platform-core-db")
                .unwrap()
                .endpoint
                .cidr = auth_cidr;
        });
        assert_one_at(&findings, "databases.finance-db.endpoint.cidr");
        assert_one_at(&findings, "databases.platform-core-db.endpoint.cidr");
    }

    #[test]
    fn public_tls_requires_acme_in_production_even_without_managed_dns() {
        let findings = flagged("public-tls", |m| {
            let prod = env_file(m, "production");
            prod.dns.managed = false;
            prod.tls.mode = TlsMode::SelfSigned;
        });
        assert_eq!(findings.len(), 1);
    }

    #[test]
    fn production_backups_flags_a_short_retention() {
        let findings = flagged("production-backups", |m| {
            let prod = env_file(m, "production");
            prod.databases.get_mut("auth-db").unwrap().retention_days = Some(1);
        });
        assert_one_at(&findings, "databases.auth-db.retention-days");
    }

    #[test]
    fn scaling_flags_absurd_replica_counts() {
        let findings = flagged("scaling", |m| {
            m.base.services.get_mut("auth").unwrap().max_replicas = 4_294_967_295;
        });
        assert!(findings.iter().any(|f| f.message.contains("auth:")));
    }

    #[test]
    fn frontend_headers_flags_wildcards_and_eval() {
        let findings = flagged("frontend-headers", |m| {
            let csp = "default-src * 'unsafe-eval'; frame-ancestors 'none'".to_string();
            m.base
                .frontends
                .get_mut("app")
                .unwrap()
                .content_security_policy = csp;
        });
        assert_one_at(&findings, "frontends.app.content-security-policy");
    }

    #[test]
    fn no_inline_secret_checks_what_a_template_expands_to() {
        let findings = flagged("no-inline-secret", |m| {
            let entry = m.base.common_config.get_mut("SERVICE_NAME").unwrap();
            entry.value = Some(r#"{{ "-----BEG" ~ "IN PRIVATE KEY----- X" }}"#.into());
        });
        assert_one_at(&findings, "common-config.SERVICE_NAME");
    }

    #[test]
    fn credential_shaped_values_are_recognised() {
        for value in [
            "user:pw@db:5432",
            "host=db password=x",
            "ASIAXXXXXXXX",
            "ghp_abcdef",
            "sk_live_123",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
            "Bearer abc",
        ] {
            assert!(looks_like_secret_value(value), "{value}");
        }
        for value in ["info", "https://auth.kisum.io", "kisum-api", "900"] {
            assert!(!looks_like_secret_value(value), "{value}");
        }
    }

    #[test]
    fn dns_separation_blames_the_suffix_that_made_the_clash() {
        let findings = flagged("dns-separation", |m| {
            env_file(m, "staging").dns.host_suffix = String::new()
        });
        assert!(
            findings.iter().all(|f| f.field == "dns.host-suffix"),
            "{findings:#?}"
        );
        assert!(
            findings
                .iter()
                .all(|f| f.environment.as_deref() == Some("staging"))
        );
    }

    #[test]
    fn findings_point_at_the_line_that_must_change() {
        let findings = flagged("core-internal", |m| {
            m.base.services.get_mut("platform-core").unwrap().exposure = Exposure::Public;
        });
        let finding = &findings[0];
        let text = std::fs::read_to_string(&finding.file).unwrap();
        let line = text
            .lines()
            .nth(finding.position.unwrap().line as usize - 1)
            .unwrap();
        assert_eq!(line.trim(), "exposure: internal");
    }
}
