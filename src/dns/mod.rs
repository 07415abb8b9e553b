//! `kisumctl dns`: an environment's DNS records in Route53, planned from
//! the matrix and applied with ownership markers (see `records`), batched
//! within Route53's limits, and waited for until INSYNC. Never prints.

pub mod batch;
pub mod plan;
pub mod records;
pub mod route53;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::matrix::Environment;
use plan::{Action, Change, Cutover, Outcome, Planned};
use records::ZoneView;
use route53::{ChangeError, Route53};

/// The plan of one zone.
#[derive(Debug, Clone, Serialize)]
pub struct ZonePlan {
    #[serde(flatten)]
    pub zone: ZoneView,
    /// Route53 hosted zone id; `None` when the zone does not exist there
    /// and nothing of this environment is wanted in it.
    pub hosted_zone: Option<String>,
    #[serde(skip)]
    pub planned: Vec<Planned>,
}

/// What `dns plan`, `apply` and `cutover` work on.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub environment: String,
    pub owner: String,
    pub zones: Vec<ZonePlan>,
}

impl Plan {
    pub fn records(&self) -> impl Iterator<Item = &Planned> {
        self.zones.iter().flat_map(|z| z.planned.iter())
    }

    pub fn count(&self, action: Action) -> usize {
        self.records().filter(|p| p.action == action).count()
    }

    /// The conflicts, one line each: `NAME TYPE: why`.
    pub fn conflicts(&self) -> Vec<String> {
        self.records()
            .filter(|p| p.action == Action::Conflict)
            .map(|p| {
                format!(
                    "{} {}: {}",
                    p.name,
                    p.rtype.as_str(),
                    p.reason.as_deref().unwrap_or("not kisumctl's")
                )
            })
            .collect()
    }

    /// The conflict at record name `name`, if any.
    pub fn conflict_at(&self, name: &str) -> Option<&Planned> {
        let name = records::normal_name(name);
        self.records()
            .find(|p| p.action == Action::Conflict && records::normal_name(&p.name) == name)
    }

    pub fn failed(&self) -> usize {
        self.records()
            .filter(|p| matches!(p.outcome, Some(Outcome::Failed { .. })))
            .count()
    }
}

/// The Route53 endpoint: the matrix's `dns.endpoint`, else the SDK's own
/// lookup (`AWS_ENDPOINT_URL_ROUTE_53`, `AWS_ENDPOINT_URL`, AWS).
pub async fn connect(env: &Environment<'_>) -> Route53 {
    Route53::connect(env.file.dns.endpoint.as_deref()).await
}

/// Finds the hosted zone of every zone of the matrix. A zone the
/// environment wants records in must exist; another one may be missing.
async fn hosted_zones(
    r53: &Route53,
    env: &Environment<'_>,
    needed: &[&str],
) -> Result<Vec<(ZoneView, Option<String>)>> {
    let mut out = Vec::new();
    for zone in records::zones(env) {
        let hosted = match env.file.dns.hosted_zones.get(&zone.id) {
            Some(id) => Some(id.clone()),
            None => {
                let found = r53.find_zone(&zone.domain, zone.private).await;
                let found = found.map_err(|e| e.context(format!("zone {}", zone.id)))?;
                if found.is_none() && needed.contains(&zone.id.as_str()) {
                    anyhow::bail!("{}", missing_zone(&zone));
                }
                found
            }
        };
        out.push((zone, hosted));
    }
    Ok(out)
}

/// The Route53 hosted zone of matrix zone `zone` in this environment.
pub async fn hosted_zone(r53: &Route53, env: &Environment<'_>, zone: &str) -> Result<String> {
    if let Some(id) = env.file.dns.hosted_zones.get(zone) {
        return Ok(id.clone());
    }
    let view = records::zones(env)
        .into_iter()
        .find(|z| z.id == zone)
        .ok_or_else(|| anyhow::anyhow!("no zone {zone} in the matrix"))?;
    r53.find_zone(&view.domain, view.private)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{}", missing_zone(&view)))
}

fn missing_zone(zone: &ZoneView) -> String {
    let kind = if zone.private { "private" } else { "public" };
    format!(
        "zone {}: Route53 has no {kind} hosted zone {} (create it, or name it under dns.hosted-zones)",
        zone.id, zone.domain
    )
}

