//! The plan of one zone: what the matrix wants against what Route53 holds,
//! kisumctl's own records told apart by their ownership markers. Pure data;
//! `route53` applies it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::records::{
    Desired, Marker, RecordSet, RecordType, marked_record, marker_set, parse_marker,
};

/// What happens to one record set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Update,
    Delete,
    /// The record exists and is not kisumctl's (or blocks kisumctl's).
    Conflict,
    Unchanged,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Conflict => "conflict",
            Action::Unchanged => "unchanged",
        }
    }
}

/// A Route53 change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeAction {
    Create,
    Upsert,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub action: ChangeAction,
    pub set: RecordSet,
}

/// How applying a planned record went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum Outcome {
    Applied,
    Failed { error: String },
}

/// One line of a plan: a record set and what happens to it.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub action: Action,
    /// Zone id of the matrix.
    pub zone: String,
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: RecordType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<RecordSet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<RecordSet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The Route53 changes that carry it out (record and marker together).
    #[serde(skip)]
    pub changes: Vec<Change>,
}

/// What a zone holds: the record sets of the types kisumctl knows, and
/// (name, type) of every other one (they can block a CNAME).
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub sets: Vec<RecordSet>,
    pub others: Vec<(String, String)>,
}

struct Index<'a> {
    sets: BTreeMap<(&'a str, RecordType), &'a RecordSet>,
    /// Record set -> its marker (parsed; `None` when unreadable) and the
    /// marker's own record set.
    markers: BTreeMap<(String, RecordType), (Option<Marker>, &'a RecordSet)>,
    types_at: BTreeMap<&'a str, BTreeSet<String>>,
}

impl<'a> Index<'a> {
    fn new(listing: &'a Listing) -> Index<'a> {
        let mut index = Index {
            sets: BTreeMap::new(),
            markers: BTreeMap::new(),
            types_at: BTreeMap::new(),
        };
        for set in &listing.sets {
            index.sets.insert((&set.name, set.rtype), set);
            index
                .types_at
                .entry(&set.name)
                .or_default()
                .insert(set.rtype.as_str().to_string());
            if set.rtype == RecordType::Txt
                && let Some(key) = marked_record(&set.name)
            {
                index.markers.insert(key, (parse_marker(&set.values), set));
            }
        }
        for (name, rtype) in &listing.others {
            index
                .types_at
                .entry(name)
                .or_default()
                .insert(rtype.clone());
        }
        index
    }

    fn owned_by(
        &self,
        owner: &str,
    ) -> impl Iterator<Item = (&(String, RecordType), &Marker, &'a RecordSet)> {
        self.markers.iter().filter_map(move |(key, (marker, set))| {
            marker
                .as_ref()
                .filter(|m| m.owner == owner)
                .map(|m| (key, m, *set))
        })
    }
}

fn planned(action: Action, zone: &str, name: &str, rtype: RecordType) -> Planned {
    Planned {
        action,
        zone: zone.to_string(),
        name: name.to_string(),
        rtype,
        resource: None,
        before: None,
        after: None,
        reason: None,
        outcome: None,
        changes: vec![],
    }
}

/// The plan of one zone for `owner`: creates, updates, deletes of owned
/// records no longer wanted, conflicts, and what is already right.
pub fn plan_zone(
    zone: &str,
    desired: &[&Desired],
    listing: &Listing,
    owner: &str,
    marker_ttl: u32,
) -> Vec<Planned> {
    let index = Index::new(listing);
    let wanted: BTreeSet<(&str, RecordType)> = desired
        .iter()
        .map(|d| (d.set.name.as_str(), d.set.rtype))
        .collect();
    let mut plan = Vec::new();

    // Owned record sets the matrix no longer asks for go, marker last.
    let mut leaving: BTreeSet<(String, RecordType)> = BTreeSet::new();
    for ((name, rtype), marker, marker_rr) in index.owned_by(owner) {
        if wanted.contains(&(name.as_str(), *rtype)) {
            continue;
        }
        let mut line = planned(Action::Delete, zone, name, *rtype);
        line.resource = Some(marker.resource.clone());
        line.reason = Some("owned, no longer in the matrix".into());
        if let Some(current) = index.sets.get(&(name.as_str(), *rtype)) {
            line.before = Some((*current).clone());
            line.changes.push(Change {
                action: ChangeAction::Delete,
                set: (*current).clone(),
            });
        }
        line.changes.push(Change {
            action: ChangeAction::Delete,
            set: marker_rr.clone(),
        });
        leaving.insert((name.clone(), *rtype));
        plan.push(line);
    }

    for wish in desired {
        let (name, rtype) = (wish.set.name.as_str(), wish.set.rtype);
        let mut line = planned(Action::Unchanged, zone, name, rtype);
        line.resource = Some(wish.resource.clone());
        let current = index.sets.get(&(name, rtype)).copied();
        line.before = current.cloned();
        let marker = index.markers.get(&(name.to_string(), rtype));
        let ours = match marker {
            Some((Some(m), _)) if m.owner == owner => Some(m),
            Some((Some(m), _)) => {
                line.action = Action::Conflict;
                line.reason = Some(format!(
                    "owned by {} ({}), not {owner}",
                    m.owner, m.resource
                ));
                plan.push(line);
                continue;
            }
            Some((None, _)) => {
                line.action = Action::Conflict;
                line.reason = Some("its ownership record is not kisumctl's".into());
                plan.push(line);
                continue;
            }
            None => None,
        };
        if current.is_some() && ours.is_none() {
            line.action = Action::Conflict;
            line.reason = Some(format!(
                "exists without an ownership record of {owner}; kisumctl leaves it alone"
            ));
            plan.push(line);
            continue;
        }
        let blocking: Vec<String> = index
            .types_at
            .get(name)
            .into_iter()
            .flatten()
            .filter(|other| other.as_str() != rtype.as_str())
            .filter(|other| {
                let other_type = RecordType::parse(other);
                let leaves = other_type.is_some_and(|t| leaving.contains(&(name.to_string(), t)));
                let cname_clash = rtype == RecordType::Cname || other.as_str() == "CNAME";
                cname_clash && !leaves
            })
            .cloned()
            .collect();
        if !blocking.is_empty() {
            line.action = Action::Conflict;
            line.reason = Some(format!(
                "{} record at this name cannot live beside a {}",
                blocking.join(" and "),
                if rtype == RecordType::Cname {
                    "CNAME"
                } else {
                    rtype.as_str()
                }
            ));
            plan.push(line);
            continue;
        }
        let mut want = wish.set.clone();
        // During a cutover the lowered TTL stays until `--restore`.
        if let (Some(m), Some(c)) = (ours, current)
            && m.original_ttl.is_some()
            && want.ttl.is_some()
        {
            want.ttl = c.ttl;
        }
        line.after = Some(want.clone());
        match current {
            None => {
                line.action = Action::Create;
                line.changes.push(Change {
                    action: ChangeAction::Create,
                    set: want,
                });
                if ours.is_none() {
                    let marker = Marker {
                        owner: owner.to_string(),
                        resource: wish.resource.clone(),
                        original_ttl: None,
                    };
                    line.changes.push(Change {
                        action: ChangeAction::Create,
                        set: marker_set(name, rtype, &marker, marker_ttl),
                    });
                }
            }
            Some(c) if *c == want => {}
            Some(_) => {
                line.action = Action::Update;
                line.changes.push(Change {
                    action: ChangeAction::Upsert,
                    set: want,
                });
            }
        }
        plan.push(line);
    }
    plan.sort_by(|a, b| (&a.name, a.rtype).cmp(&(&b.name, b.rtype)));
    plan
}

/// Which way a cutover goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cutover {
    /// Lower every owned TTL above this one to it, remembering the original
    /// in the ownership marker.
    Lower(u32),
    /// Put the remembered TTLs back.
    Restore,
}

/// The plan of a TTL cutover in one zone (section 4.4): only record sets
/// `owner` owns, alias records (no TTL) left out.
pub fn plan_cutover(zone: &str, listing: &Listing, owner: &str, cutover: Cutover) -> Vec<Planned> {
    let index = Index::new(listing);
    let mut plan = Vec::new();
    for ((name, rtype), marker, marker_rr) in index.owned_by(owner) {
        let Some(current) = index.sets.get(&(name.as_str(), *rtype)) else {
            continue;
        };
        let Some(ttl) = current.ttl else { continue };
        let mut line = planned(Action::Unchanged, zone, name, *rtype);
        line.resource = Some(marker.resource.clone());
        line.before = Some((*current).clone());
        let (new_ttl, original) = match (cutover, marker.original_ttl) {
            (Cutover::Lower(_), Some(original)) => {
                line.reason = Some(format!("already lowered (original ttl {original})"));
                (None, None)
            }
            (Cutover::Lower(low), None) if ttl <= low => {
                line.reason = Some(format!("ttl {ttl} is already at most {low}"));
                (None, None)
            }
            (Cutover::Lower(low), None) => (Some(low), Some(ttl)),
            (Cutover::Restore, Some(original)) => (Some(original), None),
            (Cutover::Restore, None) => {
                line.reason = Some("not lowered".into());
                (None, None)
            }
        };
        if let Some(new_ttl) = new_ttl {
            let mut after = (*current).clone();
            after.ttl = Some(new_ttl);
            let mut new_marker = marker.clone();
            new_marker.original_ttl = original;
            let marker_ttl = marker_rr.ttl.unwrap_or(new_ttl);
            line.action = Action::Update;
            line.changes = vec![
                Change {
                    action: ChangeAction::Upsert,
                    set: after.clone(),
                },
                Change {
                    action: ChangeAction::Upsert,
                    set: marker_set(name, *rtype, &new_marker, marker_ttl),
                },
            ];
            line.after = Some(after);
        }
        plan.push(line);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: &str = "kisum-staging";

    fn cname(name: &str, target: &str, ttl: u32) -> RecordSet {
        RecordSet {
            name: name.into(),
            rtype: RecordType::Cname,
            ttl: Some(ttl),
            values: vec![target.into()],
            alias: None,
        }
    }

    fn want(name: &str) -> Desired {
        Desired {
            zone: "kisum-io".into(),
            resource: format!("service/{}", name.split('.').next().unwrap()),
            set: cname(name, "ingress.staging.kisum.io", 300),
        }
    }

    fn marker(name: &str, owner: &str, original: Option<u32>) -> RecordSet {
        let m = Marker {
            owner: owner.into(),
            resource: "service/x".into(),
            original_ttl: original,
        };
        marker_set(name, RecordType::Cname, &m, 300)
    }

    fn plan(desired: &[Desired], sets: Vec<RecordSet>) -> Vec<Planned> {
        let listing = Listing {
            sets,
            others: vec![],
        };
        let desired: Vec<&Desired> = desired.iter().collect();
        plan_zone("kisum-io", &desired, &listing, OWNER, 300)
    }

    fn actions(plan: &[Planned]) -> Vec<(String, Action)> {
        plan.iter().map(|p| (p.name.clone(), p.action)).collect()
    }

    #[test]
    fn new_records_come_with_their_marker_in_one_unit() {
        let plan = plan(&[want("auth.kisum.io")], vec![]);
        assert_eq!(plan[0].action, Action::Create);
        assert_eq!(plan[0].changes.len(), 2);
        assert_eq!(plan[0].changes[1].set.name, "_kisumctl-cname.auth.kisum.io");
    }

    #[test]
    fn records_without_our_marker_are_conflicts_and_never_touched() {
        let foreign = cname("app.kisum.io", "elsewhere.example", 60);
        let other_owner = cname("admin.kisum.io", "x.example", 60);
        let plan = plan(
            &[
                want("app.kisum.io"),
                want("admin.kisum.io"),
                want("auth.kisum.io"),
            ],
            vec![
                foreign,
                other_owner,
                marker("admin.kisum.io", "kisum-production", None),
            ],
        );
        assert_eq!(
            actions(&plan),
            [
                ("admin.kisum.io".into(), Action::Conflict),
                ("app.kisum.io".into(), Action::Conflict),
                ("auth.kisum.io".into(), Action::Create),
            ]
        );
        assert!(
            plan[0]
                .reason
                .as_ref()
                .unwrap()
                .contains("kisum-production")
        );
        assert!(plan[0].changes.is_empty() && plan[1].changes.is_empty());
    }

    #[test]
    fn owned_records_update_and_leave_when_the_matrix_drops_them() {
        let plan = plan(
            &[want("auth.kisum.io")],
            vec![
                cname("auth.kisum.io", "old.example", 300),
                marker("auth.kisum.io", OWNER, None),
                cname("gone.kisum.io", "ingress.staging.kisum.io", 300),
                marker("gone.kisum.io", OWNER, None),
                cname("theirs.kisum.io", "x.example", 300),
            ],
        );
        assert_eq!(
            actions(&plan),
            [
                ("auth.kisum.io".into(), Action::Update),
                ("gone.kisum.io".into(), Action::Delete),
            ]
        );
        assert_eq!(plan[1].changes.len(), 2, "record and marker");
    }

    #[test]
    fn a_foreign_txt_beside_a_cname_is_a_conflict() {
        let txt = RecordSet {
            name: "auth.kisum.io".into(),
            rtype: RecordType::Txt,
            ttl: Some(300),
            values: vec!["\"verify\"".into()],
            alias: None,
        };
        let plan = plan(&[want("auth.kisum.io")], vec![txt]);
        assert_eq!(plan[0].action, Action::Conflict);
    }

    #[test]
    fn cutover_lowers_remembers_and_restores() {
        let sets = vec![
            cname("auth.kisum.io", "ingress.staging.kisum.io", 300),
            marker("auth.kisum.io", OWNER, None),
            cname("theirs.kisum.io", "x.example", 3600),
        ];
        let listing = Listing {
            sets,
            others: vec![],
        };
        let lower = plan_cutover("kisum-io", &listing, OWNER, Cutover::Lower(60));
        assert_eq!(lower.len(), 1, "only owned records");
        assert_eq!(lower[0].after.as_ref().unwrap().ttl, Some(60));
        let new_marker = parse_marker(&lower[0].changes[1].set.values).unwrap();
        assert_eq!(new_marker.original_ttl, Some(300));

        let lowered = Listing {
            sets: vec![
                cname("auth.kisum.io", "ingress.staging.kisum.io", 60),
                marker("auth.kisum.io", OWNER, Some(300)),
            ],
            others: vec![],
        };
        let again = plan_cutover("kisum-io", &lowered, OWNER, Cutover::Lower(60));
        assert_eq!(again[0].action, Action::Unchanged);
        let desired: Vec<Desired> = vec![want("auth.kisum.io")];
        let during = plan_zone(
            "kisum-io",
            &desired.iter().collect::<Vec<_>>(),
            &lowered,
            OWNER,
            300,
        );
        assert_eq!(
            during[0].action,
            Action::Unchanged,
            "apply keeps the lowered TTL"
        );
        let restore = plan_cutover("kisum-io", &lowered, OWNER, Cutover::Restore);
        assert_eq!(restore[0].after.as_ref().unwrap().ttl, Some(300));
        assert_eq!(
            parse_marker(&restore[0].changes[1].set.values)
                .unwrap()
                .original_ttl,
            None
        );
    }
}
