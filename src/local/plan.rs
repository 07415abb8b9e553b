//! The desired state of `deploy local`, computed from the matrix: for every
//! process its argv, environment, ports, readiness probe and a digest that
//! changes whenever any of them (or its program file) changes. Pure: the
//! programs found on the machine and the secret files present are inputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::state::{DesiredState, Probe, ProcessSpec, StateDir, StopSignal};
use crate::matrix::schema::Engine;
use crate::matrix::{ConfigValue, Environment, ResolvedService};

/// Used when an environment has no `local-runtime` section.
pub const DEFAULT_PORT_OFFSET: u16 = 20000;

/// PATH of every supervised process: the system's programs only.
const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The loopback ports of the data services, from the environment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DataPorts {
    pub postgres: u16,
    pub redis: u16,
    pub mongo: u16,
}

impl DataPorts {
    /// One PostgreSQL cluster and one MongoDB-wire server serve every local
    /// database: all databases of an engine must name the same port.
    pub fn from_environment(env: &Environment) -> anyhow::Result<DataPorts> {
        let mut postgres = None;
        let mut mongo = None;
        for (id, db, deployment) in env.deployed_databases() {
            let Some(deployment) = deployment else {
                bail!(
                    "database `{id}` has no endpoint in environment `{}`",
                    env.name
                );
            };
            let slot = match db.engine {
                Engine::Postgresql => &mut postgres,
                Engine::Mongodb => &mut mongo,
                Engine::Undecided => continue,
            };
            let port = deployment.endpoint.port;
            match *slot {
                Some(seen) if seen != port => bail!(
                    "databases.{id}.endpoint.port is {port}, another {:?} database uses {seen}: \
                     deploy local runs one server per engine",
                    db.engine
                ),
                _ => *slot = Some(port),
            }
        }
        Ok(DataPorts {
            postgres: postgres.context("no PostgreSQL database in the matrix")?,
            redis: env.file.redis.endpoint.port,
            mongo: mongo.context("no MongoDB database in the matrix")?,
        })
    }
}

/// Public and internal loopback port of a service.
pub fn service_ports(service: &ResolvedService, offset: u16) -> anyhow::Result<(u16, u16)> {
    let shift = |port: u16| {
        port.checked_add(offset).with_context(|| {
            format!(
                "port {port} of `{}` plus local-runtime.port-offset {offset} exceeds 65535",
                service.id
            )
        })
    };
    Ok((
        shift(service.spec.ports.http)?,
        shift(service.spec.ports.internal)?,
    ))
}

pub fn port_offset(env: &Environment) -> u16 {
    env.file
        .local_runtime
        .map_or(DEFAULT_PORT_OFFSET, |runtime| runtime.port_offset)
}

/// Who listens on a local port, and the matrix field that sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortOrigin {
    /// The process: `postgres`, `redis`, `mongo` or a service.
    pub process: String,
    /// The field with its file and line, for messages:
    /// `` `databases.auth-db.endpoint.port` (environments/local.yaml:71) ``.
    pub field: String,
}

/// Every local port of the environment, with its origin.
pub fn port_origins(env: &Environment) -> BTreeMap<u16, PortOrigin> {
    let at = |field: &str| {
        let (source, position) = env.locate(field);
        match position {
            Some(position) => format!("`{field}` ({}:{})", source.path.display(), position.line),
            None => format!("`{field}` ({})", source.path.display()),
        }
    };
    let origin = |process: &str, field: String| PortOrigin {
        process: process.to_string(),
        field,
    };
    let mut origins = BTreeMap::new();
    for (id, db, deployment) in env.deployed_databases() {
        if let Some(deployment) = deployment {
            let process = match db.engine {
                Engine::Mongodb => "mongo",
                _ => "postgres",
            };
            origins
                .entry(deployment.endpoint.port)
                .or_insert_with(|| origin(process, at(&format!("databases.{id}.endpoint.port"))));
        }
    }
    origins
        .entry(env.file.redis.endpoint.port)
        .or_insert_with(|| origin("redis", at("redis.endpoint.port")));
    let offset = port_offset(env);
    for service in env.services.values() {
        let ports = [
            ("http", service.spec.ports.http),
            ("internal", service.spec.ports.internal),
        ];
        for (kind, port) in ports {
            if let Some(local) = port.checked_add(offset) {
                origins.entry(local).or_insert_with(|| {
                    let field = format!(
                        "{} plus {}",
                        at(&format!("services.{}.ports.{kind}", service.id)),
                        at("local-runtime.port-offset")
                    );
                    origin(service.id, field)
                });
            }
        }
    }
    origins
}

