//! Vigie gateway: the shells around the functional core ([`vigie_core`]: every decision,
//! no I/O, time passed in). The folders follow one reading:
//!
//! - [`intake`]: MQTT in and acknowledgements out (own MQTT 5 connection, or the embedded
//!   broker of the no-servers mode).
//! - [`ingest`]: the worker thread that judges a batch, commits it, then acknowledges; the
//!   host clock's sync state.
//! - [`store`]: the durable buffer, the quarantine, the filesystem seam under both.
//! - [`deliver`]: per-commune delivery to InfluxDB (v1, v2) or VictoriaMetrics, and what
//!   each database keeps (retention, device metadata, communes' databases).
//!
//! Beside them: [`web`] (HTTP server, status pages, live feed), [`observe`] (metrics,
//! health, device state), [`fleet`] (registry file, broker accounts, the CA), [`config`]
//! (the configuration file), and [`ops`] (the operator commands, one file per group).
//! `docs/ARCHITECTURE.md` draws the map.

pub mod clock;
pub mod config;
pub mod deliver;
pub mod fleet;
pub mod ingest;
pub mod intake;
pub mod observe;
pub mod ops;
pub mod store;
pub mod web;

use config::{Config, DatabaseApi};
use ingest::{Worker, WorkerSetup};
use observe::health::Health;
use observe::metrics::Metrics;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::fleet::registry::RegistryFile;
pub use protocol;
pub use vigie_core;

