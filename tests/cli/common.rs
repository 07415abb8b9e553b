//! Shared helpers: running the binary, copying the matrix.

use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `kisumctl ARGS` with `dir` as working directory.
pub fn kisumctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kisumctl"))
        .args(args)
        .current_dir(dir)
        .env_remove("KISUM_MATRIX")
        .env_remove("KISUM_TEMPLATES")
        .output()
        .expect("kisumctl runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the exit code of `kisumctl ARGS`, printing both streams on
/// failure.
pub fn assert_exit(args: &[&str], output: Output, code: i32) -> Output {
    assert_eq!(
        output.status.code(),
        Some(code),
        "kisumctl {args:?}\nstdout:\n{}\nstderr:\n{}",
        stdout(&output),
        stderr(&output)
    );
    output
}

/// A scratch copy of the repository's `environments/`, `templates/` and
/// `manifests/`, for tests that edit them. Its name avoids a leading dot:
/// some tools skip such directories silently.
pub fn scratch_copy() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("kisum-test-")
        .tempdir()
        .expect("temp dir");
    for name in ["environments", "templates", "manifests"] {
        copy_dir(&root().join(name), &dir.path().join(name));
    }
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// The smoke checks of section 25.3, in the order `kisumctl smoke` runs them.
pub const SMOKE_CHECKS: [&str; 9] = [
    "auth-health",
    "auth-ready",
    "login",
    "auth-me",
    "auth-me-access",
    "core-entitlements",
    "module-allowed",
    "module-denied",
    "subscription-invalidates-access",
];

/// What kisumctl's AWS SDK sees in tests: dummy credentials, no instance
/// metadata, no configuration files, and a default endpoint on a dead
/// loopback port, so nothing can ever reach AWS. A test names moto's
/// endpoint itself (in the matrix or per service).
pub const SEALED_AWS: [(&str, &str); 7] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
    ("AWS_CONFIG_FILE", "/dev/null"),
    ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
];

/// [`SEALED_AWS`] as owned pairs, for a site's environment.
pub fn sealed_aws() -> Vec<(String, String)> {
    SEALED_AWS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// moto (S3, Secrets Manager, Route53) on a free loopback port, stopped on
/// drop: the one moto harness of the tests, over `kisum_testkit::Moto`.
pub struct Moto(kisum_testkit::Moto);

impl Moto {
    pub async fn start() -> Moto {
        Moto(
            tokio::task::spawn_blocking(|| kisum_testkit::Moto::start().unwrap())
                .await
                .unwrap(),
        )
    }

    pub fn endpoint(&self) -> String {
        self.0.endpoint()
    }

    /// A Secrets Manager client on this moto, with fixed dummy credentials.
    pub fn secrets_manager(&self) -> aws_sdk_secretsmanager::Client {
        use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
        let config = aws_sdk_secretsmanager::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .endpoint_url(self.endpoint())
            .build();
        aws_sdk_secretsmanager::Client::from_conf(config)
    }

    pub async fn create_bucket(&self, bucket: &str) {
        let response = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .put(format!("{}/{bucket}", self.endpoint()))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }
}

/// The Secrets Manager SDK on moto, with fixed dummy credentials.
pub fn secrets_manager(moto: &Moto) -> aws_sdk_secretsmanager::Client {
    use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_secretsmanager::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(moto.endpoint())
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
}

/// The keys of a Secrets Manager secret at `stage`; `None` when there is
/// no such secret or stage.
pub async fn secret_at(
    client: &aws_sdk_secretsmanager::Client,
    name: &str,
    stage: &str,
) -> Option<std::collections::BTreeMap<String, String>> {
    let value = client
        .get_secret_value()
        .secret_id(name)
        .version_stage(stage)
        .send()
        .await
        .ok()?;
    Some(serde_json::from_str(value.secret_string()?).unwrap())
}

/// A directory (and its parents) with mode 0700.
pub fn private_dir(path: &Path) {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .unwrap();
}

/// A value in the local-files layout of the secret store under the state
/// directory `state`: `<state>/secrets/<secret>/<key>`, 0700 directories,
/// 0600 files.
pub fn write_secret(state: &Path, secret: &str, key: &str, value: &str) {
    let dir = state.join("secrets").join(secret);
    private_dir(&state.join("secrets"));
    private_dir(&dir);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(dir.join(key))
        .unwrap();
    std::io::Write::write_all(&mut file, value.as_bytes()).unwrap();
}

/// The data services of the scratch matrix `dir` moved to `postgres`,
/// `mongo` and `redis` (loopback ports the test chose).
pub fn move_data_ports(dir: &Path, postgres: u16, mongo: u16, redis: u16) {
    let path = dir.join("environments/local.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut moved = text.clone();
    for (shipped, port) in [(25432, postgres), (27117, mongo), (26379, redis)] {
        let from = format!("port: {shipped},");
        assert_eq!(moved.matches(&from).count(), 1, "{from} in local.yaml");
        moved = moved.replace(&from, &format!("port: {port},"));
    }
    std::fs::write(&path, moved).unwrap();
}

/// A loopback port nothing listens on (bound, then let go).
pub fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
