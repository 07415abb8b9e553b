//! Database operations of an environment: provisioning the roles, users,
//! databases and privileges of every database of the matrix (plan
//! sections 9.1 and 10.2), and applying the services' schema migrations in
//! release order (9.3, 14.4). Nothing in this module prints.
//!
//! Both follow one naming scheme per PostgreSQL database, derived from its
//! owning service (`platform-core` gives `platform_core`):
//!
//! | object | name | what it is |
//! |---|---|---|
//! | schema | `platform_core` | where the service's tables live |
//! | migration role | `platform_core_migrator` | login; owns the database, the schema and every object in it |
//! | group role | `platform_core_app` | no login; USAGE on the schema, DML on its tables and sequences |
//! | login roles | `platform_core_app_a`, `platform_core_app_b` | members of the group; the service uses one at a time, so a password rotates by switching to the other |

pub mod migrate;
pub mod provision;
pub mod scram;

use anyhow::bail;

/// The PostgreSQL names of one service's database.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoleNames {
    pub schema: String,
    pub migrator: String,
    pub group: String,
    pub logins: [String; 2],
}

impl RoleNames {
    /// The names for service `service` (a matrix id such as `platform-core`).
    pub fn for_service(service: &str) -> anyhow::Result<RoleNames> {
        let base = service.replace('-', "_");
        // The longest derived name must fit PostgreSQL's 63-byte limit.
        for name in [base.clone(), format!("{base}_migrator")] {
            identifier(&name)?;
        }
        Ok(RoleNames {
            schema: base.clone(),
            migrator: format!("{base}_migrator"),
            group: format!("{base}_app"),
            logins: [format!("{base}_app_a"), format!("{base}_app_b")],
        })
    }
}

/// A PostgreSQL identifier made only of lowercase letters, digits and `_`,
/// quoted: such a name needs no escaping.
pub fn identifier(name: &str) -> anyhow::Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        bail!(
            "`{}` cannot be a PostgreSQL name here (lowercase letters, digits and `_`, at most \
             63 bytes)",
            name.escape_debug()
        );
    }
    Ok(format!("\"{name}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_owning_service() {
        let names = RoleNames::for_service("platform-core").unwrap();
        assert_eq!(names.schema, "platform_core");
        assert_eq!(names.migrator, "platform_core_migrator");
        assert_eq!(names.group, "platform_core_app");
        assert_eq!(names.logins, ["platform_core_app_a", "platform_core_app_b"]);
        assert!(RoleNames::for_service(&"x".repeat(60)).is_err());
    }

    #[test]
    fn identifiers_are_quoted_and_checked() {
        assert_eq!(identifier("auth_db").unwrap(), "\"auth_db\"");
        for bad in ["auth\"; drop", "Auth", "", "1abc", "a-b"] {
            assert!(identifier(bad).is_err(), "{bad}");
        }
    }
}
