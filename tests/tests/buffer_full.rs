//! Scenario 7: database down and a small buffer (2 MiB). The gateway fills the buffer,
//! then stops acknowledging (metric and log say so) while the broker holds the rest;
//! nothing is dropped, and everything drains once the database is back.
#![allow(clippy::unwrap_used)]

use gateway::registry::DeviceKind;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::{GatewayProcess, GatewaySettings};
use vigie_tests::readback::{self, key};
use vigie_tests::{influxdb, mosquitto, now_s, wait_for};

const PER_DEVICE: u32 = 5000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buffer_backpressures_then_drains() {
    let (broker, mut influx) = (mosquitto(), influxdb());
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    influx.stop(false);
    let dir = tempfile::tempdir().unwrap();
    let devices: Vec<_> = (0..5)
        .map(|i| Device::new("lyon", &format!("aq-{i}"), DeviceKind::AirQuality))
        .collect();
    fleet::write_registry(&dir.path().join("devices.toml"), &devices);
    let settings = GatewaySettings {
        client_id: "gw".into(),
        group: "gw".into(),
        broker: broker.addr,
        influx: Some(influx.addr),
        buffer_mib: (2, 1),
    };
    let gw = GatewayProcess::start(dir.path(), &settings);

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
    fleet::publish_all(broker.addr, "fleet", &messages).await;

    wait_for("the buffer to fill", Duration::from_secs(60), async || {
        gw.metric("vigie_buffer_full") == Some(1.0)
    })
    .await;
    let buffered = gw.metric("vigie_buffer_bytes").unwrap();
    let accepted = gw.metric("vigie_frames_accepted_total").unwrap();
    assert!(
        buffered <= 2.0 * 1024.0 * 1024.0,
        "the limit holds: {buffered} bytes"
    );
    assert!(
        accepted < total as f64,
        "the gateway stopped taking traffic at {accepted} of {total}"
    );
    assert!(
        gw.log().contains("withholding acknowledgements"),
        "the log says why:\n{}",
        gw.log()
    );
    // Held, not dropped: still full a moment later, and nothing was rejected.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(gw.metric("vigie_frames_accepted_total"), Some(accepted));
    assert_eq!(gw.metric("vigie_frames_rejected_total"), Some(0.0));

    influx.start();
    let up_at = Instant::now();
    wait_for(
        "every reading in InfluxDB",
        Duration::from_secs(180),
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
    wait_for(
        "buffer_full back to 0",
        Duration::from_secs(10),
        async || gw.metric("vigie_buffer_full") == Some(0.0),
    )
    .await;
    println!(
        "buffer_full: published={total} stored={} held_at_broker_while_full={} drain_after_restart={:?}",
        got.len(),
        total as f64 - accepted,
        up_at.elapsed()
    );
    let mut gw = gw;
    gw.terminate();
}
