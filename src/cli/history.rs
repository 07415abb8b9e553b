//! `kisumctl history ENV`: the releases recorded in the cluster.

use std::path::Path;

use super::Exit;
use super::cluster::{self, Common, Spinner};
use super::output::{outln, table};
use crate::cluster::history;
use crate::matrix::Environment;

/// List the releases of an environment recorded in its cluster.
///
/// One ConfigMap per release in the environment's namespace holds the
/// manifest digest, images, schema levels, who deployed and when, the
/// outcome (deployed or failed) and the manifests themselves, which
/// `kisumctl rollback --to N` applies again. The current release is the
/// newest that deployed.
///
/// Exit codes: 0 listed, 2 unusable input, 3 the cluster cannot be read.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment (not `local`).
    pub(super) env: String,

    #[command(flatten)]
    pub(super) cluster: Common,
}

pub fn run(dir: &Path, env: &Environment, args: Args) -> anyhow::Result<Exit> {
    let format = args.cluster.output;
    let spinner = Spinner::new(true);
    let outcome = cluster::block_on(&spinner, async {
        let target = cluster::target(dir, env, None, None).await?;
        history::list(&target.namespace, env.name)
            .await
            .map_err(|e| (Exit::OperationFailed, e.to_string()))
    })?;
    let records = match outcome {
        Ok(records) => records,
        Err(failure) => return Ok(cluster::fail(format, failure)),
    };
    let current = history::current(&records).map(|r| r.number);
    if format == super::OutputFormat::Json {
        let document = serde_json::json!({
            "environment": env.name,
            "current": current,
            "releases": records,
        });
        outln!("{}", serde_json::to_string_pretty(&document)?);
        return Ok(Exit::Clean);
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let schema: Vec<String> = r
                .schema
                .iter()
                .map(|(s, l)| format!("{s}={}", l.level))
                .collect();
            vec![
                format!(
                    "{}{}",
                    r.number,
                    if Some(r.number) == current { " *" } else { "" }
                ),
                serde_json::to_value(r.outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                r.when.clone(),
                r.who.clone(),
                r.digest.chars().take(19).collect(),
                schema.join(" "),
                r.note.clone(),
            ]
        })
        .collect();
    outln!(
        "{}",
        table(
            &[
                "RELEASE", "OUTCOME", "WHEN", "WHO", "DIGEST", "SCHEMA", "NOTE"
            ],
            &rows
        )
    );
    Ok(Exit::Clean)
}
