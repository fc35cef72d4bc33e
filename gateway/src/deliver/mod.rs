//! Delivery: reads the durable buffer in order, batches lines per tenant (size and
//! linger), writes them, and only then lets the buffer drop them. Runs on its own thread;
//! the HTTP writers drive their futures on the service's tokio runtime.
//!
//! **Per tenant.** A tenant whose database refuses (missing database, credentials, 5xx,
//! timeouts) falls behind on its own cursor and is retried on its own backoff while the
//! others keep flowing ([`lanes`]); health and the `vigie_tenant_behind` metric name it.
//! Answers are classified by `vigie_core::deliver::retry`: a batch the database refuses (400/422) is
//! split to isolate the bad line, which goes to the database quarantine (replayable);
//! if that quarantine cannot be written, the lines are not dropped: the tenant waits.

pub mod device_info;
pub mod retention;
pub mod tenants;

mod confirm;
mod file;
mod influx;
mod kept;
pub mod lanes;
mod overlap;
mod read;
mod text;
pub mod v2;

pub use file::{FileWriter, erase_offline as erase_files};
pub use influx::{SetupError, V1Writer};
pub(crate) use influx::{authorize, client_builder};
pub use text::Text;
pub use v2::V2Writer;

use crate::clock::Clock;
use crate::config::BatchConfig;
use crate::ingest::SharedQuarantine;
use crate::observe::health::{Health, Tenant};
use crate::observe::metrics::{ClassLabel, Metrics, gauge};
use crate::store::buffer::{Position, Reader};
use confirm::{Confirm, Lines};
use lanes::Lanes;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use vigie_core::deliver::discards::Discards;
use vigie_core::deliver::retry::{self, Action};

/// The outcome of one write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The HTTP status, `Retry-After` if any, and the body (for error details).
    Status {
        /// Status code.
        code: u16,
        /// `Retry-After` header.
        retry_after: Option<String>,
        /// Response body.
        body: String,
    },
    /// No HTTP answer: connection refused, timeout, TLS failure.
    Transport(String),
}

/// A database (or file) that takes line protocol for one tenant.
pub trait LineWriter: Send {
    /// Writes `lines` (newline-terminated) to `tenant`'s database or bucket.
    fn write(&mut self, tenant: &str, lines: &Text) -> Answer;

    /// For a database whose 2xx does not prove it keeps every row (VictoriaMetrics): its
    /// counters of rows dropped after accepting them (`confirm.rs`). `None`: a 2xx is
    /// proof (InfluxDB answers 400 for a partial write; files are synced).
    fn discards(&mut self) -> Option<Result<Discards, CountersError>> {
        None
    }
}

/// Why a database's counters of dropped rows could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    /// No answer.
    #[error("{0}")]
    Http(reqwest::Error),
    /// An error status.
    #[error("GET /metrics: HTTP {0}")]
    Status(u16),
}

/// Behind tenants tried per cycle, in batches, before the head reads again.
const CATCH_UP_BATCHES: usize = 4;
/// Longest idle wait of the delivery loop (it also wakes on every append).
const IDLE: Duration = Duration::from_secs(1);

/// One tenant's lines in a batch.
#[derive(Debug)]
struct Chunk {
    lines: Text,
    /// Its lines (readings).
    readings: usize,
    first: Position,
}

/// What the head read in one cycle.
#[derive(Debug, Default)]
struct Batch {
    by_tenant: BTreeMap<String, Chunk>,
    lines: usize,
    end: Option<Position>,
    /// When its first line was read: it lingers from then.
    started: Option<Instant>,
}

/// A write's result for the lane bookkeeping.
enum Written {
    Stored,
    Failed { error: String, wait: Duration },
}

