//! Vigie fleet simulator: the firmware's own node, station and driver code (the `firmware`
//! crate, unchanged) on simulated sensors, publishing over TCP to any MQTT broker.
//!
//! Module map:
//! - [`signals`]: what the sensors measure (traffic peaks, pollution episodes, daily
//!   temperature cycles, bins filling and emptied, occasional faults), pure.
//! - [`hardware`]: the environment the firmware's simulated sensors measure, on a virtual
//!   clock, and NOR flash in memory.
//! - [`net`]: a tokio TCP socket as the `embedded_io_async` byte stream.
//! - [`device`]: one device's loop, as on a board.
//! - [`fleet`]: many devices, progress line, summary.
// Layout (docs/ARCHITECTURE.md): functions of at most 60 lines (`clippy.toml`) outside tests.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod device;
pub mod fleet;
pub mod hardware;
pub mod net;
pub mod signals;

pub use fleet::{Fleet, FleetOptions, FleetSummary, Outage};
