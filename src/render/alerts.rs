//! The alerts of plan 20.5 as one PrometheusRule (Prometheus Operator),
//! each with the threshold and `for` duration of the matrix's `alerts:`.
//!
//! The expressions read the services' own families (`kisum_*`, see
//! docs/observability.md), kube-state-metrics for rollouts and CronJobs,
//! and ingress-nginx for the certificates it serves.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{RenderError, meta, to_yaml};
use crate::matrix::Environment;
use crate::matrix::schema::{Alert, Severity};

/// Name of the PrometheusRule object.
pub const RULE_NAME: &str = "kisum-alerts";

/// What to read when an alert fires: a runbook of `runbooks/`, as a path
/// from the repository's root (the `runbook_url` annotation).
fn runbook(id: &str) -> &'static str {
    match id {
        "database-unavailable" => "runbooks/database-outage.md",
        "redis-unavailable" => "runbooks/redis-down.md",
        "elevated-login-failures" => "runbooks/login-failures-spike.md",
        "auth-denial-spike" => "runbooks/user-cannot-access-module.md",
        "slow-access-aggregation" => "runbooks/stale-access.md",
        "certificate-expiry" => "runbooks/certificate-expiry.md",
        "backup-failure" => "runbooks/backup-failure.md",
        // service-down, readiness-failing, elevated-5xx: the index names
        // the outage runbook of each service.
        _ => "runbooks/README.md",
    }
}

