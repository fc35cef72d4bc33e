//! Scenario 4: Mosquitto restarts (clean stop, persistence on) while messages for the
//! gateway wait in its session queue; after the restart they are delivered and stored.
//! Also checks the gateway's graceful shutdown: SIGTERM, bounded time, exit code 0.
#![allow(clippy::unwrap_used)]

use gateway::registry::DeviceKind;
use std::collections::BTreeSet;
use std::time::Duration;
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::{GatewayProcess, GatewaySettings};
use vigie_tests::readback::{self, key};
use vigie_tests::{influxdb, mosquitto, now_s, wait_for};

const PER_BATCH: u32 = 250;

async fn stored(influx: std::net::SocketAddr) -> BTreeSet<String> {
    let all = readback::influx_points(influx, "vigie_lyon", &["air_quality"]).await;
    all.into_iter().filter(|p| p.contains("|pm25|")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_survive_a_broker_restart() {
    let (mut broker, influx) = (mosquitto(), influxdb());
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

    let start = now_s() - 3600;
    let mut expected = BTreeSet::new();
    let mut batches = [Vec::new(), Vec::new(), Vec::new()];
    for n in 0..3 * PER_BATCH {
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
            batches[(n / PER_BATCH) as usize].push((d.topic(), d.frame(&[r], n)));
        }
    }
    let per_batch = batches[0].len();

    // A: stored normally.
    fleet::publish_all(broker.addr, "fleet", &batches[0]).await;
    wait_for("batch A stored", Duration::from_secs(30), async || {
        stored(influx.addr).await.len() >= per_batch
    })
    .await;
    // B: published while the gateway is away, so it waits in the gateway's session queue.
    let shutdown = gw.terminate();
    assert!(
        shutdown < Duration::from_secs(10),
        "graceful shutdown took {shutdown:?}"
    );
    fleet::publish_all(broker.addr, "fleet", &batches[1]).await;
    // The broker restarts cleanly (saving its database) with B still queued.
    broker.stop(false);
    assert!(
        broker.log().contains("Saving in-memory database"),
        "{}",
        broker.log()
    );
    broker.start();
    gw.restart();
    // C: after everything is back.
    fleet::publish_all(broker.addr, "fleet", &batches[2]).await;
    wait_for("A, B and C stored", Duration::from_secs(60), async || {
        stored(influx.addr).await.len() >= 3 * per_batch
    })
    .await;
    let got = stored(influx.addr).await;
    assert_eq!(got, expected, "zero lost, zero extra");
    println!(
        "broker_restart: published={} stored={} duplicated=0 queued_across_restart={per_batch} gateway_shutdown={shutdown:?}",
        3 * per_batch,
        got.len()
    );
    gw.terminate();
}
