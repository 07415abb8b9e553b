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
pub const CREDENTIAL_HEADER: &str = "x-kisum-credential";

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
    pub fn from_vars(vars: &Vars) -> Result<Allowlist, ConfigError> {
        let callers = vars
            .with_prefix("INTERNAL_CALLER_")?
            .into_iter()
            .map(|(suffix, credential)| (suffix.to_ascii_lowercase().replace('_', "-"), credential))
            .collect();
        Ok(Allowlist {
            callers: Arc::new(callers),
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

    /// The caller the headers prove, if any.
    pub fn check(&self, headers: &HeaderMap) -> Option<Caller> {
        let caller = headers.get(CALLER_HEADER)?.to_str().ok()?;
        let presented = headers.get(CREDENTIAL_HEADER)?.as_bytes();
        let expected = self.callers.get(caller)?;
        bool::from(expected.as_bytes().ct_eq(presented)).then(|| Caller(caller.to_string()))
    }
}

/// Middleware for internal routers: 401 without a valid credential.
pub async fn require(
    State(allowlist): State<Allowlist>,
    mut request: Request,
    next: Next,
) -> Response {
    match allowlist.check(request.headers()) {
        Some(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        None => {
            let caller = request
                .headers()
                .get(CALLER_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string();
            tracing::warn!(caller = %caller, path = %request.uri().path(), "internal call rejected");
            let body = serde_json::json!({
                "error": CREDENTIAL_REQUIRED,
                "message": "internal credential required",
            });
            (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
        }
    }
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

    #[test]
    fn only_an_allowed_caller_with_its_own_credential_passes() {
        let vars = Vars::from_pairs([
            ("INTERNAL_CALLER_AUTH", "a-secret"),
            ("INTERNAL_CALLER_PLATFORM_ADMIN", "b-secret"),
        ]);
        let allowlist = Allowlist::from_vars(&vars).unwrap();
        let mut headers = HeaderMap::new();
        Credential::new("platform-admin", "b-secret").apply(&mut headers);
        assert_eq!(
            allowlist.check(&headers),
            Some(Caller("platform-admin".into()))
        );
        Credential::new("platform-admin", "a-secret").apply(&mut headers);
        assert_eq!(allowlist.check(&headers), None);
        Credential::new("finance", "b-secret").apply(&mut headers);
        assert_eq!(allowlist.check(&headers), None);
        assert_eq!(allowlist.check(&HeaderMap::new()), None);
    }

    #[test]
    fn debug_output_names_callers_but_not_credentials() {
        let allowlist = Allowlist::from_pairs([("auth".to_string(), "s3cr3t".to_string())]);
        assert!(!format!("{allowlist:?}").contains("s3cr3t"));
        assert!(!format!("{:?}", Credential::new("auth", "s3cr3t")).contains("s3cr3t"));
    }
}
