//! `kisumctl inventory ENV`: the matrix as tables.

use super::output::outln;
use std::path::Path;

use super::output::table;
use super::{Exit, OutputFormat};
use crate::matrix::{Environment, Matrix};
use crate::ops::inventory;

/// Print the environment matrix, service inventory, network matrix and
/// secrets inventory of an environment (plan section 29).
///
/// Secrets are listed by name and location only; values are never read.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment whose services, network and secrets are listed.
    env: String,

    /// Only this table.
    #[arg(long, value_enum)]
    table: Option<Table>,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Table {
    Environments,
    Services,
    Network,
    Secrets,
}

pub fn run(dir: &Path, args: Args) -> anyhow::Result<Exit> {
    super::with_environment(dir, &args.env, args.output, |matrix, env| {
        print_inventory(matrix, env, &args)
    })
}

fn print_inventory(matrix: &Matrix, env: &Environment, args: &Args) -> anyhow::Result<Exit> {
    let inventory = inventory::build(matrix, env);
    let wanted = |t: Table| args.table.is_none_or(|only| only == t);

    if args.output == OutputFormat::Json {
        let mut value = serde_json::to_value(&inventory)?;
        if let (Some(only), Some(map)) = (args.table, value.as_object_mut()) {
            let key = match only {
                Table::Environments => "environments",
                Table::Services => "services",
                Table::Network => "network",
                Table::Secrets => "secrets",
            };
            map.retain(|k, _| k == key || k == "environment");
        }
        outln!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(Exit::Clean);
    }

    let mut sections = Vec::new();
    if wanted(Table::Environments) {
        let rows: Vec<Vec<String>> = inventory
            .environments
            .iter()
            .map(|e| {
                vec![
                    e.name.clone(),
                    e.tier.clone(),
                    e.namespace.clone(),
                    e.kubernetes_context.clone(),
                    e.secret_backend.clone(),
                    e.tls.clone(),
                    yes_no(e.dns_managed),
                    yes_no(e.alerts),
                    yes_no(e.backups),
                    e.auth_host.clone(),
                ]
            })
            .collect();
        let header = [
            "ENVIRONMENT",
            "TIER",
            "NAMESPACE",
            "CONTEXT",
            "SECRETS",
            "TLS",
            "DNS",
            "ALERTS",
            "BACKUPS",
            "AUTH HOST",
        ];
        sections.push(format!("environment matrix\n{}", table(&header, &rows)));
    }
    if wanted(Table::Services) {
        let rows: Vec<Vec<String>> = inventory
            .services
            .iter()
            .map(|s| {
                vec![
                    s.service.clone(),
                    s.exposure.clone(),
                    s.host.clone(),
                    format!("{}/{}", s.http_port, s.internal_port),
                    s.database.clone().unwrap_or_else(|| "-".into()),
                    s.redis.clone(),
                    format!("{}-{}", s.replicas, s.max_replicas),
                    s.image.clone(),
                ]
            })
            .collect();
        let header = [
            "SERVICE", "EXPOSURE", "HOST", "PORTS", "DATABASE", "REDIS", "REPLICAS", "IMAGE",
        ];
        sections.push(format!(
            "service inventory ({})\n{}",
            inventory.environment,
            table(&header, &rows)
        ));
    }
    if wanted(Table::Network) {
        let rows: Vec<Vec<String>> = inventory
            .network
            .iter()
            .map(|n| {
                vec![
                    n.from.clone(),
                    n.to.clone(),
                    n.kind.clone(),
                    n.ports.clone(),
                ]
            })
            .collect();
        let header = ["FROM", "TO", "KIND", "PORTS"];
        let note = "everything not listed is denied";
        sections.push(format!(
            "network matrix ({}; {note})\n{}",
            inventory.environment,
            table(&header, &rows)
        ));
    }
    if wanted(Table::Secrets) {
        let rows: Vec<Vec<String>> = inventory
            .secrets
            .iter()
            .map(|s| {
                vec![
                    s.secret.clone(),
                    s.category.clone(),
                    s.generated.clone(),
                    format!("{}d", s.rotation_days),
                    if s.read_by.is_empty() {
                        "kisumctl".into()
                    } else {
                        s.read_by.join(",")
                    },
                    s.location.clone(),
                ]
            })
            .collect();
        let header = [
            "SECRET", "CATEGORY", "SOURCE", "ROTATION", "READ BY", "LOCATION",
        ];
        sections.push(format!(
            "secrets inventory ({})\n{}",
            inventory.environment,
            table(&header, &rows)
        ));
    }
    for line in sections.join("\n").lines() {
        outln!("{}", crate::matrix::load::printable(line));
    }
    Ok(Exit::Clean)
}

fn yes_no(on: bool) -> String {
    if on { "on".into() } else { "off".into() }
}
