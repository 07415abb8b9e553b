//! `kisumctl deploy|history|rollback|diff staging` against the in-process
//! fake Kubernetes API server of kisum-testkit (no real API server can run
//! here), reached through a kubeconfig the test writes into a scratch copy
//! of the matrix. Where a deploy must pass its smoke checks, staging's
//! smoke endpoints and secret store are those of the real platform that
//! `tests/cli/smoke.rs` starts in-process (Auth, Core, Admin, finance).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use kisum_testkit::FakeKube;
use serde_json::{Value, json};

use crate::common::{scratch_copy, stderr, stdout};
use crate::smoke::{Deployment, INVOICES_READ};

const NAMESPACE: &str = "kisum-staging";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/kisum-staging/deployments";
const CONFIG_MAPS: &str = "/api/v1/namespaces/kisum-staging/configmaps";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/kisum-staging/leases/kisumctl-deploy";

/// A scratch matrix whose staging reaches the fake API server, with its
/// secrets in local files and AWS sealed off.
pub(crate) struct Staging {
    pub(crate) root: PathBuf,
    pub(crate) fake: FakeKube,
    _scratch: Option<tempfile::TempDir>,
}

impl Staging {
    /// Staging with its smoke checks against `deployment`'s platform.
    fn on(deployment: &Deployment) -> Staging {
        let root = deployment.matrix_dir().parent().unwrap().to_path_buf();
        let endpoints = deployment.state_dir().join("endpoints.json");
        let secrets = deployment.state_dir().join("secrets");
        Staging::with(root, None, &endpoints, &secrets)
    }

    /// Staging whose smoke checks cannot pass (a dead loopback port and
    /// an empty secret store): for what happens before them.
    pub(crate) fn without_platform() -> Staging {
        let scratch = scratch_copy();
        let root = scratch.path().to_path_buf();
        let endpoints = root.join("dead-endpoints.json");
        let dead = json!({
            "auth": "http://127.0.0.1:9", "platform-admin": "http://127.0.0.1:9", "finance": "http://127.0.0.1:9",
        });
        std::fs::write(&endpoints, dead.to_string()).unwrap();
        let secrets = root.join(".kisum/staging-secrets");
        write_dummy_credentials(&secrets);
        Staging::with(root, Some(scratch), &endpoints, &secrets)
    }

    fn with(
        root: PathBuf,
        scratch: Option<tempfile::TempDir>,
        endpoints: &Path,
        secrets: &Path,
    ) -> Staging {
        let fake = FakeKube::start().unwrap();
        let kubeconfig = root.join("kubeconfig");
        fake.write_kubeconfig(&kubeconfig, "kisum-staging").unwrap();
        let staging = Staging {
            root,
            fake,
            _scratch: scratch,
        };
        staging.edit(|text| {
            let kubernetes = format!(
                "kubernetes:\n  context: kisum-staging\n  kubeconfig: {}\n  rollout-timeout-seconds: 20\n  smoke-endpoints: {}\n",
                kubeconfig.display(),
                endpoints.display()
            );
            let secrets = format!("secrets:\n  backend: local-files\n  path: {}\n", secrets.display());
            let start = text.find("secrets:\n").unwrap();
            let end = text[start..].find("\n\n").unwrap() + start + 1;
            let text = format!("{}{secrets}{}", &text[..start], &text[end..]);
            // The assumptions about the AWS account and region go with it.
            let text: Vec<&str> = text.lines().collect();
            let mut kept = Vec::new();
            let mut skip = false;
            for line in text {
                if line.starts_with("  - path: ") {
                    skip = line.contains("secrets.");
                }
                if !skip {
                    kept.push(line);
                }
            }
            (kept.join("\n") + "\n").replace("kubernetes:\n  context: kisum-staging\n", &kubernetes)
        });
        staging
    }

