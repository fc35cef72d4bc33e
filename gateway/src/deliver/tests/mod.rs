use super::*;
use crate::observe::metrics::{ReasonLabel, WRITE_ERROR_CLASSES};
use crate::store::buffer::Buffer;
use crate::store::quarantine::{self, Origin, Quarantine};
use std::sync::Mutex;
use vigie_core::deliver::discards::Discards;
use vigie_core::judge::reason::Reason;
use vigie_core::record::Record;

mod vm;

/// Readings stored, over the tenants these tests use.
fn stored(m: &Metrics) -> u64 {
    ["a", "b", "lyon", "nice"]
        .iter()
        .map(|t| m.readings_stored.of(t).get())
        .sum()
}

/// Lines the database refused (quarantined).
fn refused(m: &Metrics) -> u64 {
    m.frames_rejected
        .get_or_create(&ReasonLabel {
            reason: Reason::DatabaseRejected.code(),
        })
        .get()
}

/// A scripted database: per tenant, answers in order (a 204 among them stores), then 204;
/// records what was stored.
struct Scripted {
    answers: Arc<Mutex<BTreeMap<String, Vec<Answer>>>>,
    stored: Arc<Mutex<Vec<(String, String)>>>,
    refuse_containing: Option<&'static str>,
    /// VictoriaMetrics' dropped-row counters as read in turn (`None`: unreadable; the
    /// last repeats); no script: a database whose 2xx is proof.
    counters: Option<Vec<Option<u64>>>,
    /// How long each write takes.
    pace: Duration,
}

/// A scripted VictoriaMetrics: its counters of dropped rows as read in turn, how long each
/// write takes.
struct Vm {
    counters: Vec<Option<u64>>,
    pace: Duration,
}

fn status(code: u16, body: &str) -> Answer {
    Answer::Status {
        code,
        retry_after: None,
        body: body.into(),
    }
}

impl LineWriter for Scripted {
    fn write(&mut self, tenant: &str, lines: &Text) -> Answer {
        std::thread::sleep(self.pace);
        let lines = lines.lossy();
        if self
            .refuse_containing
            .is_some_and(|bad| lines.contains(bad))
        {
            return status(400, "{\"error\":\"bad line\"}");
        }
        let scripted = self
            .answers
            .lock()
            .unwrap()
            .get_mut(tenant)
            .and_then(|a| (!a.is_empty()).then(|| a.remove(0)));
        match scripted {
            None | Some(Answer::Status { code: 204, .. }) => {}
            Some(other) => return other,
        }
        self.stored
            .lock()
            .unwrap()
            .push((tenant.into(), lines.into_owned()));
        status(204, "")
    }

    fn discards(&mut self) -> Option<Result<Discards, CountersError>> {
        let script = self.counters.as_mut()?;
        let next = if script.len() > 1 {
            script.remove(0)
        } else {
            script.first().copied().flatten()
        };
        Some(next.map_or_else(
            || Err(CountersError::Status(401)),
            |n| {
                Ok(Discards {
                    by_cause: vec![("small_timestamp".into(), n)],
                })
            },
        ))
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
        tag: None,
        lines: format!("{line}\n"),
    }
    .encode(&mut out);
    out
}

