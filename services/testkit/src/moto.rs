//! moto, the AWS emulator (S3, Secrets Manager, Route53), as a server on a
//! free loopback port. Point an AWS SDK client at [`Moto::endpoint`] with
//! dummy credentials; nothing else should ever reach AWS from a test.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{INSTALL_HINT, free_port, workspace_root};

const VENV_SERVER: &str = ".peers/venv-moto/bin/moto_server";

/// A running moto server; stopped (SIGKILL) when dropped.
pub struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts `$KISUM_MOTO_SERVER`, else `.peers/venv-moto/bin/moto_server`,
    /// and waits until it accepts connections. Blocks for about half a
    /// second.
    pub fn start() -> Result<Moto> {
        let program = std::env::var_os("KISUM_MOTO_SERVER")
            .map(Into::into)
            .unwrap_or_else(|| workspace_root().join(VENV_SERVER));
        if !Path::new(&program).is_file() {
            bail!(
                "{} not found (moto); install the test peers with `{INSTALL_HINT}`",
                program.display()
            );
        }
        let port = free_port()?;
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = moto.child.try_wait()? {
                bail!("moto exited at start ({status})");
            }
            if Instant::now() > deadline {
                bail!("moto did not listen on 127.0.0.1:{port} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        crate::note(&format!("moto on 127.0.0.1:{port}"));
        Ok(moto)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
