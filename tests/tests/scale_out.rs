//! Scenario 6: two gateways share one subscription (`$share/vigie/…`) and split the load;
//! one is killed with SIGKILL mid-run (and brought back later by its supervisor, as
//! systemd would); nothing is lost.
#![allow(clippy::unwrap_used)]

use std::time::Duration;
use vigie_tests::process::{GatewayProcess, GatewaySettings};
use vigie_tests::scenario;
use vigie_tests::{fleet, influxdb, mosquitto, now_s, readback, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_split_the_load_and_a_killed_one_loses_nothing() {
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let devices = scenario::devices(dir.path(), 6);
    let broker = mosquitto(dir.path());
    let settings = |id: &str| GatewaySettings {
        group: "vigie".into(),
        ..GatewaySettings::new(id, broker.addr, Some(influx.addr))
    };
    let mut a = GatewayProcess::start(dir.path(), &settings("gw-a"));
    let mut b = GatewayProcess::start(dir.path(), &settings("gw-b"));
    let load = scenario::load(&devices, 1000, now_s() - 2000);
    let total = load.messages.len();
    let publisher = {
        let (addr, messages) = (broker.addr, load.messages);
        tokio::spawn(async move {
            for chunk in messages.chunks(150) {
                fleet::publish_all(addr, chunk).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    let accepted = |g: &GatewayProcess| g.metric("vigie_frames_accepted_total").unwrap_or(0.0);
    wait_for(
        "both gateways taking traffic",
        Duration::from_secs(30),
        async || accepted(&a) > 100.0 && accepted(&b) > 100.0,
    )
    .await;
    let a_before = accepted(&a);
    a.kill9();
    assert!(!publisher.is_finished(), "the kill lands mid-run");
    publisher.await.unwrap();
    let b_alone = accepted(&b);
    // The supervisor restarts A; the broker hands it what its session still held.
    a.restart();
    let got = scenario::all_stored(influx.addr, &load.expected, Duration::from_secs(90)).await;
    assert_eq!(got.published, total);
    println!("scale_out: {got} gw-a_before_kill={a_before} gw-b_until_end={b_alone}");
    a.terminate();
    b.terminate();
}
