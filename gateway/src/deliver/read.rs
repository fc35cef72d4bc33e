//! Reading the buffer for delivery: the head's batches (records of held tenants left to
//! their own cursor, corrupt stretches quarantined), and the catch-up of held tenants from
//! their own cursors up to the head.

use super::{Batch, CATCH_UP_BATCHES, Chunk, Confirm, IDLE, Sink, Text, Written, jitter};
use crate::ingest::{corrupt_entry, lock};
use crate::store::buffer::{Entry, Item, Position, Reader};
use std::time::{Duration, Instant};
use vigie_core::deliver::retry;
use vigie_core::record::RecordView;

impl Sink {
    /// Reads the head's records into `batch` (empty, or what was read ahead) until it
    /// holds `max_lines` lines or its first line has lingered `linger`. `ahead` (while
    /// the batch before is written): only what is durable now, without waiting, so that
    /// the head moves as soon as that write ends.
    pub(super) fn collect(&mut self, batch: Batch, stopping: bool, ahead: bool) -> Batch {
        let batch = self.fill(batch, stopping, ahead);
        for (tenant, chunk) in &batch.by_tenant {
            match self.sizes.get_mut(tenant) {
                Some(size) => *size = chunk.lines.len(),
                None => _ = self.sizes.insert(tenant.clone(), chunk.lines.len()),
            }
        }
        batch
    }

    /// [`Self::collect`]'s reading.
    fn fill(&mut self, mut batch: Batch, stopping: bool, ahead: bool) -> Batch {
        while batch.lines < self.s.cfg.max_lines {
            // One clock reading per record: two were 52 instructions per reading in a
            // drain's profile (docs/PERFORMANCE.md).
            let now = Instant::now();
            let deadline = batch.started.map(|t| t + self.s.cfg.linger);
            if deadline.is_some_and(|d| now >= d) {
                return batch;
            }
            let wait = match ahead {
                true => Duration::ZERO,
                false => self.collect_wait(stopping, deadline, now),
            };
            match self.s.reader.next(wait) {
                Ok(Some(Item::Record(e))) => {
                    self.read_errors = 0;
                    batch.end = Some(e.end);
                    if self.add(&mut batch, &e) {
                        batch.started.get_or_insert(now);
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
                Ok(None) if deadline.is_none() || ahead => return batch,
                Ok(None) => {}
                Err(e) => {
                    self.read_failed(&e);
                    return batch;
                }
            }
        }
        batch
    }

    /// How long the head's read may wait: nothing when stopping, the batch's linger once
    /// it has lines, else until the next held tenant or counter reading is due (at most
    /// [`IDLE`]: waiting it whole past a due reading made the last writes of a drain
    /// count as stored up to a second late).
    fn collect_wait(&self, stopping: bool, deadline: Option<Instant>, now: Instant) -> Duration {
        if stopping {
            return Duration::ZERO;
        }
        if let Some(d) = deadline {
            return d.saturating_duration_since(now);
        }
        let retry = self
            .lanes
            .next_attempt_in(self.s.clock.now_ms())
            .map_or(IDLE, Duration::from_millis);
        let reading = self
            .confirm
            .as_ref()
            .and_then(Confirm::next_due)
            .map_or(IDLE, |t| t.saturating_duration_since(now));
        retry.min(reading).min(IDLE)
    }

    /// Adds a record to the batch unless its tenant is held; whether it added lines.
    fn add(&mut self, batch: &mut Batch, e: &Entry) -> bool {
        match RecordView::decode(&e.payload) {
            Ok(r) if self.lanes.is_behind(r.tenant) => false,
            Ok(r) => {
                batch.lines += r.readings as usize;
                // Looked up by `&str`: the tenant's name is allocated once per batch, not
                // once per record (docs/PERFORMANCE.md, allocations per reading).
                if let Some(chunk) = batch.by_tenant.get_mut(r.tenant) {
                    chunk.lines.push(r.lines);
                    chunk.readings += r.readings as usize;
                } else {
                    let room = self.sizes.get(r.tenant).copied().unwrap_or_default();
                    let mut lines = Text::with_capacity(room.max(r.lines.len()));
                    lines.push(r.lines);
                    let chunk = Chunk {
                        lines,
                        readings: r.readings as usize,
                        first: e.start,
                    };
                    batch.by_tenant.insert(r.tenant.to_owned(), chunk);
                }
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

    /// Retries held tenants that are due, each from its own cursor up to the head.
    pub(super) fn catch_up(&mut self) {
        let Some(head) = self.lanes.head else { return };
        for tenant in self.lanes.due(self.s.clock.now_ms()) {
            let Some(from) = self.lanes.behind.get(&tenant).map(|b| b.from) else {
                continue;
            };
            let mut cursor = self.s.reader.at(from);
            for _ in 0..CATCH_UP_BATCHES {
                let (first, lines) = match self.read_behind(&mut cursor, &tenant, head) {
                    Ok(Some(read)) => read,
                    Ok(None) => {
                        if self.lanes.caught_up_to(&tenant, head) {
                            self.rejoined(&tenant);
                        }
                        break;
                    }
                    Err(e) => {
                        // Its next try scheduled like a refused write's: returning without
                        // one left it due at once, a spin (out of descriptors: 364,564
                        // lines in 5 s).
                        let wait = self.backoff(&tenant, 0);
                        self.fall_behind(&tenant, from, format!("buffer read failed: {e}"), wait);
                        return;
                    }
                };
                match self.write(&tenant, &lines, None) {
                    Written::Stored if self.lanes.caught_up_to(&tenant, cursor.position()) => {
                        self.rejoined(&tenant);
                        break;
                    }
                    Written::Stored => {}
                    Written::Failed { error, wait } => {
                        self.fall_behind(&tenant, first, error, wait);
                        break;
                    }
                }
            }
        }
    }

    /// The next batch of `tenant`'s lines from `cursor` up to `head`, with the position of
    /// its first record; `None` when there are none left.
    fn read_behind(
        &self,
        cursor: &mut Reader,
        tenant: &str,
        head: Position,
    ) -> std::io::Result<Option<(Position, Text)>> {
        let (mut lines, mut first, mut count) = (Text::default(), None, 0);
        loop {
            match cursor.next_before(head)? {
                Some(Item::Record(e)) => {
                    if let Ok(r) = RecordView::decode(&e.payload)
                        && r.tenant == tenant
                    {
                        first.get_or_insert(e.start);
                        count += r.readings as usize;
                        lines.push(r.lines);
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
        Ok(first.map(|f| (f, lines)))
    }
}
