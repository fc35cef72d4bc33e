//! The ingest worker: one thread that owns the registry, the replay book, the durable
//! buffer and the quarantine. It takes every message waiting (up to a batch), judges each
//! with the pure core, appends the accepted records and quarantines the rejected ones,
//! fsyncs once (group commit), only then advances the replay windows, and hands the
//! acknowledgements back in arrival order.
//!
//! When the buffer is full or the disk fails, it keeps the batch and waits: no ack leaves,
//! so the broker holds the traffic (backpressure), and the metric and log say why.

use crate::buffer::{Buffer, BufferError};
use crate::core::reason::Reason;
use crate::core::record::Record;
use crate::core::replay_book::ReplayBook;
use crate::core::validate::TimeRules;
use crate::core::verify::{self, Verdict};
use crate::metrics::{Metrics, labels};
use crate::quarantine::{self, Quarantine};
use crate::registry::Registry;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most messages judged and committed together.
const MAX_BATCH: usize = 2048;

/// Identifies a received message for its acknowledgement: the MQTT connection it came on
/// and its packet id. An ack for an older connection is never sent (the broker redelivers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckToken {
    /// Connection generation.
    pub generation: u64,
    /// MQTT packet id.
    pub pkid: u16,
}

/// A received message.
#[derive(Debug)]
pub struct Inbound {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// Receive time, Unix ms.
    pub received_ms: u64,
    /// Ack to send once durable (`None` for QoS 0 or a quarantine replay).
    pub ack: Option<AckToken>,
}

/// What a quarantine replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReplaySummary {
    /// Entries re-submitted.
    pub replayed: usize,
    /// Accepted this time.
    pub accepted: usize,
    /// Already stored.
    pub duplicates: usize,
    /// Rejected again (back in quarantine).
    pub rejected: usize,
}

/// Work for the ingest worker.
#[derive(Debug)]
pub enum Job {
    /// A message to judge.
    Message(Inbound),
    /// Re-submit every quarantined frame through the pipeline.
    ReplayQuarantine(oneshot::Sender<ReplaySummary>),
    /// Swap in a reloaded registry.
    Registry(Box<Registry>),
}

/// The worker's state.
#[derive(Debug)]
pub struct Worker {
    registry: Registry,
    book: ReplayBook,
    buffer: Buffer,
    quarantine: Quarantine,
    snapshot_path: PathBuf,
    rules: TimeRules,
    metrics: Arc<Metrics>,
    shutdown: Arc<AtomicBool>,
}

/// Everything needed to open the worker.
#[derive(Debug)]
pub struct WorkerSetup {
    /// Device registry.
    pub registry: Registry,
    /// Buffer directory, segment size and limit.
    pub buffer_dir: PathBuf,
    /// Segment size.
    pub segment_bytes: u64,
    /// Buffer limit.
    pub max_bytes: u64,
    /// Quarantine directory and limit.
    pub quarantine_dir: PathBuf,
    /// Quarantine limit.
    pub quarantine_bytes: u64,
    /// Replay-state snapshot file.
    pub snapshot_path: PathBuf,
    /// Time rules.
    pub rules: TimeRules,
}

impl Worker {
    /// Opens buffer and quarantine, rebuilds the replay book (snapshot, then every record
    /// still in the buffer). Returns the worker and a reader for the sink.
    pub fn open(
        setup: WorkerSetup,
        metrics: Arc<Metrics>,
        shutdown: Arc<AtomicBool>,
    ) -> Result<(Self, crate::buffer::Reader), BufferError> {
        let mut book = match std::fs::read(&setup.snapshot_path) {
            Ok(bytes) => ReplayBook::from_snapshot(&bytes).unwrap_or_else(|e| {
                tracing::error!(error = %e, "replay state unreadable; starting empty (old frames may be stored again, harmlessly, as identical points)");
                ReplayBook::default()
            }),
            Err(_) => ReplayBook::default(),
        };
        let (buffer, recovery) = Buffer::open(
            &setup.buffer_dir,
            setup.segment_bytes,
            setup.max_bytes,
            |payload| {
                if let Ok(r) = Record::decode(payload) {
                    book.accept(&r.tenant, &r.device, r.epoch, r.counter);
                }
            },
        )?;
        if recovery.records > 0 || recovery.cut_bytes > 0 {
            tracing::info!(
                records = recovery.records,
                bytes = recovery.bytes,
                cut_bytes = recovery.cut_bytes,
                "buffer recovered"
            );
        }
        metrics.set(
            "vigie_buffer_recovered_records",
            vec![],
            recovery.records as f64,
        );
        metrics.set(
            "vigie_registry_devices",
            vec![],
            setup.registry.len() as f64,
        );
        let quarantine = Quarantine::open(&setup.quarantine_dir, setup.quarantine_bytes)?;
        let reader = buffer.reader();
        let worker = Self {
            registry: setup.registry,
            book,
            buffer,
            quarantine,
            snapshot_path: setup.snapshot_path,
            rules: setup.rules,
            metrics,
            shutdown,
        };
        worker.update_buffer_gauges();
        Ok((worker, reader))
    }

