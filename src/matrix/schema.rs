//! The file formats of the environment matrix, exactly as written on disk.
//!
//! `environments/base.yaml` holds every fact shared by all environments;
//! `environments/<name>.yaml` holds what differs per environment. Every
//! struct denies unknown fields, so a typo is an error that names the file,
//! line and field path instead of a silently ignored setting.
//!
//! `docs/matrix-reference.md` documents every field; keep the two in step.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `environments/base.yaml`: the platform as the infrastructure plan
/// describes it, independent of any one environment.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BaseFile {
    pub platform: Platform,
    pub tokens: TokenPolicy,
    pub dns: DnsPolicy,
    pub tls: TlsPolicy,
    /// Dependencies outside the platform (email, billing, model providers).
    #[serde(default)]
    pub externals: BTreeMap<String, External>,
    /// The allowed traffic matrix: caller -> targets it may reach.
    pub traffic: BTreeMap<String, Vec<String>>,
    pub services: BTreeMap<String, Service>,
    pub frontends: BTreeMap<String, Frontend>,
    pub databases: BTreeMap<String, Database>,
    pub redis: Redis,
    /// Config entries every service receives (templated per service).
    pub common_config: BTreeMap<String, ConfigEntry>,
    pub secrets: BTreeMap<String, Secret>,
    pub alerts: BTreeMap<String, Alert>,
    pub kisumctl: KisumctlImage,
    pub schedules: Schedules,
    #[serde(default)]
    pub assumptions: Vec<Assumption>,
    #[serde(default)]
    pub open_decisions: Vec<OpenDecision>,
    /// Per service with a database: its schema level and the oldest level
    /// its code runs on (the rollback guard of `kisumctl deploy`).
    #[serde(default)]
    pub schema_levels: BTreeMap<String, SchemaLevel>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Platform {
    pub name: String,
    /// Kubernetes minor version the rendered manifests target, e.g. `1.33`.
    pub kubernetes_version: String,
    pub ingress: IngressController,
    /// Where the metrics scraper runs (NetworkPolicy source for /metrics).
    pub metrics_scraper: PodSource,
    /// Registry and path prefix of the service images.
    pub image_registry: String,
    /// UID and GID every container runs as.
    pub run_as_user: i64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IngressController {
    /// Only `ingress-nginx` is rendered today.
    pub controller: IngressKind,
    pub class_name: String,
    /// Namespace the controller's pods run in (NetworkPolicy source).
    pub namespace: String,
    /// Labels that select the controller's pods.
    pub pod_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PodSource {
    pub namespace: String,
    pub pod_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IngressKind {
    IngressNginx,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TokenPolicy {
    pub audience: String,
    pub access_ttl_seconds: u32,
    pub refresh_ttl_seconds: u32,
    /// How long backends may cache Auth's JWKS.
    pub jwks_cache_seconds: u32,
    pub clock_skew_seconds: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DnsPolicy {
    pub zones: BTreeMap<String, Zone>,
    pub default_ttl_seconds: u32,
    /// TTL used ahead of a cutover or migration.
    pub cutover_ttl_seconds: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Zone {
    pub domain: String,
    pub visibility: Visibility,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Visibility {
    Public,
    Private,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsPolicy {
    pub acme_directory: String,
    pub challenge: AcmeChallenge,
    /// Renew when fewer than this many days remain.
    pub renewal_window_days: u32,
    /// Alert when fewer than this many days remain.
    pub expiry_alert_days: u32,
    pub hsts_max_age_seconds: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AcmeChallenge {
    #[serde(rename = "dns-01")]
    Dns01,
    #[serde(rename = "http-01")]
    Http01,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct External {
    pub description: String,
    /// Destination port reached over the internet.
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exposure {
    Public,
    Internal,
}

/// How a service depends on Redis: `required` services are not ready
/// without it; `optional` ones use it when reachable and answer correctly
/// (slower) when it is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RedisUse {
    Required,
    Optional,
    None,
}

/// A backend deployment unit (spec section 7.3).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Service {
    pub title: String,
    /// Deployment unit name from the plan, e.g. `auth-backend`.
    pub unit: String,
    pub exposure: Exposure,
    /// Production host name; other environments derive theirs from it.
    pub host: String,
    /// Key of `dns.zones` the host lives in.
    pub zone: String,
    /// Release wave (spec 14.4): lower waves roll out first.
    pub release_wave: u8,
    pub ports: Ports,
    pub health: Health,
    /// Routes served only on the internal port.
    #[serde(default)]
    pub internal_routes: Vec<String>,
    pub database: Option<String>,
    pub redis: RedisUse,
    /// What this service actually calls; must stay inside `traffic`.
    pub egress: Vec<String>,
    pub config: BTreeMap<String, ConfigEntry>,
    pub timeouts: Timeouts,
    pub request_body_limit: String,
    pub replicas: u32,
    pub max_replicas: u32,
    pub resources: Resources,
    pub image: String,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Ports {
    /// Public routes (or, for internal-only services, the API port).
    pub http: u16,
    /// Internal routes: diagnostics, key reload, service-to-service calls.
    pub internal: u16,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Health {
    pub liveness: String,
    pub readiness: String,
}

/// One environment variable a service reads (spec section 13).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigEntry {
    pub required: bool,
    /// A plain, non-secret value, a tera template with the variables
    /// `environment`, `namespace`, `service`, `ports`, `hosts`, `urls`,
    /// `internal_urls` and `tokens` (see docs/matrix-reference.md).
    pub value: Option<String>,
    /// Key of `secrets`: the value is injected from the secret backend.
    pub secret: Option<String>,
    /// Key inside the secret (defaults to the variable name).
    pub secret_key: Option<String>,
    /// Whether an environment file may set its own plain value.
    #[serde(default)]
    pub per_environment: bool,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Timeouts {
    pub connect_seconds: u32,
    pub read_seconds: u32,
    pub idle_seconds: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Resources {
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: String,
    pub memory_limit: String,
}

/// A frontend: DNS and TLS only; it is hosted outside the cluster.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Frontend {
    pub title: String,
    pub host: String,
    pub zone: String,
    /// Content-Security-Policy the hosting must send.
    pub content_security_policy: String,
    /// Services whose base URLs the frontend is configured with (13.5).
    pub calls: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    Postgresql,
    Mongodb,
    /// The plan leaves the engine open; see `open-decisions`.
    Undecided,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Criticality {
    Highest,
    High,
    MediumHigh,
    Medium,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Database {
    pub engine: Engine,
    /// Database name on the server.
    pub name: String,
    pub owner: String,
    /// Named server the database lives on (several databases may share one).
    pub cluster: String,
    /// Key of `secrets` holding the owner's credentials.
    pub credentials: String,
    /// PostgreSQL: key of `secrets` holding the login of the migration
    /// role, which owns the database's objects (spec 9.1).
    #[serde(default)]
    pub migration_credentials: Option<String>,
    /// PostgreSQL: the directory of the owner's sqlx migrations, relative
    /// to the parent of the matrix directory.
    #[serde(default)]
    pub migrations: Option<String>,
    pub criticality: Criticality,
    /// Restore order in a major incident (spec 22.4), 1 first.
    pub restore_priority: u8,
    pub rpo_minutes: u32,
    pub rto_minutes: u32,
    pub backup: BackupPolicy,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BackupPolicy {
    /// Cron expression (UTC).
    pub schedule: String,
    pub retention_days: u32,
    pub point_in_time_recovery: bool,
    /// Cron expression (UTC) of the restore drill.
    pub drill_schedule: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RedisPersistence {
    None,
    Rdb,
    Aof,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Redis {
    pub persistence: RedisPersistence,
    /// Why this persistence was chosen (spec 28.8 asks for it documented).
    pub persistence_reason: String,
    pub maxmemory_policy: String,
    pub maxmemory: String,
    /// Restore order in a major incident (spec 22.4).
    pub restore_priority: u8,
    pub key_families: BTreeMap<String, KeyFamily>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KeyFamily {
    pub pattern: String,
    pub ttl_seconds: u32,
    pub owner: String,
    pub purpose: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretCategory {
    JwtSigningKey,
    JwtPublicKeys,
    DatabaseCredential,
    RedisCredential,
    InternalServiceCredential,
    BillingProviderKey,
    EmailProviderKey,
    AiProviderKey,
    AdminBootstrap,
    AcmeAccountKey,
    TlsCertificate,
    /// The identities the smoke checks act as; read by kisumctl only.
    SmokeTestCredential,
    /// A database's migration role, which owns its objects; read by
    /// kisumctl only.
    DatabaseMigrationCredential,
    /// The administrative login of a database server (`<cluster>-superuser`);
    /// read by kisumctl only.
    DatabaseAdminCredential,
    /// The Redis login of backups (`redis-admin-credentials`); read by
    /// kisumctl only.
    RedisAdminCredential,
    /// The age identity that decrypts backups (`backup-age-identity`); read
    /// by kisumctl only.
    BackupEncryptionKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Generation {
    /// Random password generated by kisumctl.
    Password,
    /// Random opaque token generated by kisumctl.
    Token,
    /// RSA key set with kids, generated and rotated by kisumctl.
    RsaKeySet,
    /// Derived from another secret (public keys of the key set).
    Derived,
    /// Issued through ACME by kisumctl.
    Acme,
    /// Supplied by a person or a provider; kisumctl only checks presence.
    External,
}

/// One entry of the secrets inventory (spec 12.1). Never a value.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Secret {
    pub category: SecretCategory,
    pub description: String,
    pub generate: Generation,
    pub rotation_days: u32,
    /// Keys held inside the secret.
    pub keys: Vec<String>,
    /// Who checks the credential: the services a caller presents it to,
    /// or the database or Redis it opens.
    #[serde(default)]
    pub verified_by: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Alert {
    pub summary: String,
    /// Prometheus-style severity label.
    pub severity: Severity,
    /// Threshold in `unit`.
    pub threshold: f64,
    pub unit: String,
    pub for_minutes: u32,
}

/// kisumctl as it runs inside a cluster: the image and the identity of
/// the CronJobs of `schedules` and of the Jobs that `backup`, `restore`
/// and `drill` launch with `operations.runner: job`. Both run the same
/// image under the same ServiceAccount.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KisumctlImage {
    /// Image name under `platform.image-registry`; the tag is the
    /// environment's `image-tag`, as for the services.
    pub image: String,
    /// Directory of the matrix inside the image (`KISUM_MATRIX`); the
    /// environment's `state-dir` resolves against its parent.
    pub matrix_dir: String,
    /// The ServiceAccount of the pods, rendered without an API token:
    /// its cloud identity reads the secret backend and writes the backup
    /// store, DNS and certificates.
    pub service_account: String,
}

/// What runs on a schedule in the environments on Kubernetes, as CronJobs
/// of the kisumctl image (`kisumctl`): each database's backup and restore
/// drill (at its `backup.schedule` and `backup.drill-schedule`),
/// certificate renewal and the secrets check.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Schedules {
    /// Moved to `kisumctl.image`; read only to say so.
    #[serde(default, skip_serializing)]
    pub image: Option<serde_json::Value>,
    /// Moved to `kisumctl.matrix-dir`; read only to say so.
    #[serde(default, skip_serializing)]
    pub matrix_dir: Option<serde_json::Value>,
    /// Cron expression (UTC) of `kisumctl tls renew ENV` (5.3).
    pub certificate_renewal: String,
    /// Cron expression (UTC) of `kisumctl secrets check ENV` (12.2).
    pub secrets_check: String,
    /// How long one scheduled run may take before Kubernetes stops it.
    pub deadline_minutes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Critical,
    Warning,
}

/// A value chosen where the plan is silent, for the owners to confirm.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Assumption {
    /// Dotted path of the assumed value inside the same file.
    pub path: String,
    pub reason: String,
}

/// A question the plan leaves open (spec: "TBD").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OpenDecision {
    pub id: String,
    pub question: String,
    /// Plan section that leaves it open.
    pub section: String,
    /// Dotted paths of the values that depend on the answer.
    pub affects: Vec<String>,
}

/// `environments/<name>.yaml`: what differs in one environment.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EnvironmentFile {
    /// Must equal the file name without `.yaml`.
    pub environment: String,
    pub tier: Tier,
    pub namespace: String,
    pub kubernetes: KubernetesTarget,
    /// Where kisumctl keeps this environment's own state.
    pub state_dir: String,
    pub dns: EnvironmentDns,
    pub tls: EnvironmentTls,
    pub secrets: SecretBackend,
    pub backups: EnvironmentBackups,
    pub monitoring: Monitoring,
    /// Replica counts applied to every service before per-service values.
    pub scale: Option<Scale>,
    /// Image tag (or `sha256:` digest) of every service, unless a service
    /// sets its own.
    pub image_tag: Option<String>,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceOverride>,
    #[serde(default)]
    pub frontends: BTreeMap<String, FrontendOverride>,
    pub databases: BTreeMap<String, DatabaseDeployment>,
    pub redis: RedisDeployment,
    /// Where the commands that need the private network (`backup`,
    /// `restore`, `drill`) run; absent: on the machine that runs kisumctl.
    pub operations: Option<Operations>,
    /// How `kisumctl deploy local` runs the services as processes.
    pub local_runtime: Option<LocalRuntime>,
    #[serde(default)]
    pub assumptions: Vec<Assumption>,
}

/// Where `backup`, `restore` and `drill` run for an environment whose
/// databases sit on a private network.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Operations {
    pub runner: Runner,
    /// `runner: host`: the machine with access to the private network (a
    /// bastion, a CI runner inside the VPC) the commands are run on.
    pub host: Option<String>,
    /// Replaced by the environment's `image-tag` (the image is
    /// `kisumctl.image` of base.yaml); read only to say so.
    #[serde(default, skip_serializing)]
    pub image_tag: Option<serde_json::Value>,
    /// Replaced by `kisumctl.service-account` of base.yaml; read only to
    /// say so.
    #[serde(default, skip_serializing)]
    pub service_account: Option<serde_json::Value>,
    /// `runner: job`: how long kisumctl waits for the Job.
    #[serde(default = "default_operations_timeout")]
    pub job_timeout_seconds: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runner {
    /// A Kubernetes Job in the environment's namespace, launched and
    /// watched by kisumctl.
    Job,
    /// kisumctl itself, on the host `operations.host` names.
    Host,
}

fn default_operations_timeout() -> u32 {
    3600
}

/// Processes on one machine (`kisumctl deploy local`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LocalRuntime {
    /// Added to every service's public and internal port of the base file,
    /// so that the whole platform fits on loopback without clashes.
    pub port_offset: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    Production,
    NonProduction,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KubernetesTarget {
    pub context: String,
    /// Path of the kubeconfig (relative to the matrix's parent); the
    /// standard lookup (`KUBECONFIG`, then `~/.kube/config`) when absent.
    pub kubeconfig: Option<String>,
    /// How long `kisumctl deploy` waits for a service's rollout (or a
    /// migration Job) before rolling back.
    #[serde(default = "default_rollout_timeout")]
    pub rollout_timeout_seconds: u32,
    /// Per service id, a rollout timeout in place of the default.
    #[serde(default)]
    pub rollout_timeouts: BTreeMap<String, u32>,
    /// How many releases the cluster's history keeps.
    #[serde(default = "default_history_limit")]
    pub history_limit: u32,
    /// A JSON file with the public URLs the smoke checks use after a
    /// deploy (`{"auth": URL, "platform-admin": URL, "finance": URL}`), in
    /// place of `https://<host>`: a cluster reached through a tunnel, or a
    /// test.
    pub smoke_endpoints: Option<String>,
}

fn default_rollout_timeout() -> u32 {
    300
}

fn default_history_limit() -> u32 {
    10
}

/// The schema level of a service's database, as `kisumctl deploy` records
/// it per release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SchemaLevel {
    /// The number of the newest migration this release's image applies.
    pub level: u32,
    /// The oldest schema level this release's code runs on. Raising it
    /// marks a migration older code cannot run on: a rollback to a release
    /// that migrated to a lower level is refused without `--force`.
    pub oldest: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EnvironmentDns {
    /// Appended to the first label of every production host name
    /// (`auth.kisum.io` becomes `auth-staging.kisum.io`).
    pub host_suffix: String,
    /// Replaces a zone's domain in this environment (local only, usually).
    #[serde(default)]
    pub domain_overrides: BTreeMap<String, String>,
    pub ttl_seconds: u32,
    /// CNAME target of the public records: the ingress load balancer.
    pub ingress_target: String,
    /// Alias A and AAAA records to `ingress-target` instead of a CNAME
    /// (an AWS load balancer, whose hosted zone this names).
    pub ingress_alias: Option<IngressAlias>,
    /// A and AAAA records with these addresses instead of a CNAME (hosts
    /// or a load balancer with fixed addresses).
    #[serde(default)]
    pub ingress_addresses: Vec<String>,
    /// CNAME target of the frontends' records (their managed hosting);
    /// the frontends share the services' records when absent.
    pub frontend_target: Option<String>,
    /// CNAME target of the internal services' names in their private zone
    /// (an internal load balancer); no internal records when absent.
    pub internal_target: Option<String>,
    /// Route53 hosted zone id per zone of `dns.zones`; looked up by domain
    /// and visibility when absent.
    #[serde(default)]
    pub hosted_zones: BTreeMap<String, String>,
    /// Route53 API endpoint in place of AWS's own (a test server).
    pub endpoint: Option<String>,
    /// Whether kisumctl manages DNS records for this environment.
    pub managed: bool,
}

/// An alias target: the hosted zone of the load balancer `ingress-target`
/// names.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IngressAlias {
    pub hosted_zone_id: String,
    #[serde(default)]
    pub evaluate_target_health: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Certificates from the ACME directory of the TLS policy.
    Acme,
    /// A self-signed certificate per public host, made by `kisumctl tls
    /// issue` into the secret store (local only).
    SelfSigned,
    /// No TLS at all; `validate` rejects this for any public host.
    Disabled,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EnvironmentTls {
    pub mode: TlsMode,
    /// Overrides the policy's ACME directory (for example a test CA).
    pub acme_directory: Option<String>,
    /// PEM file of the CA that signs the ACME directory's HTTPS
    /// certificate, trusted instead of the system roots (a test CA).
    pub acme_ca_root: Option<String>,
    /// Overrides the policy's challenge here.
    pub challenge: Option<AcmeChallenge>,
    /// Address kisumctl serves HTTP-01 tokens on (`host:port`); required
    /// where the challenge is `http-01`.
    pub http01_listen: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", tag = "backend")]
pub enum SecretBackend {
    /// Files of mode 0600 under a directory.
    LocalFiles { path: String },
    /// AWS Secrets Manager; secret names are `prefix` + inventory key.
    AwsSecretsManager {
        account: String,
        region: String,
        prefix: String,
        /// A Secrets Manager-compatible endpoint URL in place of AWS's own
        /// (a test server on loopback); absent for AWS.
        #[serde(default)]
        endpoint: Option<String>,
    },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EnvironmentBackups {
    pub enabled: bool,
    pub store: BackupStore,
    /// age recipients; backups are encrypted at rest when non-empty.
    #[serde(default)]
    pub age_recipients: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", tag = "kind")]
pub enum BackupStore {
    LocalDirectory {
        path: String,
    },
    S3 {
        bucket: String,
        prefix: String,
        region: String,
        /// An S3-compatible endpoint URL in place of AWS's own (path-style
        /// addressing); absent for AWS S3.
        #[serde(default)]
        endpoint: Option<String>,
    },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Monitoring {
    pub metrics: bool,
    pub alerts: bool,
    pub access_logs: bool,
    /// Alertmanager receiver the alerts route to.
    pub alert_receiver: String,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Scale {
    pub replicas: u32,
    pub max_replicas: u32,
}

/// Per-environment changes to a service of the base file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServiceOverride {
    pub host: Option<String>,
    pub replicas: Option<u32>,
    pub max_replicas: Option<u32>,
    pub resources: Option<Resources>,
    pub image_tag: Option<String>,
    /// Non-secret config values for this environment.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FrontendOverride {
    pub host: Option<String>,
}

/// Where a database of the base file runs in one environment.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DatabaseDeployment {
    pub endpoint: Endpoint,
    pub publicly_accessible: bool,
    pub tls_required: bool,
    /// Overrides the base retention in this environment.
    pub retention_days: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// Network the server lives in (NetworkPolicy egress target).
    pub cidr: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RedisDeployment {
    pub endpoint: Endpoint,
    pub publicly_accessible: bool,
    pub tls_required: bool,
}
