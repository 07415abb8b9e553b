//! Operational documents and reports derived from the matrix.

pub mod cluster_health;
pub mod documents;
pub mod health;
pub mod inventory;
pub mod journal;
pub mod reachability;
pub mod runbook;
