//! Route53 change batches within the service's limits: at most 1,000
//! resource records and 32,000 characters of values per request, an UPSERT
//! counting twice. A planned record (the record and its marker) is never
//! split across batches, nor are the records of one name, so that a type
//! change (delete the CNAME, create the A) is one atomic change.

use super::plan::{Change, ChangeAction};

/// The limits of one ChangeResourceRecordSets request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub records: usize,
    pub value_chars: usize,
}

pub const ROUTE53: Limits = Limits {
    records: 1000,
    value_chars: 32_000,
};

/// What one change costs against the limits.
pub fn weight(change: &Change) -> (usize, usize) {
    let set = &change.set;
    let records = set.values.len().max(1);
    let chars = match &set.alias {
        Some(alias) => alias.dns_name.len(),
        None => set.values.iter().map(String::len).sum(),
    };
    let factor = if change.action == ChangeAction::Upsert {
        2
    } else {
        1
    };
    (records * factor, chars * factor)
}

/// Groups `units` (each a list of changes, with the name that keys it)
/// into batches, in order; each batch is a list of unit indices. A group
/// larger than the limits gets a batch of its own (Route53 refuses it, and
/// that refusal is reported for those records only).
pub fn batches(units: &[(&str, &[Change])], limits: Limits) -> Vec<Vec<usize>> {
    // Units of one name travel together, deletes of the name first.
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for (n, (name, _)) in units.iter().enumerate() {
        match groups.iter_mut().find(|(g, _)| g == name) {
            Some((_, members)) => members.push(n),
            None => groups.push((name, vec![n])),
        }
    }
    let cost = |members: &[usize]| {
        members
            .iter()
            .flat_map(|&n| units[n].1.iter())
            .map(weight)
            .fold((0, 0), |(r, c), (dr, dc)| (r + dr, c + dc))
    };
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut used = (0, 0);
    for (_, members) in groups {
        let (records, chars) = cost(&members);
        let fits = used.0 + records <= limits.records && used.1 + chars <= limits.value_chars;
        match out.last_mut() {
            Some(batch) if fits && !batch.is_empty() => {
                batch.extend(members);
                used = (used.0 + records, used.1 + chars);
            }
            _ => {
                out.push(members);
                used = (records, chars);
            }
        }
    }
    out
}

/// The changes of a batch in the order Route53 should see them: deletes
/// first, so that a record can change type within one request.
pub fn ordered<'a>(units: &'a [(&str, &[Change])], batch: &[usize]) -> Vec<&'a Change> {
    let mut changes: Vec<&Change> = batch.iter().flat_map(|&n| units[n].1.iter()).collect();
    changes.sort_by_key(|c| c.action != ChangeAction::Delete);
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::records::{RecordSet, RecordType};

    fn change(action: ChangeAction, name: &str, value_len: usize) -> Change {
        Change {
            action,
            set: RecordSet {
                name: name.into(),
                rtype: RecordType::Cname,
                ttl: Some(300),
                values: vec!["x".repeat(value_len)],
                alias: None,
            },
        }
    }

    #[test]
    fn batches_respect_both_limits_and_keep_units_whole() {
        // 1,500 names, each a record and a marker: 3,000 records.
        let changes: Vec<(String, Vec<Change>)> = (0..1500)
            .map(|n| {
                let name = format!("h{n}.kisum.io");
                let unit = vec![
                    change(ChangeAction::Create, &name, 20),
                    change(ChangeAction::Create, &format!("_kisumctl-cname.{name}"), 90),
                ];
                (name, unit)
            })
            .collect();
        let units: Vec<(&str, &[Change])> = changes
            .iter()
            .map(|(name, unit)| (name.as_str(), unit.as_slice()))
            .collect();
        let out = batches(&units, ROUTE53);
        let mut seen: Vec<usize> = out.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..1500).collect::<Vec<_>>());
        for batch in &out {
            let (records, chars) = batch
                .iter()
                .flat_map(|&n| units[n].1.iter())
                .map(weight)
                .fold((0, 0), |(r, c), (a, b)| (r + a, c + b));
            assert!(records <= 1000 && chars <= 32_000, "{records} {chars}");
        }
        // 110 characters a name: the character limit binds first.
        assert_eq!(out[0].len(), 32_000 / 110);
    }

    #[test]
    fn upserts_count_twice_and_deletes_go_first() {
        let unit_a = [change(ChangeAction::Upsert, "a.kisum.io", 10)];
        let unit_b = [
            change(ChangeAction::Create, "b.kisum.io", 10),
            change(ChangeAction::Delete, "b.kisum.io", 10),
        ];
        assert_eq!(weight(&unit_a[0]), (2, 20));
        let units: Vec<(&str, &[Change])> = vec![("a.kisum.io", &unit_a), ("b.kisum.io", &unit_b)];
        let tight = Limits {
            records: 2,
            value_chars: 1000,
        };
        assert_eq!(batches(&units, tight), [vec![0], vec![1]]);
        let order = ordered(&units, &[1]);
        assert_eq!(order[0].action, ChangeAction::Delete);
    }
}
