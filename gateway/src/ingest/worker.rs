//! The worker's loop: take what waits, judge it, make it durable, acknowledge it; and the
//! buffer's upkeep around that (free space, delete what is delivered, gauges).

use super::rejoin::{Tail, rejoin};
use super::reserve::Reserve;
use super::{
    BrokerTx, HANDOVER, Inbound, Job, LogBudget, MAX_BATCH, OpenError, RETRY_PAUSE, ReplaySummary,
    ToBroker, Worker, WorkerSetup, corrupt_entry, lock,
};
use crate::clock::HostClock;
use crate::observe::Traffic;
use crate::observe::health::{Health, Store};
use crate::observe::metrics::{Metrics, gauge};
use crate::store::buffer::{Buffer, BufferError, Recovered, Recovery};
use crate::store::quarantine::{self, Origin};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vigie_core::FastMap;
use vigie_core::ack::settle::Settled;
use vigie_core::fleet::Registry;
use vigie_core::judge::batch::{self, Outcome, Plan};
use vigie_core::judge::replay_book::ReplayBook;
use vigie_core::judge::verify::{self, Context};
use vigie_core::record::Record;

/// The registry's size and tenants in the metrics.
pub(super) fn note_registry(metrics: &Metrics, traffic: &Traffic, registry: &Registry) {
    metrics.registry_devices.set(gauge(registry.len() as u64));
    metrics.know_tenants(registry.entries().iter().map(|e| e.tenant.as_str()));
    traffic.devices.set_roster(registry.entries());
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
    ) -> Result<(Self, crate::store::buffer::Reader), OpenError> {
        let mut setup = setup;
        let (buffer, book) = recover(&mut setup, &metrics)?;
        note_registry(&metrics, &setup.traffic, &setup.registry);
        let reader = buffer.reader();
        let reserve = Reserve {
            path: setup.snapshot_path.with_file_name("reserve"),
        };
        reserve.restore(book.snapshot().len());
        let host_clock = HostClock::new(
            setup.host_clock,
            health.clone(),
            metrics.host_clock_synchronised.clone(),
        );
        let worker = Self {
            registry: setup.registry,
            book,
            buffer,
            quarantine: setup.quarantine,
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
            host_clock,
            clock: setup.clock,
            traffic: setup.traffic,
            tenant_readings: FastMap::default(),
            spare: Default::default(),
            group: setup.group,
        };
        worker.update_buffer_gauges();
        Ok((worker, reader))
    }

    /// Runs until the job channel closes or shutdown interrupts a commit.
    pub fn run(mut self, mut jobs: mpsc::Receiver<Job>, acks: BrokerTx) {
        while let Some(first) = jobs.blocking_recv() {
            let room = (jobs.len() + 1) * HANDOVER;
            let mut messages = Vec::with_capacity(room.min(MAX_BATCH + HANDOVER));
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Messages(batch) => messages.extend(batch),
                    Job::Registry(r, max_age) => {
                        tracing::info!(devices = r.len(), "registry reloaded");
                        if let Some(max_age) = max_age {
                            self.rules.max_age_s = max_age.as_secs();
                        }
                        note_registry(&self.metrics, &self.traffic, &r);
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
            self.traffic.devices.save_if_due();
        }
        self.collect_garbage();
        self.traffic.devices.save();
    }

    /// Judges, stores and acknowledges a batch. `None` if shutdown interrupted it (nothing
    /// of it was acknowledged).
    pub(super) fn commit(
        &mut self,
        messages: Vec<Inbound>,
        acks: &BrokerTx,
    ) -> Option<ReplaySummary> {
        if messages.is_empty() {
            return Some(ReplaySummary::default());
        }
        if self.group.is_some() {
            return self.commit_in_group(&messages, acks);
        }
        let mut plan = self.judge(&messages);
        let mut summary = ReplaySummary {
            replayed: messages.len(),
            ..ReplaySummary::default()
        };
        for (m, outcome) in messages.iter().zip(plan.outcomes.iter_mut()) {
            self.hold_without_room(m, outcome);
            self.note(m, outcome, &mut summary);
        }
        self.metrics.messages_received.inc_by(messages.len() as u64);
        summary.accepted = self.make_durable(&messages, &plan, acks)?;
        plan.recycle(&mut self.spare);
        self.report_store(Store::Ok);
        self.update_buffer_gauges();
        Some(summary)
    }

    /// The batch's verdicts against the book (in a group, just refreshed from its store).
    pub(super) fn judge(&mut self, messages: &[Inbound]) -> Plan {
        let cx = Context {
            registry: &self.registry,
            counters: &self.book,
            rules: &self.rules,
            strings: self.strings,
            now_s: self.clock.now_ms() / 1000,
            clock_synced: self.host_clock.synchronised(),
        };
        let messages = messages.iter().map(|m| (m.topic(), m.payload()));
        batch::judge_with(messages, &cx, &mut self.spare)
    }

    /// A refusal that settles the frame is acknowledged, so its quarantine entry is the
    /// frame's only copy and is never evicted: past that room's bound (the device's share,
    /// or all of it) the frame is held instead, and its device keeps it.
    pub(super) fn hold_without_room(&self, m: &Inbound, outcome: &mut Outcome) {
        if let Outcome::Reject(reason) = *outcome
            && reason.settles()
            && !self
                .quarantine
                .admits_kept(m.topic(), quarantine::entry_bytes(m.topic(), m.payload()))
        {
            *outcome = Outcome::Hold(reason);
        }
    }

    /// Makes the batch durable and acknowledges it in order, a prefix at a time: the whole
    /// batch at once, or, while storing fails, halves of what is left, so that whatever
    /// room returns is used at once. The frames stored; `None` on shutdown.
    fn make_durable(
        &mut self,
        messages: &[Inbound],
        plan: &Plan,
        acks: &BrokerTx,
    ) -> Option<usize> {
        let (mut done, mut step, mut appended, mut stored) = (0, messages.len(), false, 0);
        while done < messages.len() {
            let end = (done + step).min(messages.len());
            let accepted: Vec<&verify::Accepted> = plan.outcomes[done..end]
                .iter()
                .filter_map(|o| match o {
                    Outcome::Store(i) => Some(&plan.accepted[*i]),
                    _ => None,
                })
                .collect();
            let encoded = Encoded::of(accepted.iter().map(|a| &a.record));
            if self.store(&encoded.payloads(), &mut appended).is_ok() {
                appended = false;
                let gaps = batch::apply(&mut self.book, accepted.iter().copied());
                self.account(&accepted, gaps, self.clock.now_ms());
                stored += accepted.len();
                self.acknowledge(&messages[done..end], plan, done, acks);
                done = end;
                continue;
            }
            if self.stopping.is_cancelled() {
                return None;
            }
            // A chunk already in the buffer (the quarantine failed) is retried as it is,
            // never split and appended again.
            if step > 1 && !appended {
                step = step.div_ceil(2);
            } else {
                self.free_space();
                self.buffer.wait_for_delivery(RETRY_PAUSE);
            }
        }
        Some(stored)
    }

    /// The broker's acknowledgements of `chunk` (messages `first..` of the plan), in
    /// order, and one sealed acknowledgement per device whose frames it settled.
    pub(super) fn acknowledge(
        &self,
        chunk: &[Inbound],
        plan: &Plan,
        first: usize,
        acks: &BrokerTx,
    ) {
        // The MQTT task may be gone at shutdown; the broker then redelivers, and devices
        // resend what no acknowledgement covered.
        let tokens: Vec<_> = chunk.iter().filter_map(|m| m.ack).collect();
        if !tokens.is_empty() {
            let _ = acks.send(ToBroker::Acks(tokens));
        }
        let mut settled = Settled::default();
        for (i, m) in chunk.iter().enumerate() {
            settled.note(plan, first + i, m.topic(), m.payload());
        }
        self.acknowledge_devices(&settled, acks);
    }

    /// One attempt to append `payloads` (unless `appended` says a previous attempt did)
    /// and to make the queued quarantine entries durable. Reports the store's state either
    /// way. A failed append leaves nothing in the buffer.
    pub(super) fn store<P: AsRef<[u8]>>(
        &mut self,
        payloads: &[P],
        appended: &mut bool,
    ) -> Result<(), ()> {
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
            Err(e) => store_problem(e),
        };
        self.report_store(store);
        result.map(drop).map_err(drop)
    }

    /// Stores `payloads` whole, waiting while storing fails. False on shutdown.
    pub(super) fn store_all<P: AsRef<[u8]>>(&mut self, payloads: &[P]) -> bool {
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
    pub(super) fn free_space(&mut self) {
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
    pub(super) fn report_store(&self, store: Store) {
        let (full, failing, group) = match &store {
            Store::Ok => (0, 0, 0),
            Store::Full { .. } => (1, 0, 0),
            Store::DiskFull { .. } | Store::Failing { .. } => (0, 1, 0),
            Store::Group { .. } => (0, 0, 1),
        };
        let problem = store.problem();
        let previous = self.health.set_store(store.clone());
        if std::mem::discriminant(&previous) == std::mem::discriminant(&store) {
            return;
        }
        self.metrics.buffer_full.set(full);
        self.metrics.store_failing.set(failing);
        self.metrics.group_unreachable.set(group);
        match problem {
            None => tracing::info!("storage writable again; acknowledgements resume"),
            Some(p) => tracing::warn!("cannot store: {p}; the broker keeps the messages"),
        }
    }
    /// Snapshots the replay book, then deletes delivered segments: the records they held
    /// are in the database and their counters in the snapshot. On a disk with neither room
    /// for the snapshot nor a space reserve left to release (spent on a segment roll, or
    /// not remade for lack of room), the delivered segments go first and the snapshot is
    /// written into their room: a crash in between forgets the counters of frames already
    /// stored (one resent would be written again, onto its own point), where keeping them
    /// kept the disk full, and every acknowledgement withheld, for good.
    fn collect_garbage(&mut self) {
        if self.buffer.deletable_segments() == 0 {
            return;
        }
        let snapshot = self.book.snapshot();
        let mut written = self.write_snapshot(&snapshot);
        let mut deleted = Ok(0);
        if written.as_ref().is_err_and(crate::store::fs::is_no_space) {
            tracing::warn!(
                "disk full and no space reserve left: delivered buffer segments are deleted before the replay state is written into their room"
            );
            deleted = self.buffer.delete_delivered();
            written = self.write_snapshot(&snapshot);
        }
        match written {
            Err(e) => {
                if !self.snapshot_failing && deleted.as_ref().is_ok_and(|&n| n > 0) {
                    tracing::error!(error = %e, "cannot write the replay state, even with delivered segments deleted: a restart now would forget the replay counters of frames they held");
                } else if !self.snapshot_failing {
                    tracing::error!(error = %e, "cannot write the replay state; keeping delivered segments until it works");
                }
                self.snapshot_failing = true;
            }
            Ok(()) => {
                self.snapshot_failing = false;
                if deleted.is_ok() {
                    deleted = self.buffer.delete_delivered();
                }
                self.reserve.restore(snapshot.len());
            }
        }
        if let Err(e) = deleted {
            tracing::error!(error = %e, "cannot delete delivered buffer segments");
        }
        self.update_buffer_gauges();
    }

    /// Writes the replay-state snapshot, releasing the space reserve for it on a full
    /// disk.
    fn write_snapshot(&self, snapshot: &[u8]) -> std::io::Result<()> {
        let write = || crate::store::fs::write_atomic(&self.snapshot_path, snapshot, 0o600);
        match write() {
            Err(e) if crate::store::fs::is_no_space(&e) && self.reserve.release() => {
                tracing::warn!(
                    "disk full: the space reserve is released so delivered segments can be deleted"
                );
                write()
            }
            other => other,
        }
    }
    pub(super) fn update_buffer_gauges(&self) {
        self.metrics
            .buffer_bytes
            .set(gauge(self.buffer.used_bytes()));
        self.metrics
            .buffer_pending_bytes
            .set(gauge(self.buffer.pending_bytes()));
    }
}

/// The store's state after a failed append.
pub(super) fn store_problem(e: &BufferError) -> Store {
    match e {
        BufferError::Full { used, max } => Store::Full {
            used: *used,
            max: *max,
        },
        e if e.is_no_space() => Store::DiskFull {
            error: e.to_string(),
        },
        e => Store::Failing {
            error: e.to_string(),
        },
    }
}

/// A commit's records as the buffer stores them, in one allocation (one per record was a
/// fifth of the hot path's allocations; docs/PERFORMANCE.md).
pub(super) struct Encoded {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Encoded {
    pub(super) fn of<'a>(records: impl ExactSizeIterator<Item = &'a Record> + Clone) -> Self {
        // A record's head (ids, counters, tag) is at most 90 bytes: room for all at once.
        let room = records.clone().map(|r| r.lines.len() + 90).sum();
        let mut out = Self {
            bytes: Vec::with_capacity(room),
            ends: Vec::with_capacity(records.len()),
        };
        for record in records {
            record.encode(&mut out.bytes);
            out.ends.push(out.bytes.len());
        }
        out
    }

    /// Each record's bytes.
    pub(super) fn payloads(&self) -> Vec<&[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(a, &b)| &self.bytes[a..b])
            .collect()
    }
}

