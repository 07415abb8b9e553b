//! `kisumctl access invalidate ENV`: drops Auth's cached access of a
//! company or a user, the fix the stale-access runbooks name.

use super::output::outln;
use std::path::Path;

use uuid::Uuid;

use super::{Exit, refuse};
use crate::local::checks::internal_headers;
use crate::local::probe::without_url;
use crate::matrix::Environment;

/// Access contexts as Auth caches them.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: AccessCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AccessCommand {
    Invalidate(InvalidateArgs),
}

/// Makes Auth recompute the access of a company (its entitlement version
/// is read from Core again) or of a user on their next request, through
/// Auth's `POST /internal/invalidate` with kisumctl's internal credential.
/// Exit 0 when Auth confirmed, 1 when Auth knows no such company or user,
/// 3 when it could not be reached or refused.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("whose").required(true).args(["company", "user"])))]
struct InvalidateArgs {
    /// Environment whose Auth to tell.
    env: String,

    /// The company whose access to recompute.
    #[arg(
        long,
        value_name = "ID",
        value_parser = super::uuid_flag("--company")
    )]
    company: Option<Uuid>,

    /// The user whose access to recompute.
    #[arg(long, value_name = "ID", value_parser = super::uuid_flag("--user"))]
    user: Option<Uuid>,
}

pub fn run(dir: &Path, args: Args) -> anyhow::Result<Exit> {
    let AccessCommand::Invalidate(args) = args.command;
    let name = args.env.clone();
    super::with_environment(dir, &name, super::OutputFormat::Text, |_, env| {
        invalidate(dir, env, &args)
    })
}

fn invalidate(dir: &Path, env: &Environment, args: &InvalidateArgs) -> anyhow::Result<Exit> {
    let format = super::OutputFormat::Text;
    let state_dir = crate::matrix::resolve_path(dir, &env.file.state_dir);
    let endpoints = match crate::ops::runbook::target::endpoints(dir, env, &state_dir) {
        Ok(endpoints) => endpoints,
        Err(error) => return Ok(refuse(format, &error.to_string(), Exit::UnusableInput)),
    };
    let store = match crate::secrets::for_environment(dir, env) {
        Ok(store) => store,
        Err(error) => return Ok(refuse(format, &error.to_string(), Exit::OperationFailed)),
    };
    let Some(credential) = store.read("internal-credential-kisumctl", "token")? else {
        let message = format!(
            "{} holds no internal-credential-kisumctl/token: kisumctl cannot reach Auth's internal routes",
            store.describe()
        );
        return Ok(refuse(format, &message, Exit::OperationFailed));
    };
    let Some(auth) = endpoints.internal.get("auth") else {
        return Ok(refuse(
            format,
            "no internal URL for auth",
            Exit::UnusableInput,
        ));
    };
    let (payload, whose) = match (args.company, args.user) {
        (Some(company), _) => (
            serde_json::json!({ "company": company }),
            format!("company {company}"),
        ),
        (None, Some(user)) => (serde_json::json!({ "user": user }), format!("user {user}")),
        (None, None) => unreachable!("clap requires one"),
    };
    let url = format!("{auth}/internal/invalidate");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(10))
            .build()?;
        let response = client
            .post(&url)
            .headers(internal_headers(&credential))
            .json(&payload)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("POST {url}: {}", without_url(&e)))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        anyhow::Ok((status, body))
    });
    match answer {
        Ok((status, body)) if status.is_success() => {
            let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            match body.get("access_version") {
                Some(serde_json::Value::Null) => {
                    let message = format!("Auth knows no {whose}: nothing to recompute");
                    Ok(refuse(format, &message, Exit::CheckFailed))
                }
                Some(version) => {
                    outln!(
                        "Auth recomputes the access of {whose} on the next request (access \
                         version now {version})"
                    );
                    Ok(Exit::Clean)
                }
                None => {
                    outln!("Auth recomputes the access of {whose} on the next request");
                    Ok(Exit::Clean)
                }
            }
        }
        Ok((status, body)) => {
            let body: String = body.chars().take(300).collect();
            let message = format!("POST {url} answered {status}: {body}");
            Ok(refuse(format, &message, Exit::OperationFailed))
        }
        Err(error) => Ok(refuse(format, &format!("{error:#}"), Exit::OperationFailed)),
    }
}
