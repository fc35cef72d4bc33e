//! Confirmation of what VictoriaMetrics keeps. It answers 204 and then drops rows outside
//! its retention or beyond its series limits, counting them in its `/metrics`
//! ([`Discards`]), which it refreshes about once a second. So the sink keeps track of
//! each write until the counters, read at least [`SETTLE`] after it, show nothing dropped
//! since the last reading; only then is the write counted as stored and the buffer allowed
//! to drop it. When the counters rose, every write still waiting goes to the database
//! quarantine (`database_discarded`, replayable: the rows VictoriaMetrics did keep are
//! written again onto their own points), with one log line naming the causes.
//!
//! Why every waiting write and not only the covered ones: a write made within a second
//! before a reading may or may not be counted in it; taking all of them when anything rose
//! never attributes a drop to a reading that is gone. Writes of held communes catching up
//! are confirmed the same way, but their cursors are not held back (a crash in the two
//! seconds after such a write, with VictoriaMetrics dropping it, would lose it).

use super::Text;
use crate::store::buffer::Position;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use vigie_core::deliver::discards::Discards;

/// Age of a write before a counter reading surely covers it: VictoriaMetrics refreshes
/// its storage metrics every second (measured: a drop shows 1.03 s later at most).
pub const SETTLE: Duration = Duration::from_secs(2);

/// Lines kept in memory awaiting confirmation (the writes whose lines are not in the
/// buffer's head batch: halves of a refused batch, a held commune's catch-up); past it
/// the sink waits for a reading before writing.
pub const MAX_BYTES: usize = 8 << 20;

/// Writes awaiting confirmation at most; past it the sink waits for a reading.
pub const MAX_WRITES: usize = 1 << 16;

/// Where a waiting write's lines are, should VictoriaMetrics drop rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lines {
    /// The commune's records of the buffer from `first` to `end` (a head batch's chunk):
    /// read again only if rows were dropped, so the lines are not held in memory (they
    /// were 32 MiB and a third of the throughput at 100,000 readings/s).
    Records {
        /// The chunk's first record.
        first: Position,
        /// The batch's end.
        end: Position,
    },
    /// Held here.
    Text(Text),
}

impl Lines {
    fn bytes(&self) -> usize {
        match self {
            Lines::Records { .. } => 0,
            Lines::Text(t) => t.len(),
        }
    }
}

/// One write awaiting confirmation.
#[derive(Debug)]
pub struct Write {
    /// When it was answered.
    pub at: Instant,
    /// Its commune.
    pub tenant: String,
    /// Its lines.
    pub lines: Lines,
    /// How many.
    pub count: u64,
    /// The head position the buffer may drop up to once it (and all before) is confirmed.
    end: Option<Position>,
}

/// What a counter reading settled.
#[derive(Debug)]
pub enum Settled {
    /// Nothing dropped: these writes are stored; the buffer may drop up to `head`.
    Kept {
        /// `(tenant, lines)` confirmed.
        stored: Vec<(String, u64)>,
        /// New head, if a confirmed write ended a batch.
        head: Option<Position>,
    },
    /// Rows were dropped: every waiting write, to be quarantined.
    Dropped {
        /// Rows VictoriaMetrics dropped since the last reading.
        rows: u64,
        /// By cause, in words.
        causes: String,
        /// The writes.
        writes: Vec<Write>,
        /// New head.
        head: Option<Position>,
    },
}

/// Writes awaiting confirmation, and the last counter reading.
#[derive(Debug, Default)]
pub struct Confirm {
    last: Option<Discards>,
    waiting: VecDeque<Write>,
    bytes: usize,
    /// Set when dropped lines could not be quarantined: the buffer keeps everything from
    /// there until the next start, which writes it again.
    frozen: bool,
    /// After a failed reading, when to try again.
    retry_at: Option<Instant>,
}

/// The wait after a failed counter reading before the next.
pub const RETRY: Duration = Duration::from_secs(1);

impl Confirm {
    /// Starts from a first counter reading (`None`: not read yet).
    pub fn new(first: Option<Discards>) -> Self {
        Self {
            last: first,
            ..Self::default()
        }
    }

    /// Whether the counters were read once: before that nothing written could be vouched
    /// for, so the sink reads them before its first write ([`Self::baseline`]).
    pub fn has_baseline(&self) -> bool {
        self.last.is_some()
    }

    /// The counters before any write.
    pub fn baseline(&mut self, counters: Discards) {
        self.last.get_or_insert(counters);
    }

