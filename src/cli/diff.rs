//! `kisumctl diff ENV`: the rendered manifests against the live objects.

use std::path::Path;

use super::Exit;
use super::cluster::{self, Common, Spinner};
use super::output::{out, outln};
use crate::matrix::Environment;

/// Compare the manifests rendered from the matrix with the live objects.
///
/// For every rendered object, the fields the manifests set are compared
/// with the live object's (so that defaults and status are not
/// differences), as a unified diff; objects carrying kisumctl's ownership
/// labels that the matrix no longer names are listed as `pruned`, as the
/// next deploy would delete them. Secret values are masked on both sides.
///
/// Exit codes: 0 no difference, 1 differences, 2 unusable input, 3 the
/// cluster cannot be read.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment (not `local`).
    pub(super) env: String,

    #[command(flatten)]
    pub(super) cluster: Common,
}

pub fn run(
    dir: &Path,
    matrix: &crate::matrix::Matrix,
    env: &Environment,
    args: Args,
) -> anyhow::Result<Exit> {
    let format = args.cluster.output;
    let (manifests, _) = match cluster::manifests(matrix, env, &args.cluster.templates) {
        Ok(found) => found,
        Err(failure) => return Ok(cluster::fail(format, failure)),
    };
    let spinner = Spinner::new(true);
    let outcome = cluster::block_on(&spinner, async {
        let target = cluster::target(dir, env, None, None).await?;
        crate::cluster::release::diff(&target, &manifests)
            .await
            .map_err(|e| cluster::deploy_error(&e))
    })?;
    let differences = match outcome {
        Ok(differences) => differences,
        Err(failure) => return Ok(cluster::fail(format, failure)),
    };
    if format == super::OutputFormat::Json {
        let document = serde_json::json!({ "environment": env.name, "differences": differences });
        outln!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        for difference in &differences {
            outln!("{} {}", difference.change, difference.object);
            out!("{}", difference.diff);
        }
    }
    Ok(if differences.is_empty() {
        Exit::Clean
    } else {
        Exit::CheckFailed
    })
}
