//! `kisumctl db provision`, `db migrate` and `db status` against a private
//! PostgreSQL cluster per test (SCRAM logins where passwords matter) and
//! mongoeco, with the services' real migrations.

use std::path::Path;

use kisum_testkit::{Mongo, Postgres};
use sha2::Digest as _;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};

use crate::common::{Moto, root, sealed_aws, stderr, stdout};
use crate::site::{Site, connect, exec};

/// A site on a fresh PostgreSQL and mongoeco.
pub async fn site() -> (Site, Postgres, Mongo) {
    let pg = Postgres::start().await.unwrap();
    let mongo = Mongo::start().await.unwrap();
    let site = Site::new(pg.port());
    site.edit("environments/local.yaml", |t| {
        t.replace("port: 27117", &format!("port: {}", mongo.port()))
    });
    (site, pg, mongo)
}

/// From now on every login needs its password (SCRAM), the superuser's
/// included; the site's secret store gets that password.
pub async fn require_passwords(site: &Site, pg: &Postgres) {
    scram_only(pg).await;
    site.secret("local-postgres-superuser", "password", "superuser-secret");
}

/// Every login of `pg` needs its password; the superuser's is
/// `superuser-secret`.
async fn scram_only(pg: &Postgres) {
    let mut admin = connect(pg, "postgres").await;
    exec(&mut admin, "ALTER ROLE kisum PASSWORD 'superuser-secret'").await;
    let hba = pg.data_dir().join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, text.replace("trust", "scram-sha-256")).unwrap();
    exec(&mut admin, "SELECT pg_reload_conf()").await;
    admin.close().await.unwrap();
}

async fn login(url: &str) -> Result<PgConnection, sqlx::Error> {
    PgConnection::connect(url).await
}

/// `url` with another database in its path.
fn on_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').unwrap();
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{database}?{query}")
}

async fn fails(conn: &mut PgConnection, sql: &str) -> String {
    match sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut *conn)
        .await
    {
        Ok(_) => panic!("{sql} should have been refused"),
        Err(error) => error.to_string(),
    }
}

