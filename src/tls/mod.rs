//! `kisumctl tls`: a certificate for every public host, from ACME
//! (`acme`) or, with `tls.mode: self-signed` (local), made here
//! (`selfsigned`), kept in the environment's secret store as secret
//! `tls-<service or frontend>` with keys `tls.crt` (the chain, PEM) and
//! `tls.key` (PEM). Those are the names of the `kubernetes.io/tls` Secrets
//! the rendered Ingresses reference. Never prints.

pub mod acme;
pub mod cert;
pub mod selfsigned;

use serde::Serialize;

use crate::matrix::Environment;
use crate::matrix::schema::Exposure;
use crate::secrets::{Secret, SecretStore, StoreError};
use cert::CertInfo;

/// Keys of a TLS secret, as Kubernetes names them.
pub const CERT_KEY: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";

/// The secret and key of the ACME account key (the inventory's
/// `acme-account-key`).
pub const ACCOUNT_SECRET: &str = "acme-account-key";
pub const ACCOUNT_KEY: &str = "key.pem";

/// A public host that needs a certificate.
#[derive(Debug, Clone, Serialize)]
pub struct TlsHost {
    /// Service or frontend id.
    pub id: String,
    pub host: String,
    /// Zone id of the matrix.
    pub zone: String,
    /// The secret that holds its certificate and key.
    pub secret: String,
}

/// Every public host of the environment: public services and frontends.
pub fn hosts(env: &Environment) -> Vec<TlsHost> {
    let services = env
        .services
        .values()
        .filter(|s| s.spec.exposure == Exposure::Public)
        .map(|s| (s.id, &s.host, &s.spec.zone));
    let frontends = env
        .frontends
        .values()
        .map(|f| (f.id, &f.host, &env.base.frontends[f.id].zone));
    let mut hosts: Vec<TlsHost> = services
        .chain(frontends)
        .map(|(id, host, zone)| TlsHost {
            id: id.to_string(),
            host: host.clone(),
            zone: zone.clone(),
            secret: crate::render::tls_secret_name(id),
        })
        .collect();
    hosts.sort_by(|a, b| a.host.cmp(&b.host));
    hosts
}

/// Where a host's certificate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// Valid beyond the renewal window.
    Ok,
    /// Inside the renewal window (`tls.renewal-window-days`).
    RenewDue,
    /// Under the alert threshold (`tls.expiry-alert-days`).
    Alert,
    Expired,
    Missing,
    /// Unreadable, for another name, or with a key that is not its own.
    Invalid,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::RenewDue => "renew-due",
            Health::Alert => "alert",
            Health::Expired => "expired",
            Health::Missing => "missing",
            Health::Invalid => "invalid",
        }
    }

    /// Whether `status` exits non-zero for it.
    pub fn alarming(self) -> bool {
        !matches!(self, Health::Ok | Health::RenewDue)
    }

    /// Whether `renew` renews it.
    pub fn renew(self) -> bool {
        matches!(self, Health::RenewDue | Health::Alert | Health::Expired)
    }

    /// Whether `issue` (without `--force`) issues it.
    pub fn issue(self) -> bool {
        matches!(self, Health::Missing | Health::Invalid | Health::Expired)
    }
}

/// The certificate of one host as stored.
#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    #[serde(flatten)]
    pub host: TlsHost,
    pub health: Health,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertInfo>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_left: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl HostStatus {
    /// `expires 2026-12-10T12:00:00Z, 4 days left`, the words `status`,
    /// `tls status` and the certificate-expiry runbook all use; `None`
    /// without a readable certificate.
    pub fn expiry(&self) -> Option<String> {
        let (days, expires) = (self.days_left?, self.expires.as_ref()?);
        Some(format!("expires {expires}, {days} days left"))
    }
}

/// Whole days from `now` until `not_after` (Unix seconds), rounded down:
/// a certificate 4 days and 23 hours from expiry has 4 days left, one
/// that expired an hour ago -1.
pub fn days_left(not_after: i64, now: i64) -> i64 {
    (not_after - now).div_euclid(86_400)
}

/// The renewal window and alert threshold, in days.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub renewal_window_days: u32,
    pub alert_days: u32,
}

impl Thresholds {
    pub fn of(env: &Environment) -> Thresholds {
        Thresholds {
            renewal_window_days: env.base.tls.renewal_window_days,
            alert_days: env.base.tls.expiry_alert_days,
        }
    }
}

/// Reads and judges every host's certificate at time `now` (Unix seconds).
/// Stores the certificate and key of `host` as one unit (one version of
/// its secret), then reads both back: another run writing the same secret
/// at the same time cannot leave a certificate beside a key not its own
/// unnoticed.
pub fn store_pair(
    store: &dyn SecretStore,
    host: &TlsHost,
    chain: &str,
    key: &Secret,
) -> anyhow::Result<()> {
    let keys = std::collections::BTreeMap::from([
        (CERT_KEY.to_string(), Secret::new(chain.to_string())),
        (KEY_KEY.to_string(), key.clone()),
    ]);
    store.write_keys(&host.secret, &keys)?;
    let cert = store.read(&host.secret, CERT_KEY)?;
    let read_key = store.read(&host.secret, KEY_KEY)?;
    let (Some(cert), Some(read_key)) = (cert, read_key) else {
        anyhow::bail!(
            "{} does not read back with {CERT_KEY} and {KEY_KEY}",
            host.secret
        );
    };
    let (_, spki) = cert::inspect(cert.expose())
        .map_err(|e| anyhow::anyhow!("{} {CERT_KEY} read back: {e}", host.secret))?;
    if cert.expose() != chain || cert::key_matches(read_key.expose(), &spki) != Ok(true) {
        anyhow::bail!(
            "{} was changed by another run while this one stored it: {KEY_KEY} read back is not \
             the key of the {CERT_KEY} written; see `kisumctl tls status`",
            host.secret
        );
    }
    Ok(())
}

