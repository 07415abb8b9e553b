//! The platform's modules (spec section 2), by the name every service uses
//! for them: the `MODULE_NAME` of a backend, the key of a grant, the first
//! part of a permission key.

/// Every module name, in the catalog's order.
pub const MODULE_NAMES: [&str; 6] = ["basic", "finance", "market", "touring", "venue", "ai"];

/// What a module offers to grant: its business resource and the
/// permission keys (`<module>.<resource>.<action>`) a role or a membership
/// may hold. Auth refuses any other key; the module backends draw their
/// route-to-permission maps from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleCatalog {
    pub module: &'static str,
    /// The business resource, served under `/v1/<resource>`.
    pub resource: &'static str,
    /// Reading the resource (`GET`).
    pub read: &'static str,
    /// Creating or changing it (`POST`).
    pub write: &'static str,
}

impl ModuleCatalog {
    /// Every permission key of the module.
    pub fn permissions(&self) -> [&'static str; 2] {
        [self.read, self.write]
    }
}

/// The catalog of every module, in [`MODULE_NAMES`]' order.
pub const CATALOG: [ModuleCatalog; 6] = [
    entry(
        "basic",
        "contacts",
        "basic.contacts.read",
        "basic.contacts.write",
    ),
    entry(
        "finance",
        "invoices",
        "finance.invoices.read",
        "finance.invoices.write",
    ),
    entry(
        "market",
        "listings",
        "market.listings.read",
        "market.listings.write",
    ),
    entry(
        "touring",
        "tours",
        "touring.tours.read",
        "touring.tours.write",
    ),
    entry("venue", "venues", "venue.venues.read", "venue.venues.write"),
    entry("ai", "prompts", "ai.prompts.read", "ai.prompts.write"),
];

const fn entry(
    module: &'static str,
    resource: &'static str,
    read: &'static str,
    write: &'static str,
) -> ModuleCatalog {
    ModuleCatalog {
        module,
        resource,
        read,
        write,
    }
}

/// The catalog of `module`, when it is one.
pub fn catalog(module: &str) -> Option<&'static ModuleCatalog> {
    CATALOG.iter().find(|entry| entry.module == module)
}

/// Whether `name` is one of [`MODULE_NAMES`].
pub fn is_module(name: &str) -> bool {
    MODULE_NAMES.contains(&name)
}

/// What a service answers for a module name it does not know: the name
/// given (quoted, control characters escaped) and the names it knows.
pub fn unknown_module<S: AsRef<str>>(name: &str, known: &[S]) -> String {
    let known: Vec<&str> = known.iter().map(AsRef::as_ref).collect();
    format!(
        "`{}` is not a module; the modules are {}",
        name.escape_debug(),
        known.join(", ")
    )
}

/// Why a permission key cannot be granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermissionError {
    #[error(
        "permission `{0}` must start with its module (`finance.invoices.read`), one of basic, finance, market, touring, venue, ai"
    )]
    NoModule(String),
    #[error("unknown permission `{key}`: module `{module}` has {}", known.join(", "))]
    Unknown {
        key: String,
        module: &'static str,
        known: [&'static str; 2],
    },
}

/// The module of a permission key in the catalog; any other key is an
/// error naming it (and the keys its module has).
pub fn known_permission(key: &str) -> Result<&'static str, PermissionError> {
    let module = module_of_permission(key).ok_or_else(|| PermissionError::NoModule(key.into()))?;
    let entry = catalog(module).ok_or_else(|| PermissionError::NoModule(key.into()))?;
    if entry.permissions().contains(&key) {
        Ok(entry.module)
    } else {
        Err(PermissionError::Unknown {
            key: key.to_string(),
            module: entry.module,
            known: entry.permissions(),
        })
    }
}

/// The module a permission key (`finance.invoices.read`) belongs to, when
/// its first part names one and something follows it.
pub fn module_of_permission(permission: &str) -> Option<&str> {
    let (module, rest) = permission.split_once('.')?;
    (is_module(module) && !rest.is_empty()).then_some(module)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_permission_belongs_to_the_module_it_starts_with() {
        assert_eq!(
            module_of_permission("finance.invoices.read"),
            Some("finance")
        );
        assert_eq!(module_of_permission("ai.prompts.write"), Some("ai"));
        for odd in [
            "finance",
            "finance.",
            ".invoices.read",
            "billing.x.read",
            "",
        ] {
            assert_eq!(module_of_permission(odd), None, "{odd}");
        }
        assert!(is_module("venue") && !is_module("Venue") && !is_module("core"));
    }

    #[test]
    fn the_catalog_covers_every_module_with_keys_of_its_own() {
        let modules: Vec<_> = CATALOG.iter().map(|entry| entry.module).collect();
        assert_eq!(modules, MODULE_NAMES);
        for entry in CATALOG {
            for key in entry.permissions() {
                assert_eq!(module_of_permission(key), Some(entry.module), "{key}");
                assert!(key.starts_with(&format!("{}.{}.", entry.module, entry.resource)));
                assert_eq!(known_permission(key), Ok(entry.module));
            }
        }
    }

    #[test]
    fn a_key_outside_the_catalog_is_refused_by_name() {
        let error = known_permission("finance.x.y").unwrap_err().to_string();
        assert!(error.contains("`finance.x.y`"), "{error}");
        assert!(error.contains("finance.invoices.read"), "{error}");
        for odd in [
            "billing.invoices.read",
            "finance",
            "finance.invoices.read.x",
        ] {
            assert!(known_permission(odd).is_err(), "{odd}");
        }
    }
}
