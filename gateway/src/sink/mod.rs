//! Delivery: reads the durable buffer in order, batches lines per tenant (size and linger),
//! writes them, and only then marks them delivered. Runs on its own thread; the HTTP
//! writers drive their futures on the service's tokio runtime.
//!
//! Answers are classified by `core::retry`: retry with backoff and jitter; split a batch
//! the database refuses to isolate the bad line, which goes to the database quarantine;
//! configuration errors keep the data and are retried slowly and loudly.

mod file;
mod influx;

pub use file::FileWriter;
pub use influx::{V1Writer, V2Writer};

use crate::buffer::{Position, Reader};
use crate::config::BatchConfig;
use crate::core::reason::Reason;
use crate::core::record::Record;
use crate::core::retry::{self, Action};
use crate::metrics::{Metrics, labels};
use crate::quarantine::{self, Quarantine};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
    fn write(&mut self, tenant: &str, lines: &str) -> Answer;
}

/// Lines waiting to be written, grouped by tenant, and where they end in the buffer.
#[derive(Debug, Default)]
struct Batch {
    by_tenant: BTreeMap<String, String>,
    lines: usize,
    end: Option<Position>,
}

impl Batch {
    fn push(&mut self, record: Record, end: Position) {
        self.lines += record.readings as usize;
        self.by_tenant
            .entry(record.tenant)
            .or_default()
            .push_str(&record.lines);
        self.end = Some(end);
    }
}

/// Runs delivery until `shutdown` is set and nothing more can be delivered promptly.
pub fn run(
    mut reader: Reader,
    mut writer: Box<dyn LineWriter>,
    mut db_quarantine: Quarantine,
    cfg: BatchConfig,
    metrics: Arc<Metrics>,
    shutdown: Arc<AtomicBool>,
) {
    let poll = Duration::from_millis(100);
    loop {
        let mut batch = Batch::default();
        let mut deadline: Option<Instant> = None;
        loop {
            let wait = deadline.map_or(poll, |d| {
                d.saturating_duration_since(Instant::now()).min(poll)
            });
            match reader.next(wait) {
                Ok(Some(entry)) => match Record::decode(&entry.payload) {
                    Ok(record) => {
                        deadline.get_or_insert_with(|| Instant::now() + cfg.linger);
                        batch.push(record, entry.end);
                        if batch.lines >= cfg.max_lines {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "undecodable buffer record skipped");
                        batch.end = Some(entry.end);
                    }
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "buffer read failed; retrying");
                    std::thread::sleep(cfg.min_backoff);
                }
            }
            let stopping = shutdown.load(Ordering::Relaxed);
            if deadline.is_some_and(|d| Instant::now() >= d) || (stopping && batch.end.is_some()) {
                break;
            }
            if stopping && batch.end.is_none() {
                return;
            }
        }
        let Some(end) = batch.end else { continue };
        let mut delivered = true;
        for (tenant, lines) in &batch.by_tenant {
            let mut ctx = Ctx {
                writer: writer.as_mut(),
                quarantine: &mut db_quarantine,
                cfg: &cfg,
                metrics: &metrics,
                shutdown: &shutdown,
            };
            if !ctx.deliver(tenant, lines) {
                delivered = false;
                break;
            }
        }
        if !delivered {
            // Shutting down with the database unreachable: the data stays in the buffer.
            return;
        }
        reader.mark_delivered(end);
        metrics.set(
            "vigie_buffer_pending_bytes",
            vec![],
            reader.pending_bytes() as f64,
        );
    }
}

struct Ctx<'a> {
    writer: &'a mut dyn LineWriter,
    quarantine: &'a mut Quarantine,
    cfg: &'a BatchConfig,
    metrics: &'a Metrics,
    shutdown: &'a AtomicBool,
}

