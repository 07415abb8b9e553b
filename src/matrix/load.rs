//! Reading the matrix files into typed values, with errors that point at
//! the file, line, column and field path of the problem.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::index::{PathIndex, Position};
use super::schema::{BaseFile, EnvironmentFile};

/// The file that holds the shared facts.
pub const BASE_FILE: &str = "base.yaml";

/// A file of the matrix as read from disk, with its path index.
#[derive(Debug, Clone)]
pub struct Source {
    /// Path as shown to the operator.
    pub path: PathBuf,
    pub index: PathIndex,
    pub text: String,
}

impl Source {
    /// Where `field` is in this file, or its nearest written ancestor.
    pub fn locate(&self, field: &str) -> Option<Position> {
        self.index.nearest(field)
    }

    pub fn has(&self, field: &str) -> bool {
        self.index.get(field).is_some()
    }

    /// The source line (trimmed) where `field` is written.
    pub fn line_of(&self, field: &str) -> Option<&str> {
        let line = self.index.get(field)?.line as usize;
        self.text.lines().nth(line.checked_sub(1)?).map(str::trim)
    }
}

/// One problem that makes the matrix unusable (exit code 2).
#[derive(Debug, Clone, serde::Serialize)]
pub struct InputError {
    pub file: PathBuf,
    pub position: Option<Position>,
    /// Dotted path of the offending field; empty for the whole file.
    pub field: String,
    pub message: String,
    pub hint: Option<String>,
}

/// Control characters shown as escapes, so a value cannot rewrite the
/// operator's terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.plain();
        write!(f, "{}", printable(&redact(&text)))
    }
}

/// A quoted value that looks like a credential is not repeated back.
pub fn redact(message: &str) -> String {
    let mut out = String::new();
    for (n, part) in message.split('`').enumerate() {
        if n > 0 {
            out.push('`');
        }
        let quoted = n % 2 == 1;
        if quoted && crate::matrix::rules::looks_like_secret_value(part) {
            out.push_str("<redacted>");
        } else {
            out.push_str(part);
        }
    }
    out
}

impl InputError {
    /// The same error with credential-looking values removed, for output.
    pub fn redacted(&self) -> InputError {
        InputError {
            message: redact(&self.message),
            hint: self.hint.as_deref().map(redact),
            ..self.clone()
        }
    }

    fn plain(&self) -> String {
        let mut f = String::new();
        self.write_plain(&mut f).ok();
        f
    }