/// Everything the delivery thread needs.
#[derive(Debug)]
pub struct SinkSetup {
    /// Cursor at the oldest record.
    pub reader: Reader,
    /// Where the lines go.
    pub writer: Box<dyn LineWriter>,
    /// Quarantine for refused lines.
    pub quarantine: SharedQuarantine,
    /// Batching and backoff.
    pub cfg: BatchConfig,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Health.
    pub health: Arc<Health>,
    /// Runtime the HTTP writers and the waits run on.
    pub runtime: Handle,
    /// Cancelled when delivery must stop.
    pub stop: CancellationToken,
    /// Where progress persists (`None`: not persisted, tests).
    pub state_path: Option<PathBuf>,
    /// After `stop`, how long delivery goes on writing what flows; the rest waits on disk
    /// for the next start.
    pub flush: Duration,
    /// The service's clock.
    pub clock: Clock,
    /// In a group, open only while this gateway is in step with the group's log: the
    /// sink starts no write while it is closed (`crate::observe::group::Fence`).
    pub fence: Option<Arc<crate::observe::group::Fence>>,
}

impl std::fmt::Debug for dyn LineWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LineWriter")
    }
}

/// The delivery loop.
struct Sink {
    s: SinkSetup,
    lanes: Lanes,
    /// What was last persisted.
    saved: Lanes,
    save_failed: bool,
    /// Buffer reads that failed in a row (logged at 1, 2, 4, 8… of them, not each).
    read_errors: u64,
    /// Rate limit of the refused-line log lines.
    refused_log: crate::ingest::LogBudget,
    /// Writes awaiting confirmation (VictoriaMetrics only).
    confirm: Option<Confirm>,
    /// Counter readings that failed in a row (logged at 1, 2, 4, 8…).
    confirm_errors: u64,
    /// Deliveries wait on the group's fence (said once).
    fenced: bool,
    /// The bytes of each tenant's lines in the last batch: room made for them at once,
    /// where growing a batch's lines copied them again (1.4 % of a drain's instructions).
    sizes: BTreeMap<String, usize>,
}

/// Runs delivery until `stop` is cancelled and nothing more can be delivered promptly.
pub fn run(mut setup: SinkSetup) {
    let lanes = load_lanes(&setup);
    if let Some(head) = lanes.head {
        setup.reader = setup.reader.at(head);
    }
    let confirm = setup.writer.discards().map(|first| {
        if let Err(e) = &first {
            tracing::warn!(error = %e, "cannot read VictoriaMetrics' counters of dropped rows; writes wait until they can be read");
        }
        Confirm::new(first.ok())
    });
    let sink = Sink {
        s: setup,
        saved: lanes.clone(),
        lanes,
        save_failed: false,
        read_errors: 0,
        refused_log: Default::default(),
        confirm,
        confirm_errors: 0,
        fenced: false,
        sizes: BTreeMap::new(),
    };
    for tenant in sink.lanes.behind.keys() {
        sink.s.metrics.tenant_behind.of(tenant).set(1);
    }
    sink.run();
}

/// Progress saved by the last run, if it fits this buffer.
fn load_lanes(setup: &SinkSetup) -> Lanes {
    let Some(path) = &setup.state_path else {
        return Lanes::default();
    };
    let Ok(bytes) = std::fs::read(path) else {
        return Lanes::default();
    };
    let durable = setup.reader.durable();
    match serde_json::from_slice::<Lanes>(&bytes) {
        Ok(l)
            if l.head.is_none_or(|h| h <= durable)
                && l.behind.values().all(|b| b.from <= durable) =>
        {
            l
        }
        Ok(_) => {
            tracing::warn!(path = %path.display(), "delivery state points past the buffer's end; starting from the oldest record");
            Lanes::default()
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "delivery state unreadable; starting from the oldest record (some lines are written twice, harmlessly)");
            Lanes::default()
        }
    }
}

impl Sink {
    fn run(mut self) {
        let mut flush_until = None;
        // A batch read while the one before was written (`overlap.rs`).
        let mut next = None;
        loop {
            let stopping = self.s.stop.is_cancelled();
            if stopping {
                flush_until.get_or_insert_with(|| Instant::now() + self.s.flush);
            }
            if !self.fenced_in(stopping) {
                if stopping {
                    return;
                }
                continue;
            }
            let batch = self.collect(next.take().unwrap_or_default(), stopping, false);
            if self.may_overlap(stopping, &batch) {
                next = self.write_overlapped(&batch);
            } else {
                self.write_batch(&batch);
            }
            if let Some(end) = batch.end {
                match &mut self.confirm {
                    Some(c) => self.lanes.head = c.batch_end(end).or(self.lanes.head),
                    None => self.lanes.head = Some(end),
                }
            }
            // Not while a batch read ahead waits: a held tenant rejoining at this head
            // would miss its records in it (they were left to its own cursor).
            if !stopping && next.is_none() {
                self.catch_up();
            }
            self.confirm_due();
            self.publish();
            // Stopping: what flows is written until nothing is left or time is up; held
            // tenants are not retried.
            if stopping && (batch.end.is_none() || flush_until.is_some_and(|t| Instant::now() >= t))
            {
                return;
            }
        }
    }