/// Reads every zone and compares it with the matrix.
pub async fn plan(r53: &Route53, env: &Environment<'_>) -> Result<Plan> {
    let desired = records::desired(env);
    let needed: Vec<&str> = desired.iter().map(|d| d.zone.as_str()).collect();
    let owner = records::owner(env);
    let ttl = env.file.dns.ttl_seconds;
    plan_zones(r53, env, &needed, |zone, listing| {
        let wanted: Vec<&records::Desired> = desired.iter().filter(|d| d.zone == zone.id).collect();
        plan::plan_zone(&zone.id, &wanted, listing, &owner, ttl)
    })
    .await
}

/// The plan of a TTL cutover over every owned record of the environment.
pub async fn plan_cutover(r53: &Route53, env: &Environment<'_>, cutover: Cutover) -> Result<Plan> {
    let owner = records::owner(env);
    plan_zones(r53, env, &[], |zone, listing| {
        plan::plan_cutover(&zone.id, listing, &owner, cutover)
    })
    .await
}

/// Lists every zone of the environment that exists in Route53 and plans
/// it with `per_zone`.
async fn plan_zones(
    r53: &Route53,
    env: &Environment<'_>,
    needed: &[&str],
    per_zone: impl Fn(&ZoneView, &plan::Listing) -> Vec<Planned>,
) -> Result<Plan> {
    let mut zones = Vec::new();
    for (zone, hosted) in hosted_zones(r53, env, needed).await? {
        let planned = match &hosted {
            Some(id) => per_zone(&zone, &r53.list(id).await?),
            None => vec![],
        };
        zones.push(ZonePlan {
            zone,
            hosted_zone: hosted,
            planned,
        });
    }
    Ok(Plan {
        environment: env.name.to_string(),
        owner: records::owner(env),
        zones,
    })
}

/// Applies every change of `plan`, zone by zone, in batches within
/// Route53's limits, then (once every zone's batches are sent) waits until
/// each change is INSYNC.
///
/// A batch Route53 refuses (a record created meanwhile by someone else, a
/// delete that no longer matches) is retried record by record, so that one
/// bad record fails alone: its `outcome` says why. Any other error
/// (throttling past every retry, access, network) stops the apply; the
/// records applied until then keep their outcome.
pub async fn apply(r53: &Route53, plan: &mut Plan, wait: Duration) -> Result<()> {
    let comment = format!("kisumctl dns apply {} ({})", plan.environment, plan.owner);
    // Every zone's batches go out before any is waited for: a wait takes
    // up to a minute on AWS, and one that times out must not keep the
    // other zones' records from being sent.
    let mut changes_sent = Vec::new();
    for zone in &mut plan.zones {
        let Some(hosted) = zone.hosted_zone.clone() else {
            continue;
        };
        let owned: Vec<(usize, String, Vec<Change>)> = zone
            .planned
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.changes.is_empty())
            .map(|(n, p)| (n, p.name.clone(), p.changes.clone()))
            .collect();
        let units: Vec<(&str, &[Change])> = owned
            .iter()
            .map(|(_, name, changes)| (name.as_str(), changes.as_slice()))
            .collect();
        for members in batch::batches(&units, batch::ROUTE53) {
            let changes = batch::ordered(&units, &members);
            let outcome = r53.change(&hosted, &changes, &comment).await;
            let mut singles = Vec::new();
            match outcome {
                Ok(id) => {
                    changes_sent.push(id);
                    for &n in &members {
                        zone.planned[owned[n].0].outcome = Some(Outcome::Applied);
                    }
                }
                Err(ChangeError::Refused(error)) if members.len() == 1 => {
                    zone.planned[owned[members[0]].0].outcome = Some(Outcome::Failed { error });
                }
                Err(ChangeError::Refused(_)) => singles = members,
                Err(ChangeError::Other(error)) => return Err(error),
            }
            for n in singles {
                let changes = batch::ordered(&units, &[n]);
                let outcome = match r53.change(&hosted, &changes, &comment).await {
                    Ok(id) => {
                        changes_sent.push(id);
                        Outcome::Applied
                    }
                    Err(ChangeError::Refused(error)) => Outcome::Failed { error },
                    Err(ChangeError::Other(error)) => return Err(error),
                };
                zone.planned[owned[n].0].outcome = Some(outcome);
            }
        }
    }
    for id in changes_sent {
        r53.wait_insync(&id, wait).await?;
    }
    Ok(())
}

/// Counts per action, for reports.
pub fn summary(plan: &Plan) -> BTreeMap<&'static str, usize> {
    [
        Action::Create,
        Action::Update,
        Action::Delete,
        Action::Conflict,
        Action::Unchanged,
    ]
    .into_iter()
    .map(|a| (a.as_str(), plan.count(a)))
    .collect()
}