    /// A write answered 2xx.
    pub fn wrote(&mut self, at: Instant, tenant: &str, lines: Lines, count: u64) {
        self.bytes += lines.bytes();
        self.waiting.push_back(Write {
            at,
            tenant: tenant.to_string(),
            lines,
            count,
            end: None,
        });
    }

    /// The head read up to `end`: returned at once when nothing waits, else held until the
    /// writes before it are confirmed.
    pub fn batch_end(&mut self, end: Position) -> Option<Position> {
        if self.frozen {
            return None;
        }
        match self.waiting.back_mut() {
            None => Some(end),
            Some(w) => {
                w.end = Some(end);
                None
            }
        }
    }

    /// Lines it dropped could not be kept: the buffer drops nothing more in this run.
    pub fn freeze(&mut self) {
        self.frozen = true;
    }

    /// Whether a counter reading is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.next_due().is_some_and(|t| now >= t)
    }

    /// When the next counter reading is due: [`SETTLE`] after the oldest waiting write,
    /// [`RETRY`] after a failed reading at the earliest.
    pub fn next_due(&self) -> Option<Instant> {
        let due = self.waiting.front().map(|w| w.at + SETTLE)?;
        Some(self.retry_at.map_or(due, |r| r.max(due)))
    }

    /// A reading at `at` failed: the next one waits [`RETRY`].
    pub fn read_failed(&mut self, at: Instant) {
        self.retry_at = Some(at + RETRY);
    }

    /// Too much waits: stop writing until a reading confirms some.
    pub fn full(&self) -> bool {
        self.bytes >= MAX_BYTES || self.waiting.len() >= MAX_WRITES
    }

    /// Settles the waiting writes against `now`, read at `read_at`.
    pub fn settle(&mut self, read_at: Instant, now: Discards) -> Settled {
        self.retry_at = None;
        let Some(last) = self.last.replace(now.clone()) else {
            // Nothing to compare with: what waits cannot be vouched for.
            return self.drop_all(0, "counters not read before these writes".into());
        };
        // Counters lower than before: VictoriaMetrics restarted and counts from 0 again,
        // so all it counts now was dropped since.
        let rows = match now.total().checked_sub(last.total()) {
            Some(rose) => rose,
            None => now.total(),
        };
        if rows > 0 {
            return self.drop_all(rows, now.since(&last));
        }
        let (mut stored, mut head) = (Vec::new(), None);
        let frozen = self.frozen;
        let covered = self
            .waiting
            .iter()
            .take_while(|w| read_at.saturating_duration_since(w.at) >= SETTLE)
            .count();
        for w in self.waiting.drain(..covered) {
            self.bytes -= w.lines.bytes();
            head = w.end.filter(|_| !frozen).or(head);
            stored.push((w.tenant, w.count));
        }
        Settled::Kept { stored, head }
    }

    fn drop_all(&mut self, rows: u64, causes: String) -> Settled {
        self.bytes = 0;
        let writes: Vec<Write> = self.waiting.drain(..).collect();
        let head = writes
            .iter()
            .rev()
            .find_map(|w| w.end)
            .filter(|_| !self.frozen);
        Settled::Dropped {
            rows,
            causes,
            writes,
            head,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Lines {
        Lines::Text(s.into())
    }

    fn counters(small: u64) -> Discards {
        Discards {
            by_cause: vec![("small_timestamp".into(), small)],
        }
    }

    fn pos(offset: u64) -> Position {
        Position { segment: 1, offset }
    }

    #[test]
    fn a_reading_is_due_a_settle_time_after_the_oldest_write_and_a_second_after_a_failure() {
        let t0 = Instant::now();
        let mut c = Confirm::new(Some(counters(0)));
        assert_eq!(c.next_due(), None, "nothing waits");
        c.wrote(t0, "lyon", text("a 1\n"), 1);
        c.wrote(t0 + SETTLE, "lyon", text("b 2\n"), 1);
        assert_eq!(c.next_due(), Some(t0 + SETTLE), "the oldest write's");
        // Unreadable when due: not tried again at every turn of the loop.
        c.read_failed(t0 + SETTLE);
        assert!(!c.due(t0 + SETTLE + RETRY / 2));
        assert_eq!(c.next_due(), Some(t0 + SETTLE + RETRY));
        assert!(matches!(
            c.settle(t0 + SETTLE + RETRY, counters(0)),
            Settled::Kept { .. }
        ));
        assert_eq!(c.next_due(), Some(t0 + 2 * SETTLE), "the next write's");
    }

    #[test]
    fn writes_are_stored_once_a_later_reading_shows_nothing_dropped() {
        let t0 = Instant::now();
        let mut c = Confirm::new(Some(counters(5)));
        assert_eq!(c.batch_end(pos(1)), Some(pos(1)), "nothing waits");
        c.wrote(t0, "lyon", text("a 1\nb 2\n"), 2);
        assert_eq!(c.batch_end(pos(2)), None, "held");
        c.wrote(t0 + SETTLE, "brest", text("c 3\n"), 1);
        assert_eq!(c.batch_end(pos(3)), None);
        assert!(!c.due(t0 + Duration::from_secs(1)));
        assert!(c.due(t0 + SETTLE));
        // The first write is covered, the second not yet.
        match c.settle(t0 + SETTLE, counters(5)) {
            Settled::Kept { stored, head } => {
                assert_eq!(stored, vec![("lyon".to_string(), 2)]);
                assert_eq!(head, Some(pos(2)));
            }
            other => panic!("{other:?}"),
        }
        // Then rows dropped: the rest waits no more, it goes to the quarantine.
        match c.settle(t0 + 2 * SETTLE, counters(6)) {
            Settled::Dropped {
                rows,
                causes,
                writes,
                head,
            } => {
                assert_eq!((rows, causes.as_str()), (1, "small_timestamp 1"));
                assert_eq!(writes.len(), 1);
                assert_eq!(writes[0].lines, text("c 3\n"));
                assert_eq!(head, Some(pos(3)));
            }
            other => panic!("{other:?}"),
        }
        assert!(!c.due(t0 + 10 * SETTLE));
        assert!(!c.full());
        // Frozen: nothing more may leave the buffer in this run.
        c.freeze();
        assert_eq!(c.batch_end(pos(4)), None);
        c.wrote(t0, "lyon", text("d 4\n"), 1);
        c.batch_end(pos(5));
        assert!(matches!(
            c.settle(t0 + 3 * SETTLE, counters(6)),
            Settled::Kept { head: None, .. }
        ));
    }

    #[test]
    fn a_restarted_victoria_metrics_counts_from_zero_again() {
        let t0 = Instant::now();
        let mut c = Confirm::new(None);
        assert!(!c.has_baseline());
        c.baseline(counters(40));
        assert!(c.has_baseline());
        c.wrote(t0, "lyon", text("a 1\n"), 1);
        // Restarted: 3 dropped since, not "37 fewer".
        assert!(matches!(
            c.settle(t0 + SETTLE, counters(3)),
            Settled::Dropped { rows: 3, .. }
        ));
        c.wrote(t0 + SETTLE, "lyon", text("b 1\n"), 1);
        assert!(matches!(
            c.settle(t0 + 2 * SETTLE, counters(3)),
            Settled::Kept { .. }
        ));
    }

    #[test]
    fn without_a_first_reading_nothing_is_vouched_for() {
        let t0 = Instant::now();
        let mut c = Confirm::new(None);
        c.wrote(t0, "lyon", text("a 1\n"), 1);
        assert!(matches!(
            c.settle(t0 + SETTLE, counters(0)),
            Settled::Dropped { rows: 0, .. }
        ));
        c.wrote(t0 + SETTLE, "lyon", text("b 1\n"), 1);
        assert!(matches!(
            c.settle(t0 + 2 * SETTLE, counters(0)),
            Settled::Kept { .. }
        ));
    }

    #[test]
    fn what_waits_is_bounded_in_writes_and_in_lines_held_apart() {
        let t0 = Instant::now();
        let at = |offset| Position { segment: 1, offset };
        let mut c = Confirm::new(Some(counters(0)));
        for i in 0..MAX_WRITES as u64 - 1 {
            let records = Lines::Records {
                first: at(i),
                end: at(i + 1),
            };
            c.wrote(t0, "lyon", records, 1);
        }
        assert!(!c.full(), "buffer ranges hold no lines");
        c.wrote(t0, "lyon", text("a 1\n"), 1);
        assert!(c.full(), "at most MAX_WRITES wait");
        let mut c = Confirm::new(Some(counters(0)));
        c.wrote(t0, "lyon", Lines::Text("x".repeat(MAX_BYTES).into()), 1);
        assert!(c.full(), "at most MAX_BYTES of lines held apart");
    }
}