/// How long shutdown waits for the sink to write what is buffered before leaving it for
/// the next start.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A directory or file the service needs.
    #[error("{what} {path}: {source}")]
    Path {
        /// The setting or file it is.
        what: &'static str,
        /// Where.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another gateway holds the data directory.
    #[error("another gateway is running on data directory {0}")]
    Locked(std::path::PathBuf),
    /// A thread could not be started.
    #[error("cannot start the {0} thread: {1}")]
    Thread(&'static str, std::io::Error),
    /// The embedded broker.
    #[error(transparent)]
    Broker(#[from] intake::broker::BrokerError),
    /// The MQTT client's settings.
    #[error(transparent)]
    Mqtt(#[from] intake::mqtt::SetupError),
    /// `mqtt.group` is not an identifier.
    #[error("mqtt.group: {0}")]
    Group(protocol::TopicError),
    /// The database writer.
    #[error(transparent)]
    Database(#[from] deliver::SetupError),
    /// `http.listen`.
    #[error("http.listen {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Registry.
    #[error(transparent)]
    Registry(#[from] fleet::registry::RegistryError),
    /// Buffer.
    #[error(transparent)]
    Buffer(#[from] store::buffer::BufferError),
    /// Quarantine.
    #[error("quarantine: {0}")]
    Quarantine(std::io::Error),
    /// An essential thread stopped while the service was running.
    #[error(
        "the {0} thread stopped unexpectedly; exiting so the service manager restarts the gateway"
    )]
    Died(&'static str),
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

/// Which essential thread died first, and the token that stops the service then.
#[derive(Debug, Clone, Default)]
struct Death {
    token: CancellationToken,
    which: Arc<std::sync::OnceLock<&'static str>>,
}

/// Spawns a thread the service cannot run without: if it ends (or panics) before
/// `stopping` is cancelled, `died` records it and the service exits with an error.
fn spawn_essential(
    name: &'static str,
    stopping: CancellationToken,
    died: Death,
    body: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, RunError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
            if !stopping.is_cancelled() {
                tracing::error!(
                    thread = name,
                    panicked = result.is_err(),
                    "essential thread stopped; the gateway exits"
                );
                let _ = died.which.set(name);
                died.token.cancel();
            }
        })
        .map_err(|e| RunError::Thread(name, e))
}

/// [`run`] with caller-held metrics (the demo and tests read them).
pub async fn run_with_metrics(
    config: Config,
    mut shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) -> Result<(), RunError> {
    // One token for the whole service: the signal watch only feeds it.
    let stopping = CancellationToken::new();
    {
        let stopping = stopping.clone();
        tokio::spawn(async move {
            let _ = shutdown.wait_for(|s| *s).await;
            stopping.cancel();
        });
    }
    let data = config.gateway.data_dir.clone();
    std::fs::create_dir_all(&data).map_err(|source| RunError::Path {
        what: "gateway.data_dir",
        path: data.clone(),
        source,
    })?;
    let _lock = lock_data_dir(&data)?;
    let registry = fleet::registry::Registry::load_existing(&config.gateway.registry)?;
    tracing::info!(devices = registry.len(), registry = %config.gateway.registry.display(), "registry loaded");
    metrics.devices.restore(&data);

    let (host, port) = match &config.mqtt.host {
        Some(h) => (h.clone(), config.mqtt.port),
        None => {
            intake::broker::start(config.mqtt.embedded_listen)?;
            tracing::info!(listen = %config.mqtt.embedded_listen, "embedded broker started");
            (
                config.mqtt.embedded_listen.ip().to_string(),
                config.mqtt.embedded_listen.port(),
            )
        }
    };
    let options = intake::mqtt::options(&config.mqtt, &host, port)?;
    let group = protocol::Id::new(&config.mqtt.group).map_err(RunError::Group)?;
    let filter = protocol::topic::shared_uplink_filter(group).to_string();

    let fs = store::fs::real();
    let health = Arc::new(Health::default());
    let open_quarantine = |dir: &str| {
        store::quarantine::Quarantine::open(
            fs.clone(),
            &data.join(dir),
            config.quarantine.max_mib << 20,
        )
        .map_err(RunError::Quarantine)
    };
    let db_quarantine = Arc::new(Mutex::new(open_quarantine("quarantine-db")?));
    let max_age = deliver::retention::check(&config, &registry.tenants()).await;
    let setup = WorkerSetup {
        fs: fs.clone(),
        registry,
        buffer_dir: data.join("buffer"),
        segment_bytes: config.buffer.segment_mib << 20,
        max_bytes: config.buffer.max_mib << 20,
        quarantine: open_quarantine("quarantine")?,
        db_quarantine: db_quarantine.clone(),
        snapshot_path: data.join("replay.state"),
        rules: vigie_core::judge::validate::TimeRules {
            max_future_skew_s: config.validation.max_future_skew.as_secs(),
            max_age_s: max_age.as_secs(),
        },
        strings: config
            .database
            .as_ref()
            .map(|d| d.string_fields())
            .unwrap_or_default(),
        host_clock: config.validation.host_clock.clone(),
        clock: clock::Clock::system(),
    };
    let (worker, reader) = Worker::open(setup, metrics.clone(), health.clone(), stopping.clone())?;

    let runtime = tokio::runtime::Handle::current();
    let make_writer = || -> Result<Box<dyn deliver::LineWriter>, RunError> {
        Ok(match &config.database {
            None => Box::new(deliver::FileWriter::new(fs.clone(), data.join("export"))),
            Some(db) if db.api == DatabaseApi::V1 => {
                Box::new(deliver::V1Writer::new(db.clone(), runtime.clone())?)
            }
            Some(db) => Box::new(deliver::V2Writer::new(db.clone(), runtime.clone())?),
        })
    };
    if config.database.is_none() {
        tracing::info!(dir = %data.join("export").display(), "no database configured: writing line-protocol files");
    }
    let writer = make_writer()?;
    let info_stop = CancellationToken::new();
    let info_thread = {
        let (writer, devices, stop) = (make_writer()?, metrics.devices.clone(), info_stop.clone());
        std::thread::Builder::new()
            .name("device-info".into())
            .spawn(move || deliver::device_info::run(writer, devices, stop))
            .map_err(|e| RunError::Thread("device-info", e))?
    };

    let died = Death::default();
    let sink_stop = CancellationToken::new();
    let (jobs_tx, jobs_rx) = mpsc::channel(4096);
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    let worker_thread = spawn_essential("ingest", stopping.clone(), died.clone(), move || {
        worker.run(jobs_rx, acks_tx)
    })?;
    let wake_sink = reader.interrupter();
    let sink_setup = deliver::SinkSetup {
        reader,
        writer,
        quarantine: db_quarantine,
        cfg: config.batch.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
        runtime,
        stop: sink_stop.clone(),
        state_path: Some(data.join("sink.state")),
        flush: SHUTDOWN_FLUSH,
    };
    let sink_thread = spawn_essential("sink", sink_stop.clone(), died.clone(), move || {
        deliver::run(sink_setup)
    })?;
    {
        // A dead essential thread stops the service like a signal, but with an error.
        let (died, stopping) = (died.token.clone(), stopping.clone());
        tokio::spawn(async move {
            died.cancelled().await;
            stopping.cancel();
        });
    }

    let reload = Reload::new(
        config.gateway.registry.clone(),
        jobs_tx.clone(),
        metrics.clone(),
        health.clone(),
    )
    .checking_retention(Arc::new(config.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = config.http.listen {
        let listener = web::http::bind(addr)
            .await
            .map_err(|source| RunError::Listen { addr, source })?;
        tracing::info!(%addr, "status page on http://{addr}/, metrics on http://{addr}/metrics");
        let service = web::http::Service {
            metrics: metrics.clone(),
            health: health.clone(),
            jobs: jobs_tx.clone(),
            reload: reload.clone(),
            admin_token: config.http.admin_token.clone(),
        };
        tasks.spawn(web::http::serve(
            listener,
            web::http::guarded(
                web::http::router(service),
                config.http.allowed_hosts.clone(),
            ),
            stopping.clone(),
        ));
    }
    if let Some(addr) = config.http.public_listen {
        let listener = web::http::bind(addr)
            .await
            .map_err(|source| RunError::Listen { addr, source })?;
        tracing::info!(%addr, tenants = ?config.http.public_tenants, "public status view on http://{addr}/");
        let app = web::http::guarded(
            web::http::public_router(metrics.clone(), config.http.public_tenants.clone()),
            config.http.allowed_hosts.clone(),
        );
        tasks.spawn(web::http::serve(listener, app, stopping.clone()));
    }
    tasks.spawn(reload_on_sighup(reload, stopping.clone()));
    // Up: stores open, threads running, status port bound. (Connected or not: a broker
    // that is down is reported by /readyz and retried, not a failed start.)
    systemd::ready();
    tasks.spawn(systemd::watchdog(stopping.clone()));

    let links = intake::mqtt::Links {
        filter,
        jobs: jobs_tx,
        acks: acks_rx,
        metrics: metrics.clone(),
        health: health.clone(),
        stopping: stopping.clone(),
    };
    intake::mqtt::run(options, links).await;
    // MQTT has stopped consuming and sent the acks for what was stored. Let the others go.
    systemd::stopping();
    stopping.cancel();
    while tasks.join_next().await.is_some() {}
    let _ = tokio::task::spawn_blocking(move || worker_thread.join()).await;
    // The sink writes what flows for at most SHUTDOWN_FLUSH; the rest waits on disk.
    sink_stop.cancel();
    wake_sink.interrupt();
    let _ = tokio::task::spawn_blocking(move || sink_thread.join()).await;
    info_stop.cancel();
    let _ = tokio::task::spawn_blocking(move || info_thread.join()).await;
    if let Some(which) = died.which.get() {
        return Err(RunError::Died(which));
    }
    tracing::info!("stopped");
    Ok(())
}

/// systemd's notification protocol (`Type=notify`), a no-op outside systemd.
mod systemd {
    use sd_notify::NotifyState;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    /// Start-up is done.
    pub fn ready() {
        let _ = sd_notify::notify(false, &[NotifyState::Ready]);
    }

    /// Shutdown has begun (stop consuming, flush, acknowledge).
    pub fn stopping() {
        let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
    }

    /// Keep-alive pings at half the unit's `WatchdogSec` while the runtime runs; a hung
    /// runtime stops them and systemd restarts the service. An essential thread that dies
    /// stops the whole service already (with an error, so `Restart=on-failure` applies).
    pub async fn watchdog(stopping: CancellationToken) {
        let mut usec = 0;
        if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_micros(usec / 2));
        loop {
            tokio::select! {
                _ = stopping.cancelled() => return,
                _ = tick.tick() => {
                    let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
                }
            }
        }
    }
}

/// One service per data directory: a second one would corrupt the buffer. (`erase` takes
/// it too.) A lock file made by root (`erase` before the first start) gets the
/// directory's owner, so the service can still open it.
pub(crate) fn lock_data_dir(dir: &Path) -> Result<File, RunError> {
    use std::os::unix::fs::MetadataExt;
    let path = dir.join("lock");
    let file = File::create(&path).map_err(|source| RunError::Path {
        what: "lock file",
        path,
        source,
    })?;
    if let Ok(m) = std::fs::metadata(dir) {
        // Only root may change it, and only root needs to.
        let _ = std::os::unix::fs::fchown(&file, Some(m.uid()), Some(m.gid()));
    }
    file.try_lock()
        .map_err(|_| RunError::Locked(dir.to_path_buf()))?;
    Ok(file)
}

/// Loads the registry file into the running worker: on SIGHUP and on
/// `POST /registry/reload`. A failure leaves the previous registry in force and is
/// reported (log line, metric, `/readyz`, and the caller). With a configuration, the
/// retention of every commune's database is asked again (a commune added since the start
/// may keep less than `validation.max_age`) and the age bound follows it.
#[derive(Debug, Clone)]
pub struct Reload {
    path: std::path::PathBuf,
    jobs: mpsc::Sender<ingest::Job>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    retention_of: Option<Arc<Config>>,
}

impl Reload {
    /// Reloads `path` into the worker behind `jobs`, reporting to `metrics` and `health`.
    pub fn new(
        path: std::path::PathBuf,
        jobs: mpsc::Sender<ingest::Job>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Self {
        Self {
            path,
            jobs,
            metrics,
            health,
            retention_of: None,
        }
    }

    /// Asks the databases of `config` their retention at each reload.
    pub fn checking_retention(self, config: Arc<Config>) -> Self {
        Self {
            retention_of: Some(config),
            ..self
        }
    }

    /// Reloads; the number of devices now in force.
    pub async fn run(&self) -> Result<usize, fleet::registry::RegistryError> {
        match fleet::registry::Registry::load_existing(&self.path) {
            Ok(r) => {
                let devices = r.len();
                self.health.set_registry_error(None);
                let max_age = match &self.retention_of {
                    Some(config) => Some(deliver::retention::check(config, &r.tenants()).await),
                    None => None,
                };
                let job = ingest::Job::Registry(Box::new(r), max_age);
                let _ = self.jobs.send(job).await;
                Ok(devices)
            }
            Err(e) => {
                tracing::error!(error = %e, "registry reload failed; the previous registry stays in force");
                self.metrics.registry_reload_failures.inc();
                self.health.set_registry_error(Some(e.to_string()));
                Err(e)
            }
        }
    }
}

async fn reload_on_sighup(reload: Reload, stopping: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = stopping.cancelled() => return,
            _ = hup.recv() => { let _ = reload.run().await; }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_essential_thread_that_dies_is_reported_one_that_is_stopped_is_not() {
        let (stopping, died) = (CancellationToken::new(), Death::default());
        let t =
            spawn_essential("ingest", stopping.clone(), died.clone(), || panic!("boom")).unwrap();
        let _ = t.join();
        assert!(died.token.is_cancelled(), "a panic is a death");
        assert_eq!(died.which.get(), Some(&"ingest"));
        let died = Death::default();
        let t = spawn_essential("sink", stopping.clone(), died.clone(), || {}).unwrap();
        let _ = t.join();
        assert!(died.token.is_cancelled(), "returning early is a death too");
        let died = Death::default();
        stopping.cancel();
        let t = spawn_essential("sink", stopping, died.clone(), || {}).unwrap();
        let _ = t.join();
        assert!(
            !died.token.is_cancelled(),
            "ending after the stop is normal"
        );
    }
}
