//! End-to-end acknowledgement (SPEC §12) against real servers: simulated devices (the
//! firmware's node code, flash ring and all) forget a reading only when a gateway's
//! acknowledgement covers it. Mosquitto acknowledges before it persists, so:
//!
//! (a) Mosquitto is killed (`kill -9`) five times under load and restarted on its
//!     persistence: every reading the devices recorded is stored exactly once.
//! (b) The gateway is away longer than its broker session lives: what the broker
//!     acknowledged to the devices meanwhile is dropped with the session, and still
//!     every recorded reading is stored (the devices resend what no one acknowledged).
//!
//! Counting: `recorded` comes from the devices, stored readings are distinct
//! (measurement, device, second) points in InfluxDB, duplicated is points beyond that.
#![allow(clippy::unwrap_used)]

use gateway::fleet::registry::DeviceKind;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;
use vigie_sim::{Fleet, FleetOptions};
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::InProcessGateway;
use vigie_tests::scenario::{assert_all_stored, fleet_outcome as outcome};
use vigie_tests::{influxdb, mosquitto, readback, wait_for};

const DEVICES: usize = 8;

/// One scenario at a time: each starts its own servers, and killing and restarting
/// Mosquitto while another scenario picks free ports could hand one port to two servers.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Virtual seconds between samples; at 120× two samples a real second per device.
const INTERVAL: u16 = 60;
const ACCEL: f64 = 120.0;

fn devices() -> Vec<Device> {
    (0..DEVICES)
        .map(|i| Device::new("lyon", &format!("aq-{i}"), DeviceKind::AirQuality))
        .collect()
}

fn fleet(devices: &[Device], broker: SocketAddr, seconds: u64) -> Fleet {
    // Heartbeat 0: every sample is recorded and sent.
    let provisioning = devices
        .iter()
        .map(|d| d.provisioning(broker, INTERVAL, 0))
        .collect();
    Fleet::new(
        provisioning,
        FleetOptions {
            broker,
            accel: ACCEL,
            duration: Duration::from_secs(seconds),
            status_every: 10,
            outages: Vec::new(),
            progress: false,
            ca: None,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_broker_crashes_under_load_lose_nothing() {
    let _serial = SERIAL.lock().await;
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let devices = devices();
    fleet::write_registry(&dir.path().join("devices.toml"), &devices);
    let mut broker = mosquitto(dir.path());
    let gw = InProcessGateway::for_registry(dir.path(), "gw-crash", broker.addr, influx.addr).await;
    let (_keep, never) = watch::channel(false);
    let run = tokio::spawn(fleet(&devices, broker.addr, 30).run(never));
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        broker.stop(true);
        tokio::time::sleep(Duration::from_millis(300)).await;
        broker.start();
    }
    let summary = run.await.unwrap();
    let (stored, lost, duplicated) = outcome(influx.addr, &summary).await;
    eprintln!(
        "broker kill -9 ×5: recorded={} acknowledged={} resent={} stored={stored} lost={lost} \
         duplicated={duplicated} dropped_by_devices={} waiting={} duplicates_seen_by_gateway={} \
         device_acks={}",
        summary.recorded,
        summary.acknowledged,
        summary.resent,
        summary.dropped,
        summary.waiting,
        (gw.counts().frames_duplicate as f64),
        (gw.counts().device_acks as f64),
    );
    assert_all_stored(&summary, (stored, lost, duplicated));
    assert!(summary.recorded > 300, "{summary}");
    assert_eq!(summary.dropped, 0, "no ring overflowed: {summary}");
    assert_eq!(gw.counts().frames_rejected, 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_gateway_session_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let devices = devices();
    fleet::write_registry(&dir.path().join("devices.toml"), &devices);
    let broker = mosquitto(dir.path());
    let db = fleet::database(gateway::config::DatabaseApi::V1, influx.addr);
    let mut config = fleet::gateway_config(dir.path(), "gw-expiry", broker.addr, Some(db));
    config.mqtt.session_expiry = Duration::from_secs(1);
    let gw = InProcessGateway::start(config.clone()).await;

    let (_keep, never) = watch::channel(false);
    let run = tokio::spawn(fleet(&devices, broker.addr, 20).run(never));
    tokio::time::sleep(Duration::from_secs(4)).await;
    gw.stop().await;
    // Away for five times the session's life: the broker drops the session and every
    // frame that arrives for it, after acknowledging each to its device.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let gw = InProcessGateway::start(config).await;
    let summary = run.await.unwrap();
    let (stored, lost, duplicated) = outcome(influx.addr, &summary).await;
    eprintln!(
        "gateway session expired: recorded={} acknowledged={} resent={} stored={stored} \
         lost={lost} duplicated={duplicated} waiting={}",
        summary.recorded, summary.acknowledged, summary.resent, summary.waiting,
    );
    assert_all_stored(&summary, (stored, lost, duplicated));
    assert!(
        summary.resent > 0,
        "the dropped frames went again: {summary}"
    );
    gw.stop().await;
}

/// SPEC §12, several gateways: two share the subscription; one is killed mid-run and
/// restarted later. Each acknowledges what it holds; frames the killed one had taken are
/// resent by their devices, stored by the other, and stored again idempotently (same
/// point) when the restarted one gets its session's redeliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_one_killed_each_acknowledges_what_it_holds() {
    let _serial = SERIAL.lock().await;
    use vigie_tests::process::{GatewayProcess, GatewaySettings};
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let devices = devices();
    fleet::write_registry(&dir.path().join("devices.toml"), &devices);
    let broker = mosquitto(dir.path());
    let settings = |id: &str| GatewaySettings {
        group: "vigie".into(),
        ..GatewaySettings::new(id, broker.addr, Some(influx.addr))
    };
    let mut a = GatewayProcess::start(dir.path(), &settings("gw-a"));
    let b = GatewayProcess::start(dir.path(), &settings("gw-b"));
    let (_keep, never) = watch::channel(false);
    let run = tokio::spawn(fleet(&devices, broker.addr, 20).run(never));
    let accepted = |g: &GatewayProcess| g.metric("vigie_frames_accepted_total").unwrap_or(0.0);
    wait_for(
        "both gateways taking traffic",
        Duration::from_secs(30),
        async || accepted(&a) > 10.0 && accepted(&b) > 10.0,
    )
    .await;
    let a_before = accepted(&a);
    a.kill9();
    tokio::time::sleep(Duration::from_secs(5)).await;
    a.restart();
    let summary = run.await.unwrap();
    let (stored, lost, duplicated) = outcome(influx.addr, &summary).await;
    let acks = |g: &GatewayProcess| g.metric("vigie_device_acks_total").unwrap_or(0.0);
    eprintln!(
        "two gateways, one killed: recorded={} acknowledged={} resent={} stored={stored} \
         lost={lost} duplicated={duplicated} waiting={}; gw-a accepted {a_before} before the \
         kill and {} after its restart, gw-b {}; device acknowledgements gw-a {} (since \
         restart), gw-b {}",
        summary.recorded,
        summary.acknowledged,
        summary.resent,
        summary.waiting,
        accepted(&a),
        accepted(&b),
        acks(&a),
        acks(&b),
    );
    assert_all_stored(&summary, (stored, lost, duplicated));
    assert!(
        acks(&a) > 0.0 && acks(&b) > 0.0,
        "each gateway acknowledges"
    );
}
