//! The flashable image itself, end to end: the reference node image boots in QEMU with the
//! blob `gateway devices add` wrote, talks AT to the modem emulator, publishes through real
//! Mosquitto to the gateway and InfluxDB; then the board is reset and publishes again.
//! No counter is reused across the reboot (the gateway would reject a replay), every
//! acknowledged reading is stored, and without a blob the image refuses to run.
#![allow(clippy::unwrap_used)]

use gateway::config::DatabaseApi;
use std::time::{Duration, Instant};
use vigie_tests::process::InProcessGateway;
use vigie_tests::qemu::{self, ModemEmulator, Qemu};
use vigie_tests::{fleet, influxdb, mosquitto, process, readback, wait_for};

/// Readings to see stored per boot (one per second).
const PER_BOOT: f64 = 8.0;

fn next_counters(console: &str) -> Vec<u32> {
    console
        .lines()
        .filter_map(|l| l.split("next counter ").nth(1)?.trim().parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_boots_publishes_survives_a_reset_and_refuses_without_a_blob() {
    let image = qemu::image();
    let (broker, influx) = (mosquitto(), influxdb());
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();

    // The technician's step: `devices add` writes the registry entry and the blob.
    let config = fleet::gateway_config(
        dir.path(),
        "gw-qemu",
        broker.addr,
        Some(fleet::database(DatabaseApi::V1, influx.addr)),
    );
    let config_file = dir.path().join("gateway.toml");
    let text = format!(
        "[gateway]\ndata_dir = {:?}\nregistry = {:?}\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\n",
        dir.path().join("cli-data"),
        config.gateway.registry,
        broker.addr.port()
    );
    std::fs::write(&config_file, text).unwrap();
    let blob = dir.path().join("aq-qemu.vgp");
    let out = std::process::Command::new(process::binary())
        .args(["devices", "add", "--config"])
        .arg(&config_file)
        .args([
            "--tenant",
            "lyon",
            "--id",
            "aq-qemu",
            "--kind",
            "air-quality",
        ])
        .args(["--sample-interval", "1", "--heartbeat", "0"])
        .args(["--broker-host", "127.0.0.1", "--broker-port"])
        .arg(broker.addr.port().to_string())
        .arg("--blob-out")
        .arg(&blob)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let gw = InProcessGateway::start(config).await;
    let metrics = &gw.metrics;
    let stored = || metrics.total("vigie_readings_stored_total");

    // Boot 1.
    let modem = ModemEmulator::start(broker.addr).await;
    let started = Instant::now();
    let board = Qemu::boot(&image, Some(&blob), modem.addr, dir.path());
    wait_for(
        "a first stored reading",
        Duration::from_secs(60),
        async || stored() >= 1.0,
    )
    .await;
    let boot_to_first_stored = started.elapsed();
    wait_for("readings of boot 1", Duration::from_secs(60), async || {
        stored() >= PER_BOOT
    })
    .await;

    // Reset (modem and MCU together), boot 2.
    let before_reset = stored();
    modem.reset();
    board.reset().await;
    wait_for("readings of boot 2", Duration::from_secs(60), async || {
        stored() >= before_reset + PER_BOOT
    })
    .await;
    let console = board.console();
    drop(board);
    // The board is off: wait until everything it had acknowledged is written.
    let mut last = -1.0;
    wait_for(
        "the pipeline to settle",
        Duration::from_secs(30),
        async || {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (now, settled) = (stored(), last == stored());
            last = now;
            settled && metrics.total("vigie_buffer_pending_bytes") == 0.0
        },
    )
    .await;

    let counters = next_counters(&console);
    eprintln!(
        "qemu: boot to first stored reading {boot_to_first_stored:?}; stored {} readings; \
         {} frames accepted, {} duplicate, {} rejected; next counter per boot {counters:?}; \
         broker connections {}",
        stored() as u64,
        metrics.total("vigie_frames_accepted_total") as u64,
        metrics.total("vigie_frames_duplicate_total") as u64,
        metrics.total("vigie_frames_rejected_total") as u64,
        modem.connections.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(console.matches("vigie: node").count(), 2, "{console}");
    assert_eq!(counters.len(), 2, "{console}");
    assert!(
        f64::from(counters[1]) >= before_reset,
        "boot 2 resumed at counter {} although boot 1 used {before_reset}: {console}",
        counters[1]
    );
    assert_eq!(metrics.total("vigie_frames_rejected_total"), 0.0);
    assert_eq!(
        metrics.total("vigie_frames_duplicate_total"),
        0.0,
        "a counter was reused"
    );

    // The database holds each stored reading once: one (measurement, time) per reading.
    let points =
        readback::influx_points(influx.addr, "vigie_lyon", &["air_quality", "device_status"]).await;
    let readings: std::collections::BTreeSet<_> = points
        .iter()
        .map(|p| p.split('|').take(4).collect::<Vec<_>>().join("|"))
        .collect();
    assert_eq!(readings.len() as f64, stored());
    assert!(readings.iter().all(|r| r.contains("|aq-qemu|")));

    // Without a blob the image stops with a reason instead of running unauthenticated.
    let bare = tempfile::tempdir().unwrap();
    let modem2 = ModemEmulator::start(broker.addr).await;
    let refused = Qemu::boot(&image, None, modem2.addr, bare.path());
    wait_for(
        "the refusal on the console",
        Duration::from_secs(20),
        async || refused.console().contains("halted: no provisioning blob"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        modem2
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    gw.stop().await;
}
