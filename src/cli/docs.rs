//! `kisumctl docs ENV`: the section-29 documents of an environment.

use super::output::{errln, outln};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::Exit;
use crate::matrix::{Environment, Matrix};
use crate::ops::documents;

/// Write the documents of plan section 29 for an environment.
///
/// Environment matrix, service inventory, network matrix, secrets
/// inventory, backup and restore runbook and deployment runbook, as
/// Markdown generated from the matrix into `docs/<env>/` (beside the matrix
/// directory). `--check` writes nothing and exits 1 naming each file that
/// is missing or differs, as CI runs it.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment whose documents to write.
    env: String,

    /// Directory to write to instead of `docs/<env>`.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,

    /// Compare instead of writing; exit 1 when a document is stale.
    #[arg(long)]
    check: bool,
}

pub fn run(dir: &Path, args: Args) -> anyhow::Result<Exit> {
    super::with_environment(dir, &args.env, super::OutputFormat::Text, |matrix, env| {
        write_documents(dir, matrix, env, &args)
    })
}

fn write_documents(
    dir: &Path,
    matrix: &Matrix,
    env: &Environment,
    args: &Args,
) -> anyhow::Result<Exit> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::matrix::root(dir).join("docs").join(env.name));
    let documents = documents::build(matrix, env);
    if args.check {
        let stale: Vec<String> = documents
            .iter()
            .filter(|d| std::fs::read_to_string(out.join(d.file)).ok().as_deref() != Some(&d.text))
            .map(|d| out.join(d.file).display().to_string())
            .collect();
        for path in &stale {
            errln!("stale: {path}");
        }
        if stale.is_empty() {
            outln!("{} documents of {} are current", documents.len(), env.name);
            return Ok(Exit::Clean);
        }
        errln!(
            "run `kisumctl docs {}` and commit the result (exit 1)",
            env.name
        );
        return Ok(Exit::CheckFailed);
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for document in &documents {
        let path = out.join(document.file);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(&document.text) {
            continue;
        }
        std::fs::write(&path, &document.text)
            .with_context(|| format!("writing {}", path.display()))?;
        outln!("wrote {}", path.display());
    }
    Ok(Exit::Clean)
}
