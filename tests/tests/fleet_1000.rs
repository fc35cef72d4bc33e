//! A thousand simulated devices, the firmware's own code (node, stations, drivers, MQTT client
//! uplink) on simulated sensors, publish through real Mosquitto to the gateway: every frame
//! verifies (tag, counter, topic), every acknowledged reading is in InfluxDB exactly once,
//! and every device appears there.
#![allow(clippy::unwrap_used)]

use gateway::fleet::registry::DeviceKind;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::watch;
use vigie_sim::{Fleet, FleetOptions};
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::InProcessGateway;
use vigie_tests::{influxdb, mosquitto, readback, wait_for};

const TENANTS: [&str; 4] = ["lyon", "villeurbanne", "grenoble", "annecy"];
const DEVICES: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_simulated_devices_are_all_accepted() {
    let influx = influxdb();
    for t in TENANTS {
        readback::influx_create_db(influx.addr, &format!("vigie_{t}")).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let devices: Vec<_> = (0..DEVICES)
        .map(|i| {
            let kind = if i % 3 == 2 {
                DeviceKind::WasteBin
            } else {
                DeviceKind::AirQuality
            };
            let prefix = if kind == DeviceKind::WasteBin {
                "bin"
            } else {
                "aq"
            };
            Device::new(
                TENANTS[i % TENANTS.len()],
                &format!("{prefix}-{i:04}"),
                kind,
            )
        })
        .collect();
    fleet::write_registry(&dir.path().join("devices.toml"), &devices);
    let broker = mosquitto(dir.path());
    let gw = InProcessGateway::for_registry(dir.path(), "gw-fleet", broker.addr, influx.addr).await;
    let metrics = &gw.metrics;

    // A 5-minute interval at 300× is one sample a second per device; a 10-minute
    // heartbeat and a status report every 4 samples keep every device talking.
    let provisioning = devices
        .iter()
        .map(|d| d.provisioning(broker.addr, 300, 600))
        .collect();
    let options = FleetOptions {
        broker: broker.addr,
        accel: 300.0,
        duration: Duration::from_secs(15),
        status_every: 4,
        outages: Vec::new(),
        progress: false,
        ca: None,
    };
    let (_fleet_stop, fleet_stop) = watch::channel(false);
    let summary = Fleet::new(provisioning, options).run(fleet_stop).await;
    eprintln!("fleet: {summary}");
    assert_eq!(summary.failed, 0, "{summary}");
    assert!(summary.connections >= DEVICES as u64, "{summary}");
    assert_eq!(summary.dropped + summary.waiting, 0, "{summary}");
    assert_eq!(summary.acknowledged, summary.recorded, "{summary}");
    assert!(summary.acknowledged >= 3 * DEVICES as u64, "{summary}");

    let want = summary.acknowledged as f64;
    wait_for(
        "every reading stored",
        Duration::from_secs(60),
        async || (metrics.counts().readings_stored as f64) >= want,
    )
    .await;
    assert_eq!(metrics.counts().frames_rejected, 0);
    assert_eq!((metrics.counts().readings_stored as f64), want);

    // Read back: one (measurement, device, time) per stored reading, every device present.
    let mut readings = BTreeSet::new();
    for t in TENANTS {
        let points = readback::influx_points(
            influx.addr,
            &format!("vigie_{t}"),
            &["air_quality", "waste_bin", "device_status", "device_energy"],
        )
        .await;
        for p in points {
            let parts: Vec<&str> = p.split('|').collect();
            readings.insert((
                parts[0].to_string(),
                parts[1].to_string(),
                parts[2].to_string(),
                parts[3].to_string(),
            ));
        }
    }
    assert_eq!(readings.len() as u64, summary.acknowledged);
    let seen: BTreeSet<_> = readings
        .iter()
        .map(|r| (r.0.clone(), r.2.clone()))
        .collect();
    assert_eq!(seen.len(), DEVICES);

    gw.stop().await;
}
