//! What every Kisum service shares, written once: typed configuration from
//! the environment, the JWT key set and its JWKS, token signing and
//! verification, the JWKS cache of the backends, internal service
//! credentials, logging and metrics, and the two-port server.

pub mod command;
pub mod config;
pub mod internal;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod logs;
pub mod modules;
pub mod org;
pub mod schema;
pub mod serve;
pub mod telemetry;
