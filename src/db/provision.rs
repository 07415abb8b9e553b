//! `db provision`: the roles, users, databases and privileges of every
//! database of an environment, and the credentials the services and the
//! migrations log in with.
//!
//! PostgreSQL (plan 9.1), per database, with the names of [`RoleNames`]:
//! a migration role that owns the database, its schema and every object in
//! it; a group role without login holding USAGE on that schema and DML on
//! its tables and sequences, and CONNECT on that database only; two login
//! roles in the group, of which the credentials secret names one, so that
//! a password rotates by moving the service to the other; PUBLIC may not
//! connect, nobody but the owner may create in `public`. No role is a
//! superuser or may create databases or roles. Role passwords are sent as
//! SCRAM verifiers, never in clear.
//!
//! MongoDB (10.2), per database: a role granting the service's actions on
//! its own database only (no drop, no user or role management) and one user
//! holding it, through `createRole`/`updateRole` and
//! `createUser`/`updateUser`. A server without user management (the
//! emulator of the local environment) gets no user: its URL carries no
//! login, and the plan says so.
//!
//! Planning reads only the matrix; applying converges what exists and
//! creates what is missing, so a second run changes nothing. Passwords come
//! from the secret store (generated there once when missing) and are never
//! part of a plan, a change or an error.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use mongodb::bson::{Document, doc};
use serde::Serialize;
use sqlx::{Connection as _, PgConnection};

use super::{RoleNames, identifier, scram};
use crate::backup::EngineKind;
use crate::backup::connection::{self, PgLogin, Target};
use crate::local::credentials::{password, put};
use crate::matrix::Environment;
use crate::secrets::{Secret, SecretStore};

/// The actions a service's MongoDB role grants on its own database.
pub const MONGO_ACTIONS: [&str; 8] = [
    "find",
    "insert",
    "update",
    "remove",
    "createCollection",
    "createIndex",
    "listCollections",
    "listIndexes",
];

/// Everything `db provision` will make sure of, from the matrix alone.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub environment: String,
    pub databases: Vec<Database>,
}

/// One database and the logins of its owning service.
#[derive(Debug, Clone, Serialize)]
pub struct Database {
    /// Database id of the matrix (`auth-db`).
    pub id: String,
    pub engine: EngineKind,
    /// Name on the server (`auth_db`).
    pub name: String,
    /// The owning service (`auth`).
    pub service: String,
    pub cluster: String,
    pub host: String,
    pub port: u16,
    pub tls_required: bool,
    /// The secret the service reads its login from.
    pub credentials: String,
    #[serde(flatten)]
    pub logins: Logins,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Logins {
    Postgres {
        roles: RoleNames,
        /// The secret the migration role's login goes to.
        migration_credentials: String,
    },
    Mongo {
        user: String,
        role: String,
    },
}

impl Database {
    /// What provisioning makes sure of, one line each; no value of a
    /// secret, only its name.
    pub fn steps(&self) -> Vec<String> {
        match &self.logins {
            Logins::Postgres {
                roles,
                migration_credentials,
            } => vec![
                format!(
                    "role {}: login, no superuser, no CREATEDB or CREATEROLE; owns {} and \
                     schema {} (password in secret {migration_credentials})",
                    roles.migrator, self.name, roles.schema
                ),
                format!(
                    "role {}: group without login; CONNECT on {} only, USAGE on schema {}, \
                     SELECT/INSERT/UPDATE/DELETE on its tables and sequences, reading only of \
                     _sqlx_migrations",
                    roles.group, self.name, roles.schema
                ),
                format!(
                    "roles {} and {}: logins in {}, search_path {}; the service uses the one \
                     secret {} names (password there), the other waits for the next rotation",
                    roles.logins[0], roles.logins[1], roles.group, roles.schema, self.credentials
                ),
                format!(
                    "database {} owned by {}, UTF8; PUBLIC may not connect; nobody but the \
                     owner creates in schema public",
                    self.name, roles.migrator
                ),
            ],
            Logins::Mongo { user, role } => vec![
                format!(
                    "role {role} on database {}: {} on that database only",
                    self.name,
                    MONGO_ACTIONS.join(", ")
                ),
                format!(
                    "user {user} on database {} holding {role} (password in secret {}); \
                     skipped on a server without user management",
                    self.name, self.credentials
                ),
            ],
        }
    }
}

/// The plan for every database of `env` whose engine is decided, or for
/// database `only`, in restore order.
pub fn plan(env: &Environment, only: Option<&str>) -> Result<Plan> {
    let mut targets = connection::targets(env);
    targets.retain(|t| t.engine != EngineKind::Redis);
    if let Some(id) = only {
        if id == connection::REDIS_ID {
            bail!(
                "Redis has no database to provision: its ACL users come with the server's \
                 configuration (deploy local writes them)"
            );
        }
        targets.retain(|t| t.id == id);
        if targets.is_empty() {
            connection::target(env, id)?;
        }
    }
    let mut databases = Vec::new();
    for target in targets {
        databases.push(database(env, &target)?);
    }
    Ok(Plan {
        environment: env.name.to_string(),
        databases,
    })
}

/// The MongoDB user and role of service `owner` (`basic_app`,
/// `basic_app_role`).
pub fn mongo_names(owner: &str) -> (String, String) {
    let base = owner.replace('-', "_");
    (format!("{base}_app"), format!("{base}_app_role"))
}

/// The two MongoDB users a service's password rotation alternates
/// between: the provisioned `user` (`basic_app`) and `<user>_b`.
pub fn mongo_logins(user: &str) -> [String; 2] {
    [user.to_string(), format!("{user}_b")]
}

/// What gives MongoDB user `user` (defined in `home`, the matrix's
/// database) a new password and only `role` of `live`: `usersInfo` first
/// tells whether it exists, then `createUser` or `updateUser`. The second
/// document carries the password: never print it.
pub fn rotation_commands(
    user: &str,
    password: &Secret,
    role: &str,
    live: &str,
    exists: bool,
) -> [Document; 2] {
    [
        users_info(user),
        user_command(user, password, role, live, exists),
    ]
}

fn database(env: &Environment, target: &Target) -> Result<Database> {
    let spec = &env.base.databases[&target.id];
    let tls_required = env
        .file
        .databases
        .get(&target.id)
        .is_some_and(|d| d.tls_required);
    let logins = match target.engine {
        EngineKind::Postgresql => Logins::Postgres {
            roles: RoleNames::for_service(&spec.owner)?,
            migration_credentials: spec.migration_credentials.clone().with_context(|| {
                format!(
                    "databases.{}.migration-credentials is not set in the matrix",
                    target.id
                )
            })?,
        },
        _ => {
            let (user, role) = mongo_names(&spec.owner);
            Logins::Mongo { user, role }
        }
    };
    identifier(&target.name)?;
    Ok(Database {
        id: target.id.clone(),
        engine: target.engine,
        name: target.name.clone(),
        service: spec.owner.clone(),
        cluster: target.cluster.clone(),
        host: target.host.clone(),
        port: target.port,
        tls_required,
        credentials: spec.credentials.clone(),
        logins,
    })
}

/// What applying did to one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub database: String,
    pub object: String,
    pub outcome: Outcome,
    /// Why, for a skipped object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
    Skipped,
}

