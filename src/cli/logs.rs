//! `kisumctl logs local SERVICE [-f]`.

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::time::Duration;

use super::Exit;
use crate::local::Context;
use crate::matrix::Environment;

/// Print the log of a process of a local environment.
///
/// A service, a data service (postgres, redis, mongo) or `supervisor`.
///
/// Exit codes: 0 printed, 2 unknown process or unusable input.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment (only `local` runs processes).
    pub(super) env: String,

    /// The process whose log to print.
    service: String,

    /// Keep printing what is appended, until interrupted.
    #[arg(short, long)]
    follow: bool,

    /// Only the last N lines (all by default).
    #[arg(short = 'n', long, value_name = "N")]
    lines: Option<usize>,
}

pub fn run(dir: &Path, env: &Environment, args: Args) -> anyhow::Result<Exit> {
    let context = Context::for_environment(env, dir)?;
    let valid = args
        .service
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let path = context.state.log(&args.service);
    if !valid || !path.is_file() {
        let mut known: Vec<String> = std::fs::read_dir(context.state.logs())
            .map(|entries| {
                entries
                    .filter_map(|e| {
                        e.ok()?
                            .file_name()
                            .to_str()?
                            .strip_suffix(".log")
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        known.sort();
        eprintln!(
            "error: no log for `{}` in {}; known: {}",
            args.service,
            context.state.logs().display(),
            if known.is_empty() {
                "none (deploy first)".into()
            } else {
                known.join(", ")
            }
        );
        return Ok(Exit::UnusableInput);
    }
    let mut file = std::fs::File::open(&path)?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let shown = match args.lines {
        Some(n) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
                + if lines.is_empty() { "" } else { "\n" }
        }
        None => text,
    };
    let mut out = std::io::stdout().lock();
    out.write_all(shown.as_bytes())?;
    out.flush()?;
    if !args.follow {
        return Ok(Exit::Clean);
    }
    let mut position = file.stream_position()?;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let length = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if length < position {
            // Truncated or replaced (a purge and a new deploy).
            file = std::fs::File::open(&path)?;
            position = 0;
        }
        file.seek(SeekFrom::Start(position))?;
        let mut chunk = Vec::new();
        file.read_to_end(&mut chunk)?;
        position += chunk.len() as u64;
        if !chunk.is_empty() {
            out.write_all(&chunk)?;
            out.flush()?;
        }
    }
}
