//! The demo run: the whole chain on one machine with nothing installed. An embedded
//! broker, two tenants' devices registered with fresh keys, the fleet simulator (the
//! firmware's own code on simulated sensors, `vigie-sim`) publishing sealed frames at
//! QoS 1, and the real pipeline writing line-protocol files. Ends on Ctrl-C or after
//! `--duration`, waits for the pipeline to drain, and prints
//! `acknowledged=<n> stored=<n> rejected=<n>`.

use gateway::config::Config;
use gateway::fleet::access;
use gateway::fleet::registry::RegistryFile;
use gateway::fleet::registry::{self, DeviceKind, Enrolment, Registry};
use gateway::observe::metrics::Metrics;
use protocol::provision::{Provisioning, Transport};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use vigie_sim::fleet::FleetHandle;
use vigie_sim::{Fleet, FleetOptions};

/// Demo options.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Stop after this long (else on Ctrl-C).
    pub duration: Option<Duration>,
    /// Devices per tenant (half air quality, half bins).
    pub devices_per_tenant: usize,
    /// Virtual seconds per real second: devices sample every 5 virtual minutes.
    pub accel: f64,
    /// Keep the data directory (buffer, exported line protocol) instead of deleting it.
    pub keep_data: bool,
}

/// Final counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoSummary {
    /// Readings the gateway acknowledged to the devices (durably held).
    pub acknowledged: u64,
    /// Readings written by the sink.
    pub stored: u64,
    /// Frames rejected.
    pub rejected: u64,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// No async runtime.
    #[error("tokio runtime: {0}")]
    Runtime(std::io::Error),
    /// A local file or socket.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The devices could not be registered.
    #[error("registering the demo devices: {0}")]
    Registry(String),
    /// The gateway's configuration.
    #[error("gateway configuration: {0}")]
    Config(#[from] gateway::config::ConfigError),
    /// The gateway did not connect to its embedded broker.
    #[error("the gateway did not connect to the embedded broker")]
    NotConnected,
    /// The gateway stopped with an error.
    #[error("gateway: {0}")]
    Gateway(String),
    /// Simulated devices could not start.
    #[error("{0} simulated devices failed to start")]
    Devices(usize),
}

const TENANTS: [&str; 2] = ["lyon", "villeurbanne"];

fn free_port() -> std::io::Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

