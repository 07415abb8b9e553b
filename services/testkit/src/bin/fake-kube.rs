//! The fake Kubernetes API server of the tests as a program, so that an
//! operator can try `kisumctl deploy|history|rollback|diff` for a cluster
//! environment on a machine without a cluster (docs/deploy-kubernetes.md,
//! "Trying it without a cluster"). It serves on a free loopback port until
//! interrupted and writes a kubeconfig that reaches it.
//!
//! ```text
//! fake-kube --kubeconfig PATH [--context NAME] [--rollout-delay-seconds N]
//!           [--never-ready DEPLOYMENT]... [--failing-job PREFIX]... [--stuck-job PREFIX]...
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kisum_testkit::FakeKube;

const USAGE: &str = "usage: fake-kube --kubeconfig PATH [--context NAME] [--rollout-delay-seconds N] [--never-ready DEPLOYMENT]... [--failing-job PREFIX]... [--stuck-job PREFIX]...";

fn main() {
    if let Err(error) = run() {
        eprintln!("fake-kube: {error:#}");
        std::process::exit(2);
    }
}

fn run() -> Result<()> {
    let mut kubeconfig: Option<PathBuf> = None;
    let mut context = "kisum-staging".to_string();
    let fake = FakeKube::start()?;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            return Ok(());
        }
        let Some(value) = args.next() else {
            bail!("{flag} needs a value\n{USAGE}");
        };
        match flag.as_str() {
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(value)),
            "--context" => context = value,
            "--rollout-delay-seconds" => {
                let seconds: u64 = value.parse().with_context(|| {
                    format!("--rollout-delay-seconds {value:?}: not a whole number")
                })?;
                fake.rollout_delay(Duration::from_secs(seconds));
            }
            "--never-ready" => fake.never_ready(&value),
            "--failing-job" => fake.failing_job(&value),
            "--stuck-job" => fake.stuck_job(&value),
            _ => bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    let Some(kubeconfig) = kubeconfig else {
        bail!("--kubeconfig is required\n{USAGE}");
    };
    fake.write_kubeconfig(&kubeconfig, &context)?;
    println!(
        "fake Kubernetes API server at {} (context {context}, kubeconfig {}); Ctrl-C stops it",
        fake.url(),
        kubeconfig.display()
    );
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
