//! `bench-setup`: prepares what `scripts/bench/services.sh` measures, then
//! exits. It starts nothing.
//!
//! ```text
//! bench-setup free-ports N   N free TCP ports of 127.0.0.1, one line
//! bench-setup keys FILE      a new kisum-key-set/v1 (one active RSA key), mode 0600
//! bench-setup seed           the company, role, membership and finance grant
//!                            (kisum-auth's directory), the Core subscription
//!                            including finance, a login, a few invoices;
//!                            prints COMPANY=, MEMBERSHIP=, TOKEN= lines
//! ```
//!
//! `seed` reads (each also as `<NAME>_FILE`):
//!
//! | variable | meaning |
//! |---|---|
//! | `AUTH_DB_URL` | auth_db, migrated (`kisum-auth migrate`) |
//! | `BENCH_USER` | the user id `kisum-auth seed-user` printed |
//! | `BENCH_EMAIL`, `BENCH_PASSWORD` | that user's login |
//! | `CORE_INTERNAL_URL` | Core's internal port |
//! | `BENCH_ADMIN_CREDENTIAL` | the credential Core admits for caller `platform-admin` |
//! | `AUTH_URL` | Auth's public port |
//! | `FINANCE_URL` | the finance backend's public port |
//! | `BENCH_COMPANY_SLUG` | default `bench-co` |
//! | `BENCH_INVOICES` | invoices created, default 20 |

use std::net::TcpListener;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use kisum_auth::{db, directory};
use kisum_common::config::Vars;
use kisum_common::internal::Credential;
use kisum_common::keys::KeySet;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

const USAGE: &str = "usage:
  bench-setup free-ports N
  bench-setup keys FILE
  bench-setup seed            (configured by environment variables; see the source)";

const ROLE: &str = "bench-finance";
const PERMISSIONS: [&str; 2] = ["finance.invoices.read", "finance.invoices.write"];
/// Core's seeded package with Basic and Finance.
const PACKAGE: &str = "basic-plus-finance";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let outcome = match args.as_slice() {
        ["free-ports", n] => free_ports(n),
        ["keys", file] => keys(Path::new(file)),
        ["seed"] => seed(&Vars::from_env()).await,
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench-setup: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Binds N listeners on 127.0.0.1:0 at once (so the ports differ), prints
/// their ports and lets them go.
fn free_ports(n: &str) -> anyhow::Result<()> {
    let n: usize = n.parse().context("N must be a number")?;
    anyhow::ensure!((1..=64).contains(&n), "N must be 1 to 64");
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let ports = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port().to_string()))
        .collect::<std::io::Result<Vec<_>>>()?;
    println!("{}", ports.join(" "));
    Ok(())
}

fn keys(file: &Path) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let set = KeySet::generate(now)?;
    set.save(file)?;
    println!("{}", set.active().kid);
    Ok(())
}

async fn seed(vars: &Vars) -> anyhow::Result<()> {
    let user: Uuid = vars.parsed("BENCH_USER")?;
    let email = vars.required("BENCH_EMAIL")?;
    let password = vars.required("BENCH_PASSWORD")?;
    let slug = vars
        .optional("BENCH_COMPANY_SLUG")?
        .unwrap_or_else(|| "bench-co".into());
    let invoices: u32 = vars.parsed_or("BENCH_INVOICES", 20)?;
    let core = base_url(vars, "CORE_INTERNAL_URL")?;
    let auth = base_url(vars, "AUTH_URL")?;
    let finance = base_url(vars, "FINANCE_URL")?;
    let admin = Credential::new("platform-admin", vars.required("BENCH_ADMIN_CREDENTIAL")?);

    // Directory rows, as operators' tooling writes them.
    let pool = db::connect(&vars.required("AUTH_DB_URL")?).await?;
    db::require_migrated(&pool).await?;
    let company = Uuid::new_v4();
    directory::upsert_company(&pool, company, &slug, "Bench Company").await?;
    directory::define_role(&pool, ROLE, &PERMISSIONS).await?;
    let membership = directory::add_membership(&pool, user, company, ROLE).await?;
    directory::grant_module(&pool, membership, "finance").await?;
    pool.close().await;

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;

    // The subscription, through Core's API as Platform Admin sets it.
    let mut headers = reqwest::header::HeaderMap::new();
    admin.apply(&mut headers);
    headers.insert("x-kisum-actor", "kisum-bench".parse()?);
    let response = http
        .put(format!("{core}/v1/companies/{company}/subscription"))
        .headers(headers)
        .json(&json!({ "package": PACKAGE, "status": "active" }))
        .send()
        .await?;
    expect(response, StatusCode::OK, "PUT subscription on Core").await?;

    // A login, as the frontend does it.
    let response = http
        .post(format!("{auth}/auth/login"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await?;
    let tokens = expect(response, StatusCode::OK, "POST /auth/login").await?;
    let token = tokens["access_token"]
        .as_str()
        .context("the login answer has no access_token")?
        .to_string();
    let org = company.to_string();

    let response = http
        .get(format!("{auth}/auth/me/access"))
        .bearer_auth(&token)
        .header("x-org", &org)
        .send()
        .await?;
    let context = expect(response, StatusCode::OK, "GET /auth/me/access").await?;
    let granted = context["modules"]["finance"]
        .as_array()
        .is_some_and(|held| held.iter().any(|p| p == "finance.invoices.read"));
    anyhow::ensure!(
        granted,
        "the access context holds no finance.invoices.read: {context}"
    );

    for n in 1..=invoices {
        let response = http
            .post(format!("{finance}/v1/invoices"))
            .bearer_auth(&token)
            .header("x-org", &org)
            .json(&json!({
                "number": format!("BENCH-{n:04}"),
                "customer": format!("Customer {n}"),
                "amount_cents": 10_000 + i64::from(n),
                "currency": "EUR",
            }))
            .send()
            .await?;
        expect(response, StatusCode::CREATED, "POST /v1/invoices").await?;
    }
    let response = http
        .get(format!("{finance}/v1/invoices"))
        .bearer_auth(&token)
        .header("x-org", &org)
        .send()
        .await?;
    let listed = expect(response, StatusCode::OK, "GET /v1/invoices").await?;
    let count = listed["items"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(
        count == invoices.min(50) as usize,
        "GET /v1/invoices listed {count} invoices, expected {}",
        invoices.min(50)
    );
    eprintln!(
        "bench-setup: company {company} ({slug}), membership {membership}, role {ROLE}, \
         package {PACKAGE}, {count} invoices listed"
    );
    println!("COMPANY={company}");
    println!("MEMBERSHIP={membership}");
    println!("TOKEN={token}");
    Ok(())
}

fn base_url(vars: &Vars, name: &str) -> anyhow::Result<String> {
    Ok(vars.required(name)?.trim_end_matches('/').to_string())
}

/// The JSON body of a response with the expected status, or an error with
/// the status and body.
async fn expect(
    response: reqwest::Response,
    status: StatusCode,
    what: &str,
) -> anyhow::Result<Value> {
    let got = response.status();
    let text = response.text().await.unwrap_or_default();
    anyhow::ensure!(
        got == status,
        "{what}: expected {status}, got {got}: {text}"
    );
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).with_context(|| format!("{what}: the answer is not JSON"))
}
