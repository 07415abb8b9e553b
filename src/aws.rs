//! One line for an AWS SDK error, whichever service (Secrets Manager,
//! Route53, S3) answered it: the operation, the service's error code and
//! message, or `cannot reach <endpoint>: <cause>`. The SDK's own `Debug`
//! and `DisplayErrorContext` renderings (request ids, raw responses,
//! nested structs) never reach the user; nor does a request's content.

use std::error::Error;

use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

/// The AWS service a client talks to, and where.
#[derive(Debug, Clone)]
pub struct Service {
    /// "Secrets Manager", "Route53", "S3".
    pub name: &'static str,
    /// The endpoint the client was given, or the one the SDK's variables
    /// name, or `None` for AWS's own.
    pub endpoint: Option<String>,
    /// The attempts the client makes per request (its retry strategy),
    /// when known: a throttling error that comes out was the last of them.
    pub attempts: Option<u32>,
}

/// Attempts per request when `AWS_MAX_ATTEMPTS` is not set.
const DEFAULT_ATTEMPTS: u32 = 8;

/// The retry policy of every AWS client kisumctl makes (Route53, Secrets
/// Manager): the SDK's standard strategy (throttling and transient errors
/// retried with exponential backoff and jitter, from 200 ms up to 20 s
/// between attempts) for `AWS_MAX_ATTEMPTS` attempts per request, default
/// 8. Answers the attempts too, for [`Service::with_attempts`].
pub fn retry_policy() -> (u32, aws_config::retry::RetryConfig) {
    let attempts = std::env::var("AWS_MAX_ATTEMPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_ATTEMPTS);
    let retry = aws_config::retry::RetryConfig::standard()
        .with_max_attempts(attempts)
        .with_initial_backoff(std::time::Duration::from_millis(200))
        .with_max_backoff(std::time::Duration::from_secs(20));
    (attempts, retry)
}

/// The error codes AWS services answer when a caller goes too fast.
const THROTTLING: [&str; 5] = [
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "PriorRequestNotComplete",
    "SlowDown",
];

impl Service {
    /// `name` at `explicit`, else at the endpoint of `AWS_ENDPOINT_URL_<id>`
    /// or `AWS_ENDPOINT_URL` (as the SDK resolves it), else AWS's own.
    pub fn new(name: &'static str, env_id: &str, explicit: Option<&str>) -> Service {
        let variable = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let endpoint = explicit
            .map(str::to_string)
            .or_else(|| variable(&format!("AWS_ENDPOINT_URL_{env_id}")))
            .or_else(|| variable("AWS_ENDPOINT_URL"));
        Service {
            name,
            endpoint,
            attempts: None,
        }
    }

    /// The same, for a client that makes `attempts` attempts per request.
    pub fn with_attempts(mut self, attempts: u32) -> Service {
        self.attempts = Some(attempts);
        self
    }

    fn place(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => format!("AWS's {} endpoint", self.name),
        }
    }

    /// `error` of operation `what` (which names the secret, record or
    /// object) as one line.
    pub fn describe<E>(&self, what: &str, error: &SdkError<E, HttpResponse>) -> String
    where
        E: ProvideErrorMetadata + Error + 'static,
    {
        let status = || {
            error
                .raw_response()
                .map(|r| format!(" (HTTP {})", r.status().as_u16()))
                .unwrap_or_default()
        };
        match error {
            SdkError::ServiceError(_) => match (error.code(), error.message()) {
                (Some(code), Some(message)) => {
                    let retried = self.retried(code);
                    format!("{what}: {} answered {code}: {message}{retried}", self.name)
                }
                (Some(code), None) => {
                    format!(
                        "{what}: {} answered {code}{}",
                        self.name,
                        self.retried(code)
                    )
                }
                _ => format!(
                    "{what}: {} answered an error without a code{}",
                    self.name,
                    status()
                ),
            },
            SdkError::DispatchFailure(failure) if failure.is_timeout() => {
                format!("{what}: cannot reach {}: no answer in time", self.place())
            }
            SdkError::DispatchFailure(_) => format!(
                "{what}: cannot reach {}: {}",
                self.place(),
                innermost(error)
            ),
            SdkError::TimeoutError(_) => {
                format!("{what}: cannot reach {}: no answer in time", self.place())
            }
            SdkError::ResponseError(_) => format!(
                "{what}: {} sent an answer that is not a {} response{}",
                self.place(),
                self.name,
                status()
            ),
            _ => format!(
                "{what}: the request could not be made: {}",
                innermost(error)
            ),
        }
    }

    /// For a throttling code, that the client's retries ran out.
    fn retried(&self, code: &str) -> String {
        match self.attempts {
            Some(attempts) if THROTTLING.contains(&code) => format!(
                " (still throttled after {attempts} attempts with backoff; AWS_MAX_ATTEMPTS allows more)"
            ),
            _ => String::new(),
        }
    }

    /// [`Service::describe`] as an error.
    pub fn error<E>(&self, what: &str, error: SdkError<E, HttpResponse>) -> anyhow::Error
    where
        E: ProvideErrorMetadata + Error + 'static,
    {
        anyhow::anyhow!(self.describe(what, &error))
    }
}

/// The deepest cause of `error` (the operating system's "Connection
/// refused", a DNS failure): the one a person can act on.
fn innermost(error: &(dyn Error + 'static)) -> String {
    let mut last = error;
    while let Some(source) = last.source() {
        last = source;
    }
    last.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_is_one_line_naming_the_endpoint() {
        // A port nothing listens on: bound, then dropped.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let error = runtime.block_on(async {
            let config = aws_sdk_secretsmanager::config::Builder::new()
                .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
                .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                    "test", "test", None, None, "test",
                ))
                .endpoint_url(&endpoint)
                .retry_config(aws_sdk_secretsmanager::config::retry::RetryConfig::disabled())
                .build();
            aws_sdk_secretsmanager::Client::from_conf(config)
                .get_secret_value()
                .secret_id("x")
                .send()
                .await
                .unwrap_err()
        });
        let service = Service::new("Secrets Manager", "SECRETS_MANAGER", Some(&endpoint));
        let line = service.describe("reading x", &error);
        assert!(
            line.starts_with(&format!("reading x: cannot reach {endpoint}: ")),
            "{line}"
        );
        assert!(!line.contains('\n') && !line.contains("{ "), "{line}");
    }
}
