//! The phases of a rotation with their waits, the emergency revocation,
//! the dry-run plan and the status report.
//!
//! Every phase starts from what the key set says (its stage) and the
//! timeline, writes at most one change, then waits until the services
//! show it; run again, it finds its change made and only waits. A run
//! interrupted anywhere is continued by the next one.
//!
//! - **prepare**: a new key, `next`: published in the JWKS, not signing;
//!   then every Auth instance and every verifier must report it.
//! - **activate**: checks again that every service has the next key, makes
//!   it active (the old one `retiring`, still published), then waits until
//!   every Auth instance signs with it. That moment is recorded: no token
//!   signed with the old key is issued after it.
//! - **retire**: waits until every token signed with the old key has
//!   expired (the moment above + access-token TTL + clock skew), makes it
//!   `retired` (gone from the JWKS), then waits until no service has it.

use std::time::Duration;

use kisum_common::keys::{KeySet, KeyState};
use serde::Serialize;

use super::fleet::{Expect, Fleet, FleetError, Reloaded};
use super::keyset::{self, Stage, StageError};
use super::store::{KeyStore, KeyStoreError};
use super::timeline::{Event, EventKind, Timeline};
use super::{Settings, format_time};
use crate::secrets::SecretVersion;

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(transparent)]
    Keys(#[from] KeyStoreError),
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("{0}\nnothing further was changed; run the command again to continue")]
    Fleet(#[from] FleetError),
}

/// A phase run on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Prepare,
    Activate,
    Retire,
}

/// What to do, for [`Rotation::plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The whole workflow, from where the key set stands.
    Rotate,
    Phase(Phase),
    Revoke(String),
}

pub struct Rotation<'a> {
    pub keys: KeyStore<'a>,
    pub fleet: Fleet,
    pub settings: Settings,
    /// Hears each step, as a line of text.
    pub say: &'a (dyn Fn(&str) + Sync),
    /// Now, in seconds since the Unix epoch.
    pub clock: fn() -> i64,
}

/// The result of an emergency revocation.
#[derive(Debug, Clone, Serialize)]
pub struct Revoked {
    pub kid: String,
    /// The key that signs in its place, when it was the active key.
    pub replacement: Option<String>,
    pub reloads: Vec<Reloaded>,
}

