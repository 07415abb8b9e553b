//! The malformed-matrix corpus (`tests/corpus/malformed.yaml`): every case
//! edits a scratch copy of the matrix and checks what `kisumctl validate`
//! says, down to the file, line and field path.
//!
//! Input errors (exit 2) are read from stderr in the documented text form
//! `error: FILE:LINE:COL: FIELD: message (hint: ...)`. Rule violations
//! (exit 1) are read from `-o json` and cross-checked against the text form
//! `error[RULE] (ENV) FILE:LINE:COL: FIELD: message` on stdout.
//!
//! All cases run, in parallel, each in its own scratch copy; the test fails
//! once at the end listing every failing case with its output. A case
//! marked `known-bug` still fails: its expectation is the correct behaviour.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;

use crate::common::{kisumctl, root, scratch_copy, stderr, stdout};

/// The matrix files a case may edit.
const MATRIX_FILES: [&str; 5] = [
    "base.yaml",
    "local.yaml",
    "dev.yaml",
    "staging.yaml",
    "production.yaml",
];

const MINIMUM_CASES: usize = 24;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Case {
    name: String,
    file: String,
    find: Option<String>,
    replace: Option<String>,
    content: Option<String>,
    exit: i32,
    /// Extra arguments of `kisumctl validate`, e.g. an environment name.
    #[serde(default)]
    args: Vec<String>,
    /// File the error or finding must point at; defaults to `file`.
    at: Option<String>,
    line: u64,
    field: String,
    message: Option<String>,
    hint: Option<String>,
    #[serde(default)]
    no_hint: bool,
    rule: Option<String>,
    environment: Option<String>,
    /// Text that must not be printed anywhere (e.g. an inline secret).
    absent: Option<String>,
    known_bug: Option<String>,
}

impl Case {
    fn at(&self) -> &str {
        self.at.as_deref().unwrap_or(&self.file)
    }

    /// The path as the binary prints it (it runs with `--matrix environments`).
    fn printed_path(&self) -> String {
        format!("environments/{}", self.at())
    }
}

fn load_corpus() -> Vec<Case> {
    let path = root().join("tests/corpus/malformed.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not a valid corpus: {e}", path.display()))
}

/// Mistakes in the corpus itself, so a broken case is never silently skipped.
fn corpus_problems(cases: &[Case]) -> Vec<String> {
    let mut problems = Vec::new();
    if cases.len() < MINIMUM_CASES {
        problems.push(format!(
            "only {} cases; the corpus keeps at least {MINIMUM_CASES}",
            cases.len()
        ));
    }
    let mut names = BTreeSet::new();
    for case in cases {
        let name = &case.name;
        let mut problem = |text: &str| problems.push(format!("{name}: {text}"));
        if !names.insert(name.as_str()) {
            problem("duplicate name");
        }
        for file in [Some(&case.file), case.at.as_ref()].into_iter().flatten() {
            if !MATRIX_FILES.contains(&file.as_str()) {
                problem(&format!("`{file}` is not a matrix file"));
            }
        }
        match (&case.find, &case.replace, &case.content) {
            (Some(find), Some(_), None) if !find.is_empty() => {}
            (None, None, Some(_)) => {}
            _ => problem("needs `find` + `replace` (non-empty find) or `content`"),
        }
        match case.exit {
            1 => {
                if case.rule.is_none() {
                    problem("exit 1 needs `rule`");
                }
                if case.hint.is_some() || case.no_hint {
                    problem("`hint`/`no-hint` apply to input errors (exit 2) only");
                }
            }
            2 => {
                if case.rule.is_some() || case.environment.is_some() {
                    problem("`rule`/`environment` apply to findings (exit 1) only");
                }
                if case.hint.is_some() && case.no_hint {
                    problem("both `hint` and `no-hint`");
                }
            }
            other => problem(&format!("exit must be 1 or 2, not {other}")),
        }
        if case
            .known_bug
            .as_deref()
            .is_some_and(|d| d.trim().is_empty())
        {
            problem("`known-bug` needs a description");
        }
    }
    problems
}

/// Writes the case's edit into the scratch copy's matrix.
fn apply(case: &Case, dir: &Path) -> Result<(), String> {
    let path = dir.join("environments").join(&case.file);
    let edited = if let Some(content) = &case.content {
        content.clone()
    } else {
        let (find, replace) = (case.find.as_ref().unwrap(), case.replace.as_ref().unwrap());
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", case.file))?;
        let count = text.matches(find.as_str()).count();
        if count != 1 {
            return Err(format!(
                "corpus out of date: `find` occurs {count} times in {} (must be exactly once):\n{find}",
                case.file
            ));
        }
        text.replacen(find.as_str(), replace, 1)
    };
    std::fs::write(&path, edited).map_err(|e| format!("write {}: {e}", case.file))
}

