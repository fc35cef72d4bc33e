//! The ingest worker: one thread that owns the registry, the replay book, the durable
//! buffer and the quarantine. It takes every message waiting (up to a batch), judges the
//! batch with the pure core ([`vigie_core::judge::batch`]: each message gets the verdict it
//! would get alone), appends the accepted records and quarantines the rejected ones,
//! fsyncs (group commit), only then advances the replay windows, and hands back the
//! broker acknowledgements in arrival order and one sealed acknowledgement per device
//! whose frames the commit settled (SPEC §12).
//!
//! When the buffer is full or the disk fails, it keeps the batch and waits: no ack leaves,
//! so the broker holds the traffic (backpressure); health (`/readyz`), a metric and one
//! log line per change of state say why, and it resumes by itself when writes succeed
//! again. Shutdown interrupts the wait (nothing of that batch is acknowledged).

pub mod clock;

use crate::fleet::registry::Registry;
use crate::ingest::clock::HostClock;
use crate::observe::devices::Stored;
use crate::observe::health::{Health, Store};
use crate::observe::metrics::{Metrics, ReasonLabel, TenantLabel, gauge};
use crate::store::buffer::{Buffer, BufferError, Recovered};
use crate::store::fs::SharedFs;
use crate::store::quarantine::{self, Origin, Quarantine};
use crate::web::feed::{self, Verdict};
use prometheus_client::metrics::counter::Counter;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use vigie_core::FastMap;
use vigie_core::ack::settle::Settled;
use vigie_core::condition::missing::Gap;
use vigie_core::judge::batch::{self, Outcome};
use vigie_core::judge::reason::Reason;
use vigie_core::judge::replay_book::ReplayBook;
use vigie_core::judge::validate::TimeRules;
use vigie_core::judge::verify::{self, Context};
use vigie_core::output::lineproto::StringFields;
use vigie_core::record::Record;

/// Most messages judged and committed together.
const MAX_BATCH: usize = 2048;
/// How often a failing store is tried again when nothing else wakes the worker (space
/// freed by an operator has no event).
const RETRY_PAUSE: Duration = Duration::from_millis(500);

pub use vigie_core::ack::flow::AckToken;

/// What the worker hands the MQTT task once a commit is durable.
#[derive(Debug)]
pub enum ToBroker {
    /// Acknowledge this message to the broker.
    Ack(AckToken),
    /// Publish a device's acknowledgement, retained, on its ack topic.
    Downlink {
        /// `vigie/v1/<tenant>/<device>/ack`.
        topic: String,
        /// The sealed acknowledgement.
        payload: Vec<u8>,
    },
}

/// The channel to the MQTT task.
pub type BrokerTx = mpsc::UnboundedSender<ToBroker>;

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
    /// Re-submitted from the quarantine, where it was for this reason: held again, it
    /// goes back there (its device forgot it when an earlier version acknowledged it),
    /// and so does a reused counter now judged a duplicate (its tag no longer kept: the
    /// evidence stays).
    pub quarantined_as: Option<String>,
}

impl Inbound {
    /// What it holds in memory, about (its topic and payload).
    pub fn bytes(&self) -> usize {
        self.topic.len() + self.payload.len()
    }
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
    /// Held: storable later, not now (a time outside the window); back in quarantine.
    pub held: usize,
    /// Lines a database had refused, queued for writing again.
    pub database_lines: usize,
}

/// Work for the ingest worker.
#[derive(Debug)]
pub enum Job {
    /// A message to judge.
    Message(Inbound),
    /// Re-submit every quarantined frame and refused line through the pipeline.
    ReplayQuarantine(oneshot::Sender<ReplaySummary>),
    /// Swap in a reloaded registry, and the age bound its databases' retention allows
    /// (when asked).
    Registry(Box<Registry>, Option<Duration>),
}

/// The registry's size and tenants in the metrics.
fn note_registry(metrics: &Metrics, registry: &Registry) {
    metrics.registry_devices.set(gauge(registry.len() as u64));
    metrics.know_tenants(registry.entries().iter().map(|e| e.tenant.as_str()));
    metrics.devices.set_roster(registry.entries());
}

/// The quarantine of lines the databases refused: the sink adds, the worker replays.
pub type SharedQuarantine = Arc<Mutex<Quarantine>>;

/// Smallest reserve kept beside the replay state.
const RESERVE_MIN: u64 = 1 << 20;