pub fn status(
    hosts: &[TlsHost],
    store: &dyn SecretStore,
    thresholds: Thresholds,
    now: i64,
) -> Result<Vec<HostStatus>, StoreError> {
    hosts
        .iter()
        .map(|host| {
            let cert = store.read(&host.secret, CERT_KEY)?;
            let key = store.read(&host.secret, KEY_KEY)?;
            Ok(judge(
                host,
                cert.as_ref().map(|c| c.expose()),
                key.as_ref().map(|k| k.expose()),
                thresholds,
                now,
            ))
        })
        .collect()
}

fn judge(
    host: &TlsHost,
    cert: Option<&str>,
    key: Option<&str>,
    thresholds: Thresholds,
    now: i64,
) -> HostStatus {
    let mut status = HostStatus {
        host: host.clone(),
        health: Health::Missing,
        certificate: None,
        expires: None,
        days_left: None,
        problem: None,
    };
    let (Some(cert), Some(key)) = (cert, key) else {
        let missing = if cert.is_none() { CERT_KEY } else { KEY_KEY };
        status.problem = Some(format!("no {missing} in secret {}", host.secret));
        return status;
    };
    let (info, spki) = match cert::inspect(cert) {
        Ok(read) => read,
        Err(problem) => {
            status.health = Health::Invalid;
            status.problem = Some(problem);
            return status;
        }
    };
    let left = info.not_after - now;
    status.days_left = Some(days_left(info.not_after, now));
    status.expires = jiff::Timestamp::from_second(info.not_after)
        .ok()
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    let key_ok = cert::key_matches(key, &spki);
    status.health = if !cert::covers(&info, &host.host) {
        status.problem = Some(format!(
            "issued for {}, not {}",
            info.names.join(", "),
            host.host
        ));
        Health::Invalid
    } else if key_ok != Ok(true) {
        status.problem = Some(match key_ok {
            Err(problem) => format!("{KEY_KEY}: {problem}"),
            _ => format!("{KEY_KEY} is not the key of {CERT_KEY}"),
        });
        Health::Invalid
    } else if left <= 0 {
        Health::Expired
    } else if left < i64::from(thresholds.alert_days) * 86_400 {
        Health::Alert
    } else if left < i64::from(thresholds.renewal_window_days) * 86_400 {
        Health::RenewDue
    } else {
        Health::Ok
    };
    status.certificate = Some(info);
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_left_are_whole_days_rounded_down() {
        let now = 1_800_000_000;
        assert_eq!(days_left(now + 5 * 86_400, now), 5);
        assert_eq!(days_left(now + 5 * 86_400 - 1, now), 4);
        assert_eq!(days_left(now + 86_399, now), 0);
        assert_eq!(days_left(now - 1, now), -1);
        assert_eq!(days_left(now - 86_400, now), -1);
        assert_eq!(days_left(now - 86_401, now), -2);
    }
    use crate::secrets::LocalFiles;

    fn signed(host: &str, days: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![host.to_string()]).unwrap();
        let now = std::time::SystemTime::now();
        params.not_before = now.into();
        params.not_after = (now + std::time::Duration::from_secs(days as u64 * 86_400 + 60)).into();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn health_follows_the_window_and_the_alert_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFiles::new(dir.path().join("secrets"));
        let host = |id: &str| TlsHost {
            id: id.into(),
            host: format!("{id}.kisum.io"),
            zone: "kisum-io".into(),
            secret: format!("tls-{id}"),
        };
        let hosts = ["ok", "due", "alert", "wrong", "none"].map(host);
        let put = |id: &str, (cert, key): (String, String)| {
            store
                .write(&format!("tls-{id}"), CERT_KEY, &Secret::new(cert))
                .unwrap();
            store
                .write(&format!("tls-{id}"), KEY_KEY, &Secret::new(key))
                .unwrap();
        };
        put("ok", signed("ok.kisum.io", 60));
        put("due", signed("due.kisum.io", 20));
        put("alert", signed("alert.kisum.io", 5));
        put("wrong", signed("other.kisum.io", 60));
        let thresholds = Thresholds {
            renewal_window_days: 30,
            alert_days: 14,
        };
        let now = jiff::Timestamp::now().as_second();
        let found: Vec<Health> = status(&hosts, &store, thresholds, now)
            .unwrap()
            .iter()
            .map(|s| s.health)
            .collect();
        assert_eq!(
            found,
            [
                Health::Ok,
                Health::RenewDue,
                Health::Alert,
                Health::Invalid,
                Health::Missing
            ]
        );
        let later = now + 61 * 86_400;
        let expired = status(&hosts[..1], &store, thresholds, later).unwrap();
        assert_eq!(expired[0].health, Health::Expired);
    }
}