impl Change {
    fn new(database: &str, object: impl Into<String>, outcome: Outcome) -> Change {
        Change {
            database: database.to_string(),
            object: object.into(),
            outcome,
            note: None,
        }
    }

    pub fn line(&self) -> String {
        let outcome = match self.outcome {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped => "skipped",
        };
        match &self.note {
            Some(note) => format!("{}: {} {outcome}: {note}", self.database, self.object),
            None => format!("{}: {} {outcome}", self.database, self.object),
        }
    }
}

/// How to reach the servers as an administrator.
pub struct Admin<'a> {
    pub env: &'a Environment<'a>,
    pub secrets: &'a dyn SecretStore,
    /// How long to retry the first connection (a server starting up).
    pub connect_timeout: Duration,
}

impl Admin<'_> {
    pub fn postgres(&self, db: &Database) -> Result<PgLogin> {
        let target = connection::target(self.env, &db.id)?;
        connection::postgres_login(self.env, &target, self.secrets)
    }

    /// `local`: the server's own loopback address without a login (the
    /// local server runs without authentication); elsewhere the `url` of
    /// secret `<cluster>-superuser`.
    pub fn mongo(&self, db: &Database) -> Result<Secret> {
        if self.env.name == "local" {
            return Ok(Secret::new(mongo_url(
                &db.host, db.port, &db.name, None, &db.name,
            )));
        }
        let secret = crate::matrix::model::superuser_secret(&db.cluster);
        self.secrets.read(&secret, "url")?.with_context(|| {
            format!(
                "no administrative login for {}: secret `{secret}` key `url` is missing in {}",
                db.cluster,
                self.secrets.describe()
            )
        })
    }
}

/// Applies `plan`; `progress` receives each change as it is made.
pub async fn apply(
    plan: &Plan,
    admin: &Admin<'_>,
    progress: &mut dyn FnMut(&Change),
) -> Result<Vec<Change>> {
    let mut changes = Vec::new();
    for db in &plan.databases {
        let mut record = |change: Change| {
            progress(&change);
            changes.push(change);
        };
        let done = match &db.logins {
            Logins::Postgres {
                roles,
                migration_credentials,
            } => {
                let login = admin.postgres(db)?;
                let postgres = Postgres {
                    db,
                    roles,
                    migration_credentials,
                    login: &login,
                    secrets: admin.secrets,
                };
                postgres.apply(admin.connect_timeout, &mut record).await
            }
            Logins::Mongo { user, role } => {
                let url = admin.mongo(db)?;
                // After a rotation the secret names the other login of
                // the two; provisioning keeps that one.
                let active = admin
                    .secrets
                    .read(&db.credentials, "username")?
                    .map(|u| u.expose().to_string())
                    .filter(|u| mongo_logins(user).contains(u))
                    .unwrap_or_else(|| user.clone());
                apply_mongo(db, &active, role, &url, admin.secrets, &mut record).await
            }
        };
        done.with_context(|| format!("provisioning {}", db.id))?;
    }
    Ok(changes)
}