/// Space set aside in `data_dir` for the replay-state snapshot. Delivered segments may
/// only be deleted after the snapshot is written; on a full disk that write fails, and
/// without a reserve nothing could ever be freed, even once the database has everything.
/// So the worker keeps a file of zeros (at least 1 MiB, twice the snapshot), releases it
/// when the snapshot does not fit, and remakes it after the segments are gone.
#[derive(Debug)]
struct Reserve {
    path: PathBuf,
}

impl Reserve {
    /// Releases the reserve; true if there was one.
    fn release(&self) -> bool {
        std::fs::remove_file(&self.path).is_ok()
    }

    /// Makes sure the reserve holds room for a snapshot of `snapshot` bytes (real
    /// blocks: zeros written and fsynced, not a sparse file). Best effort.
    fn restore(&self, snapshot: usize) {
        let want = RESERVE_MIN.max(2 * snapshot as u64);
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= want) {
            return;
        }
        let zeros = vec![0u8; want as usize];
        if let Err(e) = crate::store::fs::write_atomic(&self.path, &zeros, 0o600) {
            tracing::debug!(error = %e, "cannot make the space reserve now; tried again later");
        }
    }
}

/// The worker's state.
#[derive(Debug)]
pub struct Worker {
    registry: Registry,
    book: ReplayBook,
    buffer: Buffer,
    quarantine: Quarantine,
    db_quarantine: SharedQuarantine,
    snapshot_path: PathBuf,
    rules: TimeRules,
    strings: StringFields,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stopping: CancellationToken,
    reserve: Reserve,
    /// The last snapshot write failed (logged once until it works again).
    snapshot_failing: bool,
    /// Rate limit of the rejected-frame log lines.
    reject_log: LogBudget,
    /// Rate limit of the held-frame log lines.
    hold_log: LogBudget,
    /// Frames refused before their tag verified lately: resent, they are counted, not
    /// quarantined again.
    refused_lately: vigie_core::judge::recent::Recent,
    /// Whether the host clock is synchronised (a stale reading is refused only then).
    clock: HostClock,
    /// Each tenant's `readings_accepted` counter, found once (the family's lookup hashes
    /// an allocated label under a lock, per frame otherwise).
    tenant_readings: FastMap<String, Counter>,
}

/// Log lines for rejected frames: at most [`LogBudget::LINES`] per [`LogBudget::WINDOW_MS`],
/// so a flood of forged frames cannot flood the journal; what is left out is counted and
/// said in one line when the window ends (every rejection is in the metrics and the
/// quarantine anyway). Pure: the time is passed in.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogBudget {
    window_start_ms: u64,
    logged: u32,
    left_out: u64,
}

impl LogBudget {
    /// Lines per window.
    pub const LINES: u32 = 20;
    /// The window.
    pub const WINDOW_MS: u64 = 60_000;

    /// At `now_ms`: whether this rejection gets its line, and how many were left out in the
    /// window that just ended (to say so), if one did.
    pub fn admit(&mut self, now_ms: u64) -> (bool, u64) {
        let mut ended = 0;
        if now_ms.saturating_sub(self.window_start_ms) >= Self::WINDOW_MS {
            ended = std::mem::take(&mut self.left_out);
            self.window_start_ms = now_ms;
            self.logged = 0;
        }
        if self.logged < Self::LINES {
            self.logged += 1;
            (true, ended)
        } else {
            self.left_out += 1;
            (false, ended)
        }
    }
}

/// Everything needed to open the worker.
#[derive(Debug)]
pub struct WorkerSetup {
    /// Filesystem under buffer and quarantine.
    pub fs: SharedFs,
    /// Device registry.
    pub registry: Registry,
    /// Buffer directory.
    pub buffer_dir: PathBuf,
    /// Segment size.
    pub segment_bytes: u64,
    /// Buffer limit.
    pub max_bytes: u64,
    /// Quarantine of rejected frames.
    pub quarantine: Quarantine,
    /// Quarantine of refused lines (shared with the sink).
    pub db_quarantine: SharedQuarantine,
    /// Replay-state snapshot file.
    pub snapshot_path: PathBuf,
    /// Time rules.
    pub rules: TimeRules,
    /// Where string values go in line protocol.
    pub strings: StringFields,
    /// How the host clock's synchronisation is known.
    pub host_clock: clock::SyncSource,
}

