//! Executable runbooks: the Markdown files of `runbooks/`, each carrying
//! its steps in a fenced `kisumctl-runbook` block, built into the binary so
//! that `kisumctl runbook` works wherever it runs.
//!
//! A step is either an automated check (an id of [`checks::CHECKS`]) or a
//! manual one (a sentence and the command that performs it). Running a
//! runbook runs its checks in order and stops at the first that proves a
//! cause; manual steps are only listed.

pub mod checks;
pub mod target;

use serde::{Deserialize, Serialize};

/// The runbooks shipped in `runbooks/`, by file name.
const SOURCES: &[(&str, &str)] = &[
    (
        "user-cannot-access-module.md",
        include_str!("../../../runbooks/user-cannot-access-module.md"),
    ),
    (
        "login-failures-spike.md",
        include_str!("../../../runbooks/login-failures-spike.md"),
    ),
    (
        "subscription-changed-ui-stale.md",
        include_str!("../../../runbooks/subscription-changed-ui-stale.md"),
    ),
    (
        "redis-down.md",
        include_str!("../../../runbooks/redis-down.md"),
    ),
    (
        "jwt-verification-failing.md",
        include_str!("../../../runbooks/jwt-verification-failing.md"),
    ),
    (
        "auth-outage.md",
        include_str!("../../../runbooks/auth-outage.md"),
    ),
    (
        "core-outage.md",
        include_str!("../../../runbooks/core-outage.md"),
    ),
    (
        "database-outage.md",
        include_str!("../../../runbooks/database-outage.md"),
    ),
    (
        "certificate-expiry.md",
        include_str!("../../../runbooks/certificate-expiry.md"),
    ),
    (
        "stale-access.md",
        include_str!("../../../runbooks/stale-access.md"),
    ),
    (
        "restore-auth-db.md",
        include_str!("../../../runbooks/restore-auth-db.md"),
    ),
    (
        "backup-failure.md",
        include_str!("../../../runbooks/backup-failure.md"),
    ),
    (
        "jwt-key-rotation.md",
        include_str!("../../../runbooks/jwt-key-rotation.md"),
    ),
    (
        "jwt-key-compromised.md",
        include_str!("../../../runbooks/jwt-key-compromised.md"),
    ),
];

/// The info string of the fenced block holding a runbook's steps.
const FENCE: &str = "```kisumctl-runbook";

/// One runbook: its steps and the Markdown it came from.
#[derive(Debug, Clone, Serialize)]
pub struct Runbook {
    pub name: String,
    pub title: String,
    /// The section of the platform plan it implements.
    pub plan: String,
    /// What `runbook run` needs to be told (`user`, `company`, ...).
    pub inputs: Vec<String>,
    pub steps: Vec<Step>,
    pub file: &'static str,
    #[serde(skip)]
    pub markdown: &'static str,
}

/// A step: an automated check, or a manual action with its command.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged, deny_unknown_fields)]
pub enum Step {
    Check {
        check: String,
    },
    Manual {
        manual: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    name: String,
    title: String,
    plan: String,
    #[serde(default)]
    inputs: Vec<String>,
    steps: Vec<Step>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunbookError {
    #[error("runbooks/{file}: no ```kisumctl-runbook block")]
    NoBlock { file: String },
    #[error("runbooks/{file}: the kisumctl-runbook block: {message}")]
    Block { file: String, message: String },
    #[error("runbooks/{file}: step `{check}` is not a check kisumctl knows ({known})")]
    UnknownCheck {
        file: String,
        check: String,
        known: String,
    },
    #[error("runbooks/{file}: named `{name}`, but the file is {file}")]
    Name { file: String, name: String },
}

fn parse(file: &'static str, markdown: &'static str) -> Result<Runbook, RunbookError> {
    let start = markdown.find(FENCE).ok_or_else(|| RunbookError::NoBlock {
        file: file.to_string(),
    })?;
    let rest = &markdown[start + FENCE.len()..];
    let end = rest.find("\n```").ok_or_else(|| RunbookError::Block {
        file: file.to_string(),
        message: "not closed".into(),
    })?;
    let header: Header = serde_saphyr::from_str(&rest[..end]).map_err(|e| RunbookError::Block {
        file: file.to_string(),
        message: e.to_string(),
    })?;
    if format!("{}.md", header.name) != file {
        return Err(RunbookError::Name {
            file: file.to_string(),
            name: header.name,
        });
    }
    for step in &header.steps {
        if let Step::Check { check } = step
            && !checks::CHECKS.contains(&check.as_str())
        {
            return Err(RunbookError::UnknownCheck {
                file: file.to_string(),
                check: check.clone(),
                known: checks::CHECKS.join(", "),
            });
        }
    }
    Ok(Runbook {
        name: header.name,
        title: header.title,
        plan: header.plan,
        inputs: header.inputs,
        steps: header.steps,
        file,
        markdown,
    })
}

/// Every shipped runbook, in the order of `runbooks/README.md`.
pub fn all() -> Result<Vec<Runbook>, RunbookError> {
    SOURCES
        .iter()
        .map(|(file, markdown)| parse(file, markdown))
        .collect()
}

/// The runbook called `name`.
pub fn find(name: &str) -> Result<Option<Runbook>, RunbookError> {
    Ok(all()?.into_iter().find(|r| r.name == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_runbook_parses_and_names_known_checks() {
        let runbooks = all().unwrap();
        assert_eq!(runbooks.len(), SOURCES.len());
        for runbook in &runbooks {
            assert!(!runbook.steps.is_empty(), "{}", runbook.name);
        }
    }

    #[test]
    fn user_cannot_access_module_automates_the_nine_checks_of_the_plan() {
        let runbook = find("user-cannot-access-module").unwrap().unwrap();
        let automated: Vec<&str> = runbook
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Check { check } => Some(check.as_str()),
                Step::Manual { .. } => None,
            })
            .collect();
        assert_eq!(automated, checks::ACCESS_CHECKS);
    }

    #[test]
    fn every_runbook_file_is_shipped() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".md") && f != "README.md")
            .collect();
        files.sort();
        let mut shipped: Vec<String> = SOURCES.iter().map(|(f, _)| f.to_string()).collect();
        shipped.sort();
        assert_eq!(files, shipped);
    }

    #[test]
    fn an_unknown_check_is_refused_with_the_file() {
        let text = "# x\n```kisumctl-runbook\nname: x\ntitle: X\nplan: \"1\"\nsteps:\n  - check: nope\n```\n";
        let error = parse("x.md", text).unwrap_err().to_string();
        assert!(error.contains("runbooks/x.md: step `nope`"), "{error}");
    }
}
