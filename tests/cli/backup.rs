//! `kisumctl backup`, `restore` and `drill` against real peers: a private
//! PostgreSQL cluster per test (kisum-testkit), Redis, mongoeco and moto
//! for S3, with a scratch copy of the matrix whose local endpoints, state
//! directory and backup store point at them.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use kisum_testkit::Postgres;
use serde_json::Value;
use sqlx::Connection;

use crate::common::{Moto, stderr, stdout};
use crate::site::{Site, connect, exec};

/// auth_db with what a faithful restore must keep: sequences, a view, a
/// function, bytea, unicode text, grants, database privileges, and a
/// table of `big_rows` rows. Also the platform admin the drill looks for.
async fn seed_auth_db(pg: &Postgres, big_rows: u32) {
    let mut admin = connect(pg, "postgres").await;
    exec(
        &mut admin,
        "CREATE ROLE auth_app LOGIN; CREATE ROLE auditor NOLOGIN",
    )
    .await;
    exec(&mut admin, "CREATE DATABASE auth_db OWNER auth_app").await;
    exec(
        &mut admin,
        "REVOKE ALL ON DATABASE auth_db FROM PUBLIC; GRANT CONNECT ON DATABASE auth_db TO auditor",
    )
    .await;
    let mut db = connect(pg, "auth_db").await;
    let script = format!(
        "CREATE SEQUENCE invoice_numbers START 1000 INCREMENT 7;
         SELECT nextval('invoice_numbers'), nextval('invoice_numbers');
         CREATE TABLE users (id uuid PRIMARY KEY, email text NOT NULL UNIQUE,
             status text NOT NULL DEFAULT 'active', created_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE platform_roles (user_id uuid REFERENCES users (id), role text NOT NULL);
         INSERT INTO users (id, email) VALUES
             ('00000000-0000-0000-0000-000000000001', 'admin@kisum.test'),
             ('00000000-0000-0000-0000-000000000002', 'zoë.ünïcødé@kisum.test');
         INSERT INTO platform_roles VALUES ('00000000-0000-0000-0000-000000000001', 'platform-admin');
         CREATE TABLE notes (id serial PRIMARY KEY, body text, blob bytea);
         INSERT INTO notes (body, blob) VALUES
             ('日本語のテキスト 🚀', '\\x00ff10'::bytea), (E'tab\\tand newline\\n', decode(repeat('ab', 300), 'hex'));
         CREATE TABLE events (id bigint PRIMARY KEY, payload text, at timestamptz);
         INSERT INTO events SELECT g, md5(g::text), timestamptz '2026-01-01' + g * interval '1 second'
             FROM generate_series(1, {big_rows}) g;
         CREATE VIEW active_users AS SELECT id, email FROM users WHERE status = 'active';
         CREATE FUNCTION shout(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT upper(t) || '!' $$;
         CREATE SCHEMA audit;
         CREATE TABLE audit.log (id bigserial PRIMARY KEY, line text);
         INSERT INTO audit.log (line) VALUES ('created');
         GRANT SELECT, INSERT ON users TO auth_app;
         GRANT SELECT ON active_users TO auditor;
         GRANT USAGE ON SCHEMA audit TO auditor;
         GRANT SELECT ON audit.log TO auditor;"
    );
    exec(&mut db, &script).await;
}

/// A fingerprint of auth_db's content, objects and privileges.
async fn fingerprint(pg: &Postgres, db_name: &str) -> Vec<String> {
    let mut db = connect(pg, db_name).await;
    let queries = [
        "SELECT string_agg(u::text, '|' ORDER BY u.id) FROM users u",
        "SELECT string_agg(n::text, '|' ORDER BY n.id) FROM notes n",
        "SELECT count(*)::text || ':' || sum(hashtext(e::text)::bigint)::text FROM events e",
        "SELECT string_agg(l::text, '|') FROM audit.log l",
        "SELECT last_value::text FROM invoice_numbers",
        "SELECT last_value::text || is_called::text FROM notes_id_seq",
        "SELECT string_agg(email, ',' ORDER BY email) FROM active_users",
        "SELECT shout('ok')",
        "SELECT has_table_privilege('auth_app', 'users', 'INSERT')::text \
         || has_table_privilege('auth_app', 'notes', 'SELECT')::text \
         || has_table_privilege('auditor', 'audit.log', 'SELECT')::text",
        "SELECT has_database_privilege('auditor', current_database(), 'CONNECT')::text \
         || (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database())",
    ];
    let mut out = Vec::new();
    for query in queries {
        let value: Option<String> = sqlx::query_scalar(query).fetch_one(&mut db).await.unwrap();
        out.push(value.unwrap_or_default());
    }
    // A public user without an explicit grant cannot connect.
    let public: bool = sqlx::query_scalar(
        "SELECT has_database_privilege('public', current_database(), 'CONNECT')",
    )
    .fetch_one(&mut db)
    .await
    .unwrap_or(true);
    out.push(public.to_string());
    db.close().await.unwrap();
    out
}

async fn databases(pg: &Postgres) -> Vec<String> {
    let mut admin = connect(pg, "postgres").await;
    sqlx::query_scalar(
        "SELECT datname::text FROM pg_database WHERE datname LIKE 'auth_db%' ORDER BY 1",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap()
}

/// Flips one bit in the middle of a backup file.
fn flip_a_byte(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

/// `drill local auth-db -o json`, expected to fail, its reports in `reports`.
fn failed_drill(site: &Site, reports: &std::path::Path) -> Value {
    let reports = reports.to_str().unwrap();
    let args = ["drill", "local", "auth-db", "--report-dir", reports];
    site.json(&[&args[..], &["-o", "json"]].concat(), 1)
}

/// auth_db (10 rows) and its backup, one bit of which is flipped.
async fn corrupted_auth_db_backup() -> (Postgres, Site, Value) {
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 10).await;
    let site = Site::new(pg.port());
    let manifest = site.backup("auth-db");
    flip_a_byte(&dump_path(&site, &manifest));
    (pg, site, manifest)
}

/// A session holding an exclusive lock on auth_db's `events` until it
/// rolls back: a safety backup's pg_dump waits behind it.
async fn lock_events(pg: &Postgres) -> sqlx::PgConnection {
    let mut blocker = connect(pg, "auth_db").await;
    exec(
        &mut blocker,
        "BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE",
    )
    .await;
    blocker
}

fn dump_path(site: &Site, manifest: &Value) -> PathBuf {
    site.store()
        .join(manifest["id"].as_str().unwrap())
        .join(manifest["files"][0]["name"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_then_restore_brings_a_postgres_database_back_exactly() {
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 1_000_000).await;
    let site = Site::new(pg.port());
    let before = fingerprint(&pg, "auth_db").await;

    let manifest = site.backup("auth-db");
    assert_eq!(manifest["counts"]["public.events"], 1_000_000);
    assert_eq!(manifest["counts"]["public.users"], 2);
    assert_eq!(manifest["counts"]["audit.log"], 1);
    assert_eq!(manifest["engine"], "postgresql");
    assert!(
        manifest["tools"]["pg_dump"]
            .as_str()
            .unwrap()
            .contains("pg_dump")
    );
    let dump = dump_path(&site, &manifest);
    let bytes = std::fs::read(&dump).unwrap();
    assert_eq!(
        &bytes[..5],
        b"PGDMP",
        "a custom-format dump pg_restore can read"
    );
    let digest = hex_sha256(&bytes);
    assert_eq!(manifest["files"][0]["sha256"], digest.as_str());
    assert_eq!(manifest["files"][0]["size"], bytes.len());

    // Damage the live database, then restore the backup.
    let mut db = connect(&pg, "auth_db").await;
    exec(&mut db, "DELETE FROM events WHERE id % 2 = 0; UPDATE users SET status = 'disabled'; DROP VIEW active_users").await;
    db.close().await.unwrap();
    let dry = site.expect(&["restore", "local", "auth-db", "--dry-run"], 0);
    assert!(stdout(&dry).contains("safety backup"), "{}", stdout(&dry));
    assert_eq!(
        databases(&pg).await,
        ["auth_db"],
        "a dry run changes nothing"
    );

    let restored = site.json(&["restore", "local", "auth-db", "--yes", "-o", "json"], 0);
    // The restore is journaled (the dry run is not), after the backup.
    let journal = site.journal("local");
    let last = &journal[journal.len() - 1];
    assert_eq!(
        (last.0.as_str(), last.1.as_str(), last.2),
        ("restore", "ok", 0)
    );
    assert_eq!(journal[journal.len() - 2].0, "backup", "{journal:?}");
    let outcome = &restored["restores"][0];
    assert_eq!(outcome["backup_id"], manifest["id"]);
    assert_eq!(fingerprint(&pg, "auth_db").await, before);
    let previous = outcome["previous"].as_str().unwrap().to_string();
    assert_eq!(
        databases(&pg).await,
        vec!["auth_db".to_string(), previous.clone()]
    );

    // The safety backup holds the damaged state and is listed as such.
    let list = site.json(&["backup", "list", "local", "-o", "json"], 0);
    let triggers = strings(&list["backups"], "trigger");
    assert_eq!(triggers, ["manual", "safety"]);
    assert_eq!(list["backups"][1]["counts"]["public.events"], 500_000);

    site.expect(&["restore", "local", "auth-db", "--cleanup", "--yes"], 0);
    assert_eq!(databases(&pg).await, ["auth_db"]);
}

/// Field `field` of every object of a JSON array.
fn strings(array: &Value, field: &str) -> Vec<String> {
    let items = array.as_array().expect("an array");
    items
        .iter()
        .map(|item| item[field].as_str().unwrap_or_default().to_string())
        .collect()
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_can_restore_a_plain_dump_in_parallel_by_hand() {
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 5000).await;
    let site = Site::new(pg.port());
    let manifest = site.backup("auth-db");
    let mut admin = connect(&pg, "postgres").await;
    exec(&mut admin, "CREATE DATABASE by_hand").await;
    // `-j` needs the data offsets pg_dump writes only into a seekable file.
    let output = Command::new("pg_restore")
        .args([
            "-j",
            "2",
            "--exit-on-error",
            "--no-owner",
            "-h",
            "127.0.0.1",
        ])
        .args(["-p", &pg.port().to_string(), "-U", "kisum", "-d", "by_hand"])
        .arg(dump_path(&site, &manifest))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut db = connect(&pg, "by_hand").await;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(events, 5000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_corrupted_byte_makes_verify_and_restore_refuse() {
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 1000).await;
    let site = Site::new(pg.port());
    let manifest = site.backup("auth-db");
    site.expect(&["backup", "verify", "local"], 0);

    flip_a_byte(&dump_path(&site, &manifest));

    let verify = site.expect(&["backup", "verify", "local"], 1);
    assert!(stdout(&verify).contains("FAIL"), "{}", stdout(&verify));
    let before = fingerprint(&pg, "auth_db").await;
    let restore = site.expect(&["restore", "local", "auth-db", "--yes"], 1);
    assert!(
        stderr(&restore).contains("failed verification"),
        "{}",
        stderr(&restore)
    );
    assert_eq!(fingerprint(&pg, "auth_db").await, before);
    assert_eq!(databases(&pg).await, ["auth_db"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_restore_leaves_the_original_serving() {
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 1_000_000).await;
    let site = Site::new(pg.port());
    site.backup("auth-db");
    let mut db = connect(&pg, "auth_db").await;
    exec(
        &mut db,
        "INSERT INTO audit.log (line) VALUES ('after the backup')",
    )
    .await;
    db.close().await.unwrap();
    let before = fingerprint(&pg, "auth_db").await;

    kill_during_pg_restore(&site, &pg).await;

    assert_eq!(
        fingerprint(&pg, "auth_db").await,
        before,
        "the original keeps serving, untouched"
    );
    assert!(
        site.root()
            .join(".kisum/local/restores/auth-db.json")
            .is_file(),
        "the journal remains"
    );

    // The next run settles the interrupted restore, then restores.
    let rerun = site.expect(&["restore", "local", "auth-db", "--yes"], 0);
    assert!(
        stderr(&rerun).contains("stopped while restoring the backup, before the swap"),
        "the recovery says in plain words where the restore stopped: {}",
        stderr(&rerun)
    );
    assert!(!stderr(&rerun).contains("step "), "{}", stderr(&rerun));
    let after = fingerprint(&pg, "auth_db").await;
    assert_ne!(
        after[3], before[3],
        "the backup, without the later audit line, is live"
    );
    site.expect(&["restore", "local", "auth-db", "--cleanup", "--yes"], 0);
    assert_eq!(databases(&pg).await, ["auth_db"]);
}

/// Starts `restore local auth-db` and kills it while pg_restore fills the
/// new database: pg_restore goes too.
async fn kill_during_pg_restore(site: &Site, pg: &Postgres) {
    let port = pg.port();
    site.kill_when(&["restore", "local", "auth-db", "--yes"], async || {
        let names = databases(pg).await;
        let restoring = names.iter().any(|d| d.starts_with("auth_db_restore_"));
        (restoring && !tools_on_port("pg_restore", port).is_empty()).then_some(())
    })
    .await;
    assert_none_survives("pg_restore", port).await;
}

/// Rewrites the finish time of a backup in a directory store.
fn age_backup(site: &Site, id: &str, days: i64) {
    let path = site.store().join(id).join("manifest.json");
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let at = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * days);
    let at = at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    manifest["started_at"] = Value::from(at.clone());
    manifest["finished_at"] = Value::from(at);
    std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_dated_in_the_future_fails_verify_and_the_drills_rpo() {
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 10).await;
    let site = Site::new(pg.port());
    let id = site.backup("auth-db")["id"].as_str().unwrap().to_string();
    site.expect(&["backup", "verify", "local", &id], 0);
    age_backup(&site, &id, -1);

    let verify = site.expect(&["backup", "verify", "local", &id], 1);
    assert!(
        stdout(&verify).contains("is dated in the future"),
        "{}",
        stdout(&verify)
    );

    let drill = site.json(&["drill", "local", "auth-db", "-o", "json"], 1);
    let checks = drill["databases"][0]["checks"].as_array().unwrap();
    let rpo = checks.iter().find(|c| c["name"] == "rpo").unwrap();
    assert_eq!(rpo["passed"], false, "{drill:#}");
    let detail = rpo["detail"].as_str().unwrap();
    assert!(detail.contains("dated in the future"), "{detail}");
    assert!(
        detail.contains("not counted as meeting the RPO"),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_killed_midway_is_listed_as_unfinished_and_the_next_backup_removes_it() {
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 1_000_000).await;
    let site = Site::new(pg.port());
    let partial = site.store().join(".partial");
    let port = pg.port();
    let killed = site
        .kill_when(&["backup", "local", "auth-db"], async || {
            let staged = std::fs::read_dir(&partial).ok()?.flatten().next()?.path();
            let dumping = !tools_on_port("pg_dump", port).is_empty();
            (dumping && staged.join("auth_db.dump").is_file()).then_some(staged)
        })
        .await;
    assert_none_survives("pg_dump", port).await;
    assert!(killed.is_dir(), "the kill left {}", killed.display());
    let id = killed.file_name().unwrap().to_str().unwrap().to_string();
    // A backup another (running) process is writing stays.
    let running = partial.join("20260101T000000Z-auth-db-0a1b");
    std::fs::create_dir_all(&running).unwrap();
    std::fs::write(running.join(".owner"), std::process::id().to_string()).unwrap();

    let list = site.json(&["backup", "list", "local", "-o", "json"], 0);
    let unfinished = list["unfinished"].as_array().unwrap();
    assert_eq!(unfinished.len(), 2, "{list:#}");
    assert_eq!(unfinished[0]["abandoned"], false, "{list:#}");
    assert_eq!(unfinished[1]["id"], id.as_str(), "{list:#}");
    assert_eq!(unfinished[1]["abandoned"], true, "{list:#}");
    let text = site.expect(&["backup", "list", "local"], 0);
    assert!(
        stderr(&text).contains(&format!("unfinished backup {id}"))
            && stderr(&text).contains("left by a stopped run"),
        "{}",
        stderr(&text)
    );

    let next = site.expect(&["backup", "local", "auth-db"], 0);
    assert!(
        stderr(&next).contains(&format!("removed the unfinished backup {id}")),
        "{}",
        stderr(&next)
    );
    assert!(!killed.exists(), "the stopped run's staging is gone");
    assert!(running.is_dir(), "a running process's staging stays");

    // `backup prune` sweeps too, once the writer is gone.
    std::fs::write(running.join(".owner"), dead_pid().to_string()).unwrap();
    site.expect(&["backup", "prune", "local"], 0);
    assert!(!partial.exists(), "{}", partial.display());
}

/// The pid of a process that has ended.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_keeps_exactly_what_the_retention_policy_says() {
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 10).await;
    let mut admin = connect(&pg, "postgres").await;
    exec(&mut admin, "CREATE DATABASE finance_db").await;
    let site = Site::new(pg.port());
    // local.yaml keeps 3 days of backups.
    let auth: Vec<String> = (0..4)
        .map(|_| site.backup("auth-db")["id"].as_str().unwrap().to_string())
        .collect();
    let finance: Vec<String> = (0..2)
        .map(|_| {
            site.backup("finance-db")["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for (id, days) in auth.iter().zip([10, 5, 2, 0]) {
        age_backup(&site, id, days);
    }
    for (id, days) in finance.iter().zip([30, 20]) {
        age_backup(&site, id, days);
    }

    let dry = site.json(&["backup", "prune", "local", "--dry-run", "-o", "json"], 0);
    assert_eq!(dry["decisions"].as_array().unwrap().len(), 6);
    let remaining = |site: &Site| -> Vec<String> {
        let list = site.json(&["backup", "list", "local", "-o", "json"], 0);
        let mut ids = strings(&list["backups"], "id");
        ids.sort();
        ids
    };
    assert_eq!(remaining(&site).len(), 6, "a dry run deletes nothing");

    site.expect(&["backup", "prune", "local"], 0);
    let mut expected = vec![auth[2].clone(), auth[3].clone(), finance[1].clone()];
    expected.sort();
    assert_eq!(remaining(&site), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drill_restores_verifies_and_compares_with_the_targets() {
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 1000).await;
    let site = Site::new(pg.port());
    let manifest = site.backup("auth-db");
    let reports = site.root().join("reports");
    let report = reports.to_str().unwrap();
    let drill_auth = |code| {
        let args = [
            "drill",
            "local",
            "auth-db",
            "--report-dir",
            report,
            "-o",
            "json",
        ];
        site.json(&args, code)
    };

    let drill = drill_auth(0);
    let result = &drill["databases"][0];
    assert_eq!(result["passed"], true, "{drill:#}");
    let checks = strings(&result["checks"], "name");
    assert_eq!(checks, ["rpo", "checksums", "counts", "sanity", "rto"]);
    let files: Vec<String> = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with(".md")) && files.iter().any(|f| f.ends_with(".json")),
        "{files:?}"
    );
    assert_eq!(
        databases(&pg).await,
        ["auth_db"],
        "the scratch database is gone"
    );

    // A backup older than auth-db's RPO (5 minutes) fails the drill.
    age_backup(&site, manifest["id"].as_str().unwrap(), 1);
    let late = drill_auth(1);
    let rpo = &late["databases"][0]["checks"][0];
    assert_eq!(
        (rpo["name"].as_str(), rpo["passed"].as_bool()),
        (Some("rpo"), Some(false))
    );

    // Without an active platform admin, the sanity check fails.
    let mut db = connect(&pg, "auth_db").await;
    exec(&mut db, "UPDATE users SET status = 'disabled'").await;
    db.close().await.unwrap();
    site.backup("auth-db");
    let insane = drill_auth(1);
    let sanity = insane["databases"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sanity")
        .unwrap()
        .clone();
    assert_eq!(sanity["passed"], false);
}

/// Has the site encrypt its backups to a new age identity, kept in its
/// secret store; answers the recipient.
fn encrypt_backups(site: &Site) -> String {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    site.edit("environments/local.yaml", |t| {
        t.replace(
            "backups:\n  enabled: true\n",
            &format!("backups:\n  enabled: true\n  age-recipients: [{recipient}]\n"),
        )
    });
    site.secret(
        "backup-age-identity",
        "identity",
        identity.to_string().expose_secret(),
    );
    recipient
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_backups_need_the_identity_of_the_secret_store() {
    use age::secrecy::ExposeSecret;
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 1000).await;
    let site = Site::new(pg.port());
    let recipient = encrypt_backups(&site);
    let before = fingerprint(&pg, "auth_db").await;

    let manifest = site.backup("auth-db");
    assert_eq!(manifest["recipients"][0], recipient.as_str());
    let stored = std::fs::read(dump_path(&site, &manifest)).unwrap();
    assert!(
        stored.starts_with(b"age-encryption.org/v1"),
        "stored encrypted"
    );
    site.expect(&["backup", "verify", "local"], 0);
    let mut db = connect(&pg, "auth_db").await;
    exec(&mut db, "DELETE FROM notes").await;
    db.close().await.unwrap();
    site.expect(&["restore", "local", "auth-db", "--yes"], 0);
    assert_eq!(fingerprint(&pg, "auth_db").await, before);

    // Another identity cannot decrypt: verify refuses.
    let other = age::x25519::Identity::generate();
    site.secret(
        "backup-age-identity",
        "identity",
        other.to_string().expose_secret(),
    );
    let verify = site.expect(
        &[
            "backup",
            "verify",
            "local",
            manifest["id"].as_str().unwrap(),
        ],
        1,
    );
    assert!(
        stdout(&verify).contains("cannot be decrypted"),
        "{}",
        stdout(&verify)
    );
    for output in [stdout(&verify), stderr(&verify)] {
        assert!(!output.contains("AGE-SECRET-KEY"), "no identity in output");
    }

    // Without an identity, verify and restore agree: a failed check.
    std::fs::remove_file(site.secrets_dir().join("backup-age-identity/identity")).unwrap();
    let verify = site.expect(&["backup", "verify", "local"], 1);
    let restore = site.expect(&["restore", "local", "auth-db", "--yes"], 1);
    for output in [stdout(&verify), stderr(&restore)] {
        assert!(output.contains("has no `backup-age-identity`"), "{output}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_go_to_s3_and_restore_from_it() {
    let moto = Moto::start().await;
    moto.create_bucket("kisum-local-backups").await;
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 200_000).await;
    let site = s3_site(pg.port(), &moto);
    let endpoint = moto.endpoint();
    let before = fingerprint(&pg, "auth_db").await;

    let manifest = site.backup("auth-db");
    assert!(!site.store().exists(), "nothing in the local directory");
    let list = site.json(&["backup", "list", "local", "-o", "json"], 0);
    assert_eq!(list["store"], "s3://kisum-local-backups/databases/");
    assert_eq!(list["backups"][0]["id"], manifest["id"]);
    site.expect(&["backup", "verify", "local"], 0);

    let mut db = connect(&pg, "auth_db").await;
    exec(&mut db, "TRUNCATE events").await;
    db.close().await.unwrap();
    site.expect(&["restore", "local", "auth-db", "--yes"], 0);
    assert_eq!(fingerprint(&pg, "auth_db").await, before);

    // A drill keeps its report in the bucket beside the backups (where
    // `status` reads it), and no listing of backups counts it.
    site.expect(&["drill", "local", "auth-db"], 0);
    let reports = moto_client(&endpoint)
        .list_objects_v2()
        .bucket("kisum-local-backups")
        .prefix("databases/.drills/")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = reports.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with("databases/.drills/drill-") && keys[0].ends_with(".json"),
        "{keys:?}"
    );

    // An old safety backup goes; the newest manual backup stays however old.
    let list = site.json(&["backup", "list", "local", "-o", "json"], 0);
    let backups = list["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 2, "the backup and the safety backup");
    for backup in backups {
        age_backup_s3(&endpoint, backup.clone(), 10).await;
    }
    site.expect(&["backup", "prune", "local"], 0);
    let list = site.json(&["backup", "list", "local", "-o", "json"], 0);
    let left = strings(&list["backups"], "id");
    assert_eq!(left, [manifest["id"].as_str().unwrap()]);
}

/// A site whose backup store is a bucket of `moto`.
fn s3_site(postgres_port: u16, moto: &Moto) -> Site {
    s3_site_at(postgres_port, &moto.endpoint())
}

/// A site whose backup store is bucket `kisum-local-backups` at
/// `endpoint` (moto, or a relay in front of it).
fn s3_site_at(postgres_port: u16, endpoint: &str) -> Site {
    let mut site = Site::new(postgres_port);
    site.edit("environments/local.yaml", |t| {
        t.replace(
            "    kind: local-directory\n    path: .kisum/local/backups\n",
            &format!("    kind: s3\n    bucket: kisum-local-backups\n    prefix: databases/\n    region: us-east-1\n    endpoint: {endpoint}\n"),
        )
    });
    // Dummy credentials; no instance metadata; any default endpoint is a
    // dead loopback port, so nothing can leave the machine.
    site.env = crate::common::sealed_aws();
    site
}

/// A store that accepts connections and never answers fails in bounded
/// time, naming where, instead of hanging the command.
#[test]
fn an_s3_store_that_never_answers_fails_in_bounded_time() {
    // Connections complete in the kernel's backlog; nothing reads them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let mut site = s3_site_at(crate::common::refused_port(), &endpoint);
    site.env.push(("AWS_MAX_ATTEMPTS".into(), "1".into()));
    let started = std::time::Instant::now();
    let output = site.expect(&["backup", "list", "local"], 3);
    let elapsed = started.elapsed();
    let text = stderr(&output);
    assert!(
        text.contains(&format!("cannot reach {endpoint}: no answer in time")),
        "{text}"
    );
    assert!(elapsed < std::time::Duration::from_secs(60), "{elapsed:?}");
    drop(silent);
}

/// An S3 client of moto, with fixed dummy credentials.
fn moto_client(endpoint: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_above_the_multipart_threshold_goes_to_s3_in_parts() {
    let moto = Moto::start().await;
    moto.create_bucket("kisum-local-backups").await;
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 10).await;
    let mut db = connect(&pg, "auth_db").await;
    add_blobs(&mut db).await;
    let digest = "SELECT md5(string_agg(md5(data), '' ORDER BY id)) FROM blobs";
    let before: String = sqlx::query_scalar(digest).fetch_one(&mut db).await.unwrap();
    let site = s3_site(pg.port(), &moto);

    let manifest = site.backup("auth-db");
    let size = manifest["files"][0]["size"].as_u64().unwrap();
    assert!(size > 16 << 20, "{size} bytes is above one part");
    let key = format!(
        "databases/{}/{}",
        manifest["id"].as_str().unwrap(),
        manifest["files"][0]["name"].as_str().unwrap()
    );
    let head = moto_client(&moto.endpoint())
        .head_object()
        .bucket("kisum-local-backups")
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(size as i64));
    let etag = head.e_tag().unwrap_or_default();
    assert!(
        etag.trim_matches('"').ends_with("-2"),
        "a two-part upload: {etag}"
    );
    site.expect(&["backup", "verify", "local"], 0);

    exec(&mut db, "DELETE FROM blobs WHERE id % 3 = 0").await;
    site.expect(&["restore", "local", "auth-db", "--yes"], 0);
    let mut db = connect(&pg, "auth_db").await;
    let after: String = sqlx::query_scalar(digest).fetch_one(&mut db).await.unwrap();
    assert_eq!(after, before, "the restore brings back every byte");
}

/// 25 MB of random bytes in table `blobs`, which no compression brings
/// under the 16 MiB part size: a dump that goes to S3 in two parts.
async fn add_blobs(db: &mut sqlx::PgConnection) {
    exec(
        db,
        "CREATE TABLE blobs (id int PRIMARY KEY, data bytea NOT NULL);
         INSERT INTO blobs SELECT g, decode((SELECT string_agg(md5(random()::text || g || h), '')
             FROM generate_series(1, 128) h), 'hex') FROM generate_series(1, 12288) g",
    )
    .await;
}

/// The keys under `prefix` and the open multipart uploads of the
/// backup bucket of moto at `endpoint`.
async fn bucket_state(endpoint: &str, prefix: &str) -> (Vec<String>, Vec<String>) {
    let client = moto_client(endpoint);
    let listed = client
        .list_objects_v2()
        .bucket("kisum-local-backups")
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    let keys = listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    let uploads = client
        .list_multipart_uploads()
        .bucket("kisum-local-backups")
        .send()
        .await
        .unwrap();
    let open = uploads
        .uploads()
        .iter()
        .filter_map(|u| u.key().map(str::to_string))
        .collect();
    (keys, open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_upload_killed_midway_is_listed_and_the_next_backup_removes_it_and_its_parts() {
    use crate::proxy::{Hold, Relay};
    let moto = Moto::start().await;
    moto.create_bucket("kisum-local-backups").await;
    let endpoint = moto.endpoint();
    let moto_port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 10).await;
    add_blobs(&mut connect(&pg, "auth_db").await).await;
    // The second part never reaches moto: the run is killed while it
    // waits, with part 1 uploaded and the multipart upload open.
    let relay = Relay::start(moto_port).await;
    relay.arm(Hold::Request(b"partNumber=2"));
    let site = s3_site_at(pg.port(), &format!("http://127.0.0.1:{}", relay.port));
    site.kill_when(&["backup", "local", "auth-db"], async || {
        relay.held().then_some(())
    })
    .await;
    let (keys, open) = bucket_state(&endpoint, "databases/").await;
    assert_eq!(open.len(), 1, "one multipart upload is open: {open:?}");
    let marker = keys
        .iter()
        .find_map(|k| k.strip_prefix("databases/.partial/"))
        .expect("the upload left its marker")
        .to_string();
    assert!(
        open[0].starts_with(&format!("databases/{marker}/")),
        "{open:?}"
    );
    // An upload of another host, started just now, is not this host's to
    // judge: reported, never removed.
    let foreign = "20260101T000000Z-auth-db-0f0f";
    let body = br#"{"host":"elsewhere","pid":1,"started_at":"2026-01-01T00:00:00Z"}"#;
    put_object(&endpoint, &format!("databases/.partial/{foreign}"), body).await;

    let list = site.json(&["backup", "list", "local", "-o", "json"], 0);
    // The marker of this host's upload names it.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim().to_string();
    assert_eq!(
        unfinished(&list),
        [
            (foreign.to_string(), false, "elsewhere".to_string()),
            (marker.clone(), true, host)
        ],
        "{list:#}"
    );
    assert_eq!(list["backups"], serde_json::json!([]), "{list:#}");
    let text = site.expect(&["backup", "list", "local"], 0);
    assert!(
        stderr(&text).contains(&format!("unfinished backup {marker}"))
            && stderr(&text).contains("left by a stopped run")
            && stderr(&text).contains("being written by pid 1 on elsewhere"),
        "{}",
        stderr(&text)
    );

    let next = site.expect(&["backup", "local", "auth-db"], 0);
    assert!(
        stderr(&next).contains(&format!("removed the unfinished backup {marker}")),
        "{}",
        stderr(&next)
    );
    let (keys, open) = bucket_state(&endpoint, &format!("databases/{marker}/")).await;
    assert_eq!(keys, Vec::<String>::new(), "its objects are gone");
    assert_eq!(
        open,
        Vec::<String>::new(),
        "no multipart upload is left open"
    );
    let (markers, _) = bucket_state(&endpoint, "databases/.partial/").await;
    assert_eq!(markers, [format!("databases/.partial/{foreign}")]);
    let list = site.json(&["backup", "list", "local", "-o", "json"], 0);
    assert_eq!(list["backups"].as_array().unwrap().len(), 1, "{list:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmarked_s3_uploads_are_listed_and_pruned_once_their_id_is_a_day_old() {
    // What an upload stopped before uploads were marked left: objects,
    // no manifest, no marker.
    let moto = Moto::start().await;
    moto.create_bucket("kisum-local-backups").await;
    let endpoint = moto.endpoint();
    let site = s3_site(25433, &moto);
    let old = "20260101T000000Z-auth-db-0a0a";
    let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ");
    let young = format!("{stamp}-auth-db-0b0b");
    for id in [old, young.as_str()] {
        let key = format!("databases/{id}/auth_db.dump");
        put_object(&endpoint, &key, b"half a dump").await;
    }

    let list = site.json(&["backup", "list", "local", "-o", "json"], 0);
    let unmarked = "unknown (no marker)".to_string();
    assert_eq!(
        unfinished(&list),
        [
            (old.to_string(), true, unmarked.clone()),
            (young.clone(), false, unmarked)
        ],
        "{list:#}"
    );
    let text = site.expect(&["backup", "list", "local"], 0);
    assert!(
        stderr(&text).contains(&format!("unfinished backup {old}"))
            && stderr(&text).contains("left by a stopped run"),
        "{}",
        stderr(&text)
    );

    site.expect(&["backup", "prune", "local"], 0);
    let (keys, _) = bucket_state(&endpoint, "databases/").await;
    assert_eq!(
        keys,
        [format!("databases/{young}/auth_db.dump")],
        "the day-old upload is gone, the young one stays"
    );
}

/// Puts object `key` into bucket `kisum-local-backups` of moto.
async fn put_object(endpoint: &str, key: &str, body: &[u8]) {
    moto_client(endpoint)
        .put_object()
        .bucket("kisum-local-backups")
        .key(key)
        .body(body.to_vec().into())
        .send()
        .await
        .unwrap();
}

/// (id, abandoned, host) of each unfinished backup `backup list -o json`
/// reported.
fn unfinished(list: &Value) -> Vec<(String, bool, String)> {
    let entries = list["unfinished"].as_array().unwrap();
    let field = |entry: &Value, name: &str| entry[name].as_str().unwrap_or_default().to_string();
    entries
        .iter()
        .map(|e| (field(e, "id"), e["abandoned"] == true, field(e, "host")))
        .collect()
}

/// Rewrites the finish time of a backup in moto, with the SDK (fixed
/// dummy credentials, moto's endpoint).
async fn age_backup_s3(endpoint: &str, mut manifest: Value, days: i64) {
    let client = moto_client(endpoint);
    let key = format!(
        "databases/{}/manifest.json",
        manifest["id"].as_str().unwrap()
    );
    let at = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * days);
    let at = at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    manifest["started_at"] = Value::from(at.clone());
    manifest["finished_at"] = Value::from(at);
    let body = aws_sdk_s3::primitives::ByteStream::from(manifest.to_string().into_bytes());
    client
        .put_object()
        .bucket("kisum-local-backups")
        .key(key)
        .body(body)
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_is_backed_up_as_an_rdb_snapshot_only_when_persistent() {
    let redis = kisum_testkit::Redis::start().await.unwrap();
    let pg = Postgres::start().await.unwrap();
    let site = Site::new(pg.port());
    site.edit("environments/local.yaml", |t| {
        t.replace("port: 26379", &format!("port: {}", redis.port()))
    });
    let refused = site.expect(&["backup", "local", "redis"], 3);
    assert!(
        stderr(&refused).contains("pure cache"),
        "{}",
        stderr(&refused)
    );
    // Nor is a pure cache drilled: skipped, no failure, no report.
    let skipped = site.expect(&["drill", "local", "redis"], 0);
    assert!(
        stderr(&skipped).contains("redis is a pure cache") && stderr(&skipped).contains("skipped"),
        "{}",
        stderr(&skipped)
    );
    assert!(!site.root().join(".kisum/local/drills").exists());
    assert!(!site.store().join(".drills").exists());

    let commands: String = (0..250)
        .map(|n| format!("SET session:{n} value-{n}\n"))
        .collect();
    let mut cli = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &redis.port().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(cli.stdin.as_mut().unwrap(), commands.as_bytes()).unwrap();
    drop(cli.stdin.take());
    assert!(cli.wait().unwrap().success());

    site.edit("environments/base.yaml", |t| {
        t.replacen("  persistence: none\n", "  persistence: rdb\n", 1)
    });
    let manifest = site.backup("redis");
    assert_eq!(manifest["counts"]["db0"], 250);
    let snapshot = std::fs::read(dump_path(&site, &manifest)).unwrap();
    assert!(snapshot.starts_with(b"REDIS"), "an RDB file");
    assert_eq!(
        manifest["files"][0]["sha256"],
        hex_sha256(&snapshot).as_str()
    );
    site.expect(&["backup", "verify", "local"], 0);

    // The drill loads the snapshot into a scratch server and counts.
    let drill = site.json(&["drill", "local", "redis", "-o", "json"], 0);
    assert_eq!(drill["databases"][0]["passed"], true, "{drill:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_documents_come_back_byte_for_byte_with_their_indexes() {
    use mongodb::bson::{self, Bson, RawDocumentBuf, doc};
    use mongodb::options::IndexOptions;

    let mongo = kisum_testkit::Mongo::start().await.unwrap();
    let pg = Postgres::start().await.unwrap();
    let site = Site::new(pg.port());
    site.edit("environments/local.yaml", |t| {
        t.replace("port: 27117", &format!("port: {}", mongo.port()))
    });
    let url = format!(
        "mongodb://127.0.0.1:{}/?directConnection=true&connectTimeoutMS=60000",
        mongo.port()
    );
    let client = mongodb::Client::with_uri_str(&url).await.unwrap();
    let db = client.database("main");
    let docs: Vec<bson::Document> = (0..300)
        .map(|n: i64| {
            doc! {
                "_id": bson::oid::ObjectId::new(),
                "n": n,
                "small": n as i32,
                "price": "12.50".parse::<bson::Decimal128>().unwrap(),
                "ratio": -0.0_f64,
                "when": bson::DateTime::from_millis(-62_135_596_800_000 + n),
                "blob": Bson::Binary(bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![0, 255, n as u8] }),
                "text": format!("zoë 日本 {n}\u{0}end"),
                "nested": { "z": 1, "a": [1, "two", { "three": 3 }] },
            }
        })
        .collect();
    db.collection::<bson::Document>("users")
        .insert_many(docs)
        .await
        .unwrap();
    db.create_collection("empty").await.unwrap();
    let unique = mongodb::IndexModel::builder()
        .keys(doc! { "n": 1 })
        .options(
            IndexOptions::builder()
                .unique(true)
                .name("n_unique".to_string())
                .build(),
        )
        .build();
    db.collection::<bson::Document>("users")
        .create_index(unique)
        .await
        .unwrap();

    let manifest = site.backup("main-db");
    assert_eq!(manifest["counts"]["users"], 300);
    assert_eq!(manifest["counts"]["empty"], 0);

    // The data file holds exactly the server's documents, byte for byte.
    let dir = site.store().join(manifest["id"].as_str().unwrap());
    let file = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"].as_str().unwrap().ends_with("-users.bson"))
        .unwrap();
    let stored = std::fs::read(dir.join(file["name"].as_str().unwrap())).unwrap();
    let mut cursor = db
        .collection::<RawDocumentBuf>("users")
        .find(doc! {})
        .await
        .unwrap();
    let mut live = Vec::new();
    while cursor.advance().await.unwrap() {
        live.extend_from_slice(cursor.current().as_bytes());
    }
    assert_eq!(stored, live);
    let catalog = std::fs::read_to_string(dir.join("collections.json")).unwrap();
    assert!(
        catalog.contains("n_unique") && catalog.contains("\"unique\": true"),
        "{catalog}"
    );

    // The drill restores into a scratch database and counts.
    let drill = site.json(&["drill", "local", "main-db", "-o", "json"], 0);
    assert_eq!(drill["databases"][0]["passed"], true, "{drill:#}");
}

/// Runs `kisumctl ARGS` in the site on a pseudo-terminal (util-linux
/// `script`), typing `answer` and Enter; answers the exit code and what the
/// terminal showed.
fn on_a_terminal(site: &Site, args: &[&str], answer: &str) -> (Option<i32>, String) {
    use std::io::{Read, Write};
    let quote = |word: &str| format!("'{}'", word.replace('\'', "'\\''"));
    let line: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_kisumctl"))
        .chain(args.iter().copied())
        .map(quote)
        .collect();
    let mut child = Command::new("script")
        .args([
            "--quiet",
            "--return",
            "--command",
            &line.join(" "),
            "/dev/null",
        ])
        .current_dir(site.root())
        .env_remove("KISUM_MATRIX")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("script (util-linux) runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{answer}\n").as_bytes()).unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    // stdin stays open until the command ends: `script` stops at its EOF.
    let status = child.wait().unwrap();
    drop(stdin);
    (status.code(), reader.join().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_restore_asks_for_the_environment_name() {
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 10).await;
    let site = Site::new(pg.port());
    let before = fingerprint(&pg, "auth_db").await;
    site.backup("auth-db");
    let mut db = connect(&pg, "auth_db").await;
    exec(&mut db, "DELETE FROM notes").await;
    db.close().await.unwrap();
    let damaged = fingerprint(&pg, "auth_db").await;

    let args = ["restore", "local", "auth-db"];
    let (code, screen) = on_a_terminal(&site, &args, "production");
    assert_eq!(code, Some(2), "{screen}");
    assert!(screen.contains("type local to go ahead"), "{screen}");
    assert!(screen.contains("restore not confirmed"), "{screen}");
    assert_eq!(
        fingerprint(&pg, "auth_db").await,
        damaged,
        "nothing changed"
    );
    assert_eq!(databases(&pg).await, ["auth_db"]);

    let (code, screen) = on_a_terminal(&site, &args, "local");
    assert_eq!(code, Some(0), "{screen}");
    assert_eq!(fingerprint(&pg, "auth_db").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_asks_on_a_terminal_and_refuses_without_yes_off_one() {
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 10).await;
    let site = Site::new(pg.port());
    site.backup("auth-db");
    site.expect(&["restore", "local", "auth-db", "--yes"], 0);
    let kept = databases(&pg).await;
    assert_eq!(kept.len(), 2, "{kept:?}");
    let previous = kept.iter().find(|d| d.contains("_previous_")).unwrap();

    let refused = site.expect(&["restore", "local", "auth-db", "--cleanup"], 2);
    assert!(
        stderr(&refused).contains("restore --cleanup not confirmed; nothing was dropped")
            && stderr(&refused).contains("--yes"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(databases(&pg).await, kept, "nothing was dropped");

    let args = ["restore", "local", "auth-db", "--cleanup"];
    let (code, screen) = on_a_terminal(&site, &args, "staging");
    assert_eq!(code, Some(2), "{screen}");
    assert!(
        screen.contains(&format!("drop database {previous}"))
            && screen.contains("type local to go ahead"),
        "the question lists what goes: {screen}"
    );
    assert_eq!(databases(&pg).await, kept, "nothing was dropped");

    let (code, screen) = on_a_terminal(&site, &args, "local");
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains(&format!("dropped {previous}")), "{screen}");
    assert_eq!(databases(&pg).await, ["auth_db"]);
}

/// auth_db and platform_core_db laid out as `deploy local` lays them out:
/// provisioned, with the services' own migrations (tables in the `auth`
/// and `platform_core` schemas, Core's catalog seeded), and one active
/// platform admin in Auth.
async fn deployed_layout(pg: &Postgres) -> Site {
    let site = Site::new(pg.port());
    crate::db::copy_migrations(&site);
    for database in ["auth-db", "platform-core-db"] {
        site.expect(&["db", "provision", "local", database], 0);
    }
    for service in ["platform-core", "auth"] {
        site.expect(&["db", "migrate", "local", service], 0);
    }
    let mut db = connect(pg, "auth_db").await;
    exec(
        &mut db,
        "SET search_path TO auth;
         INSERT INTO users (id, email, password_hash)
             VALUES ('00000000-0000-0000-0000-00000000000a', 'root@kisum.test', 'x');
         INSERT INTO platform_roles (user_id, role)
             VALUES ('00000000-0000-0000-0000-00000000000a', 'platform-admin');",
    )
    .await;
    db.close().await.unwrap();
    site
}

fn sanity(drill: &Value) -> Value {
    let checks = drill["databases"][0]["checks"].as_array().unwrap();
    checks
        .iter()
        .find(|c| c["name"] == "sanity")
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drill_checks_the_deployed_schemas_and_fails_without_an_active_platform_admin() {
    let pg = Postgres::start().await.unwrap();
    let site = deployed_layout(&pg).await;
    for (database, table) in [("auth_db", "users"), ("platform_core_db", "modules")] {
        let mut db = connect(&pg, database).await;
        let public: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(format!("public.{table}"))
            .fetch_one(&mut db)
            .await
            .unwrap();
        assert_eq!(public, None, "{database}: nothing lives in `public`");
    }
    let drill = |database: &str, code| {
        site.backup(database);
        site.json(&["drill", "local", database, "-o", "json"], code)
    };

    let auth = drill("auth-db", 0);
    assert_eq!(
        sanity(&auth)["detail"],
        "an active platform admin exists: 1",
        "{auth:#}"
    );
    let core = drill("platform-core-db", 0);
    let catalog = sanity(&core)["detail"].as_str().unwrap().to_string();
    assert!(
        catalog.starts_with("the module catalog is not empty: "),
        "{core:#}"
    );

    let mut db = connect(&pg, "auth_db").await;
    exec(
        &mut db,
        "SET search_path TO auth; UPDATE users SET status = 'disabled'",
    )
    .await;
    db.close().await.unwrap();
    let insane = drill("auth-db", 1);
    assert_eq!(insane["passed"], false);
    assert_eq!(
        sanity(&insane),
        serde_json::json!({
            "name": "sanity",
            "passed": false,
            "detail": "an active platform admin exists: found 0"
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_without_a_backup_fails_the_drill_with_no_figures() {
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 10).await;
    let site = Site::new(pg.port());
    let reports = site.root().join("reports");
    let drill = failed_drill(&site, &reports);
    assert_eq!(drill["passed"], false);
    let result = &drill["databases"][0];
    assert_eq!(result["passed"], false);
    assert_eq!(result["backup_id"], Value::Null);
    assert_eq!(result["rto_seconds"], Value::Null, "{drill:#}");
    assert_eq!(result["rpo_seconds"], Value::Null, "{drill:#}");
    let checks = result["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 1, "{drill:#}");
    assert_eq!(checks[0]["name"], "backup");
    assert!(
        checks[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("no backup of auth-db in directory "),
        "{drill:#}"
    );

    let markdown = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "md"))
        .unwrap();
    let markdown = std::fs::read_to_string(markdown).unwrap();
    assert!(
        markdown.contains("| auth-db | none | - | 3600 | - | 300 | FAIL (no backup) |"),
        "{markdown}"
    );
    let text = site.expect(&["drill", "local", "auth-db"], 1);
    assert!(
        stderr(&text).contains("drill local: auth-db FAILED: no backup of auth-db"),
        "{}",
        stderr(&text)
    );
    assert!(!stdout(&text).contains("0.0"), "{}", stdout(&text));
}

/// Pids of the `program` processes (pg_dump, pg_restore) that reach the
/// PostgreSQL on `port`.
fn tools_on_port(program: &str, port: u16) -> Vec<u32> {
    let port = port.to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let named = argv.first().is_some_and(|a| a.ends_with(program));
        if named && argv.windows(2).any(|w| w[0] == "-p" && w[1] == port) {
            pids.push(pid);
        }
    }
    pids
}

/// Waits up to 10 s for every `program` process on `port` to be gone.
async fn assert_none_survives(program: &str, port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !tools_on_port(program, port).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{program} outlived the killed kisumctl: {:?}",
            tools_on_port(program, port)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_the_safety_backup_takes_pg_dump_along_and_cleanup_removes_its_staging() {
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 100).await;
    let site = Site::new(pg.port());
    site.backup("auth-db");

    // A lock held elsewhere keeps the safety backup's pg_dump waiting.
    let mut blocker = lock_events(&pg).await;
    let port = pg.port();
    site.kill_when(&["restore", "local", "auth-db", "--yes"], async || {
        (!tools_on_port("pg_dump", port).is_empty()).then_some(())
    })
    .await;
    assert_none_survives("pg_dump", port).await;
    exec(&mut blocker, "ROLLBACK").await;
    blocker.close().await.unwrap();

    let partial = site.store().join(".partial");
    let staged: Vec<_> = std::fs::read_dir(&partial).unwrap().flatten().collect();
    assert_eq!(staged.len(), 1, "the unfinished safety backup is staged");
    let staged = staged[0].path();
    // Another run's staging is not this restore's to remove.
    let foreign = partial.join("20260101T000000Z-auth-db-0000");
    std::fs::create_dir_all(&foreign).unwrap();

    let cleanup = site.expect(&["restore", "local", "auth-db", "--cleanup", "--yes"], 0);
    let expected = format!("removed the unfinished safety backup {}", staged.display());
    assert!(stderr(&cleanup).contains(&expected), "{}", stderr(&cleanup));
    assert!(
        stderr(&cleanup).contains("stopped during the safety backup, before the swap"),
        "the step under way is named, not the one before it: {}",
        stderr(&cleanup)
    );
    assert!(
        !stderr(&cleanup).contains("auth_db_restore_"),
        "the new database was never made: {}",
        stderr(&cleanup)
    );
    assert!(!staged.exists());
    assert!(foreign.is_dir());
    assert_eq!(databases(&pg).await, ["auth_db"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_id_and_its_new_database_share_one_time() {
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 10).await;
    let site = Site::new(pg.port());
    site.backup("auth-db");
    let restored = site.expect(&["restore", "local", "auth-db", "--yes"], 0);
    let id = stdout(&restored).trim().to_string();
    let stamp = id.strip_prefix("auth-db-").expect("the restore id");
    let previous = format!("auth_db_previous_{stamp}");
    assert_eq!(databases(&pg).await, ["auth_db", previous.as_str()]);
    let journal = site
        .root()
        .join(format!(".kisum/local/restores/history/{id}.json"));
    let journal: Value = serde_json::from_str(&std::fs::read_to_string(journal).unwrap()).unwrap();
    assert_eq!(journal["scratch"], format!("auth_db_restore_{stamp}"));

    let unknown = site.expect(&["restore", "local", "nothing-db", "--yes"], 2);
    assert!(
        stderr(&unknown).contains("environment local has no database `nothing-db` (known: "),
        "{}",
        stderr(&unknown)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_whose_backup_fails_verification_measures_nothing_and_fails() {
    let (_pg, site, manifest) = corrupted_auth_db_backup().await;

    let reports = site.root().join("reports");
    let drill = failed_drill(&site, &reports);
    let result = &drill["databases"][0];
    assert_eq!(result["passed"], false, "{drill:#}");
    assert_eq!(result["rto_seconds"], Value::Null, "{drill:#}");
    assert_eq!(result["rpo_seconds"], Value::Null, "{drill:#}");
    let checks = result["checks"].as_array().unwrap();
    for name in ["checksums", "rto", "rpo"] {
        let check = checks.iter().find(|c| c["name"] == name).unwrap();
        assert_eq!(check["passed"], false, "{name}: {drill:#}");
    }
    let rto = checks.iter().find(|c| c["name"] == "rto").unwrap();
    assert!(
        rto["detail"].as_str().unwrap().starts_with("not measured"),
        "{drill:#}"
    );

    let text = site.expect(&["drill", "local", "auth-db"], 1);
    let row = format!(
        "| auth-db | {} | - | 3600 | - | 300 | FAIL (not restored) |",
        manifest["id"].as_str().unwrap()
    );
    assert!(stdout(&text).contains(&row), "{}", stdout(&text));
    assert!(!stdout(&text).contains("- pass rto"), "{}", stdout(&text));
    assert!(
        stderr(&text).contains("could not be restored (RTO and RPO not measured)"),
        "{}",
        stderr(&text)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_restore_names_only_what_exists_and_the_next_command() {
    let (pg, site, _) = corrupted_auth_db_backup().await;

    let restore = site.expect(&["restore", "local", "auth-db", "--yes"], 1);
    let said = stderr(&restore);
    assert!(!said.contains("auth_db_restore_"), "never created: {said}");
    assert!(!said.contains("auth_db_previous_"), "never created: {said}");
    assert!(
        said.contains("auth_db was left serving, unchanged"),
        "{said}"
    );
    assert!(
        said.contains(
            "next: choose another backup (`kisumctl backup list local`), then run \
             `kisumctl restore local auth-db --backup ID`"
        ),
        "{said}"
    );
    assert_eq!(databases(&pg).await, ["auth_db"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_restore_of_a_database_is_refused_and_names_the_running_one() {
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 100).await;
    let site = Site::new(pg.port());
    site.backup("auth-db");

    // A lock held elsewhere keeps the first restore in its safety backup.
    let mut blocker = lock_events(&pg).await;
    let log = site.root().join("first.stderr");
    let mut first = site
        .command(&["restore", "local", "auth-db", "--yes"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let port = pg.port();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while tools_on_port("pg_dump", port).is_empty() {
        assert!(std::time::Instant::now() < deadline, "no safety backup");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // The restore id and journal were printed before the safety backup.
    let said = std::fs::read_to_string(&log).unwrap();
    let id_line = said.find("restore id auth-db-").expect(&said);
    let journal = site.root().join(".kisum/local/restores/auth-db.json");
    assert!(
        said.contains(&format!("journal {}", journal.display())),
        "{said}"
    );
    assert!(id_line < said.find("safety backup of auth_db").expect(&said));
    let running: Value = serde_json::from_str(&std::fs::read_to_string(&journal).unwrap()).unwrap();
    let id = running["restore_id"].as_str().unwrap();

    for args in [
        &["restore", "local", "auth-db", "--yes"][..],
        &["restore", "local", "auth-db", "--cleanup", "--yes"][..],
    ] {
        let refused = site.expect(args, 3);
        let expected = format!(
            "another restore of auth-db is running (restore {id}, pid {}); nothing was changed",
            first.id()
        );
        assert!(stderr(&refused).contains(&expected), "{}", stderr(&refused));
    }
    let after: Value = serde_json::from_str(&std::fs::read_to_string(&journal).unwrap()).unwrap();
    assert_eq!(after, running, "the running restore's journal is untouched");
    assert_eq!(databases(&pg).await, ["auth_db"], "nothing was created");

    exec(&mut blocker, "ROLLBACK").await;
    blocker.close().await.unwrap();
    let status = tokio::task::spawn_blocking(move || first.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "the first restore goes on");
}

/// A client of `db` that runs short queries, and connects again at once
/// when its session is cut, until `stop` is set or two minutes have
/// passed; counts the queries served in `served`.
fn steady_traffic(
    pg: &Postgres,
    db: &str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    served: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    use std::sync::atomic::Ordering;
    let url = pg.url(db);
    tokio::spawn(async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            let Ok(mut conn) = sqlx::PgConnection::connect(&url).await else {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                continue;
            };
            // As a pool does: the session is kept until it is cut.
            while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                let query = sqlx::query("SELECT count(*) FROM users").execute(&mut conn);
                if query.await.is_err() {
                    break;
                }
                served.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            let _ = conn.close().await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_swaps_under_steady_traffic_and_the_clients_reconnect() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 1000).await;
    let site = Site::new(pg.port());
    site.backup("auth-db");
    let mut db = connect(&pg, "auth_db").await;
    exec(&mut db, "INSERT INTO audit.log (line) VALUES ('after')").await;
    db.close().await.unwrap();

    // A session kept open the whole time, as a pool keeps one, and
    // clients opening new ones without a pause.
    let mut pooled = connect(&pg, "auth_db").await;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let served = std::sync::Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| steady_traffic(&pg, "auth_db", stop.clone(), served.clone()))
        .collect();
    while served.load(Ordering::SeqCst) < 10 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let started = std::time::Instant::now();
    let args = ["restore", "local", "auth-db", "--yes"];
    let command = site.command(&args);
    let output = tokio::task::spawn_blocking(move || {
        let mut command = command;
        command.output().unwrap()
    })
    .await
    .unwrap();
    let took = started.elapsed();
    let at_swap = served.load(Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let after_swap = served.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let output = crate::common::assert_exit(&args, output, 0);
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");
    assert!(
        after_swap > at_swap,
        "the clients are served by the restored database: {}",
        stderr(&output)
    );

    // The pooled session was cut; a new one reaches the restored data.
    assert!(sqlx::query("SELECT 1").execute(&mut pooled).await.is_err());
    let mut again = connect(&pg, "auth_db").await;
    let lines: Vec<String> = sqlx::query_scalar("SELECT line FROM audit.log ORDER BY id")
        .fetch_all(&mut again)
        .await
        .unwrap();
    assert_eq!(
        lines,
        ["created"],
        "the backup, without the later line, is live"
    );
    let closed: Vec<String> =
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE NOT datallowconn")
            .fetch_all(&mut again)
            .await
            .unwrap();
    assert_eq!(
        closed,
        ["template0"],
        "every other database takes connections"
    );
    again.close().await.unwrap();
}

/// Whether `name` refuses new connections (`datallowconn` false).
async fn refuses_connections(pg: &Postgres, name: &str) -> bool {
    let mut admin = connect(pg, "postgres").await;
    let closed: Option<bool> =
        sqlx::query_scalar("SELECT NOT datallowconn FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_optional(&mut admin)
            .await
            .unwrap();
    admin.close().await.unwrap();
    closed == Some(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_killed_before_its_renames_is_cleaned_up_saying_what_it_found() {
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 100).await;
    let site = Site::new(pg.port());
    site.backup("auth-db");
    let before = fingerprint(&pg, "auth_db").await;

    // A session on the new database makes its rename fail (in use) for a
    // few seconds of retries, while the live one refuses connections:
    // the kill lands between the closing and the renames.
    let mut holder: Option<sqlx::PgConnection> = None;
    site.kill_when(&["restore", "local", "auth-db", "--yes"], async || {
        if holder.is_none() {
            let scratch = databases(&pg)
                .await
                .into_iter()
                .find(|d| d.starts_with("auth_db_restore_"))?;
            holder = Some(connect(&pg, &scratch).await);
        }
        refuses_connections(&pg, "auth_db").await.then_some(())
    })
    .await;
    holder.unwrap().close().await.unwrap();
    assert!(refuses_connections(&pg, "auth_db").await);
    assert!(
        sqlx::PgConnection::connect(&pg.url("auth_db"))
            .await
            .is_err()
    );
    let journal: Value = serde_json::from_str(
        &std::fs::read_to_string(site.root().join(".kisum/local/restores/auth-db.json")).unwrap(),
    )
    .unwrap();
    let safety = journal["safety_backup"].as_str().unwrap().to_string();

    let cleanup = site.expect(&["restore", "local", "auth-db", "--cleanup", "--yes"], 0);
    let said = stderr(&cleanup);
    assert!(
        said.contains("stopped while swapping the restored data in, before the swap")
            && said.contains("auth_db was refusing new connections; allowed again")
            && !said.contains("left serving, unchanged"),
        "{said}"
    );
    let kept = format!(
        "the safety backup {safety} was kept in directory {}",
        site.store().display()
    );
    assert!(said.contains(&kept), "{said}");
    assert!(site.store().join(&safety).join("manifest.json").is_file());
    assert!(!refuses_connections(&pg, "auth_db").await);
    assert_eq!(
        fingerprint(&pg, "auth_db").await,
        before,
        "the original serves"
    );
    assert_eq!(databases(&pg).await, ["auth_db"]);
}

/// The files (path, mode) with some content under `dir`, at any depth.
fn files_under(dir: &std::path::Path) -> Vec<(PathBuf, u32)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if meta.is_dir() {
            files.extend(files_under(&entry.path()));
        } else if meta.len() > 0 {
            files.push((entry.path(), mode(&entry.path())));
        }
    }
    files
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).map_or(0, |m| m.permissions().mode() & 0o777)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_an_encrypted_restore_leaves_private_scratch_the_next_run_removes() {
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 1_000_000).await;
    let site = Site::new(pg.port());
    encrypt_backups(&site);
    site.backup("auth-db");

    // Killed once the decrypted copy exists and pg_restore reads it.
    let port = pg.port();
    let scratch = site.root().join(".kisum/local/backup-scratch");
    let files = site
        .kill_when(&["restore", "local", "auth-db", "--yes"], async || {
            let files = files_under(&scratch);
            (!files.is_empty() && !tools_on_port("pg_restore", port).is_empty()).then_some(files)
        })
        .await;
    assert_none_survives("pg_restore", port).await;
    let relative = files[0].0.strip_prefix(&scratch).unwrap().to_path_buf();
    let dir = scratch.join(relative.components().next().unwrap());
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("work-"), "{name}");
    for (path, file_mode) in &files {
        assert_eq!(*file_mode, 0o600, "{}", path.display());
        for parent in path
            .ancestors()
            .skip(1)
            .take_while(|p| p.starts_with(&scratch))
        {
            assert_eq!(mode(parent), 0o700, "{}", parent.display());
        }
    }
    let decrypted = std::fs::read(&files[0].0).unwrap();
    assert!(
        !decrypted.starts_with(b"age-encryption.org/v1"),
        "a decrypted copy"
    );

    // The next run, a backup here, removes the dead run's scratch.
    site.backup("auth-db");
    assert!(!dir.exists(), "{} was left behind", dir.display());
    site.expect(&["restore", "local", "auth-db", "--cleanup", "--yes"], 0);
    assert_eq!(databases(&pg).await, ["auth_db"]);
}

#[test]
fn verifying_an_empty_store_is_a_failed_check_that_says_so() {
    let site = Site::new(kisum_testkit::free_port().unwrap());
    let text = site.expect(&["backup", "verify", "local"], 1);
    assert!(
        stdout(&text).starts_with("no backups of local in "),
        "{}",
        stdout(&text)
    );
    let json = site.json(&["backup", "verify", "local", "-o", "json"], 1);
    assert_eq!(json["passed"], false);
    assert_eq!(json["verified"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_to_kisumctl_alone_stops_a_backup_and_its_pg_dump() {
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 1_000_000).await;
    let site = Site::new(pg.port());
    let partial = site.store().join(".partial");
    let port = pg.port();
    let stopped = site
        .signal_when(&["backup", "local", "auth-db"], "INT", async || {
            let staged = std::fs::read_dir(&partial).ok()?.flatten().next()?.path();
            let dumping = tools_on_port("pg_dump", port);
            (!dumping.is_empty() && staged.join("auth_db.dump").is_file()).then_some(dumping)
        })
        .await;
    assert_eq!(stopped.code, Some(3), "{}", stopped.stderr);
    assert!(stopped.seconds < 5.0, "took {} s", stopped.seconds);
    assert!(
        stopped.stderr.contains("interrupted by SIGINT")
            && stopped.stderr.contains("kisumctl backup local auth-db"),
        "{}",
        stopped.stderr
    );
    for pid in stopped.found.iter().chain(&stopped.children) {
        assert!(!crate::site::is_alive(*pid), "pid {pid} outlived the run");
    }
    assert!(tools_on_port("pg_dump", port).is_empty());
    assert!(!partial.exists(), "the staged backup is removed");
    let list = site.json(&["backup", "list", "local", "-o", "json"], 0);
    assert_eq!(list["backups"], serde_json::json!([]), "{list:#}");
    assert_eq!(list["unfinished"], serde_json::json!([]), "{list:#}");
    assert_eq!(site.last_journal_result(), "interrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_kisumctl_alone_stops_a_restore_and_the_original_keeps_serving() {
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 1_000_000).await;
    let site = Site::new(pg.port());
    site.backup("auth-db");
    let before = fingerprint(&pg, "auth_db").await;
    let port = pg.port();
    let stopped = site
        .signal_when(
            &["restore", "local", "auth-db", "--yes"],
            "TERM",
            async || {
                let restoring = databases(&pg)
                    .await
                    .iter()
                    .any(|d| d.starts_with("auth_db_restore_"));
                let tools = tools_on_port("pg_restore", port);
                (restoring && !tools.is_empty()).then_some(tools)
            },
        )
        .await;
    assert_eq!(stopped.code, Some(3), "{}", stopped.stderr);
    assert!(stopped.seconds < 10.0, "took {} s", stopped.seconds);
    assert!(
        stopped.stderr.contains("interrupted by SIGTERM")
            && stopped
                .stderr
                .contains("auth_db was left serving, unchanged")
            && stopped
                .stderr
                .contains("next: run `kisumctl restore local auth-db"),
        "{}",
        stopped.stderr
    );
    for pid in &stopped.found {
        assert!(
            !crate::site::is_alive(*pid),
            "pg_restore {pid} outlived the run"
        );
    }
    assert_eq!(fingerprint(&pg, "auth_db").await, before);
    assert_eq!(
        databases(&pg).await,
        ["auth_db"],
        "the new database was dropped"
    );
    assert_eq!(site.last_journal_result(), "interrupted");

    let cleanup = site.expect(&["restore", "local", "auth-db", "--cleanup", "--yes"], 0);
    assert_eq!(stdout(&cleanup), "", "nothing is left to drop");
    assert_eq!(databases(&pg).await, ["auth_db"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scratch_database_of_a_killed_drill_is_dropped_by_the_next_drill() {
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 1_000_000).await;
    let site = Site::new(pg.port());
    site.backup("auth-db");
    let port = pg.port();
    let scratch = site
        .kill_when(&["drill", "local", "auth-db"], async || {
            let names = databases(&pg).await;
            let scratch = names
                .into_iter()
                .find(|d| d.starts_with("auth_db_drill_"))?;
            (!tools_on_port("pg_restore", port).is_empty()).then_some(scratch)
        })
        .await;
    assert_none_survives("pg_restore", port).await;
    assert_eq!(
        databases(&pg).await,
        ["auth_db".to_string(), scratch.clone()],
        "the killed drill left its scratch database"
    );

    let next = site.expect(&["drill", "local", "auth-db"], 0);
    assert!(
        stderr(&next).contains(&format!(
            "dropped the scratch database {scratch} left by a stopped drill (pid "
        )),
        "{}",
        stderr(&next)
    );
    assert_eq!(databases(&pg).await, ["auth_db"]);
    let records = site.root().join(".kisum/local/drills/scratch");
    assert_eq!(
        std::fs::read_dir(&records).unwrap().count(),
        0,
        "no record is left in {}",
        records.display()
    );
}

/// auth_db big enough to interrupt, and a small platform_core_db after it
/// in restore order.
async fn two_databases(pg: &Postgres) -> Site {
    seed_auth_db(pg, 1_000_000).await;
    let mut admin = connect(pg, "postgres").await;
    exec(&mut admin, "CREATE DATABASE platform_core_db").await;
    let mut core = connect(pg, "platform_core_db").await;
    exec(
        &mut core,
        "CREATE TABLE modules (id int); INSERT INTO modules VALUES (1)",
    )
    .await;
    Site::new(pg.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_to_the_process_group_stops_a_backup_of_several_databases() {
    let pg = Postgres::start().await.unwrap();
    let site = two_databases(&pg).await;
    let port = pg.port();
    let stopped = site
        .signal_group_when(
            &["backup", "local", "auth-db", "platform-core-db"],
            "INT",
            async || {
                let dumping = tools_on_port("pg_dump", port);
                (!dumping.is_empty()).then_some(dumping)
            },
        )
        .await;
    assert_eq!(stopped.code, Some(3), "{}", stopped.stderr);
    assert!(
        stopped.stderr.contains("interrupted by SIGINT"),
        "{}",
        stopped.stderr
    );
    assert!(
        !stopped.stderr.contains("platform-core-db into"),
        "the run stops before the next database: {}",
        stopped.stderr
    );
    let list = site.json(&["backup", "list", "local", "-o", "json"], 0);
    assert_eq!(list["backups"], serde_json::json!([]), "{list:#}");
    assert_eq!(site.last_journal_result(), "interrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_to_the_process_group_stops_a_drill_and_saves_no_failure() {
    let pg = Postgres::start().await.unwrap();
    let site = two_databases(&pg).await;
    site.backup("auth-db");
    site.backup("platform-core-db");
    let port = pg.port();
    let reports = site.root().join("reports");
    let stopped = site
        .signal_group_when(
            &[
                "drill",
                "local",
                "auth-db",
                "platform-core-db",
                "--report-dir",
                reports.to_str().unwrap(),
            ],
            "INT",
            async || {
                let restoring = tools_on_port("pg_restore", port);
                (!restoring.is_empty()).then_some(restoring)
            },
        )
        .await;
    assert_eq!(stopped.code, Some(3), "{}", stopped.stderr);
    assert!(
        stopped.stderr.contains("interrupted by SIGINT")
            && !stopped.stderr.contains("drill local: platform-core-db"),
        "{}",
        stopped.stderr
    );
    assert!(!reports.exists(), "no report is written");
    assert!(
        !site.store().join(".drills").exists(),
        "no report is kept in the store"
    );
    assert_eq!(
        databases(&pg).await,
        ["auth_db"],
        "the scratch copy is gone"
    );
    assert_eq!(site.last_journal_result(), "interrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_refuses_a_retention_that_validate_rejects() {
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 10).await;
    let site = Site::new(pg.port());
    let id = site.backup("auth-db")["id"].as_str().unwrap().to_string();
    age_backup(&site, &id, 1);
    site.edit("environments/local.yaml", |text| {
        text.replacen("retention-days: 3", "retention-days: 0", 1)
    });

    let refused = site.expect(&["backup", "prune", "local"], 2);
    let text = stderr(&refused);
    assert!(
        text.contains("error[backups-complete] (local)")
            && text.contains("environments/local.yaml:60:")
            && text.contains("retention-days: no retention")
            && text.contains("nothing was pruned"),
        "{text}"
    );
    site.expect(&["backup", "prune", "local", "--dry-run"], 2);
    let list = site.json(&["backup", "list", "local", "-o", "json"], 0);
    assert_eq!(strings(&list["backups"], "id"), [id], "{list:#}");
}

#[test]
fn an_unreachable_s3_store_fails_restore_like_the_other_commands() {
    let port = crate::common::refused_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut site = s3_site_at(crate::common::refused_port(), &endpoint);
    site.env.push(("AWS_MAX_ATTEMPTS".into(), "1".into()));
    site.expect(&["backup", "list", "local"], 3);
    let restore = site.expect(&["restore", "local", "auth-db", "--yes"], 3);
    assert!(
        stderr(&restore).contains(&format!("cannot reach {endpoint}")),
        "{}",
        stderr(&restore)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_a_backup_id_that_does_not_exist_names_it_and_the_store() {
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 10).await;
    let site = Site::new(pg.port());
    site.backup("auth-db");
    let id = "20261205T061500Z-auth-db-0a1f";
    let output = site.expect(
        &["restore", "local", "auth-db", "--backup", id, "--dry-run"],
        2,
    );
    let text = stderr(&output);
    assert!(
        text.contains(&format!("no backup {id} in directory")) && !text.contains("os error"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_fails_a_manifest_whose_finish_time_is_not_a_time() {
    let pg = Postgres::start().await.unwrap();
    seed_auth_db(&pg, 10).await;
    let site = Site::new(pg.port());
    let id = site.backup("auth-db")["id"].as_str().unwrap().to_string();
    let path = site.store().join(&id).join("manifest.json");
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    manifest["finished_at"] = Value::from("not-a-time");
    std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();

    let verify = site.expect(&["backup", "verify", "local", &id], 1);
    assert!(
        stdout(&verify).contains("finished_at is not a time"),
        "{}",
        stdout(&verify)
    );
}
