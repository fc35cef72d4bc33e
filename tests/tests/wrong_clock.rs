//! A wrong clock never deletes a reading the device was told is safe (SPEC §12, §13.3).
//!
//! The gateway runs as its own process under libfaketime (Debian's `faketime`), its
//! clock moved while a simulated fleet (the firmware's node code, flash ring and all)
//! publishes through real Mosquitto into real InfluxDB 1.x:
//!
//! 1. 100 days ahead, with the host clock not known to be synchronised (the flag file
//!    of `validation.host_clock` absent): every reading looks stale and is held;
//! 2. 3 hours behind: every reading looks in the future and is held;
//! 3. 15 minutes behind (a Raspberry Pi before NTP answers): the newest readings are
//!    held;
//! 4. corrected, with no operator action.
//!
//! Held frames are not acknowledged, so the devices keep them and send them again.
//! Counting: `recorded` from the devices, stored readings are distinct (measurement,
//! device, second) points in InfluxDB, duplicated is points beyond that; lost is
//! recorded minus stored. The old rule (time verdicts refused and acknowledged) loses
//! every held reading here.
#![allow(clippy::unwrap_used)]

use gateway::fleet::registry::DeviceKind;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use vigie_sim::{Fleet, FleetOptions};
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::{GatewayProcess, GatewaySettings};
use vigie_tests::scenario::{assert_all_stored, fleet_outcome};
use vigie_tests::{influxdb, mosquitto, readback, wait_for};

/// One scenario at a time: both pace their clocks against real time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// Virtual seconds between samples; at 20× one sample every 3 real seconds per device,
/// and the fleet's virtual clock ends within minutes of the real one.
const INTERVAL: u16 = 60;
const ACCEL: f64 = 20.0;
const RUN: Duration = Duration::from_secs(45);

/// Sets the gateway's clock offset (libfaketime's relative format) and waits until the
/// process has read it (it re-reads the file at most once a second).
async fn set_offset(file: &std::path::Path, offset: &str) {
    std::fs::write(file, offset).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_clock_ahead_or_behind_loses_no_acknowledged_reading() {
    let _serial = SERIAL.lock().await;
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "libfaketime missing: scripts/test.sh installs Debian's faketime"
    );
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let devices: Vec<Device> = (0..6)
        .map(|i| Device::new("lyon", &format!("aq-{i}"), DeviceKind::AirQuality))
        .collect();
    fleet::write_registry(&dir.path().join("devices.toml"), &devices);
    let broker = mosquitto(dir.path());
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0").unwrap();
    let synced_flag = dir.path().join("clock-synchronised");
    let settings = GatewaySettings {
        extra_toml: format!("[validation]\nhost_clock = \"{}\"\n", synced_flag.display()),
        env: vec![
            ("LD_PRELOAD".into(), LIBFAKETIME.into()),
            (
                "FAKETIME_TIMESTAMP_FILE".into(),
                offset.display().to_string(),
            ),
            ("FAKETIME_CACHE_DURATION".into(), "1".into()),
            // Timers, keep-alives and back-offs on the real monotonic clock.
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ],
        ..GatewaySettings::new("gw-clock", broker.addr, Some(influx.addr))
    };
    let gw = GatewayProcess::start(dir.path(), &settings);
    let (summary, held_seen, stale_held, amber, readyz_seen) = {
        let provisioning = devices
            .iter()
            .map(|d| d.provisioning(broker.addr, INTERVAL, 0))
            .collect();
        let run = Fleet::new(
            provisioning,
            FleetOptions {
                broker: broker.addr,
                accel: ACCEL,
                duration: RUN,
                status_every: 10,
                outages: Vec::new(),
                progress: false,
                ca: None,
            },
        );
        let (_keep, never) = watch::channel(false);
        let started = Instant::now();
        let run = tokio::spawn(run.run(never));
        let held = |gw: &GatewayProcess| gw.metric("vigie_frames_held_total").unwrap_or(0.0);
        tokio::time::sleep(Duration::from_secs(6)).await;
        // 1. 100 days ahead, not known to be synchronised: stale, held.
        set_offset(&offset, "+100d").await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        let (_, readyz) = gw.readyz().unwrap();
        let stale_held = gw
            .metric("vigie_frames_held_total{reason=\"stale_timestamp\"}")
            .unwrap_or(0.0);
        // 2. Three hours behind: everything in the future, held.
        set_offset(&offset, "-3h").await;
        tokio::time::sleep(Duration::from_secs(8)).await;
        // 3. Fifteen minutes behind: the newest readings in the future, held.
        set_offset(&offset, "-15m").await;
        tokio::time::sleep(Duration::from_secs(12)).await;
        let during = held(&gw);
        let book = gw.devices().unwrap();
        let amber = book.iter().filter(|d| d.held.is_some()).count();
        // 4. Corrected, and the clock known to be synchronised: nobody does anything else.
        set_offset(&offset, "+0").await;
        std::fs::write(&synced_flag, b"").unwrap();
        eprintln!(
            "wrong clock: {:.0?} in, {during} frames held ({stale_held} stale), {amber} devices \
             showing held frames",
            started.elapsed()
        );
        (run.await.unwrap(), during, stale_held, amber, readyz)
    };
    wait_for(
        "the clock known synchronised again",
        Duration::from_secs(10),
        async || {
            gw.readyz()
                .is_some_and(|(_, r)| !r.contains("host clock not synchronised"))
        },
    )
    .await;
    let (stored, lost, duplicated) = fleet_outcome(influx.addr, &summary).await;
    eprintln!(
        "wrong clock: recorded={} acknowledged={} resent={} stored={stored} lost={lost} \
         duplicated={duplicated} waiting={} held={held_seen} rejected={}",
        summary.recorded,
        summary.acknowledged,
        summary.resent,
        summary.waiting,
        gw.metric("vigie_frames_rejected_total").unwrap_or(-1.0),
    );
    assert_all_stored(&summary, (stored, lost, duplicated));
    assert!(
        held_seen >= 10.0,
        "the fault happened: {held_seen} frames held"
    );
    assert!(
        stale_held > 0.0,
        "the clock 100 days ahead held stale frames"
    );
    assert!(amber > 0, "devices with held frames are shown as such");
    assert!(
        readyz_seen.contains("readings held: host clock not synchronised"),
        "{readyz_seen}"
    );
    assert!(summary.resent > 0, "held frames were sent again: {summary}");
    assert_eq!(summary.dropped, 0, "no ring overflowed: {summary}");
    assert_eq!(gw.metric("vigie_frames_rejected_total"), Some(0.0));
}

