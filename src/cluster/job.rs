//! Jobs kisumctl launches in the environment's namespace and watches to
//! their end: the migrations of a deploy, and the operations that need the
//! private network (`backup`, `restore`, `drill` with `operations.runner:
//! job`). A watch reads the Job until it completes, fails or runs out of
//! time, then the tail of its pod's log.

use std::time::{Duration, Instant};

use super::api::{ApiError, Namespace};
use super::release::Progress;
use super::rollout::{self, Health};

/// How often a watch reads the Job.
const POLL: Duration = Duration::from_millis(250);

/// How a watched Job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// `Complete`: the tail of its pod's log.
    Complete { log: String },
    /// `Failed`: the controller's reason and the tail of the log (empty
    /// when the log could not be read).
    Failed { why: String, log: String },
    /// Still not finished after the timeout: what it was waiting for.
    TimedOut { why: String },
}

/// Waits up to `timeout` for Job `name`, then reads the last `lines`
/// lines of its pod's log.
pub async fn watch(
    namespace: &Namespace,
    name: &str,
    timeout: Duration,
    lines: usize,
    progress: &dyn Progress,
) -> Result<Ended, ApiError> {
    let started = Instant::now();
    loop {
        let live = namespace.get("batch/v1", "Job", name).await?;
        let health = live
            .as_ref()
            .map(rollout::job)
            .unwrap_or(Health::Waiting("not found".into()));
        match health {
            Health::Done => {
                let log = log_tail(namespace, name, lines).await?;
                return Ok(Ended::Complete { log });
            }
            Health::Failed(why) => {
                let log = log_tail(namespace, name, lines).await.unwrap_or_default();
                return Ok(Ended::Failed { why, log });
            }
            Health::Waiting(why) if started.elapsed() >= timeout => {
                return Ok(Ended::TimedOut { why });
            }
            Health::Waiting(why) => {
                progress.waiting(&format!("Job/{name}: {why}"));
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

/// The last `lines` lines of the log of the Job's (first) pod; empty when
/// it has none.
pub async fn log_tail(namespace: &Namespace, job: &str, lines: usize) -> Result<String, ApiError> {
    let pods = namespace
        .list("v1", "Pod", &format!("job-name={job}"))
        .await?;
    let Some(pod) = pods.first().and_then(|p| p["metadata"]["name"].as_str()) else {
        return Ok(String::new());
    };
    let log = namespace.pod_log(pod).await?;
    let all: Vec<&str> = log.lines().collect();
    Ok(all[all.len().saturating_sub(lines)..].join("\n"))
}
