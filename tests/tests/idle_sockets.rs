//! One client holding sockets open on the public status port cannot starve the gateway of
//! descriptors (issue 30: 1,500 sockets pinned it at its 1,024 descriptors, the file sink
//! could not open its day file and its catch-up spun, 364,564 log lines in 5 s).
//!
//! Real Mosquitto and InfluxDB 1.x, the gateway process with a public listener. The test
//! opens up to 1,500 connections to that port and sends nothing, then publishes frames:
//! the gateway holds at most `http::MAX_CONNECTIONS` of those sockets, every frame is
//! stored, and the log stays small.
#![allow(clippy::unwrap_used)]

use gateway::fleet::registry::DeviceKind;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::{GatewayProcess, GatewaySettings};
use vigie_tests::{free_port, influxdb, mosquitto, now_s, readback, wait_for};

/// Descriptors the process holds.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// This process's own limit on open files (soft).
fn own_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        })
        .unwrap_or(1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_on_the_public_port_leave_ingest_and_delivery_running() {
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let aq = Device::new("lyon", "aq-1", DeviceKind::AirQuality);
    fleet::write_registry(&dir.path().join("devices.toml"), std::slice::from_ref(&aq));
    let broker = mosquitto(dir.path());
    let public = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let gw = GatewayProcess::start(
        dir.path(),
        &GatewaySettings {
            public: Some((public, vec!["lyon".into()])),
            ..GatewaySettings::new("gw", broker.addr, Some(influx.addr))
        },
    );
    let pid = gw.pid().unwrap();
    let before = fds(pid);
    let wanted = 1_500.min(own_limit().saturating_sub(200));
    let (mut held, mut failed) = (Vec::with_capacity(wanted), 0);
    for _ in 0..wanted {
        match TcpStream::connect_timeout(&public, Duration::from_millis(200)) {
            Ok(s) => held.push(s),
            Err(_) => failed += 1,
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = fds(pid);

    let now = now_s();
    let frames: Vec<_> = (0..30)
        .map(|i| (aq.topic(), aq.frame(&[aq.reading(i, now - 100 + i)], i)))
        .collect();
    fleet::publish_all(broker.addr, &frames).await;
    let stored = || async {
        readback::influx_points(influx.addr, "vigie_lyon", &["air_quality"])
            .await
            .into_iter()
            .filter(|p| p.contains("|pm25|"))
            .count()
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(30),
        wait_for("every frame stored", Duration::from_secs(60), async || {
            stored().await >= frames.len()
        }),
    )
    .await;
    let got = stored().await;
    let log = std::fs::metadata(dir.path().join("gw.log")).map_or(0, |m| m.len());
    eprintln!(
        "idle sockets: tried={wanted} opened={} failed={failed} gateway descriptors \
         before={before} during={during} stored={got}/{} log={log} bytes",
        held.len(),
        frames.len()
    );
    assert!(
        held.len() > gateway::web::http::MAX_CONNECTIONS,
        "the attack happened: {} sockets",
        held.len()
    );
    assert!(
        during <= before + gateway::web::http::MAX_CONNECTIONS + 16,
        "descriptors bounded: {before} -> {during}"
    );
    assert_eq!(got, frames.len(), "ingest and delivery ran");
    assert!(log < 1 << 20, "log {log} bytes");
    drop(held);
}
