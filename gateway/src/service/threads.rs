//! The service's threads: ingest and delivery (essential: if one ends early the service
//! exits with an error) and the device-metadata writer; started together, stopped in
//! order.

use super::{Common, RunError, SHUTDOWN_FLUSH};
use crate::config::{Config, DatabaseApi};
use crate::deliver::{self, LineWriter};
use crate::ingest::{BrokerTx, Job, SharedQuarantine, ToBroker, Worker};
use crate::store::buffer::{Interrupter, Reader};
use crate::store::fs::SharedFs;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Which essential thread died first, and the token that stops the service then.
#[derive(Debug, Clone, Default)]
pub(super) struct Death {
    pub(super) token: CancellationToken,
    pub(super) which: Arc<std::sync::OnceLock<&'static str>>,
}

/// Spawns a thread the service cannot run without: if it ends (or panics) before
/// `stopping` is cancelled, `died` records it and the service exits with an error.
pub(super) fn spawn_essential(
    name: &'static str,
    stopping: CancellationToken,
    died: Death,
    body: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, RunError> {
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

/// The running threads and the channels into and out of the worker.
#[derive(Debug)]
pub(super) struct Threads {
    worker: JoinHandle<()>,
    sink: JoinHandle<()>,
    info: JoinHandle<()>,
    /// The group's membership (`[group]` only).
    member: Option<JoinHandle<()>>,
    sink_stop: CancellationToken,
    info_stop: CancellationToken,
    wake_sink: Interrupter,
    pub(super) died: Death,
    /// Messages and commands to the worker.
    pub(super) jobs: mpsc::Sender<Job>,
}

impl Threads {
    /// Starts the worker, the sink and the device-metadata writer; with them, the channel
    /// of what the worker makes durable.
    pub(super) fn start(
        config: &Config,
        data: &Path,
        worker: Worker,
        reader: Reader,
        db_quarantine: SharedQuarantine,
        c: &Common,
    ) -> Result<(Self, mpsc::UnboundedReceiver<ToBroker>), RunError> {
        let fs = crate::store::fs::real();
        let died = Death::default();
        let (jobs, jobs_rx) = mpsc::channel(crate::ingest::JOB_QUEUE);
        let (acks_tx, acks): (BrokerTx, _) = mpsc::unbounded_channel();
        let (info_stop, sink_stop) = (CancellationToken::new(), CancellationToken::new());
        // In a group, the sink writes only while the member thread keeps it in step.
        let fence = config.group.as_ref().map(|_| Arc::default());
        let info = {
            let (writer, devices) = (writer(config, &fs, data)?, c.traffic.devices.clone());
            let (stop, clock) = (info_stop.clone(), c.clock.clone());
            std::thread::Builder::new()
                .name("device-info".into())
                .spawn(move || deliver::device_info::run(writer, devices, stop, clock))
                .map_err(|e| RunError::Thread("device-info", e))?
        };
        let member = spawn_member(config, c, &info_stop, fence.clone())?;
        let worker = spawn_essential("ingest", c.stopping.clone(), died.clone(), move || {
            worker.run(jobs_rx, acks_tx)
        })?;
        let wake_sink = reader.interrupter();
        let setup = deliver::SinkSetup {
            reader,
            writer: writer(config, &fs, data)?,
            quarantine: db_quarantine,
            cfg: config.batch.clone(),
            metrics: c.metrics.clone(),
            health: c.health.clone(),
            runtime: tokio::runtime::Handle::current(),
            stop: sink_stop.clone(),
            state_path: Some(data.join("sink.state")),
            flush: SHUTDOWN_FLUSH,
            clock: c.clock.clone(),
            fence,
        };
        let sink = spawn_essential("sink", sink_stop.clone(), died.clone(), move || {
            deliver::run(setup)
        })?;
        let threads = Self {
            worker,
            sink,
            info,
            member,
            sink_stop,
            info_stop,
            wake_sink,
            died,
            jobs,
        };
        // What the worker makes durable, to acknowledge: the MQTT task's.
        Ok((threads, acks))
    }

    /// Once the MQTT task stopped: the worker finishes its commit, the sink writes what
    /// flows for at most [`SHUTDOWN_FLUSH`] (the rest waits on disk), then the metadata
    /// writer stops. An error if an essential thread had died.
    pub(super) async fn stop(self) -> Result<(), RunError> {
        let Self {
            worker,
            sink,
            info,
            member,
            ..
        } = self;
        drop(self.jobs);
        let _ = tokio::task::spawn_blocking(move || worker.join()).await;
        self.sink_stop.cancel();
        self.wake_sink.interrupt();
        let _ = tokio::task::spawn_blocking(move || sink.join()).await;
        self.info_stop.cancel();
        let _ = tokio::task::spawn_blocking(move || info.join()).await;
        if let Some(member) = member {
            let _ = tokio::task::spawn_blocking(move || member.join()).await;
        }
        match self.died.which.get() {
            Some(which) => Err(RunError::Died(which)),
            None => Ok(()),
        }
    }
}

/// The group's member thread (`[group]` only): its key in etcd, the members' list, the
/// group's log followed, the sink's fence opened.
fn spawn_member(
    config: &Config,
    c: &Common,
    stop: &CancellationToken,
    fence: Option<Arc<crate::observe::group::Fence>>,
) -> Result<Option<JoinHandle<()>>, RunError> {
    let (Some(g), Some(fence)) = (&config.group, fence) else {
        return Ok(None);
    };
    let etcd = crate::store::group::Etcd::new(g)?;
    let database_timeout = config.database.as_ref().map(|d| d.timeout);
    let member = crate::observe::group::Member {
        me: config.mqtt.client_id.clone(),
        prefix: g.prefix.clone(),
        ttl_s: crate::observe::group::lease_ttl_s(database_timeout.unwrap_or_default()),
        fence,
    };
    let (health, stop) = (c.health.clone(), stop.clone());
    let follow = follower(config, c);
    let body = move || crate::observe::group::run(etcd, member, health, stop, follow);
    let thread = std::thread::Builder::new()
        .name("group-member".into())
        .spawn(body);
    Ok(Some(
        thread.map_err(|e| RunError::Thread("group-member", e))?,
    ))
}

/// The member thread's turn on the group's log: a registry change reloads the registry,
/// an erasure stops the service for a restart in place.
fn follower(
    config: &Config,
    c: &Common,
) -> impl FnMut(&mut crate::store::group::Etcd) -> bool + use<> {
    let (registry_changed, restart, stopping) = (
        c.registry_changed.clone(),
        c.restart.clone(),
        c.stopping.clone(),
    );
    crate::ops::group::follower(
        Arc::new(config.clone()),
        move || registry_changed.notify_one(),
        move || {
            restart.store(true, std::sync::atomic::Ordering::SeqCst);
            stopping.cancel();
        },
    )
}

/// Where lines go: the configured database, or line-protocol files under `data`.
fn writer(config: &Config, fs: &SharedFs, data: &Path) -> Result<Box<dyn LineWriter>, RunError> {
    let runtime = tokio::runtime::Handle::current();
    Ok(match &config.database {
        None => Box::new(deliver::FileWriter::new(fs.clone(), data.join("export"))),
        Some(db) if db.api == DatabaseApi::V1 => {
            Box::new(deliver::V1Writer::new(db.clone(), runtime)?)
        }
        Some(db) => Box::new(deliver::V2Writer::new(db.clone(), runtime)?),
    })
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