/// Connects, retrying until `timeout` while the server starts up.
pub async fn connect_with_retry(
    login: &PgLogin,
    database: &str,
    timeout: Duration,
) -> Result<PgConnection> {
    let deadline = Instant::now() + timeout;
    loop {
        match crate::backup::postgres::connect(login, database).await {
            Ok(connection) => return Ok(connection),
            Err(error) if Instant::now() >= deadline => return Err(error),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// One PostgreSQL database being provisioned.
struct Postgres<'a> {
    db: &'a Database,
    roles: &'a RoleNames,
    migration_credentials: &'a str,
    login: &'a PgLogin,
    secrets: &'a dyn SecretStore,
}

/// A role's wanted attributes.
struct RoleSpec<'a> {
    name: &'a str,
    login: bool,
    /// `None`: leave the password as it is (a new role gets none).
    password: Option<&'a Secret>,
    member_of: Option<&'a str>,
    search_path: Option<&'a str>,
}

impl Postgres<'_> {
    async fn apply(&self, timeout: Duration, record: &mut dyn FnMut(Change)) -> Result<()> {
        let (db, roles) = (self.db, self.roles);
        let app_password = password(self.secrets, &db.credentials, "password")?;
        let migrator_password = password(self.secrets, self.migration_credentials, "password")?;
        let active = self.active_login()?;

        let mut conn = connect_with_retry(self.login, "postgres", timeout).await?;
        let group = RoleSpec {
            name: &roles.group,
            login: false,
            password: None,
            member_of: None,
            search_path: None,
        };
        let migrator = RoleSpec {
            name: &roles.migrator,
            login: true,
            password: Some(&migrator_password),
            member_of: None,
            search_path: Some(&roles.schema),
        };
        for spec in [group, migrator] {
            record(self.ensure_role(&mut conn, &spec).await?);
        }
        for login in &roles.logins {
            let spec = RoleSpec {
                name: login,
                login: true,
                password: (login == &active).then_some(&app_password),
                member_of: Some(&roles.group),
                search_path: Some(&roles.schema),
            };
            record(self.ensure_role(&mut conn, &spec).await?);
        }
        record(self.ensure_database(&mut conn).await?);
        let _ = conn.close().await;

        let mut conn = crate::backup::postgres::connect(self.login, &db.name).await?;
        record(self.ensure_schema(&mut conn).await?);
        let _ = conn.close().await;

        let url =
            |user: &str, password: &Secret| Secret::new(postgres_url(db, user, password.expose()));
        let written = [
            self.store_login(&db.credentials, &active, url(&active, &app_password))?,
            self.store_login(
                self.migration_credentials,
                &roles.migrator,
                url(&roles.migrator, &migrator_password),
            )?,
        ];
        for (secret, changed) in [&db.credentials, self.migration_credentials]
            .into_iter()
            .zip(written)
        {
            let outcome = if changed {
                Outcome::Updated
            } else {
                Outcome::Unchanged
            };
            record(Change::new(&db.id, format!("secret {secret}"), outcome));
        }
        Ok(())
    }

    /// The login the credentials secret names when it is one of the two,
    /// else the first.
    fn active_login(&self) -> Result<String> {
        let named = self.secrets.read(&self.db.credentials, "username")?;
        Ok(named
            .map(|n| n.expose().to_string())
            .filter(|n| self.roles.logins.contains(n))
            .unwrap_or_else(|| self.roles.logins[0].clone()))
    }

    fn store_login(&self, secret: &str, user: &str, url: Secret) -> Result<bool> {
        let user = put(self.secrets, secret, "username", &Secret::new(user))?;
        let url = put(self.secrets, secret, "url", &url)?;
        Ok(user || url)
    }

    async fn ensure_role(&self, conn: &mut PgConnection, spec: &RoleSpec<'_>) -> Result<Change> {
        let name = identifier(spec.name)?;
        type Attributes = (bool, bool, bool, bool, bool, bool, bool);
        let found: Option<Attributes> = sqlx::query_as(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, \
             rolinherit, rolcanlogin FROM pg_roles WHERE rolname = $1",
        )
        .bind(spec.name)
        .fetch_optional(&mut *conn)
        .await?;
        let mut statements = Vec::new();
        let outcome = match found {
            None => {
                let login = if spec.login { "LOGIN" } else { "NOLOGIN" };
                let password = match spec.password {
                    Some(password) => literal(scram::password_clause(password).expose()),
                    None => "NULL".into(),
                };
                statements.push(format!("CREATE ROLE {name} {login} PASSWORD {password}"));
                Outcome::Created
            }
            Some((superuser, createdb, createrole, replication, bypassrls, inherit, login)) => {
                // Only what differs: a non-superuser administrator (a managed
                // service's master login) may not name some attributes.
                let wanted = [
                    (superuser, false, "NOSUPERUSER"),
                    (createdb, false, "NOCREATEDB"),
                    (createrole, false, "NOCREATEROLE"),
                    (replication, false, "NOREPLICATION"),
                    (bypassrls, false, "NOBYPASSRLS"),
                    (inherit, true, "INHERIT"),
                    (
                        login,
                        spec.login,
                        if spec.login { "LOGIN" } else { "NOLOGIN" },
                    ),
                ];
                let differing: Vec<&str> = wanted
                    .iter()
                    .filter(|(has, want, _)| has != want)
                    .map(|(_, _, keyword)| *keyword)
                    .collect();
                if !differing.is_empty() {
                    statements.push(format!("ALTER ROLE {name} {}", differing.join(" ")));
                }
                if let Some(password) = spec.password
                    && !self.logs_in(spec.name, password).await
                {
                    let clause = literal(scram::password_clause(password).expose());
                    statements.push(format!("ALTER ROLE {name} PASSWORD {clause}"));
                }
                if statements.is_empty() {
                    Outcome::Unchanged
                } else {
                    Outcome::Updated
                }
            }
        };
        if let Some(group) = spec.member_of {
            let member: bool = sqlx::query_scalar("SELECT pg_has_role($1, $2, 'MEMBER')")
                .bind(spec.name)
                .bind(group)
                .fetch_one(&mut *conn)
                .await
                .unwrap_or(false);
            if !member {
                statements.push(format!("GRANT {} TO {name}", identifier(group)?));
            }
        }
        if let Some(schema) = spec.search_path {
            let current: Option<String> = sqlx::query_scalar(
                "SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting s \
                 JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = $1 AND s.setdatabase = 0",
            )
            .bind(spec.name)
            .fetch_optional(&mut *conn)
            .await?;
            let wanted = format!("search_path={schema}");
            if current.is_none_or(|c| !c.split(',').any(|s| s == wanted)) {
                statements.push(format!(
                    "ALTER ROLE {name} SET search_path = {}",
                    identifier(schema)?
                ));
            }
        }
        execute(conn, &statements).await?;
        let outcome = if outcome == Outcome::Unchanged && !statements.is_empty() {
            Outcome::Updated
        } else {
            outcome
        };
        Ok(Change::new(
            &self.db.id,
            format!("role {}", spec.name),
            outcome,
        ))
    }

    /// Whether `role` can log in with `password` already: then its
    /// password is left alone and nothing is written.
    async fn logs_in(&self, role: &str, password: &Secret) -> bool {
        let login = PgLogin {
            host: self.login.host.clone(),
            port: self.login.port,
            username: role.to_string(),
            password: Some(password.clone()),
        };
        match crate::backup::postgres::connect(&login, "postgres").await {
            Ok(conn) => {
                let _ = conn.close().await;
                true
            }
            Err(_) => false,
        }
    }

    async fn ensure_database(&self, conn: &mut PgConnection) -> Result<Change> {
        let (db, roles) = (self.db, self.roles);
        let name = identifier(&db.name)?;
        let migrator = identifier(&roles.migrator)?;
        let owner: Option<String> = sqlx::query_scalar(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
        )
        .bind(&db.name)
        .fetch_optional(&mut *conn)
        .await?;
        let (mut statements, mut outcome) = owned(
            owner,
            &roles.migrator,
            format!("CREATE DATABASE {name} OWNER {migrator} TEMPLATE template0 ENCODING 'UTF8'"),
            format!("ALTER DATABASE {name} OWNER TO {migrator}"),
        );
        // PUBLIC's default CONNECT and TEMPORARY go; the group connects.
        let (public_connects, group_connects): (bool, bool) = if outcome == Outcome::Created {
            (true, false)
        } else {
            sqlx::query_as(
                "SELECT has_database_privilege('public', $1, 'CONNECT') \
                 OR has_database_privilege('public', $1, 'TEMP'), \
                 has_database_privilege($2, $1, 'CONNECT')",
            )
            .bind(&db.name)
            .bind(&roles.group)
            .fetch_one(&mut *conn)
            .await?
        };
        if public_connects {
            statements.push(format!("REVOKE ALL ON DATABASE {name} FROM PUBLIC"));
        }
        if !group_connects {
            let group = identifier(&roles.group)?;
            statements.push(format!("GRANT CONNECT ON DATABASE {name} TO {group}"));
        }
        if outcome == Outcome::Unchanged && !statements.is_empty() {
            outcome = Outcome::Updated;
        }
        execute(conn, &statements).await?;
        Ok(Change::new(
            &db.id,
            format!("database {}", db.name),
            outcome,
        ))
    }

    /// Inside the database: the schema, `public` closed to creation, the
    /// group's privileges now and by default for what the migration role
    /// creates later.
    async fn ensure_schema(&self, conn: &mut PgConnection) -> Result<Change> {
        let (db, roles) = (self.db, self.roles);
        let schema = identifier(&roles.schema)?;
        let migrator = identifier(&roles.migrator)?;
        let group = identifier(&roles.group)?;
        let owner: Option<String> = sqlx::query_scalar(
            "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = $1",
        )
        .bind(&roles.schema)
        .fetch_optional(&mut *conn)
        .await?;
        if owner.is_none() {
            refuse_tables_in_public(conn, db).await?;
        }
        let (mut statements, outcome) = owned(
            owner,
            &roles.migrator,
            format!("CREATE SCHEMA {schema} AUTHORIZATION {migrator}"),
            format!("ALTER SCHEMA {schema} OWNER TO {migrator}"),
        );
        let has_public: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'public')",
        )
        .fetch_one(&mut *conn)
        .await?;
        if has_public {
            statements.push("REVOKE CREATE ON SCHEMA public FROM PUBLIC".into());
        }
        statements.extend([
            format!("REVOKE ALL ON SCHEMA {schema} FROM PUBLIC"),
            format!("GRANT USAGE ON SCHEMA {schema} TO {group}"),
            format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {migrator} IN SCHEMA {schema} \
                 GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {group}"
            ),
            format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {migrator} IN SCHEMA {schema} \
                 GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {group}"
            ),
            format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {group}"
            ),
            format!("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {schema} TO {group}"),
        ]);
        execute(conn, &statements).await?;
        bookkeeping_read_only(conn, roles).await?;
        Ok(Change::new(
            &db.id,
            format!("schema {} and privileges", roles.schema),
            outcome,
        ))
    }
}

