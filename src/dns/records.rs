//! DNS records as kisumctl sees them: the record sets an environment
//! wants (from the matrix), and the ownership markers that say which
//! record sets of a zone kisumctl manages.
//!
//! Ownership works like external-dns's TXT registry: next to every record
//! set it manages, kisumctl keeps a TXT record `_kisumctl-<type>.<name>`
//! whose value names the owner (`kisum-<environment>`) and the matrix
//! resource. A record set without such a marker, or with another owner's,
//! is never changed or deleted. The marker sits one label below the name
//! because a CNAME cannot share its name with any other record.

use serde::Serialize;

use crate::matrix::Environment;
use crate::matrix::schema::{Exposure, Visibility};

/// The record types kisumctl writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum RecordType {
    A,
    #[serde(rename = "AAAA")]
    Aaaa,
    #[serde(rename = "CNAME")]
    Cname,
    #[serde(rename = "TXT")]
    Txt,
}

impl RecordType {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Cname => "CNAME",
            RecordType::Txt => "TXT",
        }
    }

    pub fn parse(text: &str) -> Option<RecordType> {
        Some(match text {
            "A" => RecordType::A,
            "AAAA" => RecordType::Aaaa,
            "CNAME" => RecordType::Cname,
            "TXT" => RecordType::Txt,
            _ => return None,
        })
    }
}

/// An alias record's target (Route53 only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alias {
    pub hosted_zone_id: String,
    pub dns_name: String,
    pub evaluate_target_health: bool,
}

/// One record set: a name, a type, and either values with a TTL or an
/// alias target. Names are lowercase without the final dot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordSet {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: RecordType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// As Route53 writes them: TXT values are quoted strings.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<Alias>,
}

impl RecordSet {
    /// What the record points at, for plan output.
    pub fn describe(&self) -> String {
        match (&self.alias, self.ttl) {
            (Some(alias), _) => format!("alias {}", alias.dns_name),
            (None, Some(ttl)) => format!("{} (ttl {ttl})", self.values.join(" ")),
            (None, None) => self.values.join(" "),
        }
    }
}

/// A record set the matrix asks for.
#[derive(Debug, Clone)]
pub struct Desired {
    /// Zone id of the matrix (`kisum-io`, ...).
    pub zone: String,
    /// What the record serves: `service/auth`, `frontend/app`.
    pub resource: String,
    pub set: RecordSet,
}

/// A zone as one environment sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZoneView {
    pub id: String,
    pub domain: String,
    pub private: bool,
}

/// The owner id of an environment's records.
pub fn owner(env: &Environment) -> String {
    format!("{}-{}", env.base.platform.name, env.name)
}

/// The zones an environment's records live in, with their domain there.
pub fn zones(env: &Environment) -> Vec<ZoneView> {
    env.base
        .dns
        .zones
        .iter()
        .map(|(id, zone)| ZoneView {
            id: id.clone(),
            domain: env
                .file
                .dns
                .domain_overrides
                .get(id)
                .unwrap_or(&zone.domain)
                .clone(),
            private: zone.visibility == Visibility::Private,
        })
        .collect()
}

/// Every record set the environment wants, sorted by zone and name.
///
/// Public services point at the ingress (CNAME, alias A/AAAA, or fixed
/// A/AAAA addresses), frontends at `dns.frontend-target` (or the ingress),
/// internal services at `dns.internal-target` in their private zone when
/// one is set.
pub fn desired(env: &Environment) -> Vec<Desired> {
    let dns = &env.file.dns;
    let ttl = dns.ttl_seconds;
    let ingress = |name: &str| -> Vec<RecordSet> {
        if let Some(alias) = &dns.ingress_alias {
            return [RecordType::A, RecordType::Aaaa]
                .into_iter()
                .map(|rtype| RecordSet {
                    name: name.to_string(),
                    rtype,
                    ttl: None,
                    values: vec![],
                    alias: Some(Alias {
                        hosted_zone_id: alias.hosted_zone_id.clone(),
                        dns_name: dns.ingress_target.clone(),
                        evaluate_target_health: alias.evaluate_target_health,
                    }),
                })
                .collect();
        }
        if !dns.ingress_addresses.is_empty() {
            let mut v4 = Vec::new();
            let mut v6 = Vec::new();
            for address in &dns.ingress_addresses {
                match address.parse::<std::net::IpAddr>() {
                    Ok(std::net::IpAddr::V4(ip)) => v4.push(ip.to_string()),
                    Ok(std::net::IpAddr::V6(ip)) => v6.push(ip.to_string()),
                    Err(_) => {}
                }
            }
            return [(RecordType::A, v4), (RecordType::Aaaa, v6)]
                .into_iter()
                .filter(|(_, values)| !values.is_empty())
                .map(|(rtype, mut values)| {
                    values.sort();
                    RecordSet {
                        name: name.to_string(),
                        rtype,
                        ttl: Some(ttl),
                        values,
                        alias: None,
                    }
                })
                .collect();
        }
        vec![cname(name, &dns.ingress_target, ttl)]
    };

    let mut records = Vec::new();
    for service in env.services.values() {
        let resource = format!("service/{}", service.id);
        let sets = match (service.spec.exposure, &dns.internal_target) {
            (Exposure::Public, _) => ingress(&service.host),
            (Exposure::Internal, Some(target)) => vec![cname(&service.host, target, ttl)],
            (Exposure::Internal, None) => vec![],
        };
        records.extend(sets.into_iter().map(|set| Desired {
            zone: service.spec.zone.clone(),
            resource: resource.clone(),
            set,
        }));
    }
    for frontend in env.frontends.values() {
        let resource = format!("frontend/{}", frontend.id);
        let sets = match &dns.frontend_target {
            Some(target) => vec![cname(&frontend.host, target, ttl)],
            None => ingress(&frontend.host),
        };
        let zone = env.base.frontends[frontend.id].zone.clone();
        records.extend(sets.into_iter().map(|set| Desired {
            zone: zone.clone(),
            resource: resource.clone(),
            set,
        }));
    }
    records.sort_by(|a, b| {
        (&a.zone, &a.set.name, a.set.rtype).cmp(&(&b.zone, &b.set.name, b.set.rtype))
    });
    records
}

