//! Vigie gateway: MQTT ingest → verify → validate → durable buffer → batched writes.
//!
//! Module map:
//! - [`core`]: the pure core (verification, validation, line protocol, replay book,
//!   retry classification, buffer record format). No I/O, time passed in.
//! - [`config`]: TOML configuration, defaults, environment overrides, validation.
//! - [`registry`]: the device registry file.
//! - [`buffer`]: the durable segment log (design note at its top).
//! - [`quarantine`]: bounded on-disk store of rejected frames.
//! - [`ingest`]: the worker thread that judges, stores, then acknowledges.
//! - [`mqtt`]: the MQTT 5 shell (rumqttc): event loop, in-order acks, reconnect.
//! - [`sink`]: delivery thread and writers (InfluxDB v1, v2, line-protocol files).
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, quarantine replay.
//! - [`broker`]: embedded rumqttd for the no-servers mode.
//! - [`metrics`]: Prometheus text metrics.
//! - [`demo`]: the `demo` command: embedded broker, simulated fleet, full pipeline.
//! - [`cli`]: the operator commands (`devices`, `quarantine`, `check-config`).
//! - `fsutil`: atomic writes and directory fsync.

pub mod broker;
pub mod buffer;
pub mod cli;
pub mod config;
pub mod core;
pub mod demo;
mod fsutil;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod mqtt;
pub mod quarantine;
pub mod registry;
pub mod sink;

use config::{Config, DatabaseApi};
use ingest::{Worker, WorkerSetup};
use metrics::Metrics;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub use protocol;

/// How long shutdown waits for the sink to write what is buffered before leaving it for
/// the next start.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Configuration.
    #[error("{0}")]
    Config(String),
    /// Registry.
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    /// Buffer.
    #[error(transparent)]
    Buffer(#[from] buffer::BufferError),
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs the service until `shutdown` turns true.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
    run_with_metrics(config, shutdown, Arc::new(Metrics::default())).await
}

/// [`run`] with caller-held metrics (the demo and tests read them).
pub async fn run_with_metrics(
    config: Config,
    mut shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) -> Result<(), RunError> {
    let data = config.gateway.data_dir.clone();
    std::fs::create_dir_all(&data)
        .map_err(|e| RunError::Config(format!("gateway.data_dir {}: {e}", data.display())))?;
    let _lock = lock_data_dir(&data)?;
    let registry = registry::Registry::load(&config.gateway.registry)?;
    tracing::info!(devices = registry.len(), registry = %config.gateway.registry.display(), "registry loaded");

    let (host, port) = match &config.mqtt.host {
        Some(h) => (h.clone(), config.mqtt.port),
        None => {
            broker::start(config.mqtt.embedded_listen).map_err(RunError::Config)?;
            tracing::info!(listen = %config.mqtt.embedded_listen, "embedded broker started");
            (
                config.mqtt.embedded_listen.ip().to_string(),
                config.mqtt.embedded_listen.port(),
            )
        }
    };
    let options = mqtt::options(&config.mqtt, &host, port).map_err(RunError::Config)?;
    let group = protocol::Id::new(&config.mqtt.group)
        .map_err(|e| RunError::Config(format!("mqtt.group: {e}")))?;
    let filter = protocol::topic::shared_uplink_filter(group).to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let setup = WorkerSetup {
        registry,
        buffer_dir: data.join("buffer"),
        segment_bytes: config.buffer.segment_mib << 20,
        max_bytes: config.buffer.max_mib << 20,
        quarantine_dir: data.join("quarantine"),
        quarantine_bytes: config.quarantine.max_mib << 20,
        snapshot_path: data.join("replay.state"),
        rules: core::validate::TimeRules {
            max_future_skew_s: config.validation.max_future_skew.as_secs(),
            max_age_s: config.validation.max_age.as_secs(),
        },
    };
    let (worker, reader) = Worker::open(setup, metrics.clone(), stop.clone())?;
    let progress = worker.buffer_watch();

    let runtime = tokio::runtime::Handle::current();
    let writer: Box<dyn sink::LineWriter> = match &config.database {
        None => {
            tracing::info!(dir = %data.join("export").display(), "no database configured: writing line-protocol files");
            Box::new(sink::FileWriter::new(data.join("export")))
        }
        Some(db) if db.api == DatabaseApi::V1 => {
            Box::new(sink::V1Writer::new(db.clone(), runtime).map_err(RunError::Config)?)
        }
        Some(db) => Box::new(sink::V2Writer::new(db.clone(), runtime).map_err(RunError::Config)?),
    };
    let db_quarantine =
        quarantine::Quarantine::open(&data.join("quarantine-db"), config.quarantine.max_mib << 20)
            .map_err(|e| RunError::Buffer(e.into()))?;

    let (jobs_tx, jobs_rx) = mpsc::channel(4096);
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    let worker_thread = std::thread::Builder::new()
        .name("ingest".into())
        .spawn(move || worker.run(jobs_rx, acks_tx))
        .map_err(|e| RunError::Config(format!("cannot start the ingest thread: {e}")))?;
    let sink_thread = {
        let (metrics, stop, cfg) = (metrics.clone(), stop.clone(), config.batch.clone());
        std::thread::Builder::new()
            .name("sink".into())
            .spawn(move || sink::run(reader, writer, db_quarantine, cfg, metrics, stop))
            .map_err(|e| RunError::Config(format!("cannot start the sink thread: {e}")))?
    };

    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = config.http.listen {
        let listener = http::bind(addr).await.map_err(RunError::Config)?;
        tracing::info!(%addr, "metrics and health on http://{addr}/metrics");
        tasks.spawn(http::serve(
            listener,
            metrics.clone(),
            jobs_tx.clone(),
            shutdown.clone(),
        ));
    }
    tasks.spawn(reload_on_sighup(
        config.gateway.registry.clone(),
        jobs_tx.clone(),
        shutdown.clone(),
    ));

    mqtt::run(
        options,
        filter,
        jobs_tx,
        acks_rx,
        metrics.clone(),
        shutdown.clone(),
    )
    .await;
    // MQTT has stopped consuming and sent the acks for what was stored. Let the others go.
    let _ = shutdown.wait_for(|s| *s).await;
    while tasks.join_next().await.is_some() {}
    let _ = tokio::task::spawn_blocking(move || worker_thread.join()).await;
    // Give the sink a bounded time to write what is buffered; the rest waits on disk.
    let deadline = tokio::time::Instant::now() + SHUTDOWN_FLUSH;
    while progress.pending_bytes() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || sink_thread.join()).await;
    tracing::info!("stopped");
    Ok(())
}

/// One service per data directory: a second one would corrupt the buffer.
fn lock_data_dir(dir: &Path) -> Result<File, RunError> {
    let path = dir.join("lock");
    let file =
        File::create(&path).map_err(|e| RunError::Config(format!("{}: {e}", path.display())))?;
    file.try_lock().map_err(|_| {
        RunError::Config(format!(
            "another gateway is running on data directory {}",
            dir.display()
        ))
    })?;
    Ok(file)
}

async fn reload_on_sighup(
    path: std::path::PathBuf,
    jobs: mpsc::Sender<ingest::Job>,
    mut shutdown: watch::Receiver<bool>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = hup.recv() => match registry::Registry::load(&path) {
                Ok(r) => { let _ = jobs.send(ingest::Job::Registry(Box::new(r))).await; }
                Err(e) => tracing::error!(error = %e, "registry reload failed; keeping the previous one"),
            },
        }
    }
}
