//! Vigie wire contract, shared by the sensor firmware and the gateway.
//!
//! `no_std`, no allocator, no `unsafe`. The byte-level specification is `SPEC.md` beside
//! this crate; tests pin its example frames byte for byte.
//!
//! Module map:
//! - [`reading`]: message kinds, fields as fixed-point integers, the field table (schema
//!   name, unit, range, scale) that every other layer reads.
//! - [`varint`]: canonical LEB128 and zigzag over bounds-checked cursors.
//! - `codec`: one reading's body (presence bitmap, fault map, values).
//! - [`frame`]: frame layout, [`FrameWriter`] / [`seal`] to build, [`peek`] / [`open`] to
//!   verify then decode.
//! - [`crypto`]: Ascon-AEAD128 with 64-bit tag, [`DeviceKey`], nonce and associated data.
//! - [`topic`]: identifiers and MQTT topics (uplink, status/last will, shared filter).
//! - [`replay`]: sliding replay window with a persistable state.
//! - [`ack`]: the downlinks (which frames a gateway holds durably, which it refused).
//! - [`provision`]: the checksummed provisioning blob (identity, key, settings).
//! - `json` (feature `serde`): JSON view of readings with the storage schema's names.
//! - [`error`]: one flat error enum per concern.
//!
//! Features: `std` (reserved, see Cargo.toml), `serde`, `defmt`.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod ack;
mod codec;
pub mod crypto;
pub mod error;
pub mod frame;
#[cfg(feature = "serde")]
pub mod json;
pub mod limits;
pub mod provision;
pub mod reading;
pub mod replay;
pub mod topic;
pub mod varint;

pub use ack::{ACK_LEN, Ack, Downlink, VERDICTS_LEN, Verdicts};
pub use crypto::{DeviceKey, TAG_LEN};
pub use error::{DecodeError, EncodeError, TopicError};
pub use frame::{
    Frame, FrameWriter, HEADER_LEN, Header, MAX_FRAME_LEN, MAX_READINGS, MIN_FRAME_LEN, Readings,
    VERSION, open, open_into, peek, rekey, reseal, seal,
};
pub use reading::{
    AirQuality, DeviceStatus, Energy, Field, FieldSpec, Kind, Reading, Render, Values, WasteBin,
};
pub use replay::{Freshness, ReplayWindow};
pub use topic::{Channel, Id, Identity, MAX_ID_LEN, Topic};