/// What makes an object exist with owner `wanted`, given its current
/// owner (`None`: it does not exist).
fn owned(
    owner: Option<String>,
    wanted: &str,
    create: String,
    alter: String,
) -> (Vec<String>, Outcome) {
    match owner {
        None => (vec![create], Outcome::Created),
        Some(owner) if owner != wanted => (vec![alter], Outcome::Updated),
        Some(_) => (vec![], Outcome::Unchanged),
    }
}

/// A database whose service tables sit in `public` (made before the
/// services had schemas of their own) is not taken over silently: moving
/// them is a decision for a person.
async fn refuse_tables_in_public(conn: &mut PgConnection, db: &Database) -> Result<()> {
    let in_public: bool =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await?;
    if in_public {
        bail!(
            "{} keeps the service's tables in schema public (made by an earlier release, before \
             each service had a schema of its own); provisioning would leave them behind. Move \
             them (or, for a local environment, `kisumctl down local --purge` and deploy again)",
            db.name
        );
    }
    Ok(())
}

/// The group may read `_sqlx_migrations` (a service checks its schema
/// before it serves) but not change it. Run after every migration as well:
/// the default privileges grant DML on the table when it is created.
pub async fn bookkeeping_read_only(conn: &mut PgConnection, roles: &RoleNames) -> Result<()> {
    let table = format!("{}._sqlx_migrations", identifier(&roles.schema)?);
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&table)
        .fetch_one(&mut *conn)
        .await?;
    let group_exists: bool = sqlx::query_scalar("SELECT to_regrole($1) IS NOT NULL")
        .bind(&roles.group)
        .fetch_one(&mut *conn)
        .await?;
    if exists && group_exists {
        let statement = format!(
            "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {table} FROM {}",
            identifier(&roles.group)?
        );
        execute(conn, &[statement]).await?;
    }
    Ok(())
}

