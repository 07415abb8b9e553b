//! Internal service credentials (plan section 16): every internal route
//! requires `x-kisum-caller` naming the calling service and
//! `x-kisum-credential` carrying that caller's credential, checked in
//! constant time against an explicit allowlist.

use std::collections::BTreeMap;
use std::sync::Arc;

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

/// Who may call this service's internal routes, and with what.
#[derive(Clone)]
pub struct Allowlist {
    callers: Arc<BTreeMap<String, String>>,
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
        Allowlist {
            callers: Arc::new(pairs.into_iter().collect()),
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
        bool::from(expected.as_bytes().ct_eq(presented)).then(|| Caller(caller.to_string()))
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

/// `INTERNAL_CALLER_PLATFORM_ADMIN` -> (`platform-admin`, its credential),
/// each at least [`MIN_CREDENTIAL_BYTES`] long.
pub fn caller_credentials(vars: &Vars) -> Result<BTreeMap<String, String>, ConfigError> {
    vars.with_prefix("INTERNAL_CALLER_")?
        .into_iter()
        .map(|(suffix, credential)| {
            let credential = long_enough(&format!("INTERNAL_CALLER_{suffix}"), credential)?;
            Ok((suffix.to_ascii_lowercase().replace('_', "-"), credential))
        })
        .collect()
}

/// This service's identity towards others.
#[derive(Clone)]
pub struct Credential {
    pub caller: String,
    secret: String,
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
        let secret = long_enough("INTERNAL_CREDENTIAL", vars.required("INTERNAL_CREDENTIAL")?)?;
        Ok(Credential::new(caller, secret))
    }

    pub fn new(caller: impl Into<String>, secret: impl Into<String>) -> Self {
        Credential {
            caller: caller.into(),
            secret: secret.into(),
        }
    }

    /// Adds the caller and credential headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if let (Ok(caller), Ok(secret)) = (
            HeaderValue::from_str(&self.caller),
            HeaderValue::from_str(&self.secret),
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
