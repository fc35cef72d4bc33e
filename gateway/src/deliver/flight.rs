//! Writes in flight. The head's batches are written while the next ones are read: at most
//! `batch.in_flight` batches, every commune of a batch at once, each write a task on the
//! runtime. Their answers are taken in the buffer's order, so the head moves only past a
//! batch whose every commune is stored or held on its own cursor.
//!
//! A commune held while later batches of it were already sent: those writes are dropped
//! unanswered (the database may keep them; its cursor writes them again onto the same
//! points, and only that write counts). A commune whose write is still unanswered after
//! `batch.slow_after` while another commune's finished writes wait behind it goes on its
//! own cursor the same way, without an error: one slow database never slows the others.

use super::confirm::Lines;
use super::lanes::Lanes;
use super::{Answer, Sink, Written};
use crate::observe::metrics::ClassLabel;
use crate::store::buffer::Position;
use bytes::Bytes;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use vigie_core::deliver::retry::{self, Action};

/// How often a wait for a write past `batch.slow_after` looks again at who waits.
const SLOW_POLL: Duration = Duration::from_millis(50);

/// A head batch whose writes are under way.
#[derive(Debug)]
pub(super) struct Flight {
    /// Where the batch ends in the buffer.
    pub end: Option<Position>,
    /// One write per commune.
    pub sent: Vec<Sent>,
}

impl Flight {
    /// Every write answered, or of a commune held since (its answer is not awaited).
    fn settled(&self, lanes: &Lanes) -> bool {
        self.sent
            .iter()
            .all(|s| s.answered() || s.held_since(lanes))
    }
}

/// One commune's write.
#[derive(Debug)]
pub(super) struct Sent {
    /// The commune.
    pub tenant: String,
    /// Its first record in the buffer.
    pub first: Position,
    /// The lines (kept to halve a refused batch).
    pub lines: Bytes,
    /// How many.
    pub count: usize,
    /// The request.
    pub started: Started,
}

impl Sent {
    /// Its commune went behind at or before it: its own cursor writes these lines again.
    fn held_since(&self, lanes: &Lanes) -> bool {
        lanes
            .behind
            .get(&self.tenant)
            .is_some_and(|b| b.from <= self.first)
    }

    pub fn answered(&self) -> bool {
        match &self.started {
            Started::Refused(_) | Started::Answered(..) => true,
            Started::Running { task, .. } => task.is_finished(),
        }
    }
}

/// A write's request.
#[derive(Debug)]
pub(super) enum Started {
    /// Not sent, and why (VictoriaMetrics' counters could not be read first).
    Refused(Written),
    /// Answered: the database's answer and how long it took.
    Answered(Answer, Duration),
    /// Under way; the task answers with the database's answer and how long it took.
    Running {
        /// The task.
        task: JoinHandle<(Answer, Duration)>,
        /// When it was sent.
        at: Instant,
    },
}

/// A finished task's answer (a task that panicked or was cancelled: a write without one).
fn outcome(out: Result<(Answer, Duration), tokio::task::JoinError>) -> (Answer, Duration) {
    out.unwrap_or_else(|e| {
        (
            Answer::Transport(format!("write task: {e}")),
            Duration::ZERO,
        )
    })
}

impl Sink {
    /// Sends the writes of a head batch and keeps them in flight.
    pub(super) fn dispatch(&mut self, batch: super::Batch) {
        let mut sent = Vec::with_capacity(batch.by_tenant.len());
        for (tenant, chunk) in batch.by_tenant {
            // Records `erase` emptied: nothing to send.
            if chunk.lines.is_empty() {
                continue;
            }
            let lines = Bytes::from(chunk.lines);
            let started = self.start(&tenant, lines.clone());
            sent.push(Sent {
                tenant,
                first: chunk.first,
                lines,
                count: chunk.readings,
                started,
            });
        }
        let end = batch.end;
        self.flights.push_back(Flight { end, sent });
    }

    /// Takes the answers of the oldest batches in flight, in order: those already
    /// answered, waiting for the oldest while `batch.in_flight` are under way, and for
    /// every one with `all` (stopping, or before VictoriaMetrics' counters are read).
    pub(super) fn retire(&mut self, all: bool) {
        while let Some(front) = self.flights.front() {
            if !front.settled(&self.lanes) {
                if !all && self.flights.len() < self.s.cfg.in_flight {
                    return;
                }
                self.wait_front();
            }
            let Some(flight) = self.flights.pop_front() else {
                return;
            };
            self.land(flight);
        }
    }

    /// Waits for the oldest batch's writes; a commune still unanswered after
    /// `batch.slow_after` while another's answered writes wait behind it goes on its own
    /// cursor.
    fn wait_front(&mut self) {
        let slow_after = self.s.cfg.slow_after;
        loop {
            let Some(front) = self.flights.front_mut() else {
                return;
            };
            for sent in &mut front.sent {
                if let Started::Running { task, at } = &mut sent.started {
                    // Past `slow_after`, in short waits: who waits behind may change.
                    let left = slow_after.saturating_sub(at.elapsed()).max(SLOW_POLL);
                    // The timer is made inside the runtime (this thread is not its own).
                    let wait = async { tokio::time::timeout(left, task).await };
                    if let Ok(out) = self.s.runtime.block_on(wait) {
                        let (answer, took) = outcome(out);
                        sent.started = Started::Answered(answer, took);
                    }
                }
            }
            let slow: Vec<(String, Position)> = (front.sent.iter())
                .filter(|s| !s.answered() && !s.held_since(&self.lanes))
                .map(|s| (s.tenant.clone(), s.first))
                .collect();
            if slow.is_empty() {
                return;
            }
            let others_wait = self.flights.iter().skip(1).any(|f| {
                (f.sent.iter()).any(|s| s.answered() && slow.iter().all(|(t, _)| *t != s.tenant))
            });
            if others_wait {
                for (tenant, first) in slow {
                    self.went_slow(&tenant, first);
                }
                return;
            }
        }
    }

