//! Internal service credentials (plan section 16): every internal route
//! requires `x-kisum-caller` naming the calling service and
//! `x-kisum-credential` carrying that caller's credential, checked in
//! constant time against an explicit allowlist.
//!
//! Credentials rotate without a restart: a credential given as a file
//! (`NAME_FILE`, how secrets reach a service) is read again whenever the
//! file changes, and a verifier also accepts the caller's previous
//! credential (`INTERNAL_CALLER_<SERVICE>_PREVIOUS`, or its `_FILE`, which
//! may be absent). `kisumctl secrets rotate` makes the new credential
//! current and keeps the old one as the previous one, so callers that
//! have not yet read the new one keep passing; once they all have, it
//! retires the previous one and the old credential is refused.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq as _;

use crate::config::{ConfigError, Vars};

pub const CALLER_HEADER: &str = "x-kisum-caller";
/// The `error` code of the 401 an internal route answers without a valid
/// credential, so a caller can tell it from its own 401s.
pub const CREDENTIAL_REQUIRED: &str = "internal_credential_required";
/// The code of every 400 of every service whose request is malformed (a
/// body, header, query or path value that does not parse or is out of
/// range). A more precise code exists only where a client acts on it
/// (Auth's `invalid_reset_token`).
pub const INVALID_REQUEST: &str = "invalid_request";
pub const CREDENTIAL_HEADER: &str = "x-kisum-credential";
/// The `error` code of the 403 an internal route answers a caller that
/// proved its credential but is not admitted to that route.
pub const CALLER_NOT_ALLOWED: &str = "forbidden";
/// Names the person (or tool) an internal write is made for, for audits.
pub const ACTOR_HEADER: &str = "x-kisum-actor";
/// The longest `x-kisum-actor` accepted; a longer one is a 400.
pub const MAX_ACTOR_LENGTH: usize = 256;
/// The shortest internal credential a service accepts (presented or
/// expected), in bytes: what `kisumctl deploy local` generates is 43.
pub const MIN_CREDENTIAL_BYTES: usize = 32;

/// The suffix of the variable holding a caller's previous credential.
pub const PREVIOUS_SUFFIX: &str = "_PREVIOUS";

/// One credential: a value fixed at start, or a file read again when it
/// changes (a new inode, size or modification time).
#[derive(Clone)]
pub struct Source {
    inner: Arc<SourceKind>,
}

enum SourceKind {
    Fixed(Option<String>),
    File {
        variable: String,
        path: PathBuf,
        read: Mutex<FileRead>,
    },
}

#[derive(Default)]
struct FileRead {
    stamp: Option<(u64, u64, i64, i64, u64)>,
    value: Option<String>,
}

impl Source {
    pub fn fixed(value: impl Into<String>) -> Source {
        Source {
            inner: Arc::new(SourceKind::Fixed(Some(value.into()))),
        }
    }

    /// `NAME`, else the file of `NAME_FILE`, read again when it changes.
    /// `required`: the value must be there now; otherwise an absent file
    /// (or an absent variable) is no credential.
    fn from_vars(vars: &Vars, name: &str, required: bool) -> Result<Option<Source>, ConfigError> {
        let Some(path) = vars.file_path(name)? else {
            let value = if required {
                Some(vars.required(name)?)
            } else {
                vars.optional(name)?
            };
            return value
                .map(|value| Ok(Source::fixed(long_enough(name, value)?)))
                .transpose();
        };
        let source = Source {
            inner: Arc::new(SourceKind::File {
                variable: name.to_string(),
                path: PathBuf::from(&path),
                read: Mutex::new(FileRead::default()),
            }),
        };
        match source.refresh() {
            Ok(Some(_)) => Ok(Some(source)),
            Ok(None) if !required => Ok(Some(source)),
            Ok(None) => Err(ConfigError::File {
                name: name.to_string(),
                path,
                reason: "no such file".into(),
            }),
            Err(reason) => Err(ConfigError::File {
                name: name.to_string(),
                path,
                reason,
            }),
        }
    }