    /// Writes each tenant's lines of `batch`, one after the other; a tenant whose write
    /// fails is held on its own cursor from its first record in the batch.
    fn write_batch(&mut self, batch: &Batch) {
        for (tenant, chunk) in &batch.by_tenant {
            let records = Self::records(batch, chunk);
            match self.write(tenant, &chunk.lines, records) {
                Written::Stored => {}
                Written::Failed { error, wait } => {
                    self.fall_behind(tenant, chunk.first, error, wait);
                }
            }
        }
    }

    /// Where a head chunk's lines are in the buffer.
    fn records(batch: &Batch, chunk: &Chunk) -> Option<Lines> {
        batch.end.map(|end| Lines::Records {
            first: chunk.first,
            end,
        })
    }

    /// Whether writes may start (always, out of a group). While the fence is closed it
    /// waits a little (said once) and answers false.
    fn fenced_in(&mut self, stopping: bool) -> bool {
        let Some(fence) = &self.s.fence else {
            return true;
        };
        if fence.is_open() {
            if std::mem::take(&mut self.fenced) {
                tracing::info!("in step with the group's store again: deliveries go on");
            }
            return true;
        }
        if !std::mem::replace(&mut self.fenced, true) {
            tracing::warn!(
                "not in step with the group's store (unreachable, or an erasure waits): deliveries wait, the readings stay in the buffer"
            );
        }
        if !stopping {
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn fall_behind(&mut self, tenant: &str, from: Position, error: String, wait: Duration) {
        let first = !self.lanes.is_behind(tenant);
        self.lanes
            .failed(tenant, from, error.clone(), wait, self.s.clock.now_ms());
        if first {
            tracing::error!(tenant, %error, "tenant held: its readings wait in the buffer and are retried on their own; other tenants go on");
            self.s.metrics.tenant_behind.of(tenant).set(1);
        } else {
            tracing::debug!(tenant, %error, "tenant still held; retrying in {wait:?}");
        }
    }

    fn rejoined(&self, tenant: &str) {
        tracing::info!(
            tenant,
            "tenant caught up; its database accepts writes again"
        );
        self.s.metrics.tenant_behind.of(tenant).set(0);
    }

    /// Lets the buffer drop what is stored, persists progress, updates health.
    fn publish(&mut self) {
        if let Some(w) = self.lanes.watermark() {
            self.save_progress();
            self.s.reader.mark_delivered(w);
        }
        let snapshot = self.s.health.snapshot();
        for (tenant, b) in &self.lanes.behind {
            if let Some(error) = &b.error {
                let since_ms = b.since_ms;
                let held = Tenant::Held {
                    error: error.clone(),
                    since_ms,
                };
                self.s.health.set_tenant(tenant, held);
            }
        }
        for tenant in snapshot.tenants.keys() {
            if !self.lanes.is_behind(tenant) {
                self.s.health.set_tenant(tenant, Tenant::Flowing);
            }
        }
        let healthy = self.lanes.behind.values().all(|b| b.error.is_none());
        self.s.metrics.sink_healthy.set(i64::from(healthy));
        let pending = gauge(self.s.reader.pending_bytes());
        self.s.metrics.buffer_pending_bytes.set(pending);
    }

    /// Saves the lanes' progress when it moved.
    fn save_progress(&mut self) {
        let Some(path) = &self.s.state_path else {
            return;
        };
        if !self.lanes.moved_from(&self.saved) {
            return;
        }
        let text = serde_json::to_vec(&self.lanes).unwrap_or_default();
        match crate::store::fs::write_atomic(path, &text, 0o600) {
            Ok(()) => self.saved = self.lanes.clone(),
            // Logged once: retried at the next change; a restart before that writes some
            // lines again (harmless, same points).
            Err(e) if self.saved.head.is_some() || !self.save_failed => {
                tracing::warn!(error = %e, "cannot save delivery progress (a restart would write some lines again)");
                self.saved = Lanes::default();
                self.save_failed = true;
            }
            Err(_) => {}
        }
    }

    /// Writes `lines` for `tenant` once (splitting a refused batch down to its bad lines);
    /// `records` says where they are in the buffer, when they are a head chunk.
    fn write(&mut self, tenant: &str, lines: &Text, records: Option<Lines>) -> Written {
        if lines.is_empty() {
            // Records `erase` emptied: nothing to send.
            return Written::Stored;
        }
        if let Some(error) = self.confirm_baseline() {
            let wait = self.backoff(tenant, 0);
            return Written::Failed { error, wait };
        }
        let started = Instant::now();
        let answer = self.s.writer.write(tenant, lines);
        self.answered(tenant, lines, records, answer, started)
    }

    /// What `answer` to a write of `lines` for `tenant`, started at `started`, means:
    /// stored, or failed (a refused batch split down to its bad lines first).
    fn answered(
        &mut self,
        tenant: &str,
        lines: &Text,
        records: Option<Lines>,
        answer: Answer,
        started: Instant,
    ) -> Written {
        let (action, detail) = match answer {
            Answer::Status {
                code,
                retry_after,
                body,
            } => (
                retry::classify(code, retry_after.as_deref()),
                format!("HTTP {code}: {}", body.trim()),
            ),
            Answer::Transport(e) => (Action::Retry { after: None }, e),
        };
        let class = match action {
            Action::Done => {
                self.written(tenant, lines, records, started);
                return Written::Stored;
            }
            Action::Split => "split",
            Action::Config => "config",
            Action::Retry { .. } => "retry",
        };
        let errors = &self.s.metrics.write_errors;
        errors.get_or_create(&ClassLabel { class }).inc();
        match action {
            Action::Split => self.split(tenant, lines, &detail),
            Action::Retry { after: Some(wait) } => Written::Failed {
                error: detail,
                wait,
            },
            // A refused configuration is retried more slowly.
            Action::Config => Written::Failed {
                error: format!(
                    "{detail} (the database refuses our configuration: URL, credentials or database name)"
                ),
                wait: self.backoff(tenant, 3),
            },
            _ => Written::Failed {
                error: detail,
                wait: self.backoff(tenant, 0),
            },
        }
    }

    /// The wait before `tenant`'s next try: its attempts so far, plus `more`.
    fn backoff(&self, tenant: &str, more: u32) -> Duration {
        let attempt = self.lanes.behind.get(tenant).map_or(0, |b| b.attempt) + more;
        let cfg = &self.s.cfg;
        retry::backoff(attempt, cfg.min_backoff, cfg.max_backoff, jitter())
    }

    /// A write the database answered 2xx: timed, and stored once the database's counters
    /// say it kept the lines (VictoriaMetrics), at once otherwise.
    fn written(&mut self, tenant: &str, lines: &Text, records: Option<Lines>, started: Instant) {
        let n = line_count(lines.as_bytes());
        let metrics = &self.s.metrics;
        metrics
            .write_duration
            .observe(started.elapsed().as_secs_f64());
        metrics.batch_lines.observe(n as f64);
        match &mut self.confirm {
            Some(c) => {
                let kept = records.unwrap_or_else(|| Lines::Text(lines.clone()));
                c.wrote(Instant::now(), tenant, kept, n as u64);
            }
            None => {
                metrics.readings_stored.of(tenant).inc_by(n as u64);
            }
        }
    }

    /// Sleeps, waking early on stop.
    fn pause(&self, d: Duration) {
        let stop = self.s.stop.clone();
        self.s.runtime.block_on(async move {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// The lines of `text`, as `str::lines` counts them: searching for each line's end
/// character by character was 2 % of a drain's instructions, filtering its bytes one by
/// one 4 % (about 4 instructions a byte); `memchr` compares them 32 at a time.
fn line_count(text: &[u8]) -> usize {
    let ends = memchr::memchr_iter(b'\n', text).count();
    ends + usize::from(!text.is_empty() && !text.ends_with(b"\n"))
}

/// A random number in [0, 1) for backoff jitter.
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
}

#[cfg(test)]
mod tests;
