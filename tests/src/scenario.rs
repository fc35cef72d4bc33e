//! What the fault scenarios share: a tenant's air-quality devices, a load of single-reading
//! frames with the points it must produce, and reading those points back.

use crate::fleet::{self, Device};
use crate::readback::{self, key};
use gateway::registry::DeviceKind;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

/// The tenant of the scenarios; its InfluxDB database is `vigie_lyon`.
pub const TENANT: &str = "lyon";

/// `n` air-quality devices of [`TENANT`], written to the registry in `dir`.
pub fn devices(dir: &Path, n: usize) -> Vec<Device> {
    let devices: Vec<_> = (0..n)
        .map(|i| Device::new(TENANT, &format!("aq-{i}"), DeviceKind::AirQuality))
        .collect();
    fleet::write_registry(&dir.join("devices.toml"), &devices);
    devices
}

/// Frames to publish and the points they must produce.
#[derive(Debug, Default)]
pub struct Load {
    /// (topic, frame), devices interleaved round by round.
    pub messages: Vec<(String, Vec<u8>)>,
    /// The `pm25` points, as [`readback::key`] strings.
    pub expected: BTreeSet<String>,
}

/// `per_device` single-reading frames per device, readings one second apart from `start`.
pub fn load(devices: &[Device], per_device: u32, start: u32) -> Load {
    let mut l = Load::default();
    for n in 0..per_device {
        for d in devices {
            let r = d.reading(n, start + n);
            let pm25 = f64::from(100 + n % 500) / 10.0;
            l.expected.insert(key(
                &d.tenant,
                "air_quality",
                &d.id,
                u64::from(r.time),
                "pm25",
                pm25,
            ));
            l.messages.push((d.topic(), d.frame(&[r], n)));
        }
    }
    l
}

/// The `pm25` points of [`TENANT`] in InfluxDB.
pub async fn stored(influx: SocketAddr) -> BTreeSet<String> {
    let all = readback::influx_points(influx, &format!("vigie_{TENANT}"), &["air_quality"]).await;
    all.into_iter().filter(|p| p.contains("|pm25|")).collect()
}

/// Waits (up to `limit`) until InfluxDB holds as many `pm25` points as `expected`, then
/// checks they are exactly those; returns them.
pub async fn all_stored(
    influx: SocketAddr,
    expected: &BTreeSet<String>,
    limit: std::time::Duration,
) -> BTreeSet<String> {
    crate::wait_for("every reading in InfluxDB", limit, async || {
        stored(influx).await.len() >= expected.len()
    })
    .await;
    let got = stored(influx).await;
    assert_exactly(&got, expected);
    got
}

/// Zero lost, zero extra: `got` holds exactly the `expected` points (on failure, how many
/// are missing or unexpected, with examples, instead of two whole sets).
pub fn assert_exactly(got: &BTreeSet<String>, expected: &BTreeSet<String>) {
    let missing: Vec<_> = expected.difference(got).collect();
    let extra: Vec<_> = got.difference(expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} points missing (e.g. {:?}), {} unexpected (e.g. {:?})",
        missing.len(),
        &missing[..missing.len().min(3)],
        extra.len(),
        &extra[..extra.len().min(3)]
    );
}