/// The binary that runs a service, from its image name.
pub fn binary_of(service: &ResolvedService) -> anyhow::Result<&'static str> {
    Ok(match service.spec.image.as_str() {
        "auth" => "kisum-auth",
        "platform-core" => "kisum-core",
        "platform-admin" => "kisum-admin",
        "module" => "kisum-module",
        other => bail!(
            "service `{}` uses image `{other}`, which no binary of this repository builds",
            service.id
        ),
    })
}

/// Public and internal URL of every service on loopback.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Endpoints {
    #[serde(flatten)]
    pub public: BTreeMap<String, String>,
    pub internal: BTreeMap<String, String>,
}

pub fn endpoints(env: &Environment) -> anyhow::Result<Endpoints> {
    let offset = port_offset(env);
    let mut endpoints = Endpoints::default();
    for service in env.services.values() {
        let (public, internal) = service_ports(service, offset)?;
        endpoints
            .public
            .insert(service.id.into(), format!("http://127.0.0.1:{public}"));
        endpoints
            .internal
            .insert(service.id.into(), format!("http://127.0.0.1:{internal}"));
    }
    Ok(endpoints)
}

/// What the plan needs to know about the machine.
pub struct Inputs<'a> {
    pub state: &'a StateDir,
    /// Directory of the service binaries.
    pub bin_dir: &'a Path,
    /// A fingerprint of a program file (the digest of its content).
    pub fingerprint: &'a dyn Fn(&Path) -> String,
    /// The file holding `key` of `secret`, when the store has it.
    pub secret_file: &'a dyn Fn(&str, &str) -> Option<PathBuf>,
}

/// The processes of the platform's services (not the data services), in
/// release order.
pub fn services(env: &Environment, inputs: &Inputs) -> anyhow::Result<Vec<ProcessSpec>> {
    let offset = port_offset(env);
    let rewrites = url_rewrites(env, offset)?;
    let mut specs = Vec::new();
    for service in env.services.values() {
        let (public, internal) = service_ports(service, offset)?;
        let mut environment = base_env();
        // The content of the credential files the service reads once at
        // its start: a change (a rotation) restarts it onto the new value.
        // Internal credentials are read again by the services themselves.
        let mut credentials = Vec::new();
        for (key, value) in &service.config {
            match value {
                ConfigValue::Plain { value } => {
                    environment.insert(key.to_string(), localize(value, &rewrites));
                }
                ConfigValue::Secret { secret, key: item } => {
                    match (inputs.secret_file)(secret, item) {
                        Some(path) => {
                            if key.starts_with("INTERNAL_CALLER_") {
                                // The caller's previous credential while a
                                // rotation is under way (absent otherwise).
                                let previous = crate::secrets::LocalFiles::previous_file(&path);
                                environment.insert(
                                    format!("{key}_PREVIOUS_FILE"),
                                    previous.display().to_string(),
                                );
                            }
                            if !key.starts_with("INTERNAL_") {
                                credentials.push((inputs.fingerprint)(&path));
                            }
                            environment.insert(format!("{key}_FILE"), path.display().to_string());
                        }
                        None if is_required(env, service, key) => bail!(
                            "secret `{secret}` (key `{item}`) for {key} of `{}` is missing",
                            service.id
                        ),
                        None => {}
                    }
                }
                ConfigValue::Unset => {}
            }
        }
        environment.insert("HTTP_PORT".into(), public.to_string());
        environment.insert("INTERNAL_PORT".into(), internal.to_string());
        environment.insert("BIND_ADDRESS".into(), "127.0.0.1".into());
        let program = inputs.bin_dir.join(binary_of(service)?);
        let argv = vec![program.display().to_string(), "serve".into()];
        let mut fingerprint = (inputs.fingerprint)(&program);
        for credential in &credentials {
            fingerprint.push(':');
            fingerprint.push_str(credential);
        }
        specs.push(finish(ProcessSpec {
            name: service.id.to_string(),
            wave: service.spec.release_wave,
            argv,
            env: environment,
            cwd: inputs.state.root().to_path_buf(),
            run_as: None,
            stop_signal: StopSignal::Term,
            ports: vec![public, internal],
            probe: Probe::Http {
                url: format!("http://127.0.0.1:{public}{}", service.spec.health.readiness),
            },
            version: None,
            digest: fingerprint,
        }));
    }
    specs.sort_by(|a, b| (a.wave, &a.name).cmp(&(b.wave, &b.name)));
    Ok(specs)
}