/// Gives `role` a new password (sent as a SCRAM verifier) and lets it log
/// in: the step of a rotation that prepares the waiting login.
pub async fn set_password(conn: &mut PgConnection, role: &str, password: &Secret) -> Result<()> {
    let clause = literal(scram::password_clause(password).expose());
    let statement = format!(
        "ALTER ROLE {} WITH LOGIN PASSWORD {clause}",
        identifier(role)?
    );
    execute(conn, &[statement]).await
}

async fn execute(conn: &mut PgConnection, statements: &[String]) -> Result<()> {
    for statement in statements {
        sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
            .execute(&mut *conn)
            .await
            .with_context(|| redacted(statement))?;
    }
    Ok(())
}

/// A statement for an error message: a password clause is cut off.
fn redacted(statement: &str) -> String {
    match statement.find(" PASSWORD ") {
        Some(at) => format!("{} PASSWORD <redacted>", &statement[..at]),
        None => statement.to_string(),
    }
}

fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Percent-encodes a user or password for a URL's userinfo.
pub(crate) fn userinfo(value: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(value, SET).to_string()
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The service's (or migration role's) connection URL: TLS required when
/// the matrix says so, off on loopback, preferred otherwise.
pub fn postgres_url(db: &Database, user: &str, password: &str) -> String {
    let mode = if db.tls_required {
        "require"
    } else if is_loopback(&db.host) {
        "disable"
    } else {
        "prefer"
    };
    format!(
        "postgres://{}:{}@{}:{}/{}?sslmode={mode}",
        userinfo(user),
        userinfo(password),
        db.host,
        db.port,
        db.name
    )
}

/// A MongoDB URL naming database `name`, with a login authenticated
/// against database `auth_source` (where the user is defined) when given.
/// Loopback servers are reached directly, with the patience the emulator
/// needs.
pub fn mongo_url(
    host: &str,
    port: u16,
    name: &str,
    login: Option<(&str, &Secret)>,
    auth_source: &str,
) -> String {
    let mut options = Vec::new();
    let credentials = match login {
        Some((user, password)) => {
            options.push(format!("authSource={auth_source}"));
            format!("{}:{}@", userinfo(user), userinfo(password.expose()))
        }
        None => String::new(),
    };
    if is_loopback(host) {
        options.push(
            "directConnection=true&connectTimeoutMS=60000&serverSelectionTimeoutMS=60000".into(),
        );
    }
    let query = if options.is_empty() {
        String::new()
    } else {
        format!("?{}", options.join("&"))
    };
    format!("mongodb://{credentials}{host}:{port}/{name}{query}")
}