    /// Progress of the buffer, readable after the worker has moved to its thread.
    pub fn buffer_watch(&self) -> crate::buffer::Watch {
        self.buffer.watch()
    }

    /// Runs until the job channel closes or shutdown is set.
    pub fn run(mut self, mut jobs: mpsc::Receiver<Job>, acks: mpsc::UnboundedSender<AckToken>) {
        while let Some(first) = jobs.blocking_recv() {
            let mut messages = Vec::new();
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Message(m) => messages.push(m),
                    Job::Registry(r) => {
                        tracing::info!(devices = r.len(), "registry reloaded");
                        self.metrics
                            .set("vigie_registry_devices", vec![], r.len() as f64);
                        self.registry = *r;
                    }
                    Job::ReplayQuarantine(reply) => {
                        // Commit what came before, then replay on its own.
                        self.commit_batch(std::mem::take(&mut messages), &acks);
                        let summary = self.replay_quarantine(&acks);
                        let _ = reply.send(summary);
                    }
                }
                if messages.len() < MAX_BATCH {
                    next = jobs.try_recv().ok();
                }
            }
            if !self.commit_batch(messages, &acks) {
                break;
            }
            self.collect_garbage();
        }
        self.collect_garbage();
    }

    /// Judges, stores and acknowledges a batch. False if shutdown interrupted it (nothing
    /// of it was acknowledged).
    fn commit_batch(
        &mut self,
        messages: Vec<Inbound>,
        acks: &mpsc::UnboundedSender<AckToken>,
    ) -> bool {
        self.commit(messages, acks).is_some()
    }

    fn commit(
        &mut self,
        messages: Vec<Inbound>,
        acks: &mpsc::UnboundedSender<AckToken>,
    ) -> Option<ReplaySummary> {
        if messages.is_empty() {
            return Some(ReplaySummary::default());
        }
        let now_s = crate::now_ms() / 1000;
        let mut summary = ReplaySummary {
            replayed: messages.len(),
            ..ReplaySummary::default()
        };
        let mut payloads = Vec::new();
        let mut accepted = Vec::new();
        let mut in_batch = HashSet::new();
        for m in &messages {
            let verdict = verify::assess(
                &m.topic,
                &m.payload,
                &self.registry,
                &self.book,
                &self.rules,
                now_s,
            );
            match verdict {
                Verdict::Accept(a) => {
                    let r = &a.record;
                    if !in_batch.insert((r.tenant.clone(), r.device.clone(), r.epoch, r.counter)) {
                        summary.duplicates += 1;
                        self.metrics
                            .add("vigie_frames_duplicate_total", vec![], 1.0);
                        continue;
                    }
                    let mut payload = Vec::with_capacity(r.lines.len() + 48);
                    r.encode(&mut payload);
                    payloads.push(payload);
                    accepted.push(a);
                }
                Verdict::Duplicate { .. } => {
                    summary.duplicates += 1;
                    self.metrics
                        .add("vigie_frames_duplicate_total", vec![], 1.0);
                }
                Verdict::Reject(reason) => {
                    summary.rejected += 1;
                    self.reject(m, reason);
                }
                Verdict::Status {
                    tenant,
                    device,
                    online,
                } => {
                    let l = labels(&[("tenant", &tenant), ("device", &device)]);
                    self.metrics
                        .set("vigie_device_online", l, if online { 1.0 } else { 0.0 });
                }
            }
        }
        self.metrics.add(
            "vigie_messages_received_total",
            vec![],
            messages.len() as f64,
        );
        if !self.make_durable(&payloads) {
            return None;
        }
        summary.accepted = accepted.len();
        for a in &accepted {
            self.account(a);
        }
        for token in messages.iter().filter_map(|m| m.ack) {
            // The MQTT task may be gone at shutdown; the broker then redelivers.
            let _ = acks.send(token);
        }
        self.update_buffer_gauges();
        Some(summary)
    }

    fn reject(&mut self, m: &Inbound, reason: Reason) {
        tracing::debug!(topic = %m.topic, reason = %reason.detail(), "frame rejected");
        self.metrics.add(
            "vigie_frames_rejected_total",
            labels(&[("reason", reason.code())]),
            1.0,
        );
        let entry = quarantine::Entry {
            received_ms: m.received_ms,
            topic: m.topic.clone(),
            reason: reason.code().into(),
            detail: reason.detail(),
            payload: hex::encode(&m.payload),
        };
        match self.quarantine.add(&entry) {
            Ok(evicted) => {
                self.metrics
                    .add("vigie_quarantine_evicted_total", vec![], evicted as f64)
            }
            Err(e) => tracing::error!(error = %e, "cannot write the quarantine"),
        }
    }

    /// Appends and fsyncs buffer and quarantine, waiting (not acking) while the buffer is
    /// full or the disk fails. False on shutdown.
    fn make_durable(&mut self, payloads: &[Vec<u8>]) -> bool {
        let mut waiting_since = None;
        loop {
            let result = self
                .buffer
                .append(payloads)
                .map(|_| ())
                .and_then(|()| self.quarantine.sync().map_err(BufferError::Io));
            match result {
                Ok(()) => {
                    if waiting_since.is_some() {
                        tracing::info!("buffer accepts data again; acknowledgements resume");
                        self.metrics.set("vigie_buffer_full", vec![], 0.0);
                    }
                    return true;
                }
                Err(e) => {
                    if waiting_since.is_none() {
                        tracing::warn!(error = %e, "cannot store: withholding acknowledgements until there is room (the broker keeps the messages)");
                        self.metrics.set("vigie_buffer_full", vec![], 1.0);
                        waiting_since = Some(std::time::Instant::now());
                    }
                    if self.shutdown.load(Ordering::Relaxed) {
                        return false;
                    }
                    self.collect_garbage();
                    self.buffer.wait_for_delivery(Duration::from_millis(200));
                }
            }
        }
    }

    /// Advances replay windows and device metrics for durable frames.
    fn account(&mut self, a: &verify::Accepted) {
        let r = &a.record;
        let gap = self.book.accept(&r.tenant, &r.device, r.epoch, r.counter);
        let device = labels(&[("tenant", &r.tenant), ("device", &r.device)]);
        if gap > 0 {
            self.metrics.add(
                "vigie_device_missing_frames_total",
                device.clone(),
                f64::from(gap),
            );
        }
        self.metrics.add("vigie_frames_accepted_total", vec![], 1.0);
        self.metrics.add(
            "vigie_readings_accepted_total",
            labels(&[("tenant", &r.tenant)]),
            f64::from(r.readings),
        );
        self.metrics
            .add("vigie_readings_flagged_total", vec![], f64::from(a.flagged));
        let seen = self
            .metrics
            .get("vigie_device_last_seen_timestamp_seconds", &device)
            .unwrap_or(0.0);
        self.metrics.set(
            "vigie_device_last_seen_timestamp_seconds",
            device.clone(),
            seen.max(f64::from(a.last_time)),
        );
        if let Some(mv) = a.battery_mv {
            self.metrics.set(
                "vigie_device_battery_volts",
                device.clone(),
                mv as f64 / 1000.0,
            );
        }
        if let Some(d) = a.dropped {
            self.metrics
                .set("vigie_device_dropped_readings", device, d as f64);
        }
    }

    /// Snapshots the replay book, then deletes delivered segments: the records they held
    /// are in the database and their counters in the snapshot.
    fn collect_garbage(&mut self) {
        if self.buffer.deletable_segments() == 0 {
            return;
        }
        if let Err(e) =
            crate::fsutil::write_atomic(&self.snapshot_path, &self.book.snapshot(), 0o600)
        {
            tracing::error!(error = %e, "cannot write the replay state; keeping delivered segments");
            return;
        }
        if let Err(e) = self.buffer.delete_delivered() {
            tracing::error!(error = %e, "cannot delete delivered buffer segments");
        }
        self.update_buffer_gauges();
    }

    fn update_buffer_gauges(&self) {
        self.metrics.set(
            "vigie_buffer_bytes",
            vec![],
            self.buffer.used_bytes() as f64,
        );
        self.metrics.set(
            "vigie_buffer_pending_bytes",
            vec![],
            self.buffer.pending_bytes() as f64,
        );
    }

    fn replay_quarantine(&mut self, acks: &mpsc::UnboundedSender<AckToken>) -> ReplaySummary {
        let entries = match self.quarantine.take_all() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the quarantine for replay");
                return ReplaySummary::default();
            }
        };
        let mut messages = Vec::new();
        let mut kept = Vec::new();
        for e in entries {
            match hex::decode(&e.payload) {
                Ok(payload) if !e.topic.starts_with("database:") => {
                    messages.push(Inbound {
                        topic: e.topic.clone(),
                        payload,
                        received_ms: e.received_ms,
                        ack: None,
                    });
                    kept.push(e);
                }
                // Lines the database refused, or an unreadable entry: keep as they were.
                _ => {
                    let _ = self.quarantine.add(&e);
                }
            }
        }
        let Some(summary) = self.commit(messages, acks) else {
            // Interrupted by shutdown before anything was stored: put everything back.
            for e in &kept {
                let _ = self.quarantine.add(e);
            }
            let _ = self.quarantine.sync();
            return ReplaySummary::default();
        };
        tracing::info!(?summary, "quarantine replayed");
        summary
    }
}