impl Ctx<'_> {
    /// Writes `lines` for `tenant` until stored (true) or shutdown interrupts (false).
    fn deliver(&mut self, tenant: &str, lines: &str) -> bool {
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let answer = self.writer.write(tenant, lines);
            let (action, detail) = match &answer {
                Answer::Status {
                    code,
                    retry_after,
                    body,
                } => (
                    retry::classify(*code, retry_after.as_deref()),
                    format!("HTTP {code}: {}", body.trim()),
                ),
                Answer::Transport(e) => (Action::Retry { after: None }, e.clone()),
            };
            match action {
                Action::Done => {
                    let n = lines.lines().count();
                    self.metrics.observe(
                        "vigie_write_duration_seconds",
                        started.elapsed().as_secs_f64(),
                    );
                    self.metrics.observe("vigie_batch_lines", n as f64);
                    self.metrics.add(
                        "vigie_readings_stored_total",
                        labels(&[("tenant", tenant)]),
                        n as f64,
                    );
                    self.metrics.set("vigie_sink_healthy", vec![], 1.0);
                    return true;
                }
                Action::Split => {
                    self.metrics.add(
                        "vigie_write_errors_total",
                        labels(&[("class", "split")]),
                        1.0,
                    );
                    return self.split(tenant, lines, &detail);
                }
                Action::Config | Action::Retry { .. } => {
                    let class = if action == Action::Config {
                        "config"
                    } else {
                        "retry"
                    };
                    self.metrics
                        .add("vigie_write_errors_total", labels(&[("class", class)]), 1.0);
                    self.metrics.set("vigie_sink_healthy", vec![], 0.0);
                    let wait = match action {
                        Action::Retry { after: Some(after) } => after,
                        Action::Config => self.cfg.max_backoff,
                        _ => retry::backoff(
                            attempt,
                            self.cfg.min_backoff,
                            self.cfg.max_backoff,
                            jitter(),
                        ),
                    };
                    if action == Action::Config {
                        tracing::error!(tenant, %detail, "database refuses our configuration (URL, credentials or database name); data kept, retrying in {wait:?}");
                    } else {
                        tracing::warn!(tenant, %detail, attempt, "database write failed; retrying in {wait:?}");
                    }
                    attempt = attempt.saturating_add(1);
                    if !self.sleep(wait) {
                        return false;
                    }
                }
            }
        }
    }

    /// Halves a refused batch until the refused lines are alone; quarantines those.
    fn split(&mut self, tenant: &str, lines: &str, detail: &str) -> bool {
        let all: Vec<&str> = lines.lines().collect();
        if all.len() <= 1 {
            let entry = quarantine::Entry {
                received_ms: crate::now_ms(),
                topic: format!("database:{tenant}"),
                reason: Reason::DatabaseRejected.code().into(),
                detail: detail.to_string(),
                payload: hex::encode(lines.as_bytes()),
            };
            tracing::error!(tenant, line = lines.trim(), %detail, "database refused a line; quarantined");
            let evicted = self
                .quarantine
                .add(&entry)
                .and_then(|n| self.quarantine.sync().map(|_| n));
            match evicted {
                Ok(n) => self
                    .metrics
                    .add("vigie_quarantine_evicted_total", vec![], n as f64),
                Err(e) => tracing::error!(error = %e, "cannot write the database quarantine"),
            }
            self.metrics.add(
                "vigie_frames_rejected_total",
                labels(&[("reason", Reason::DatabaseRejected.code())]),
                1.0,
            );
            return true;
        }
        let (a, b) = all.split_at(all.len() / 2);
        for half in [a, b] {
            let mut text = half.join("\n");
            text.push('\n');
            if !self.deliver(tenant, &text) {
                return false;
            }
        }
        true
    }

    /// Sleeps, waking early (false) on shutdown.
    fn sleep(&self, total: Duration) -> bool {
        let until = Instant::now() + total;
        while Instant::now() < until {
            if self.shutdown.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(50)),
            );
        }
        !self.shutdown.load(Ordering::Relaxed)
    }
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
mod tests {
    use super::*;
    use crate::buffer::Buffer;
    use std::sync::Mutex;

    /// A scripted database: answers in order, then 204; records what was stored.
    struct Scripted {
        answers: Vec<Answer>,
        stored: Arc<Mutex<Vec<(String, String)>>>,
        refuse_containing: Option<&'static str>,
    }

    impl LineWriter for Scripted {
        fn write(&mut self, tenant: &str, lines: &str) -> Answer {
            if self
                .refuse_containing
                .is_some_and(|bad| lines.contains(bad))
            {
                return Answer::Status {
                    code: 400,
                    retry_after: None,
                    body: "{\"error\":\"bad line\"}".into(),
                };
            }
            if !self.answers.is_empty() {
                return self.answers.remove(0);
            }
            self.stored
                .lock()
                .unwrap()
                .push((tenant.into(), lines.into()));
            Answer::Status {
                code: 204,
                retry_after: None,
                body: String::new(),
            }
        }
    }