/// Whether a role or user exists: the commands provisioning sends first.
pub fn roles_info(role: &str) -> Document {
    doc! { "rolesInfo": role }
}

pub fn users_info(user: &str) -> Document {
    doc! { "usersInfo": user }
}

/// `createRole` (or `updateRole` when it exists) of the service's role:
/// [`MONGO_ACTIONS`] on database `database` only, inheriting nothing.
pub fn role_command(role: &str, database: &str, exists: bool) -> Document {
    let privileges = vec![doc! {
        "resource": { "db": database, "collection": "" },
        "actions": MONGO_ACTIONS.to_vec(),
    }];
    let verb = if exists { "updateRole" } else { "createRole" };
    doc! { verb: role, "privileges": privileges, "roles": [] }
}

/// `createUser` (or `updateUser` when it exists) of the service's user,
/// holding only `role` of `database`, with a SCRAM-SHA-256 password. Sent
/// to the database the user is defined in (the matrix's name of the
/// database, which a restore never moves), while `database` is the one
/// that serves (a restored copy after a restore). The document carries the
/// password: never print it.
pub fn user_command(
    user: &str,
    password: &Secret,
    role: &str,
    database: &str,
    exists: bool,
) -> Document {
    let verb = if exists { "updateUser" } else { "createUser" };
    doc! {
        verb: user,
        "pwd": password.expose(),
        "roles": [{ "role": role, "db": database }],
        "mechanisms": ["SCRAM-SHA-256"],
    }
}

/// `grantRolesToUser`: `user` also holds `role` of `database` (sent to the
/// database the user is defined in).
pub fn grant_role_command(user: &str, role: &str, database: &str) -> Document {
    doc! { "grantRolesToUser": user, "roles": [{ "role": role, "db": database }] }
}

/// `revokeRolesFromUser`: `user` no longer holds `role` of `database`.
pub fn revoke_role_command(user: &str, role: &str, database: &str) -> Document {
    doc! { "revokeRolesFromUser": user, "roles": [{ "role": role, "db": database }] }
}

/// `dropRole`, sent to the database the role is defined in.
pub fn drop_role_command(role: &str) -> Document {
    doc! { "dropRole": role }
}

/// What lets the service's user use database `to`, a restored copy that a
/// restore is about to point it at, as `(database sent to, command)` in
/// order: the service's role defined in `to` with the actions on `to`
/// only (`createRole`, or `updateRole` when a rerun finds it), then granted
/// to the user in `user_db`, where it is defined. The user keeps its role
/// on the previous database until `restore --cleanup` (see
/// [`release_commands`]) or the next `db provision`, whose `updateUser`
/// leaves it only the live one.
pub fn follow_commands(
    user: &str,
    role: &str,
    user_db: &str,
    to: &str,
    role_exists: bool,
) -> Vec<(String, Document)> {
    vec![
        (to.to_string(), role_command(role, to, role_exists)),
        (user_db.to_string(), grant_role_command(user, role, to)),
    ]
}

/// What takes database `from` (a previous or abandoned copy) away from the
/// service's user before it is dropped: the grant revoked in `user_db`,
/// then the role of `from` dropped.
pub fn release_commands(
    user: &str,
    role: &str,
    user_db: &str,
    from: &str,
) -> Vec<(String, Document)> {
    vec![
        (user_db.to_string(), revoke_role_command(user, role, from)),
        (from.to_string(), drop_role_command(role)),
    ]
}

/// Sends `commands` (from [`follow_commands`] or [`release_commands`])
/// through the administrator's `admin_url`. A command names its user or
/// role, never a password, so its error can be shown.
pub async fn run_user_commands(admin_url: &Secret, commands: &[(String, Document)]) -> Result<()> {
    let client = crate::backup::mongo::client(admin_url).await?;
    for (database, command) in commands {
        let name = command.keys().next().cloned().unwrap_or_default();
        client
            .database(database)
            .run_command(command.clone())
            .await
            .with_context(|| format!("{name} on database {database}"))?;
    }
    Ok(())
}

/// Whether role `role` is defined in database `database`.
pub async fn role_exists(admin_url: &Secret, database: &str, role: &str) -> Result<bool> {
    let client = crate::backup::mongo::client(admin_url).await?;
    let reply = client
        .database(database)
        .run_command(roles_info(role))
        .await
        .context("rolesInfo")?;
    Ok(lists_one(&reply, "roles"))
}

/// Whether a command failed because the server does not implement it.
pub(crate) fn unsupported(error: &mongodb::error::Error) -> bool {
    if let mongodb::error::ErrorKind::Command(command) = error.kind.as_ref()
        && matches!(command.code, 59 | 115)
    {
        return true;
    }
    let message = error.to_string().to_lowercase();
    [
        "unsupported",
        "not supported",
        "no such command",
        "not implemented",
    ]
    .iter()
    .any(|phrase| message.contains(phrase))
}

/// Whether `reply` (of `usersInfo` or `rolesInfo`) lists anything.
pub(crate) fn lists_one(reply: &Document, field: &str) -> bool {
    reply.get_array(field).is_ok_and(|items| !items.is_empty())
}

