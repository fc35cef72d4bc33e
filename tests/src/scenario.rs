//! What the fault scenarios share: a tenant's air-quality devices, a load of single-reading
//! frames with the points it must produce, and reading those points back.

use crate::fleet::{self, Device};
use crate::readback::{self, key};
use gateway::fleet::registry::DeviceKind;
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
    load_from(devices, 0, per_device, start)
}

/// [`load`] from frame counter (and reading number) `first` on: what the same devices
/// send next.
pub fn load_from(devices: &[Device], first: u32, per_device: u32, start: u32) -> Load {
    let mut l = Load::default();
    for n in first..first + per_device {
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

/// How a scenario ended, counted from the acknowledged publishes and the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Readings published and acknowledged by the broker.
    pub published: usize,
    /// Distinct expected readings the database holds.
    pub stored: usize,
    /// Acknowledged readings the database does not hold.
    pub lost: usize,
    /// Points beyond one per reading (the same reading stored under two timestamps).
    pub duplicated: usize,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "published={} stored={} lost={} duplicated={}",
            self.published, self.stored, self.lost, self.duplicated
        )
    }
}

/// `pm25` points of `tenant` at full (millisecond) resolution: two points of one reading
/// would both count here, while [`stored`] keys them by second.
pub async fn point_count(influx: SocketAddr, tenant: &str) -> usize {
    let body = readback::influx_query(
        influx,
        &format!("vigie_{tenant}"),
        "SELECT COUNT(pm25) FROM air_quality",
    )
    .await;
    body["results"][0]["series"][0]["values"][0][1]
        .as_u64()
        .unwrap_or(0) as usize
}

/// Waits (up to `limit`) until InfluxDB holds as many `pm25` points as `expected` (the
/// acknowledged publishes), then counts: lost from what is missing, duplicated from points
/// against distinct readings. Panics unless nothing is lost, duplicated or unexpected.
pub async fn all_stored(
    influx: SocketAddr,
    expected: &BTreeSet<String>,
    limit: std::time::Duration,
) -> Outcome {
    crate::wait_for("every reading in InfluxDB", limit, async || {
        stored(influx).await.len() >= expected.len()
    })
    .await;
    let got = stored(influx).await;
    let outcome = Outcome {
        published: expected.len(),
        stored: got.intersection(expected).count(),
        lost: expected.difference(&got).count(),
        duplicated: point_count(influx, TENANT).await.saturating_sub(got.len()),
    };
    assert_exactly(&got, expected);
    assert_eq!(outcome.duplicated, 0, "{outcome}");
    outcome
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

/// What a simulated fleet's readings become in the database.
const FLEET_MEASUREMENTS: [&str; 3] = ["air_quality", "device_status", "device_energy"];

/// Distinct readings of [`TENANT`] stored (measurement|device|second) and the number of
/// points.
pub async fn fleet_stored(influx: SocketAddr) -> (BTreeSet<String>, usize) {
    let db = format!("vigie_{TENANT}");
    let points = readback::influx_points(influx, &db, &FLEET_MEASUREMENTS).await;
    let readings = points
        .iter()
        .map(|p| p.split('|').skip(1).take(3).collect::<Vec<_>>().join("|"))
        .collect();
    let mut rows = 0;
    for m in FLEET_MEASUREMENTS {
        let body = readback::influx_query(influx, &db, &format!("SELECT * FROM {m}")).await;
        rows += body["results"][0]["series"][0]["values"]
            .as_array()
            .map_or(0, Vec::len);
    }
    (readings, rows)
}

/// Waits (up to a minute) until InfluxDB holds what a simulated fleet recorded, then
/// counts: (stored, lost, duplicated), from the devices' own count and the database.
pub async fn fleet_outcome(
    influx: SocketAddr,
    summary: &vigie_sim::FleetSummary,
) -> (usize, usize, usize) {
    recorded_outcome(influx, (summary.recorded - summary.dropped) as usize).await
}

/// [`fleet_outcome`] of `recorded` readings (the devices' count, several runs summed).
pub async fn recorded_outcome(influx: SocketAddr, recorded: usize) -> (usize, usize, usize) {
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        crate::wait_for(
            "every recorded reading stored",
            std::time::Duration::from_secs(60),
            async || fleet_stored(influx).await.0.len() >= recorded,
        ),
    )
    .await;
    let (readings, rows) = fleet_stored(influx).await;
    let lost = recorded.saturating_sub(readings.len());
    (readings.len(), lost, rows - readings.len())
}

/// What every fleet scenario must end with: all devices ran, each has every reading
/// acknowledged, and InfluxDB holds each reading the devices kept exactly once.
pub fn assert_all_stored(
    summary: &vigie_sim::FleetSummary,
    (stored, lost, duplicated): (usize, usize, usize),
) {
    assert_eq!(summary.failed, 0);
    assert_eq!(
        summary.waiting, 0,
        "every reading acknowledged by the end: {summary}"
    );
    assert_eq!((lost, duplicated), (0, 0));
    assert_eq!(stored as u64, summary.recorded - summary.dropped);
}