struct Run {
    stored: Arc<Mutex<Vec<(String, String)>>>,
    answers: Arc<Mutex<BTreeMap<String, Vec<Answer>>>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: CancellationToken,
    handle: std::thread::JoinHandle<()>,
    buffer: Buffer,
    dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

fn start(
    answers: BTreeMap<String, Vec<Answer>>,
    refuse: Option<&'static str>,
    records: Vec<Vec<u8>>,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let q = Quarantine::open(crate::store::fs::real(), &dir.path().join("q"), 1 << 20).unwrap();
    start_with(dir, q, answers, refuse, records, None, test_config())
}

/// The test's buffer in `dir` (1 MiB segments, 8 MiB in all).
fn open_buffer(dir: &tempfile::TempDir) -> Buffer {
    let path = dir.path().join("b");
    Buffer::open(crate::store::fs::real(), &path, 1 << 20, 8 << 20, |_| {})
        .unwrap()
        .0
}

/// Batches of 100 lines lingering 20 ms; a held tenant retried after 1 to 5 ms.
fn test_config() -> BatchConfig {
    BatchConfig {
        max_lines: 100,
        linger: Duration::from_millis(20),
        min_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    }
}

fn start_with(
    dir: tempfile::TempDir,
    q: Quarantine,
    answers: BTreeMap<String, Vec<Answer>>,
    refuse: Option<&'static str>,
    records: Vec<Vec<u8>>,
    vm: Option<Vm>,
    cfg: BatchConfig,
) -> Run {
    let mut buffer = open_buffer(&dir);
    buffer.append(&records).unwrap();
    let stored = Arc::new(Mutex::new(Vec::new()));
    let answers = Arc::new(Mutex::new(answers));
    let writer = Scripted {
        answers: answers.clone(),
        stored: stored.clone(),
        refuse_containing: refuse,
        pace: vm.as_ref().map_or(Duration::ZERO, |v| v.pace),
        counters: vm.map(|v| v.counters),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (metrics, health, stop) = (
        Arc::new(Metrics::default()),
        Arc::new(Health::default()),
        CancellationToken::new(),
    );
    let setup = SinkSetup {
        fence: None,
        reader: buffer.reader(),
        writer: Box::new(writer),
        quarantine: Arc::new(Mutex::new(q)),
        cfg,
        metrics: metrics.clone(),
        health: health.clone(),
        runtime: rt.handle().clone(),
        stop: stop.clone(),
        state_path: Some(dir.path().join("sink.state")),
        clock: Clock::system(),
        flush: Duration::from_secs(1),
    };
    let handle = std::thread::spawn(move || run(setup));
    Run {
        stored,
        answers,
        metrics,
        health,
        stop,
        handle,
        buffer,
        dir,
        _rt: rt,
    }
}

impl Run {
    fn wait_for(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !done(self) {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn lines(&self) -> Vec<String> {
        sorted_lines(&self.stored)
    }

    fn stop(self) -> (Vec<String>, Arc<Metrics>, tempfile::TempDir) {
        let Run {
            stored,
            metrics,
            stop,
            handle,
            dir,
            ..
        } = self;
        stop.cancel();
        handle.join().unwrap();
        (sorted_lines(&stored), metrics, dir)
    }
}

/// Every stored line as `tenant:line`, sorted.
fn sorted_lines(stored: &Mutex<Vec<(String, String)>>) -> Vec<String> {
    let mut all: Vec<_> = stored
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(t, l)| {
            l.lines()
                .map(move |l| format!("{t}:{l}"))
                .collect::<Vec<_>>()
        })
        .collect();
    all.sort();
    all
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
        status(404, "database not found"),
    ];
    let records = vec![
        record("a", 1, "m v=1 1"),
        record("b", 2, "m v=2 2"),
        record("a", 3, "m v=3 3"),
    ];
    let run = start(BTreeMap::from([("a".into(), outage)]), None, records);
    run.wait_for("3 stored", |r| stored(&r.metrics) >= 3);
    let (all, metrics, _dir) = run.stop();
    assert_eq!(all, ["a:m v=1 1", "a:m v=3 3", "b:m v=2 2"]);
    assert_eq!(stored(&metrics), 3);
    assert_eq!(
        metrics
            .write_errors
            .get_or_create(&ClassLabel { class: "retry" })
            .get(),
        2
    );
    assert_eq!(
        metrics
            .write_errors
            .get_or_create(&ClassLabel { class: "config" })
            .get(),
        1
    );
}

#[test]
fn a_refusing_tenant_is_held_while_the_others_flow_then_catches_up() {
    let missing: Vec<Answer> = (0..1_000_000)
        .map(|_| status(404, "database not found"))
        .collect();
    let records: Vec<_> = (0..40)
        .map(|i| {
            let tenant = if i % 2 == 0 { "lyon" } else { "nice" };
            record(tenant, i, &format!("m v={i} {i}"))
        })
        .collect();
    let run = start(BTreeMap::from([("lyon".into(), missing)]), None, records);
    run.wait_for("nice stored", |r| r.lines().len() >= 20);
    run.wait_for("lyon held", |r| {
        matches!(
            r.health.snapshot().tenants.get("lyon"),
            Some(Tenant::Held { .. })
        )
    });
    assert!(run.lines().iter().all(|l| l.starts_with("nice:")));
    assert_eq!(run.metrics.tenant_behind.of("lyon").get(), 1);
    assert!(
        run.buffer.pending_bytes() > 0,
        "lyon's records stay in the buffer"
    );
    // The database is created: lyon catches up on its own cursor, nothing is lost.
    run.answers.lock().unwrap().clear();
    run.wait_for("lyon caught up", |r| r.lines().len() >= 40);
    run.wait_for("flowing", |r| {
        r.health.snapshot().tenants.get("lyon") == Some(&Tenant::Flowing)
    });
    run.wait_for("buffer delivered", |r| r.buffer.pending_bytes() == 0);
    let (all, metrics, _dir) = run.stop();
    assert_eq!(all.len(), 40, "{all:?}");
    assert_eq!(stored(&metrics), 40);
    assert_eq!(metrics.tenant_behind.of("lyon").get(), 0);
}

#[test]
fn a_bad_line_is_isolated_and_quarantined_the_rest_stored() {
    let records: Vec<_> = (0..9)
        .map(|i| record("a", i, &format!("m v={i} {i}")))
        .collect();
    let mut with_bad = records.clone();
    with_bad.insert(4, record("a", 99, "m v=BAD 99"));
    let run = start(BTreeMap::new(), Some("BAD"), with_bad);
    run.wait_for("9 stored and 1 refused", |r| {
        stored(&r.metrics) >= 9 && refused(&r.metrics) >= 1
    });
    let (all, metrics, dir) = run.stop();
    assert_eq!(all.len(), 9);
    assert_eq!(refused(&metrics), 1);
    let (q, _) = quarantine::read_all(&dir.path().join("q")).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].origin, Origin::Database);
    assert_eq!(
        String::from_utf8(hex::decode(&q[0].payload).unwrap()).unwrap(),
        "m v=BAD 99\n"
    );
    assert!(q[0].detail.contains("400"));
}

