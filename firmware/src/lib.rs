//! Vigie field firmware (`no_std`, no heap).
//!
//! Module map:
//! - [`counter`]: the frame counter, never reused, persisted by skip-ahead reservation.
//!
//! To come with the rest of the firmware issue: drivers (SDS011, BME280, A02YYUW, tilt)
//! generic over embedded-hal 1.0, sampling, the store-and-forward queue and the uplink.
#![no_std]
#![forbid(unsafe_code)]

pub mod counter;

pub use protocol;
