//! The environment matrix: the single source of truth about the platform.

pub mod index;
pub mod load;
pub mod model;
pub mod rules;
pub mod schema;
pub mod syntax;

pub use load::InputError;
pub use model::{ConfigValue, Environment, Matrix, ResolvedService};