impl Worker {
    /// Opens the buffer and rebuilds the replay book (snapshot, then every record still in
    /// the buffer); corrupt buffer records go to the quarantine. Returns the worker and a
    /// reader for the sink.
    pub fn open(
        setup: WorkerSetup,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        stopping: CancellationToken,
    ) -> Result<(Self, crate::store::buffer::Reader), BufferError> {
        let mut book = match std::fs::read(&setup.snapshot_path) {
            Ok(bytes) => ReplayBook::from_snapshot(&bytes).unwrap_or_else(|e| {
                tracing::error!(error = %e, "replay state unreadable; starting empty (old frames may be stored again, harmlessly, as identical points)");
                ReplayBook::default()
            }),
            Err(_) => ReplayBook::default(),
        };
        let mut quarantine = setup.quarantine;
        let mut refused = lock(&setup.db_quarantine);
        let now = crate::now_ms();
        let (buffer, recovery) = Buffer::open(
            setup.fs,
            &setup.buffer_dir,
            setup.segment_bytes,
            setup.max_bytes,
            |item| match item {
                Recovered::Record(payload) => {
                    if let Ok(r) = Record::decode(payload)
                        && !r.device.is_empty()
                    {
                        book.accept(&r);
                    }
                }
                Recovered::Corrupt(bytes) => {
                    let entry = corrupt_entry(now, bytes);
                    match entry.origin {
                        Origin::Database => refused.add(&entry),
                        _ => quarantine.add(&entry),
                    }
                }
            },
        )?;
        quarantine.sync()?;
        refused.sync()?;
        drop(refused);
        if recovery.records > 0 || recovery.cut_bytes > 0 || recovery.corrupt_records > 0 {
            tracing::info!(
                records = recovery.records,
                bytes = recovery.bytes,
                torn_tails = recovery.torn_tails,
                cut_bytes = recovery.cut_bytes,
                corrupt_records = recovery.corrupt_records,
                "buffer recovered"
            );
        }
        metrics
            .buffer_recovered_records
            .set(gauge(recovery.records));
        metrics.buffer_torn_tails.inc_by(recovery.torn_tails);
        metrics
            .buffer_corrupt_records
            .inc_by(recovery.corrupt_records);
        note_registry(&metrics, &setup.registry);
        let reader = buffer.reader();
        let reserve = Reserve {
            path: setup.snapshot_path.with_file_name("reserve"),
        };
        reserve.restore(book.snapshot().len());
        let clock = HostClock::new(
            setup.host_clock,
            health.clone(),
            metrics.host_clock_synchronised.clone(),
        );
        let worker = Self {
            registry: setup.registry,
            book,
            buffer,
            quarantine,
            db_quarantine: setup.db_quarantine,
            snapshot_path: setup.snapshot_path,
            rules: setup.rules,
            strings: setup.strings,
            metrics,
            health,
            stopping,
            reserve,
            snapshot_failing: false,
            reject_log: LogBudget::default(),
            hold_log: LogBudget::default(),
            refused_lately: Default::default(),
            clock,
            tenant_readings: FastMap::default(),
        };
        worker.update_buffer_gauges();
        Ok((worker, reader))
    }

