//! `kisumctl rollback ENV [--to N]`: a recorded release applied again.

use std::path::Path;

use super::Exit;
use super::cluster::{self, Common, Spinner};
use crate::matrix::Environment;

/// Apply an earlier release's stored manifests again.
///
/// Without `--to`, the deployed release before the current one. The
/// manifests come from the release history in the cluster, not from the
/// matrix; they are applied wave by wave with each wave's rollouts waited
/// for, what they do not name is pruned, the smoke checks run, and the
/// rollback is recorded as a new release. Migrations are never reversed:
/// a rollback to a release that migrated to a lower schema level than a
/// newer release's code needs (its `schema-levels.<service>.oldest`) is
/// refused unless `--force`. Production asks for confirmation unless
/// `--yes`.
///
/// Exit codes: 0 rolled back and the smoke checks passed, 1 refused by the
/// schema guard, 2 unusable input, 3 the rollback failed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment (not `local`).
    pub(super) env: String,

    /// Release number to go back to (see `kisumctl history ENV`).
    #[arg(long, value_name = "N")]
    to: Option<u32>,

    /// Roll back even across a schema level the older code may not run on.
    #[arg(long)]
    force: bool,

    /// Seconds each rollout may take, in place of the matrix's.
    #[arg(long, value_name = "SECONDS", value_parser = super::positive_seconds)]
    timeout: Option<u64>,

    /// Roll production back without asking.
    #[arg(long)]
    yes: bool,

    #[command(flatten)]
    pub(super) cluster: Common,
}

pub fn run(dir: &Path, env: &Environment, args: Args) -> anyhow::Result<Exit> {
    let format = args.cluster.output;
    if env.is_production() && !args.yes {
        let lines = [format!(
            "roll {} back to release {}",
            env.name,
            args.to
                .map_or("before the current one".to_string(), |n| n.to_string())
        )];
        if !super::confirm_by_typing("rollback production", &lines, env.name)? {
            let message = format!(
                "not rolling back {}: not confirmed (pass --yes to go ahead without asking)",
                env.name
            );
            return Ok(super::refuse(format, &message, Exit::UnusableInput));
        }
    }
    let smoke = match cluster::smoke_target(dir, env) {
        Ok(smoke) => smoke,
        Err(failure) => return Ok(cluster::fail(format, failure)),
    };
    let spinner = Spinner::new(false);
    let outcome = cluster::block_on(&spinner, async {
        let target = cluster::target(dir, env, args.timeout, Some(smoke)).await?;
        crate::cluster::release::rollback(&target, args.to, args.force, &spinner)
            .await
            .map_err(|e| cluster::deploy_error(&e))
    })?;
    Ok(match outcome {
        Ok(report) => cluster::report(&report, format, "rollback"),
        Err(failure) => cluster::fail(format, failure),
    })
}
