//! moto's server on a free loopback port, stopped on drop: S3 for the
//! backup tests, Route53 for dns and tls.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: std::process::Child,
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Starts moto and waits until it answers.
pub async fn start() -> Moto {
    let program = std::env::var("KISUM_MOTO_SERVER").unwrap_or_else(|_| {
        crate::common::root()
            .join(".peers/venv-moto/bin/moto_server")
            .display()
            .to_string()
    });
    assert!(
        Path::new(&program).is_file(),
        "{program} missing: run bash scripts/peers.sh"
    );
    let port = kisum_testkit::free_port().unwrap();
    let child = Command::new(program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let moto = Moto { child, port };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = format!("{}/moto-api/reset", moto.url());
    loop {
        if let Ok(response) = client.post(&url).send().await
            && response.status().is_success()
        {
            return moto;
        }
        assert!(Instant::now() < deadline, "moto did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The environment every kisumctl run against moto gets: dummy
/// credentials, no instance metadata, no profile files, and a dead
/// loopback port as the default endpoint, so nothing can leave the machine.
pub fn offline_aws_env() -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec()
}