    /// The credential now; `None` when its file is absent.
    pub fn value(&self) -> Option<String> {
        match &*self.inner {
            SourceKind::Fixed(value) => value.clone(),
            SourceKind::File { variable, path, .. } => match self.refresh() {
                Ok(value) => value,
                Err(reason) => {
                    // The last value read stays in use: a file being
                    // replaced must not lock callers out.
                    tracing::warn!(event = "credential_reload_failed", variable = %variable, path = %path.display(), "{reason}");
                    self.last()
                }
            },
        }
    }

    fn last(&self) -> Option<String> {
        match &*self.inner {
            SourceKind::Fixed(value) => value.clone(),
            SourceKind::File { read, .. } => {
                read.lock().unwrap_or_else(|e| e.into_inner()).value.clone()
            }
        }
    }

    /// Reads the file again when it changed; `Ok(None)` when it is absent,
    /// `Err` (naming no value) when it cannot be read or is too short.
    fn refresh(&self) -> Result<Option<String>, String> {
        use std::os::unix::fs::MetadataExt as _;
        let SourceKind::File {
            variable,
            path,
            read,
        } = &*self.inner
        else {
            return Ok(self.last());
        };
        let mut read = read.lock().unwrap_or_else(|e| e.into_inner());
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                read.stamp = None;
                read.value = None;
                return Ok(None);
            }
            Err(error) => return Err(error.to_string()),
        };
        let stamp = (
            meta.dev(),
            meta.ino(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.size(),
        );
        if read.stamp == Some(stamp) {
            return Ok(read.value.clone());
        }
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let value = text.trim_end_matches(['\n', '\r']).to_string();
        let value = long_enough(variable, value).map_err(|e| e.to_string())?;
        if read.stamp.is_some() {
            tracing::info!(event = "credential_reloaded", variable = %variable, "read a changed credential file");
        }
        read.stamp = Some(stamp);
        read.value = Some(value.clone());
        Ok(Some(value))
    }
}

/// What a verifier accepts from one caller: its current credential and,
/// during a rotation, its previous one.
#[derive(Clone)]
pub struct CallerCredentials {
    current: Source,
    previous: Option<Source>,
}

impl CallerCredentials {
    pub fn fixed(current: impl Into<String>) -> CallerCredentials {
        CallerCredentials {
            current: Source::fixed(current),
            previous: None,
        }
    }

    /// Whether `presented` is the current or the previous credential
    /// (each compared in constant time).
    fn accepts(&self, presented: &[u8]) -> bool {
        let matches = |source: &Source| {
            source
                .value()
                .is_some_and(|expected| bool::from(expected.as_bytes().ct_eq(presented)))
        };
        let current = matches(&self.current);
        let previous = self.previous.as_ref().is_some_and(matches);
        current | previous
    }
}

/// Who may call this service's internal routes, and with what.
#[derive(Clone)]
pub struct Allowlist {
    callers: Arc<BTreeMap<String, CallerCredentials>>,
}

impl std::fmt::Debug for Allowlist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.callers.keys()).finish()
    }
}

/// The caller an internal request proved to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

impl Allowlist {
    /// From `INTERNAL_CALLER_<SERVICE>` variables (or their `_FILE`s):
    /// `INTERNAL_CALLER_PLATFORM_ADMIN` admits the caller `platform-admin`.
    /// Each credential needs [`MIN_CREDENTIAL_BYTES`].
    pub fn from_vars(vars: &Vars) -> Result<Allowlist, ConfigError> {
        Ok(Allowlist {
            callers: Arc::new(caller_credentials(vars)?),
        })
    }

    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Allowlist {
        Allowlist::from_credentials(
            pairs
                .into_iter()
                .map(|(caller, credential)| (caller, CallerCredentials::fixed(credential))),
        )
    }

    pub fn from_credentials(
        callers: impl IntoIterator<Item = (String, CallerCredentials)>,
    ) -> Allowlist {
        Allowlist {
            callers: Arc::new(callers.into_iter().collect()),
        }
    }

    pub fn callers(&self) -> Vec<String> {
        self.callers.keys().cloned().collect()
    }

    /// Whether `caller` is one of the callers admitted.
    pub fn admits(&self, caller: &Caller) -> bool {
        self.callers.contains_key(&caller.0)
    }