/// A device whose clock runs ahead: its readings are held until their time comes, then
/// stored; none acknowledged before. At test scale: 35 s ahead against a 30 s bound
/// (`validation.max_future_skew`), the same rule as 10 minutes against the default 5.
/// The fleet runs at real pace (its timeline 35 s behind, shifted 70 s ahead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_clock_ahead_loses_no_acknowledged_reading() {
    let _serial = SERIAL.lock().await;
    use vigie_tests::process::InProcessGateway;
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let devices: Vec<Device> = (0..3)
        .map(|i| Device::new("lyon", &format!("aq-{i}"), DeviceKind::AirQuality))
        .collect();
    fleet::write_registry(&dir.path().join("devices.toml"), &devices);
    let broker = mosquitto(dir.path());
    let mut config = fleet::gateway_config(
        dir.path(),
        "gw-clock",
        broker.addr,
        Some(fleet::database(
            gateway::config::DatabaseApi::V1,
            influx.addr,
        )),
    );
    config.validation.max_future_skew = Duration::from_secs(30);
    let gw = InProcessGateway::start(config).await;
    let provisioning = devices
        .iter()
        .map(|d| d.provisioning(broker.addr, 2, 0))
        .collect();
    let fleet = Fleet::new(
        provisioning,
        FleetOptions {
            broker: broker.addr,
            accel: 1.0,
            duration: Duration::from_secs(25),
            status_every: 10,
            outages: Vec::new(),
            progress: false,
            ca: None,
        },
    )
    .with_clock_ahead(Duration::from_secs(70));
    let (_keep, never) = watch::channel(false);
    let summary = fleet.run(never).await;
    let (stored, lost, duplicated) = fleet_outcome(influx.addr, &summary).await;
    let held = gw.counts().frames_held as f64;
    eprintln!(
        "device clock 35 s ahead (bound 30 s): recorded={} acknowledged={} resent={} \
         stored={stored} lost={lost} duplicated={duplicated} waiting={} held={held} rejected={}",
        summary.recorded,
        summary.acknowledged,
        summary.resent,
        summary.waiting,
        (gw.counts().frames_rejected as f64),
    );
    assert_all_stored(&summary, (stored, lost, duplicated));
    assert!(held > 0.0, "readings ahead were held: {held}");
    assert_eq!(gw.counts().frames_rejected, 0);
    gw.stop().await;
}