/// Runs the demo; `stop` ends it early (Ctrl-C).
pub async fn run(
    opts: DemoOptions,
    mut stop: watch::Receiver<bool>,
) -> Result<DemoSummary, DemoError> {
    let dir = std::env::temp_dir().join(format!(
        "vigie-demo-{}-{}",
        std::process::id(),
        gateway::clock::Clock::system().now_ms()
    ));
    std::fs::create_dir_all(&dir)?;
    let registry_path = dir.join("devices.toml");
    let broker: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let devices = register_fleet(&registry_path, opts.devices_per_tenant, broker)?;

    let mut config = Config::default();
    config.gateway.data_dir = dir.join("data");
    config.gateway.registry = registry_path;
    config.mqtt.embedded_listen = broker;
    config.http.listen = Some(([127, 0, 0, 1], free_port()?).into());
    config.batch.linger = Duration::from_millis(500);
    config.validate()?;

    let metrics = Arc::new(Metrics::default());
    let (gw_stop_tx, gw_stop_rx) = watch::channel(false);
    let gateway = tokio::spawn(gateway::run_with_metrics(
        config.clone(),
        gw_stop_rx,
        metrics.clone(),
    ));
    wait_until(Duration::from_secs(15), || metrics.counts().mqtt_connected)
        .await
        .map_err(|()| DemoError::NotConnected)?;
    eprintln!(
        "demo: {} devices in {} tenants → embedded broker {broker} → gateway → {}",
        devices.len(),
        TENANTS.len(),
        config.gateway.data_dir.join("export").display()
    );
    if let Some(addr) = config.http.listen {
        eprintln!("demo: metrics on http://{addr}/metrics");
    }

    let (fleet_stop_tx, fleet_stop_rx) = watch::channel(false);
    let options = FleetOptions {
        broker,
        accel: opts.accel,
        duration: opts.duration.unwrap_or(Duration::MAX),
        status_every: 12,
        outages: Vec::new(),
        progress: false,
        ca: None,
    };
    let started = Instant::now();
    let fleet = Fleet::new(devices, options);
    let handle = fleet.handle();
    let mut fleet = std::pin::pin!(fleet.run(fleet_stop_rx));
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let fleet_summary = loop {
        tokio::select! {
            summary = &mut fleet => break summary,
            _ = tick.tick() => progress(started, &handle, &metrics),
            _ = stop.changed() => { let _ = fleet_stop_tx.send(true); }
        }
    };
    if fleet_summary.failed > 0 {
        return Err(DemoError::Devices(fleet_summary.failed));
    }
    // Let the pipeline store everything the gateway acknowledged.
    let want = fleet_summary.acknowledged as f64;
    let _ = wait_until(Duration::from_secs(20), || {
        progress(started, &handle, &metrics);
        (metrics.counts().readings_stored as f64) >= want
    })
    .await;
    eprintln!();
    let _ = gw_stop_tx.send(true);
    match gateway.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(DemoError::Gateway(e.to_string())),
        Err(e) => return Err(DemoError::Gateway(e.to_string())),
    }
    let summary = DemoSummary {
        acknowledged: fleet_summary.acknowledged,
        stored: metrics.counts().readings_stored,
        rejected: metrics.counts().frames_rejected,
    };
    if opts.keep_data {
        eprintln!("demo: data kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(summary)
}

fn progress(started: Instant, fleet: &FleetHandle, m: &Metrics) {
    eprint!(
        "\r[{:>6.1}s] devices connected={} acknowledged={} stored={} rejected={} buffered={} KiB   ",
        started.elapsed().as_secs_f64(),
        fleet.connected(),
        fleet.totals().acknowledged,
        m.counts().readings_stored,
        m.counts().frames_rejected,
        m.counts().buffer_pending_bytes / 1024
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

/// Registers the fleet with fresh keys and returns each device's provisioning, as
/// `devices add` would write it.
fn register_fleet(
    path: &Path,
    per_tenant: usize,
    broker: SocketAddr,
) -> Result<Vec<Provisioning>, DemoError> {
    let (mut entries, mut blobs) = (Vec::new(), Vec::new());
    for tenant in TENANTS {
        for i in 0..per_tenant {
            let bin = i % 2 == 1;
            let enrolment = Enrolment {
                tenant: tenant.into(),
                id: format!("{}-{:04}", if bin { "bin" } else { "aq" }, i + 1),
                kind: if bin {
                    DeviceKind::WasteBin
                } else {
                    DeviceKind::AirQuality
                },
                site: Some(format!("demo site {}", i + 1)),
                zone: None,
                latitude: None,
                longitude: None,
                bin_depth_mm: bin.then_some(1200),
                sample_interval_s: 300,
                heartbeat_s: 3600,
                report_interval_s: 0,
                broker_host: "127.0.0.1".into(),
                broker_port: broker.port(),
                // The embedded broker listens on loopback only.
                transport: Transport::Plain,
            };
            let mut key = [0u8; 16];
            getrandom::fill(&mut key).map_err(|e| DemoError::Registry(e.to_string()))?;
            let password =
                access::new_password().map_err(|e| DemoError::Registry(e.to_string()))?;
            let (entry, blob) = registry::enroll(&enrolment, key, 1, &password)
                .map_err(|e| DemoError::Registry(e.to_string()))?;
            entries.push(entry);
            blobs.push(blob);
        }
    }
    Registry::from_entries(entries)
        .and_then(|r| r.save(path))
        .map_err(|e| DemoError::Registry(e.to_string()))?;
    Ok(blobs)
}
