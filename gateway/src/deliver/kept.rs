//! What the sink keeps when a database will not: lines it refused or dropped go to the
//! database quarantine (their only copy, never evicted), and VictoriaMetrics' writes wait
//! for its counters of dropped rows ([`super::confirm`]) before they count as stored.

use super::confirm::{self, Confirm, Lines, Settled};
use super::{Sink, Text, Written};
use crate::ingest::lock;
use crate::observe::metrics::ReasonLabel;
use crate::store::buffer::Item;
use crate::store::quarantine::{self, Origin};
use std::time::Instant;
use vigie_core::deliver::retry;
use vigie_core::judge::reason::Reason;
use vigie_core::record::RecordView;

/// Why lines a database will not keep could not be quarantined.
#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    /// The quarantine's room for acknowledged readings of the commune is full.
    #[error(
        "the database refuses lines ({detail}) and the quarantine's room for acknowledged \
         readings of {tenant} is full: `quarantine list`, fix the cause, `quarantine replay`"
    )]
    Full {
        /// The database's reason.
        detail: String,
        /// The commune.
        tenant: String,
    },
    /// The quarantine cannot be written.
    #[error("the database refused lines and the quarantine cannot be written: {0}")]
    Write(std::io::Error),
}

impl Sink {
    /// Halves a refused batch until the refused lines are alone; quarantines those. A
    /// batch the database dropped whole for its retention (a device's old backlog) goes
    /// to the quarantine as it is, in one entry and one line, not line by line.
    pub(super) fn split(&mut self, tenant: &str, lines: &Text, detail: &str) -> Written {
        let all: Vec<&[u8]> = lines.lines().collect();
        if all.len() <= 1 || retry::all_beyond_retention(detail, all.len()) {
            return match self.keep(tenant, lines, Reason::DatabaseRejected, detail) {
                Ok(()) => {
                    let (log, left_out) = self.refused_log.admit(self.s.clock.now_ms());
                    if left_out > 0 {
                        tracing::error!(
                            left_out,
                            "more refused lines were quarantined in the last minute than logged (vigie_frames_rejected_total{{reason=\"database_rejected\"}})"
                        );
                    }
                    if log {
                        let first =
                            String::from_utf8_lossy(all.first().copied().unwrap_or_default());
                        tracing::error!(tenant, lines = all.len(), %first, %detail, "database refused lines; quarantined");
                    }
                    Written::Stored
                }
                Err(error) => Written::Failed {
                    error: error.to_string(),
                    wait: self.s.cfg.max_backoff,
                },
            };
        }
        let (a, b) = all.split_at(all.len() / 2);
        for half in [a, b] {
            let mut text = half.join(&b'\n');
            text.push(b'\n');
            if let failed @ Written::Failed { .. } = self.write(tenant, &text.into(), None) {
                return failed;
            }
        }
        Written::Stored
    }

    /// Keeps `lines` of `tenant` that the database refused or dropped in the database
    /// quarantine, as one entry of acknowledged readings (its only copy: never evicted,
    /// bounded apart), counted under `reason`. The error says why it could not.
    pub(super) fn keep(
        &mut self,
        tenant: &str,
        lines: &Text,
        reason: Reason,
        detail: &str,
    ) -> Result<(), KeepError> {
        let entry = quarantine::Entry {
            received_ms: self.s.clock.now_ms(),
            origin: Origin::Database,
            topic: tenant.to_string(),
            reason: reason.code().into(),
            detail: detail.to_string(),
            payload: hex::encode(lines.as_bytes()),
            // An acknowledged reading: this entry is its only copy.
            acknowledged: true,
        };
        let mut q = lock(&self.s.quarantine);
        if !q.admits_kept(tenant, quarantine::entry_bytes(tenant, lines.as_bytes())) {
            // Past the bound the commune waits, its readings in the buffer, until the
            // quarantine is replayed or erased.
            return Err(KeepError::Full {
                detail: detail.to_string(),
                tenant: tenant.to_string(),
            });
        }
        let evicted = q.write(&entry).map_err(KeepError::Write)?;
        drop(q);
        self.s.metrics.quarantine_evicted.inc_by(evicted);
        self.s
            .metrics
            .frames_rejected
            .get_or_create(&ReasonLabel {
                reason: reason.code(),
            })
            .inc_by(lines.lines().count() as u64);
        Ok(())
    }

