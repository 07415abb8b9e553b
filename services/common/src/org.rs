//! The `x-org` header: which company a request is for, named by its id or
//! its slug. One parser for Auth and the module backends, so both accept
//! and refuse the same values.
//!
//! An id is any form `uuid` reads (hyphenated in either case, 32 hex
//! digits, `{braced}`, `urn:uuid:` prefixed); it is passed on and cached
//! in its canonical hyphenated lowercase form. A slug is 1 to 128 ASCII
//! letters, digits, `-`, `_` and `.`, case-insensitive: Auth stores slugs
//! in lower case, and `Acme-Music` is read as `acme-music`.

use std::fmt;

use uuid::Uuid;

pub const ORG_HEADER: &str = "x-org";
/// The longest `x-org` value accepted.
pub const MAX_ORG_LENGTH: usize = 128;

/// A company reference from `x-org`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OrgRef {
    Id(Uuid),
    Slug(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OrgError {
    #[error("x-org required")]
    Missing,
    #[error("x-org must be a company id or slug")]
    Invalid,
}

impl OrgRef {
    /// Parses a header value (surrounding spaces ignored).
    pub fn parse(raw: &str) -> Result<OrgRef, OrgError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(OrgError::Missing);
        }
        if raw.len() > MAX_ORG_LENGTH {
            return Err(OrgError::Invalid);
        }
        if let Ok(id) = Uuid::parse_str(raw) {
            return Ok(OrgRef::Id(id));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if raw.chars().all(allowed) {
            Ok(OrgRef::Slug(raw.to_ascii_lowercase()))
        } else {
            Err(OrgError::Invalid)
        }
    }

    /// The `x-org` header of a request, parsed.
    pub fn from_headers(headers: &axum::http::HeaderMap) -> Result<OrgRef, OrgError> {
        let value = headers.get(ORG_HEADER).ok_or(OrgError::Missing)?;
        OrgRef::parse(value.to_str().map_err(|_| OrgError::Invalid)?)
    }
}

/// The canonical form: an id hyphenated in lowercase, a slug in lowercase.
impl fmt::Display for OrgRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrgRef::Id(id) => write!(f, "{}", id.hyphenated()),
            OrgRef::Slug(slug) => f.write_str(slug),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "67e55044-10b1-426f-9247-bb680e5fe0c8";

    #[test]
    fn every_form_of_an_id_names_the_same_company() {
        let id = Uuid::parse_str(ID).unwrap();
        for raw in [
            ID.to_string(),
            ID.to_uppercase(),
            format!("urn:uuid:{ID}"),
            format!("  {ID} "),
            ID.replace('-', ""),
            format!("{{{ID}}}"),
        ] {
            let org = OrgRef::parse(&raw).unwrap();
            assert_eq!(org, OrgRef::Id(id), "{raw}");
            assert_eq!(org.to_string(), ID);
        }
    }

    #[test]
    fn slugs_are_read_in_lower_case() {
        for raw in ["acme-music_2.0", "Acme-Music_2.0", " ACME-MUSIC_2.0 "] {
            let org = OrgRef::parse(raw).unwrap();
            assert_eq!(org, OrgRef::Slug("acme-music_2.0".into()), "{raw}");
            assert_eq!(org.to_string(), "acme-music_2.0");
        }
    }

    #[test]
    fn empty_long_and_odd_values_are_refused() {
        assert_eq!(OrgRef::parse("  "), Err(OrgError::Missing));
        for raw in ["acme/../x", "acme music", "urn:uuid:nope", "a\u{0}b", "é"] {
            assert_eq!(OrgRef::parse(raw), Err(OrgError::Invalid), "{raw:?}");
        }
        assert_eq!(OrgRef::parse(&"a".repeat(129)), Err(OrgError::Invalid));
        assert!(OrgRef::parse(&"a".repeat(128)).is_ok());
    }
}
