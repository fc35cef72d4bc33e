//! The fleet's files: the device registry (TOML, the core's `fleet` model), the broker
//! accounts generated from it, and the deployment's certificate authority.

pub mod access;
pub mod pki;
pub mod registry;
