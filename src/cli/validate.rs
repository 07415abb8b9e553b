//! `kisumctl validate [ENV]`: check the matrix against the plan's rules.

use super::output::{out, outln};
use std::path::Path;

use serde::Serialize;

use super::{Exit, OutputFormat, load_matrix};
use crate::matrix::Matrix;
use crate::matrix::load::printable;
use crate::matrix::rules::{self, Finding, Level};

/// Check the environment matrix against the platform's rules.
///
/// Runs every rule of the plan's security review and component checklists
/// that the matrix can answer, then lists the assumptions made where the
/// plan is silent and the decisions it leaves open. Exit 0 when no rule is
/// violated (warnings allowed), 1 on violations, 2 when the matrix cannot
/// be read.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this environment (findings about the base file always show).
    env: Option<String>,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,

    /// Also list every rule with its id and sections.
    #[arg(long)]
    rules: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    environment: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rules: Vec<RuleRow>,
    errors: usize,
    warnings: usize,
    findings: Vec<&'a Finding>,
    assumptions: Vec<AssumptionRow>,
    open_decisions: Vec<DecisionRow>,
}

#[derive(Serialize)]
struct RuleRow {
    id: &'static str,
    level: Level,
    sections: &'static str,
    summary: &'static str,
}

#[derive(Serialize)]
struct AssumptionRow {
    file: String,
    line: Option<u64>,
    path: String,
    written: Option<String>,
    reason: String,
}

#[derive(Serialize)]
struct DecisionRow {
    id: String,
    question: String,
    section: String,
    affects: Vec<String>,
}

pub fn run(dir: &Path, args: Args) -> anyhow::Result<Exit> {
    let matrix = match load_matrix(dir, args.output) {
        Ok(matrix) => matrix,
        Err(exit) => return Ok(exit),
    };
    if let Some(env) = &args.env
        && let Err(errors) = matrix.environment(env)
    {
        super::report_input_errors(&errors.0, args.output);
        return Ok(Exit::UnusableInput);
    }

    let findings = rules::check(&matrix);
    let selected: Vec<&Finding> = findings
        .iter()
        .filter(|f| match (&args.env, &f.environment) {
            (Some(wanted), Some(env)) => wanted == env,
            _ => true,
        })
        .collect();
    let rules = if args.rules {
        rules::RULES
            .iter()
            .map(|r| RuleRow {
                id: r.id,
                level: r.level,
                sections: r.sections,
                summary: r.summary,
            })
            .collect()
    } else {
        Vec::new()
    };
    let report = Report {
        environment: args.env.as_deref(),
        rules,
        errors: selected.iter().filter(|f| f.level == Level::Error).count(),
        warnings: selected
            .iter()
            .filter(|f| f.level == Level::Warning)
            .count(),
        findings: selected,
        assumptions: assumptions(&matrix, args.env.as_deref()),
        open_decisions: matrix
            .base()
            .open_decisions
            .iter()
            .map(|d| DecisionRow {
                id: d.id.clone(),
                question: d.question.clone(),
                section: d.section.clone(),
                affects: d.affects.clone(),
            })
            .collect(),
    };

    match args.output {
        OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => out!("{}", text(&report, args.rules)),
    }
    Ok(if report.errors > 0 {
        Exit::CheckFailed
    } else {
        Exit::Clean
    })
}

fn assumptions(matrix: &Matrix, env: Option<&str>) -> Vec<AssumptionRow> {
    let base = matrix.base_source();
    let mut files = vec![(base, &matrix.base().assumptions)];
    for (name, (file, source)) in &matrix.loaded.environments {
        if env.is_none_or(|wanted| wanted == name) {
            files.push((source, &file.assumptions));
        }
    }
    files
        .into_iter()
        .flat_map(|(source, list)| {
            list.iter().map(move |a| AssumptionRow {
                file: source.path.display().to_string(),
                line: source.index.get(&a.path).map(|p| p.line),
                path: a.path.clone(),
                // A line that looks like a credential is not repeated.
                written: source
                    .line_of(&a.path)
                    .filter(|line| !rules::looks_like_secret_value(line))
                    .map(printable),
                reason: a.reason.clone(),
            })
        })
        .collect()
}

fn text(report: &Report, with_rules: bool) -> String {
    let mut out = String::new();
    if with_rules {
        out += "rules:\n";
        for rule in rules::RULES {
            let level = format!("{:?}", rule.level).to_lowercase();
            out += &format!(
                "  {:<28} {level:<7} [{}] {}\n",
                rule.id, rule.sections, rule.summary
            );
        }
        out += "\n";
    }
    for finding in &report.findings {
        out += &finding_line(finding);
    }
    if !report.findings.is_empty() {
        out += "\n";
    }
    out += &format!("assumptions to confirm ({}):\n", report.assumptions.len());
    for a in &report.assumptions {
        let line = a.line.map(|l| format!(":{l}")).unwrap_or_default();
        out += &format!("  {}{line} {}\n", a.file, a.path);
        if let Some(written) = &a.written {
            out += &format!("      {written}\n");
        }
        out += &format!("      because {}\n", a.reason);
    }
    out += &format!("\nopen decisions ({}):\n", report.open_decisions.len());
    for d in &report.open_decisions {
        out += &format!("  {} (section {}): {}\n", d.id, d.section, d.question);
    }
    let scope = report.environment.unwrap_or("all environments");
    out += &format!(
        "\n{scope}: {} error(s), {} warning(s)\n",
        report.errors, report.warnings
    );
    out
}

/// One finding as a line: `error[rule] (env) file:line:col: field: message`.
pub fn finding_line(finding: &Finding) -> String {
    let level = match finding.level {
        Level::Error => "error",
        Level::Warning => "warning",
    };
    let place = match finding.position {
        Some(at) => format!("{}:{}:{}", finding.file.display(), at.line, at.column),
        None => finding.file.display().to_string(),
    };
    let env = finding
        .environment
        .as_deref()
        .map(|e| format!(" ({e})"))
        .unwrap_or_default();
    let field = if finding.field.is_empty() {
        String::new()
    } else {
        format!("{}: ", finding.field)
    };
    printable(&format!(
        "{level}[{}]{env} {place}: {field}{}",
        finding.rule, finding.message
    )) + "\n"
}
