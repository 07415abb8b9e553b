//! The smoke-test fixtures: a company, a reader role, a user who is a
//! member with finance and market grants, a platform admin, and the
//! company's subscription in Platform Core. Credentials are generated once
//! into the secret `smoke-test-credentials` and read back as the smoke
//! checks read them ([`Credentials`]); the Auth directory is seeded
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
use crate::smoke::{CREDENTIALS_SECRET as SECRET, Credentials};

pub const USER_EMAIL: &str = "smoke-user@kisum.localhost";
pub const ADMIN_EMAIL: &str = "smoke-admin@kisum.localhost";
pub const COMPANY_SLUG: &str = "smoke-test";
pub const COMPANY_NAME: &str = "Smoke test";
pub const ROLE: &str = "smoke-reader";
pub const PERMISSIONS: [&str; 2] = ["finance.invoices.read", "market.listings.read"];
pub const GRANTS: [&str; 2] = ["finance", "market"];
pub const PACKAGE: &str = "basic-plus-finance";
pub const ADD_ON: &str = "market";

/// Everything seeded, as a digest: seeding is redone when it changes.
pub fn digest(fixtures: &Credentials) -> String {
    let company = fixtures.company_id.to_string();
    let mut hash = Sha256::new();
    for part in [
        fixtures.user_email.as_str(),
        fixtures.user_password.expose(),
        fixtures.admin_email.as_str(),
        fixtures.admin_password.expose(),
        company.as_str(),
        fixtures.company_slug.as_str(),
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

/// Generates what is missing of `smoke-test-credentials`; the fixtures as
/// the smoke checks will read them.
pub fn ensure_fixtures(store: &dyn SecretStore) -> anyhow::Result<Credentials> {
    put(store, SECRET, "user-email", &Secret::new(USER_EMAIL))?;
    put(store, SECRET, "admin-email", &Secret::new(ADMIN_EMAIL))?;
    put(store, SECRET, "company-slug", &Secret::new(COMPANY_SLUG))?;
    store.ensure(SECRET, "company-id", &mut || {
        Secret::new(uuid::Uuid::new_v4().to_string())
    })?;
    password(store, SECRET, "user-password")?;
    password(store, SECRET, "admin-password")?;
    Ok(Credentials::from_store(store)?)
}

/// The `kisum-auth seed-user` command lines (no password on them).
pub fn seed_user_args(
    fixtures: &Credentials,
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
    fixtures: &Credentials,
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
        assert_eq!(digest(&first), digest(&second));
        let read = Credentials::from_store(&store).unwrap();
        assert_eq!(digest(&read), digest(&first));
        assert_eq!(first.company_slug, "smoke-test");
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
