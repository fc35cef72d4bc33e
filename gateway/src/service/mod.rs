//! The composition root: the service wired from its configuration, run until a signal,
//! stopped in order. It makes the one shutdown token and the one clock, opens the
//! stores, starts the threads (`threads.rs`), the status ports and the MQTT intake, and
//! waits.

mod reload;
mod systemd;
mod threads;

pub use reload::Reload;

use crate::clock::Clock;
use crate::config::Config;
use crate::fleet::registry::{Registry, RegistryFile};
use crate::ingest::{SharedQuarantine, Worker, WorkerSetup};
use crate::observe::Traffic;
use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use crate::store::{fs, quarantine::Quarantine};
use crate::{deliver, intake, store, web};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use threads::Threads;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

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
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another gateway holds the data directory.
    #[error("another gateway is running on data directory {0}")]
    Locked(PathBuf),
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
    Registry(#[from] crate::fleet::registry::RegistryError),
    /// Buffer.
    #[error(transparent)]
    Buffer(#[from] store::buffer::BufferError),
    /// The ingest worker's stores.
    #[error(transparent)]
    Worker(#[from] crate::ingest::OpenError),
    /// Quarantine.
    #[error("quarantine: {0}")]
    Quarantine(std::io::Error),
    /// The group's store client.
    #[error(transparent)]
    GroupStore(#[from] store::group::SetupError),
    /// The group's log could not be applied at the start.
    #[error(transparent)]
    GroupLog(#[from] crate::ops::group::GroupOpsError),
    /// The alerts (a secret or CA file).
    #[error(transparent)]
    Alerts(#[from] crate::notify::SetupError),
    /// An essential thread stopped while the service was running.
    #[error(
        "the {0} thread stopped unexpectedly; exiting so the service manager restarts the gateway"
    )]
    Died(&'static str),
}

/// Runs the service until `shutdown` turns true.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
    run_with_metrics(config, shutdown, Arc::new(Metrics::default())).await
}

/// What every part of the running service shares: counters, health, what the traffic
/// shows, the one clock and the one shutdown token.
#[derive(Debug, Clone)]
pub(crate) struct Common {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) health: Arc<Health>,
    pub(crate) traffic: Traffic,
    pub(crate) clock: Clock,
    pub(crate) stopping: CancellationToken,
    /// The group changed the registry file: reload it.
    pub(crate) registry_changed: Arc<tokio::sync::Notify>,
    /// Stopping to start again in place (an erasure of the group waits).
    pub(crate) restart: Arc<AtomicBool>,
}

/// [`run`] with caller-held metrics (the demo and tests read them). A group member
/// stops and starts again in place when the group asks for an erasure.
pub async fn run_with_metrics(
    config: Config,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) -> Result<(), RunError> {
    loop {
        let restart = Arc::new(AtomicBool::new(false));
        run_once(&config, shutdown.clone(), metrics.clone(), restart.clone()).await?;
        if !restart.load(Ordering::SeqCst) || *shutdown.borrow() {
            return Ok(());
        }
        tracing::info!("starting again to carry out the group's erasure");
    }
}

/// The service, from its start to its stop.
async fn run_once(
    config: &Config,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    restart: Arc<AtomicBool>,
) -> Result<(), RunError> {
    let data = config.gateway.data_dir.clone();
    let _lock = open_data_dir(&data)?;
    // A group's log first: registry changes and erasures made while this one was away.
    let cfg = config.clone();
    tokio::task::spawn_blocking(move || crate::ops::group::catch_up_at_start(&cfg))
        .await
        .map_err(|_| RunError::Died("group log's catch-up"))??;
    let registry = Registry::load_existing(&config.gateway.registry)?;
    tracing::info!(devices = registry.len(), registry = %config.gateway.registry.display(), "registry loaded");
    let c = Common {
        metrics,
        health: Arc::new(Health::default()),
        traffic: Traffic::default(),
        clock: Clock::system(),
        stopping: token_of(shutdown),
        registry_changed: Arc::default(),
        restart,
    };
    c.traffic.devices.restore(&data);
    let (options, filter) = mqtt(config)?;
    let (worker, reader, db_quarantine) = open_worker(config, registry, &c).await?;
    let (threads, acks) = Threads::start(config, &data, worker, reader, db_quarantine, &c)?;
    stop_when_dead(&threads, &c.stopping);
    let reload = Reload::new(
        config.gateway.registry.clone(),
        threads.jobs.clone(),
        c.metrics.clone(),
        c.health.clone(),
    )
    .checking_retention(Arc::new(config.clone()));
    let mut tasks = serve_http(config, &threads, &reload, &c).await?;
    tasks.spawn(reload::on_sighup(
        reload,
        c.registry_changed.clone(),
        c.stopping.clone(),
    ));
    if let Some(notifier) = crate::notify::Notifier::new(config)? {
        tasks.spawn(crate::notify::run(notifier, c.clone()));
    }
    // Up: stores open, threads running, status port bound. (Connected or not: a broker
    // that is down is reported by /readyz and retried, not a failed start.)
    systemd::ready();
    tasks.spawn(systemd::watchdog(c.stopping.clone()));
    let links = intake::mqtt::Links {
        filter,
        jobs: threads.jobs.clone(),
        acks,
        metrics: c.metrics.clone(),
        health: c.health.clone(),
        stopping: c.stopping.clone(),
        clock: c.clock.clone(),
    };
    intake::mqtt::run(options, links).await;
    // MQTT has stopped consuming and sent the acks for what was stored. Let the others go.
    systemd::stopping();
    c.stopping.cancel();
    while tasks.join_next().await.is_some() {}
    threads.stop().await?;
    tracing::info!("stopped");
    Ok(())
}

/// One token for the whole service: the signal watch only feeds it.
fn token_of(mut shutdown: watch::Receiver<bool>) -> CancellationToken {
    let stopping = CancellationToken::new();
    let token = stopping.clone();
    tokio::spawn(async move {
        let _ = shutdown.wait_for(|s| *s).await;
        token.cancel();
    });
    stopping
}

/// A dead essential thread stops the service like a signal, but with an error.
fn stop_when_dead(threads: &Threads, stopping: &CancellationToken) {
    let (died, stopping) = (threads.died.token.clone(), stopping.clone());
    tokio::spawn(async move {
        died.cancelled().await;
        stopping.cancel();
    });
}

/// The data directory, made if missing, locked for this service.
fn open_data_dir(data: &Path) -> Result<File, RunError> {
    std::fs::create_dir_all(data).map_err(|source| RunError::Path {
        what: "gateway.data_dir",
        path: data.to_path_buf(),
        source,
    })?;
    lock_data_dir(data)
}

/// The MQTT client's options and the uplink filter; the embedded broker started when no
/// broker host is configured.
fn mqtt(config: &Config) -> Result<(intake::mqtt::Options, String), RunError> {
    let (host, port) = match &config.mqtt.host {
        Some(h) => (h.clone(), config.mqtt.port),
        None => {
            let listen = config.mqtt.embedded_listen;
            intake::broker::start(listen)?;
            tracing::info!(%listen, "embedded broker started");
            (listen.ip().to_string(), listen.port())
        }
    };
    let options = intake::mqtt::options(&config.mqtt, &host, port)?;
    let group = protocol::Id::new(&config.mqtt.group).map_err(RunError::Group)?;
    Ok((
        options,
        protocol::topic::shared_uplink_filter(group).to_string(),
    ))
}

/// The ingest worker on its stores (buffer, both quarantines), the buffer's reader for
/// the sink, and the database quarantine they share.
async fn open_worker(
    config: &Config,
    registry: Registry,
    c: &Common,
) -> Result<(Worker, store::buffer::Reader, SharedQuarantine), RunError> {
    let data = &config.gateway.data_dir;
    let open_quarantine = |dir: &str| {
        Quarantine::open(fs::real(), &data.join(dir), config.quarantine.max_mib << 20)
            .map_err(RunError::Quarantine)
    };
    let db_quarantine = Arc::new(Mutex::new(open_quarantine("quarantine-db")?));
    let max_age = deliver::retention::check(config, &registry.tenants()).await;
    if config.database.is_none() {
        tracing::info!(dir = %data.join("export").display(), "no database configured: writing line-protocol files");
    }
    let setup = WorkerSetup {
        fs: fs::real(),
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
        clock: c.clock.clone(),
        traffic: c.traffic.clone(),
        group: match &config.group {
            Some(g) => Some(store::group::Etcd::new(g)?),
            None => None,
        },
    };
    // Off the runtime: a group member's start waits for the group's store.
    let (metrics, health, stopping) = (c.metrics.clone(), c.health.clone(), c.stopping.clone());
    let (worker, reader) =
        tokio::task::spawn_blocking(move || Worker::open(setup, metrics, health, stopping))
            .await
            .map_err(|_| RunError::Died("ingest worker's start"))??;
    Ok((worker, reader, db_quarantine))
}

/// The status port and the public view, each if configured, serving until `stopping`.
async fn serve_http(
    config: &Config,
    threads: &Threads,
    reload: &Reload,
    c: &Common,
) -> Result<JoinSet<()>, RunError> {
    let mut tasks = JoinSet::new();
    let pages = Arc::new(web::page::Settings {
        map_tiles: config.http.map_tiles.clone(),
        communes: config.communes.clone(),
        bin_threshold: config.round.threshold_percent,
    });
    if let Some(addr) = config.http.listen {
        let listener = web::http::bind(addr)
            .await
            .map_err(|source| RunError::Listen { addr, source })?;
        tracing::info!(%addr, "status page on http://{addr}/, metrics on http://{addr}/metrics");
        let service = web::http::Service {
            metrics: c.metrics.clone(),
            health: c.health.clone(),
            jobs: threads.jobs.clone(),
            reload: reload.clone(),
            admin_token: config.http.admin_token.clone(),
            clock: c.clock.clone(),
            traffic: c.traffic.clone(),
            round: Arc::new(config.round.clone()),
            pages: pages.clone(),
        };
        let app = web::http::guarded(web::http::router(service), &config.http);
        tasks.spawn(web::http::serve(listener, app, c.stopping.clone()));
    }
    if let Some(addr) = config.http.public_listen {
        let listener = web::http::bind(addr)
            .await
            .map_err(|source| RunError::Listen { addr, source })?;
        let tenants = config.http.public_tenants.clone();
        tracing::info!(%addr, ?tenants, "public status view on http://{addr}/");
        let router =
            web::http::public_router(c.traffic.clone(), tenants, c.clock.clone(), pages.clone());
        let app = web::http::guarded(router, &config.http);
        tasks.spawn(web::http::serve(listener, app, c.stopping.clone()));
    }
    Ok(tasks)
}

/// One service per data directory: a second one would corrupt the buffer. (`erase` takes
/// it too.) A lock file made by root (`erase` before the first start) gets the
/// directory's owner, so the service can still open it.
pub fn lock_data_dir(dir: &Path) -> Result<File, RunError> {
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
