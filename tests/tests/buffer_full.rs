//! Scenario 7: database down and a small buffer (2 MiB). The gateway fills the buffer,
//! then stops acknowledging (metric and log say so) while the broker holds the rest;
//! nothing is dropped, and everything drains once the database is back. The operator's
//! webhook is told once that the buffer is filling and that acknowledgements are
//! withheld, and once that each ended.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};
use vigie_tests::process::{GatewayProcess, GatewaySettings};
use vigie_tests::receivers::{self, told};
use vigie_tests::scenario;
use vigie_tests::{fleet, influxdb, mosquitto, now_s, readback, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buffer_backpressures_then_drains() {
    let mut influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    influx.stop(false);
    let dir = tempfile::tempdir().unwrap();
    let devices = scenario::devices(dir.path(), 5);
    let broker = mosquitto(dir.path());
    let (hook, operator) = receivers::operator_webhook(dir.path());
    let settings = GatewaySettings {
        buffer_mib: (2, 1),
        extra_toml: format!(
            "[alerts]\ninterval = \"1s\"\nconfirm = \"1s\"\nbuffer_percent = 50\n{operator}"
        ),
        ..GatewaySettings::new("gw", broker.addr, Some(influx.addr))
    };
    let gw = GatewayProcess::start(dir.path(), &settings);
    let load = scenario::load(&devices, 5000, now_s() - 10_000);
    let total = load.messages.len();
    fleet::publish_all(broker.addr, &load.messages).await;

    wait_for("the buffer to fill", Duration::from_secs(60), async || {
        gw.metric("vigie_buffer_full") == Some(1.0)
    })
    .await;
    // It stores what still fits under the limit (smaller and smaller pieces), then stops.
    let accepted = gw.settled("vigie_frames_accepted_total", Duration::from_secs(30));
    let buffered = gw.metric("vigie_buffer_bytes").unwrap();
    assert!(
        buffered <= 2.0 * 1024.0 * 1024.0,
        "the limit holds: {buffered} bytes"
    );
    assert!(
        accepted < total as f64,
        "the gateway stopped taking traffic at {accepted} of {total}"
    );
    assert!(
        gw.log().contains("acknowledgements withheld"),
        "the log says why:\n{}",
        gw.log()
    );
    let (ready, summary) = gw.readyz().unwrap();
    assert!(!ready && summary.starts_with("buffer full"), "{summary}");
    // Held, not dropped: still full a moment later, and nothing was rejected.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(gw.metric("vigie_frames_accepted_total"), Some(accepted));
    assert_eq!(gw.metric("vigie_frames_rejected_total"), Some(0.0));

    let told = |code, state| told(&hook, "", code, "", state);
    wait_for(
        "the full buffer told",
        Duration::from_secs(30),
        async || {
            told("buffer_nearly_full", "started") == 1 && told("store_refusing", "started") == 1
        },
    )
    .await;

    influx.start();
    let up_at = Instant::now();
    let got = scenario::all_stored(influx.addr, &load.expected, Duration::from_secs(180)).await;
    wait_for(
        "buffer_full back to 0",
        Duration::from_secs(10),
        async || gw.metric("vigie_buffer_full") == Some(0.0),
    )
    .await;
    wait_for(
        "the drained buffer told",
        Duration::from_secs(30),
        async || told("buffer_nearly_full", "ended") == 1 && told("store_refusing", "ended") == 1,
    )
    .await;
    for code in ["buffer_nearly_full", "store_refusing"] {
        assert_eq!(
            (told(code, "started"), told(code, "ended")),
            (1, 1),
            "{code}"
        );
    }
    assert_eq!(receivers::rejected(&hook), 0);
    println!(
        "buffer_full: {got} held_at_broker_while_full={} drain_after_restart={:?}",
        total as f64 - accepted,
        up_at.elapsed()
    );
    let mut gw = gw;
    gw.terminate();
}
