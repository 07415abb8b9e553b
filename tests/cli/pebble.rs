//! pebble (an ACME test CA) and pebble-challtestsrv (its DNS) on free
//! loopback ports, with a CA of the test's own for pebble's HTTPS; both
//! stopped on drop. `KISUM_PEBBLE` and `KISUM_PEBBLE_CHALLTESTSRV` (set by
//! scripts/peers-env.sh) name the binaries of Debian's `pebble` package.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Pebble {
    pebble: Child,
    challtestsrv: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// challtestsrv's management API (set-txt, clear-txt).
    pub challtestsrv_management: u16,
    /// Where pebble sends HTTP-01 validations (on 127.0.0.1).
    pub http_port: u16,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [&mut self.pebble, &mut self.challtestsrv] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Pebble {
    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The CA that signs pebble's HTTPS certificate.
    pub fn ca_root(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn challtestsrv_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.challtestsrv_management)
    }
}

fn program(variable: &str, default: &str) -> String {
    let program = std::env::var(variable).unwrap_or_else(|_| default.to_string());
    assert!(
        Path::new(&program).is_file(),
        "{program} missing: run bash scripts/peers.sh (Debian package pebble)"
    );
    program
}

fn log(dir: &Path, name: &str) -> Stdio {
    Stdio::from(std::fs::File::create(dir.join(name)).unwrap())
}

/// A CA and a certificate for 127.0.0.1 and localhost signed by it.
fn write_certificates(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "kisumctl test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, &ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
}

pub async fn start() -> Pebble {
    let pebble_bin = program("KISUM_PEBBLE", "/usr/bin/pebble");
    let challtestsrv_bin = program("KISUM_PEBBLE_CHALLTESTSRV", "/usr/bin/pebble-challtestsrv");
    let dir = tempfile::Builder::new()
        .prefix("kisum-pebble-")
        .tempdir()
        .unwrap();
    write_certificates(dir.path());
    let free = || kisum_testkit::free_port().unwrap();
    let (port, management, dns, challtestsrv_management, http_port) =
        (free(), free(), free(), free(), free());
    let config = serde_json::json!({
        "pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.path().join("cert.pem"),
            "privateKey": dir.path().join("key.pem"),
            "httpPort": http_port,
            "tlsPort": free(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }
    });
    std::fs::write(dir.path().join("pebble.json"), config.to_string()).unwrap();

    let challtestsrv = Command::new(challtestsrv_bin)
        .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
        .args(["-dns01", &format!("127.0.0.1:{dns}")])
        .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
        .args([
            "-management",
            &format!("127.0.0.1:{challtestsrv_management}"),
        ])
        .stdin(Stdio::null())
        .stdout(log(dir.path(), "challtestsrv.log"))
        .stderr(log(dir.path(), "challtestsrv.err"))
        .spawn()
        .unwrap();
    let pebble = Command::new(pebble_bin)
        .arg("-config")
        .arg(dir.path().join("pebble.json"))
        .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .env("PEBBLE_AUTHZREUSE", "0")
        .stdin(Stdio::null())
        .stdout(log(dir.path(), "pebble.log"))
        .stderr(log(dir.path(), "pebble.err"))
        .spawn()
        .unwrap();
    let started = Pebble {
        pebble,
        challtestsrv,
        dir,
        port,
        challtestsrv_management,
        http_port,
    };

    let root = reqwest::Certificate::from_pem(&std::fs::read(started.ca_root()).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(root)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let directory = client.get(started.directory()).send().await;
        let management = client
            .post(format!("{}/clear-txt", started.challtestsrv_url()))
            .json(&serde_json::json!({ "host": "probe.invalid." }))
            .send()
            .await;
        if directory.is_ok_and(|r| r.status().is_success()) && management.is_ok() {
            return started;
        }
        assert!(
            Instant::now() < deadline,
            "pebble did not start; logs in {}",
            started.dir.path().display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
