//! `kisumctl render`: committed snapshots, determinism, schema validity
//! (kubernetes-validate --strict) and security posture (checkov).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{kisumctl, root, scratch_copy, stderr, stdout};

const ENVIRONMENTS: [&str; 4] = ["local", "dev", "staging", "production"];

/// A peer installed by `scripts/peers.sh`, or the path in `variable`.
fn peer(variable: &str, installed: &str) -> PathBuf {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".peers").join(installed));
    assert!(
        path.exists(),
        "{} is missing: run scripts/peers.sh (or set {variable})",
        path.display()
    );
    path
}

/// The Kubernetes version the matrix targets, e.g. `1.33`.
fn target_version() -> String {
    let text = std::fs::read_to_string(root().join("environments/base.yaml")).unwrap();
    let base: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    base["platform"]["kubernetes-version"]
        .as_str()
        .unwrap()
        .to_string()
}

fn render_into(dir: &Path, out: &Path) {
    let output = kisumctl(dir, &["render", "--out", out.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "render failed: {}",
        stderr(&output)
    );
}

/// Rendered object documents (not the kustomization) of one environment.
/// The files of built-in Kubernetes objects: not the kustomization, nor
/// the ExternalSecrets (a CRD of the External Secrets Operator, for which
/// kubernetes-validate has no schema and checkov no checks; see
/// `external_secrets_name_every_mounted_secret_of_aws_environments`), nor
/// the PrometheusRule (checked by promtool instead; see
/// `alert_rules_pass_promtool_with_every_alert_and_threshold_of_the_matrix`).
fn object_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().unwrap() != "kustomization.yaml")
        .filter(|path| path.file_name().unwrap() != "external-secrets.yaml")
        .filter(|path| path.file_name().unwrap() != "alerts.yaml")
        .collect();
    files.sort();
    files
}

fn count_objects(files: &[PathBuf]) -> usize {
    files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file).unwrap();
            text.lines()
                .filter(|line| line.starts_with("kind: "))
                .count()
        })
        .sum()
}

