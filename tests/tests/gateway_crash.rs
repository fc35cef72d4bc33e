//! Scenario 3: the gateway is killed with SIGKILL five times while devices publish; every
//! reading the broker accepted ends up in InfluxDB exactly once, with its own timestamp.
#![allow(clippy::unwrap_used)]

use gateway::registry::DeviceKind;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::{GatewayProcess, GatewaySettings};
use vigie_tests::readback::{self, key};
use vigie_tests::{influxdb, mosquitto, now_s, wait_for};

const PER_DEVICE: u32 = 1500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_kill9_under_load_lose_nothing() {
    let (broker, influx) = (mosquitto(), influxdb());
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let devices: Vec<_> = (0..4)
        .map(|i| Device::new("lyon", &format!("aq-{i}"), DeviceKind::AirQuality))
        .collect();
    fleet::write_registry(&dir.path().join("devices.toml"), &devices);
    let settings = GatewaySettings {
        client_id: "gw".into(),
        group: "gw".into(),
        broker: broker.addr,
        influx: Some(influx.addr),
        buffer_mib: (64, 8),
    };
    let mut gw = GatewayProcess::start(dir.path(), &settings);

    let start = now_s() - 7200;
    let mut expected = BTreeSet::new();
    let mut messages = Vec::new();
    for n in 0..PER_DEVICE {
        for d in &devices {
            let r = d.reading(n, start + n);
            expected.insert(key(
                "lyon",
                "air_quality",
                &d.id,
                u64::from(r.time),
                "pm25",
                f64::from(100 + n % 500) / 10.0,
            ));
            messages.push((d.topic(), d.frame(&[r], n)));
        }
    }
    // Devices publish the whole load while the gateway is killed and restarted five times.
    let total = messages.len();
    let started = Instant::now();
    let publisher = {
        let addr = broker.addr;
        // Paced (about 1,500 readings per second) so that every kill lands mid-stream.
        tokio::spawn(async move {
            for chunk in messages.chunks(300) {
                fleet::publish_all(addr, "fleet", chunk).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    let mut kills = 0;
    let mut accepted_before_kill = Vec::new();
    while kills < 5 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let before = gw.metric("vigie_frames_accepted_total").unwrap_or(0.0);
        gw.kill9();
        kills += 1;
        accepted_before_kill.push(before);
        gw.restart();
    }
    assert!(
        !publisher.is_finished(),
        "the load must still be running at the fifth kill"
    );
    publisher.await.unwrap();
    println!("frames accepted by each killed process: {accepted_before_kill:?}");
    wait_for(
        "every reading in InfluxDB",
        Duration::from_secs(90),
        async || {
            readback::influx_points(influx.addr, "vigie_lyon", &["air_quality"])
                .await
                .iter()
                .filter(|p| p.contains("|pm25|"))
                .count()
                >= total
        },
    )
    .await;
    let stored: BTreeSet<_> = readback::influx_points(influx.addr, "vigie_lyon", &["air_quality"])
        .await
        .into_iter()
        .filter(|p| p.contains("|pm25|"))
        .collect();
    assert_eq!(stored.len(), total, "zero lost, zero extra");
    assert_eq!(stored, expected);
    let recovered = gw.metric("vigie_buffer_recovered_records").unwrap();
    println!(
        "gateway_crash: published={total} stored={} duplicated=0 kills={kills} elapsed={:?} recovered_at_last_start={recovered}",
        stored.len(),
        started.elapsed()
    );
    gw.terminate();
}
