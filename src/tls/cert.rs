//! What a stored certificate says: names, validity, issuer, and whether
//! the stored private key belongs to it.

use rcgen::PublicKeyData as _;
use serde::Serialize;

/// The leaf certificate of a PEM chain, read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// DNS names of the subject alternative name extension.
    pub names: Vec<String>,
    pub issuer: String,
}

/// Reads the first certificate of `chain_pem`.
pub fn inspect(chain_pem: &str) -> Result<(CertInfo, Vec<u8>), String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    let info = CertInfo {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        names,
        issuer: cert.issuer().to_string(),
    };
    Ok((info, cert.public_key().raw.to_vec()))
}

/// Whether the PEM private key `key_pem` is the key of the certificate
/// whose SubjectPublicKeyInfo is `spki`.
pub fn key_matches(key_pem: &str, spki: &[u8]) -> Result<bool, String> {
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|_| "not a PEM private key".to_string())?;
    Ok(key.subject_public_key_info() == spki)
}

/// Whether the certificate covers `host` (exactly, or by a wildcard one
/// label deep).
pub fn covers(info: &CertInfo, host: &str) -> bool {
    info.names.iter().any(|name| {
        name == host
            || name
                .strip_prefix("*.")
                .is_some_and(|domain| host.split_once('.').is_some_and(|(_, rest)| rest == domain))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(names: &[&str], days: i64) -> (String, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let now = std::time::SystemTime::now();
        params.not_before = now.into();
        params.not_after = (now + std::time::Duration::from_secs(days as u64 * 86_400)).into();
        (params.self_signed(&key).unwrap().pem(), key)
    }

    #[test]
    fn names_expiry_and_key_are_read() {
        let (pem, key) = certificate(&["auth-staging.kisum.io"], 10);
        let (info, spki) = inspect(&pem).unwrap();
        assert_eq!(info.names, ["auth-staging.kisum.io"]);
        let left = info.not_after - jiff::Timestamp::now().as_second();
        assert!((9 * 86_400..=10 * 86_400 + 5).contains(&left), "{left}");
        assert!(key_matches(&key.serialize_pem(), &spki).unwrap());
        let other = rcgen::KeyPair::generate().unwrap();
        assert!(!key_matches(&other.serialize_pem(), &spki).unwrap());
        assert!(covers(&info, "auth-staging.kisum.io"));
        assert!(!covers(&info, "auth.kisum.io"));
        assert!(inspect("garbage").is_err());
    }

    #[test]
    fn wildcards_cover_one_label() {
        let info = CertInfo {
            not_before: 0,
            not_after: 0,
            names: vec!["*.kisum.io".into()],
            issuer: String::new(),
        };
        assert!(covers(&info, "auth.kisum.io"));
        assert!(!covers(&info, "a.b.kisum.io"));
    }
}
