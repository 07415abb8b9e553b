//! The request and response bodies of the entitlement API.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::CoreError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Module {
    pub key: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub key: String,
    pub name: String,
    pub modules: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct AddOn {
    pub key: String,
    pub name: String,
    /// The one module this add-on grants.
    pub module: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub modules: Vec<Module>,
    pub packages: Vec<Package>,
    pub add_ons: Vec<AddOn>,
}

/// What a company may use, at a version. `core_app` is true only while a
/// subscription whose package includes `basic` is active; active add-ons add
/// their module with or without one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlements {
    pub company: Uuid,
    pub version: i64,
    pub core_app: bool,
    pub modules: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntitlementVersion {
    pub company: Uuid,
    pub version: i64,
}

/// A company's entitlements just before and just after one write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntitlementChange {
    pub company: Uuid,
    pub before: Entitlements,
    pub after: Entitlements,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionStatus {
    Active,
    Inactive,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::Inactive => "inactive",
        }
    }
}

/// `PUT /v1/companies/{company}/subscription`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRequest {
    pub package: String,
    pub status: SubscriptionStatus,
}

/// `PUT /v1/companies/{company}/add-ons/{add_on}`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddOnRequest {
    pub active: bool,
}

/// `POST /v1/catalog/packages`: creates the package, or replaces the name
/// and modules of an existing one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageRequest {
    pub key: String,
    pub name: String,
    pub modules: Vec<String>,
}

/// `POST /v1/catalog/add-ons`: creates the add-on, or replaces the name and
/// module of an existing one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddOnDefinition {
    pub key: String,
    pub name: String,
    pub module: String,
}

/// The answer to a catalog write: the item as it now is, whether it is new,
/// and the companies whose entitlement version the write bumped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatalogChange<T> {
    pub item: T,
    pub created: bool,
    pub bumped: Vec<EntitlementVersion>,
}

/// One row of a company's entitlement history.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct HistoryEntry {
    pub version: i64,
    pub actor: String,
    pub caller: String,
    pub action: String,
    pub subject: String,
    pub detail: serde_json::Value,
    pub before: serde_json::Value,
    pub after: serde_json::Value,
    pub request_id: Option<String>,
    /// RFC 3339, UTC.
    pub at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct History {
    pub company: Uuid,
    pub history: Vec<HistoryEntry>,
}

/// Catalog keys: lowercase letters, digits and `-`, starting with a letter,
/// at most 63 bytes (the same rule as the database's CHECK).
pub fn validate_key(what: &str, key: &str) -> Result<(), CoreError> {
    let mut bytes = key.bytes();
    let starts_with_letter = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if starts_with_letter && rest_ok && key.len() <= 63 {
        Ok(())
    } else {
        Err(CoreError::InvalidRequest(format!(
            "{what} key `{key}`: use lowercase letters, digits and '-', starting with a letter, at most 63 characters"
        )))
    }
}

pub fn validate_name(what: &str, name: &str) -> Result<(), CoreError> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(CoreError::InvalidRequest(format!(
            "{what} name must be 1 to 200 characters"
        )));
    }
    Ok(())
}

pub fn parse_company(company: &str) -> Result<Uuid, CoreError> {
    Uuid::parse_str(company).map_err(|_| CoreError::InvalidCompany(company.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_keys_follow_one_rule() {
        assert!(validate_key("package", "basic-plus-finance").is_ok());
        assert!(validate_key("package", "Basic").is_err());
        assert!(validate_key("package", "-x").is_err());
        assert!(validate_key("package", "").is_err());
        assert!(validate_key("package", &"a".repeat(64)).is_err());
    }

    #[test]
    fn a_subscription_status_is_active_or_inactive() {
        let request: SubscriptionRequest =
            serde_json::from_str(r#"{"package":"basic-standard","status":"inactive"}"#).unwrap();
        assert_eq!(request.status, SubscriptionStatus::Inactive);
        assert!(
            serde_json::from_str::<SubscriptionRequest>(r#"{"package":"p","status":"paused"}"#)
                .is_err()
        );
    }
}