async fn apply_mongo(
    db: &Database,
    user: &str,
    role: &str,
    admin_url: &Secret,
    secrets: &dyn SecretStore,
    record: &mut dyn FnMut(Change),
) -> Result<()> {
    let password = password(secrets, &db.credentials, "password")?;
    // A restore may have pointed the service at a restored copy: keep it.
    let current = secrets.read(&db.credentials, "url")?;
    let live = current
        .as_ref()
        .and_then(|url| connection::url_database(url.expose()))
        .filter(|name| connection::is_generation(&db.name, name))
        .unwrap_or(&db.name)
        .to_string();
    let client = crate::backup::mongo::client(admin_url).await?;
    // The user is defined in the matrix's database, which no restore
    // moves; its role in the live one, on that one only.
    let home = client.database(&db.name);
    let database = client.database(&live);
    let url = match home.run_command(users_info(user)).await {
        Err(error) if unsupported(&error) => {
            let mut change = Change::new(&db.id, format!("user {user}"), Outcome::Skipped);
            change.note = Some(
                "the server does not manage users (the MongoDB emulator): no role or user was \
                 made and the URL carries no login"
                    .into(),
            );
            record(change);
            mongo_url(&db.host, db.port, &live, None, &db.name)
        }
        Err(error) => return Err(error).context("usersInfo"),
        Ok(users) => {
            let roles = database
                .run_command(roles_info(role))
                .await
                .context("rolesInfo")?;
            let role_exists = lists_one(&roles, "roles");
            database
                .run_command(role_command(role, &live, role_exists))
                .await
                .with_context(|| format!("creating or updating role {role}"))?;
            record(Change::new(
                &db.id,
                format!("role {role}"),
                if role_exists {
                    Outcome::Updated
                } else {
                    Outcome::Created
                },
            ));
            let user_exists = lists_one(&users, "users");
            home.run_command(user_command(user, &password, role, &live, user_exists))
                .await
                // The driver's error would not hold the command, but say
                // only what failed.
                .map_err(|e| anyhow::anyhow!("creating or updating user {user}: {}", e.kind))?;
            record(Change::new(
                &db.id,
                format!("user {user}"),
                if user_exists {
                    Outcome::Updated
                } else {
                    Outcome::Created
                },
            ));
            mongo_url(&db.host, db.port, &live, Some((user, &password)), &db.name)
        }
    };
    let changed = put(secrets, &db.credentials, "username", &Secret::new(user))?;
    let changed = put(secrets, &db.credentials, "url", &Secret::new(url))? || changed;
    let outcome = if changed {
        Outcome::Updated
    } else {
        Outcome::Unchanged
    };
    record(Change::new(
        &db.id,
        format!("secret {}", db.credentials),
        outcome,
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;
    use mongodb::bson::Bson;

    fn matrix() -> Matrix {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("environments");
        Matrix::load(&dir).unwrap()
    }

    #[test]
    fn the_plan_covers_every_decided_database_in_restore_order() {
        let matrix = matrix();
        let env = matrix.environment("local").unwrap();
        let plan = plan(&env, None).unwrap();
        let ids: Vec<&str> = plan.databases.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids[..2], ["auth-db", "platform-core-db"]);
        let core = &plan.databases[1];
        let Logins::Postgres {
            roles,
            migration_credentials,
        } = &core.logins
        else {
            panic!("PostgreSQL");
        };
        assert_eq!(roles.migrator, "platform_core_migrator");
        assert_eq!(
            migration_credentials,
            "platform-core-db-migration-credentials"
        );
        let main = plan.databases.iter().find(|d| d.id == "main-db").unwrap();
        assert!(matches!(&main.logins, Logins::Mongo { user, .. } if user == "basic_app"));
        assert!(plan.databases.iter().all(|d| d.engine != EngineKind::Redis));

        let one = super::plan(&env, Some("finance-db")).unwrap();
        assert_eq!(one.databases.len(), 1);
        assert!(super::plan(&env, Some("nothing-db")).is_err());
        assert!(super::plan(&env, Some("redis")).is_err());
    }

    #[test]
    fn the_plan_names_secrets_but_holds_no_value() {
        let matrix = matrix();
        let env = matrix.environment("production").unwrap();
        let plan = plan(&env, None).unwrap();
        let text = serde_json::to_string(&plan).unwrap()
            + &plan
                .databases
                .iter()
                .flat_map(|d| d.steps())
                .collect::<String>();
        assert!(text.contains("auth-db-credentials"));
        assert!(text.contains("auth-db-migration-credentials"));
        assert!(!text.to_lowercase().contains("password\":"));
    }

    #[test]
    fn the_role_command_grants_only_the_services_own_database() {
        let create = role_command("basic_app_role", "main", false);
        assert_eq!(create.get_str("createRole").unwrap(), "basic_app_role");
        let privileges = create.get_array("privileges").unwrap();
        assert_eq!(privileges.len(), 1);
        let privilege = privileges[0].as_document().unwrap();
        let resource = privilege.get_document("resource").unwrap();
        assert_eq!(resource, &doc! { "db": "main", "collection": "" });
        let actions: Vec<&str> = privilege
            .get_array("actions")
            .unwrap()
            .iter()
            .filter_map(Bson::as_str)
            .collect();
        assert_eq!(actions, MONGO_ACTIONS);
        for forbidden in ["dropDatabase", "dropCollection", "createUser", "grantRole"] {
            assert!(!actions.contains(&forbidden), "{forbidden}");
        }
        assert!(create.get_array("roles").unwrap().is_empty());
        let update = role_command("basic_app_role", "main", true);
        assert_eq!(update.get_str("updateRole").unwrap(), "basic_app_role");
        assert!(!update.contains_key("createRole"));
    }

    #[test]
    fn the_user_command_holds_one_role_of_one_database() {
        let password = Secret::new("pw-from-the-store");
        let create = user_command("basic_app", &password, "basic_app_role", "main", false);
        assert_eq!(
            create,
            doc! {
                "createUser": "basic_app",
                "pwd": "pw-from-the-store",
                "roles": [{ "role": "basic_app_role", "db": "main" }],
                "mechanisms": ["SCRAM-SHA-256"],
            }
        );
        let update = user_command("basic_app", &password, "basic_app_role", "main", true);
        assert_eq!(update.get_str("updateUser").unwrap(), "basic_app");
        // After a restore, provisioning leaves the user only the role of
        // the database that serves.
        let after = user_command(
            "basic_app",
            &password,
            "basic_app_role",
            "main_restored_20260101t000000z",
            true,
        );
        assert_eq!(
            after,
            doc! {
                "updateUser": "basic_app",
                "pwd": "pw-from-the-store",
                "roles": [{ "role": "basic_app_role", "db": "main_restored_20260101t000000z" }],
                "mechanisms": ["SCRAM-SHA-256"],
            }
        );
        assert_eq!(users_info("basic_app"), doc! { "usersInfo": "basic_app" });
        assert_eq!(
            roles_info("basic_app_role"),
            doc! { "rolesInfo": "basic_app_role" }
        );
    }

    #[test]
    fn a_restored_copy_is_granted_to_the_user_and_the_previous_one_released() {
        let to = "main_restored_20260101t000000z";
        assert_eq!(mongo_names("platform-core").0, "platform_core_app");
        assert_eq!(
            follow_commands("basic_app", "basic_app_role", "main", to, false),
            vec![
                (
                    to.to_string(),
                    doc! {
                        "createRole": "basic_app_role",
                        "privileges": [{
                            "resource": { "db": to, "collection": "" },
                            "actions": MONGO_ACTIONS.to_vec(),
                        }],
                        "roles": [],
                    }
                ),
                (
                    "main".to_string(),
                    doc! {
                        "grantRolesToUser": "basic_app",
                        "roles": [{ "role": "basic_app_role", "db": to }],
                    }
                ),
            ]
        );
        let rerun = follow_commands("basic_app", "basic_app_role", "main", to, true);
        assert_eq!(rerun[0].1.get_str("updateRole").unwrap(), "basic_app_role");
        assert_eq!(
            release_commands("basic_app", "basic_app_role", "main", "main"),
            vec![
                (
                    "main".to_string(),
                    doc! {
                        "revokeRolesFromUser": "basic_app",
                        "roles": [{ "role": "basic_app_role", "db": "main" }],
                    }
                ),
                ("main".to_string(), doc! { "dropRole": "basic_app_role" }),
            ]
        );
        // No command but createUser/updateUser carries a password.
        for (_, command) in follow_commands("basic_app", "basic_app_role", "main", to, false)
            .into_iter()
            .chain(release_commands("basic_app", "basic_app_role", "main", to))
        {
            assert!(!command.contains_key("pwd"), "{command}");
        }
    }

    #[test]
    fn urls_escape_credentials_and_follow_the_transport() {
        let matrix = matrix();
        let env = matrix.environment("local").unwrap();
        let plan = plan(&env, Some("auth-db")).unwrap();
        let mut db = plan.databases[0].clone();
        assert_eq!(
            postgres_url(&db, "auth_app_a", "p@ss/w:rd"),
            format!(
                "postgres://auth_app_a:p%40ss%2Fw%3Ard@127.0.0.1:{}/auth_db?sslmode=disable",
                db.port
            )
        );
        db.host = "auth-db.internal".into();
        db.tls_required = true;
        assert!(postgres_url(&db, "u", "p").ends_with("?sslmode=require"));
        let password = Secret::new("a b");
        assert_eq!(
            mongo_url(
                "mongo.internal",
                27017,
                "main_restored_20260101t000000z",
                Some(("basic_app", &password)),
                "main"
            ),
            "mongodb://basic_app:a%20b@mongo.internal:27017/main_restored_20260101t000000z?authSource=main"
        );
        assert!(
            mongo_url("127.0.0.1", 27117, "main", None, "main")
                .starts_with("mongodb://127.0.0.1:27117/main?directConnection=true")
        );
    }

    #[test]
    fn errors_never_carry_a_password_clause() {
        assert_eq!(
            redacted("ALTER ROLE \"a\" PASSWORD 'SCRAM-SHA-256$4096:xyz'"),
            "ALTER ROLE \"a\" PASSWORD <redacted>"
        );
    }
}
