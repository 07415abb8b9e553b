//! The environment lock: a `coordination.k8s.io/v1` Lease named
//! `kisumctl-deploy` in the environment's namespace, so that two deploys
//! (or a deploy and a rollback) never interleave, from any machine.
//!
//! Taking it creates the Lease, or replaces one that is free or stale
//! (not renewed within its duration) under the resourceVersion read, so
//! that of two takers exactly one wins. The holder renews it while it
//! works and frees it at the end. A stale holder is reported, with its
//! identity and last renewal, when the lock is taken over.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use serde::Serialize;

use super::api::{ApiError, Namespace};

pub const LEASE_NAME: &str = "kisumctl-deploy";

/// Who holds (or held) the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub identity: String,
    /// RFC 3339.
    pub acquired: Option<String>,
    pub renewed: Option<String>,
    pub duration_seconds: i32,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (since {}, last renewed {})",
            self.identity,
            self.acquired.as_deref().unwrap_or("an unknown time"),
            self.renewed.as_deref().unwrap_or("never")
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "environment lock Lease/{LEASE_NAME} in namespace {namespace} is held by {holder}: another deploy or rollback is running; wait for it, or, if it died, for the lease to go stale ({} s after its last renewal)",
        holder.duration_seconds
    )]
    Held { namespace: String, holder: Holder },
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// The lock, held until [`Lock::release`] (or until it goes stale, when
/// this process dies).
pub struct Lock {
    api: Api<Lease>,
    identity: String,
    renewal: tokio::task::JoinHandle<()>,
}

/// `user@host pid N`: enough to find who holds the lock.
pub fn identity() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{user}@{host} pid {}", std::process::id())
}

fn holder_of(lease: &Lease) -> Option<Holder> {
    let spec = lease.spec.as_ref()?;
    let identity = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
    Some(Holder {
        identity,
        acquired: spec.acquire_time.as_ref().map(|t| t.0.to_string()),
        renewed: spec.renew_time.as_ref().map(|t| t.0.to_string()),
        duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
    })
}

fn is_stale(lease: &Lease, now: Timestamp) -> bool {
    let Some(spec) = lease.spec.as_ref() else {
        return true;
    };
    let last = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    match last {
        None => true,
        Some(last) => now.as_second() - last.as_second() > duration,
    }
}

fn lease(namespace: &str, identity: &str, duration: Duration, transitions: i32) -> Lease {
    let now = MicroTime(Timestamp::now());
    Lease {
        metadata: ObjectMeta {
            name: Some(LEASE_NAME.into()),
            namespace: Some(namespace.into()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_string(),
                    super::FIELD_MANAGER.to_string(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(identity.into()),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_duration_seconds: Some(i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }),
    }
}

/// Takes the lock for `identity`. `Ok((lock, Some(stale)))` when a stale
/// holder's lock was taken over.
pub async fn acquire(
    namespace: &Namespace,
    identity: &str,
    duration: Duration,
) -> Result<(Lock, Option<Holder>), LockError> {
    let api: Api<Lease> = Api::namespaced(namespace.client.clone(), &namespace.name);
    let reference = format!("Lease/{LEASE_NAME}");
    let existing = api
        .get_opt(LEASE_NAME)
        .await
        .map_err(|e| ApiError::from_kube("reading", &reference, e))?;
    let (written, previous) = match existing {
        None => {
            let fresh = lease(&namespace.name, identity, duration, 0);
            let created = api.create(&PostParams::default(), &fresh).await;
            (
                created.map_err(|e| ApiError::from_kube("creating", &reference, e)),
                None,
            )
        }
        Some(current) => {
            let previous = holder_of(&current);
            if previous.is_some() && !is_stale(&current, Timestamp::now()) {
                return Err(held(namespace, &current));
            }
            let transitions = current
                .spec
                .as_ref()
                .and_then(|s| s.lease_transitions)
                .unwrap_or(0);
            let mut taken = lease(&namespace.name, identity, duration, transitions + 1);
            taken.metadata.resource_version = current.metadata.resource_version.clone();
            let replaced = api
                .replace(LEASE_NAME, &PostParams::default(), &taken)
                .await;
            (
                replaced.map_err(|e| ApiError::from_kube("taking over", &reference, e)),
                previous,
            )
        }
    };
    match written {
        Ok(_) => {}
        // Another taker wrote first: it holds the lock now.
        Err(error) if error.is_conflict() => {
            let winner = api
                .get(LEASE_NAME)
                .await
                .map_err(|e| ApiError::from_kube("reading", &reference, e))?;
            return Err(held(namespace, &winner));
        }
        Err(error) => return Err(error.into()),
    }
    let stale = previous;
    let renewal = tokio::spawn(renew(api.clone(), identity.to_string(), duration));
    Ok((
        Lock {
            api,
            identity: identity.to_string(),
            renewal,
        },
        stale,
    ))
}

fn held(namespace: &Namespace, lease: &Lease) -> LockError {
    LockError::Held {
        namespace: namespace.name.clone(),
        holder: holder_of(lease).unwrap_or(Holder {
            identity: "an unknown holder".into(),
            acquired: None,
            renewed: None,
            duration_seconds: 0,
        }),
    }
}

/// Renews the lease every third of its duration while this holder has it.
async fn renew(api: Api<Lease>, identity: String, duration: Duration) {
    let every = (duration / 3).max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        let Ok(mut current) = api.get(LEASE_NAME).await else {
            continue;
        };
        let ours = current
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(identity.as_str());
        if !ours {
            return;
        }
        if let Some(spec) = current.spec.as_mut() {
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        }
        let _ = api
            .replace(LEASE_NAME, &PostParams::default(), &current)
            .await;
    }
}

impl Lock {
    /// Frees the lock (clears the holder), if this process still holds it.
    pub async fn release(self) -> Result<(), ApiError> {
        self.renewal.abort();
        let reference = format!("Lease/{LEASE_NAME}");
        let mut current = self
            .api
            .get(LEASE_NAME)
            .await
            .map_err(|e| ApiError::from_kube("reading", &reference, e))?;
        let spec = current.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(LEASE_NAME, &PostParams::default(), &current)
            .await
            .map_err(|e| ApiError::from_kube("releasing", &reference, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_not_renewed_within_its_duration_is_stale() {
        let mut held = lease("ns", "someone", Duration::from_secs(30), 0);
        let renewed = held.spec.as_ref().unwrap().renew_time.clone().unwrap().0;
        let later = |s: i64| {
            renewed
                .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(s))
                .unwrap()
        };
        assert!(!is_stale(&held, later(10)));
        assert!(is_stale(&held, later(31)));
        held.spec.as_mut().unwrap().renew_time = None;
        held.spec.as_mut().unwrap().acquire_time = None;
        assert!(is_stale(&held, later(0)));
        assert_eq!(holder_of(&held).unwrap().identity, "someone");
    }
}