/// The environment every supervised process starts from.
pub fn base_env() -> BTreeMap<String, String> {
    BTreeMap::from([("PATH".to_string(), PATH.to_string())])
}

fn is_required(env: &Environment, service: &ResolvedService, key: &str) -> bool {
    service
        .spec
        .config
        .get(key)
        .or_else(|| env.base.common_config.get(key))
        .is_some_and(|entry| entry.required)
}

/// The in-cluster URLs the matrix's templates produce, and their loopback
/// replacements.
fn url_rewrites(env: &Environment, offset: u16) -> anyhow::Result<Vec<(String, String)>> {
    let mut rewrites = Vec::new();
    for service in env.services.values() {
        let (public, internal) = service_ports(service, offset)?;
        let host = format!("http://{}.{}.svc", service.id, env.file.namespace);
        for (cluster, local) in [
            (service.spec.ports.http, public),
            (service.spec.ports.internal, internal),
        ] {
            rewrites.push((
                format!("{host}:{cluster}"),
                format!("http://127.0.0.1:{local}"),
            ));
        }
    }
    Ok(rewrites)
}

fn localize(value: &str, rewrites: &[(String, String)]) -> String {
    let mut value = value.to_string();
    for (cluster, local) in rewrites {
        value = value.replace(cluster.as_str(), local);
    }
    value
}

/// A data service's process (wave 0): probed by a TCP connection to its
/// port; `program` is the fingerprint part of the digest.
pub struct DataProcess<'a> {
    pub name: &'a str,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub run_as: Option<(u32, u32)>,
    pub stop_signal: StopSignal,
    pub port: u16,
    pub program: String,
}

pub fn data_process(process: DataProcess) -> ProcessSpec {
    finish(ProcessSpec {
        name: process.name.to_string(),
        wave: 0,
        argv: process.argv,
        env: process.env,
        cwd: process.cwd,
        run_as: process.run_as,
        stop_signal: process.stop_signal,
        ports: vec![process.port],
        probe: match process.name {
            "redis" => Probe::Resp { port: process.port },
            "postgres" => Probe::Postgres { port: process.port },
            _ => Probe::Tcp { port: process.port },
        },
        version: None,
        digest: process.program,
    })
}

/// Sets the digest: everything the process is started from, plus the
/// fingerprint of its program passed in `spec.digest`.
pub fn finish(mut spec: ProcessSpec) -> ProcessSpec {
    #[derive(Serialize)]
    struct Started<'a> {
        argv: &'a [String],
        env: &'a BTreeMap<String, String>,
        cwd: &'a Path,
        run_as: Option<(u32, u32)>,
        ports: &'a [u16],
        program: &'a str,
    }
    let started = Started {
        argv: &spec.argv,
        env: &spec.env,
        cwd: &spec.cwd,
        run_as: spec.run_as,
        ports: &spec.ports,
        program: &spec.digest,
    };
    let bytes = serde_json::to_vec(&started).unwrap_or_default();
    spec.digest = hex::encode(&Sha256::digest(&bytes)[..12]);
    spec
}

/// The SHA-256 of a program file's content; `missing` when it cannot be
/// read. The content, not the size and modification time: a rebuild that
/// writes the same bytes restarts nothing. Each file is read once per
/// run (the six module backends share one binary).
pub fn file_fingerprint(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt as _;
    type Seen = BTreeMap<(PathBuf, u64, i64, i64, u64), String>;
    static SEEN: std::sync::Mutex<Seen> = std::sync::Mutex::new(BTreeMap::new());
    let Ok(meta) = std::fs::metadata(path) else {
        return "missing".into();
    };
    let key = (
        path.to_path_buf(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ino(),
    );
    if let Some(known) = SEEN.lock().ok().and_then(|seen| seen.get(&key).cloned()) {
        return known;
    }
    let digest = match content_digest(path) {
        Ok(digest) => digest,
        Err(_) => return "missing".into(),
    };
    if let Ok(mut seen) = SEEN.lock() {
        seen.insert(key, digest.clone());
    }
    digest
}

fn content_digest(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut hash = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hash.update(&buffer[..read]);
    }
    Ok(format!("sha256:{}", hex::encode(hash.finalize())))
}

