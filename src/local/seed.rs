//! The smoke-test fixtures: a company, a reader role, a user who is a
//! member with finance and market grants, a platform admin, and the
//! company's subscription in Platform Core. Credentials are generated once
//! into the secret `smoke-test-credentials`; the Auth directory is seeded
//! through `kisum-auth seed-user` (passwords from files, never argv); Core
//! through Platform Admin's HTTP API, logged in as the smoke admin.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::credentials::{password, put};
use super::probe::without_url;
use crate::secrets::{Secret, SecretStore};

pub const SECRET: &str = "smoke-test-credentials";
pub const USER_EMAIL: &str = "smoke-user@kisum.localhost";
pub const ADMIN_EMAIL: &str = "smoke-admin@kisum.localhost";
pub const COMPANY_SLUG: &str = "smoke-test";
pub const COMPANY_NAME: &str = "Smoke test";
pub const ROLE: &str = "smoke-reader";
pub const PERMISSIONS: [&str; 2] = ["finance.invoices.read", "market.listings.read"];
pub const GRANTS: [&str; 2] = ["finance", "market"];
pub const PACKAGE: &str = "basic-plus-finance";
pub const ADD_ON: &str = "market";

/// The fixtures' credentials, as the smoke checks read them.
#[derive(Debug, Clone)]
pub struct Fixtures {
    pub user_email: String,
    pub user_password: Secret,
    pub admin_email: String,
    pub admin_password: Secret,
    pub company_id: String,
    pub company_slug: String,
}