    /// `tenant`'s database is slower than the flow: its commune goes on its own cursor
    /// from `first`, without an error.
    fn went_slow(&mut self, tenant: &str, first: Position) {
        let slow_after = self.s.cfg.slow_after;
        tracing::warn!(
            tenant,
            "database slower than the flow (no answer in {slow_after:?} while other communes wait): this commune is written on its own cursor until it keeps up"
        );
        self.s.metrics.tenant_slow.of(tenant).inc();
        self.lanes.slow(tenant, first, self.s.clock.now_ms());
    }

    /// Takes a batch's answers: stored, or its commune held from its first record.
    fn land(&mut self, flight: Flight) {
        for sent in flight.sent {
            if sent.held_since(&self.lanes) {
                // Held since it was sent: its own cursor writes these lines again.
                if let Started::Running { task, .. } = sent.started {
                    task.abort();
                }
                continue;
            }
            let Sent {
                tenant,
                first,
                lines,
                count,
                started,
            } = sent;
            let records = flight.end.map(|end| Lines::Records { first, end });
            let written = self.answer(&tenant, (&lines, count), records, started);
            if let Written::Failed { error, wait } = written {
                self.fall_behind(&tenant, first, error, wait);
            }
        }
        if let Some(end) = flight.end {
            match &mut self.confirm {
                Some(c) => self.lanes.head = c.batch_end(end).or(self.lanes.head),
                None => self.lanes.head = Some(end),
            }
        }
    }

    /// Sends `lines` of `tenant`, unless VictoriaMetrics' counters cannot be read first.
    pub(super) fn start(&mut self, tenant: &str, lines: Bytes) -> Started {
        if let Some(error) = self.confirm_baseline() {
            let wait = self.backoff(tenant, 0);
            return Started::Refused(Written::Failed { error, wait });
        }
        let write = self.s.writer.write(tenant, lines);
        let task = self.s.runtime.spawn(async move {
            let at = Instant::now();
            let answer = write.await;
            (answer, at.elapsed())
        });
        let at = Instant::now();
        Started::Running { task, at }
    }

    /// Writes `count` `lines` for `tenant` and waits for the answer (halves of a refused
    /// batch).
    pub(super) fn write(&mut self, tenant: &str, lines: Bytes, count: usize) -> Written {
        let started = self.start(tenant, lines.clone());
        self.answer(tenant, (&lines, count), None, started)
    }

    /// Waits for a write's answer and acts on it: stored (or awaiting VictoriaMetrics'
    /// confirmation), split when refused, or failed with the wait before the next try.
    pub(super) fn answer(
        &mut self,
        tenant: &str,
        (lines, count): (&Bytes, usize),
        records: Option<Lines>,
        started: Started,
    ) -> Written {
        let (answer, took) = match started {
            Started::Refused(written) => return written,
            Started::Answered(answer, took) => (answer, took),
            Started::Running { task, .. } => outcome(self.s.runtime.block_on(task)),
        };
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
                self.written(tenant, (lines, count), records, took);
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

    /// A write the database answered 2xx: timed, and stored once the database's counters
    /// say it kept the lines (VictoriaMetrics), at once otherwise.
    fn written(
        &mut self,
        tenant: &str,
        (lines, n): (&Bytes, usize),
        records: Option<Lines>,
        took: Duration,
    ) {
        let metrics = &self.s.metrics;
        metrics.write_duration.observe(took.as_secs_f64());
        metrics.batch_lines.observe(n as f64);
        match &mut self.confirm {
            Some(c) => {
                let kept = records
                    .unwrap_or_else(|| Lines::Text(String::from_utf8_lossy(lines).into_owned()));
                c.wrote(Instant::now(), tenant, kept, n as u64);
            }
            None => {
                metrics.readings_stored.of(tenant).inc_by(n as u64);
            }
        }
    }

    /// Every write in flight answered and taken (before VictoriaMetrics' counters are
    /// read: a write they might count must be known to be waiting for them).
    pub(super) fn quiesce(&mut self) {
        self.retire(true);
        self.catch_up_wait();
    }

    /// Stops waiting for what is in flight (a stop whose time is up): those lines stay in
    /// the buffer and are written again at the next start.
    pub(super) fn abandon(&mut self) {
        for flight in self.flights.drain(..) {
            for sent in flight.sent {
                if let Started::Running { task, .. } = sent.started {
                    task.abort();
                }
            }
        }
        for (_, c) in std::mem::take(&mut self.catching) {
            if let Started::Running { task, .. } = c.sent.started {
                task.abort();
            }
        }
    }
}
