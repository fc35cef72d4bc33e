//! Scenario 3: the gateway is killed with SIGKILL five times while devices publish; every
//! reading the broker accepted ends up in InfluxDB exactly once, with its own timestamp.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};
use vigie_tests::process::{GatewayProcess, GatewaySettings};
use vigie_tests::scenario;
use vigie_tests::{fleet, influxdb, mosquitto, now_s, readback};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_kill9_under_load_lose_nothing() {
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let devices = scenario::devices(dir.path(), 4);
    let broker = mosquitto(dir.path());
    let mut gw = GatewayProcess::start(
        dir.path(),
        &GatewaySettings::new("gw", broker.addr, Some(influx.addr)),
    );
    let load = scenario::load(&devices, 1500, now_s() - 7200);
    let total = load.messages.len();

    // Paced (about 500 readings per second, 12 s in all) so that every kill lands
    // mid-stream even when restarts are slow.
    let started = Instant::now();
    let publisher = {
        let (addr, messages) = (broker.addr, load.messages);
        tokio::spawn(async move {
            for chunk in messages.chunks(100) {
                fleet::publish_all(addr, chunk).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let mut accepted_before_kill = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        accepted_before_kill.push(gw.metric("vigie_frames_accepted_total").unwrap_or(0.0));
        gw.kill9();
        gw.restart();
    }
    assert!(
        !publisher.is_finished(),
        "the load must still be running at the fifth kill"
    );
    publisher.await.unwrap();

    let got = scenario::all_stored(influx.addr, &load.expected, Duration::from_secs(90)).await;
    assert_eq!(got.published, total);
    println!(
        "gateway_crash: {got} kills=5 accepted_by_each_killed_process={accepted_before_kill:?} elapsed={:?}",
        started.elapsed()
    );
    gw.terminate();
}