#[test]
fn committed_manifests_match_a_fresh_render() {
    let output = kisumctl(&root(), &["render", "--check"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "manifests/ is stale; run `kisumctl render`:\n{}",
        stdout(&output)
    );
}

#[test]
fn a_hand_edit_makes_check_fail_with_a_diff_until_rendered_again() {
    let copy = scratch_copy();
    let auth = copy.path().join("manifests/staging/auth.yaml");
    let text = std::fs::read_to_string(&auth).unwrap();
    std::fs::write(
        &auth,
        text.replace("imagePullPolicy: Always", "imagePullPolicy: Never"),
    )
    .unwrap();
    std::fs::write(
        copy.path().join("manifests/staging/stray.yaml"),
        "kind: Stray\n",
    )
    .unwrap();

    let check = kisumctl(copy.path(), &["render", "staging", "--check"]);
    assert_eq!(check.status.code(), Some(1));
    let diff = stdout(&check);
    assert!(diff.contains("-        imagePullPolicy: Never"), "{diff}");
    assert!(diff.contains("+        imagePullPolicy: Always"), "{diff}");
    assert!(diff.contains("-kind: Stray"), "{diff}");
    assert!(
        stderr(&check).contains("1 changed, 0 missing, 1 extra"),
        "{}",
        stderr(&check)
    );

    let fix = kisumctl(copy.path(), &["render", "staging"]);
    assert!(fix.status.success());
    assert!(!copy.path().join("manifests/staging/stray.yaml").exists());
    let again = kisumctl(copy.path(), &["render", "staging", "--check"]);
    assert_eq!(again.status.code(), Some(0), "{}", stdout(&again));
}

#[test]
fn rendering_twice_gives_identical_bytes() {
    let copy = scratch_copy();
    let (first, second) = (copy.path().join("first"), copy.path().join("second"));
    render_into(copy.path(), &first);
    render_into(copy.path(), &second);
    for env in ENVIRONMENTS {
        for file in object_files(&first.join(env)) {
            let name = file.file_name().unwrap();
            let other = second.join(env).join(name);
            assert_eq!(
                std::fs::read(&file).unwrap(),
                std::fs::read(&other).unwrap(),
                "{name:?}"
            );
        }
    }
}

#[test]
fn every_environment_passes_kubernetes_validate_strict() {
    let validator = peer(
        "KISUM_KUBERNETES_VALIDATE",
        "venv-kv/bin/kubernetes-validate",
    );
    let copy = scratch_copy();
    let out = copy.path().join("rendered");
    render_into(copy.path(), &out);
    // The version the matrix targets, and the newest the validator knows.
    for version in [format!("{}.0", target_version()), "1.37.0".to_string()] {
        for env in ENVIRONMENTS {
            let files = object_files(&out.join(env));
            let result = Command::new(&validator)
                .args(["--strict", "-k", &version])
                .args(&files)
                .output()
                .unwrap();
            let report = String::from_utf8_lossy(&result.stdout);
            assert!(
                result.status.success() && !report.contains("ERROR"),
                "{env} against {version}:\n{report}{}",
                String::from_utf8_lossy(&result.stderr)
            );
            let passed = report.matches(" passed for resource ").count();
            assert_eq!(
                passed,
                count_objects(&files),
                "{env}: every object validated\n{report}"
            );
        }
    }
}

#[test]
fn every_environment_passes_checkov_with_reasons_for_each_skip() {
    let checkov = peer("KISUM_CHECKOV", "venv-checkov/bin/checkov");
    let copy = scratch_copy();
    let out = copy.path().join("rendered");
    render_into(copy.path(), &out);
    let result = Command::new(&checkov)
        .args(["-d", out.to_str().unwrap(), "--framework", "kubernetes"])
        .args(["--skip-download", "--quiet", "-o", "json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap_or_else(|e| {
        panic!(
            "checkov printed no JSON ({e}): {}",
            String::from_utf8_lossy(&result.stderr)
        )
    });
    let summary = &report["summary"];
    let failed = &report["results"]["failed_checks"];
    assert_eq!(summary["failed"], 0, "checkov failures: {failed:#}");
    assert_eq!(summary["parsing_errors"], 0, "{summary}");
    let files: Vec<PathBuf> = ENVIRONMENTS
        .iter()
        .flat_map(|e| object_files(&out.join(e)))
        .collect();
    let scanned = summary["resource_count"].as_u64().unwrap() as usize;
    assert!(
        scanned >= count_objects(&files) - 4 * 3,
        "only {scanned} resources scanned"
    );
    assert!(result.status.success());
    for skipped in report["results"]["skipped_checks"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let reason = skipped["check_result"]["suppress_comment"]
            .as_str()
            .unwrap_or("");
        assert!(
            reason.len() > 20,
            "skip without a written reason: {skipped:#}"
        );
    }
}

#[test]
fn internal_routes_and_core_are_never_behind_an_ingress() {
    let copy = scratch_copy();
    let out = copy.path().join("rendered");
    render_into(copy.path(), &out);
    for env in ENVIRONMENTS {
        let core = std::fs::read_to_string(out.join(env).join("platform-core.yaml")).unwrap();
        assert!(
            !core.contains("kind: Ingress"),
            "{env}: Platform Core has an Ingress"
        );
        for file in object_files(&out.join(env)) {
            let text = std::fs::read_to_string(&file).unwrap();
            for ingress in text
                .split("---\n")
                .filter(|doc| doc.contains("kind: Ingress"))
            {
                assert!(
                    ingress.contains("name: http"),
                    "{file:?}: ingress not on the http port"
                );
                assert!(
                    !ingress.contains("name: internal"),
                    "{file:?}: ingress on internal port"
                );
                assert!(
                    ingress.contains("secretName: tls-"),
                    "{file:?}: ingress without TLS"
                );
            }
        }
    }
}

#[test]
fn render_refuses_a_matrix_with_an_inline_secret_and_writes_nothing() {
    let copy = scratch_copy();
    let local = copy.path().join("environments/local.yaml");
    let text = std::fs::read_to_string(&local).unwrap();
    let canary = "postgres://auth:CANARY-7f3a@127.0.0.1/auth_db";
    let edited = text.replace(
        "      LOG_LEVEL: debug",
        &format!("      LOG_LEVEL: debug\n      AUTH_DB_URL: {canary}"),
    );
    assert_ne!(edited, text);
    std::fs::write(&local, edited).unwrap();

    let out = copy.path().join("rendered");
    let output = kisumctl(
        copy.path(),
        &["render", "local", "--out", out.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("no-inline-secret"),
        "{}",
        stdout(&output)
    );
    assert!(
        !out.exists(),
        "render wrote files for a matrix that fails validation"
    );
    let printed = format!("{}{}", stdout(&output), stderr(&output));
    assert!(
        !printed.contains("CANARY-7f3a"),
        "the secret value was printed:\n{printed}"
    );
}

#[test]
fn no_rendered_object_carries_a_secret_value() {
    for env in ENVIRONMENTS {
        for file in object_files(&root().join("manifests").join(env)) {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(
                !text.contains("kind: Secret\n"),
                "{file:?} defines a Secret"
            );
            assert!(
                !text.contains("secretKeyRef"),
                "{file:?} passes a secret through env"
            );
            assert!(!text.contains("stringData"), "{file:?} holds secret data");
        }
    }
}

#[test]
fn external_secrets_name_every_mounted_secret_of_aws_environments() {
    for env in ENVIRONMENTS {
        let dir = root().join("manifests").join(env);
        let path = dir.join("external-secrets.yaml");
        if env == "local" {
            assert!(!path.exists(), "local keeps its secrets in files");
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let objects: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
        let objects: Vec<&serde_json::Value> = objects.iter().filter(|o| o.is_object()).collect();
        let named: std::collections::BTreeSet<String> = objects
            .iter()
            .map(|o| {
                assert_eq!(o["apiVersion"], "external-secrets.io/v1");
                assert_eq!(o["spec"]["secretStoreRef"]["kind"], "ClusterSecretStore");
                let name = o["metadata"]["name"].as_str().unwrap().to_string();
                assert_eq!(o["spec"]["target"]["name"], name.as_str());
                // The current value: the whole JSON object; a previous
                // credential: one key of the secret's previous stage.
                let (key, secret) = match o["spec"]["dataFrom"][0]["extract"]["key"].as_str() {
                    Some(key) => (key, name.as_str()),
                    None => (
                        o["spec"]["data"][0]["remoteRef"]["key"].as_str().unwrap(),
                        name.strip_suffix("-previous").unwrap(),
                    ),
                };
                assert_eq!(key, format!("kisum/{env}/{secret}"));
                name
            })
            .collect();
        let certificates: std::collections::BTreeMap<String, &serde_json::Value> = objects
            .iter()
            .filter(|o| o["spec"]["target"].get("template").is_some())
            .map(|o| (o["metadata"]["name"].as_str().unwrap().to_string(), *o))
            .collect();
        // Every Secret a Deployment mounts comes from one of them, and
        // every certificate an Ingress names from one that makes a TLS
        // Secret of the keys `kisumctl tls` stores.
        let mut ingresses = 0;
        for file in object_files(&dir) {
            let text = std::fs::read_to_string(&file).unwrap();
            let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
            for doc in docs.iter().filter(|d| d["kind"] == "Ingress") {
                ingresses += 1;
                let secret = doc["spec"]["tls"][0]["secretName"].as_str().unwrap();
                let external = certificates
                    .get(secret)
                    .unwrap_or_else(|| panic!("{env}: {secret} has no TLS ExternalSecret"));
                let template = &external["spec"]["target"]["template"];
                assert_eq!(template["type"], "kubernetes.io/tls", "{env}: {secret}");
                for key in ["tls.crt", "tls.key"] {
                    assert_eq!(
                        template["data"][key],
                        format!("{{{{ index . \"{key}\" }}}}"),
                        "{env}: {secret}"
                    );
                }
            }
            for doc in docs.iter().filter(|d| d["kind"] == "Deployment") {
                for volume in doc["spec"]["template"]["spec"]["volumes"]
                    .as_array()
                    .unwrap()
                {
                    if let Some(secret) = volume["secret"]["secretName"].as_str() {
                        assert!(
                            named.contains(secret),
                            "{env}: {secret} has no ExternalSecret"
                        );
                    }
                }
            }
        }
        assert!(ingresses > 0, "{env} has Ingresses");
        assert_eq!(
            certificates.len(),
            ingresses,
            "{env}: one certificate per Ingress"
        );
    }
}

/// The `name: value` pairs of a Deployment's container environment.
fn container_env(deployment: &serde_json::Value) -> BTreeMap<String, String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let name = v["name"].as_str().unwrap().to_string();
            (name, v["value"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn every_verifier_mounts_each_callers_previous_credential_in_aws_environments() {
    for env in ENVIRONMENTS {
        let dir = root().join("manifests").join(env);
        let mut callers = 0;
        let externals: Vec<serde_json::Value> = if env == "local" {
            Vec::new()
        } else {
            let text = std::fs::read_to_string(dir.join("external-secrets.yaml")).unwrap();
            serde_saphyr::from_multiple(&text).unwrap()
        };
        let external = |name: &str| {
            externals
                .iter()
                .find(|o| o["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("{env}: no ExternalSecret {name}"))
        };
        for file in object_files(&dir) {
            let text = std::fs::read_to_string(&file).unwrap();
            let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
            for deployment in docs.iter().filter(|d| d["kind"] == "Deployment") {
                let variables = container_env(deployment);
                let pod = &deployment["spec"]["template"]["spec"];
                for (name, current) in &variables {
                    let Some(caller) = name
                        .strip_prefix("INTERNAL_CALLER_")
                        .and_then(|n| n.strip_suffix("_FILE"))
                        .filter(|n| !n.ends_with("_PREVIOUS"))
                    else {
                        continue;
                    };
                    let previous =
                        variables.get(&format!("INTERNAL_CALLER_{caller}_PREVIOUS_FILE"));
                    if env == "local" {
                        // deploy local points it at the files' `.previous/`.
                        assert_eq!(previous, None, "{env}: {name}");
                        continue;
                    }
                    callers += 1;
                    let previous =
                        previous.unwrap_or_else(|| panic!("{env}: {name} has no previous file"));
                    assert_ne!(previous, current);
                    // /var/run/secrets/kisum/<secret>/<key>, both halves.
                    let (secret, key) = current
                        .strip_prefix("/var/run/secrets/kisum/")
                        .and_then(|p| p.split_once('/'))
                        .unwrap();
                    let previous_secret = format!("{secret}-previous");
                    assert_eq!(
                        previous,
                        &format!("/var/run/secrets/kisum/{previous_secret}/{key}")
                    );
                    // Mounted from an optional volume holding that key...
                    let volume = pod["volumes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|v| v["secret"]["secretName"] == previous_secret.as_str())
                        .unwrap_or_else(|| panic!("{env}: {previous_secret} is not mounted"));
                    assert_eq!(
                        volume["secret"]["optional"], true,
                        "{env}: {previous_secret}"
                    );
                    assert_eq!(volume["secret"]["items"][0]["key"], key);
                    let mounted = pod["containers"][0]["volumeMounts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|m| {
                            m["name"] == volume["name"]
                                && m["mountPath"]
                                    == format!("/var/run/secrets/kisum/{previous_secret}").as_str()
                        });
                    assert!(mounted, "{env}: {previous_secret} has no volume mount");
                    // ...which the operator fills from the previous stage
                    // of the same Secrets Manager secret.
                    let data = &external(&previous_secret)["spec"]["data"][0];
                    assert_eq!(data["secretKey"], key);
                    assert_eq!(data["remoteRef"]["version"], "AWSPREVIOUS");
                    assert_eq!(data["remoteRef"]["property"], key);
                    assert_eq!(
                        data["remoteRef"]["key"],
                        external(secret)["spec"]["dataFrom"][0]["extract"]["key"]
                    );
                }
                assert!(
                    !variables.contains_key("INTERNAL_CREDENTIAL_PREVIOUS_FILE"),
                    "{env}: a caller presents its current credential only"
                );
            }
        }
        if env != "local" {
            assert!(callers >= 10, "{env}: {callers} verified callers");
        }
    }
}

/// The rule groups of the PrometheusRule in `alerts.yaml` of `dir`, as
/// the rule file `promtool check rules` reads.
fn rule_groups(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("alerts.yaml")).unwrap();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule in alerts.yaml");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    serde_json::json!({ "groups": rule["spec"]["groups"] })
}

/// Runs `promtool check rules` on `groups`; its success and output.
fn promtool_check(groups: &serde_json::Value) -> (bool, String) {
    let promtool = std::env::var_os("KISUM_PROMTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/promtool"));
    assert!(
        promtool.exists(),
        "{} is missing: run scripts/peers.sh (Debian package `prometheus`), or set KISUM_PROMTOOL",
        promtool.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yaml");
    std::fs::write(&file, serde_saphyr::to_string(groups).unwrap()).unwrap();
    let result = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    (result.status.success(), report)
}

#[test]
fn alert_rules_pass_promtool_with_every_alert_and_threshold_of_the_matrix() {
    let text = std::fs::read_to_string(root().join("environments/base.yaml")).unwrap();
    let base: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let alerts = base["alerts"].as_object().unwrap();
    for env in ["staging", "production"] {
        let groups = rule_groups(&root().join("manifests").join(env));
        let (ok, report) = promtool_check(&groups);
        assert!(ok, "{env}: promtool check rules:\n{report}");
        // One rule per alert, but `backup-failure` one per backup limit.
        let limits: std::collections::BTreeSet<String> =
            backup_limits(&base).values().map(f64::to_string).collect();
        let expected = alerts.len() - 1 + limits.len();
        assert!(
            report.contains(&format!("SUCCESS: {expected} rules found")),
            "{env}: {report}"
        );
        let rules = groups["groups"][0]["rules"].as_array().unwrap();
        for (id, alert) in alerts.iter().filter(|(id, _)| *id != "backup-failure") {
            let name: String = id
                .split('-')
                .map(|part| part[..1].to_uppercase() + &part[1..])
                .collect();
            let rule = rules
                .iter()
                .find(|r| r["alert"] == format!("Kisum{name}"))
                .unwrap_or_else(|| panic!("{env}: no rule for alert {id}"));
            let expr = rule["expr"].as_str().unwrap();
            let threshold = alert["threshold"].as_f64().unwrap().to_string();
            assert!(
                expr.contains(&format!(" {threshold}")),
                "{env} {id}: {expr}"
            );
            // Certificates are told apart by host, everything else by the
            // environment's namespace.
            let scope = if id == "certificate-expiry" {
                "host=~"
            } else {
                &format!("namespace=\"kisum-{env}\"")
            };
            assert!(expr.contains(scope), "{env} {id}: not scoped: {expr}");
            let minutes = alert["for-minutes"].as_u64().unwrap();
            assert_eq!(rule["for"], format!("{minutes}m"), "{env} {id}");
            assert_eq!(rule["labels"]["severity"], alert["severity"], "{env} {id}");
        }
    }
    // promtool itself refuses a broken expression: the check can fail.
    let broken = serde_json::json!({ "groups": [ { "name": "broken", "rules": [
        { "alert": "Broken", "expr": "sum(rate(kisum_http_requests_total[5m]) >" } ] } ] });
    let (ok, report) = promtool_check(&broken);
    assert!(!ok, "promtool accepted a broken expression: {report}");
}

/// Per database of the matrix `base`: the hours since its last good
/// backup `KisumBackupFailure` allows: its RPO, or for a database with
/// point-in-time recovery (whose RPO the log keeps) the full backups'
/// threshold of `alerts.backup-failure` (every such database of the
/// shipped matrix backs up daily, within it).
fn backup_limits(base: &serde_json::Value) -> BTreeMap<String, f64> {
    let full = base["alerts"]["backup-failure"]["threshold"]
        .as_f64()
        .unwrap();
    base["databases"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, db)| {
            let limit = if db["backup"]["point-in-time-recovery"] == true {
                full
            } else {
                db["rpo-minutes"].as_f64().unwrap() / 60.0
            };
            (id.clone(), limit)
        })
        .collect()
}

/// The `KisumBackupFailure` rules of `groups`: per database of their
/// CronJob selector, the threshold of its rule.
fn backup_rule_limits(groups: &serde_json::Value) -> BTreeMap<String, f64> {
    let mut limits = BTreeMap::new();
    let rules = groups["groups"][0]["rules"].as_array().unwrap();
    for rule in rules.iter().filter(|r| r["alert"] == "KisumBackupFailure") {
        let expr = rule["expr"].as_str().unwrap();
        let selector = expr.split("cronjob=~\"").nth(1).unwrap();
        let selector = selector.split('"').next().unwrap();
        let threshold: f64 = expr.rsplit("> ").next().unwrap().trim().parse().unwrap();
        for cronjob in selector.split('|') {
            let db = cronjob.strip_prefix("backup-").unwrap().to_string();
            let description = rule["annotations"]["description"].as_str().unwrap();
            assert!(description.contains(&db), "{description}");
            assert!(limits.insert(db, threshold).is_none(), "{expr}: twice");
        }
    }
    limits
}

/// `KisumBackupFailure` holds each database's backup CronJob to the
/// database's own limit (its RPO from the matrix), and follows an RPO
/// changed in the matrix.
#[test]
fn backup_failure_alerts_hold_each_database_to_its_own_rpo() {
    let text = std::fs::read_to_string(root().join("environments/base.yaml")).unwrap();
    let base: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    for env in ["staging", "production"] {
        let groups = rule_groups(&root().join("manifests").join(env));
        assert_eq!(backup_rule_limits(&groups), backup_limits(&base), "{env}");
    }
    assert_eq!(backup_limits(&base)["main-db"], 1.0);

    let copy = scratch_copy();
    let path = copy.path().join("environments/base.yaml");
    let changed = text.replacen("rpo-minutes: 1440", "rpo-minutes: 1800", 1);
    assert_ne!(changed, text);
    std::fs::write(&path, &changed).unwrap();
    let out = copy.path().join("rendered");
    render_into(copy.path(), &out);
    let limits = backup_rule_limits(&rule_groups(&out.join("production")));
    assert_eq!(limits["venue-db"], 30.0, "{limits:?}");
    assert_eq!(limits["ai-db"], 24.0, "{limits:?}");
    let changed: serde_json::Value = serde_saphyr::from_str(&changed).unwrap();
    assert_eq!(limits, backup_limits(&changed));
}

/// Every alert rule's `runbook_url` names a runbook of `runbooks/` that
/// exists, and one the binary ships (`runbook show` finds it); each alert
/// of the matrix has one of its own where the repository has one.
#[test]
fn every_alert_names_an_existing_runbook() {
    for env in ["staging", "production"] {
        let groups = rule_groups(&root().join("manifests").join(env));
        for rule in groups["groups"][0]["rules"].as_array().unwrap() {
            let alert = rule["alert"].as_str().unwrap();
            let path = rule["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or_else(|| panic!("{env} {alert}: no runbook_url: {rule}"));
            let file = path
                .strip_prefix("runbooks/")
                .unwrap_or_else(|| panic!("{env} {alert}: {path} is not in runbooks/"));
            assert!(
                root().join(path).is_file(),
                "{env} {alert}: {path} is missing"
            );
            if file != "README.md" {
                let name = file.strip_suffix(".md").unwrap();
                let shown = kisumctl(&root(), &["runbook", "show", name]);
                assert!(shown.status.success(), "{env} {alert}: {}", stderr(&shown));
            }
        }
    }
    let groups = rule_groups(&root().join("manifests/production"));
    let url = |alert: &str| {
        groups["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["alert"] == alert)
            .unwrap()["annotations"]["runbook_url"]
            .clone()
    };
    assert_eq!(url("KisumBackupFailure"), "runbooks/backup-failure.md");
    assert_eq!(url("KisumRedisUnavailable"), "runbooks/redis-down.md");
}

#[test]
fn alert_thresholds_follow_the_matrix_and_environments_without_alerting_get_none() {
    let copy = scratch_copy();
    let base = copy.path().join("environments/base.yaml");
    let text = std::fs::read_to_string(&base).unwrap();
    let changed = text.replacen("threshold: 0.05", "threshold: 0.07", 1);
    assert_ne!(changed, text);
    std::fs::write(&base, changed).unwrap();
    let out = copy.path().join("rendered");
    render_into(copy.path(), &out);
    let groups = rule_groups(&out.join("staging"));
    let rule = groups["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["alert"] == "KisumElevated5xx")
        .unwrap()
        .clone();
    assert!(rule["expr"].as_str().unwrap().ends_with("> 0.07"), "{rule}");
    // dev has `monitoring.alerts: false`; local runs no Prometheus.
    for env in ["local", "dev"] {
        assert!(!out.join(env).join("alerts.yaml").exists(), "{env}");
    }
}

#[test]
fn schedules_run_backups_drills_renewal_and_the_secrets_check_at_the_matrix_times() {
    let text = std::fs::read_to_string(root().join("environments/base.yaml")).unwrap();
    let base: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    for env in ["dev", "staging", "production"] {
        let text =
            std::fs::read_to_string(root().join("manifests").join(env).join("schedules.yaml"))
                .unwrap();
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
        let jobs: std::collections::BTreeMap<String, &serde_json::Value> = docs
            .iter()
            .filter(|d| d["kind"] == "CronJob")
            .map(|d| (d["metadata"]["name"].as_str().unwrap().to_string(), d))
            .collect();
        let args = |name: &str| {
            let job = jobs
                .get(name)
                .unwrap_or_else(|| panic!("{env}: no CronJob {name}"));
            let pod = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
            assert_eq!(pod["restartPolicy"], "Never");
            assert_eq!(job["spec"]["concurrencyPolicy"], "Forbid");
            (
                job["spec"]["schedule"].as_str().unwrap().to_string(),
                pod["containers"][0]["args"].clone(),
            )
        };
        let plan = &base["schedules"];
        assert_eq!(
            args("certificate-renewal"),
            (
                plan["certificate-renewal"].as_str().unwrap().to_string(),
                serde_json::json!(["tls", "renew", env])
            )
        );
        assert_eq!(
            args("secrets-check"),
            (
                plan["secrets-check"].as_str().unwrap().to_string(),
                serde_json::json!(["secrets", "check", env])
            )
        );
        let mut databases = 0;
        for (id, db) in base["databases"].as_object().unwrap() {
            if db["engine"] == "undecided" {
                assert!(!jobs.contains_key(&format!("backup-{id}")), "{env} {id}");
                continue;
            }
            databases += 1;
            let backup = &db["backup"];
            assert_eq!(
                args(&format!("backup-{id}")),
                (
                    backup["schedule"].as_str().unwrap().to_string(),
                    serde_json::json!(["backup", env, id])
                )
            );
            assert_eq!(
                args(&format!("drill-{id}")),
                (
                    backup["drill-schedule"].as_str().unwrap().to_string(),
                    serde_json::json!(["drill", env, id])
                )
            );
        }
        assert_eq!(jobs.len(), 2 + 2 * databases, "{env}: {:?}", jobs.keys());
    }
    assert!(!root().join("manifests/local/schedules.yaml").exists());
}

#[test]
fn a_malformed_schedule_is_an_input_error_naming_file_line_and_field() {
    let copy = scratch_copy();
    let base = copy.path().join("environments/base.yaml");
    let text = std::fs::read_to_string(&base).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("  certificate-renewal:"))
        .unwrap()
        + 1;
    let changed = text.replacen(
        "  certificate-renewal: \"30 3 * * *\"",
        "  certificate-renewal: daily",
        1,
    );
    assert_ne!(changed, text);
    std::fs::write(&base, changed).unwrap();
    let output = kisumctl(copy.path(), &["render", "--out", "rendered"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!(
            "environments/base.yaml:{line}:3: schedules.certificate-renewal: `daily` is not a five-field cron expression"
        )),
        "{}",
        stderr(&output)
    );
    assert!(!copy.path().join("rendered").exists());
}

#[test]
fn the_scheduled_ci_example_runs_at_every_backup_renewal_and_check_time_of_the_matrix() {
    let text = std::fs::read_to_string(root().join("environments/base.yaml")).unwrap();
    let base: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let example = std::fs::read_to_string(root().join("docs/ci-scheduled-example.yml")).unwrap();
    let mut times: Vec<String> = base["databases"]
        .as_object()
        .unwrap()
        .values()
        .map(|db| db["backup"]["schedule"].as_str().unwrap().to_string())
        .collect();
    for key in ["certificate-renewal", "secrets-check"] {
        times.push(base["schedules"][key].as_str().unwrap().to_string());
    }
    for time in times {
        assert!(
            example.contains(&format!("cron: \"{time}\"")),
            "docs/ci-scheduled-example.yml does not run at `{time}`"
        );
    }
    for command in [
        "kisumctl backup ",
        "kisumctl drill ",
        "kisumctl tls renew ",
        "kisumctl secrets check ",
    ] {
        assert!(example.contains(command), "{command}");
    }
}
