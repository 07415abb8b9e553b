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

    let [environments, services, network, secrets] = inventory.tables();
    let mut sections = Vec::new();
    let print = |t: &inventory::Table| table(&t.head, &t.rows);
    if wanted(Table::Environments) {
        sections.push(format!("environment matrix\n{}", print(&environments)));
    }
    if wanted(Table::Services) {
        sections.push(format!(
            "service inventory ({})\n{}",
            inventory.environment,
            print(&services)
        ));
    }
    if wanted(Table::Network) {
        let note = "everything not listed is denied";
        sections.push(format!(
            "network matrix ({}; {note})\n{}",
            inventory.environment,
            print(&network)
        ));
    }
    if wanted(Table::Secrets) {
        sections.push(format!(
            "secrets inventory ({})\n{}",
            inventory.environment,
            print(&secrets)
        ));
    }
    for line in sections.join("\n").lines() {
        outln!("{}", crate::matrix::load::printable(line));
    }
    Ok(Exit::Clean)
}