    fn record(tenant: &str, counter: u32, line: &str) -> Vec<u8> {
        let mut out = Vec::new();
        Record {
            tenant: tenant.into(),
            device: "d".into(),
            epoch: 1,
            counter,
            readings: 1,
            lines: format!("{line}\n"),
        }
        .encode(&mut out);
        out
    }

    fn run_with(
        answers: Vec<Answer>,
        refuse: Option<&'static str>,
        records: Vec<Vec<u8>>,
    ) -> (Vec<(String, String)>, Arc<Metrics>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let (mut buffer, _) =
            Buffer::open(&dir.path().join("b"), 1 << 20, 8 << 20, |_| {}).unwrap();
        buffer.append(&records).unwrap();
        let stored = Arc::new(Mutex::new(Vec::new()));
        let writer = Scripted {
            answers,
            stored: stored.clone(),
            refuse_containing: refuse,
        };
        let q = Quarantine::open(&dir.path().join("q"), 1 << 20).unwrap();
        let cfg = BatchConfig {
            max_lines: 100,
            linger: Duration::from_millis(20),
            min_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
        };
        let metrics = Arc::new(Metrics::default());
        let shutdown = Arc::new(AtomicBool::new(false));
        let reader = buffer.reader();
        let handle = {
            let (m, s) = (metrics.clone(), shutdown.clone());
            std::thread::spawn(move || run(reader, Box::new(writer), q, cfg, m, s))
        };
        let want = records.len() as f64;
        let until = Instant::now() + Duration::from_secs(10);
        while metrics.total("vigie_readings_stored_total")
            + metrics.total("vigie_frames_rejected_total")
            < want
            && Instant::now() < until
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        shutdown.store(true, Ordering::Relaxed);
        handle.join().unwrap();
        let stored = stored.lock().unwrap().clone();
        (stored, metrics, dir)
    }

    #[test]
    fn retries_outages_and_groups_by_tenant() {
        let outage = vec![
            Answer::Transport("connection refused".into()),
            Answer::Status {
                code: 503,
                retry_after: Some("0".into()),
                body: String::new(),
            },
            Answer::Status {
                code: 404,
                retry_after: None,
                body: "database not found".into(),
            },
        ];
        let records = vec![
            record("a", 1, "m v=1 1"),
            record("b", 2, "m v=2 2"),
            record("a", 3, "m v=3 3"),
        ];
        let (stored, metrics, _dir) = run_with(outage, None, records);
        let mut all: Vec<_> = stored
            .iter()
            .flat_map(|(t, l)| l.lines().map(move |l| format!("{t}:{l}")))
            .collect();
        all.sort();
        assert_eq!(all, ["a:m v=1 1", "a:m v=3 3", "b:m v=2 2"]);
        assert_eq!(metrics.total("vigie_readings_stored_total"), 3.0);
        assert_eq!(
            metrics.get("vigie_write_errors_total", &labels(&[("class", "retry")])),
            Some(2.0)
        );
        assert_eq!(
            metrics.get("vigie_write_errors_total", &labels(&[("class", "config")])),
            Some(1.0)
        );
    }

    #[test]
    fn a_bad_line_is_isolated_and_quarantined_the_rest_stored() {
        let records: Vec<_> = (0..9)
            .map(|i| record("a", i, &format!("m v={i} {i}")))
            .collect();
        let mut with_bad = records.clone();
        with_bad.insert(4, record("a", 99, "m v=BAD 99"));
        let (stored, metrics, dir) = run_with(vec![], Some("BAD"), with_bad);
        let lines: usize = stored.iter().map(|(_, l)| l.lines().count()).sum();
        assert_eq!(lines, 9);
        assert_eq!(
            metrics.get(
                "vigie_frames_rejected_total",
                &labels(&[("reason", "database_rejected")])
            ),
            Some(1.0)
        );
        let (q, _) = quarantine::read_all(&dir.path().join("q")).unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(
            String::from_utf8(hex::decode(&q[0].payload).unwrap()).unwrap(),
            "m v=BAD 99\n"
        );
        assert!(q[0].detail.contains("400"));
    }
}
