//! `status local`: each data service and service as the supervisor runs
//! it, probed now.

use serde::Serialize;

use super::Context;
use super::checks::internal_headers;
use super::probe;
use super::state::{DesiredState, ProcessSpec, RunState, SupervisorStatus, read_json};
use super::supervisor;
use crate::secrets::{Secret, SecretStore as _};

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    /// `data` or `service`.
    pub kind: &'static str,
    /// `running`; `exited` (gone, the supervisor restarts it at once);
    /// `backoff` (exited, restarted after a delay); `held` (`down --only`);
    /// `stopped`; `unsupervised` (still running, but its supervisor is
    /// gone: nothing restarts it); `unknown` (not started yet).
    pub state: String,
    /// A live process.
    pub up: bool,
    /// Its readiness probe passes now.
    pub ready: bool,
    pub pid: Option<u32>,
    pub ports: Vec<u16>,
    pub version: Option<String>,
    pub restarts: u32,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub environment: String,
    pub state_dir: String,
    /// The supervisor's pid, when it runs.
    pub supervisor: Option<u32>,
    pub processes: Vec<Row>,
    /// Keys in Redis (DBSIZE), when it answers.
    pub redis_keys: Option<u64>,
}

impl Report {
    /// A supervisor runs, and every process is ready except those stopped
    /// on purpose (held).
    pub fn all_ready(&self) -> bool {
        self.supervisor.is_some()
            && !self.processes.is_empty()
            && self.processes.iter().all(|p| p.ready || p.state == "held")
    }

    /// Processes still running although their supervisor is gone.
    pub fn unsupervised(&self) -> usize {
        self.processes
            .iter()
            .filter(|p| p.state == "unsupervised")
            .count()
    }
}

pub async fn collect(environment: &str, context: &Context) -> anyhow::Result<Report> {
    let state = &context.state;
    let desired: DesiredState = read_json(&state.desired())?.unwrap_or_default();
    let status: SupervisorStatus = read_json(&state.status())?.unwrap_or_default();
    let supervisor = supervisor::live_supervisor(state);
    let client = probe::http_client();
    let kisumctl = context
        .store
        .read("internal-credential-kisumctl", "token")
        .ok()
        .flatten();
    let mut rows = Vec::new();
    for spec in &desired.processes {
        let current = status.processes.get(&spec.name);
        // Without a supervisor (killed, or stopped), a process it started
        // may still run: found by its pid and program.
        let pid = match supervisor {
            Some(_) => current.and_then(|p| p.pid),
            None => current.and_then(supervisor::leftover),
        };
        let up = pid.is_some_and(supervisor::alive);
        let probed = match up {
            true => Some(probe::check(&client, &spec.probe).await),
            false => None,
        };
        let ready = matches!(probed, Some(Ok(())));
        let version = match (&spec.version, &kisumctl) {
            (Some(version), _) => Some(version.clone()),
            (None, Some(token)) if ready => service_version(&client, spec, token).await,
            _ => None,
        };
        let state_name = match current.map(|p| p.state) {
            _ if supervisor.is_none() && up => "unsupervised".to_string(),
            _ if supervisor.is_none() => "stopped".to_string(),
            Some(RunState::Running) if !up => "exited".into(),
            Some(RunState::Running) => "running".into(),
            Some(RunState::Backoff) => "backoff".into(),
            Some(RunState::Held) => "held".into(),
            Some(RunState::Stopped) => "stopped".into(),
            None => "unknown".into(),
        };
        rows.push(Row {
            name: spec.name.clone(),
            kind: if spec.wave == 0 { "data" } else { "service" },
            state: state_name,
            up,
            ready,
            pid,
            ports: spec.ports.clone(),
            version,
            restarts: current.map_or(0, |p| p.restarts),
            // Why a running process is not ready comes first; a last exit
            // is history.
            detail: [
                match probed {
                    Some(Err(why)) => Some(format!("not ready: {why}")),
                    _ => None,
                },
                current
                    .and_then(|p| p.last_exit.clone())
                    .map(|e| format!("last exit: {e}")),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; "),
        });
    }
    let redis_keys = match desired.get("redis") {
        Some(spec) if supervisor.is_some() => redis_keys(context, spec),
        _ => None,
    };
    Ok(Report {
        environment: environment.to_string(),
        state_dir: state.root().display().to_string(),
        supervisor,
        processes: rows,
        redis_keys,
    })
}

/// `version` of `/internal/diagnostics`, asked as kisumctl.
async fn service_version(
    client: &reqwest::Client,
    spec: &ProcessSpec,
    token: &Secret,
) -> Option<String> {
    let internal = spec.ports.get(1)?;
    let response = client
        .get(format!("http://127.0.0.1:{internal}/internal/diagnostics"))
        .headers(internal_headers(token))
        .send()
        .await
        .ok()?;
    let body: serde_json::Value = response.json().await.ok()?;
    body["version"].as_str().map(str::to_string)
}

/// DBSIZE as Auth's Redis user (Auth owns the cache's key families).
fn redis_keys(context: &Context, spec: &ProcessSpec) -> Option<u64> {
    let password = context
        .store
        .read("redis-auth-credentials", "password")
        .ok()??;
    let port = *spec.ports.first()?;
    let reply = probe::redis_command(port, "auth", &password, &["DBSIZE"]).ok()?;
    reply.strip_prefix(':')?.parse().ok()
}
