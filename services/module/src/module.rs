//! The six module backends this binary can run, and what sets them apart:
//! the database engine, the one business resource each exposes here, and
//! whether Redis is a dependency.

use std::fmt;
use std::str::FromStr;

use kisum_common::modules::{CATALOG, ModuleCatalog};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Module {
    Basic,
    Finance,
    Market,
    Touring,
    Venue,
    Ai,
}

/// Where a module keeps its business data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mongo,
}

/// How a module depends on Redis when `REDIS_URL` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisUse {
    /// Not used; `REDIS_URL` is ignored.
    None,
    /// Checked and reported, but never a reason to be unready.
    Optional,
    /// Readiness fails while Redis is unreachable.
    Required,
}

impl Module {
    pub const ALL: [Module; 6] = [
        Module::Basic,
        Module::Finance,
        Module::Market,
        Module::Touring,
        Module::Venue,
        Module::Ai,
    ];

    /// The module's id: its `MODULE_NAME`, its key in the access context,
    /// the first part of its permission keys and its internal caller name.
    pub fn name(self) -> &'static str {
        match self {
            Module::Basic => "basic",
            Module::Finance => "finance",
            Module::Market => "market",
            Module::Touring => "touring",
            Module::Venue => "venue",
            Module::Ai => "ai",
        }
    }

    pub fn engine(self) -> Engine {
        match self {
            Module::Finance | Module::Venue | Module::Ai => Engine::Postgres,
            Module::Basic | Module::Market | Module::Touring => Engine::Mongo,
        }
    }

    /// The module's resource and permission keys, from the platform's
    /// catalog (`kisum_common::modules::CATALOG`, in [`Module::ALL`]'s order).
    pub fn catalog(self) -> &'static ModuleCatalog {
        &CATALOG[self as usize]
    }

    /// The business resource served under `/v1/<resource>`.
    pub fn resource(self) -> &'static str {
        self.catalog().resource
    }

    /// The default request timeout: the module's
    /// `services.<module>.timeouts.read-seconds` in the environment matrix.
    pub fn read_timeout(self) -> std::time::Duration {
        let seconds = match self {
            Module::Finance => 60,
            Module::Ai => 300,
            Module::Basic | Module::Market | Module::Touring | Module::Venue => 30,
        };
        std::time::Duration::from_secs(seconds)
    }

    pub fn redis_use(self) -> RedisUse {
        match self {
            Module::Basic => RedisUse::Optional,
            _ => RedisUse::None,
        }
    }
}

impl fmt::Display for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{}", kisum_common::modules::unknown_module(.0, &kisum_common::modules::MODULE_NAMES))]
pub struct UnknownModule(String);

impl FromStr for Module {
    type Err = UnknownModule;

    fn from_str(name: &str) -> Result<Module, UnknownModule> {
        Module::ALL
            .into_iter()
            .find(|module| module.name() == name)
            .ok_or_else(|| UnknownModule(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_parses_from_its_own_name() {
        for module in Module::ALL {
            assert_eq!(module.name().parse::<Module>().unwrap(), module);
        }
        assert!("Finance".parse::<Module>().is_err());
    }

    #[test]
    fn every_module_reads_its_own_entry_of_the_catalog() {
        for module in Module::ALL {
            assert_eq!(module.catalog().module, module.name());
        }
        assert_eq!(Module::Finance.resource(), "invoices");
    }

    #[test]
    fn venue_and_ai_are_on_postgres_and_basic_market_touring_on_mongo() {
        let postgres: Vec<_> = Module::ALL
            .into_iter()
            .filter(|m| m.engine() == Engine::Postgres)
            .collect();
        assert_eq!(postgres, [Module::Finance, Module::Venue, Module::Ai]);
    }
}
