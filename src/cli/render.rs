//! `kisumctl render [ENV] [--out DIR] [--check]`: Kubernetes manifests.

use super::output::{errln, out};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{Exit, load_matrix};
use crate::render::{self, output, templates::Templates};

/// Render Kubernetes manifests from the matrix.
///
/// Writes one directory per environment, `DIR/<env>/`: `namespace.yaml`
/// (namespace, default-deny and DNS policies), one file per service and a
/// `kustomization.yaml`, so `kubectl apply -k manifests/<env>` works. The
/// output is deterministic. With `--check`, nothing is written: the command
/// exits 1 and prints a diff when the committed files differ from a fresh
/// render. A matrix that violates a rule of `kisumctl validate` is not
/// rendered (exit 1).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment to render; every environment when omitted.
    env: Option<String>,

    /// Parent directory of the per-environment directories.
    #[arg(long, default_value = "manifests")]
    out: PathBuf,

    /// Compare with the files under --out instead of writing them.
    #[arg(long)]
    check: bool,

    /// Directory of the tera templates.
    #[arg(long, env = "KISUM_TEMPLATES", default_value = "templates")]
    templates: PathBuf,
}

/// The error-level findings of `validate` that concern `names`.
pub(super) fn violations(
    matrix: &crate::matrix::Matrix,
    names: &[String],
) -> Vec<crate::matrix::rules::Finding> {
    crate::matrix::rules::check(matrix)
        .into_iter()
        .filter(|f| f.level == crate::matrix::rules::Level::Error)
        .filter(|f| f.environment.as_ref().is_none_or(|env| names.contains(env)))
        .collect()
}

pub fn run(dir: &Path, args: Args) -> anyhow::Result<Exit> {
    let matrix = match load_matrix(dir, super::OutputFormat::Text) {
        Ok(matrix) => matrix,
        Err(exit) => return Ok(exit),
    };
    let names: Vec<String> = match &args.env {
        Some(env) => vec![env.clone()],
        None => matrix.environment_names().map(str::to_string).collect(),
    };
    // A matrix that breaks a rule (an inline secret, a public Core) is
    // never turned into manifests.
    let violations = violations(&matrix, &names);
    if !violations.is_empty() {
        for finding in &violations {
            out!("{}", super::validate::finding_line(finding));
        }
        errln!(
            "not rendering: the matrix violates {} rule(s); see `kisumctl validate`",
            violations.len()
        );
        return Ok(Exit::CheckFailed);
    }
    let templates = match Templates::load(&args.templates) {
        Ok(templates) => templates,
        Err(error) => {
            errln!("error: {error}");
            return Ok(Exit::UnusableInput);
        }
    };

    let mut stale = false;
    for name in &names {
        let env = match matrix.environment(name) {
            Ok(env) => env,
            Err(errors) => {
                for error in &errors.0 {
                    errln!("error: {error}");
                }
                return Ok(Exit::UnusableInput);
            }
        };
        let files = match render::render(&env, &templates) {
            Ok(files) => files,
            Err(error) => {
                errln!("error: {name}: {error}");
                return Ok(Exit::UnusableInput);
            }
        };
        let target = args.out.join(name);
        if args.check {
            let staleness = output::check(&target, &files)
                .with_context(|| format!("reading {}", target.display()))?;
            if staleness.is_clean() {
                errln!("{name}: {} is up to date", target.display());
            } else {
                stale = true;
                out!("{}", staleness.diff);
                errln!(
                    "{name}: {} is stale: {} changed, {} missing, {} extra; run `kisumctl render {name} --out {}`",
                    target.display(),
                    staleness.changed.len(),
                    staleness.missing.len(),
                    staleness.extra.len(),
                    args.out.display()
                );
            }
        } else {
            let touched = output::write(&target, &files)
                .with_context(|| format!("writing {}", target.display()))?;
            for foreign in output::foreign_entries(&target)? {
                errln!(
                    "warning: {} was not written by render; remove it or `render --check` fails",
                    target.join(foreign).display()
                );
            }
            errln!(
                "{name}: {} files in {} ({} changed)",
                files.len(),
                target.display(),
                touched.len()
            );
        }
    }
    // Directories beside the environments' that no environment renders.
    if args.env.is_none() {
        let known: Vec<&str> = matrix.environment_names().collect();
        let strays: Vec<String> = output::foreign_entries(&args.out)
            .with_context(|| format!("reading {}", args.out.display()))?
            .into_iter()
            .filter(|name| !known.contains(&name.as_str()))
            .collect();
        for stray in &strays {
            errln!(
                "{}: not an environment of the matrix",
                args.out.join(stray).display()
            );
        }
        stale |= args.check && !strays.is_empty();
    }
    Ok(if stale {
        Exit::CheckFailed
    } else {
        Exit::Clean
    })
}
