//! `bench-verify 127.0.0.1:PORT`: the irreducible work of an authenticated
//! request, and nothing more. Every request to any path:
//!
//! 1. takes the bearer token and checks that its header names the kid
//!    loaded at start (RS256 only);
//! 2. verifies it once with jsonwebtoken: RS256 signature, strict `iss`
//!    and `aud`, `exp` and `nbf` (60 s of clock skew, as the services);
//! 3. does one Redis GET of a fixed key (set once at start);
//!
//! and answers 200 `ok` (401 for a bad token, 503 when Redis fails).
//!
//! Configuration, read once at start (`<NAME>_FILE` works for each):
//!
//! | variable | meaning |
//! |---|---|
//! | `AUTH_JWKS_URL` | Auth's JWKS; fetched once, the `DecodingKey` built once |
//! | `BENCH_KID` | the kid to accept (default: the JWKS's only key) |
//! | `JWT_ISSUER`, `JWT_AUDIENCE` | checked strictly |
//! | `REDIS_URL` | the Redis to GET from |
//! | `BENCH_REDIS_KEY` | the fixed key (default `bench:verify`) |
//! | `BENCH_REDIS_VALUE_BYTES` | size of the value stored there (default 400, about an access context) |

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use kisum_common::config::Vars;
use kisum_common::jwt::Claims;
use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;

const USAGE: &str = "usage: bench-verify 127.0.0.1:PORT  (configured by AUTH_JWKS_URL, JWT_ISSUER, JWT_AUDIENCE, REDIS_URL)";
/// The services' `tokens.clock-skew-seconds`.
const CLOCK_SKEW_SECONDS: u64 = 60;

struct Verifier {
    kid: String,
    key: DecodingKey,
    validation: Validation,
    redis: ConnectionManager,
    redis_key: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench-verify: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let addr = kisum_bench::listen_arg(USAGE)?;
    let vars = Vars::from_env();
    let (kid, key) = load_key(
        &vars.required("AUTH_JWKS_URL")?,
        vars.optional("BENCH_KID")?,
    )
    .await?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[vars.required("JWT_ISSUER")?]);
    validation.set_audience(&[vars.required("JWT_AUDIENCE")?]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.leeway = CLOCK_SKEW_SECONDS;

    let redis_key = vars
        .optional("BENCH_REDIS_KEY")?
        .unwrap_or_else(|| "bench:verify".into());
    let value_bytes: usize = vars.parsed_or("BENCH_REDIS_VALUE_BYTES", 400)?;
    let client = redis::Client::open(vars.required("REDIS_URL")?)
        .map_err(|e| anyhow::anyhow!("REDIS_URL is not a valid Redis URL: {:?}", e.kind()))?;
    let mut redis = client
        .get_connection_manager()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to Redis: {:?}", e.kind()))?;
    let () = redis
        .set(&redis_key, "v".repeat(value_bytes))
        .await
        .map_err(|e| anyhow::anyhow!("Redis SET failed: {:?}", e.kind()))?;

    eprintln!("bench-verify: kid {kid}, Redis key {redis_key} ({value_bytes} bytes)");
    let verifier = Arc::new(Verifier {
        kid,
        key,
        validation,
        redis,
        redis_key,
    });
    let router = Router::new().fallback(verify).with_state(verifier);
    kisum_bench::serve(addr, router).await
}

/// Fetches the JWKS (a few tries while Auth starts) and builds the one
/// `DecodingKey`.
async fn load_key(url: &str, wanted: Option<String>) -> anyhow::Result<(String, DecodingKey)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut last = None;
    let mut set = None;
    for _ in 0..20 {
        match http
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
        {
            Ok(response) => {
                set = Some(
                    response
                        .json::<JwkSet>()
                        .await
                        .context("parsing the JWKS")?,
                );
                break;
            }
            Err(error) => last = Some(error.without_url()),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let set = match (set, last) {
        (Some(set), _) => set,
        (None, Some(error)) => return Err(error).context("fetching the JWKS"),
        (None, None) => anyhow::bail!("fetching the JWKS: no attempt made"),
    };
    let jwk = match wanted {
        Some(kid) => set
            .find(&kid)
            .with_context(|| format!("the JWKS has no key {kid}"))?,
        None => match set.keys.as_slice() {
            [only] => only,
            keys => anyhow::bail!(
                "the JWKS has {} keys; name the one to use in BENCH_KID",
                keys.len()
            ),
        },
    };
    let kid = jwk
        .common
        .key_id
        .clone()
        .context("the JWKS key has no kid")?;
    let key = DecodingKey::from_jwk(jwk).context("building the decoding key")?;
    Ok((kid, key))
}

async fn verify(
    State(verifier): State<Arc<Verifier>>,
    headers: HeaderMap,
) -> (StatusCode, &'static str) {
    let Some(token) = bearer(&headers) else {
        return (StatusCode::UNAUTHORIZED, "no bearer token");
    };
    let kid_ok = jsonwebtoken::decode_header(token)
        .is_ok_and(|h| h.alg == Algorithm::RS256 && h.kid.as_deref() == Some(&verifier.kid));
    if !kid_ok {
        return (StatusCode::UNAUTHORIZED, "wrong algorithm or kid");
    }
    if jsonwebtoken::decode::<Claims>(token, &verifier.key, &verifier.validation).is_err() {
        return (StatusCode::UNAUTHORIZED, "invalid token");
    }
    let mut redis = verifier.redis.clone();
    match redis.get::<_, Option<String>>(&verifier.redis_key).await {
        Ok(Some(_)) => (StatusCode::OK, "ok"),
        Ok(None) => (StatusCode::SERVICE_UNAVAILABLE, "fixed key missing"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "redis unavailable"),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