impl Fixtures {
    /// Everything seeded, as a digest: seeding is redone when it changes.
    pub fn digest(&self) -> String {
        let mut hash = Sha256::new();
        for part in [
            self.user_email.as_str(),
            self.user_password.expose(),
            self.admin_email.as_str(),
            self.admin_password.expose(),
            self.company_id.as_str(),
            self.company_slug.as_str(),
            ROLE,
            PACKAGE,
            ADD_ON,
        ]
        .into_iter()
        .chain(PERMISSIONS)
        .chain(GRANTS)
        {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        hex::encode(&hash.finalize()[..12])
    }
}

/// Generates what is missing of `smoke-test-credentials`.
pub fn ensure_fixtures(store: &dyn SecretStore) -> anyhow::Result<Fixtures> {
    put(store, SECRET, "user-email", &Secret::new(USER_EMAIL))?;
    put(store, SECRET, "admin-email", &Secret::new(ADMIN_EMAIL))?;
    put(store, SECRET, "company-slug", &Secret::new(COMPANY_SLUG))?;
    let (company, _) = store.ensure(SECRET, "company-id", &mut || {
        Secret::new(uuid::Uuid::new_v4().to_string())
    })?;
    Ok(Fixtures {
        user_email: USER_EMAIL.into(),
        user_password: password(store, SECRET, "user-password")?,
        admin_email: ADMIN_EMAIL.into(),
        admin_password: password(store, SECRET, "admin-password")?,
        company_id: company.expose().trim().to_string(),
        company_slug: COMPANY_SLUG.into(),
    })
}

/// The fixtures as seeded, without generating anything.
pub fn read_fixtures(store: &dyn SecretStore) -> anyhow::Result<Fixtures> {
    let read = |key: &str| -> anyhow::Result<Secret> {
        store
            .read(SECRET, key)?
            .with_context(|| format!("{SECRET} has no `{key}`; run `kisumctl deploy local`"))
    };
    let text = |key: &str| read(key).map(|s| s.expose().trim().to_string());
    Ok(Fixtures {
        user_email: text("user-email")?,
        user_password: read("user-password")?,
        admin_email: text("admin-email")?,
        admin_password: read("admin-password")?,
        company_id: text("company-id")?,
        company_slug: text("company-slug")?,
    })
}

/// The `kisum-auth seed-user` command lines (no password on them).
pub fn seed_user_args(
    fixtures: &Fixtures,
    store: &dyn SecretStore,
) -> anyhow::Result<Vec<Vec<String>>> {
    let file = |key: &str| {
        store
            .file(SECRET, key)
            .map(|p| p.display().to_string())
            .with_context(|| format!("the secret store keeps no file for {SECRET}/{key}"))
    };
    let mut user = vec![
        "seed-user".to_string(),
        fixtures.user_email.clone(),
        "--password-file".into(),
        file("user-password")?,
        "--company".into(),
        format!(
            "{}:{}:{COMPANY_NAME}",
            fixtures.company_id, fixtures.company_slug
        ),
        "--role".into(),
        ROLE.into(),
    ];
    for permission in PERMISSIONS {
        user.extend(["--permission".to_string(), permission.to_string()]);
    }
    for module in GRANTS {
        user.extend(["--grant".to_string(), module.to_string()]);
    }
    let admin = vec![
        "seed-user".to_string(),
        fixtures.admin_email.clone(),
        "--password-file".into(),
        file("admin-password")?,
        "--platform-role".into(),
        "platform-admin".into(),
    ];
    Ok(vec![user, admin])
}

/// Runs the auth binary with Auth's own environment.
pub fn seed_auth(
    program: &str,
    env: &BTreeMap<String, String>,
    args: &[Vec<String>],
) -> anyhow::Result<()> {
    for argv in args {
        let output = Command::new(program)
            .args(argv)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {program} seed-user"))?;
        if !output.status.success() {
            bail!(
                "{program} seed-user {} failed ({}): {}",
                argv.get(1).map_or("", String::as_str),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }
    Ok(())
}

/// Logs in through Auth's public API; the access token.
pub async fn login(
    client: &reqwest::Client,
    auth: &str,
    email: &str,
    password: &Secret,
) -> anyhow::Result<Secret> {
    let response = client
        .post(format!("{auth}/auth/login"))
        .json(&json!({ "email": email, "password": password.expose() }))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("login as {email}: {}", without_url(&e)))?;
    let status = response.status();
    if !status.is_success() {
        bail!("login as {email} answered {status}");
    }
    let body: serde_json::Value = response.json().await.context("reading the login answer")?;
    body["access_token"]
        .as_str()
        .map(Secret::new)
        .context("the login answer has no access_token")
}

/// The smoke company's subscription and add-on, through Platform Admin.
pub async fn seed_core(
    client: &reqwest::Client,
    auth: &str,
    admin: &str,
    fixtures: &Fixtures,
) -> anyhow::Result<()> {
    let token = login(
        client,
        auth,
        &fixtures.admin_email,
        &fixtures.admin_password,
    )
    .await?;
    let company = &fixtures.company_id;
    let calls = [
        (
            format!("{admin}/admin/companies/{company}/subscription"),
            json!({ "package": PACKAGE, "status": "active" }),
        ),
        (
            format!("{admin}/admin/companies/{company}/add-ons/{ADD_ON}"),
            json!({ "active": false }),
        ),
    ];
    for (url, body) in calls {
        let response = client
            .put(&url)
            .bearer_auth(token.expose())
            .json(&body)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("Platform Admin: {}", without_url(&e)))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!(
                "Platform Admin answered {status} to PUT {}: {}",
                url.trim_start_matches(admin),
                text.chars().take(300).collect::<String>()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::LocalFiles;

    #[test]
    fn fixtures_are_generated_once_and_never_on_command_lines() {
        let root = tempfile::tempdir().unwrap();
        let store = LocalFiles::new(root.path().join("secrets"));
        let first = ensure_fixtures(&store).unwrap();
        let second = ensure_fixtures(&store).unwrap();
        assert_eq!(first.digest(), second.digest());
        assert_eq!(read_fixtures(&store).unwrap().digest(), first.digest());
        assert_eq!(first.company_slug, "smoke-test");
        assert!(uuid::Uuid::parse_str(&first.company_id).is_ok());
        assert_eq!(
            store.keys(SECRET).unwrap(),
            [
                "admin-email",
                "admin-password",
                "company-id",
                "company-slug",
                "user-email",
                "user-password"
            ]
        );
        let args = seed_user_args(&first, &store).unwrap();
        let text = format!("{args:?}");
        assert!(!text.contains(first.user_password.expose()));
        assert!(!text.contains(first.admin_password.expose()));
        assert!(text.contains("--password-file"));
        assert!(text.contains("market.listings.read"));
    }
}