fn cname(name: &str, target: &str, ttl: u32) -> RecordSet {
    RecordSet {
        name: name.to_string(),
        rtype: RecordType::Cname,
        ttl: Some(ttl),
        values: vec![target.to_string()],
        alias: None,
    }
}

/// What an ownership marker says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Marker {
    pub owner: String,
    pub resource: String,
    /// Set during a TTL cutover: the TTL to put back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_ttl: Option<u32>,
}

const HERITAGE: &str = "heritage=kisumctl";

/// The name of the marker of record set (`name`, `rtype`).
pub fn marker_name(name: &str, rtype: RecordType) -> String {
    format!("_kisumctl-{}.{name}", rtype.as_str().to_ascii_lowercase())
}

/// The record set (`name`, `rtype`) a marker name stands for.
pub fn marked_record(marker_name: &str) -> Option<(String, RecordType)> {
    let rest = marker_name.strip_prefix("_kisumctl-")?;
    let (kind, name) = rest.split_once('.')?;
    let rtype = RecordType::parse(&kind.to_ascii_uppercase())?;
    (rtype != RecordType::Txt).then(|| (name.to_string(), rtype))
}

/// The marker record for `marker`, on record set (`name`, `rtype`).
pub fn marker_set(name: &str, rtype: RecordType, marker: &Marker, ttl: u32) -> RecordSet {
    let mut text = format!(
        "{HERITAGE},kisumctl/owner={},kisumctl/resource={}",
        marker.owner, marker.resource
    );
    if let Some(original) = marker.original_ttl {
        text.push_str(&format!(",kisumctl/original-ttl={original}"));
    }
    RecordSet {
        name: marker_name(name, rtype),
        rtype: RecordType::Txt,
        ttl: Some(ttl),
        values: vec![format!("\"{text}\"")],
        alias: None,
    }
}

/// Reads a marker from a TXT record's values; `None` when none of them is
/// a kisumctl marker.
pub fn parse_marker(values: &[String]) -> Option<Marker> {
    values.iter().find_map(|value| {
        let text = unquote_txt(value);
        let mut fields = text.split(',');
        if fields.next()? != HERITAGE {
            return None;
        }
        let mut marker = Marker {
            owner: String::new(),
            resource: String::new(),
            original_ttl: None,
        };
        for field in fields {
            match field.split_once('=')? {
                ("kisumctl/owner", v) => marker.owner = v.to_string(),
                ("kisumctl/resource", v) => marker.resource = v.to_string(),
                ("kisumctl/original-ttl", v) => marker.original_ttl = v.parse().ok(),
                _ => {}
            }
        }
        (!marker.owner.is_empty()).then_some(marker)
    })
}

/// A TXT value as Route53 writes it (`"a" "b"`) joined into its text.
pub fn unquote_txt(value: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match (c, inside) {
            ('"', _) => inside = !inside,
            ('\\', true) => out.extend(chars.next()),
            (c, true) => out.push(c),
            (_, false) => {}
        }
    }
    if !value.contains('"') {
        return value.to_string();
    }
    out
}

/// A name as Route53 returns it (`Auth.Kisum.IO.`, `\052.x.`) in the form
/// kisumctl compares: lowercase, octal escapes decoded, no final dot.
pub fn normal_name(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                let value = digits.iter().fold(0u32, |n, d| n * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_foreign_text_is_not_a_marker() {
        let marker = Marker {
            owner: "kisum-staging".into(),
            resource: "service/auth".into(),
            original_ttl: Some(300),
        };
        let set = marker_set("auth-staging.kisum.io", RecordType::Cname, &marker, 300);
        assert_eq!(set.name, "_kisumctl-cname.auth-staging.kisum.io");
        assert_eq!(parse_marker(&set.values), Some(marker));
        assert_eq!(
            marked_record(&set.name),
            Some(("auth-staging.kisum.io".into(), RecordType::Cname))
        );
        assert_eq!(parse_marker(&["\"v=spf1 -all\"".into()]), None);
        assert_eq!(
            parse_marker(&["\"heritage=external-dns,external-dns/owner=x\"".into()]),
            None
        );
        assert_eq!(marked_record("_kisumctl-txt.x.io"), None);
        assert_eq!(marked_record("auth.kisum.io"), None);
    }

    #[test]
    fn route53_names_and_txt_values_are_normalised() {
        assert_eq!(normal_name("Auth.Kisum.IO."), "auth.kisum.io");
        assert_eq!(normal_name("\\052.kisum.io."), "*.kisum.io");
        assert_eq!(unquote_txt("\"abc\" \"def\""), "abcdef");
        assert_eq!(unquote_txt("\"a\\\"b\""), "a\"b");
        assert_eq!(unquote_txt("plain"), "plain");
    }
}
