//! `gateway demo`: the whole chain on one machine with nothing installed. An embedded
//! broker, two tenants' devices registered with fresh keys, a simulated fleet publishing
//! sealed frames at QoS 1, and the real pipeline writing line-protocol files. Ends on
//! Ctrl-C or after `--duration`, waits for the pipeline to drain, and prints
//! `published=<n> stored=<n> rejected=<n>`.
//!
//! The fleet here is a stand-in until the firmware's host simulator replaces it.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::{DeviceEntry, DeviceKind, Registry};
use protocol::{
    AirQuality, DeviceKey, DeviceStatus, Field, Identity, MAX_FRAME_LEN, Reading, Values, WasteBin,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Demo options.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Stop after this long (else on Ctrl-C).
    pub duration: Option<Duration>,
    /// Devices per tenant (half air quality, half bins).
    pub devices_per_tenant: usize,
    /// Seconds between readings of one device.
    pub interval: Duration,
    /// Keep the data directory (buffer, exported line protocol) instead of deleting it.
    pub keep_data: bool,
}

/// Final counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoSummary {
    /// Readings the broker acknowledged.
    pub published: u64,
    /// Readings written by the sink.
    pub stored: u64,
    /// Frames rejected.
    pub rejected: u64,
}

const TENANTS: [&str; 2] = ["lyon", "villeurbanne"];

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// Runs the demo; `stop` ends it early (Ctrl-C).
pub async fn run(
    opts: DemoOptions,
    mut stop: watch::Receiver<bool>,
) -> Result<DemoSummary, String> {
    let dir = std::env::temp_dir().join(format!(
        "vigie-demo-{}-{}",
        std::process::id(),
        crate::now_ms()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let registry_path = dir.join("devices.toml");
    let devices = register_fleet(&registry_path, opts.devices_per_tenant)?;

    let mut config = Config::default();
    config.gateway.data_dir = dir.join("data");
    config.gateway.registry = registry_path;
    let broker: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    config.mqtt.embedded_listen = broker;
    config.http.listen = Some(([127, 0, 0, 1], free_port()?).into());
    config.batch.linger = Duration::from_millis(500);
    config.validate().map_err(|e| e.to_string())?;

    let metrics = Arc::new(Metrics::default());
    let (gw_stop_tx, gw_stop_rx) = watch::channel(false);
    let gateway = tokio::spawn(crate::run_with_metrics(
        config.clone(),
        gw_stop_rx,
        metrics.clone(),
    ));
    wait_until(Duration::from_secs(15), || {
        metrics.total("vigie_mqtt_connected") >= 1.0
    })
    .await
    .map_err(|_| "the gateway did not connect to the embedded broker".to_string())?;
    eprintln!(
        "demo: {} devices in {} tenants → embedded broker {broker} → gateway → {}",
        devices.len(),
        TENANTS.len(),
        config.gateway.data_dir.join("export").display()
    );
    if let Some(addr) = config.http.listen {
        eprintln!("demo: metrics on http://{addr}/metrics");
    }

    let published = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let mut fleet = tokio::task::JoinSet::new();
    for (entry, key) in devices {
        let (published, running) = (published.clone(), running.clone());
        fleet.spawn(simulate_device(
            entry,
            key,
            broker,
            opts.interval,
            published,
            running,
        ));
    }

    let started = Instant::now();
    let end = opts.duration.map(|d| started + d);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        progress(started, &published, &metrics);
        if end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
    }
    running.store(false, Ordering::Relaxed);
    while fleet.join_next().await.is_some() {}
    // Let the pipeline store everything the broker acknowledged.
    let want = published.load(Ordering::Relaxed) as f64;
    let _ = wait_until(Duration::from_secs(20), || {
        progress(started, &published, &metrics);
        metrics.total("vigie_readings_stored_total") >= want
    })
    .await;
    eprintln!();
    let _ = gw_stop_tx.send(true);
    match gateway.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.to_string()),
        Err(e) => return Err(format!("gateway task failed: {e}")),
    }
    let summary = DemoSummary {
        published: published.load(Ordering::Relaxed),
        stored: metrics.total("vigie_readings_stored_total") as u64,
        rejected: metrics.total("vigie_frames_rejected_total") as u64,
    };
    if opts.keep_data {
        eprintln!("demo: data kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(summary)
}

fn progress(started: Instant, published: &AtomicU64, m: &Metrics) {
    eprint!(
        "\r[{:>6.1}s] published={} stored={} rejected={} buffered={} KiB   ",
        started.elapsed().as_secs_f64(),
        published.load(Ordering::Relaxed),
        m.total("vigie_readings_stored_total") as u64,
        m.total("vigie_frames_rejected_total") as u64,
        m.total("vigie_buffer_pending_bytes") as u64 / 1024
    );
    let _ = std::io::stderr().flush();
}

async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> Result<(), ()> {
    let until = Instant::now() + limit;
    while !done() {
        if Instant::now() >= until {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn register_fleet(path: &Path, per_tenant: usize) -> Result<Vec<(DeviceEntry, DeviceKey)>, String> {
    let mut entries = Vec::new();
    for tenant in TENANTS {
        for i in 0..per_tenant {
            let bin = i % 2 == 1;
            let mut key = [0u8; 16];
            getrandom::fill(&mut key).map_err(|e| e.to_string())?;
            entries.push(DeviceEntry {
                id: format!("{}-{:04}", if bin { "bin" } else { "aq" }, i + 1),
                tenant: tenant.into(),
                kind: if bin {
                    DeviceKind::WasteBin
                } else {
                    DeviceKind::AirQuality
                },
                key: hex::encode(key),
                epoch: 1,
                site: Some(format!("demo site {}", i + 1)),
                zone: None,
                latitude: None,
                longitude: None,
                bin_depth_mm: bin.then_some(1200),
                revoked: false,
            });
        }
    }
    let registry = Registry::from_entries(entries).map_err(|e| e.to_string())?;
    registry.save(path).map_err(|e| e.to_string())?;
    Ok(registry
        .entries()
        .into_iter()
        .map(|e| (e.clone(), registry_key(&registry, e)))
        .collect())
}

fn registry_key(r: &Registry, e: &DeviceEntry) -> DeviceKey {
    r.get(&e.tenant, &e.id)
        .map_or(DeviceKey::new([0; 16], 0), |d| d.key.clone())
}

/// One simulated device: a reading per interval, every tenth a status report.
async fn simulate_device(
    entry: DeviceEntry,
    key: DeviceKey,
    broker: SocketAddr,
    interval: Duration,
    published: Arc<AtomicU64>,
    running: Arc<AtomicBool>,
) {
    let client_id = format!("{}-{}", entry.tenant, entry.id);
    let mut opts = MqttOptions::new(client_id, broker.ip().to_string(), broker.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let Ok(who) = Identity::new(&entry.tenant, &entry.id) else {
        return;
    };
    let topic = protocol::topic::uplink(who).to_string();
    let (mut counter, mut sent, mut last_time) = (0u32, 0u64, 0u32);
    let acked = AtomicU64::new(0);
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = tick.tick(), if running.load(Ordering::Relaxed) => {
                let now = (crate::now_ms() / 1000) as u32;
                last_time = now.max(last_time + 1);
                let reading = Reading { time: last_time, values: sample(&entry, counter) };
                let mut buf = [0u8; MAX_FRAME_LEN];
                let Ok(frame) = protocol::seal(&mut buf, &[reading], counter, &key, who) else { continue };
                if client.publish(topic.clone(), QoS::AtLeastOnce, false, frame.to_vec()).await.is_ok() {
                    counter += 1;
                    sent += 1;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(100)), if !running.load(Ordering::Relaxed) => {
                if acked.load(Ordering::Relaxed) >= sent {
                    break;
                }
            }
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acked.fetch_add(1, Ordering::Relaxed);
                    published.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    let _ = client.disconnect().await;
}

/// Plausible values that move a little with each reading.
fn sample(entry: &DeviceEntry, n: u32) -> Values {
    let wave = |period: u32, amp: i64| {
        ((f64::from(n % period) / f64::from(period) * std::f64::consts::TAU).sin() * amp as f64)
            as i64
    };
    if n % 10 == 9 {
        return Values::DeviceStatus(DeviceStatus {
            battery: Field::Value(3_700 - (n / 10 % 100) as u16),
            rssi: Field::Value(-80),
            firmware: Field::Value(0x00_01_00),
            uptime: Field::Value(n * 60),
            error_flags: Field::Value(0),
            dropped: Field::Value(0),
        });
    }
    match entry.kind {
        DeviceKind::AirQuality => {
            let pm25 = (120 + wave(30, 40)) as u16;
            Values::AirQuality(AirQuality {
                pm1: Field::Value(pm25 * 2 / 3),
                pm25: Field::Value(pm25),
                pm10: Field::Value(pm25 + 80),
                temperature: Field::Value((150 + wave(60, 30)) as i16),
                relative_humidity: Field::Value((600 + wave(45, 100)) as u16),
                pressure: Field::Value(10_130),
                ..AirQuality::default()
            })
        }
        DeviceKind::WasteBin => {
            let depth = u32::from(entry.bin_depth_mm.unwrap_or(1200));
            let fill = (n * 3) % 100;
            Values::WasteBin(WasteBin {
                distance: Field::Value((depth - depth * fill / 100) as u16),
                fill_level: Field::Value(fill as u8),
                temperature: Field::Value(140),
                flags: Field::Value(0),
                battery: Field::Value(3_600),
            })
        }
    }
}
