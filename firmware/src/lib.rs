//! Vigie field firmware (`no_std`, no heap).
//!
//! Module map (filled by the firmware issue):
//! - `drivers`: SDS011, BME280, A02YYUW, tilt input, generic over embedded-hal 1.0.
//! - `sampling`, `queue`, `uplink`: pure logic apart from I/O.
//!
//! Today the crate only re-exports the wire contract, so that the cross-build of the
//! protocol as firmware uses it is part of the test command from the start.
#![no_std]
#![forbid(unsafe_code)]

pub use protocol;