/// How many migration, group and login roles exist.
async fn service_roles(admin: &mut PgConnection) -> i64 {
    let query = "SELECT count(*) FROM pg_roles WHERE rolname LIKE '%\\_migrator' OR rolname LIKE '%\\_app%'";
    sqlx::query_scalar(query).fetch_one(admin).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_makes_least_privilege_roles_and_a_second_run_changes_nothing() {
    let (site, pg, _mongo) = site().await;
    require_passwords(&site, &pg).await;

    let dry = site.expect(&["db", "provision", "local", "--dry-run"], 0);
    let plan = stdout(&dry);
    for line in [
        "auth-db (",
        "role auth_migrator",
        "auth_app_a and auth_app_b",
        "user basic_app",
    ] {
        assert!(plan.contains(line), "{line}: {plan}");
    }
    let mut admin = PgConnection::connect(
        &pg.url("postgres")
            .replace("kisum@", "kisum:superuser-secret@"),
    )
    .await
    .unwrap();
    assert_eq!(
        service_roles(&mut admin).await,
        0,
        "a dry run creates nothing"
    );

    let first = site.expect(&["db", "provision", "local"], 0);
    assert!(
        stderr(&first).contains("auth-db: role auth_migrator created"),
        "{}",
        stderr(&first)
    );
    assert_eq!(
        service_roles(&mut admin).await,
        6 * 4,
        "four roles per PostgreSQL database"
    );

    // Nothing with power: no superuser, no CREATEDB, CREATEROLE or BYPASSRLS.
    let powerful: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_roles WHERE (rolname LIKE 'auth\\_%' OR rolname LIKE 'platform\\_core\\_%') \
         AND (rolsuper OR rolcreatedb OR rolcreaterole OR rolbypassrls OR rolreplication)",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(powerful, 0);
    let (owner, public_connects): (String, bool) = sqlx::query_as(
        "SELECT pg_get_userbyid(datdba)::text, has_database_privilege('public', 'auth_db', 'CONNECT') \
         FROM pg_database WHERE datname = 'auth_db'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!((owner.as_str(), public_connects), ("auth_migrator", false));

    // The service's login, from its secret, with the SCRAM verifier set.
    let app_url = site.read_secret("auth-db-credentials", "url");
    assert!(
        app_url.starts_with("postgres://auth_app_a:"),
        "the first login is active"
    );
    let mut app = login(&app_url)
        .await
        .expect("auth_app_a logs in with its secret");
    let denied = fails(&mut app, "CREATE TABLE public.t (id int)").await;
    assert!(denied.contains("permission denied"), "{denied}");
    let denied = fails(&mut app, "CREATE TABLE auth.t (id int)").await;
    assert!(denied.contains("permission denied"), "{denied}");
    let other = login(&on_database(&app_url, "platform_core_db"))
        .await
        .unwrap_err();
    assert!(other.to_string().contains("permission denied"), "{other}");

    // What the migration role creates, the group may use but not drop.
    let migration_url = site.read_secret("auth-db-migration-credentials", "url");
    let mut migrator = login(&migration_url).await.unwrap();
    exec(
        &mut migrator,
        "CREATE TABLE notes (id bigserial PRIMARY KEY, body text)",
    )
    .await;
    exec(
        &mut app,
        "INSERT INTO notes (body) VALUES ('from the service')",
    )
    .await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM auth.notes")
        .fetch_one(&mut app)
        .await
        .unwrap();
    assert_eq!(count, 1);
    let denied = fails(&mut app, "DROP TABLE notes").await;
    assert!(denied.contains("must be owner"), "{denied}");
    app.close().await.unwrap();

    // The second login exists, in the group, with no password until a rotation.
    let standby: (bool, bool) = sqlx::query_as(
        "SELECT rolcanlogin, pg_has_role('auth_app_b', 'auth_app', 'MEMBER') FROM pg_roles \
         WHERE rolname = 'auth_app_b'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(standby, (true, true));
    let password = app_url
        .split(':')
        .nth(2)
        .unwrap()
        .split('@')
        .next()
        .unwrap();
    let standby_url = app_url.replace("auth_app_a:", "auth_app_b:");
    assert!(
        login(&standby_url).await.is_err(),
        "{password:.0}no password yet"
    );

    // MongoDB: the emulator manages no users; the plan says so.
    assert!(
        stderr(&first).contains("main-db: user basic_app skipped"),
        "{}",
        stderr(&first)
    );
    assert!(!site.read_secret("main-db-credentials", "url").contains('@'));

    // Idempotent: nothing is created or changed the second time.
    let second = site.expect(&["db", "provision", "local"], 0);
    assert!(
        stderr(&second).contains(" 0 created, 0 updated,"),
        "{}",
        stderr(&second)
    );
    let app = login(&app_url)
        .await
        .expect("the same password still works");
    app.close().await.unwrap();

    // No value of a secret on any output.
    for output in [&dry, &first, &second] {
        for text in [stdout(output), stderr(output)] {
            assert!(!text.contains(password), "a password was printed");
            assert!(!text.contains("superuser-secret"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_plans_any_environment_and_refuses_unknown_databases() {
    // The plan needs neither the database nor the secret backend: a
    // production plan is printed here without reaching either (the
    // apply would need both; it is exercised on `local` above).
    let site = Site::new(25433);
    let dry = site.expect(
        &["db", "provision", "production", "auth-db", "--dry-run"],
        0,
    );
    assert!(
        stdout(&dry).contains("role auth_migrator"),
        "{}",
        stdout(&dry)
    );
    let unknown = site.expect(&["db", "provision", "local", "nothing-db"], 2);
    assert!(
        stderr(&unknown).contains("no database `nothing-db`"),
        "{}",
        stderr(&unknown)
    );
}

/// The keys of secret `name` (AWSCURRENT) in moto's Secrets Manager.
async fn aws_secret(
    client: &aws_sdk_secretsmanager::Client,
    name: &str,
) -> std::collections::BTreeMap<String, String> {
    crate::common::secret_at(client, name, "AWSCURRENT")
        .await
        .unwrap_or_else(|| panic!("{name}: no AWSCURRENT version"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_an_aws_environment_keeps_its_credentials_in_secrets_manager() {
    // staging as the matrix has it (Secrets Manager, prefix kisum/staging/),
    // with its secret endpoint on moto and auth-db on a private cluster
    // that requires passwords.
    let pg = Postgres::start().await.unwrap();
    scram_only(&pg).await;
    let moto = Moto::start().await;
    let mut site = Site::new(pg.port());
    site.env = sealed_aws();
    site.edit("environments/staging.yaml", |t| {
        t.replace(
            "  prefix: kisum/staging/\n",
            &format!("  prefix: kisum/staging/\n  endpoint: {}\n", moto.endpoint()),
        )
        .replace(
            "endpoint: { host: auth-postgres.staging.db.kisum.internal, port: 5432, cidr: 10.30.10.0/28 }\n    publicly-accessible: false\n    tls-required: true",
            &format!(
                "endpoint: {{ host: 127.0.0.1, port: {}, cidr: 10.30.10.0/28 }}\n    publicly-accessible: false\n    tls-required: false",
                pg.port()
            ),
        )
    });
    let client = moto.secrets_manager();

    // Without the administrator's login in Secrets Manager: refused, naming it.
    let missing = site.expect(&["db", "provision", "staging", "auth-db"], 3);
    assert!(
        stderr(&missing).contains("auth-postgres-superuser"),
        "{}",
        stderr(&missing)
    );
    client
        .create_secret()
        .name("kisum/staging/auth-postgres-superuser")
        .secret_string(
            serde_json::json!({ "username": "kisum", "password": "superuser-secret" }).to_string(),
        )
        .send()
        .await
        .unwrap();

    let first = site.expect(&["db", "provision", "staging", "auth-db"], 0);
    assert!(
        stderr(&first).contains("auth-db: role auth_migrator created"),
        "{}",
        stderr(&first)
    );
    assert!(
        stderr(&first).contains("auth-db: secret auth-db-credentials updated"),
        "{}",
        stderr(&first)
    );
    let app = aws_secret(&client, "kisum/staging/auth-db-credentials").await;
    let migration = aws_secret(&client, "kisum/staging/auth-db-migration-credentials").await;
    assert_eq!(app["username"], "auth_app_a");
    assert_eq!(migration["username"], "auth_migrator");
    assert!(app["password"].len() >= 32 && migration["password"].len() >= 32);
    assert!(
        app["url"].starts_with("postgres://auth_app_a:"),
        "{}",
        app["url"].len()
    );
    // Nothing went to local files (the site's local store holds only what
    // the test put there for `local`); staging's state directory holds at
    // most the operation journal.
    let staging = site.root().join(".kisum/staging");
    if staging.exists() {
        let names: Vec<String> = std::fs::read_dir(&staging)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["journal.jsonl"], "{names:?}");
    }
    let local: Vec<_> = std::fs::read_dir(site.secrets_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(local, ["local-postgres-superuser"]);

    // The logins work with what Secrets Manager holds.
    let mut service = login(&app["url"]).await.expect("the service's login");
    let denied = fails(&mut service, "CREATE TABLE public.t (id int)").await;
    assert!(denied.contains("permission denied"), "{denied}");
    service.close().await.unwrap();
    let mut migrator = login(&migration["url"]).await.expect("the migration login");
    exec(&mut migrator, "CREATE TABLE notes (id int)").await;
    migrator.close().await.unwrap();

    // A second run creates nothing, changes no password and makes no new
    // secret version.
    let versions = |name: &'static str| {
        let client = client.clone();
        async move {
            client
                .list_secret_version_ids()
                .secret_id(name)
                .send()
                .await
                .unwrap()
                .versions()
                .len()
        }
    };
    let before = versions("kisum/staging/auth-db-credentials").await;
    let second = site.expect(&["db", "provision", "staging", "auth-db"], 0);
    assert!(
        stderr(&second).contains(" 0 created, 0 updated,"),
        "{}",
        stderr(&second)
    );
    assert_eq!(versions("kisum/staging/auth-db-credentials").await, before);
    assert_eq!(
        aws_secret(&client, "kisum/staging/auth-db-credentials").await,
        app
    );
    let json = site.expect(&["db", "provision", "staging", "auth-db", "-o", "json"], 0);

    // No credential value on any output.
    let values = [
        app["password"].as_str(),
        migration["password"].as_str(),
        app["url"].as_str(),
        "superuser-secret",
    ];
    for output in [&missing, &first, &second, &json] {
        for text in [stdout(output), stderr(output)] {
            for value in values {
                assert!(!text.contains(value), "a credential was printed");
            }
        }
    }
}

/// Copies the services' migration directories into the site, where the
/// matrix's relative `migrations` paths point.
pub fn copy_migrations(site: &Site) {
    for dir in [
        "services/auth/migrations",
        "services/core/migrations",
        "services/admin/migrations",
        "services/module/migrations",
    ] {
        copy_dir(&root().join(dir), &site.root().join(dir));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// `needles` are all in `text`, in this order.
fn assert_in_order(text: &str, needles: &[&str]) {
    let at: Vec<usize> = needles
        .iter()
        .map(|n| {
            text.find(n)
                .unwrap_or_else(|| panic!("{n} missing from:\n{text}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "order: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_in_release_order_and_the_services_agree_with_them() {
    let (site, _pg, _mongo) = site().await;
    copy_migrations(&site);
    site.expect(&["db", "provision", "local"], 0);

    let status = site.expect(&["db", "status", "local"], 1);
    assert!(
        stdout(&status).contains("pending: 1, 2, 3, 4"),
        "{}",
        stdout(&status)
    );

    let dry = site.expect(&["db", "migrate", "local", "--dry-run"], 0);
    let listed = stdout(&dry);
    assert_in_order(
        &listed,
        &[
            "platform-core-db (platform-core): would apply 2",
            "auth-db (auth): would apply 5",
            "finance-db (finance): would apply 2",
            "platform-admin-db (platform-admin): would apply",
        ],
    );
    site.expect(&["db", "status", "local"], 1);

    let run = site.expect(&["db", "migrate", "local"], 0);
    let applied = stderr(&run);
    assert_in_order(
        &applied,
        &[
            "0001_entitlements_schema.sql",
            "0001_auth_schema.sql",
            "0005_disabled_users_lose_sessions.sql",
            "finance/0001_invoices.sql",
            "0001_admin_schema.sql",
        ],
    );
    let status = site.expect(&["db", "status", "local"], 0);
    assert!(!stdout(&status).contains("pending"), "{}", stdout(&status));
    let again = site.expect(&["db", "migrate", "local"], 0);
    assert!(
        stdout(&again).contains("auth-db (auth): applied 0, 5 applied before"),
        "{}",
        stdout(&again)
    );
    // Provision and both migrations are journaled; dry runs and status
    // queries are not.
    let ok = |command: &str| (command.to_string(), "ok".to_string(), 0);
    assert_eq!(
        site.journal("local"),
        [ok("db provision"), ok("db migrate"), ok("db migrate")]
    );

    // Each service, logged in as its own login, finds its schema current.
    let pool = |secret_name: &str| {
        let url = site.read_secret(secret_name, "url");
        PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy(&url)
            .unwrap()
    };
    let auth = pool("auth-db-credentials");
    let state = kisum_common::schema::state(&auth, &kisum_auth::db::MIGRATOR)
        .await
        .unwrap();
    assert_eq!(state, kisum_common::schema::SchemaState::Current);
    let core = pool("platform-core-db-credentials");
    let state = kisum_common::schema::state(&core, &kisum_core::migrations::MIGRATOR)
        .await
        .unwrap();
    assert_eq!(state, kisum_common::schema::SchemaState::Current);
    let admin = pool("platform-admin-db-credentials");
    let state = kisum_common::schema::state(&admin, &kisum_admin::migrations::MIGRATOR)
        .await
        .unwrap();
    assert_eq!(state, kisum_common::schema::SchemaState::Current);
    let finance_url = site.read_secret("finance-db-credentials", "url");
    let finance =
        kisum_module::store::Database::open(kisum_module::module::Module::Finance, &finance_url)
            .await
            .unwrap();
    finance
        .require_current(kisum_module::module::Module::Finance)
        .await
        .unwrap();

    // The service may read the bookkeeping but not change it.
    let mut app = auth.acquire().await.unwrap();
    let denied = fails(&mut app, "DELETE FROM _sqlx_migrations").await;
    assert!(denied.contains("permission denied"), "{denied}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_migration_is_caught() {
    let (site, pg, _mongo) = site().await;
    copy_migrations(&site);
    site.expect(&["db", "provision", "local", "auth-db"], 0);
    site.expect(&["db", "migrate", "local", "auth"], 0);

    let dir = site.root().join("services/auth/migrations");
    let file = dir.join("0002_disabled_users.sql");
    let before = std::fs::read(&file).unwrap();
    let mut after = before.clone();
    after.extend_from_slice(b"\n-- a later edit\n");
    std::fs::write(&file, &after).unwrap();
    std::fs::write(
        dir.join("0005_new_table.sql"),
        "create table after_the_edit (id int);\n",
    )
    .unwrap();

    let refused = site.expect(&["db", "migrate", "local", "auth"], 1);
    let message = stderr(&refused);
    let applied = hex::encode(sha2::Sha384::digest(&before));
    let now = hex::encode(sha2::Sha384::digest(&after));
    for part in [
        "0002_disabled_users.sql",
        "version 2",
        &applied,
        &now,
        "nothing was run",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }
    let mut db = connect(&pg, "auth_db").await;
    let created: bool = sqlx::query_scalar("SELECT to_regclass('auth.after_the_edit') IS NOT NULL")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(!created, "nothing ran after the refusal");
    let status = site.expect(&["db", "status", "local"], 1);
    assert!(
        stdout(&status).contains("changed after it was applied"),
        "{}",
        stdout(&status)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_migration_is_reported_and_the_next_run_resumes_from_it() {
    let (site, pg, _mongo) = site().await;
    site.expect(&["db", "provision", "local", "finance-db"], 0);
    let dir = site.root().join("services/module/migrations/finance");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("0001_first.sql"), "create table first (id int);").unwrap();
    let broken = "create table second (id int);\nselect 1 / 0;\n";
    std::fs::write(dir.join("0002_second.sql"), broken).unwrap();
    std::fs::write(dir.join("0003_third.sql"), "create table third (id int);").unwrap();

    let failed = site.json(&["db", "migrate", "local", "finance", "-o", "json"], 3);
    let error = failed["error"].as_str().unwrap();
    for part in [
        "0002_second.sql",
        "division by zero",
        "1 migration(s) before it are applied",
        "starts again from it",
    ] {
        assert!(error.contains(part), "{part}: {error}");
    }
    assert!(
        !error.contains("at line") && !error.contains("error returned from database"),
        "PostgreSQL's source position and sqlx's prefix are left out: {error}"
    );
    let mut db = connect(&pg, "finance_db").await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'finance' AND tablename <> '_sqlx_migrations' ORDER BY 1",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(tables, ["first"], "the failed migration was rolled back");
    let status = site.json(&["db", "status", "local", "-o", "json"], 1);
    let finance = status["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["database"] == "finance-db")
        .unwrap();
    assert_eq!(finance["applied"], serde_json::json!([1]));
    assert_eq!(finance["pending"].as_array().unwrap().len(), 2);

    std::fs::write(
        dir.join("0002_second.sql"),
        "create table second (id int);\n",
    )
    .unwrap();
    let resumed = site.json(&["db", "migrate", "local", "finance", "-o", "json"], 0);
    let report = &resumed["databases"][0];
    assert_eq!(report["already"], 1);
    let versions: Vec<i64> = report["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_waits_for_the_lock_a_service_holds() {
    use sqlx::migrate::Migrate as _;
    let (site, pg, _mongo) = site().await;
    copy_migrations(&site);
    site.expect(&["db", "provision", "local", "auth-db"], 0);
    // sqlx's own migrator takes this lock in a service's `migrate`.
    let mut service = connect(&pg, "auth_db").await;
    service.lock().await.unwrap();
    let blocked = site.expect(
        &["db", "migrate", "local", "auth", "--lock-timeout", "1"],
        3,
    );
    assert!(
        stderr(&blocked).contains("advisory lock"),
        "{}",
        stderr(&blocked)
    );
    service.unlock().await.unwrap();
    site.expect(
        &["db", "migrate", "local", "auth", "--lock-timeout", "1"],
        0,
    );
}

#[test]
fn the_secrets_kisumctl_logs_in_with_are_in_the_inventory() {
    let output = crate::common::kisumctl(
        &root(),
        &[
            "inventory",
            "production",
            "--table",
            "secrets",
            "-o",
            "json",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let inventory: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let category = |name: &str| {
        inventory["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["secret"] == name)
            .map(|s| s["category"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{name} is not in the inventory"))
    };
    for (secret, expected) in [
        ("auth-postgres-superuser", "database-admin-credential"),
        (
            "market-touring-mongo-superuser",
            "database-admin-credential",
        ),
        (
            "auth-db-migration-credentials",
            "database-migration-credential",
        ),
        ("redis-admin-credentials", "redis-admin-credential"),
        ("backup-age-identity", "backup-encryption-key"),
    ] {
        assert_eq!(category(secret), expected, "{secret}");
    }
}
