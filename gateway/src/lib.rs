//! Vigie gateway: the shells around the functional core ([`vigie_core`]: every decision,
//! no I/O, time passed in). The folders follow one reading:
//!
//! - [`intake`]: MQTT in and acknowledgements out (own MQTT 5 connection, or the embedded
//!   broker of the no-servers mode).
//! - [`ingest`]: the worker thread that judges a batch, commits it, then acknowledges.
//! - [`store`]: the durable buffer, the quarantine, the filesystem seam under both.
//! - [`deliver`]: per-commune delivery to InfluxDB (v1, v2) or VictoriaMetrics, and what
//!   each database keeps (retention, device metadata, communes' databases).
//!
//! Beside them: [`web`] (HTTP server, status pages), [`observe`] (metrics, health, device
//! state and live feed), [`notify`] (alerts by e-mail and webhook), [`fleet`] (registry file, broker accounts, the CA), [`config`]
//! (the configuration file), [`clock`] (the one clock, and whether the host's is
//! synchronised), [`service`] (the composition root) and [`ops`] (the operator commands,
//! one file per group). `docs/ARCHITECTURE.md` draws the map.
// Layout (docs/ARCHITECTURE.md): functions of at most 60 lines (`clippy.toml`) outside tests.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod clock;
pub mod config;
pub mod deliver;
pub mod fleet;
pub mod ingest;
pub mod intake;
pub mod notify;
pub mod observe;
pub mod ops;
pub mod service;
pub mod store;
pub mod web;

pub use protocol;
pub use service::{Reload, RunError, lock_data_dir, run, run_with_metrics};
pub use vigie_core;