    fn write_plain(&self, f: &mut impl fmt::Write) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(at) = self.position {
            write!(f, ":{}:{}", at.line, at.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// Every input problem found, across all files.
#[derive(Debug, Clone, thiserror::Error)]
pub struct InputErrors(pub Vec<InputError>);

impl fmt::Display for InputErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, error) in self.0.iter().enumerate() {
            if n > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// The matrix as read: the base and every environment file, typed.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub dir: PathBuf,
    pub base: BaseFile,
    pub base_source: Source,
    pub environments: BTreeMap<String, (EnvironmentFile, Source)>,
}

/// Reads `dir/base.yaml` and every other `dir/*.yaml` as an environment.
pub fn load_dir(dir: &Path) -> Result<Loaded, InputErrors> {
    let mut errors = Vec::new();
    let env_paths = match environment_files(dir) {
        Ok(paths) => paths,
        Err(error) => return Err(InputErrors(vec![error])),
    };

    let base = parse_file::<BaseFile>(&dir.join(BASE_FILE));
    let mut environments = BTreeMap::new();
    for path in env_paths {
        match parse_file::<EnvironmentFile>(&path) {
            Ok((file, source)) => {
                let stem = file_stem(&path);
                if file.environment != stem {
                    errors.push(InputError {
                        file: source.path.clone(),
                        position: source.locate("environment"),
                        field: "environment".into(),
                        message: format!(
                            "says `{}` but the file is named `{stem}.yaml`",
                            file.environment
                        ),
                        hint: Some(format!("set `environment: {stem}` or rename the file")),
                    });
                }
                environments.insert(stem, (file, source));
            }
            Err(error) => errors.push(*error),
        }
    }

    let (base, base_source) = match base {
        Ok(parsed) => parsed,
        Err(error) => {
            errors.insert(0, *error);
            return Err(InputErrors(errors));
        }
    };
    if !errors.is_empty() {
        return Err(InputErrors(errors));
    }
    Ok(Loaded {
        dir: dir.to_path_buf(),
        base,
        base_source,
        environments,
    })
}

fn environment_files(dir: &Path) -> Result<Vec<PathBuf>, InputError> {
    let entries = std::fs::read_dir(dir).map_err(|error| InputError {
        file: dir.to_path_buf(),
        position: None,
        field: String::new(),
        message: format!("cannot read the matrix directory: {error}"),
        hint: Some(
            "run from the repository root, or pass --matrix DIR (or set KISUM_MATRIX)".into(),
        ),
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .filter(|path| path.file_name().is_some_and(|name| name != BASE_FILE))
        .collect();
    paths.sort();
    if let Some(yml) = paths
        .iter()
        .find(|path| path.extension().is_some_and(|ext| ext == "yml"))
    {
        return Err(InputError {
            file: yml.clone(),
            position: None,
            field: String::new(),
            message: "matrix files end in `.yaml`; this one would be ignored".into(),
            hint: Some("rename it to .yaml".into()),
        });
    }
    Ok(paths)
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Parses one YAML file into `T`, keeping the first error with its place.
pub fn parse_file<T: DeserializeOwned>(path: &Path) -> Result<(T, Source), Box<InputError>> {
    // A FIFO or device would block or never end.
    if std::fs::metadata(path).is_ok_and(|meta| !meta.is_file()) {
        return Err(Box::new(InputError {
            file: path.to_path_buf(),
            position: None,
            field: String::new(),
            message: "not a regular file".into(),
            hint: None,
        }));
    }
    let text = std::fs::read_to_string(path).map_err(|error| InputError {
        file: path.to_path_buf(),
        position: None,
        field: String::new(),
        message: format!("cannot read file: {error}"),
        hint: None,
    })?;
    let value = parse_str::<T>(&text).map_err(|mut error| {
        error.file = path.to_path_buf();
        error
    })?;
    let source = Source {
        path: path.to_path_buf(),
        index: PathIndex::build(&text),
        text,
    };
    Ok((value, source))
}

/// Parses YAML text into `T`; the error's `file` is left empty.
pub fn parse_str<T: DeserializeOwned>(text: &str) -> Result<T, Box<InputError>> {
    let mut field = String::new();
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    options.reject_unsupported_tags = true;
    let result =
        serde_saphyr::with_deserializer_from_str_with_options(text, options, |deserializer| {
            serde_path_to_error::deserialize::<_, T>(deserializer).map_err(|error| {
                field = error.path().to_string();
                error.into_inner()
            })
        });
    result.map_err(|error| {
        let reported = error.location().map(|at| Position {
            line: at.line(),
            column: at.column(),
        });
        let message = explain_type(&plain_message(&error.without_snippet().to_string()));
        let index = PathIndex::build(text);
        let field = refine_field(&known_segments(&field), &message, &index, reported);
        let position = best_position(&message, &field, &index, reported);
        Box::new(InputError {
            file: PathBuf::new(),
            position,
            hint: hint_for(&message),
            field,
            message,
        })
    })
}

/// The path without the `?` segments serde_path_to_error uses for keys
/// it could not name.
fn known_segments(field: &str) -> String {
    let field = field.replace('[', ".").replace(']', "");
    field
        .split('.')
        .take_while(|segment| *segment != "?" && !segment.is_empty())
        .collect::<Vec<_>>()
        .join(".")
}

/// Where to point. The parser reports a missing field where the mapping
/// ended and an unknown key of a tagged block at the block; the key itself
/// is more useful in both cases.
fn best_position(
    message: &str,
    field: &str,
    index: &PathIndex,
    reported: Option<Position>,
) -> Option<Position> {
    let by_key = message.starts_with("missing field") || message.starts_with("unknown field");
    match index.get(field) {
        Some(key) if by_key => Some(key),
        _ => reported.or_else(|| index.nearest(field)),
    }
}

/// "invalid u16" says what is wrong but not what is right.
fn explain_type(message: &str) -> String {
    let range = match message {
        "invalid u8" => "a whole number from 0 to 255",
        "invalid u16" => "a whole number from 0 to 65535",
        "invalid u32" => "a whole number from 0 to 4294967295",
        "invalid i32" | "invalid i64" => "a whole number",
        "invalid f64" => "a number",
        _ => return message.to_string(),
    };
    format!("{message}: expected {range}")
}

/// The parser appends "at line L, column C"; the position is kept apart.
/// Advice meant for the programmer is replaced by advice for the operator.
fn plain_message(message: &str) -> String {
    let trimmed = match message.rfind(" at line ") {
        Some(cut) if is_position(&message[cut + " at line ".len()..]) => &message[..cut],
        _ => message,
    };
    let trimmed = trimmed.replace(", set DuplicateKeyPolicy in Options if acceptable", "");
    if trimmed.contains("multiple YAML documents") {
        return "a matrix file holds one YAML document; remove the second `---`".to_string();
    }
    if trimmed.contains("budget breached") {
        return "too many YAML aliases; write the values out or use fewer anchors".to_string();
    }
    if trimmed == "unexpected end of input" || trimmed.starts_with("EOF") {
        return "the file is empty or ends too early".to_string();
    }
    match trimmed.find(", use Option<") {
        Some(cut) => trimmed[..cut].to_string(),
        None => trimmed,
    }
}

/// Whether `text` is exactly `L, column C`.
fn is_position(text: &str) -> bool {
    let Some((line, column)) = text.split_once(", column ") else {
        return false;
    };
    !line.is_empty()
        && line.chars().all(|c| c.is_ascii_digit())
        && !column.is_empty()
        && column.chars().all(|c| c.is_ascii_digit())
}

/// Completes the field path: an unknown or duplicate key is named by the
/// message, not the path; a syntax error has no path, so the last key
/// read before the error stands in.
fn refine_field(
    field: &str,
    message: &str,
    index: &PathIndex,
    reported: Option<Position>,
) -> String {
    let named = quoted_after(message, "unknown field `").or_else(|| {
        message
            .strip_prefix("duplicate mapping key: ")
            .map(|key| key.trim().to_string())
    });
    if let Some(key) = named {
        if field.ends_with(&key) {
            return field.to_string();
        }
        return if field.is_empty() {
            key
        } else {
            format!("{field}.{key}")
        };
    }
    if field.is_empty()
        && let Some(at) = reported
    {
        return index.last_key_before(at).unwrap_or_default();
    }
    field.to_string()
}

fn quoted_after(message: &str, marker: &str) -> Option<String> {
    let start = message.find(marker)? + marker.len();
    let rest = &message[start..];
    Some(rest[..rest.find('`')?].to_string())
}

/// "did you mean ..." for unknown fields and variants.
fn hint_for(message: &str) -> Option<String> {
    let (given, marker) = if let Some(given) = quoted_after(message, "unknown field `") {
        (given, "expected one of ")
    } else if let Some(given) = quoted_after(message, "unknown variant `") {
        (given, "expected one of ")
    } else {
        return None;
    };
    let expected_list = message.split(marker).nth(1).or_else(|| {
        // serde writes "expected `x`" when there is a single choice.
        message.split("expected ").nth(1)
    })?;
    let choices: Vec<&str> = expected_list
        .split(',')
        .map(|choice| choice.trim().trim_matches('`'))
        .filter(|choice| !choice.is_empty())
        .collect();
    suggest(&given, &choices).map(|best| format!("did you mean `{best}`?"))
}

/// The closest of `choices` to `given`, when it is close enough to help.
pub fn suggest<'a>(given: &str, choices: &[&'a str]) -> Option<&'a str> {
    choices
        .iter()
        .map(|choice| (strsim::jaro_winkler(given, choice), *choice))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, choice)| choice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::schema::Resources;

    #[test]
    fn unknown_field_names_the_key_and_suggests_the_closest() {
        let text = "cpu-request: 1\nmemory-request: 1Gi\ncpu-limit: 1\nmemroy-limit: 2Gi\n";
        let error = parse_str::<Resources>(text).unwrap_err();
        assert_eq!(error.field, "memroy-limit");
        assert_eq!(error.position.unwrap().line, 4);
        assert_eq!(error.hint.as_deref(), Some("did you mean `memory-limit`?"));
    }

    #[test]
    fn missing_field_is_reported_with_its_name() {
        let error = parse_str::<Resources>("cpu-request: 1\n").unwrap_err();
        assert!(
            error.message.contains("missing field `memory-request`"),
            "{error}"
        );
    }

    #[test]
    fn no_hint_when_nothing_is_close() {
        let text = "cpu-request: 1\nmemory-request: 1\ncpu-limit: 1\nmemory-limit: 1\nzzz: 1\n";
        let error = parse_str::<Resources>(text).unwrap_err();
        assert_eq!(error.hint, None);
    }
}