/// A record as the buffer stores it.
pub(super) fn encode(record: &Record) -> Vec<u8> {
    let mut payload = Vec::with_capacity(record.lines.len() + 56);
    record.encode(&mut payload);
    payload
}

/// The buffer of `setup`, and the replay book rebuilt from the snapshot and every record
/// still in it; corrupt records go to their quarantine.
fn recover(setup: &mut WorkerSetup, metrics: &Metrics) -> Result<(Buffer, ReplayBook), OpenError> {
    let mut book = match std::fs::read(&setup.snapshot_path) {
        Ok(bytes) => ReplayBook::from_snapshot(&bytes).unwrap_or_else(|e| {
            tracing::error!(error = %e, "replay state unreadable; starting empty (old frames may be stored again, harmlessly, as identical points)");
            ReplayBook::default()
        }),
        Err(_) => ReplayBook::default(),
    };
    let quarantine = &mut setup.quarantine;
    let mut refused = lock(&setup.db_quarantine);
    let now = setup.clock.now_ms();
    let grouped = setup.group.is_some();
    let mut tail = Tail::default();
    let (mut buffer, recovery) = Buffer::open(
        setup.fs.clone(),
        &setup.buffer_dir,
        setup.segment_bytes,
        setup.max_bytes,
        |item| match item {
            Recovered::Record(payload) => {
                if let Ok(r) = Record::decode(payload)
                    && !r.device.is_empty()
                {
                    book.accept(&r);
                    if grouped {
                        tail.note(&r);
                    }
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
    quarantine.sync().map_err(BufferError::Io)?;
    refused.sync().map_err(BufferError::Io)?;
    drop(refused);
    log_recovery(&recovery, metrics);
    if let Some(store) = setup.group.as_mut()
        && rejoin(store, &tail, &setup.buffer_dir)? > 0
    {
        // Rewritten segments: open again (what recovery found is counted already).
        drop(buffer);
        let fs = setup.fs.clone();
        let (dir, segment, max) = (&setup.buffer_dir, setup.segment_bytes, setup.max_bytes);
        buffer = Buffer::open(fs, dir, segment, max, |_| {})?.0;
    }
    Ok((buffer, book))
}

/// One log line and the recovery metrics.
fn log_recovery(recovery: &Recovery, metrics: &Metrics) {
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
}

#[cfg(test)]
mod tests {
    use super::{Encoded, encode};
    use vigie_core::record::Record;

    fn record(device: &str, counter: u32, lines: &str) -> Record {
        Record {
            tenant: "lyon".into(),
            device: device.into(),
            epoch: 1,
            counter,
            readings: lines.lines().count() as u32,
            tag: Some([counter as u8; 8]),
            lines: lines.into(),
        }
    }

    #[test]
    fn a_commits_records_encoded_together_are_each_record_as_the_buffer_stores_it() {
        let records = [
            record("aq-1", 7, "m v=1 1\n"),
            record("aq-longer-id-0002", 8, "m v=2 2\nm v=3 3\n"),
            record("aq-1", 9, "m v=4 4\n"),
        ];
        let encoded = Encoded::of(records.iter());
        let each: Vec<Vec<u8>> = records.iter().map(encode).collect();
        assert_eq!(
            encoded.payloads(),
            each.iter().map(Vec::as_slice).collect::<Vec<_>>()
        );
        assert!(Encoded::of([].iter()).payloads().is_empty());
    }
}
