//! Scenario 2: InfluxDB is stopped for 60 s under steady load, then restarted. Nothing is
//! lost or duplicated; the time the backlog takes to drain after the restart is reported.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};
use vigie_tests::process::{GatewayProcess, GatewaySettings};
use vigie_tests::scenario;
use vigie_tests::{fleet, influxdb, mosquitto, now_s, readback, wait_for};

const OUTAGE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_second_database_outage_loses_nothing() {
    let mut influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let devices = scenario::devices(dir.path(), 4);
    let broker = mosquitto(dir.path());
    let gw = GatewayProcess::start(
        dir.path(),
        &GatewaySettings::new("gw", broker.addr, Some(influx.addr)),
    );

    // Steady load: 4 devices, one reading each every 250 ms, for the outage and 10 s more.
    let rounds = ((OUTAGE.as_secs() + 10) * 4) as u32;
    let load = scenario::load(&devices, rounds, now_s() - 3600);
    let total = load.messages.len();
    let publisher = {
        let (addr, messages) = (broker.addr, load.messages);
        tokio::spawn(async move {
            for chunk in messages.chunks(4) {
                fleet::publish_all(addr, chunk).await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(3)).await;
    influx.stop(false);
    let down_at = Instant::now();
    wait_for(
        "the gateway to notice the outage",
        Duration::from_secs(20),
        async || gw.metric("vigie_sink_healthy") == Some(0.0),
    )
    .await;
    tokio::time::sleep(OUTAGE.saturating_sub(down_at.elapsed())).await;
    let pending = gw.metric("vigie_buffer_pending_bytes").unwrap();
    assert!(
        pending > 0.0,
        "readings wait in the buffer during the outage"
    );
    assert_eq!(gw.metric("vigie_buffer_full"), Some(0.0));
    let backlog = gw.metric("vigie_readings_accepted_total").unwrap();
    influx.start();
    let up_at = Instant::now();
    wait_for(
        "the backlog to drain",
        Duration::from_secs(60),
        async || gw.metric("vigie_readings_stored_total").unwrap_or(0.0) >= backlog,
    )
    .await;
    let drain = up_at.elapsed();
    publisher.await.unwrap();
    let got = scenario::all_stored(influx.addr, &load.expected, Duration::from_secs(120)).await;
    assert_eq!(got.published, total);
    println!(
        "db_outage: {got} outage={:?} backlog={backlog} readings ({pending} bytes) drained in {drain:?} after the restart",
        up_at - down_at
    );
    let mut gw = gw;
    gw.terminate();
}
