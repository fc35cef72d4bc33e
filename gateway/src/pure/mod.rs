//! The pure core: no sockets, no files, time passed in. Everything here is tested without
//! a broker or a database. (Named `pure` rather than `core`, which would shadow the `core`
//! crate inside the gateway.)
//!
//! - [`reason`]: why a frame is rejected, as stable codes.
//! - [`recent`]: the frames refused lately, so a resent one is quarantined once.
//! - [`registry`]: the device registry as a checked model.
//! - [`ack_flow`]: which MQTT acknowledgements may go out, in what order.
//! - [`downlinks`]: device acknowledgements waiting for the broker, bounded.
//! - [`batch`]: a batch of messages → the verdicts one-at-a-time delivery would give.
//! - [`verify`]: topic + payload + registry + replay book → accept / duplicate / reject.
//! - [`validate`]: time window and plausibility flags.
//! - [`lineproto`]: readings → InfluxDB line protocol.
//! - [`missing`]: which skipped counters count as missing frames.
//! - [`opendata`]: stored readings → open-data rows, CSV, NGSI-LD, GeoJSON.
//! - [`replay_book`]: replay windows of every device, persisted as a snapshot.
//! - [`retry`]: database answer → what to do, and backoff.
//! - [`discards`]: the rows VictoriaMetrics dropped after answering 204.
//! - [`settle`]: which frames a durable commit settled, and each device's acknowledgement.
//! - [`record`]: the buffer's record payload.
//! - [`erase`]: which readings and quarantined frames an erasure covers.
//! - [`condition`]: a device's colour and the reasons for it.
//! - [`atmo`]: the ATMO index's PM sub-index bands.
//! - [`glance`]: the latest values and hourly means the status page shows.

pub mod ack_flow;
pub mod atmo;
pub mod batch;
pub mod condition;
pub mod discards;
pub mod downlinks;
pub mod erase;
pub mod glance;
pub mod lineproto;
pub mod missing;
pub mod opendata;
pub mod reason;
pub mod recent;
pub mod record;
pub mod registry;
pub mod replay_book;
pub mod retry;
pub mod settle;
pub mod validate;
pub mod verify;

/// The maps looked up per message (registry, replay book): ahash rather than SipHash,
/// which was a tenth of the ingest thread's time. Their keys come from the registry, never
/// from a message, so a hash-flooding attacker has nothing to insert.
pub type FastMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// What the core's tests share: a fixed "now" and the default time rules.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::validate::TimeRules;
    use crate::registry::{DeviceEntry, DeviceKind, Registry};

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