    /// The caller the headers prove, if any.
    pub fn check(&self, headers: &HeaderMap) -> Option<Caller> {
        let caller = headers.get(CALLER_HEADER)?.to_str().ok()?;
        let presented = headers.get(CREDENTIAL_HEADER)?.as_bytes();
        let expected = self.callers.get(caller)?;
        expected
            .accepts(presented)
            .then(|| Caller(caller.to_string()))
    }
}

/// Middleware for internal routers: 401 without a valid credential, 400
/// for an invalid `x-kisum-actor`.
pub async fn require(State(allowlist): State<Allowlist>, request: Request, next: Next) -> Response {
    admit(&allowlist, |_| true, request, next).await
}

/// Lets the request through when it proves one of `known`'s callers and
/// `admitted` admits that caller to the route: 401
/// (`internal_credential_required`) without a valid credential, 403
/// (`forbidden`) for a proven caller the route does not admit, 400 for an
/// invalid `x-kisum-actor`. The proven [`Caller`] goes into the request's
/// extensions.
pub async fn admit(
    known: &Allowlist,
    admitted: impl Fn(&Caller) -> bool,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_string();
    let Some(caller) = known.check(request.headers()) else {
        let caller = request
            .headers()
            .get(CALLER_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        tracing::warn!(event = "internal_call_rejected", caller = %caller, path = %path, "internal call without a valid credential");
        let body = serde_json::json!({
            "error": CREDENTIAL_REQUIRED,
            "message": "internal credential required",
        });
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    };
    if !admitted(&caller) {
        return refuse_caller(
            &caller.0,
            &path,
            "this caller may not use this internal route",
        );
    }
    if let Err(message) = actor(request.headers()) {
        let body = serde_json::json!({ "error": INVALID_REQUEST, "message": message });
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The 403 of a caller that proved its credential but may not do this
/// (logged with the caller and path).
pub fn refuse_caller(caller: &str, path: &str, message: &str) -> Response {
    tracing::warn!(event = "internal_call_rejected", caller = %caller, path = %path, "{message}");
    let body = serde_json::json!({ "error": CALLER_NOT_ALLOWED, "message": message });
    (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}

/// The `x-kisum-actor` of a request: `None` when absent, an error message
/// when empty, longer than [`MAX_ACTOR_LENGTH`] or not visible ASCII.
pub fn actor(headers: &HeaderMap) -> Result<Option<&str>, String> {
    let Some(value) = headers.get(ACTOR_HEADER) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(actor)
            if !actor.is_empty()
                && actor.len() <= MAX_ACTOR_LENGTH
                && actor.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(actor))
        }
        _ => Err(format!(
            "{ACTOR_HEADER} must be 1 to {MAX_ACTOR_LENGTH} visible ASCII characters"
        )),
    }
}

/// An internal credential of at least [`MIN_CREDENTIAL_BYTES`], else an
/// error naming `variable` (never the value).
pub fn long_enough(variable: &str, credential: String) -> Result<String, ConfigError> {
    if credential.len() >= MIN_CREDENTIAL_BYTES {
        Ok(credential)
    } else {
        Err(ConfigError::Invalid {
            name: variable.to_string(),
            reason: format!(
                "an internal credential needs at least {MIN_CREDENTIAL_BYTES} bytes, this one has {}",
                credential.len()
            ),
        })
    }
}

/// `INTERNAL_CALLER_PLATFORM_ADMIN` -> (`platform-admin`, its credential,
/// and the previous one of `INTERNAL_CALLER_PLATFORM_ADMIN_PREVIOUS`),
/// each at least [`MIN_CREDENTIAL_BYTES`] long.
pub fn caller_credentials(vars: &Vars) -> Result<BTreeMap<String, CallerCredentials>, ConfigError> {
    let suffixes = vars.suffixes("INTERNAL_CALLER_");
    let mut callers = BTreeMap::new();
    for suffix in &suffixes {
        if let Some(caller) = suffix.strip_suffix(PREVIOUS_SUFFIX) {
            if !suffixes.iter().any(|s| s == caller) {
                return Err(ConfigError::Invalid {
                    name: format!("INTERNAL_CALLER_{suffix}"),
                    reason: format!("a previous credential without INTERNAL_CALLER_{caller}"),
                });
            }
            continue;
        }
        let name = format!("INTERNAL_CALLER_{suffix}");
        let current = Source::from_vars(vars, &name, true)?.expect("a required credential");
        let previous = Source::from_vars(vars, &format!("{name}{PREVIOUS_SUFFIX}"), false)?;
        callers.insert(
            suffix.to_ascii_lowercase().replace('_', "-"),
            CallerCredentials { current, previous },
        );
    }
    Ok(callers)
}

/// This service's identity towards others; given as a file, read again
/// when it changes, so a rotated credential is presented at once.
#[derive(Clone)]
pub struct Credential {
    pub caller: String,
    secret: Source,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("caller", &self.caller)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// `INTERNAL_CREDENTIAL`, presented as `caller`; at least
    /// [`MIN_CREDENTIAL_BYTES`] long.
    pub fn from_vars(vars: &Vars, caller: impl Into<String>) -> Result<Credential, ConfigError> {
        let secret =
            Source::from_vars(vars, "INTERNAL_CREDENTIAL", true)?.expect("a required credential");
        Ok(Credential {
            caller: caller.into(),
            secret,
        })
    }

    pub fn new(caller: impl Into<String>, secret: impl Into<String>) -> Self {
        Credential {
            caller: caller.into(),
            secret: Source::fixed(secret),
        }
    }

    /// Adds the caller and credential headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let Some(secret) = self.secret.value() else {
            return;
        };
        if let (Ok(caller), Ok(secret)) = (
            HeaderValue::from_str(&self.caller),
            HeaderValue::from_str(&secret),
        ) {
            headers.insert(CALLER_HEADER, caller);
            let mut secret = secret;
            secret.set_sensitive(true);
            headers.insert(CREDENTIAL_HEADER, secret);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a-secret-of-thirty-two-bytes-000";
    const B: &str = "b-secret-of-thirty-two-bytes-000";

    #[test]
    fn only_an_allowed_caller_with_its_own_credential_passes() {
        let vars = Vars::from_pairs([
            ("INTERNAL_CALLER_AUTH", A),
            ("INTERNAL_CALLER_PLATFORM_ADMIN", B),
        ]);
        let allowlist = Allowlist::from_vars(&vars).unwrap();
        let mut headers = HeaderMap::new();
        Credential::new("platform-admin", B).apply(&mut headers);
        assert_eq!(
            allowlist.check(&headers),
            Some(Caller("platform-admin".into()))
        );
        Credential::new("platform-admin", A).apply(&mut headers);
        assert_eq!(allowlist.check(&headers), None);
        Credential::new("finance", B).apply(&mut headers);
        assert_eq!(allowlist.check(&headers), None);
        assert_eq!(allowlist.check(&HeaderMap::new()), None);
    }

    #[test]
    fn credentials_shorter_than_the_minimum_are_refused_by_name() {
        let short = "x".repeat(MIN_CREDENTIAL_BYTES - 1);
        let vars = Vars::from_pairs([("INTERNAL_CALLER_AUTH", A), ("INTERNAL_CALLER_AI", &short)]);
        let error = Allowlist::from_vars(&vars).unwrap_err().to_string();
        assert!(
            error.starts_with("INTERNAL_CALLER_AI is invalid"),
            "{error}"
        );
        assert!(!error.contains(&short), "{error}");
        let vars = Vars::from_pairs([("INTERNAL_CREDENTIAL", short.as_str())]);
        let error = Credential::from_vars(&vars, "ai").unwrap_err().to_string();
        assert!(
            error.starts_with("INTERNAL_CREDENTIAL is invalid"),
            "{error}"
        );
        let vars = Vars::from_pairs([("INTERNAL_CREDENTIAL", A)]);
        assert_eq!(Credential::from_vars(&vars, "ai").unwrap().caller, "ai");
    }

    /// Replaces `path` atomically, as `kisumctl secrets rotate` and a
    /// Kubernetes secret volume do.
    fn replace(path: &std::path::Path, value: &str) {
        let aside = path.with_extension("new");
        std::fs::write(&aside, format!("{value}\n")).unwrap();
        std::fs::rename(&aside, path).unwrap();
    }

    #[test]
    fn a_rotated_credential_file_is_read_again_and_the_previous_one_passes_until_retired() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("token");
        let previous = dir.path().join("previous-token");
        replace(&current, A);
        let vars = Vars::from_pairs([
            ("INTERNAL_CALLER_AUTH_FILE", current.to_str().unwrap()),
            (
                "INTERNAL_CALLER_AUTH_PREVIOUS_FILE",
                previous.to_str().unwrap(),
            ),
            ("INTERNAL_CREDENTIAL_FILE", current.to_str().unwrap()),
        ]);
        let allowlist = Allowlist::from_vars(&vars).unwrap();
        assert_eq!(allowlist.callers(), ["auth"], "the previous is no caller");
        let caller = Credential::from_vars(&vars, "auth").unwrap();
        let passes = |secret: &str| {
            let mut headers = HeaderMap::new();
            Credential::new("auth", secret).apply(&mut headers);
            allowlist.check(&headers).is_some()
        };
        let presented = || {
            let mut headers = HeaderMap::new();
            caller.apply(&mut headers);
            headers[CREDENTIAL_HEADER].to_str().unwrap().to_string()
        };
        assert!(passes(A) && !passes(B));
        assert_eq!(presented(), A);

        // Rotation: the old value kept as the previous one, the new one current.
        replace(&previous, A);
        replace(&current, B);
        assert!(passes(A) && passes(B));
        assert_eq!(
            presented(),
            B,
            "the caller presents the new credential at once"
        );

        // Retired: the previous file is gone, the old value is refused.
        std::fs::remove_file(&previous).unwrap();
        assert!(!passes(A) && passes(B));

        // A credential file replaced by a too short one keeps the last value.
        replace(&current, "short");
        assert!(passes(B));
        assert_eq!(presented(), B);
    }

    #[test]
    fn a_previous_credential_needs_its_caller_and_a_missing_current_file_is_named() {
        let vars = Vars::from_pairs([("INTERNAL_CALLER_AUTH_PREVIOUS", A)]);
        let error = Allowlist::from_vars(&vars).unwrap_err().to_string();
        assert!(
            error.starts_with("INTERNAL_CALLER_AUTH_PREVIOUS is invalid"),
            "{error}"
        );
        let vars = Vars::from_pairs([("INTERNAL_CALLER_AUTH_FILE", "/nonexistent/kisum")]);
        let error = Allowlist::from_vars(&vars).unwrap_err().to_string();
        assert!(
            error.starts_with("INTERNAL_CALLER_AUTH_FILE=/nonexistent/kisum cannot be read"),
            "{error}"
        );
        let vars = Vars::from_pairs([
            ("INTERNAL_CALLER_AUTH", A),
            ("INTERNAL_CALLER_AUTH_PREVIOUS_FILE", "/nonexistent/kisum"),
        ]);
        let allowlist = Allowlist::from_vars(&vars).unwrap();
        let mut headers = HeaderMap::new();
        Credential::new("auth", A).apply(&mut headers);
        assert!(allowlist.check(&headers).is_some());
    }

    #[test]
    fn the_actor_is_bounded() {
        let mut headers = HeaderMap::new();
        assert_eq!(actor(&headers), Ok(None));
        let longest = "a".repeat(MAX_ACTOR_LENGTH);
        headers.insert(ACTOR_HEADER, HeaderValue::from_str(&longest).unwrap());
        assert_eq!(actor(&headers), Ok(Some(longest.as_str())));
        for bad in [
            "a".repeat(MAX_ACTOR_LENGTH + 1),
            String::new(),
            "has space".to_string(),
        ] {
            headers.insert(ACTOR_HEADER, HeaderValue::from_str(&bad).unwrap());
            assert!(actor(&headers).is_err(), "{}", bad.len());
        }
    }

    #[test]
    fn debug_output_names_callers_but_not_credentials() {
        let allowlist = Allowlist::from_pairs([("auth".to_string(), "s3cr3t".to_string())]);
        assert!(!format!("{allowlist:?}").contains("s3cr3t"));
        assert!(!format!("{:?}", Credential::new("auth", "s3cr3t")).contains("s3cr3t"));
    }
}
