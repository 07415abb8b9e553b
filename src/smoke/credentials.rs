//! Who the smoke checks act as: secret `smoke-test-credentials` of the
//! environment's secret store, written by the deploy that seeded them.

use uuid::Uuid;

use crate::secrets::{Secret, SecretStore, StoreError};

/// The secret of the inventory holding the smoke-test identities.
pub const SECRET: &str = "smoke-test-credentials";

/// The smoke-test user (a member of the smoke-test company with role
/// `smoke-reader`), the smoke-test platform admin, and the company.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user_email: String,
    pub user_password: Secret,
    pub admin_email: String,
    pub admin_password: Secret,
    pub company_id: Uuid,
    /// The company's slug (`smoke-test`), sent as `x-org`.
    pub company_slug: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "secret `{SECRET}` has no key `{key}` in {store}: the smoke-test fixtures are not seeded (for local: run `kisumctl deploy local`)"
    )]
    Missing { key: &'static str, store: String },
    #[error("key `company-id` of secret `{SECRET}` in {store} is not a UUID")]
    CompanyId { store: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Credentials {
    pub fn from_store(store: &dyn SecretStore) -> Result<Credentials, CredentialsError> {
        let read = |key: &'static str| -> Result<Secret, CredentialsError> {
            let value = store
                .read(SECRET, key)?
                .ok_or_else(|| CredentialsError::Missing {
                    key,
                    store: store.describe(),
                })?;
            // A value written by hand often ends with a newline.
            Ok(Secret::new(value.expose().trim_end_matches(['\n', '\r'])))
        };
        let plain = |key| read(key).map(|value| value.expose().to_string());
        let company_id =
            Uuid::parse_str(&plain("company-id")?).map_err(|_| CredentialsError::CompanyId {
                store: store.describe(),
            })?;
        Ok(Credentials {
            user_email: plain("user-email")?,
            user_password: read("user-password")?,
            admin_email: plain("admin-email")?,
            admin_password: read("admin-password")?,
            company_id,
            company_slug: plain("company-slug")?,
        })
    }

    /// The values that must never appear in any output.
    pub(crate) fn secrets(&self) -> [&str; 2] {
        [self.user_password.expose(), self.admin_password.expose()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::LocalFiles;

    fn seeded(store: &LocalFiles) {
        let company = Uuid::new_v4().to_string();
        for (key, value) in [
            ("user-email", "smoke-user@kisum.localhost"),
            ("user-password", "user-secret\n"),
            ("admin-email", "smoke-admin@kisum.localhost"),
            ("admin-password", "admin-secret"),
            ("company-id", company.as_str()),
            ("company-slug", "smoke-test"),
        ] {
            store.write(SECRET, key, &Secret::new(value)).unwrap();
        }
    }

    #[test]
    fn credentials_are_read_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFiles::new(dir.path().join("secrets"));
        seeded(&store);
        let credentials = Credentials::from_store(&store).unwrap();
        assert_eq!(credentials.user_email, "smoke-user@kisum.localhost");
        assert_eq!(credentials.user_password.expose(), "user-secret");
        assert_eq!(credentials.company_slug, "smoke-test");
        let debug = format!("{credentials:?}");
        assert!(!debug.contains("user-secret") && !debug.contains("admin-secret"));
    }

    #[test]
    fn a_missing_key_is_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFiles::new(dir.path().join("secrets"));
        seeded(&store);
        std::fs::remove_file(store.file(SECRET, "admin-password").unwrap()).unwrap();
        let error = Credentials::from_store(&store).unwrap_err().to_string();
        assert!(error.contains("no key `admin-password`"), "{error}");
        assert!(error.contains("kisumctl deploy local"), "{error}");
    }

    #[test]
    fn a_company_id_must_be_a_uuid() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFiles::new(dir.path().join("secrets"));
        seeded(&store);
        store
            .write(SECRET, "company-id", &Secret::new("smoke-test"))
            .unwrap();
        let error = Credentials::from_store(&store).unwrap_err().to_string();
        assert!(error.contains("not a UUID"), "{error}");
    }
}