/// The sink sends lines as the buffer holds them, without checking them for UTF-8 again
/// (`deliver/text.rs`): a line that is not UTF-8 (a corruption its CRC missed), which a
/// database refuses, is kept byte for byte like any refused line; the others are stored.
#[test]
fn a_line_that_is_not_utf8_is_refused_into_the_quarantine_byte_for_byte() {
    let mut records: Vec<_> = (0..5)
        .map(|i| record("a", i, &format!("m v={i} {i}")))
        .collect();
    let mut bad = record("a", 99, "m v=X 99");
    let at = bad.len() - 5;
    assert_eq!(bad[at], b'X');
    bad[at] = 0xFF;
    records.insert(2, bad);
    let run = start(BTreeMap::new(), Some("\u{FFFD}"), records);
    run.wait_for("5 stored and 1 refused", |r| {
        stored(&r.metrics) >= 5 && refused(&r.metrics) >= 1
    });
    let (all, metrics, dir) = run.stop();
    assert_eq!(all.len(), 5, "{all:?}");
    assert_eq!(refused(&metrics), 1);
    let (q, _) = quarantine::read_all(&dir.path().join("q")).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(hex::decode(&q[0].payload).unwrap(), b"m v=\xFF 99\n");
}

#[test]
fn a_refused_line_is_not_dropped_when_the_quarantine_cannot_be_written() {
    use crate::store::fs::model::{Fault, ModelFs};
    let fs = ModelFs::new();
    let shared: crate::store::fs::SharedFs = Arc::new(fs.clone());
    let q = Quarantine::open(shared, std::path::Path::new("q"), 1 << 20).unwrap();
    // The quarantine's first write fails (its fsync): the tenant waits, then retries.
    fs.fail_at(fs.ops() + 1, Fault::FailedSync);
    let records = vec![record("a", 1, "m v=1 1"), record("a", 2, "m v=BAD 2")];
    let run = start_with(
        tempfile::tempdir().unwrap(),
        q,
        BTreeMap::new(),
        Some("BAD"),
        records,
        None,
        test_config(),
    );
    run.wait_for("the refused line quarantined", |r| refused(&r.metrics) >= 1);
    assert!(
        WRITE_ERROR_CLASSES
            .iter()
            .map(|&class| run
                .metrics
                .write_errors
                .get_or_create(&ClassLabel { class })
                .get())
            .sum::<u64>()
            >= 2,
        "the first quarantine failure held the tenant and the batch was written again"
    );
    let (mut lines, _, _) = run.stop();
    // The batch was written again after the wait (the same point: the database keeps one).
    lines.dedup();
    assert_eq!(lines, ["a:m v=1 1"]);
    fs.power_cut();
    let (entries, _) = quarantine::read_all_on(&fs, std::path::Path::new("q")).unwrap();
    assert_eq!(
        entries.len(),
        1,
        "the refused line is in the quarantine, once"
    );
    assert_eq!(
        String::from_utf8(hex::decode(&entries[0].payload).unwrap()).unwrap(),
        "m v=BAD 2\n"
    );
}

