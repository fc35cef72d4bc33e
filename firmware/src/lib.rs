//! Vigie field firmware (`no_std`, no heap).
//!
//! Module map:
//! - [`drivers`]: sensor drivers over embedded-hal 1.0 (SDS011 PM, BME280 climate,
//!   A02YYUW distance, tilt switch).
//! - [`sampling`]: median of a window, report-on-change with heartbeat, bin fill level,
//!   fire suspicion (pure).
//! - [`station`]: one sampling cycle per kind, drivers in, a reading and fault flags out.
//! - [`counter`]: the frame counter, never reused, persisted by skip-ahead reservation.
//! - [`outbox`]: store-and-forward queue; when full the oldest is dropped and counted.
//! - [`node`]: identity, counter, queue and uplink together: seal, publish, forget on PUBACK.
//! - [`uplink`]: MQTT 5 over any `embedded_io_async` byte stream (rust-mqtt).
//! - [`modem`]: cellular modem AT commands: network time, TCP in transparent mode.
//! - [`serial_io`]: an `embedded-hal-nb` UART as an async byte stream (polling).
//! - [`backoff`]: reconnect back-off with jitter.
//! - [`boot`]: the provisioning blob read from flash; no valid blob, no start.
//! - [`app`]: the node's main loop for any board (link, connect, sample, send, back off),
//!   and the texts boards show for each failure.
//! - [`simulated`]: sensors and NOR flash behind the same traits, for the host simulator and
//!   emulated boards that have none.
//!
//! Drivers and sampling are blocking (embedded-hal 1.0); only the uplink is async, because
//! the maintained no_std MQTT clients are (see `uplink`). A board runs it under any
//! executor, even a plain `block_on`; the host simulator under tokio.
#![no_std]
#![forbid(unsafe_code)]

pub mod app;
pub mod backoff;
pub mod boot;
pub mod counter;
pub mod drivers;
pub mod modem;
pub mod node;
pub mod outbox;
pub mod sampling;
pub mod serial_io;
pub mod simulated;
pub mod station;
pub mod uplink;

pub use protocol;

/// Readings the reference node queues while its uplink is down: at one reading per
/// 5-minute interval, about five hours of outage before the oldest is dropped.
pub const REFERENCE_QUEUE: usize = 64;
