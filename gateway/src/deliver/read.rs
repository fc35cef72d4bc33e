//! Reading the buffer for delivery: the head's batches (records of held tenants left to
//! their own cursor, corrupt stretches quarantined), and the catch-up of held tenants from
//! their own cursors up to the head.

use super::flight::Sent;
use super::{Batch, Chunk, IDLE, Sink, Written, jitter};
use crate::ingest::{corrupt_entry, lock};
use crate::store::buffer::{Entry, Item, Position, Reader};
use bytes::Bytes;
use std::time::{Duration, Instant};
use vigie_core::deliver::retry;
use vigie_core::record::RecordView;

/// How often the loop looks for the answers of writes under way while nothing else
/// happens.
const ANSWER_POLL: Duration = Duration::from_millis(20);

/// A held commune's write from its own cursor, under way.
#[derive(Debug)]
pub(super) struct Catching {
    /// Where its cursor stopped.
    pub cursor: Reader,
    /// The write.
    pub sent: Sent,
}

impl Sink {
    /// Reads a batch from the head.
    pub(super) fn collect(&mut self, stopping: bool) -> Batch {
        let mut batch = Batch::default();
        let mut deadline: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let wait = self.collect_wait(stopping, deadline, now);
            match self.s.reader.next(wait) {
                Ok(Some(Item::Record(e))) => {
                    self.read_errors = 0;
                    batch.end = Some(e.end);
                    if self.add(&mut batch, &e) {
                        deadline.get_or_insert_with(|| now + self.s.cfg.linger);
                    }
                    if batch.lines >= self.s.cfg.max_lines {
                        return batch;
                    }
                }
                Ok(Some(Item::Corrupt(c))) => {
                    batch.end = Some(c.end);
                    tracing::error!(
                        segment = c.start.segment,
                        offset = c.start.offset,
                        bytes = c.bytes.len(),
                        "corrupt buffer record skipped; the records after it are kept"
                    );
                    self.s.metrics.buffer_corrupt_records.inc();
                    self.quarantine_corrupt(&c.bytes);
                }
                Ok(None) if deadline.is_none() => return batch,
                Ok(None) => {}
                Err(e) => {
                    self.read_failed(&e);
                    return batch;
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return batch;
            }
        }
    }

    /// How long the head's read may wait: nothing when stopping, the batch's linger once
    /// it has lines, else until the next held tenant is due (at most [`IDLE`]).
    fn collect_wait(&self, stopping: bool, deadline: Option<Instant>, now: Instant) -> Duration {
        if stopping {
            return Duration::ZERO;
        }
        if let Some(d) = deadline {
            return d.saturating_duration_since(now);
        }
        // Writes under way: their answers are looked for while new records are awaited.
        if !self.flights.is_empty() || !self.catching.is_empty() {
            return ANSWER_POLL;
        }
        let retry = self
            .lanes
            .next_attempt_in(self.s.clock.now_ms())
            .map_or(IDLE, Duration::from_millis);
        retry.min(IDLE)
    }

    /// Adds a record to the batch unless its tenant is held; whether it added lines.
    fn add(&mut self, batch: &mut Batch, e: &Entry) -> bool {
        match RecordView::decode(&e.payload) {
            Ok(r) if self.lanes.is_behind(r.tenant) => false,
            Ok(r) => {
                batch.lines += r.readings as usize;
                // Looked up before inserting: `entry` wants an owned key, an allocation
                // per record.
                if !batch.by_tenant.contains_key(r.tenant) {
                    let chunk = Chunk {
                        lines: String::new(),
                        readings: 0,
                        first: e.start,
                    };
                    batch.by_tenant.insert(r.tenant.to_owned(), chunk);
                }
                let Some(chunk) = batch.by_tenant.get_mut(r.tenant) else {
                    return false;
                };
                chunk.lines.push_str(r.lines);
                chunk.readings += r.readings as usize;
                true
            }
            Err(err) => {
                tracing::error!(error = %err, "buffer record does not parse; quarantined");
                self.quarantine_corrupt(&e.payload);
                false
            }
        }
    }

    /// A failed read of the buffer: logged (at powers of two), then a backed-off pause.
    fn read_failed(&mut self, e: &std::io::Error) {
        self.read_errors += 1;
        if self.read_errors.is_power_of_two() {
            tracing::error!(error = %e, failures = self.read_errors, "buffer read failed; retrying with back-off");
        }
        let cfg = &self.s.cfg;
        let attempt = self.read_errors.min(32) as u32;
        let wait = retry::backoff(attempt, cfg.min_backoff, cfg.max_backoff, jitter());
        self.pause(wait);
    }

