//! Writing rendered files to `manifests/<env>/`, and `--check`: comparing
//! them with what is committed.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;

use super::RenderedFile;

/// How the committed directory differs from a fresh render.
#[derive(Debug, Default, serde::Serialize)]
pub struct Staleness {
    pub changed: Vec<String>,
    pub missing: Vec<String>,
    /// Files in the directory that the render no longer produces.
    pub extra: Vec<String>,
    /// Unified diffs of changed, missing and extra files.
    #[serde(skip)]
    pub diff: String,
}

impl Staleness {
    pub fn is_clean(&self) -> bool {
        self.changed.is_empty() && self.missing.is_empty() && self.extra.is_empty()
    }
}

fn yaml_files(dir: &Path) -> io::Result<BTreeSet<String>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries
            .filter_map(Result::ok)
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".yaml"))
            .collect()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(error) => Err(error),
    }
}

/// Writes `files` into `dir`, replacing changed files and removing YAML
/// files the render no longer produces. Returns the names that changed.
pub fn write(dir: &Path, files: &[RenderedFile]) -> io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut touched = Vec::new();
    for file in files {
        let path = dir.join(&file.name);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(file.text.as_str()) {
            continue;
        }
        // Write beside the target, then rename: a reader never sees half a file.
        let partial = dir.join(format!(".{}.partial", file.name));
        std::fs::write(&partial, &file.text)?;
        std::fs::rename(&partial, &path)?;
        touched.push(file.name.clone());
    }
    let produced: BTreeSet<&str> = files.iter().map(|f| f.name.as_str()).collect();
    for name in yaml_files(dir)? {
        if !produced.contains(name.as_str()) {
            std::fs::remove_file(dir.join(&name))?;
            touched.push(name);
        }
    }
    Ok(touched)
}

/// Entries of `dir` that are not plain YAML files: render never writes
/// them, so their presence means someone else did.
pub fn foreign_entries(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut foreign: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            !(is_file && name.ends_with(".yaml"))
        })
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    foreign.sort();
    Ok(foreign)
}

/// Compares `files` with the contents of `dir` without writing.
pub fn check(dir: &Path, files: &[RenderedFile]) -> io::Result<Staleness> {
    let mut staleness = Staleness::default();
    let shown = |name: &str| dir.join(name).display().to_string();
    for file in files {
        match std::fs::read_to_string(dir.join(&file.name)) {
            Ok(committed) if committed == file.text => {}
            Ok(committed) => {
                staleness.diff += &unified(&committed, &file.text, &shown(&file.name));
                staleness.changed.push(file.name.clone());
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                staleness.diff += &unified("", &file.text, &shown(&file.name));
                staleness.missing.push(file.name.clone());
            }
            Err(error) => return Err(error),
        }
    }
    let produced: BTreeSet<&str> = files.iter().map(|f| f.name.as_str()).collect();
    for name in yaml_files(dir)? {
        if !produced.contains(name.as_str()) {
            let committed = std::fs::read_to_string(dir.join(&name))?;
            staleness.diff += &unified(&committed, "", &shown(&name));
            staleness.extra.push(name);
        }
    }
    for name in foreign_entries(dir)? {
        staleness.diff += &format!("--- {} (not written by render)\n", shown(&name));
        staleness.extra.push(name);
    }
    Ok(staleness)
}

fn unified(old: &str, new: &str, name: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("{name} (committed)"),
            &format!("{name} (rendered)"),
        )
        .to_string()
}