/// `error: FILE[:LINE:COL][: FIELD]: message[ (hint: HINT)]`, parsed.
#[derive(Debug)]
struct InputError {
    file: String,
    line: Option<u64>,
    field: String,
    message: String,
    hint: Option<String>,
}

fn is_field_path(text: &str) -> bool {
    !text.is_empty() && !text.contains(char::is_whitespace) && !text.contains('`')
}

fn parse_input_error(line: &str) -> Option<InputError> {
    let rest = line.strip_prefix("error: ")?;
    let (place, rest) = rest.split_once(": ")?;
    let mut parts = place.rsplitn(3, ':');
    let (file, line) = match (parts.next(), parts.next(), parts.next()) {
        (Some(col), Some(line), Some(file)) if col.parse::<u64>().is_ok() => {
            (file.to_string(), line.parse::<u64>().ok())
        }
        _ => (place.to_string(), None),
    };
    let (field, rest) = match rest.split_once(": ") {
        Some((field, message)) if is_field_path(field) => (field.to_string(), message),
        _ => (String::new(), rest),
    };
    let (message, hint) = match rest.rsplit_once(" (hint: ") {
        Some((message, hint)) if hint.ends_with(')') => (
            message.to_string(),
            Some(hint.trim_end_matches(')').to_string()),
        ),
        _ => (rest.to_string(), None),
    };
    Some(InputError {
        file,
        line,
        field,
        message,
        hint,
    })
}

/// `LEVEL[RULE] (ENV) FILE:LINE:COL: FIELD: message`, parsed.
#[derive(Debug)]
struct TextFinding {
    level: String,
    rule: String,
    environment: Option<String>,
    file: String,
    line: Option<u64>,
    field: String,
}

fn parse_text_finding(line: &str) -> Option<TextFinding> {
    let (level, rest) = line.split_once('[')?;
    if level != "error" && level != "warning" {
        return None;
    }
    let (rule, rest) = rest.split_once(']')?;
    let (environment, rest) = match rest.strip_prefix(" (") {
        Some(after) => {
            let (env, rest) = after.split_once(") ")?;
            (Some(env.to_string()), rest)
        }
        None => (None, rest.strip_prefix(' ')?),
    };
    let (place, rest) = rest.split_once(": ")?;
    let (field, _message) = rest.split_once(": ")?;
    let mut parts = place.rsplitn(3, ':');
    let (file, line) = match (parts.next(), parts.next(), parts.next()) {
        (Some(col), Some(line), Some(file)) if col.parse::<u64>().is_ok() => {
            (file.to_string(), line.parse::<u64>().ok())
        }
        _ => (place.to_string(), None),
    };
    Some(TextFinding {
        level: level.to_string(),
        rule: rule.to_string(),
        environment,
        file,
        line,
        field: field.to_string(),
    })
}

/// What went wrong in one case, and the output to show for it.
struct Failure {
    problems: Vec<String>,
    outputs: Vec<(String, Output)>,
}

fn exit_code(output: &Output) -> String {
    output
        .status
        .code()
        .map_or_else(|| format!("killed ({})", output.status), |c| c.to_string())
}

/// Problems common to every run: panics, leaked text, the exit code.
fn check_run(case: &Case, output: &Output, problems: &mut Vec<String>) {
    let printed = format!("{}{}", stdout(output), stderr(output));
    if printed.contains("panicked at") {
        problems.push("kisumctl panicked".into());
    }
    if let Some(secret) = &case.absent
        && printed.contains(secret.as_str())
    {
        problems.push(format!("`{secret}` was printed"));
    }
    if output.status.code() != Some(case.exit) {
        problems.push(format!(
            "exit {} instead of {}",
            exit_code(output),
            case.exit
        ));
    }
}

