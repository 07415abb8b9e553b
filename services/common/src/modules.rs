//! The platform's modules (spec section 2), by the name every service uses
//! for them: the `MODULE_NAME` of a backend, the key of a grant, the first
//! part of a permission key.

/// Every module name, in the catalog's order.
pub const MODULE_NAMES: [&str; 6] = ["basic", "finance", "market", "touring", "venue", "ai"];

/// Whether `name` is one of [`MODULE_NAMES`].
pub fn is_module(name: &str) -> bool {
    MODULE_NAMES.contains(&name)
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
}