#[test]
fn after_a_restart_nothing_stored_is_written_or_counted_again() {
    let records: Vec<_> = (0..10)
        .map(|i| record("a", i, &format!("m v={i} {i}")))
        .collect();
    let run = start(BTreeMap::new(), None, records);
    run.wait_for("10 stored", |r| r.lines().len() >= 10);
    run.wait_for("state saved", |r| r.dir.path().join("sink.state").exists());
    let Run {
        stop,
        handle,
        buffer,
        dir,
        _rt,
        ..
    } = run;
    stop.cancel();
    handle.join().unwrap();
    drop(buffer);
    // Same buffer and state: a new sink writes nothing.
    let buffer = open_buffer(&dir);
    let written = Arc::new(Mutex::new(Vec::new()));
    let writer = Scripted {
        answers: Default::default(),
        stored: written.clone(),
        refuse_containing: None,
        counters: None,
        pace: Duration::ZERO,
    };
    let q = Quarantine::open(crate::store::fs::real(), &dir.path().join("q"), 1 << 20).unwrap();
    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());
    let setup = SinkSetup {
        fence: None,
        reader: buffer.reader(),
        writer: Box::new(writer),
        quarantine: Arc::new(Mutex::new(q)),
        cfg: BatchConfig::default(),
        metrics: metrics.clone(),
        health: Arc::new(Health::default()),
        runtime: _rt.handle().clone(),
        stop: stop.clone(),
        state_path: Some(dir.path().join("sink.state")),
        clock: Clock::system(),
        flush: Duration::from_secs(1),
    };
    stop.cancel();
    super::run(setup);
    assert!(written.lock().unwrap().is_empty());
    assert_eq!(stored(&metrics), 0);
}

#[test]
fn lines_are_counted_as_str_lines_counts_them() {
    for text in [
        "",
        "\n",
        "a",
        "a\n",
        "a\nb",
        "a\n\nb\n",
        "m f=1i 1\nm f=2i 2\n",
    ] {
        assert_eq!(
            line_count(text.as_bytes()),
            text.lines().count(),
            "{text:?}"
        );
    }
}

/// A tenant refused in the middle of a drain, while the next batch was read ahead with its
/// records in it (`overlap.rs`): held from its first record of the refused batch, its
/// records in the batch read ahead left to its own cursor, it rejoins only once the head
/// has passed them. Nothing is lost: 20 batches of 100 lines, two tenants.
#[test]
fn a_tenant_refused_while_the_next_batch_was_read_ahead_loses_nothing() {
    let ok = || status(204, "");
    let down = || status(503, "overloaded");
    let lyon = vec![
        ok(),
        ok(),
        down(),
        ok(),
        ok(),
        down(),
        ok(),
        ok(),
        ok(),
        down(),
    ];
    let records: Vec<_> = (0..2_000)
        .map(|i| {
            let tenant = if i % 2 == 0 { "lyon" } else { "nice" };
            record(tenant, i, &format!("m v={i} {i}"))
        })
        .collect();
    // Retried at once: a held tenant is due again while the batch read ahead waits.
    let cfg = BatchConfig {
        min_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
        ..test_config()
    };
    let dir = tempfile::tempdir().unwrap();
    let q = Quarantine::open(crate::store::fs::real(), &dir.path().join("q"), 1 << 20).unwrap();
    let answers = BTreeMap::from([("lyon".into(), lyon)]);
    let run = start_with(dir, q, answers, None, records, None, cfg);
    run.wait_for("every line stored", |r| {
        let mut lines = r.lines();
        lines.dedup();
        lines.len() == 2_000 && r.buffer.pending_bytes() == 0
    });
    let (all, metrics, _dir) = run.stop();
    let expected: std::collections::BTreeSet<_> = (0..2_000)
        .map(|i| {
            let tenant = if i % 2 == 0 { "lyon" } else { "nice" };
            format!("{tenant}:m v={i} {i}")
        })
        .collect();
    let got: std::collections::BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!(got, expected);
    assert_eq!(metrics.tenant_behind.of("lyon").get(), 0);
}