fn check_input_error(case: &Case, output: &Output, problems: &mut Vec<String>) {
    let text = stderr(output);
    let errors: Vec<InputError> = text.lines().filter_map(parse_input_error).collect();
    let mismatches = |error: &InputError| {
        let mut wrong = Vec::new();
        if error.file != case.printed_path() {
            wrong.push(format!("file {}", error.file));
        }
        if error.line != Some(case.line) {
            wrong.push(format!("line {:?}", error.line));
        }
        if error.field != case.field {
            wrong.push(format!("field `{}`", error.field));
        }
        if let Some(message) = &case.message
            && !error.message.contains(message.as_str())
        {
            wrong.push(format!("message `{}`", error.message));
        }
        match (&case.hint, &error.hint) {
            (Some(want), Some(got)) if !got.contains(want.as_str()) => {
                wrong.push(format!("hint `{got}`"));
            }
            (Some(_), None) => wrong.push("no hint".into()),
            (None, Some(got)) if case.no_hint => wrong.push(format!("hint `{got}`")),
            _ => {}
        }
        wrong
    };
    if errors.iter().any(|e| mismatches(e).is_empty()) {
        return;
    }
    let mut want = format!(
        "an error at {}:{} field `{}`",
        case.printed_path(),
        case.line,
        case.field
    );
    if let Some(message) = &case.message {
        want += &format!(" message ~ `{message}`");
    }
    match (&case.hint, case.no_hint) {
        (Some(hint), _) => want += &format!(" hint ~ `{hint}`"),
        (None, true) => want += " and no hint",
        _ => {}
    }
    problems.push(format!("expected {want}"));
    if errors.is_empty() {
        problems.push("no `error: ` line on stderr".into());
    }
    for error in &errors {
        problems.push(format!("  got {}", mismatches(error).join(", ")));
    }
}

fn check_finding(case: &Case, json: &Output, text: &Output, problems: &mut Vec<String>) {
    let rule = case.rule.as_deref().unwrap_or_default();
    let want_file = case.printed_path();
    let mut want = format!(
        "an error[{rule}] at {want_file}:{} field `{}`",
        case.line, case.field
    );
    if let Some(env) = &case.environment {
        want += &format!(" environment {env}");
    }
    if let Some(message) = &case.message {
        want += &format!(" message ~ `{message}`");
    }

    // The JSON report.
    let report: serde_json::Value = match serde_json::from_slice(&json.stdout) {
        Ok(report) => report,
        Err(e) => {
            problems.push(format!("`-o json` printed no JSON report: {e}"));
            return;
        }
    };
    let findings: Vec<&serde_json::Value> = report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["rule"] == rule)
        .collect();
    let mismatches = |f: &serde_json::Value| {
        let mut wrong = Vec::new();
        if f["field"] != case.field.as_str() {
            wrong.push(format!("field {}", f["field"]));
        }
        if f["level"] != "error" {
            wrong.push(format!("level {}", f["level"]));
        }
        if f["file"] != want_file.as_str() {
            wrong.push(format!("file {}", f["file"]));
        }
        if f["position"]["line"] != case.line {
            wrong.push(format!("line {}", f["position"]["line"]));
        }
        if let Some(env) = &case.environment
            && f["environment"] != env.as_str()
        {
            wrong.push(format!("environment {}", f["environment"]));
        }
        if let Some(message) = &case.message
            && !f["message"]
                .as_str()
                .unwrap_or("")
                .contains(message.as_str())
        {
            wrong.push(format!("message {}", f["message"]));
        }
        wrong
    };
    if !findings.iter().any(|f| mismatches(f).is_empty()) {
        problems.push(format!("JSON: expected {want}"));
        if findings.is_empty() {
            problems.push(format!("  no finding of rule {rule}"));
        }
        for finding in &findings {
            problems.push(format!("  got {}", mismatches(finding).join(", ")));
        }
    }
    if report["errors"].as_u64().unwrap_or(0) == 0 {
        problems.push("JSON: `errors` is 0".into());
    }

    // The text report must say the same.
    let lines: Vec<TextFinding> = stdout(text)
        .lines()
        .filter_map(parse_text_finding)
        .collect();
    let in_text = lines.iter().any(|f| {
        f.level == "error"
            && f.rule == rule
            && f.field == case.field
            && f.file == want_file
            && f.line == Some(case.line)
            && case
                .environment
                .as_ref()
                .is_none_or(|env| f.environment.as_ref() == Some(env))
    });
    if !in_text {
        problems.push(format!("text: expected a line for {want}"));
    }
    let both = format!("{}{}", stderr(text), stderr(json));
    let errors_on_stderr: Vec<&str> = both.lines().filter(|l| l.starts_with("error")).collect();
    if !errors_on_stderr.is_empty() {
        problems.push(format!("input errors on stderr: {errors_on_stderr:?}"));
    }
}

