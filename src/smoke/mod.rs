//! The smoke checks run after every deploy (section 25.3 of the plan),
//! against an environment's public URLs: Auth's probes, a login, the
//! user's view of itself and of its access, a Core entitlement read
//! through Platform Admin, one module request allowed and one denied by
//! permission, and an admin subscription change that must reach the
//! user's access at once.
//!
//! The checks act as a dedicated smoke-test user and platform admin on a
//! dedicated smoke-test company ([`Credentials`], secret
//! `smoke-test-credentials`), never on a real tenant. The one change they
//! make (the company's `market` add-on) is undone even when a check fails;
//! an undo that fails is reported in [`Report::repairs`] with the call that
//! fixes it by hand.
//!
//! Nothing here prints: [`run`] answers a [`Report`]. A check's detail
//! names statuses, error codes and the expectation that failed, never a
//! password, token or cookie.

mod checks;
mod credentials;
mod target;

use std::time::Duration;

use serde::Serialize;

pub use checks::run;
pub use credentials::{Credentials, CredentialsError, SECRET as CREDENTIALS_SECRET};
pub use target::{Target, TargetError, from_smoke_endpoints, missing_endpoints_file};

/// The outcome of one check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// One of `checks::CHECKS`, stable.
    pub name: &'static str,
    pub passed: bool,
    /// Not run because an earlier check it needs failed; `passed` is false.
    pub skipped: bool,
    #[serde(rename = "duration_ms", serialize_with = "milliseconds")]
    pub duration: Duration,
    /// Why it failed or was skipped.
    pub detail: Option<String>,
}

/// How a check ended, for printing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

impl Check {
    pub fn status(&self) -> Status {
        match (self.passed, self.skipped) {
            (true, _) => Status::Pass,
            (false, true) => Status::Skip,
            (false, false) => Status::Fail,
        }
    }
}

/// Every check in order, and what is left to repair by hand.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    /// Changes the checks made and could not undo, each with the call that
    /// undoes it. Empty after a clean run.
    pub repairs: Vec<String>,
}

impl Report {
    /// True when every check passed and nothing is left to repair.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed) && self.repairs.is_empty()
    }

    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status() == status).count()
    }

    pub fn duration(&self) -> Duration {
        self.checks.iter().map(|c| c.duration).sum()
    }
}

fn milliseconds<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(passed: bool, skipped: bool) -> Check {
        Check {
            name: "login",
            passed,
            skipped,
            duration: Duration::from_millis(12),
            detail: None,
        }
    }

    #[test]
    fn a_report_passes_only_when_every_check_passed_and_nothing_needs_repair() {
        let clean = Report {
            checks: vec![check(true, false), check(true, false)],
            repairs: vec![],
        };
        assert!(clean.passed());
        let skipped = Report {
            checks: vec![check(true, false), check(false, true)],
            repairs: vec![],
        };
        assert!(!skipped.passed());
        assert_eq!(skipped.count(Status::Skip), 1);
        let unrepaired = Report {
            repairs: vec!["PUT ...".into()],
            ..clean.clone()
        };
        assert!(!unrepaired.passed());
        assert!(
            !Report {
                checks: vec![],
                repairs: vec![]
            }
            .passed()
        );
    }

    #[test]
    fn durations_serialize_as_milliseconds() {
        let json = serde_json::to_value(check(true, false)).unwrap();
        assert_eq!(json["duration_ms"], 12);
        assert_eq!(json["passed"], true);
    }
}
