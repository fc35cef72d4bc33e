//! Loading the registry into the running service: on SIGHUP and on
//! `POST /registry/reload`.

use crate::config::Config;
use crate::deliver::retention;
use crate::fleet::registry::{Registry, RegistryError, RegistryFile};
use crate::ingest::Job;
use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use std::sync::Arc;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// Loads the registry file into the running worker: on SIGHUP and on
/// `POST /registry/reload`. A failure leaves the previous registry in force and is
/// reported (log line, metric, `/readyz`, and the caller). With a configuration, the
/// retention of every commune's database is asked again (a commune added since the start
/// may keep less than `validation.max_age`) and the age bound follows it.
#[derive(Debug, Clone)]
pub struct Reload {
    path: std::path::PathBuf,
    jobs: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    retention_of: Option<Arc<Config>>,
}

impl Reload {
    /// Reloads `path` into the worker behind `jobs`, reporting to `metrics` and `health`.
    pub fn new(
        path: std::path::PathBuf,
        jobs: mpsc::Sender<Job>,
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
    pub async fn run(&self) -> Result<usize, RegistryError> {
        match Registry::load_existing(&self.path) {
            Ok(r) => {
                let devices = r.len();
                self.health.set_registry_error(None);
                let max_age = match &self.retention_of {
                    Some(config) => Some(retention::check(config, &r.tenants()).await),
                    None => None,
                };
                let job = Job::Registry(Box::new(r), max_age);
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

/// Reloads on SIGHUP and when `changed` is notified (the group changed the registry
/// file), until `stopping`.
pub async fn on_sighup(reload: Reload, changed: Arc<Notify>, stopping: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = stopping.cancelled() => return,
            _ = hup.recv() => { let _ = reload.run().await; }
            () = changed.notified() => { let _ = reload.run().await; }
        }
    }
}