impl Rotation<'_> {
    fn now(&self) -> i64 {
        (self.clock)()
    }

    fn say(&self, line: &str) {
        (self.say)(line);
    }

    fn timeout(&self) -> Duration {
        self.settings.propagation_timeout
    }

    fn record(
        &self,
        timeline: &mut Timeline,
        kind: EventKind,
        kid: &str,
        previous: Option<&str>,
    ) -> Result<(), RotationError> {
        let event = timeline.record(self.now(), kind, kid);
        event.previous = previous.map(str::to_string);
        self.keys.save_timeline(timeline)?;
        Ok(())
    }

    /// Writes a changed key set; the timeline first, so that a change is
    /// never in the set without its record (a record of a change that did
    /// not happen is repeated, harmlessly, by the rerun).
    fn write(&self, set: &KeySet, timeline: &Timeline) -> Result<(), RotationError> {
        self.keys.save_timeline(timeline)?;
        self.keys.save(set)?;
        Ok(())
    }

    async fn converge(&self, expect: &Expect) -> Result<(), RotationError> {
        self.say(&format!(
            "waiting until every service {} (at most {} s)",
            expect.describe(),
            self.timeout().as_secs()
        ));
        let converged = |service: &str| (self.say)(&format!("  {service}: done"));
        self.fleet
            .converge(expect, self.timeout(), &converged)
            .await?;
        Ok(())
    }

    /// Waits until every service has `kid` (`Published`) or none has it
    /// any more (`Withdrawn`), and records it the first time.
    async fn ensure(
        &self,
        timeline: &mut Timeline,
        event: EventKind,
        kid: &str,
    ) -> Result<(), RotationError> {
        let kids = vec![kid.to_string()];
        let expect = match event {
            EventKind::Withdrawn => Expect {
                absent: kids,
                ..Expect::default()
            },
            _ => Expect {
                present: kids,
                ..Expect::default()
            },
        };
        self.converge(&expect).await?;
        if timeline.last(event, kid).is_some() {
            return Ok(());
        }
        self.record(timeline, event, kid, None)
    }

    /// Waits until every Auth instance signs with `active`, and records it.
    async fn confirm_signing(
        &self,
        timeline: &mut Timeline,
        active: &str,
        previous: &str,
    ) -> Result<i64, RotationError> {
        self.converge(&Expect {
            present: vec![active.to_string(), previous.to_string()],
            absent: Vec::new(),
            signing: Some(active.to_string()),
        })
        .await?;
        self.record(timeline, EventKind::Signing, active, Some(previous))?;
        let since = timeline
            .stopped_signing(previous)
            .unwrap_or_else(|| self.now());
        self.say(&format!(
            "no token is signed with {previous} any more; its tokens stay valid until {} \
             (access-token TTL {} s + clock skew {} s)",
            format_time(since + self.settings.token_lifetime()),
            self.settings.access_ttl,
            self.settings.clock_skew
        ));
        Ok(since)
    }

    /// Prepare: a new next key, published everywhere. Answers its kid.
    pub async fn prepare(&self) -> Result<String, RotationError> {
        let set = self.keys.load()?;
        let mut timeline = self.keys.timeline()?;
        let next = match keyset::prepare(&set, self.now())? {
            Some(prepared) => {
                let kid = kid_in(&prepared, KeyState::Next);
                timeline.record(self.now(), EventKind::Prepared, &kid);
                self.write(&prepared, &timeline)?;
                self.say(&format!(
                    "prepared key {kid} (next): published in Auth's JWKS, not signing"
                ));
                kid
            }
            None => {
                let kid = kid_in(&set, KeyState::Next);
                self.say(&format!("key {kid} is prepared already"));
                kid
            }
        };
        self.ensure(&mut timeline, EventKind::Published, &next)
            .await?;
        Ok(next)
    }

    /// Activate: the prepared key signs. Answers (active, retiring).
    pub async fn activate(&self) -> Result<(String, String), RotationError> {
        let set = self.keys.load()?;
        let mut timeline = self.keys.timeline()?;
        let (active, retiring) = match Stage::of(&set)? {
            Stage::Settled { .. } => return Err(StageError::NothingPrepared.into()),
            Stage::Prepared { active, next } => {
                // However prepare ended: no key signs before every
                // service can verify it.
                self.ensure(&mut timeline, EventKind::Published, &next)
                    .await?;
                let activated = keyset::activate(&set)?.ok_or(StageError::NothingPrepared)?;
                let event = timeline.record(self.now(), EventKind::Activated, &next);
                event.previous = Some(active.clone());
                self.write(&activated, &timeline)?;
                self.say(&format!(
                    "key {next} is active; {active} is retiring (still in the JWKS)"
                ));
                (next, active)
            }
            Stage::Activated { active, retiring } => {
                self.say(&format!("key {active} is active already"));
                (active, retiring)
            }
        };
        if timeline.stopped_signing(&retiring).is_none() {
            self.confirm_signing(&mut timeline, &active, &retiring)
                .await?;
        }
        Ok((active, retiring))
    }

    /// Retire: once its tokens have expired, the retiring key leaves the
    /// JWKS. Answers its kid; `None` when nothing was retiring.
    pub async fn retire(&self) -> Result<Option<String>, RotationError> {
        let set = self.keys.load()?;
        let mut timeline = self.keys.timeline()?;
        let Stage::Activated { active, retiring } = Stage::of(&set)? else {
            // A retire whose last wait was interrupted is finished here.
            if let Some(event) = timeline.pending_withdrawal().cloned()
                && event.event == EventKind::Retired
            {
                self.say(&format!(
                    "key {} was retired at {}; checking that no service has it",
                    event.kid,
                    format_time(event.at)
                ));
                self.ensure(&mut timeline, EventKind::Withdrawn, &event.kid)
                    .await?;
                return Ok(Some(event.kid));
            }
            self.say("no key is retiring: nothing to retire");
            return Ok(None);
        };
        let since = match timeline.stopped_signing(&retiring) {
            Some(since) => since,
            None => {
                self.confirm_signing(&mut timeline, &active, &retiring)
                    .await?
            }
        };
        self.wait_until(since + self.settings.token_lifetime(), &retiring)
            .await;
        let retired = keyset::retire(&set)?.ok_or(StageError::NothingPrepared)?;
        timeline.record(self.now(), EventKind::Retired, &retiring);
        self.write(&retired, &timeline)?;
        self.say(&format!("key {retiring} is retired: gone from the JWKS"));
        self.ensure(&mut timeline, EventKind::Withdrawn, &retiring)
            .await?;
        Ok(Some(retiring))
    }

    async fn wait_until(&self, until: i64, kid: &str) {
        let mut left = until - self.now();
        if left <= 0 {
            return;
        }
        self.say(&format!(
            "waiting {left} s, until {}, for every token signed with {kid} to expire",
            format_time(until)
        ));
        while left > 0 {
            let step = left.min(60);
            tokio::time::sleep(Duration::from_secs(step as u64)).await;
            left = until - self.now();
            if left > 0 {
                self.say(&format!("  {left} s left"));
            }
        }
    }

    /// The whole workflow, continued from where the key set stands.
    pub async fn rotate(&self) -> Result<(), RotationError> {
        let set = self.keys.load()?;
        let timeline = self.keys.timeline()?;
        match Stage::of(&set)? {
            Stage::Settled { .. } => {
                if let Some(event) = timeline.pending_withdrawal()
                    && event.event == EventKind::Retired
                {
                    self.say("resuming the rotation interrupted after its retire");
                    self.retire().await?;
                    return Ok(());
                }
                self.prepare().await?;
                self.activate().await?;
            }
            Stage::Prepared { next, .. } => {
                self.say(&format!(
                    "resuming the rotation to key {next}, prepared already"
                ));
                self.activate().await?;
            }
            Stage::Activated { active, .. } => {
                self.say(&format!(
                    "resuming the rotation to key {active}, active already"
                ));
            }
        }
        self.retire().await?;
        Ok(())
    }

    /// Emergency: `kid` leaves the key set at once (a revoked active key is
    /// replaced by a new one in the same change), every service is told to
    /// reload, and kisumctl waits until none has it.
    pub async fn revoke(&self, kid: &str) -> Result<Revoked, RotationError> {
        let set = self.keys.load()?;
        let mut timeline = self.keys.timeline()?;
        let replacement = if set.keys.iter().any(|k| k.kid == kid) {
            let revocation = keyset::revoke(&set, kid, self.now())?;
            let event = timeline.record(self.now(), EventKind::Revoked, kid);
            event.replacement = revocation.replacement.clone();
            self.write(&revocation.set, &timeline)?;
            match &revocation.replacement {
                Some(new) => self.say(&format!(
                    "key {kid} removed from the key set; new key {new} signs in its place"
                )),
                None => self.say(&format!("key {kid} removed from the key set")),
            }
            revocation.replacement
        } else {
            let Some(event) = timeline.last(EventKind::Revoked, kid).cloned() else {
                return Err(StageError::UnknownKid {
                    kid: kid.to_string(),
                }
                .into());
            };
            self.say(&format!(
                "key {kid} was revoked at {} already; telling every service to reload again",
                format_time(event.at)
            ));
            event.replacement
        };

        let reloads = self.fleet.reload_all().await;
        for reload in &reloads {
            let outcome = reload.error.as_deref().unwrap_or("reloaded");
            self.say(&format!("  {} ({}): {outcome}", reload.service, reload.url));
        }
        self.converge(&Expect {
            present: replacement.iter().cloned().collect(),
            absent: vec![kid.to_string()],
            signing: replacement.clone(),
        })
        .await?;
        self.record(&mut timeline, EventKind::Withdrawn, kid, None)?;
        if let Some(new) = &replacement {
            self.record(&mut timeline, EventKind::Signing, new, Some(kid))?;
        }
        Ok(Revoked {
            kid: kid.to_string(),
            replacement,
            reloads,
        })
    }

    /// What `request` would do now, step by step; reads the key set and the
    /// timeline, changes nothing and contacts no service.
    pub fn plan(&self, request: &Request) -> Result<Vec<String>, RotationError> {
        let set = self.keys.load()?;
        let timeline = self.keys.timeline()?;
        let stage = Stage::of(&set)?;
        let wait = self.timeout().as_secs();
        let services = self
            .fleet
            .holders()
            .map(|t| t.service.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(", ");
        let mut steps = Vec::new();
        let prepare = |steps: &mut Vec<String>| {
            steps.push(format!(
                "generate a new RSA 2048 key as `next` and write the key set to {}",
                self.keys.describe()
            ));
            steps.push(format!(
                "wait until {services} report the new kid (at most {wait} s)"
            ));
        };
        let activate = |steps: &mut Vec<String>, next: &str, active: &str| {
            steps.push(format!(
                "check that {services} report {next} (at most {wait} s)"
            ));
            steps.push(format!("make {next} active and {active} retiring"));
            steps.push(format!(
                "wait until every Auth instance signs with {next} (at most {wait} s)"
            ));
        };
        let retire = |steps: &mut Vec<String>, retiring: &str, since: Option<i64>| {
            let lifetime = self.settings.token_lifetime();
            steps.push(match since {
                Some(since) => format!(
                    "wait until {} for the tokens signed with {retiring} to expire",
                    format_time((since + lifetime).max(self.now()))
                ),
                None => format!(
                    "wait {lifetime} s (access-token TTL {} s + clock skew {} s) after Auth stops signing with {retiring}",
                    self.settings.access_ttl, self.settings.clock_skew
                ),
            });
            steps.push(format!("make {retiring} retired (gone from the JWKS)"));
            steps.push(format!(
                "wait until no service reports {retiring} (at most {wait} s)"
            ));
        };
        match (request, &stage) {
            (Request::Revoke(kid), _) => {
                let Some(key) = set.keys.iter().find(|k| &k.kid == kid) else {
                    if timeline.last(EventKind::Revoked, kid).is_some() {
                        steps.push(format!(
                            "{kid} is revoked already: tell every service to reload again"
                        ));
                        return Ok(steps);
                    }
                    return Err(StageError::UnknownKid { kid: kid.clone() }.into());
                };
                if key.state == KeyState::Active {
                    steps.push(format!(
                        "remove {kid} (the active key) from the key set and make a new key active in the same change"
                    ));
                } else {
                    steps.push(format!(
                        "remove {kid} ({}) from the key set",
                        state_name(key.state)
                    ));
                }
                let all: Vec<String> = self
                    .fleet
                    .targets()
                    .iter()
                    .map(|t| format!("{} ({})", t.service, t.url))
                    .collect();
                steps.push(format!("tell every service to reload: {}", all.join(", ")));
                steps.push(format!(
                    "wait until no service reports {kid} (at most {wait} s)"
                ));
            }
            (Request::Rotate | Request::Phase(Phase::Prepare), Stage::Settled { active }) => {
                prepare(&mut steps);
                if *request == Request::Rotate {
                    activate(&mut steps, "the new key", active);
                    retire(&mut steps, active, None);
                }
            }
            (Request::Rotate | Request::Phase(Phase::Activate), Stage::Prepared { active, next }) => {
                activate(&mut steps, next, active);
                if *request == Request::Rotate {
                    retire(&mut steps, active, None);
                }
            }
            (Request::Rotate | Request::Phase(Phase::Retire), Stage::Activated { retiring, .. }) => {
                retire(&mut steps, retiring, timeline.stopped_signing(retiring));
            }
            (Request::Phase(Phase::Prepare), Stage::Prepared { next, .. }) => {
                steps.push(format!(
                    "{next} is prepared already: wait until {services} report it (at most {wait} s)"
                ));
            }
            (Request::Phase(Phase::Prepare), Stage::Activated { retiring, .. }) => {
                return Err(StageError::RetireFirst {
                    retiring: retiring.clone(),
                }
                .into());
            }
            (Request::Phase(Phase::Activate), Stage::Settled { .. }) => {
                return Err(StageError::NothingPrepared.into());
            }
            (Request::Phase(Phase::Activate), Stage::Activated { active, retiring }) => {
                if timeline.stopped_signing(retiring).is_none() {
                    steps.push(format!(
                        "{active} is active already: wait until every Auth instance signs with it (at most {wait} s)"
                    ));
                } else {
                    steps.push(format!("{active} is active already: nothing to do"));
                }
            }
            (Request::Phase(Phase::Retire), Stage::Settled { .. } | Stage::Prepared { .. }) => {
                match timeline.pending_withdrawal() {
                    Some(event) if event.event == EventKind::Retired => steps.push(format!(
                        "{} is retired already: wait until no service reports it (at most {wait} s)",
                        event.kid
                    )),
                    _ => steps.push("no key is retiring: nothing to do".to_string()),
                }
            }
        }
        Ok(steps)
    }

    /// The key set (no key material), the timeline and the next step.
    pub fn status(&self) -> Result<Status, RotationError> {
        let set = self.keys.load()?;
        let timeline = self.keys.timeline()?;
        let stage = Stage::of(&set);
        let keys = set
            .keys
            .iter()
            .map(|k| KeyRow {
                kid: k.kid.clone(),
                state: state_name(k.state),
                created_at: format_time(k.created_at),
                published: k.state.is_published(),
            })
            .collect();
        let (stage_name, next_step, retire_after) = match &stage {
            Ok(Stage::Settled { .. }) => (
                "settled",
                "none under way; `rotate-jwt-key ENV` starts a rotation".to_string(),
                None,
            ),
            Ok(Stage::Prepared { next, .. }) => (
                "prepared",
                format!("activate {next}: `rotate-jwt-key ENV --phase activate`"),
                None,
            ),
            Ok(Stage::Activated { retiring, .. }) => {
                let after = timeline
                    .stopped_signing(retiring)
                    .map(|since| since + self.settings.token_lifetime());
                let when = after.map_or_else(
                    || "once every Auth instance is seen signing with the new key".to_string(),
                    |at| format!("from {}", format_time(at)),
                );
                (
                    "activated",
                    format!("retire {retiring} {when}: `rotate-jwt-key ENV --phase retire`"),
                    after.map(format_time),
                )
            }
            Err(_) => (
                "irregular",
                "remove the extra keys with `--emergency KID`".to_string(),
                None,
            ),
        };
        Ok(Status {
            store: self.keys.describe(),
            stage: stage_name,
            next_step,
            retire_after,
            keys,
            timeline: timeline.events.iter().map(TimelineRow::from).collect(),
            versions: self.keys.versions()?,
        })
    }
}