/// The names of the processes that a move from `current` to `next` starts,
/// restarts or stops.
pub fn changes(current: &DesiredState, next: &[ProcessSpec]) -> Vec<String> {
    let mut names: Vec<String> = next
        .iter()
        .filter(|spec| {
            current
                .get(&spec.name)
                .is_none_or(|c| c.digest != spec.digest)
        })
        .map(|spec| spec.name.clone())
        .collect();
    names.extend(
        current
            .processes
            .iter()
            .filter(|c| next.iter().all(|n| n.name != c.name))
            .map(|c| c.name.clone()),
    );
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;

    fn matrix(local_yaml_edit: impl Fn(String) -> String) -> (tempfile::TempDir, Matrix) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("environments");
        std::fs::create_dir(&dir).unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("environments");
        for entry in std::fs::read_dir(shipped).unwrap() {
            let entry = entry.unwrap();
            let mut text = std::fs::read_to_string(entry.path()).unwrap();
            if entry.file_name() == "local.yaml" {
                text = local_yaml_edit(text);
            }
            std::fs::write(dir.join(entry.file_name()), text).unwrap();
        }
        let matrix = Matrix::load(&dir).unwrap();
        (root, matrix)
    }

    fn plan(matrix: &Matrix) -> Vec<ProcessSpec> {
        let env = matrix.environment("local").unwrap();
        let state = StateDir::new("/state");
        let inputs = Inputs {
            state: &state,
            bin_dir: Path::new("/bin-dir"),
            fingerprint: &|path| format!("fp:{}", path.display()),
            secret_file: &|secret, key| {
                let external =
                    secret.ends_with("provider-key") || secret == "admin-bootstrap-credentials";
                (!external).then(|| PathBuf::from(format!("/state/secrets/{secret}/{key}")))
            },
        };
        services(&env, &inputs).unwrap()
    }

    #[test]
    fn a_changed_credential_file_changes_the_services_digest() {
        let (_root, matrix) = matrix(|text| text);
        let env = matrix.environment("local").unwrap();
        let state = StateDir::new("/state");
        let digests = |changed: &str| {
            let fingerprint = |path: &Path| {
                let path = path.display().to_string();
                let mark = if path.contains(changed) { "new" } else { "old" };
                format!("fp:{path}:{mark}")
            };
            let inputs = Inputs {
                state: &state,
                bin_dir: Path::new("/bin-dir"),
                fingerprint: &fingerprint,
                secret_file: &|secret, key| {
                    Some(PathBuf::from(format!("/state/secrets/{secret}/{key}")))
                },
            };
            services(&env, &inputs)
                .unwrap()
                .into_iter()
                .map(|s| (s.name, s.digest))
                .collect::<BTreeMap<_, _>>()
        };
        let before = digests("nothing-changed");
        let rotated = digests("auth-db-credentials/url");
        assert_ne!(before["auth"], rotated["auth"]);
        assert_eq!(before["platform-core"], rotated["platform-core"]);
        // Internal credentials are read again by the running services.
        let token = digests("internal-credential-basic/token");
        assert_eq!(before["auth"], token["auth"]);
    }

    #[test]
    fn services_come_in_release_order_on_offset_ports() {
        let (_root, matrix) = matrix(|text| text);
        let specs = plan(&matrix);
        let order: Vec<(&str, u8)> = specs.iter().map(|s| (s.name.as_str(), s.wave)).collect();
        assert_eq!(order.first(), Some(&("platform-core", 1)));
        assert_eq!(order[1], ("auth", 2));
        assert_eq!(order.last(), Some(&("platform-admin", 4)));
        let auth = specs.iter().find(|s| s.name == "auth").unwrap();
        assert_eq!(auth.ports, [28101, 29101]);
        assert_eq!(auth.env["HTTP_PORT"], "28101");
        assert_eq!(auth.env["CORE_INTERNAL_URL"], "http://127.0.0.1:29102");
        assert_eq!(auth.env["BIND_ADDRESS"], "127.0.0.1");
        assert_eq!(
            auth.env["AUTH_DB_URL_FILE"],
            "/state/secrets/auth-db-credentials/url"
        );
        assert!(!auth.env.contains_key("AUTH_DB_URL"));
        assert!(!auth.env.contains_key("EMAIL_PROVIDER_KEY_FILE"));
        assert_eq!(
            auth.env["INTERNAL_CALLER_BASIC_PREVIOUS_FILE"],
            "/state/secrets/internal-credential-basic/.previous/token"
        );
        assert!(!auth.env.contains_key("INTERNAL_CREDENTIAL_PREVIOUS_FILE"));
        assert_eq!(auth.argv, ["/bin-dir/kisum-auth", "serve"]);
        let admin = specs.iter().find(|s| s.name == "platform-admin").unwrap();
        assert_eq!(
            admin.env["JWKS_URL"],
            "http://127.0.0.1:28101/.well-known/jwks.json"
        );
    }

    #[test]
    fn a_config_change_restarts_only_that_service() {
        let (_a, before) = matrix(|text| text);
        let (_b, after) = matrix(|text| {
            text.replace(
                "services:\n  auth:\n",
                "services:\n  finance:\n    config:\n      LOG_LEVEL: debug\n  auth:\n",
            )
        });
        let current = DesiredState {
            processes: plan(&before),
            held: Default::default(),
        };
        assert_eq!(changes(&current, &plan(&before)), Vec::<String>::new());
        assert_eq!(changes(&current, &plan(&after)), ["finance"]);
    }

    #[test]
    fn a_port_offset_change_restarts_every_service() {
        let (_a, before) = matrix(|text| text);
        let (_b, after) = matrix(|text| text.replace("port-offset: 20000", "port-offset: 21000"));
        let current = DesiredState {
            processes: plan(&before),
            held: Default::default(),
        };
        assert_eq!(changes(&current, &plan(&after)).len(), 9);
    }

    #[test]
    fn a_rebuilt_binary_changes_the_digest() {
        let spec = |program: &str| {
            finish(ProcessSpec {
                name: "auth".into(),
                wave: 2,
                argv: vec!["/b/kisum-auth".into()],
                env: BTreeMap::new(),
                cwd: "/".into(),
                run_as: None,
                stop_signal: StopSignal::Term,
                ports: vec![1, 2],
                probe: Probe::Tcp { port: 1 },
                version: None,
                digest: program.into(),
            })
        };
        assert_ne!(spec("100:1.0:5").digest, spec("100:2.0:5").digest);
        assert_eq!(spec("100:1.0:5").digest, spec("100:1.0:5").digest);
    }

    #[test]
    fn a_program_is_known_by_its_content_not_its_dates() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first");
        let second = dir.path().join("second");
        std::fs::write(&first, b"the same bytes").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&second, b"the same bytes").unwrap();
        assert_eq!(file_fingerprint(&first), file_fingerprint(&second));
        std::fs::write(&second, b"other bytes").unwrap();
        assert_ne!(file_fingerprint(&first), file_fingerprint(&second));
        assert_eq!(file_fingerprint(&dir.path().join("none")), "missing");
    }

    #[test]
    fn removed_processes_are_changes() {
        let (_a, m) = matrix(|text| text);
        let mut current = DesiredState {
            processes: plan(&m),
            held: Default::default(),
        };
        current.processes[0].name = "retired".into();
        let changed = changes(&current, &plan(&m));
        assert!(changed.contains(&"retired".to_string()));
        assert!(changed.contains(&"platform-core".to_string()));
    }

    #[test]
    fn data_ports_come_from_the_environment_file() {
        let (_a, m) = matrix(|text| text);
        let env = m.environment("local").unwrap();
        let ports = DataPorts::from_environment(&env).unwrap();
        assert_eq!(
            ports,
            DataPorts {
                postgres: 25432,
                redis: 26379,
                mongo: 27117
            }
        );
        let endpoints = endpoints(&env).unwrap();
        assert_eq!(endpoints.public["finance"], "http://127.0.0.1:28112");
        assert_eq!(endpoints.internal["auth"], "http://127.0.0.1:29101");
    }
}
