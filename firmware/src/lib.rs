//! Vigie field firmware (`no_std`, no heap).
//!
//! Module map:
//! - [`counter`]: the frame counter, never reused, persisted by skip-ahead reservation.
//! - [`outbox`]: store-and-forward queue; frames leave it only on PUBACK; drops counted.
//! - [`sampling`]: median of a window, report-on-change with heartbeat, bin fill level,
//!   fire suspicion.
//!
//! To come with the rest of the firmware issue: drivers (SDS011, BME280, A02YYUW, tilt)
//! generic over embedded-hal 1.0 and the uplink.
#![no_std]
#![forbid(unsafe_code)]

pub mod counter;
pub mod outbox;
pub mod sampling;

pub use protocol;
