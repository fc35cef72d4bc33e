//! Scenario 6: two gateways share one subscription (`$share/vigie/…`) and split the load;
//! one is killed with SIGKILL mid-run (and brought back later by its supervisor, as
//! systemd would); nothing is lost.
#![allow(clippy::unwrap_used)]

use gateway::registry::DeviceKind;
use std::collections::BTreeSet;
use std::time::Duration;
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::{GatewayProcess, GatewaySettings};
use vigie_tests::readback::{self, key};
use vigie_tests::{influxdb, mosquitto, now_s, wait_for};

const PER_DEVICE: u32 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_split_the_load_and_a_killed_one_loses_nothing() {
    let (broker, influx) = (mosquitto(), influxdb());
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let devices: Vec<_> = (0..6)
        .map(|i| Device::new("lyon", &format!("aq-{i}"), DeviceKind::AirQuality))
        .collect();
    fleet::write_registry(&dir.path().join("devices.toml"), &devices);
    let settings = |id: &str| GatewaySettings {
        client_id: id.into(),
        group: "vigie".into(),
        broker: broker.addr,
        influx: Some(influx.addr),
        buffer_mib: (64, 8),
    };
    let mut a = GatewayProcess::start(dir.path(), &settings("gw-a"));
    let b = GatewayProcess::start(dir.path(), &settings("gw-b"));

    let start = now_s() - 2 * PER_DEVICE;
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
    let total = messages.len();
    let publisher = {
        let addr = broker.addr;
        tokio::spawn(async move {
            for chunk in messages.chunks(300) {
                fleet::publish_all(addr, "fleet", chunk).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    wait_for(
        "both gateways taking traffic",
        Duration::from_secs(30),
        async || {
            a.metric("vigie_frames_accepted_total").unwrap_or(0.0) > 100.0
                && b.metric("vigie_frames_accepted_total").unwrap_or(0.0) > 100.0
        },
    )
    .await;
    let a_before = a.metric("vigie_frames_accepted_total").unwrap();
    a.kill9();
    assert!(!publisher.is_finished(), "the kill lands mid-run");
    publisher.await.unwrap();
    let b_alone = b.metric("vigie_frames_accepted_total").unwrap();
    // The supervisor restarts A; the broker hands it what its session still held.
    a.restart();
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
    let got: BTreeSet<_> = readback::influx_points(influx.addr, "vigie_lyon", &["air_quality"])
        .await
        .into_iter()
        .filter(|p| p.contains("|pm25|"))
        .collect();
    assert_eq!(got, expected, "zero lost, zero extra");
    println!(
        "scale_out: published={total} stored={} gw-a_before_kill={a_before} gw-b_until_end={b_alone}",
        got.len()
    );
    let mut b = b;
    a.terminate();
    b.terminate();
}