/// The PromQL expression of one alert of 20.5, `None` for an alert id the
/// renderer does not know (the `mandatory-alerts` rule names every id it
/// needs; an extra one of the matrix has no expression to render).
fn expression(env: &Environment, id: &str, threshold: f64) -> Option<String> {
    let ns = &env.file.namespace;
    let deployments = env.services.keys().copied().collect::<Vec<_>>().join("|");
    let workloads = format!(r#"namespace="{ns}", deployment=~"{deployments}""#);
    // The scraper's target labels: `namespace`, and `service` (the
    // Kubernetes Service, named after the service id).
    let own = format!(r#"namespace="{ns}""#);
    let ratio = |selected: &str, all: &str, window: &str| {
        format!(
            "sum by (service) (rate({selected}[{window}])) / sum by (service) (rate({all}[{window}])) > {threshold}"
        )
    };
    let denials =
        "access_denied|access_denied_by_module|access_denied_by_permission|admin_access_denied";
    let p99 = |family: &str| {
        format!(
            "histogram_quantile(0.99, sum by (service, le) (rate({family}_bucket{{{own}}}[10m]))) > {threshold}"
        )
    };
    let hosts: Vec<String> = env.public_hosts().into_iter().map(|(h, _)| h).collect();
    let expression = match id {
        "service-down" => {
            format!("kube_deployment_status_replicas_available{{{workloads}}} <= {threshold}")
        }
        "readiness-failing" => {
            format!("kube_deployment_status_replicas_unavailable{{{workloads}}} >= {threshold}")
        }
        "database-unavailable" => format!(
            r#"count by (service) (kisum_readiness_check{{{own}, check=~"database|auth_db"}} == 0) >= {threshold}"#
        ),
        "redis-unavailable" => format!(
            r#"count by (service) (kisum_readiness_check{{{own}, check="redis"}} == 0) >= {threshold}"#
        ),
        "elevated-5xx" => ratio(
            &format!(r#"kisum_http_requests_total{{{own}, status=~"5.."}}"#),
            &format!("kisum_http_requests_total{{{own}}}"),
            "5m",
        ),
        "elevated-login-failures" => ratio(
            &format!(r#"kisum_events_total{{{own}, event="login", outcome="failure"}}"#),
            &format!(r#"kisum_events_total{{{own}, event="login"}}"#),
            "10m",
        ),
        "auth-denial-spike" => format!(
            r#"sum(rate(kisum_events_total{{{own}, event=~"{denials}"}}[10m])) > {threshold} * sum(rate(kisum_events_total{{{own}, event=~"{denials}"}}[1d]))"#
        ),
        "slow-access-aggregation" => format!(
            "{} or {}",
            p99("kisum_auth_access_merge_seconds"),
            p99("kisum_entitlement_lookup_duration_seconds")
        ),
        "certificate-expiry" => format!(
            r#"(nginx_ingress_controller_ssl_expire_time_seconds{{host=~"{}"}} - time()) / 86400 < {threshold}"#,
            hosts.join("|").replace('.', "\\\\.")
        ),
        _ => return None,
    };
    Some(expression)
}

/// `KisumServiceDown` from `service-down`.
fn alert_name(id: &str) -> String {
    let mut name = String::from("Kisum");
    for part in id.split('-') {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            name.push(first.to_ascii_uppercase());
            name.extend(chars);
        }
    }
    name
}

/// The databases whose `backup-<db>` CronJob runs, grouped by the hours
/// since its last success that `KisumBackupFailure` allows: the RPO of a
/// database without point-in-time recovery (its backups are all it can be
/// restored to); for one with it, whose RPO the continuous log keeps, the
/// full backups' limit `alerts.backup-failure.threshold` (at least the
/// schedule's interval). Each group: (hours, databases, why).
fn backup_limits(env: &Environment, alert: &Alert) -> Vec<(f64, Vec<String>, &'static str)> {
    let mut groups: Vec<(f64, Vec<String>, &'static str)> = Vec::new();
    if !env.file.backups.enabled {
        return groups;
    }
    for (id, db, _) in env.deployed_databases() {
        let (hours, why) = if db.backup.point_in_time_recovery {
            let interval = crate::matrix::rules::cron_interval_minutes(&db.backup.schedule)
                .map_or(0.0, |minutes| f64::from(minutes) / 60.0);
            (
                alert.threshold.max(interval),
                "their full backups; point-in-time recovery keeps the RPO (matrix alerts.backup-failure)",
            )
        } else {
            (
                f64::from(db.rpo_minutes) / 60.0,
                "their RPO (matrix databases.<db>.rpo-minutes)",
            )
        };
        match groups.iter_mut().find(|(h, _, w)| *h == hours && *w == why) {
            Some((_, ids, _)) => ids.push(id.to_string()),
            None => groups.push((hours, vec![id.to_string()], why)),
        }
    }
    groups.sort_by(|a, b| a.0.total_cmp(&b.0));
    groups
}

/// One `KisumBackupFailure` rule per group of [`backup_limits`].
fn backup_rules(env: &Environment, alert: &Alert) -> Vec<Value> {
    let ns = &env.file.namespace;
    backup_limits(env, alert)
        .into_iter()
        .map(|(hours, ids, why)| {
            let cronjobs = ids
                .iter()
                .map(|id| format!("backup-{id}"))
                .collect::<Vec<_>>()
                .join("|");
            let expr = format!(
                r#"(time() - kube_cronjob_status_last_successful_time{{namespace="{ns}", cronjob=~"{cronjobs}"}}) / 3600 > {hours}"#
            );
            let description = format!(
                "{} ({}: threshold {hours} {}, {why})",
                alert.summary,
                ids.join(", "),
                alert.unit
            );
            let mut rule = alert_rule(env, "backup-failure", alert, expr, description);
            // Rules of one name need labels of their own (promtool).
            rule["labels"]["backup_limit_hours"] = json!(hours.to_string());
            rule
        })
        .collect()
}

/// The rules of one alert of the matrix: one, or for `backup-failure` one
/// per group of databases sharing a limit.
fn rules(env: &Environment, id: &str, alert: &Alert) -> Vec<Value> {
    if id == "backup-failure" {
        return backup_rules(env, alert);
    }
    let Some(expr) = expression(env, id, alert.threshold) else {
        return Vec::new();
    };
    let description = format!(
        "{} (threshold {} {}, matrix alerts.{id})",
        alert.summary, alert.threshold, alert.unit
    );
    vec![alert_rule(env, id, alert, expr, description)]
}

fn alert_rule(
    env: &Environment,
    id: &str,
    alert: &Alert,
    expr: String,
    description: String,
) -> Value {
    let severity = match alert.severity {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
    };
    let labels = BTreeMap::from([
        ("severity", severity.to_string()),
        ("environment", env.name.to_string()),
        ("receiver", env.file.monitoring.alert_receiver.clone()),
    ]);
    json!({
        "alert": alert_name(id),
        "expr": expr,
        "for": format!("{}m", alert.for_minutes),
        "labels": labels,
        "annotations": {
            "summary": alert.summary,
            "description": description,
            "runbook_url": runbook(id),
        },
    })
}

/// The PrometheusRule of an environment whose `monitoring.alerts` is on
/// and that runs on Kubernetes; `None` otherwise.
pub fn prometheus_rule(env: &Environment) -> Result<Option<String>, RenderError> {
    if env.name == "local" || !env.file.monitoring.alerts {
        return Ok(None);
    }
    let rules: Vec<Value> = env
        .base
        .alerts
        .iter()
        .flat_map(|(id, alert)| rules(env, id, alert))
        .collect();
    let object = json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": meta(env, RULE_NAME, "alerts"),
        "spec": {
            "groups": [ { "name": format!("kisum-{}", env.name), "rules": rules } ],
        },
    });
    to_yaml(&object, "prometheus rule").map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_names_are_camel_case_with_the_platform_prefix() {
        assert_eq!(alert_name("service-down"), "KisumServiceDown");
        assert_eq!(alert_name("elevated-5xx"), "KisumElevated5xx");
    }
}
