//! Vigie's functional core: everything the gateway decides, with no sockets, no files
//! and no clock (time comes in as an argument). Tested without a broker or a database.
//! It depends on `protocol` and small data crates only (serde, ahash, itoa, crc32fast,
//! chrono for dates, thiserror); `docs/ARCHITECTURE.md` draws where it sits.
//!
//! Grouped by what they decide, in the order a reading meets them:
//! - [`fleet`]: the device registry as a checked model (keys, accounts, metadata).
//! - [`judge`]: a frame → stored, duplicate, held or refused (verify, batch verdicts,
//!   validation, the replay book, refusal reasons, recently refused frames).
//! - [`record`]: the durable buffer's record payload.
//! - [`ack`]: which acknowledgements a durable commit settles and in what order they go.
//! - [`output`]: readings → InfluxDB line protocol and open-data formats.
//! - [`deliver`]: a database's answer → what to do next; what VictoriaMetrics dropped.
//! - [`condition`]: what each device's traffic says of it (state book, colour and reasons,
//!   missing frames, latest values, the ATMO index).
//! - [`alert`]: which conditions to tell someone of, when they start and end, the digest.
//! - [`erase`]: which readings and quarantined frames an erasure covers.
//! - [`Secret`]: a password or token that never shows in `Debug`.
// Layout (docs/ARCHITECTURE.md): functions of at most 60 lines (`clippy.toml`) outside tests.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod ack;
pub mod alert;
pub mod condition;
pub mod deliver;
pub mod device_map;
pub mod erase;
pub mod fleet;
pub mod judge;
pub mod output;
pub mod record;
pub mod round;
mod secret;
pub mod session;

pub use secret::Secret;

/// The maps looked up per message (registry, replay book): ahash rather than SipHash,
/// which was a tenth of the ingest thread's time. Their keys come from the registry, never
/// from a message, so a hash-flooding attacker has nothing to insert. hashbrown's map (the
/// one std wraps) for `entry_ref`: found or inserted by `&str` in one lookup.
pub type FastMap<K, V> = hashbrown::HashMap<K, V, ahash::RandomState>;

/// What the core's tests share: a fixed "now" and the default time rules.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::fleet::{DeviceEntry, DeviceKind, Registry};
    use crate::judge::validate::TimeRules;

    /// 2026-11-22T00:00:00Z.
    pub const NOW: u64 = 1_795_305_600;
    /// Five minutes of clock skew, one day of history.
    pub const RULES: TimeRules = TimeRules {
        max_future_skew_s: 300,
        max_age_s: 86_400,
    };

    /// The key of air-quality device `id` of [`registry`]: `id.len() + 1` in every byte.
    pub fn key(id: &str) -> protocol::DeviceKey {
        protocol::DeviceKey::new([id.len() as u8 + 1; 16], 1)
    }

    /// Air-quality devices `ids` of tenant `lyon`, keyed by [`key`], epoch 1.
    pub fn registry(ids: &[&str]) -> Registry {
        let entry = |id: &str| {
            let key = hex::encode(key(id).expose_secret());
            DeviceEntry::new("lyon", id, DeviceKind::AirQuality, key, 1)
        };
        Registry::from_entries(ids.iter().map(|id| entry(id)).collect())
            .unwrap_or_else(|e| panic!("{e}"))
    }
}