fn kid_in(set: &KeySet, state: KeyState) -> String {
    set.keys
        .iter()
        .find(|k| k.state == state)
        .map(|k| k.kid.clone())
        .unwrap_or_default()
}

pub fn state_name(state: KeyState) -> &'static str {
    match state {
        KeyState::Next => "next",
        KeyState::Active => "active",
        KeyState::Retiring => "retiring",
        KeyState::Retired => "retired",
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyRow {
    pub kid: String,
    pub state: &'static str,
    pub created_at: String,
    /// In the JWKS.
    pub published: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelineRow {
    pub at: String,
    pub event: &'static str,
    pub kid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
}

impl From<&Event> for TimelineRow {
    fn from(event: &Event) -> Self {
        TimelineRow {
            at: format_time(event.at),
            event: event.event.name(),
            kid: event.kid.clone(),
            previous: event.previous.clone(),
            replacement: event.replacement.clone(),
        }
    }
}

/// What `--status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub store: String,
    pub stage: &'static str,
    pub next_step: String,
    /// When the retiring key may leave the JWKS.
    pub retire_after: Option<String>,
    pub keys: Vec<KeyRow>,
    pub timeline: Vec<TimelineRow>,
    /// Versions of the key set's secret (Secrets Manager), newest first.
    pub versions: Vec<SecretVersion>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;
    use crate::rotation::fleet::{Role, Target};
    use crate::secrets::{LocalFiles, Secret};

    fn target(service: &str, role: Role) -> Target {
        Target {
            service: service.into(),
            url: format!("http://127.0.0.1:1/{service}"),
            role,
            instances: 1,
        }
    }

    /// A plan or status of `set` kept in local files; no service is
    /// contacted.
    fn with_set<T>(set: &KeySet, check: impl FnOnce(&Rotation) -> T) -> T {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("environments");
        let matrix = Matrix::load(&dir).unwrap();
        let root = tempfile::tempdir().unwrap();
        let files = LocalFiles::new(root.path().join("secrets"));
        let keys = KeyStore::new(matrix.base(), &files).unwrap();
        keys.save(set).unwrap();
        let fleet = Fleet::new(
            vec![
                target("auth", Role::Signer),
                target("finance", Role::Verifier),
                target("platform-core", Role::Reloadable),
            ],
            Secret::new("t"),
        );
        let rotation = Rotation {
            keys,
            fleet,
            settings: Settings::from_matrix(&matrix.base().tokens, None),
            say: &|_| {},
            clock: || 1_000,
        };
        check(&rotation)
    }

    #[test]
    fn a_dry_run_of_a_whole_rotation_names_every_step_and_wait() {
        let set = KeySet::generate(1).unwrap();
        let old = set.active().kid.clone();
        let steps = with_set(&set, |r| r.plan(&Request::Rotate)).unwrap();
        let text = steps.join("\n");
        assert!(text.contains("generate a new RSA 2048 key"), "{text}");
        assert!(text.contains("wait until auth, finance report"), "{text}");
        assert!(
            text.contains(&format!("make the new key active and {old} retiring")),
            "{text}"
        );
        assert!(
            text.contains("wait 960 s (access-token TTL 900 s + clock skew 60 s)"),
            "{text}"
        );
        assert!(text.contains(&format!("make {old} retired")), "{text}");
        assert!(text.contains("at most 360 s"), "{text}");
    }

    #[test]
    fn a_dry_run_follows_the_stage_of_the_key_set() {
        let prepared = keyset::prepare(&KeySet::generate(1).unwrap(), 2)
            .unwrap()
            .unwrap();
        let next = kid_in(&prepared, KeyState::Next);
        let activate = with_set(&prepared, |r| r.plan(&Request::Phase(Phase::Activate))).unwrap();
        assert!(
            activate
                .iter()
                .any(|s| s.starts_with(&format!("make {next} active"))),
            "{activate:?}"
        );
        let again = with_set(&prepared, |r| r.plan(&Request::Phase(Phase::Prepare))).unwrap();
        assert!(again[0].contains("prepared already"), "{again:?}");
        let retire = with_set(&prepared, |r| r.plan(&Request::Phase(Phase::Retire))).unwrap();
        assert_eq!(retire, ["no key is retiring: nothing to do"]);

        let settled = KeySet::generate(1).unwrap();
        let early = with_set(&settled, |r| r.plan(&Request::Phase(Phase::Activate)));
        assert!(matches!(
            early,
            Err(RotationError::Stage(StageError::NothingPrepared))
        ));
    }

    #[test]
    fn a_dry_run_of_a_revocation_names_every_service_to_reload() {
        let set = KeySet::generate(1).unwrap();
        let active = set.active().kid.clone();
        let steps = with_set(&set, |r| r.plan(&Request::Revoke(active.clone()))).unwrap();
        let text = steps.join("\n");
        assert!(
            text.contains("make a new key active in the same change"),
            "{text}"
        );
        assert!(
            text.contains("platform-core (http://127.0.0.1:1/platform-core)"),
            "{text}"
        );
        let unknown = with_set(&set, |r| r.plan(&Request::Revoke("0000".into())));
        assert!(matches!(
            unknown,
            Err(RotationError::Stage(StageError::UnknownKid { .. }))
        ));
    }

    #[test]
    fn the_status_shows_kids_and_states_but_no_key_material() {
        let activated = keyset::activate(
            &keyset::prepare(&KeySet::generate(1).unwrap(), 2)
                .unwrap()
                .unwrap(),
        )
        .unwrap()
        .unwrap();
        let status = with_set(&activated, |r| r.status()).unwrap();
        assert_eq!(status.stage, "activated");
        assert!(
            status.next_step.contains("--phase retire"),
            "{}",
            status.next_step
        );
        let states: Vec<&str> = status.keys.iter().map(|k| k.state).collect();
        assert_eq!(states, ["retiring", "active"]);
        let json = serde_json::to_string(&status).unwrap();
        assert!(!json.contains("PRIVATE"), "{json}");
        assert!(!json.contains(activated.keys[0].private_key_pem.lines().nth(1).unwrap()));
    }
}