    pub(crate) fn edit(&self, change: impl FnOnce(&str) -> String) {
        let path = self.root.join("environments/staging.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, change(&text)).unwrap();
    }

    /// Staging's backups in a directory of the scratch copy, in place of
    /// its S3 bucket.
    pub(crate) fn keep_backups_here(&self) -> PathBuf {
        let dir = self.root.join("staging-backups");
        self.edit(|text| {
            let start = text.find("backups:\n").unwrap();
            let end = text[start..].find("\n\n").unwrap() + start + 1;
            let backups = format!(
                "backups:\n  enabled: true\n  store:\n    kind: local-directory\n    path: {}\n",
                dir.display()
            );
            format!("{}{backups}{}", &text[..start], &text[end..])
        });
        dir
    }

    fn edit_base(&self, change: impl FnOnce(&str) -> String) {
        let path = self.root.join("environments/base.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let changed = change(&text);
        assert_ne!(changed, text);
        std::fs::write(&path, changed).unwrap();
    }

    pub(crate) async fn run(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_kisumctl"))
            .args(args)
            .current_dir(&self.root)
            .env_remove("KISUM_MATRIX")
            .env_remove("KISUM_TEMPLATES")
            .env_remove("KUBECONFIG")
            .env_remove("KISUM_OPERATIONS_RUNNER")
            .env("HOME", self.root.join("no-home"))
            .envs(crate::common::SEALED_AWS)
            .output()
            .await
            .unwrap()
    }

    /// Runs and checks the exit code; the JSON document on stdout.
    pub(crate) async fn expect(&self, args: &[&str], code: i32) -> (Value, String) {
        let output = self.run(args).await;
        let text = format!("stdout:\n{}\nstderr:\n{}", stdout(&output), stderr(&output));
        assert_eq!(
            output.status.code(),
            Some(code),
            "kisumctl {args:?}\n{text}"
        );
        let document = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        (document, text)
    }

    fn deployment(&self, name: &str) -> Value {
        self.fake.get(&format!("{DEPLOYMENTS}/{name}")).unwrap()
    }

    /// The newest record of staging's journal, and the command's output.
    async fn last_journal_record(&self) -> (Value, String) {
        let (journal, text) = self.expect(&["journal", "staging", "-o", "json"], 0).await;
        let record = journal["records"]
            .as_array()
            .and_then(|r| r.last())
            .cloned();
        (
            record.unwrap_or_else(|| panic!("no journal record\n{text}")),
            text,
        )
    }

    /// Each recorded release's outcome, oldest first, with `history`'s
    /// JSON and output.
    async fn outcomes(&self) -> (Vec<String>, Value, String) {
        let (history, text) = self.expect(&["history", "staging", "-o", "json"], 0).await;
        let outcomes = history["releases"]
            .as_array()
            .unwrap_or_else(|| panic!("no releases\n{text}"))
            .iter()
            .map(|r| r["outcome"].as_str().unwrap().to_string())
            .collect();
        (outcomes, history, text)
    }

    fn releases(&self) -> Vec<String> {
        self.fake
            .paths(CONFIG_MAPS)
            .into_iter()
            .filter(|p| p.contains("kisumctl-release-"))
            .collect()
    }
}

fn write_dummy_credentials(dir: &Path) {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let secret = dir.join("smoke-test-credentials");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&secret)
        .unwrap();
    for key in [
        "user-email",
        "user-password",
        "admin-email",
        "admin-password",
        "company-id",
        "company-slug",
    ] {
        let value = if key == "company-id" {
            "00000000-0000-4000-8000-000000000000"
        } else {
            "x"
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(secret.join(key))
            .unwrap();
        std::io::Write::write_all(&mut file, value.as_bytes()).unwrap();
    }
}

/// The order in which the fake saw the Deployments applied.
fn applied_deployments(fake: &FakeKube) -> Vec<String> {
    fake.requests()
        .iter()
        .filter(|r| r.starts_with("PATCH ") && r.contains("/deployments/"))
        .map(|r| {
            r.split("/deployments/")
                .nth(1)
                .unwrap()
                .split('?')
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_applies_in_waves_records_prunes_and_rolls_back_after_a_failed_smoke_check() {
    let deployment = Deployment::start().await;
    let staging = Staging::on(&deployment);

    // A clean deploy: migrations, then Core, Auth, modules, Admin.
    let (report, text) = staging
        .expect(&["deploy", "staging", "-o", "json"], 0)
        .await;
    assert_eq!(report["result"], "deployed", "{text}");
    assert_eq!(report["release"], 1);
    assert_eq!(
        report["smoke"]["checks"].as_array().unwrap().len(),
        9,
        "{text}"
    );
    let order = applied_deployments(&staging.fake);
    assert_eq!(
        order.first().map(String::as_str),
        Some("platform-core"),
        "{order:?}"
    );
    assert_eq!(order[1], "auth");
    assert_eq!(order.last().map(String::as_str), Some("platform-admin"));
    let patches: Vec<String> = staging
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("PATCH"))
        .collect();
    assert!(
        patches
            .iter()
            .all(|r| r.contains("fieldManager=kisumctl") && r.contains("force=true")),
        "{patches:?}"
    );
    let jobs = staging
        .fake
        .paths("/apis/batch/v1/namespaces/kisum-staging/jobs");
    assert!(
        jobs.iter().any(|j| j.ends_with("/auth-migrate-1")),
        "{jobs:?}"
    );
    let migrated: Vec<&str> = report["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["service"].as_str().unwrap())
        .collect();
    assert_eq!(migrated.first(), Some(&"platform-core"), "{migrated:?}");
    let first_job = staging
        .fake
        .requests()
        .iter()
        .position(|r| r.starts_with("PATCH") && r.contains("/jobs/"))
        .unwrap();
    let first_deployment = staging
        .fake
        .requests()
        .iter()
        .position(|r| r.starts_with("PATCH") && r.contains("/deployments/"))
        .unwrap();
    assert!(
        first_job < first_deployment,
        "migrations come before every Deployment"
    );
    assert_eq!(staging.releases().len(), 1);
    deployment.assert_no_secret(&text);
    let holder = &staging.fake.get(LEASE).unwrap()["spec"]["holderIdentity"];
    assert!(holder.is_null(), "the lock is released: {holder}");

    // `kisumctl smoke staging` checks the same URLs.
    let (smoke, text) = staging.expect(&["smoke", "staging", "-o", "json"], 0).await;
    assert_eq!(smoke["passed"], true, "{text}");
    let (record, text) = staging.last_journal_record().await;
    assert_eq!(
        (&record["command"], &record["result"]),
        (&json!("smoke"), &json!("ok")),
        "{text}"
    );

    // Nothing differs from what was rendered.
    let (diff, text) = staging.expect(&["diff", "staging", "-o", "json"], 0).await;
    assert_eq!(diff["differences"], json!([]), "{text}");

    // An owned object the matrix no longer names is pruned; one without
    // the ownership labels is left alone.
    let stale = |name: &str, owned: bool| {
        let mut labels = json!({ "app.kubernetes.io/name": name });
        if owned {
            labels["app.kubernetes.io/managed-by"] = json!("kisumctl");
            labels["kisum.io/environment"] = json!("staging");
        }
        json!({ "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": { "name": name, "namespace": NAMESPACE, "labels": labels }, "data": {} })
    };
    staging.fake.insert(stale("retired-config", true)).unwrap();
    staging.fake.insert(stale("someone-elses", false)).unwrap();
    let (diff, _) = staging.expect(&["diff", "staging", "-o", "json"], 1).await;
    assert_eq!(diff["differences"][0]["object"], "ConfigMap/retired-config");
    assert_eq!(diff["differences"][0]["change"], "pruned");
    let (report, text) = staging
        .expect(&["deploy", "staging", "-o", "json"], 0)
        .await;
    assert_eq!(
        report["pruned"],
        json!(["ConfigMap/retired-config"]),
        "{text}"
    );
    assert!(
        staging
            .fake
            .get(&format!("{CONFIG_MAPS}/retired-config"))
            .is_none()
    );
    assert!(
        staging
            .fake
            .get(&format!("{CONFIG_MAPS}/someone-elses"))
            .is_some()
    );

    // A release whose smoke checks fail is rolled back, loudly. The fault
    // goes with the release: it is healed once release 3 is recorded as
    // failed, while the rollback's rollouts are still waited for.
    staging.edit(|t| t.replace("image-tag: \"0.1.0\"", "image-tag: \"0.2.0\""));
    deployment.remove_permission(INVOICES_READ).await;
    staging.fake.rollout_delay(Duration::from_millis(1500));
    let heal = async {
        while staging
            .fake
            .get(&format!("{CONFIG_MAPS}/kisumctl-release-3"))
            .is_none()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        deployment.add_permission(INVOICES_READ).await;
    };
    let ((report, text), ()) = tokio::join!(
        staging.expect(&["deploy", "staging", "-o", "json"], 3),
        heal
    );
    staging.fake.rollout_delay(Duration::ZERO);
    assert_eq!(report["result"], "rolled-back", "{text}");
    assert_eq!(report["release"], 3);
    assert!(
        report["failure"]
            .as_str()
            .unwrap()
            .contains("module-allowed"),
        "{text}"
    );
    assert_eq!(report["rollback"]["to"], 2);
    assert_eq!(report["rollback"]["release"], 4);
    assert!(
        text.contains("ROLLED BACK: staging runs release 2 again"),
        "{text}"
    );
    let image =
        staging.deployment("auth")["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    assert!(image.as_str().unwrap().ends_with(":0.1.0"), "{image}");

    let (outcomes, history, text) = staging.outcomes().await;
    assert_eq!(
        outcomes,
        ["deployed", "deployed", "failed", "deployed"],
        "{text}"
    );
    assert_eq!(history["current"], 4);
    let (_, text) = staging.expect(&["history", "staging"], 0).await;
    assert!(
        text.contains("automatic rollback to release 2 after release 3 failed"),
        "{text}"
    );

    // When the smoke checks fail after the rollback too, neither release
    // works: exit 4, and the rollback's release is recorded as failed, so
    // it is never taken for a release known to work.
    staging.edit(|t| t.replace("image-tag: \"0.2.0\"", "image-tag: \"0.3.0\""));
    deployment.remove_permission(INVOICES_READ).await;
    let (report, text) = staging
        .expect(&["deploy", "staging", "-o", "json"], 4)
        .await;
    deployment.add_permission(INVOICES_READ).await;
    assert_eq!(report["result"], "rollback-failed", "{text}");
    assert_eq!(report["rollback"]["release"], 6, "{text}");
    assert!(report["next"].is_string(), "{text}");
    assert!(
        text.contains("ROLLBACK FAILED: the smoke checks fail after the rollback too"),
        "{text}"
    );
    let (outcomes, _, text) = staging.outcomes().await;
    assert_eq!(
        outcomes,
        [
            "deployed", "deployed", "failed", "deployed", "failed", "failed"
        ],
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_timeout_rolls_back_and_the_schema_guard_refuses_to_cross_a_migration() {
    let deployment = Deployment::start().await;
    let staging = Staging::on(&deployment);
    staging.expect(&["deploy", "staging"], 0).await;

    // Release 2 migrates auth to a level release 1's code cannot run on.
    staging.edit_base(|t| {
        t.replace(
            "auth: { level: 5, oldest: 5 }",
            "auth: { level: 6, oldest: 6 }",
        )
    });
    staging.edit(|t| t.replace("image-tag: \"0.1.0\"", "image-tag: \"0.2.0\""));
    staging.expect(&["deploy", "staging"], 0).await;

    // Release 3's image never becomes ready: rolled back to release 2.
    staging.fake.never_ready_image(":0.3.0");
    staging.edit(|t| t.replace("image-tag: \"0.2.0\"", "image-tag: \"0.3.0\""));
    let (report, text) = staging
        .expect(&["deploy", "staging", "--timeout", "2", "-o", "json"], 3)
        .await;
    assert_eq!(report["result"], "rolled-back", "{text}");
    let failure = report["failure"].as_str().unwrap();
    assert!(
        failure.contains("Deployment/platform-core timed out after 2 s"),
        "{failure}"
    );
    assert_eq!(report["rollback"]["to"], 2);
    let image =
        staging.deployment("platform-core")["spec"]["template"]["spec"]["containers"][0]["image"]
            .clone();
    assert!(image.as_str().unwrap().ends_with(":0.2.0"), "{image}");

    // A release the history does not hold is unusable input, answered
    // with the releases it holds.
    let (_, text) = staging
        .expect(&["rollback", "staging", "--to", "99"], 2)
        .await;
    assert!(
        text.contains("release 99 is not in the history of staging; its releases are 1, 2, 3, 4"),
        "{text}"
    );

    // Back to release 1 would cross auth's migration to level 6.
    let (_, text) = staging
        .expect(&["rollback", "staging", "--to", "1"], 1)
        .await;
    assert!(
        text.contains("rollback to release 1 refused: auth: release 2 runs on schema level 6"),
        "{text}"
    );
    assert!(text.contains("--force"), "{text}");
    let (report, text) = staging
        .expect(
            &["rollback", "staging", "--to", "1", "--force", "-o", "json"],
            0,
        )
        .await;
    assert_eq!(report["result"], "deployed", "{text}");
    assert_eq!(report["waves"].as_array().unwrap().len(), 5, "{text}");
    let image =
        staging.deployment("auth")["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    assert!(image.as_str().unwrap().ends_with(":0.1.0"), "{image}");
    // The refused rollback (exit 1) and the forced one are journaled; the
    // unusable `--to 99` is not.
    let (journal, text) = staging
        .expect(&["journal", "staging", "-n", "2", "-o", "json"], 0)
        .await;
    let results: Vec<(&Value, &Value)> = journal["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (&r["command"], &r["result"]))
        .collect();
    let rollback = json!("rollback");
    assert_eq!(
        results,
        [
            (&rollback, &json!("check-failed")),
            (&rollback, &json!("ok"))
        ],
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lease_refuses_a_second_deploy_and_a_stale_one_is_taken_over_with_its_holder_named()
{
    let staging = Staging::without_platform();
    let now = jiff::Timestamp::now();
    let lease = |renewed: jiff::Timestamp| {
        json!({ "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": { "name": "kisumctl-deploy", "namespace": NAMESPACE },
                "spec": { "holderIdentity": "ci@runner-7 pid 4242", "leaseDurationSeconds": 60,
                          "acquireTime": renewed.to_string(), "renewTime": renewed.to_string() } })
    };
    staging.fake.insert(lease(now)).unwrap();
    let (_, text) = staging.expect(&["deploy", "staging"], 3).await;
    assert!(text.contains("is held by ci@runner-7 pid 4242"), "{text}");
    assert!(
        applied_deployments(&staging.fake).is_empty(),
        "nothing deployed under a held lock"
    );

    let old = now
        .checked_sub(jiff::SignedDuration::from_secs(600))
        .unwrap();
    staging.fake.insert(lease(old)).unwrap();
    let (report, text) = staging
        .expect(&["deploy", "staging", "-o", "json"], 3)
        .await;
    assert!(
        text.contains("took over a stale environment lock held by ci@runner-7 pid 4242"),
        "{text}"
    );
    assert_eq!(report["stale_lock"]["identity"], "ci@runner-7 pid 4242");
    // Its smoke checks fail (nothing answers) and nothing came before it.
    assert!(
        text.contains("ROLLBACK NOT DONE: no earlier release"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_concurrent_deploys_one_holds_the_lease_and_the_other_is_refused() {
    let staging = Staging::without_platform();
    staging.fake.rollout_delay(Duration::from_millis(1500));
    let (first, second) = tokio::join!(staging.run(&["deploy", "staging"]), async {
        // The second starts once the first holds the lease.
        for _ in 0..200 {
            let holder = staging
                .fake
                .get(LEASE)
                .map(|l| l["spec"]["holderIdentity"].clone());
            if holder.is_some_and(|h| h.is_string()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        staging.run(&["deploy", "staging"]).await
    });
    let texts = [stderr(&first), stderr(&second)];
    let refused = texts.iter().filter(|t| t.contains("is held by")).count();
    assert_eq!(refused, 1, "{texts:#?}");
    let ran = texts.iter().find(|t| !t.contains("is held by")).unwrap();
    assert!(ran.contains("release 1 of staging"), "{ran}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_conflict_stops_the_deploy_naming_the_object_and_frees_the_lock() {
    let staging = Staging::without_platform();
    staging.fake.conflict_on("auth");
    let (_, text) = staging.expect(&["deploy", "staging"], 3).await;
    assert!(
        text.contains("applying ServiceAccount/auth: the API server refused it (409 Conflict)"),
        "{text}"
    );
    assert!(text.contains("the namespace is partly updated"), "{text}");
    assert!(!applied_deployments(&staging.fake).contains(&"auth".to_string()));
    let holder = &staging.fake.get(LEASE).unwrap()["spec"]["holderIdentity"];
    assert!(holder.is_null(), "the lock is released: {holder}");
    assert!(staging.releases().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_reported_with_the_object_being_applied() {
    let staging = Staging::without_platform();
    staging
        .fake
        .drop_connections("/deployments/platform-core", 1);
    let (_, text) = staging.expect(&["deploy", "staging"], 3).await;
    assert!(
        text.contains("applying Deployment/platform-core: no answer from the API server"),
        "{text}"
    );
    assert!(
        text.contains("check that the cluster is reachable"),
        "{text}"
    );
    assert!(staging.releases().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_is_a_server_side_dry_run_that_stores_nothing() {
    let staging = Staging::without_platform();
    let (report, text) = staging
        .expect(&["deploy", "staging", "--dry-run", "-o", "json"], 0)
        .await;
    assert_eq!(report["result"], "dry-run", "{text}");
    assert_eq!(report["waves"].as_array().unwrap().len(), 5, "{text}");
    let writes: Vec<String> = staging
        .fake
        .requests()
        .into_iter()
        .filter(|r| !r.starts_with("GET"))
        .collect();
    assert!(!writes.is_empty());
    assert!(
        writes.iter().all(|r| r.contains("dryRun=All")),
        "{writes:#?}"
    );
    assert!(staging.fake.paths(DEPLOYMENTS).is_empty());
    assert!(staging.fake.get(LEASE).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_needs_confirmation_and_history_is_not_for_local() {
    let scratch = scratch_copy();
    let output = crate::common::kisumctl(scratch.path(), &["deploy", "production"]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("pass --yes"), "{text}");
    assert!(
        text.contains("images of production are not pinned by digest"),
        "{text}"
    );
    let output = crate::common::kisumctl(scratch.path(), &["history", "local"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("`history local` is not supported"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_jobs_are_read_back_and_a_failed_one_stops_the_release_before_any_deployment() {
    let staging = Staging::without_platform();
    staging
        .fake
        .job_log("auth-migrate", "starting\nauth_db is up to date\n");
    staging.fake.failing_job("finance-migrate");
    staging.fake.job_log(
        "finance-migrate",
        "error: relation \"invoices\" already exists\n",
    );
    let (report, text) = staging
        .expect(&["deploy", "staging", "-o", "json"], 3)
        .await;
    let migrations = report["migrations"].as_array().unwrap();
    let auth = migrations.iter().find(|m| m["service"] == "auth").unwrap();
    assert_eq!(auth["job"], "auth-migrate-1");
    assert_eq!(auth["level"], 5);
    assert!(
        auth["log"]
            .as_str()
            .unwrap()
            .contains("auth_db is up to date"),
        "{text}"
    );
    let failure = report["failure"].as_str().unwrap();
    assert!(
        failure.contains("migration Job/finance-migrate-1 failed: BackoffLimitExceeded"),
        "{failure}"
    );
    assert!(
        failure.contains("relation \"invoices\" already exists"),
        "{failure}"
    );
    assert!(
        applied_deployments(&staging.fake).is_empty(),
        "no Deployment after a failed migration"
    );
    assert!(
        text.contains("ROLLBACK NOT DONE: no earlier release"),
        "{text}"
    );
    let job = staging
        .fake
        .get("/apis/batch/v1/namespaces/kisum-staging/jobs/auth-migrate-1")
        .unwrap();
    let pod = &job["spec"]["template"];
    assert_eq!(pod["spec"]["containers"][0]["args"], json!(["migrate"]));
    assert_eq!(
        pod["metadata"]["labels"]["app.kubernetes.io/name"],
        "auth-migrate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_whose_own_rollout_is_stuck_keeps_the_report_says_where_and_exits_4() {
    let deployment = Deployment::start().await;
    let staging = Staging::on(&deployment);
    staging.expect(&["deploy", "staging"], 0).await;

    // Auth no longer becomes ready with any image: release 2 is stuck in
    // wave 2, and so is the rollback to release 1.
    staging.fake.never_ready("auth");
    staging.edit(|t| t.replace("image-tag: \"0.1.0\"", "image-tag: \"0.2.0\""));
    let (report, text) = staging
        .expect(&["deploy", "staging", "--timeout", "2", "-o", "json"], 4)
        .await;
    assert_eq!(report["result"], "rollback-failed", "{text}");
    assert_eq!(report["release"], 2);
    assert!(
        report["failure"]
            .as_str()
            .unwrap()
            .contains("Deployment/auth timed out after 2 s"),
        "{text}"
    );
    let stuck = json!({ "wave": 2, "object": "Deployment/auth" });
    assert_eq!(report["stopped_at"], stuck, "{text}");
    let rollback = &report["rollback"];
    assert_eq!(rollback["to"], 1, "{text}");
    assert_eq!(rollback["attempted"], true);
    assert_eq!(rollback["done"], false);
    assert_eq!(rollback["release"], 3, "the attempt is recorded: {text}");
    assert_eq!(rollback["stopped_at"], stuck, "{text}");
    assert!(
        rollback["detail"]
            .as_str()
            .unwrap()
            .contains("rolling back to release 1 failed too"),
        "{text}"
    );
    let next = report["next"].as_str().unwrap();
    assert!(
        next.contains("runs neither release 2 nor release 1 cleanly")
            && next.contains("kubectl -n kisum-staging describe deployment/auth")
            && next.contains("kisumctl rollback staging --to N"),
        "{next}"
    );
    assert!(text.contains("ROLLING BACK staging to release 1"), "{text}");
    assert!(
        text.contains("ROLLBACK FAILED: rolling back to release 1 failed too")
            && text.contains("(stopped at wave 2, Deployment/auth)"),
        "{text}"
    );
    assert!(text.contains("NEXT: staging runs neither"), "{text}");
    assert!(
        text.contains("failed, and so did the rollback (exit 4)"),
        "{text}"
    );
    let holder = &staging.fake.get(LEASE).unwrap()["spec"]["holderIdentity"];
    assert!(holder.is_null(), "the lock is released: {holder}");

    // Both failed attempts are in the history, the release that last
    // deployed is still the current one.
    let (history, text) = staging
        .expect(&["history", "staging", "-o", "json"], 0)
        .await;
    let releases = history["releases"].as_array().unwrap();
    let outcomes: Vec<&str> = releases
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["deployed", "failed", "failed"], "{text}");
    assert!(
        releases[2]["note"]
            .as_str()
            .unwrap()
            .starts_with("automatic rollback to release 1 after release 2 failed: failed:"),
        "{text}"
    );
    assert_eq!(history["current"], 1);

    // The journal records the distinct outcome.
    let (journal, text) = staging
        .expect(&["journal", "staging", "-o", "json"], 0)
        .await;
    let last = journal["records"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r["command"] == "deploy")
        .unwrap();
    assert_eq!(last["result"], "rollback-failed", "{text}");
    assert_eq!(last["exit"], 4, "{text}");

    // The text report says the same on stdout.
    let output = staging.run(&["deploy", "staging", "--timeout", "2"]).await;
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let report = stdout(&output);
    assert!(report.contains("result:      rollback-failed"), "{report}");
    assert!(
        report.contains("stopped at:  wave 2, Deployment/auth"),
        "{report}"
    );
    assert!(
        report.contains("rollback:    FAILED: rolling back to release 1"),
        "{report}"
    );
    assert!(
        report.contains("rollback stopped at: wave 2, Deployment/auth"),
        "{report}"
    );
    assert!(
        report.contains("next:        staging runs neither"),
        "{report}"
    );
}

const JOBS: &str = "/apis/batch/v1/namespaces/kisum-staging/jobs";

/// The one operation Job the fake holds, by its name prefix.
fn operation_job(fake: &FakeKube, prefix: &str) -> Value {
    let paths: Vec<String> = fake
        .paths(JOBS)
        .into_iter()
        .filter(|p| p.contains(prefix))
        .collect();
    assert_eq!(paths.len(), 1, "{paths:?}");
    fake.get(&paths[0]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_job_the_api_server_never_created_is_said_so_and_journaled_without_it() {
    let staging = Staging::without_platform();
    // The kubeconfig's server: a loopback port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let kubeconfig = staging.root.join("kubeconfig");
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    let edited = text.replace(&staging.fake.url(), &refused);
    assert_ne!(text, edited);
    std::fs::write(&kubeconfig, edited).unwrap();

    let (_, text) = staging
        .expect(&["backup", "staging", "main-db", "-o", "json"], 3)
        .await;
    assert!(
        text.contains("could not be created, nothing was launched"),
        "{text}"
    );
    assert!(!text.contains("reading Job/"), "{text}");
    let (record, text) = staging.last_journal_record().await;
    assert_eq!(record["command"], "backup", "{text}");
    assert_eq!(record["result"], "failed", "{text}");
    assert!(record["job"].is_null(), "{text}");
    let (_, text) = staging.expect(&["journal", "staging"], 0).await;
    assert!(!text.contains("(Job/"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_runs_as_a_job_in_the_cluster_and_its_report_is_read_from_the_log() {
    let staging = Staging::without_platform();
    staging.fake.job_log(
        "kisumctl-backup-",
        "backup staging: auth-db into s3://kisum-staging-backups/databases/\n{\n  \"environment\": \"staging\",\n  \"backups\": [ { \"manifest\": { \"id\": \"auth-db-20261205T061500Z\" } } ],\n  \"failed\": []\n}\nkisumctl-result: {\"exit\":0}\n",
    );
    let (report, text) = staging
        .expect(&["backup", "staging", "auth-db", "-o", "json"], 0)
        .await;
    assert_eq!(report["runner"], "job", "{text}");
    assert_eq!(report["state"], "complete");
    assert_eq!(
        report["report"]["backups"][0]["manifest"]["id"], "auth-db-20261205T061500Z",
        "{text}"
    );
    let job = operation_job(&staging.fake, "kisumctl-backup-");
    let name = job["metadata"]["name"].as_str().unwrap();
    assert_eq!(report["job"], name);
    let pod = &job["spec"]["template"]["spec"];
    // The ServiceAccount and image the CronJobs run (base.yaml
    // `kisumctl:`), without an API token, with bounded scratch volumes.
    assert_eq!(pod["serviceAccountName"], "kisumctl");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["restartPolicy"], "Never");
    for volume in pod["volumes"].as_array().unwrap() {
        assert_eq!(volume["emptyDir"]["sizeLimit"], "1Gi", "{volume}");
    }
    let container = &pod["containers"][0];
    assert_eq!(container["workingDir"], "/srv/kisum");
    let schedules =
        std::fs::read_to_string(staging.root.join("manifests/staging/schedules.yaml")).unwrap();
    assert!(
        schedules.contains("serviceAccountName: kisumctl\n")
            && schedules.contains("image: registry.kisum.io/kisum/kisumctl:0.1.0\n"),
        "the CronJobs run the same image and account"
    );
    assert_eq!(
        container["args"],
        json!(["backup", "staging", "auth-db", "-o", "json"])
    );
    assert_eq!(container["image"], "registry.kisum.io/kisum/kisumctl:0.1.0");
    let variables = container["env"].as_array().unwrap();
    assert!(
        variables.contains(&json!({ "name": "KISUM_OPERATIONS_RUNNER", "value": "host" }))
            && variables
                .contains(&json!({ "name": "KISUM_MATRIX", "value": "/srv/kisum/environments" })),
        "{variables:?}"
    );
    assert!(
        !job.to_string().contains("password"),
        "no credential passes through the Job"
    );
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 3600);
    let policy = staging
        .fake
        .get("/apis/networking.k8s.io/v1/namespaces/kisum-staging/networkpolicies/kisumctl")
        .expect("the Job's NetworkPolicy");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "kisumctl"
    );
    assert!(
        policy["spec"]["egress"]
            .as_array()
            .unwrap()
            .iter()
            .any(|rule| rule["ports"][0]["port"] == 5432),
        "{policy}"
    );

    // The journal of the machine that launched it names the Job.
    let (record, text) = staging.last_journal_record().await;
    assert_eq!(record["command"], "backup", "{text}");
    assert_eq!(record["result"], "ok");
    assert_eq!(record["job"], name, "{text}");
    let (_, text) = staging.expect(&["journal", "staging"], 0).await;
    assert!(
        text.contains(&format!("backup staging auth-db -o json (Job/{name})")),
        "{text}"
    );

    // An unknown database launches nothing.
    let (_, text) = staging.expect(&["backup", "staging", "auth-bd"], 2).await;
    assert!(text.contains("auth-bd"), "{text}");
    assert_eq!(staging.fake.paths(JOBS).len(), 1);

    // A deploy's prune (here shown by `diff`) leaves the operations'
    // NetworkPolicy alone: a running Job keeps its egress.
    let (_, text) = staging.expect(&["diff", "staging"], 1).await;
    assert!(!text.contains("NetworkPolicy/kisumctl "), "{text}");
    assert!(!text.contains("NetworkPolicy/kisumctl\n"), "{text}");

    // Two launches in the same second are two Jobs, each with its own args.
    let (first, second) = tokio::join!(
        staging.expect(&["backup", "staging", "auth-db", "-o", "json"], 0),
        staging.expect(&["backup", "staging", "finance-db", "-o", "json"], 0),
    );
    assert_ne!(first.0["job"], second.0["job"], "{}\n{}", first.1, second.1);
    let jobs = staging.fake.paths(JOBS);
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    let databases: std::collections::BTreeSet<String> = jobs
        .iter()
        .map(|path| {
            staging.fake.get(path).unwrap()["spec"]["template"]["spec"]["containers"][0]["args"][2]
                .to_string()
        })
        .collect();
    assert_eq!(databases.len(), 2, "{databases:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_ends_without_a_result_line_is_not_taken_for_a_success() {
    let staging = Staging::without_platform();
    staging
        .fake
        .job_log("kisumctl-drill-", "drill staging: started\n");
    let (report, text) = staging
        .expect(&["drill", "staging", "auth-db", "-o", "json"], 3)
        .await;
    assert_eq!(report["state"], "complete", "{text}");
    assert!(text.contains("outcome is unknown"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_backup_job_is_reported_with_its_log_excerpt_credentials_masked() {
    let staging = Staging::without_platform();
    staging.fake.failing_job("kisumctl-backup-");
    staging.fake.job_log(
        "kisumctl-backup-",
        "backup staging: auth-db\nerror: backup of auth-db failed: connecting to postgresql://kisum_backup:hunter2@auth-postgres.staging.db.kisum.internal:5432/auth_db: password=hunter2 rejected\nkisumctl-result: {\"exit\":3}\n",
    );
    let (report, text) = staging
        .expect(&["backup", "staging", "auth-db", "-o", "json"], 3)
        .await;
    assert!(!text.contains("hunter2"), "{text}");
    assert_eq!(report["state"], "failed", "{text}");
    assert!(
        text.contains("failed: BackoffLimitExceeded") && text.contains("limit (exit 3)"),
        "{text}"
    );
    assert!(
        text.contains("its log ends with (credentials masked):")
            && text.contains("connecting to postgresql://***@auth-postgres.staging.db.kisum.internal:5432/auth_db")
            && text.contains("password=*** rejected"),
        "{text}"
    );
    let (record, _) = staging.last_journal_record().await;
    assert_eq!(record["result"], "failed");
    assert!(
        record["job"]
            .as_str()
            .unwrap()
            .starts_with("kisumctl-backup-")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_job_that_never_finishes_times_out_naming_what_is_left_in_the_cluster() {
    let staging = Staging::without_platform();
    staging.edit(|t| t.replace("job-timeout-seconds: 3600", "job-timeout-seconds: 2"));
    staging.fake.stuck_job("kisumctl-drill-");
    let started = std::time::Instant::now();
    let (_, text) = staging.expect(&["drill", "staging", "auth-db"], 3).await;
    assert!(started.elapsed() < Duration::from_secs(30));
    let job = operation_job(&staging.fake, "kisumctl-drill-");
    let name = job["metadata"]["name"].as_str().unwrap();
    assert!(
        text.contains(&format!("Job/{name} did not finish within 2 s")),
        "{text}"
    );
    assert!(
        text.contains("it is left in namespace kisum-staging, still running")
            && text.contains(&format!("kubectl -n kisum-staging delete job {name}")),
        "{text}"
    );
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["drill", "staging", "auth-db", "-o", "json"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_job_is_launched_only_once_confirmed() {
    let staging = Staging::without_platform();
    let (_, text) = staging.expect(&["restore", "staging", "auth-db"], 2).await;
    assert!(
        text.contains("not confirmed; no Job was launched (pass --yes"),
        "{text}"
    );
    assert!(staging.fake.paths(JOBS).is_empty());

    staging.fake.job_log(
        "kisumctl-restore-",
        "{\n  \"environment\": \"staging\",\n  \"restores\": [],\n  \"exit\": 0\n}\nkisumctl-result: {\"exit\":0}\n",
    );
    staging
        .expect(&["restore", "staging", "auth-db", "--yes"], 0)
        .await;
    let job = operation_job(&staging.fake, "kisumctl-restore-");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["restore", "staging", "auth-db", "--yes", "-o", "json"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operations_runner_is_checked_with_file_line_and_field() {
    let staging = Staging::without_platform();
    staging.edit(|t| t.replace("  runner: job\n", "  runner: host\n"));
    let (_, text) = staging.expect(&["validate", "staging"], 2).await;
    assert!(
        text.contains("environments/staging.yaml:")
            && text.contains("operations.runner: `runner: host` needs `operations.host`"),
        "{text}"
    );
    staging.edit(|t| {
        t.replace(
            "  runner: host\n",
            "  runner: host\n  host: ops.staging.kisum.internal\n",
        )
    });
    staging.expect(&["validate", "staging"], 0).await;

    // A Job's settings are checked too.
    staging.edit(|t| {
        t.replace(
            "  runner: host\n  host: ops.staging.kisum.internal\n",
            "  runner: job\n",
        )
        .replace("job-timeout-seconds: 3600", "job-timeout-seconds: 0")
    });
    let (_, text) = staging.expect(&["validate", "staging"], 2).await;
    assert!(
        text.contains("operations.job-timeout-seconds: 0 is not between 1 and 86400 seconds"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_of_zero_seconds_is_refused_before_anything_is_read() {
    let staging = Staging::without_platform();
    for command in ["deploy", "rollback"] {
        let (_, text) = staging
            .expect(&[command, "staging", "--timeout", "0"], 2)
            .await;
        assert!(
            text.contains("a timeout of 0 seconds gives up at once; give at least 1"),
            "{text}"
        );
    }
    assert!(staging.fake.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_smoke_endpoints_file_is_named_with_what_writes_it() {
    let staging = Staging::without_platform();
    let file = staging.root.join("dead-endpoints.json");
    std::fs::remove_file(&file).unwrap();
    for args in [&["smoke", "staging"][..], &["deploy", "staging"][..]] {
        let (_, text) = staging.expect(args, 2).await;
        assert!(
            text.contains(&format!(
                "the smoke-endpoints file {} does not exist (`kubernetes.smoke-endpoints` of environments/staging.yaml); kisumctl does not write it",
                file.display()
            )),
            "{args:?}: {text}"
        );
        assert!(!text.contains("not deployed"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_from_a_backup_id_of_the_wrong_shape_or_not_in_the_store_launches_nothing() {
    let staging = Staging::without_platform();
    let store = staging.keep_backups_here();
    for (id, expected) in [
        (
            "latest",
            "--backup `latest` is not a backup id: ids look like <YYYYMMDDTHHMMSSZ>-<database>-<4 hex digits>",
        ),
        ("auth-db-20261205T061500Z", "is not a backup id"),
        (
            "20261205T061500Z-finance-db-0a1f",
            "is a backup of finance-db, not of auth-db",
        ),
        (
            "20261205T061500Z-auth-db-0a1f",
            "no backup `20261205T061500Z-auth-db-0a1f` in directory",
        ),
    ] {
        let (_, text) = staging
            .expect(
                &["restore", "staging", "auth-db", "--backup", id, "--yes"],
                2,
            )
            .await;
        assert!(text.contains(expected), "{id}: {text}");
    }
    assert!(staging.fake.paths(JOBS).is_empty());

    // One the store holds is restored by a Job.
    let id = "20261205T061500Z-auth-db-0a1f";
    std::fs::create_dir_all(store.join(id)).unwrap();
    std::fs::write(store.join(id).join("manifest.json"), "{}").unwrap();
    staging.fake.job_log(
        "kisumctl-restore-",
        "{\n  \"environment\": \"staging\",\n  \"restores\": [],\n  \"exit\": 0\n}\nkisumctl-result: {\"exit\":0}\n",
    );
    staging
        .expect(
            &["restore", "staging", "auth-db", "--backup", id, "--yes"],
            0,
        )
        .await;
    let job = operation_job(&staging.fake, "kisumctl-restore-");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["args"],
        json!([
            "restore", "staging", "auth-db", "--yes", "--backup", id, "-o", "json"
        ])
    );
}
