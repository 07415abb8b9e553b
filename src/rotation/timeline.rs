//! The record of what happened to the keys, kept beside the key set: what
//! kisumctl wrote and what it saw the services do. No key material.
//!
//! The key set is the truth about each key's state; the timeline adds the
//! times, above all when every Auth instance stopped signing with a key,
//! which is when the wait for its tokens to expire starts.

use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "kisum-key-rotation/v1";
/// Events kept; older ones are dropped.
const KEPT: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// `kid` was written as the next key.
    Prepared,
    /// Every Auth instance and every verifying backend reported `kid`.
    Published,
    /// `kid` was written as the active key; `previous` as retiring.
    Activated,
    /// Every Auth instance reported signing with `kid` (`previous` no
    /// longer signs).
    Signing,
    /// `kid` was written as retired.
    Retired,
    /// No service reported `kid` any more.
    Withdrawn,
    /// `kid` was removed from the key set at once (`--emergency`);
    /// `replacement` signs in its place when it was the active key.
    Revoked,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Prepared => "prepared",
            EventKind::Published => "published",
            EventKind::Activated => "activated",
            EventKind::Signing => "signing",
            EventKind::Retired => "retired",
            EventKind::Withdrawn => "withdrawn",
            EventKind::Revoked => "revoked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub at: i64,
    pub event: EventKind,
    pub kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeline {
    pub format: String,
    pub events: Vec<Event>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            format: FORMAT.to_string(),
            events: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the rotation timeline is not {FORMAT} JSON: {0}")]
pub struct TimelineError(String);

impl Timeline {
    pub fn from_json(text: &str) -> Result<Timeline, TimelineError> {
        let timeline: Timeline =
            serde_json::from_str(text).map_err(|e| TimelineError(e.to_string()))?;
        if timeline.format != FORMAT {
            return Err(TimelineError(format!("format `{}`", timeline.format)));
        }
        Ok(timeline)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn record(&mut self, at: i64, event: EventKind, kid: &str) -> &mut Event {
        if self.events.len() >= KEPT {
            self.events.drain(..=self.events.len() - KEPT);
        }
        self.events.push(Event {
            at,
            event,
            kid: kid.to_string(),
            previous: None,
            replacement: None,
        });
        self.events.last_mut().expect("just pushed")
    }

    /// The last event of `kind` for `kid`.
    pub fn last(&self, kind: EventKind, kid: &str) -> Option<&Event> {
        self.events
            .iter()
            .rev()
            .find(|e| e.event == kind && e.kid == kid)
    }

    /// When every Auth instance was first seen signing with the key that
    /// replaced `kid`: from then on no new token carries `kid`.
    pub fn stopped_signing(&self, kid: &str) -> Option<i64> {
        self.events
            .iter()
            .filter(|e| e.event == EventKind::Signing && e.previous.as_deref() == Some(kid))
            .map(|e| e.at)
            .min()
    }

    /// A key written as retired (or revoked) whose removal no service has
    /// been seen to complete yet: an interrupted retire or revocation.
    pub fn pending_withdrawal(&self) -> Option<&Event> {
        let last = self
            .events
            .iter()
            .rev()
            .find(|e| matches!(e.event, EventKind::Retired | EventKind::Revoked))?;
        let withdrawn = self
            .events
            .iter()
            .rev()
            .take_while(|e| !std::ptr::eq(*e, last))
            .any(|e| e.event == EventKind::Withdrawn && e.kid == last.kid);
        (!withdrawn).then_some(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_round_trips_as_json() {
        let mut timeline = Timeline::default();
        timeline.record(10, EventKind::Activated, "b").previous = Some("a".into());
        let text = timeline.to_json();
        assert_eq!(Timeline::from_json(&text).unwrap(), timeline);
        assert!(text.contains("\"event\": \"activated\""), "{text}");
        assert!(Timeline::from_json(r#"{"format": "x", "events": []}"#).is_err());
    }

    #[test]
    fn the_first_confirmation_counts_for_the_end_of_signing() {
        let mut timeline = Timeline::default();
        assert_eq!(timeline.stopped_signing("a"), None);
        timeline.record(10, EventKind::Signing, "b").previous = Some("a".into());
        timeline.record(20, EventKind::Signing, "b").previous = Some("a".into());
        assert_eq!(timeline.stopped_signing("a"), Some(10));
        assert_eq!(timeline.stopped_signing("b"), None);
    }

    #[test]
    fn a_retire_without_its_withdrawal_is_pending() {
        let mut timeline = Timeline::default();
        assert!(timeline.pending_withdrawal().is_none());
        timeline.record(10, EventKind::Retired, "a");
        assert_eq!(timeline.pending_withdrawal().unwrap().kid, "a");
        timeline.record(11, EventKind::Withdrawn, "a");
        assert!(timeline.pending_withdrawal().is_none());
        timeline.record(12, EventKind::Revoked, "b");
        assert_eq!(timeline.pending_withdrawal().unwrap().kid, "b");
    }

    #[test]
    fn old_events_are_dropped() {
        let mut timeline = Timeline::default();
        for at in 0..(KEPT as i64 + 10) {
            timeline.record(at, EventKind::Published, "k");
        }
        assert_eq!(timeline.events.len(), KEPT);
        assert_eq!(timeline.events[0].at, 10);
    }
}
