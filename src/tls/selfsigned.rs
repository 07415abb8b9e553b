//! `tls.mode: self-signed` (the local environment): a self-signed
//! certificate per public host, made on this machine, kept in the secret
//! store like an ACME certificate (`tls-<id>`, keys `tls.crt` and
//! `tls.key`), so `tls status` judges both alike. No CA, no network.

use super::TlsHost;
use super::acme::{IssueOutcome, Issued};
use crate::secrets::{Secret, SecretStore};

/// How long a self-signed certificate is valid, in days: the span of an
/// ACME certificate, so the renewal window and alert apply the same way.
pub const VALIDITY_DAYS: i64 = 90;

/// The organization its subject and issuer name, so that `tls status`
/// shows where it came from.
pub const ORGANIZATION: &str = "kisumctl self-signed";

/// A certificate and its key (PEM) for `host`, valid from an hour before
/// `now` (Unix seconds) for [`VALIDITY_DAYS`]: ECDSA P-256, the host as
/// its only name, not a CA.
pub fn certificate(host: &str, now: i64) -> anyhow::Result<(String, Secret)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()])?;
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, host);
    name.push(rcgen::DnType::OrganizationName, ORGANIZATION);
    params.distinguished_name = name;
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let at = |seconds: i64| -> anyhow::Result<std::time::SystemTime> {
        let seconds = u64::try_from(seconds)?;
        Ok(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds))
    };
    params.not_before = at(now - 3_600)?.into();
    params.not_after = at(now + VALIDITY_DAYS * 86_400)?.into();
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), Secret::new(key.serialize_pem())))
}

/// Makes and stores a certificate for each of `hosts`.
pub fn issue(store: &dyn SecretStore, hosts: &[TlsHost], now: i64) -> Vec<Issued> {
    hosts
        .iter()
        .map(|host| {
            let outcome = match make(store, host, now) {
                Ok(expires) => IssueOutcome::Issued { expires },
                Err(error) => IssueOutcome::Failed {
                    error: format!("{error:#}"),
                },
            };
            Issued {
                host: host.clone(),
                outcome,
            }
        })
        .collect()
}

fn make(store: &dyn SecretStore, host: &TlsHost, now: i64) -> anyhow::Result<String> {
    let (cert, key) = certificate(&host.host, now)?;
    super::store_pair(store, host, &cert, &key)?;
    let expires = jiff::Timestamp::from_second(now + VALIDITY_DAYS * 86_400)?;
    Ok(expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_names_its_host_and_holds_its_key() {
        let now = jiff::Timestamp::now().as_second();
        let (cert, key) = certificate("auth.kisum.localhost", now).unwrap();
        let (info, spki) = crate::tls::cert::inspect(&cert).unwrap();
        assert_eq!(info.names, ["auth.kisum.localhost"]);
        assert!(info.issuer.contains(ORGANIZATION), "{}", info.issuer);
        assert_eq!(info.not_after, now + VALIDITY_DAYS * 86_400);
        assert!(info.not_before < now);
        assert_eq!(crate::tls::cert::key_matches(key.expose(), &spki), Ok(true));
    }
}