    /// Before the first write to VictoriaMetrics, its counters of dropped rows: without
    /// them nothing written could be vouched for, so nothing is written (the commune is
    /// held, retried) until they can be read. The error, if they cannot.
    pub(super) fn confirm_baseline(&mut self) -> Option<String> {
        let c = self.confirm.as_mut().filter(|c| !c.has_baseline())?;
        match self.s.writer.discards()? {
            Ok(counters) => {
                c.baseline(counters);
                None
            }
            Err(e) => Some(format!(
                "cannot read VictoriaMetrics' counters of dropped rows ({e}): nothing is \
                 written until they can be, so that every write can be confirmed"
            )),
        }
    }

    /// Reads the database's counters of dropped rows when a write waits long enough for
    /// them ([`confirm::SETTLE`]); counts what they confirm as stored and quarantines the
    /// rest. With too much waiting, waits for the reading before writing more.
    pub(super) fn confirm_due(&mut self) {
        let Some(c) = &self.confirm else { return };
        if c.full() && !c.due(Instant::now()) {
            self.pause(confirm::SETTLE);
        }
        let read_at = Instant::now();
        if !self.confirm.as_ref().is_some_and(|c| c.due(read_at)) {
            return;
        }
        let settled = match self.s.writer.discards() {
            Some(Ok(now)) => match &mut self.confirm {
                Some(c) => c.settle(read_at, now),
                None => return,
            },
            Some(Err(e)) => {
                if let Some(c) = &mut self.confirm {
                    c.read_failed(read_at);
                }
                self.confirm_errors += 1;
                if self.confirm_errors.is_power_of_two() {
                    tracing::error!(error = %e, failures = self.confirm_errors, "cannot read VictoriaMetrics' counters of dropped rows; the buffer keeps what was written until they can be read");
                }
                if self.confirm.as_ref().is_some_and(Confirm::full) {
                    self.pause(confirm::SETTLE);
                }
                return;
            }
            None => return,
        };
        self.confirm_errors = 0;
        self.settled(settled);
    }

    pub(super) fn settled(&mut self, settled: Settled) {
        let stored = |sink: &Self, tenant: &str, n: u64| {
            sink.s.metrics.readings_stored.of(tenant).inc_by(n);
        };
        match settled {
            Settled::Kept { stored: done, head } => {
                if !done.is_empty() {
                    self.s.health.set_database_dropped(None);
                }
                for (tenant, n) in done {
                    stored(self, &tenant, n);
                }
                self.lanes.head = head.or(self.lanes.head);
            }
            Settled::Dropped {
                rows,
                causes,
                writes,
                head,
            } => {
                let lines: u64 = writes.iter().map(|w| w.count).sum();
                let detail = format!(
                    "VictoriaMetrics answered 204 and dropped {rows} rows ({causes}); every line written since its last reading is kept here"
                );
                tracing::error!(rows, lines, %causes, "VictoriaMetrics dropped rows it had accepted: the lines written since its last reading are in the database quarantine (quarantine replay once the cause is fixed: -retentionPeriod, series limits)");
                self.s.health.set_database_dropped(Some(format!(
                    "VictoriaMetrics dropped {rows} rows it had accepted ({causes}): {lines} lines \
                     kept in the database quarantine; fix the cause, then `quarantine replay`"
                )));
                let mut kept_all = true;
                for w in &writes {
                    let kept = self
                        .lines_of(w)
                        .map_err(KeepError::Write)
                        .and_then(|lines| {
                            self.keep(&w.tenant, &lines, Reason::DatabaseDiscarded, &detail)
                        });
                    if let Err(e) = kept {
                        tracing::error!(tenant = %w.tenant, error = %e, "lines VictoriaMetrics may have dropped could not be quarantined; the buffer keeps everything from here until the next start, which writes it again");
                        kept_all = false;
                    }
                }
                // Which lines it kept it does not say (and its rows are samples, one per
                // field): none is counted as stored until a replay writes it again.
                match &mut self.confirm {
                    Some(c) if !kept_all => c.freeze(),
                    _ => self.lanes.head = head.or(self.lanes.head),
                }
            }
        }
    }

    /// A waiting write's lines: held, or read again from the buffer (its head chunk: the
    /// commune's records from the chunk's first to the batch's end, which the buffer keeps
    /// until the write is confirmed).
    fn lines_of(&self, w: &confirm::Write) -> std::io::Result<Text> {
        let (first, end) = match &w.lines {
            Lines::Text(t) => return Ok(t.clone()),
            Lines::Records { first, end } => (*first, *end),
        };
        let mut cursor = self.s.reader.at(first);
        let mut lines = Text::default();
        while let Some(item) = cursor.next_before(end)? {
            if let Item::Record(e) = item
                && let Ok(r) = RecordView::decode(&e.payload)
                && r.tenant == w.tenant
            {
                lines.push(r.lines);
            }
        }
        Ok(lines)
    }
}
