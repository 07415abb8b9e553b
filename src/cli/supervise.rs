//! `kisumctl supervise --state-dir DIR` (hidden): the supervisor process
//! that `deploy local` starts detached.

use std::path::PathBuf;

use super::Exit;
use crate::local::{state::StateDir, supervisor};

/// Run the processes of a local environment's desired state (started by
/// `deploy`; not meant to be run by hand).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The environment's state directory (absolute).
    #[arg(long)]
    state_dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let state = StateDir::new(std::path::absolute(&args.state_dir)?);
    supervisor::run(&state)?;
    Ok(Exit::Clean)
}