    /// Runs until the job channel closes or shutdown interrupts a commit.
    pub fn run(mut self, mut jobs: mpsc::Receiver<Job>, acks: BrokerTx) {
        while let Some(first) = jobs.blocking_recv() {
            let mut messages = Vec::with_capacity(jobs.len().min(MAX_BATCH) + 1);
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Message(m) => messages.push(m),
                    Job::Registry(r, max_age) => {
                        tracing::info!(devices = r.len(), "registry reloaded");
                        if let Some(max_age) = max_age {
                            self.rules.max_age_s = max_age.as_secs();
                        }
                        note_registry(&self.metrics, &r);
                        self.registry = *r;
                    }
                    Job::ReplayQuarantine(reply) => {
                        // Commit what came before, then replay on its own.
                        if self.commit(std::mem::take(&mut messages), &acks).is_none() {
                            return;
                        }
                        let summary = self.replay_quarantine(&acks);
                        let _ = reply.send(summary);
                    }
                }
                if messages.len() < MAX_BATCH {
                    next = jobs.try_recv().ok();
                }
            }
            let bytes: usize = messages.iter().map(Inbound::bytes).sum();
            let done = self.commit(messages, &acks);
            // Out of memory once committed (the shell counted them in).
            self.metrics.intake_bytes.dec_by(bytes as i64);
            if done.is_none() {
                break;
            }
            self.collect_garbage();
            self.metrics.devices.save_if_due();
        }
        self.collect_garbage();
        self.metrics.devices.save();
    }

    /// Judges, stores and acknowledges a batch. `None` if shutdown interrupted it (nothing
    /// of it was acknowledged).
    fn commit(&mut self, messages: Vec<Inbound>, acks: &BrokerTx) -> Option<ReplaySummary> {
        if messages.is_empty() {
            return Some(ReplaySummary::default());
        }
        let cx = Context {
            registry: &self.registry,
            counters: &self.book,
            rules: &self.rules,
            strings: self.strings,
            now_s: crate::now_ms() / 1000,
            clock_synced: self.clock.synchronised(),
        };
        let mut plan = batch::judge(
            messages
                .iter()
                .map(|m| (m.topic.as_str(), m.payload.as_slice())),
            &cx,
        );
        let mut summary = ReplaySummary {
            replayed: messages.len(),
            ..ReplaySummary::default()
        };
        for (m, outcome) in messages.iter().zip(plan.outcomes.iter_mut()) {
            // A refusal after the tag verified is acknowledged, so its quarantine entry is
            // the frame's only copy and is never evicted: past that room's bound (the
            // device's share, or all of it) the frame is held instead, and its device
            // keeps it.
            if let Outcome::Reject(reason) = *outcome
                && reason.after_authentication()
                && !self
                    .quarantine
                    .admits_kept(&m.topic, quarantine::entry_bytes(&m.topic, &m.payload))
            {
                *outcome = Outcome::Hold(reason);
            }
            match &*outcome {
                Outcome::Store(_) => {}
                Outcome::Duplicate
                    if m.quarantined_as.as_deref() == Some(Reason::CounterReused.code()) =>
                {
                    // Its counter's tag is no longer kept: not proof that it is the
                    // stored frame. Kept as it was.
                    summary.rejected += 1;
                    self.quarantine.add(&quarantine::Entry::rejected(
                        m.received_ms,
                        &m.topic,
                        &m.payload,
                        &Reason::CounterReused,
                    ));
                }
                Outcome::Duplicate => {
                    summary.duplicates += 1;
                    self.metrics.frames_duplicate.inc();
                    self.to_feed(m, Verdict::Duplicate, None);
                }
                Outcome::Reject(reason) => {
                    summary.rejected += 1;
                    self.log_rejection(&m.topic, reason, m.received_ms);
                    self.metrics
                        .frames_rejected
                        .get_or_create(&ReasonLabel {
                            reason: reason.code(),
                        })
                        .inc();
                    self.to_feed(m, Verdict::Rejected, Some(reason.code()));
                    // Counted on the device only if the topic names a registered one:
                    // anyone may publish on any name, and the state must stay bounded.
                    if let Ok(t) = protocol::topic::Topic::parse(&m.topic)
                        && let (tenant, device) = (t.who.tenant.as_str(), t.who.device.as_str())
                        && let Some(dev) = self.registry.get(tenant, device)
                    {
                        // A frame whose tag verified arrived: its counter is not missing.
                        let arrived = reason
                            .after_authentication()
                            .then(|| protocol::peek(&m.payload).ok())
                            .flatten()
                            .filter(|_| *reason != Reason::CounterReused);
                        let highest = self.book.highest(tenant, device, dev.key.epoch());
                        self.metrics.devices.update(|b| {
                            b.rejected(tenant, device, reason.code(), m.received_ms);
                            if let Some(h) = arrived {
                                b.refused(tenant, device, h.counter, highest);
                            }
                        });
                    }
                    // Never acknowledged, so resent as it is: once in the quarantine.
                    if reason.after_authentication()
                        || self.refused_lately.first_time(&m.topic, &m.payload)
                    {
                        self.quarantine.add(&quarantine::Entry::rejected(
                            m.received_ms,
                            &m.topic,
                            &m.payload,
                            reason,
                        ));
                    }
                }
                Outcome::Hold(reason) => {
                    summary.held += 1;
                    self.hold(m, *reason);
                }
                Outcome::Status {
                    tenant,
                    device,
                    online,
                } => {
                    self.metrics.devices.update(|b| {
                        b.status(tenant, device, *online, m.received_ms);
                    });
                    let verdict = if *online {
                        Verdict::Online
                    } else {
                        Verdict::Offline
                    };
                    self.to_feed(m, verdict, None);
                }
            }
        }
        self.metrics.messages_received.inc_by(messages.len() as u64);
        // Make the batch durable and acknowledge it in order, a prefix at a time: the
        // whole batch at once, or, while storing fails, halves of what is left, so that
        // whatever room returns is used at once.
        let (mut done, mut step, mut appended) = (0, messages.len(), false);
        while done < messages.len() {
            let end = (done + step).min(messages.len());
            let accepted: Vec<&verify::Accepted> = plan.outcomes[done..end]
                .iter()
                .filter_map(|o| match o {
                    Outcome::Store(i) => Some(&plan.accepted[*i]),
                    _ => None,
                })
                .collect();
            let payloads: Vec<Vec<u8>> = accepted
                .iter()
                .map(|a| {
                    let mut payload = Vec::with_capacity(a.record.lines.len() + 56);
                    a.record.encode(&mut payload);
                    payload
                })
                .collect();
            match self.store(&payloads, &mut appended) {
                Ok(()) => {
                    appended = false;
                    let gaps = batch::apply(&mut self.book, accepted.iter().copied());
                    self.account(&accepted, gaps, crate::now_ms());
                    summary.accepted += accepted.len();
                    // The MQTT task may be gone at shutdown; the broker then redelivers,
                    // and devices resend what no acknowledgement covered.
                    for token in messages[done..end].iter().filter_map(|m| m.ack) {
                        let _ = acks.send(ToBroker::Ack(token));
                    }
                    let mut settled = Settled::default();
                    for (i, m) in messages.iter().enumerate().take(end).skip(done) {
                        settled.note(&plan, i, &m.topic, &m.payload);
                    }
                    self.acknowledge_devices(&settled, acks);
                    done = end;
                }
                Err(()) => {
                    if self.stopping.is_cancelled() {
                        return None;
                    }
                    // A chunk already in the buffer (the quarantine failed) is retried as
                    // it is, never split and appended again.
                    if step > 1 && !appended {
                        step = step.div_ceil(2);
                    } else {
                        self.free_space();
                        self.buffer.wait_for_delivery(RETRY_PAUSE);
                    }
                }
            }
        }
        self.report_store(Store::Ok);
        self.update_buffer_gauges();
        Some(summary)
    }

    /// A frame storable later, not now (SPEC §13.3), or refused when the quarantine has
    /// no room for its entry: counted, logged (rate-limited) and shown on its device; no
    /// acknowledgement, so the device keeps it and resends it.
    /// One re-submitted from the quarantine goes back there: its device forgot it.
    fn hold(&mut self, m: &Inbound, reason: Reason) {
        self.metrics
            .frames_held
            .get_or_create(&ReasonLabel {
                reason: reason.code(),
            })
            .inc();
        self.to_feed(m, Verdict::Held, Some(reason.code()));
        if let Ok(t) = protocol::topic::Topic::parse(&m.topic) {
            let (tenant, device) = (t.who.tenant.as_str(), t.who.device.as_str());
            self.metrics
                .devices
                .update(|b| b.held(tenant, device, reason.code(), m.received_ms));
            let (log, left_out) = self.hold_log.admit(m.received_ms);
            if left_out > 0 {
                tracing::warn!(
                    left_out,
                    "more frames were held in the last minute than logged; all are counted in \
                     vigie_frames_held_total"
                );
            }
            if log && matches!(reason, Reason::FutureTimestamp | Reason::StaleTimestamp) {
                tracing::warn!(
                    tenant,
                    device,
                    reason = reason.code(),
                    clock_synchronised = self.clock.synchronised(),
                    "frame held, not acknowledged: its time is outside the window; the device \
                     keeps it and resends it"
                );
            } else if log {
                tracing::warn!(
                    tenant,
                    device,
                    reason = reason.code(),
                    "frame held, not acknowledged: refused, but the quarantine has no room left \
                     for this device's refused frames (`quarantine list`, then `quarantine \
                     replay` or `erase`); the device keeps it and resends it"
                );
            }
        }
        if m.quarantined_as.is_some() {
            self.quarantine.add(&quarantine::Entry::rejected(
                m.received_ms,
                &m.topic,
                &m.payload,
                &reason,
            ));
        }
    }

    /// One warning line per rejected frame, with tenant, device and reason (rate-limited).
    fn log_rejection(&mut self, topic: &str, reason: &Reason, received_ms: u64) {
        let (log, left_out) = self.reject_log.admit(received_ms);
        if left_out > 0 {
            tracing::warn!(
                left_out,
                "more frames were rejected in the last minute than logged; all are counted in \
                 vigie_frames_rejected_total and kept in the quarantine (`quarantine list`)"
            );
        }
        if !log {
            return;
        }
        // The topic comes from whoever published: named by its identifiers when they are
        // valid, else quoted (escaped) as it came.
        match protocol::topic::Topic::parse(topic) {
            Ok(t) => tracing::warn!(
                tenant = t.who.tenant.as_str(),
                device = t.who.device.as_str(),
                reason = reason.code(),
                detail = %reason.detail(),
                "frame rejected"
            ),
            Err(_) => tracing::warn!(
                topic = ?topic,
                reason = reason.code(),
                detail = %reason.detail(),
                "frame rejected"
            ),
        }
    }

    /// Seals and hands over one acknowledgement per device the commit settled frames of.
    fn acknowledge_devices(&self, settled: &Settled, to_broker: &BrokerTx) {
        let acks = settled.acks(&self.book, &self.registry);
        // Fresh ids for all of them in one system call.
        let mut ids = vec![0u8; 8 * acks.len()];
        if let Err(e) = getrandom::fill(&mut ids) {
            // Without a fresh id the nonce could repeat: send nothing, the devices resend.
            tracing::error!(error = %e, "no system randomness for an acknowledgement id");
            return;
        }
        let ids = ids
            .chunks_exact(8)
            .filter_map(|id| <[u8; 8]>::try_from(id).ok());
        for ((tenant, device, ack), id) in acks.into_iter().zip(ids) {
            let (Some(dev), Ok(who)) = (
                self.registry.get(&tenant, &device),
                protocol::Identity::new(&tenant, &device),
            ) else {
                continue;
            };
            let _ = to_broker.send(ToBroker::Downlink {
                topic: protocol::topic::ack(who).to_string(),
                payload: ack.seal(id, &dev.key, who).to_vec(),
            });
        }
    }

    /// One attempt to append `payloads` (unless `appended` says a previous attempt did)
    /// and to make the queued quarantine entries durable. Reports the store's state either
    /// way. A failed append leaves nothing in the buffer.
    fn store(&mut self, payloads: &[Vec<u8>], appended: &mut bool) -> Result<(), ()> {
        let result = if *appended || payloads.is_empty() {
            Ok(())
        } else {
            self.buffer.append(payloads).map(|_| *appended = true)
        }
        .and_then(|()| self.quarantine.sync().map_err(BufferError::Io));
        let store = match &result {
            Ok(evicted) => {
                self.metrics.quarantine_evicted.inc_by(*evicted);
                if *evicted > 0 {
                    // Once per half of quarantine.max_mib filled: no flood.
                    tracing::warn!(
                        evicted,
                        "quarantine full: its oldest entries of unacknowledged frames (forged, \
                         unknown or revoked devices: their senders still hold them) were \
                         evicted; entries of acknowledged frames are never evicted"
                    );
                }
                // Cleared by the caller once the whole batch is stored, so a batch that
                // goes through in pieces on a nearly full disk does not flap.
                return Ok(());
            }
            Err(BufferError::Full { used, max }) => Store::Full {
                used: *used,
                max: *max,
            },
            Err(e) if e.is_no_space() => Store::DiskFull {
                error: e.to_string(),
            },
            Err(e) => Store::Failing {
                error: e.to_string(),
            },
        };
        self.report_store(store);
        result.map(drop).map_err(drop)
    }

    /// Stores `payloads` whole, waiting while storing fails. False on shutdown.
    fn store_all(&mut self, payloads: &[Vec<u8>]) -> bool {
        let mut appended = false;
        while self.store(payloads, &mut appended).is_err() {
            if self.stopping.is_cancelled() {
                return false;
            }
            self.free_space();
            self.buffer.wait_for_delivery(RETRY_PAUSE);
        }
        self.report_store(Store::Ok);
        true
    }

    /// While storing fails: delete what is delivered, and if everything is, roll past the
    /// current segment so it can go too (with the reserve released on a full disk).
    fn free_space(&mut self) {
        self.collect_garbage();
        if self.buffer.pending_bytes() > 0 {
            return;
        }
        let mut rolled = self.buffer.roll_if_drained();
        if rolled.as_ref().is_err_and(crate::store::fs::is_no_space) && self.reserve.release() {
            tracing::warn!(
                "disk full: the space reserve is released to start a new buffer segment"
            );
            rolled = self.buffer.roll_if_drained();
        }
        match rolled {
            Ok(true) => self.collect_garbage(),
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "cannot start a new buffer segment yet"),
        }
    }

    /// Health, metric and one log line when the store's state changes.
    fn report_store(&self, store: Store) {
        let (full, failing) = match &store {
            Store::Ok => (0, 0),
            Store::Full { .. } => (1, 0),
            Store::DiskFull { .. } | Store::Failing { .. } => (0, 1),
        };
        let problem = store.problem();
        let previous = self.health.set_store(store.clone());
        if std::mem::discriminant(&previous) == std::mem::discriminant(&store) {
            return;
        }
        self.metrics.buffer_full.set(full);
        self.metrics.store_failing.set(failing);
        match problem {
            None => tracing::info!("storage writable again; acknowledgements resume"),
            Some(p) => tracing::warn!("cannot store: {p}; the broker keeps the messages"),
        }
    }

    /// Metrics, device state and live feed for durable frames (one lock each per commit).
    fn account(&mut self, accepted: &[&verify::Accepted], gaps: Vec<Gap>, now_ms: u64) {
        self.metrics.frames_accepted.inc_by(accepted.len() as u64);
        let flagged = accepted.iter().map(|a| u64::from(a.flagged)).sum();
        self.metrics.readings_flagged.inc_by(flagged);
        for a in accepted {
            let tenant: &str = &a.record.tenant;
            if !self.tenant_readings.contains_key(tenant) {
                let counter = self
                    .metrics
                    .readings_accepted
                    .get_or_create(&TenantLabel::of(tenant))
                    .clone();
                self.tenant_readings.insert(tenant.to_owned(), counter);
            }
            if let Some(counter) = self.tenant_readings.get(tenant) {
                counter.inc_by(u64::from(a.record.readings));
            }
        }
        self.metrics.devices.update(|b| {
            for (a, gap) in accepted.iter().zip(gaps) {
                let r = &a.record;
                let frame = Stored {
                    last_time: a.last_time,
                    readings: r.readings,
                    counter: r.counter,
                    gap,
                    battery_mv: a.battery_mv,
                    dropped: a.dropped,
                };
                b.stored(&r.tenant, &r.device, frame, &a.glance, now_ms);
            }
        });
        self.metrics
            .feed
            .push_all(accepted.iter().map(|a| feed::New {
                at_ms: now_ms,
                tenant: &a.record.tenant,
                device: &a.record.device,
                verdict: Verdict::Stored,
                reason: None,
                counter: Some(a.record.counter),
                readings: Some(a.record.readings),
            }));
    }

    /// Tells the live feed what became of a message whose topic names a device.
    fn to_feed(&self, m: &Inbound, verdict: Verdict, reason: Option<&'static str>) {
        if let Ok(t) = protocol::topic::Topic::parse(&m.topic) {
            self.metrics.feed.push(feed::New {
                at_ms: m.received_ms,
                tenant: t.who.tenant.as_str(),
                device: t.who.device.as_str(),
                verdict,
                reason,
                counter: None,
                readings: None,
            });
        }
    }

    /// Snapshots the replay book, then deletes delivered segments: the records they held
    /// are in the database and their counters in the snapshot.
    fn collect_garbage(&mut self) {
        if self.buffer.deletable_segments() == 0 {
            return;
        }
        let snapshot = self.book.snapshot();
        let mut written = crate::store::fs::write_atomic(&self.snapshot_path, &snapshot, 0o600);
        if written.as_ref().is_err_and(crate::store::fs::is_no_space) && self.reserve.release() {
            tracing::warn!(
                "disk full: the space reserve is released so delivered segments can be deleted"
            );
            written = crate::store::fs::write_atomic(&self.snapshot_path, &snapshot, 0o600);
        }
        if let Err(e) = written {
            if !self.snapshot_failing {
                tracing::error!(error = %e, "cannot write the replay state; keeping delivered segments until it works");
            }
            self.snapshot_failing = true;
            return;
        }
        self.snapshot_failing = false;
        if let Err(e) = self.buffer.delete_delivered() {
            tracing::error!(error = %e, "cannot delete delivered buffer segments");
        }
        self.reserve.restore(snapshot.len());
        self.update_buffer_gauges();
    }

    fn update_buffer_gauges(&self) {
        self.metrics
            .buffer_bytes
            .set(gauge(self.buffer.used_bytes()));
        self.metrics
            .buffer_pending_bytes
            .set(gauge(self.buffer.pending_bytes()));
    }

    /// Re-submits both quarantines. Nothing is removed from a quarantine before what
    /// replaced it (stored records, re-quarantined entries) is durable.
    fn replay_quarantine(&mut self, acks: &BrokerTx) -> ReplaySummary {
        let frames = match self.quarantine.mark() {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the quarantine for replay");
                return ReplaySummary::default();
            }
        };
        let lines = match lock(&self.db_quarantine).mark() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the database quarantine for replay");
                return ReplaySummary::default();
            }
        };
        let mut messages = Vec::new();
        for e in &frames.0 {
            match hex::decode(&e.payload) {
                Ok(payload) if e.origin == Origin::Mqtt => messages.push(Inbound {
                    topic: e.topic.clone(),
                    payload,
                    received_ms: e.received_ms,
                    ack: None,
                    quarantined_as: Some(e.reason.clone()),
                }),
                // Not replayable (damaged buffer bytes): kept as it is.
                _ => self.quarantine.add(e),
            }
        }
        let mut kept = Vec::new();
        let refused: Vec<Vec<u8>> = lines
            .0
            .iter()
            .filter_map(|e| {
                let text = hex::decode(&e.payload)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .filter(|t| !t.is_empty() && e.origin == Origin::Database);
                let Some(text) = text else {
                    kept.push(e.clone());
                    return None;
                };
                let mut payload = Vec::new();
                Record {
                    tenant: e.topic.as_str().into(),
                    device: "".into(),
                    epoch: 0,
                    counter: 0,
                    readings: text.lines().count() as u32,
                    tag: None,
                    lines: text,
                }
                .encode(&mut payload);
                Some(payload)
            })
            .collect();
        let Some(mut summary) = self.commit(messages, acks) else {
            return ReplaySummary::default();
        };
        {
            let mut q = lock(&self.db_quarantine);
            for e in &kept {
                q.add(e);
            }
        }
        if !self.store_all(&refused) {
            return ReplaySummary::default();
        }
        if let Err(e) = lock(&self.db_quarantine).sync() {
            tracing::error!(error = %e, "cannot write the database quarantine; replayed lines stay in it");
            return summary;
        }
        summary.database_lines = refused.len();
        // Durable now: the old entries may go.
        if let Err(e) = self.quarantine.drop_before(frames.1) {
            tracing::error!(error = %e, "replayed entries stay in the quarantine (a second replay finds them as duplicates)");
        }
        if let Err(e) = lock(&self.db_quarantine).drop_before(lines.1) {
            tracing::error!(error = %e, "replayed lines stay in the database quarantine");
        }
        tracing::info!(?summary, "quarantine replayed");
        summary
    }
}