    pub(super) fn quarantine_corrupt(&mut self, bytes: &[u8]) {
        let mut q = lock(&self.s.quarantine);
        q.add(&corrupt_entry(self.s.clock.now_ms(), bytes));
        if let Err(e) = q.sync() {
            tracing::error!(error = %e, "cannot write the quarantine");
        }
    }

    /// Held tenants that are due are written from their own cursors up to the head, one
    /// write in flight each; the answers that came are taken.
    pub(super) fn catch_up(&mut self) {
        let Some(head) = self.lanes.head else { return };
        let answered: Vec<String> = (self.catching.iter())
            .filter(|(_, c)| c.sent.answered())
            .map(|(t, _)| t.clone())
            .collect();
        for tenant in answered {
            if let Some(c) = self.catching.remove(&tenant) {
                self.caught(&tenant, c, Some(head));
            }
        }
        for tenant in self.lanes.due(self.s.clock.now_ms()) {
            if self.catching.contains_key(&tenant) {
                continue;
            }
            if let Some(from) = self.lanes.behind.get(&tenant).map(|b| b.from) {
                let cursor = self.s.reader.at(from);
                self.catch_next(&tenant, cursor, head);
            }
        }
    }

    /// Waits for every held commune's write under way and takes the answers, starting no
    /// more.
    pub(super) fn catch_up_wait(&mut self) {
        for (tenant, c) in std::mem::take(&mut self.catching) {
            self.caught(&tenant, c, None);
        }
    }

    /// A held commune's write answered: it goes on up to `head` (if given), rejoins the
    /// head, or is held again.
    fn caught(&mut self, tenant: &str, c: Catching, head: Option<Position>) {
        let Catching { cursor, sent } = c;
        match self.answer(tenant, (&sent.lines, sent.count), None, sent.started) {
            Written::Stored if self.lanes.caught_up_to(tenant, cursor.position()) => {
                self.rejoined(tenant);
            }
            Written::Stored => {
                if let Some(head) = head {
                    self.catch_next(tenant, cursor, head);
                }
            }
            Written::Failed { error, wait } => self.fall_behind(tenant, sent.first, error, wait),
        }
    }

    /// Sends `tenant`'s next lines from `cursor` up to `head`, or lets it rejoin the head
    /// when none are left.
    fn catch_next(&mut self, tenant: &str, mut cursor: Reader, head: Position) {
        match self.read_behind(&mut cursor, tenant, head) {
            Ok(Some((first, lines, count))) => {
                let lines = Bytes::from(lines);
                let started = self.start(tenant, lines.clone());
                let sent = Sent {
                    tenant: tenant.to_string(),
                    first,
                    lines,
                    count,
                    started,
                };
                self.catching
                    .insert(tenant.to_string(), Catching { cursor, sent });
            }
            Ok(None) => {
                if self.lanes.caught_up_to(tenant, head) {
                    self.rejoined(tenant);
                }
            }
            Err(e) => {
                // Its next try scheduled like a refused write's: returning without one
                // left it due at once, a spin (out of descriptors: 364,564 lines in 5 s).
                let from = self.lanes.behind.get(tenant).map_or(head, |b| b.from);
                let wait = self.backoff(tenant, 0);
                self.fall_behind(tenant, from, format!("buffer read failed: {e}"), wait);
            }
        }
    }

    /// The next batch of `tenant`'s lines from `cursor` up to `head`, with the position of
    /// its first record and how many lines; `None` when there are none left.
    fn read_behind(
        &self,
        cursor: &mut Reader,
        tenant: &str,
        head: Position,
    ) -> std::io::Result<Option<(Position, String, usize)>> {
        let (mut lines, mut first, mut count) = (String::new(), None, 0);
        loop {
            match cursor.next_before(head)? {
                Some(Item::Record(e)) => {
                    if let Ok(r) = RecordView::decode(&e.payload)
                        && r.tenant == tenant
                    {
                        first.get_or_insert(e.start);
                        count += r.readings as usize;
                        lines.push_str(r.lines);
                        if count >= self.s.cfg.max_lines {
                            break;
                        }
                    }
                }
                // The head reported it already.
                Some(Item::Corrupt(_)) => {}
                None => break,
            }
        }
        Ok(first.map(|f| (f, lines, count)))
    }
}
