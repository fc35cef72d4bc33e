//! Scenario 4: Mosquitto restarts (clean stop, persistence on) while messages for the
//! gateway wait in its session queue; after the restart they are delivered and stored.
//! Then the broker restarts under a running gateway, which reconnects by itself. Also
//! checks the gateway's graceful shutdown: SIGTERM, bounded time, exit code 0. And a broker
//! that hangs rather than dies, found by the gateway's keep-alive.
#![allow(clippy::unwrap_used)]

use std::time::Duration;
use vigie_tests::process::{GatewayProcess, GatewaySettings};
use vigie_tests::scenario::{self, stored};
use vigie_tests::{fleet, influxdb, mosquitto, now_s, readback, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_survive_a_broker_restart() {
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let devices = scenario::devices(dir.path(), 4);
    let mut broker = mosquitto(dir.path());
    let mut gw = GatewayProcess::start(
        dir.path(),
        &GatewaySettings::new("gw", broker.addr, Some(influx.addr)),
    );
    let load = scenario::load(&devices, 1000, now_s() - 3600);
    let batches: Vec<_> = load.messages.chunks(1000).collect();

    // A: stored normally.
    fleet::publish_all(broker.addr, batches[0]).await;
    wait_for("batch A stored", Duration::from_secs(30), async || {
        stored(influx.addr).await.len() >= 1000
    })
    .await;
    // B: published while the gateway is away, so it waits in the gateway's session queue.
    let shutdown = gw.terminate();
    assert!(
        shutdown < Duration::from_secs(10),
        "graceful shutdown took {shutdown:?}"
    );
    fleet::publish_all(broker.addr, batches[1]).await;
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
    fleet::publish_all(broker.addr, batches[2]).await;
    wait_for("A, B and C stored", Duration::from_secs(60), async || {
        stored(influx.addr).await.len() >= 3000
    })
    .await;
    // D: the broker restarts under a running gateway, which reconnects on its own.
    let connects = gw.metric("vigie_mqtt_connects_total").unwrap();
    broker.stop(false);
    broker.start();
    wait_for(
        "the gateway to reconnect",
        Duration::from_secs(30),
        async || gw.metric("vigie_mqtt_connects_total").unwrap_or(0.0) > connects,
    )
    .await;
    fleet::publish_all(broker.addr, batches[3]).await;
    let got = scenario::all_stored(influx.addr, &load.expected, Duration::from_secs(60)).await;
    println!(
        "broker_restart: {got} queued_across_restart=1000 gateway_shutdown={shutdown:?} reconnected_after_broker_restart=yes",
    );
    gw.terminate();
}

/// The broker hangs (SIGSTOP: its sockets stay open, nothing answers). The gateway's own
/// keep-alive finds it within two keep-alive periods: `/readyz` turns unready. When the
/// broker resumes, the gateway connects again by itself, and what was published before and
/// after is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_broker_is_found_by_the_keep_alive() {
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let devices = scenario::devices(dir.path(), 2);
    let broker = mosquitto(dir.path());
    let settings = GatewaySettings {
        keep_alive: Some(Duration::from_secs(2)),
        ..GatewaySettings::new("gw", broker.addr, Some(influx.addr))
    };
    let gw = GatewayProcess::start(dir.path(), &settings);
    let load = scenario::load(&devices, 200, now_s() - 3600);
    let (before, after) = load.messages.split_at(load.messages.len() / 2);
    fleet::publish_all(broker.addr, before).await;
    wait_for(
        "the first half stored",
        Duration::from_secs(30),
        async || stored(influx.addr).await.len() >= before.len(),
    )
    .await;
    let connects = gw.metric("vigie_mqtt_connects_total").unwrap();
    let signal = |sig: &str| {
        let pid = broker.pid().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} {pid}");
    };
    signal("-STOP");
    let hung = std::time::Instant::now();
    wait_for(
        "/readyz to say the broker is gone",
        Duration::from_secs(15),
        async || gw.readyz().is_some_and(|(ready, _)| !ready),
    )
    .await;
    let found = hung.elapsed();
    signal("-CONT");
    wait_for(
        "the gateway to connect again",
        Duration::from_secs(60),
        async || {
            gw.metric("vigie_mqtt_connects_total").unwrap_or(0.0) > connects
                && gw.readyz().is_some_and(|(ready, _)| ready)
        },
    )
    .await;
    fleet::publish_all(broker.addr, after).await;
    let got = scenario::all_stored(influx.addr, &load.expected, Duration::from_secs(60)).await;
    println!("broker_hang: {got} hung_broker_found_after={found:?} reconnected=yes");
    assert!(
        found <= Duration::from_secs(6),
        "two keep-alive periods of 2 s, and a poll: {found:?}"
    );
}
