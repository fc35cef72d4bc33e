//! Vigie field firmware (`no_std`, no heap).
//!
//! Module map:
//! - [`drivers`]: sensor drivers over embedded-hal 1.0 (SDS011 PM, BME280 climate,
//!   A02YYUW distance).
//! - [`counter`]: the frame counter, never reused, persisted by skip-ahead reservation.
//! - [`outbox`]: store-and-forward queue; frames leave it only on PUBACK; drops counted.
//! - [`sampling`]: median of a window, report-on-change with heartbeat, bin fill level,
//!   fire suspicion.
//!
//! To come with the rest of the firmware issue: the tilt input, the uplink, provisioning
//! at boot, the reference image.
#![no_std]
#![forbid(unsafe_code)]

pub mod counter;
pub mod drivers;
pub mod outbox;
pub mod sampling;

pub use protocol;