fn run_case(case: &Case) -> Option<Failure> {
    let copy = scratch_copy();
    let mut problems = Vec::new();
    if let Err(problem) = apply(case, copy.path()) {
        return Some(Failure {
            problems: vec![problem],
            outputs: Vec::new(),
        });
    }
    let mut args: Vec<&str> = vec!["validate"];
    args.extend(case.args.iter().map(String::as_str));
    let command = format!("kisumctl {}", args.join(" "));
    let text = kisumctl(copy.path(), &args);
    check_run(case, &text, &mut problems);
    if case.exit == 2 {
        check_input_error(case, &text, &mut problems);
    } else {
        args.extend(["-o", "json"]);
        let json = kisumctl(copy.path(), &args);
        check_run(case, &json, &mut problems);
        check_finding(case, &json, &text, &mut problems);
    }
    let outputs = vec![(command, text)];
    problems.dedup();
    match (&case.known_bug, problems.is_empty()) {
        (None, true) => None,
        (Some(bug), true) => Some(Failure {
            problems: vec![format!(
                "marked known-bug ({bug}) but now passes: remove the `known-bug` note"
            )],
            outputs: Vec::new(),
        }),
        (_, false) => Some(Failure { problems, outputs }),
    }
}

/// The text output without its long assumptions and decisions listing.
fn shorten(stdout: &str) -> String {
    match stdout.find("assumptions to confirm") {
        Some(cut) => {
            let summary = stdout.lines().last().unwrap_or("");
            format!(
                "{}[assumptions and open decisions elided]\n{summary}",
                &stdout[..cut]
            )
        }
        None => stdout.to_string(),
    }
}

fn describe(case: &Case, failure: &Failure) -> String {
    let mut out = format!("--- {} ({}, exit {})\n", case.name, case.file, case.exit);
    if let Some(bug) = &case.known_bug {
        out += &format!("    known bug: {bug}\n");
    }
    for problem in &failure.problems {
        out += &format!("    {problem}\n");
    }
    for (command, output) in &failure.outputs {
        out += &format!("    $ {command}   # exit {}\n", exit_code(output));
        for line in shorten(&stdout(output)).lines() {
            out += &format!("    | {line}\n");
        }
        for line in stderr(output).lines() {
            out += &format!("    ! {line}\n");
        }
    }
    out
}

#[test]
fn corpus_baseline_matrix_is_clean() {
    let copy = scratch_copy();
    let output = kisumctl(copy.path(), &["validate"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "the shipped matrix must validate cleanly, or the corpus proves nothing:\n{}{}",
        stdout(&output),
        stderr(&output)
    );
}

#[test]
fn corpus_malformed_matrices_fail_as_documented() {
    let cases = load_corpus();
    let problems = corpus_problems(&cases);
    assert!(
        problems.is_empty(),
        "tests/corpus/malformed.yaml:\n{}",
        problems.join("\n")
    );

    let next = AtomicUsize::new(0);
    let failures: Mutex<Vec<(usize, Failure)>> = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(4, |n| n.get().min(16));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let Some(case) = cases.get(n) else { break };
                    if let Some(failure) = run_case(case) {
                        failures.lock().unwrap().push((n, failure));
                    }
                }
            });
        }
    });

    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|(n, _)| *n);
    if failures.is_empty() {
        return;
    }
    let known = failures
        .iter()
        .filter(|(n, _)| cases[*n].known_bug.is_some())
        .count();
    let mut report = format!(
        "{} of {} corpus cases failed ({known} marked known-bug):\n\n",
        failures.len(),
        cases.len()
    );
    for (n, failure) in &failures {
        report += &describe(&cases[*n], failure);
        report += "\n";
    }
    report += "failing cases: ";
    report += &failures
        .iter()
        .map(|(n, _)| cases[*n].name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    panic!("{report}");
}

/// `schema-levels.<service>.level` must be a version of the service's
/// migration files; checked where the matrix has the services' sources
/// beside it (the scratch copy of the corpus has none, so this case
/// copies auth's).
#[test]
fn a_schema_level_must_name_a_migration_of_its_service() {
    let scratch = scratch_copy();
    let migrations = scratch.path().join("services/auth/migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    for entry in std::fs::read_dir(root().join("services/auth/migrations")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), migrations.join(entry.file_name())).unwrap();
    }
    let matrix = scratch.path().join("environments");
    let validate = || kisumctl(scratch.path(), &["validate"]);
    let output = validate();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    let base = matrix.join("base.yaml");
    let text = std::fs::read_to_string(&base).unwrap();
    let line = text
        .lines()
        .position(|l| l == "  auth: { level: 5, oldest: 5 }")
        .unwrap()
        + 1;
    std::fs::write(
        &base,
        text.replace(
            "  auth: { level: 5, oldest: 5 }",
            "  auth: { level: 7, oldest: 5 }",
        ),
    )
    .unwrap();
    let output = validate();
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(
        text.contains(&format!(
            "base.yaml:{line}:11: schema-levels.auth.level: 7 is not a migration version of auth: services/auth/migrations holds versions 1, 2, 3, 4, 5 (the level is the version of the newest, 5)"
        )),
        "{text}"
    );
}