/// Locks a shared quarantine (a panic elsewhere leaves it usable: its state is on disk).
pub fn lock(q: &SharedQuarantine) -> std::sync::MutexGuard<'_, Quarantine> {
    q.lock().unwrap_or_else(|e| e.into_inner())
}

/// A quarantine entry for corrupt buffer bytes. Where the damage spared the record's
/// content (a flipped bit in its checksum or length), the entry holds its lines as a
/// database entry, which a replay writes; otherwise it keeps the raw bytes.
pub fn corrupt_entry(received_ms: u64, bytes: &[u8]) -> quarantine::Entry {
    let reason = Reason::BufferCorrupt;
    let detail = format!("{} bytes of the buffer are not a valid record", bytes.len());
    let record = bytes
        .get(crate::store::buffer::format::HEADER..)
        .and_then(|b| Record::decode(b).ok())
        .filter(|r| !r.lines.is_empty() && r.lines.ends_with('\n'));
    match record {
        Some(r) => quarantine::Entry {
            received_ms,
            origin: Origin::Database,
            topic: r.tenant.to_string(),
            reason: reason.code().into(),
            detail,
            payload: hex::encode(r.lines.as_bytes()),
            // Acknowledged readings: their only copy.
            acknowledged: true,
        },
        None => quarantine::Entry {
            received_ms,
            origin: Origin::Buffer,
            topic: String::new(),
            reason: reason.code().into(),
            detail,
            payload: hex::encode(bytes),
            acknowledged: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::LogBudget;

    #[test]
    fn a_flood_of_rejections_gets_a_bounded_number_of_lines_then_one_summary() {
        let mut b = LogBudget::default();
        let start = LogBudget::WINDOW_MS;
        let logged = (0..1000).filter(|i| b.admit(start + i).0).count() as u32;
        assert_eq!(logged, LogBudget::LINES);
        // The next window: its first line comes with the count of what was left out.
        let next = start + LogBudget::WINDOW_MS;
        assert_eq!(b.admit(next), (true, u64::from(1000 - LogBudget::LINES)));
        assert_eq!(b.admit(next + 1), (true, 0));
    }
}
