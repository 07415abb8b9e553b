//! Integration tests: the real `kisumctl` binary against the shipped
//! matrix, copies of it, and the real peers (kubernetes-validate, checkov).
//! One test binary for the whole crate keeps link time down.

#[path = "cli/backup.rs"]
mod backup;
#[path = "cli/common.rs"]
mod common;
#[path = "cli/converge.rs"]
mod converge;
#[path = "cli/corpus.rs"]
mod corpus;
#[path = "cli/credential_rotation.rs"]
mod credential_rotation;
#[path = "cli/db.rs"]
mod db;
#[path = "cli/deploy_k8s.rs"]
mod deploy_k8s;
#[path = "cli/deploy_local.rs"]
mod deploy_local;
#[path = "cli/dns.rs"]
mod dns;
#[path = "cli/docs.rs"]
mod docs;
#[path = "cli/help.rs"]
mod help;
#[path = "cli/images.rs"]
mod images;
#[path = "cli/journal.rs"]
mod journal;
#[path = "cli/local_commands.rs"]
mod local_commands;
#[path = "cli/manifests.rs"]
mod manifests;
#[path = "cli/observability.rs"]
mod observability;
#[path = "cli/pebble.rs"]
mod pebble;
/// The real platform in-process (Auth, Core, Admin, module backends), as
/// the services' own tests start it: used by the smoke and runbook tests.
#[path = "../services/module/tests/platform/mod.rs"]
mod platform;
#[path = "cli/proxy.rs"]
mod proxy;
#[path = "cli/restore_engines.rs"]
mod restore_engines;
#[path = "cli/rotate.rs"]
mod rotate;
#[path = "cli/runbook.rs"]
mod runbook;
#[path = "cli/secrets.rs"]
mod secrets;
#[path = "../services/admin/tests/services/mod.rs"]
mod services;
#[path = "cli/site.rs"]
mod site;
#[path = "cli/smoke.rs"]
mod smoke;
#[path = "cli/status_k8s.rs"]
mod status_k8s;
#[path = "cli/tls.rs"]
mod tls;
