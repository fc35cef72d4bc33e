use super::*;
use crate::store::fs::model::{Fault, ModelFs};
use proptest::prelude::*;
use std::collections::HashSet;
use std::fs as stdfs;
use std::io::Write as _;

const WAIT: Duration = Duration::from_millis(10);

fn open_real(dir: &Path) -> (Buffer, Recovery, Vec<Vec<u8>>) {
    open_on(crate::store::fs::real(), dir)
}

fn open_on(fs: SharedFs, dir: &Path) -> (Buffer, Recovery, Vec<Vec<u8>>) {
    let mut seen = Vec::new();
    let (b, r) = Buffer::open(fs, dir, 256, 4096, |item| {
        if let Recovered::Record(p) = item {
            seen.push(p.to_vec())
        }
    })
    .unwrap();
    (b, r, seen)
}

fn drain(reader: &mut Reader) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(item) = reader.next(WAIT).unwrap() {
        match item {
            Item::Record(e) => out.push(e.payload),
            Item::Corrupt(c) => panic!("unexpected corruption at {:?}", c.start),
        }
    }
    out
}

fn record(reader: &mut Reader) -> Option<Entry> {
    match reader.next(WAIT).unwrap()? {
        Item::Record(e) => Some(e),
        Item::Corrupt(c) => panic!("unexpected corruption at {:?}", c.start),
    }
}

fn payload(i: usize) -> Vec<u8> {
    format!("record-{i}-{}", "x".repeat(i % 40)).into_bytes()
}

#[test]
fn append_read_deliver_delete_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _, seen) = open_real(dir.path());
    assert!(seen.is_empty());
    let all: Vec<_> = (0..40).map(payload).collect();
    for chunk in all.chunks(7) {
        b.append(chunk).unwrap();
    }
    assert!(b.shared.lock().segments.len() > 3, "small segments roll");
    let mut r = b.reader();
    let mut got = Vec::new();
    while let Some(e) = record(&mut r) {
        got.push(e.payload);
        if got.len() == 20 {
            r.mark_delivered(e.end);
        }
    }
    assert_eq!(got, all);
    assert!(b.pending_bytes() > 0, "only half delivered");
    let deleted = b.delete_delivered().unwrap();
    assert!(deleted > 0);
    drop((b, r));
    // Reopen: at-least-once from the oldest remaining segment, never before it.
    let (b, rec, seen) = open_real(dir.path());
    assert_eq!(rec.cut_bytes, 0);
    assert!(seen.len() < 40 && seen.len() >= 20, "{}", seen.len());
    assert_eq!(seen[..], all[40 - seen.len()..]);
    assert_eq!(drain(&mut b.reader()), seen);
    assert!(b.pending_bytes() > 0, "nothing delivered since the reopen");
}

#[test]
fn an_interrupted_reader_stops_waiting_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _, _) = open_real(dir.path());
    let mut reader = b.reader();
    let wake = reader.interrupter();
    let waiting = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let item = reader.next(Duration::from_secs(30)).unwrap();
        (item.is_none(), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(100));
    wake.interrupt();
    let (nothing, waited) = waiting.join().unwrap();
    assert!(nothing);
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

#[test]
fn pending_counts_record_bytes_between_delivered_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _, _) = open_real(dir.path());
    assert_eq!(b.pending_bytes(), 0);
    let all: Vec<_> = (0..30).map(payload).collect();
    b.append(&all).unwrap();
    let bytes: u64 = all.iter().map(|p| record_len(p.len())).sum();
    assert_eq!(
        b.pending_bytes(),
        bytes,
        "across rolled segments, magic not counted"
    );
    let mut r = b.reader();
    let mut end = Position::default();
    while let Some(e) = record(&mut r) {
        end = e.end;
    }
    r.mark_delivered(end);
    assert_eq!((b.pending_bytes(), r.pending_bytes()), (0, 0));
    assert_eq!(b.pending_bytes(), 0);
}

#[test]
fn full_buffer_refuses_without_writing_then_frees_after_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _, _) = open_real(dir.path());
    let big = vec![7u8; 200];
    let mut n = 0;
    loop {
        match b.append(std::slice::from_ref(&big)) {
            Ok(_) => n += 1,
            Err(BufferError::Full { used, max }) => {
                assert!(used <= max);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let used = b.used_bytes();
    assert!(matches!(
        b.append(std::slice::from_ref(&big)),
        Err(BufferError::Full { .. })
    ));
    assert_eq!(b.used_bytes(), used, "a refused append writes nothing");
    let mut r = b.reader();
    let mut end = Position::default();
    for _ in 0..n {
        end = record(&mut r).unwrap().end;
    }
    r.mark_delivered(end);
    b.delete_delivered().unwrap();
    b.append(std::slice::from_ref(&big)).unwrap();
}

#[test]
fn torn_tail_is_cut_at_every_length() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _, _) = open_real(dir.path());
    b.append(&[payload(1), payload(2)]).unwrap();
    b.append(&[payload(3)]).unwrap();
    drop(b);
    let seg = segment_path(dir.path(), 1);
    let full = stdfs::read(&seg).unwrap();
    let third_start = full.len() - record_len(payload(3).len()) as usize;
    for cut in third_start..full.len() {
        stdfs::write(&seg, &full[..cut]).unwrap();
        let (mut b, rec, seen) = open_real(dir.path());
        assert_eq!(seen, vec![payload(1), payload(2)], "cut at {cut}");
        assert_eq!(rec.cut_bytes, (cut - third_start) as u64);
        assert_eq!(rec.corrupt_records, 0);
        // And appending after recovery works and reads back.
        b.append(&[payload(9)]).unwrap();
        assert_eq!(
            drain(&mut b.reader()),
            vec![payload(1), payload(2), payload(9)]
        );
        drop(b);
        stdfs::write(&seg, &full).unwrap();
    }
}

#[test]
fn a_corrupt_record_in_the_middle_is_skipped_reported_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _, _) = open_real(dir.path());
    let all: Vec<_> = (0..3).map(payload).collect();
    b.append(&all).unwrap();
    drop(b);
    let seg = segment_path(dir.path(), 1);
    let full = stdfs::read(&seg).unwrap();
    let second = MAGIC.len() + record_len(all[0].len()) as usize;
    let third = second + record_len(all[1].len()) as usize;
    for i in second..third {
        let mut bad = full.clone();
        bad[i] ^= 0x04;
        stdfs::write(&seg, &bad).unwrap();
        let mut corrupt = Vec::new();
        let mut seen = Vec::new();
        let (b, rec) =
            Buffer::open(
                crate::store::fs::real(),
                dir.path(),
                256,
                4096,
                |item| match item {
                    Recovered::Record(p) => seen.push(p.to_vec()),
                    Recovered::Corrupt(c) => corrupt.push(c.to_vec()),
                },
            )
            .unwrap();
        assert_eq!(seen, vec![all[0].clone(), all[2].clone()], "flip at {i}");
        assert_eq!((rec.corrupt_records, rec.cut_bytes), (1, 0), "flip at {i}");
        assert_eq!(corrupt, vec![bad[second..third].to_vec()]);
        // The reader jumps the known stretch without reporting it again.
        assert_eq!(drain(&mut b.reader()), seen);
        drop(b);
        stdfs::write(&seg, &full).unwrap();
    }
}

#[test]
fn an_offline_rewrite_changes_only_what_it_edits_and_keeps_damage_for_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _, _) = open_real(dir.path());
    let all: Vec<_> = (0..30).map(payload).collect();
    for chunk in all.chunks(4) {
        b.append(chunk).unwrap();
    }
    drop(b);
    // Damage in the first segment and a torn tail in the last stay as they are.
    let first = segment_path(dir.path(), 1);
    let mut bytes = stdfs::read(&first).unwrap();
    bytes[MAGIC.len() + format::HEADER] ^= 0x04;
    stdfs::write(&first, &bytes).unwrap();
    let last = stdfs::read_dir(dir.path()).unwrap().count() as u64;
    let mut tail = stdfs::OpenOptions::new()
        .append(true)
        .open(segment_path(dir.path(), last))
        .unwrap();
    tail.write_all(&[0, 0, 0, 9, 1]).unwrap();
    drop(tail);

    // Every record whose number is odd gets a shorter payload.
    let odd = |p: &[u8]| {
        let text = std::str::from_utf8(p).unwrap();
        let n: usize = text.split('-').nth(1).unwrap().parse().unwrap();
        (n % 2 == 1).then(|| format!("odd-{n}").into_bytes())
    };
    // A dry run counts and writes nothing.
    let segments = |d: &Path| {
        let mut all: Vec<_> = stdfs::read_dir(d)
            .unwrap()
            .map(|e| stdfs::read(e.unwrap().path()).unwrap())
            .collect();
        all.sort();
        all
    };
    let untouched = segments(dir.path());
    assert_eq!(rewrite_offline(dir.path(), false, odd).unwrap(), 15);
    assert_eq!(segments(dir.path()), untouched);
    assert_eq!(rewrite_offline(dir.path(), true, odd).unwrap(), 15);
    let (_, rec, seen) = open_real(dir.path());
    let want: Vec<_> = (1..30)
        .map(|n| match n % 2 {
            1 => format!("odd-{n}").into_bytes(),
            _ => payload(n),
        })
        .collect();
    assert_eq!(seen, want, "record 0 is the damaged one");
    assert_eq!((rec.corrupt_records, rec.torn_tails), (1, 1));
    // Nothing to change: nothing rewritten; no buffer at all: nothing to do.
    assert_eq!(rewrite_offline(dir.path(), true, |_| None).unwrap(), 0);
    let none = dir.path().join("none");
    assert_eq!(rewrite_offline(&none, true, |_| None).unwrap(), 0);
}

#[test]
fn the_reader_reports_corruption_that_appears_while_running_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _, _) = open_real(dir.path());
    let all: Vec<_> = (0..3).map(payload).collect();
    b.append(&all).unwrap();
    let seg = segment_path(dir.path(), 1);
    let mut data = stdfs::read(&seg).unwrap();
    let second = MAGIC.len() + record_len(all[0].len()) as usize;
    data[second + 9] ^= 0xff;
    stdfs::write(&seg, &data).unwrap();
    let mut r = b.reader();
    assert_eq!(record(&mut r).unwrap().payload, all[0]);
    let Some(Item::Corrupt(c)) = r.next(WAIT).unwrap() else {
        panic!("corruption not reported")
    };
    assert_eq!(c.bytes.len(), record_len(all[1].len()) as usize);
    assert_eq!(record(&mut r).unwrap().payload, all[2]);
    assert!(r.next(WAIT).unwrap().is_none());
}

#[test]
fn a_drained_current_segment_can_be_rolled_past_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _, _) = open_real(dir.path());
    b.append(&[payload(1), payload(2)]).unwrap();
    assert!(!b.roll_if_drained().unwrap(), "not delivered yet");
    let mut r = b.reader();
    let end = record(&mut r).map(|_| record(&mut r).unwrap().end).unwrap();
    r.mark_delivered(end);
    assert!(b.roll_if_drained().unwrap());
    assert_eq!(b.delete_delivered().unwrap(), 1, "the drained segment goes");
    b.append(&[payload(3)]).unwrap();
    assert_eq!(record(&mut r).unwrap().payload, payload(3));
    drop((b, r));
    let (_, _, seen) = open_real(dir.path());
    assert_eq!(seen, vec![payload(3)]);
}

#[test]
fn a_segment_left_empty_by_a_failed_roll_does_not_wedge_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _, _) = open_real(dir.path());
    b.append(&[payload(1)]).unwrap();
    // What a roll that failed at the worst moment leaves: the next segment, empty.
    stdfs::write(segment_path(dir.path(), 2), b"").unwrap();
    let big: Vec<_> = (0..30).map(payload).collect();
    b.append(&big).unwrap();
    drop(b);
    let (_, _, seen) = open_real(dir.path());
    assert_eq!(seen.len(), 31);
}

/// What the workload below did, to check what a reader finds afterwards.
#[derive(Debug, Default)]
struct Ledger {
    /// Ids whose append returned `Ok`, in order.
    acked: Vec<u64>,
    /// Every id ever passed to `append`.
    attempted: HashSet<u64>,
    /// Ids the sink marked delivered (their segments may be deleted).
    delivered: HashSet<u64>,
    /// False once a restart happened while a failed append was not yet undone (its
    /// records, if whole, are then part of the log, as after a crash).
    dirty: bool,
}

impl Ledger {
    /// The invariant: every acknowledged, undelivered record exactly once and in order;
    /// no record twice; nothing that was never appended. When `strict`, also nothing that
    /// was not acknowledged (no crash happened, so a failed append must have left no
    /// trace). After a power cut, a record whose append failed or was cut short may
    /// survive if its bytes reached the disk whole: that is a crash between the fsync and
    /// the acknowledgement, and the broker's redelivery of it is then a duplicate.
    fn check(&self, read: &[u64], strict: bool) -> Result<(), TestCaseError> {
        let mut seen = HashSet::new();
        for id in read {
            prop_assert!(seen.insert(*id), "record {} read twice: {:?}", id, read);
            prop_assert!(self.attempted.contains(id), "record {} never appended", id);
        }
        let index: std::collections::HashMap<u64, usize> = self
            .acked
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i))
            .collect();
        let acked_order: Vec<usize> = read
            .iter()
            .filter_map(|id| index.get(id).copied())
            .collect();
        prop_assert!(
            acked_order.windows(2).all(|w| w[0] < w[1]),
            "out of order: {:?}",
            read
        );
        for id in &self.acked {
            if !self.delivered.contains(id) {
                prop_assert!(
                    seen.contains(id),
                    "acknowledged record {} lost; read {:?}",
                    id,
                    read
                );
            }
        }
        if strict {
            for id in read {
                prop_assert!(index.contains_key(id), "unacknowledged record {} read", id);
            }
        }
        Ok(())
    }
}

fn id_payload(id: u64, filler: usize) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.resize(8 + filler, b'.');
    p
}

fn id_of(p: &[u8]) -> u64 {
    u64::from_be_bytes(p[..8].try_into().unwrap())
}

#[derive(Debug, Clone)]
enum Op {
    /// A batch of this many records (filler lengths).
    Append(Vec<usize>),
    Read(usize),
    Deliver,
    /// Roll past a fully delivered current segment (what a full disk asks for).
    Roll,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => prop::collection::vec(0usize..90, 1..6).prop_map(Op::Append),
        3 => (1usize..6).prop_map(Op::Read),
        2 => Just(Op::Deliver),
        1 => Just(Op::Roll),
        1 => Just(Op::Reopen),
    ]
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        Just(Fault::NoSpace),
        Just(Fault::Io),
        Just(Fault::ShortWrite),
        Just(Fault::FailedSync)
    ]
}

const SEGMENT: u64 = 300;
const LIMIT: u64 = 3000;

fn model_open(fs: &ModelFs, recovered: &mut Vec<u64>) -> Option<Buffer> {
    let shared: SharedFs = Arc::new(fs.clone());
    Buffer::open(shared, Path::new("buf"), SEGMENT, LIMIT, |item| {
        if let Recovered::Record(p) = item {
            recovered.push(id_of(p))
        }
    })
    .ok()
    .map(|(b, _)| b)
}

/// Runs `ops` like the ingest worker and the sink would (a failed batch is retried with
/// the same records before anything new), with `faults` planned and the machine dying at
/// `crash` (if any). Returns the ledger; checks what the live reader returns as it goes.
fn run_workload(
    fs: &ModelFs,
    ops: &[Op],
    faults: &[(u64, Fault)],
    crash: Option<u64>,
) -> Result<Ledger, TestCaseError> {
    let mut ledger = Ledger::default();
    let mut recovered = Vec::new();
    let Some(mut b) = model_open(fs, &mut recovered) else {
        return Ok(ledger);
    };
    for (at, f) in faults {
        fs.fail_at(fs.ops() + at, *f);
    }
    if let Some(c) = crash {
        fs.crash_at(fs.ops() + c);
    }
    let mut r = b.reader();
    // Ids the live reader must return next: acknowledged, not yet read.
    let mut unread: std::collections::VecDeque<u64> = Default::default();
    let mut retry: Option<Vec<Vec<u8>>> = None;
    let mut next_id = 0u64;
    let mut last_end = None;
    let mut read_ids = Vec::new();
    for op in ops {
        if fs.is_dead() {
            break;
        }
        match op {
            Op::Append(fillers) => {
                let batch = retry.take().unwrap_or_else(|| {
                    fillers
                        .iter()
                        .map(|f| {
                            next_id += 1;
                            id_payload(next_id, *f)
                        })
                        .collect()
                });
                ledger.attempted.extend(batch.iter().map(|p| id_of(p)));
                match b.append(&batch) {
                    Ok(_) => {
                        for p in &batch {
                            ledger.acked.push(id_of(p));
                            unread.push_back(id_of(p));
                        }
                    }
                    Err(BufferError::Full { .. }) => {}
                    Err(_) => retry = Some(batch),
                }
            }
            Op::Read(n) => {
                for _ in 0..*n {
                    match r.next(Duration::ZERO) {
                        Ok(Some(Item::Record(e))) => {
                            let id = id_of(&e.payload);
                            prop_assert_eq!(Some(id), unread.pop_front(), "live reader order");
                            read_ids.push(id);
                            last_end = Some(e.end);
                        }
                        Ok(Some(Item::Corrupt(c))) => {
                            prop_assert!(false, "live reader found corruption at {:?}", c.start)
                        }
                        Ok(None) => {
                            prop_assert!(unread.is_empty(), "durable records not readable");
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            Op::Deliver => {
                if let Some(end) = last_end {
                    r.mark_delivered(end);
                    ledger.delivered.extend(read_ids.drain(..));
                    let _ = b.delete_delivered();
                }
            }
            Op::Roll => {
                if let Ok(true) = b.roll_if_drained() {
                    let _ = b.delete_delivered();
                }
            }
            Op::Reopen => {
                // A restart: the in-memory retry is gone (the broker redelivers it).
                ledger.dirty |= b.damage.is_some();
                retry = None;
                drop((b, r));
                let mut seen = Vec::new();
                let Some(nb) = model_open(fs, &mut seen) else {
                    return Ok(ledger);
                };
                if !fs.is_dead() {
                    ledger.check(&seen, !ledger.dirty)?;
                }
                b = nb;
                r = b.reader();
                unread = seen
                    .iter()
                    .copied()
                    .filter(|id| !ledger.delivered.contains(id))
                    .collect();
                // Delivered records may come again (at least once); the reader skips them.
                read_ids.clear();
                last_end = None;
                let mut skipped = 0;
                for id in &seen {
                    if ledger.delivered.contains(id) {
                        skipped += 1;
                    } else {
                        break;
                    }
                }
                for _ in 0..skipped {
                    if let Ok(Some(Item::Record(e))) = r.next(Duration::ZERO) {
                        last_end = Some(e.end);
                    }
                }
            }
        }
    }
    ledger.dirty |= b.damage.is_some();
    Ok(ledger)
}

/// After the workload: power cut (if the machine died) or a clean reopen, then read all.
fn read_back(fs: &ModelFs, ledger: &Ledger, crashed: bool) -> Result<(), TestCaseError> {
    if crashed {
        fs.power_cut();
    }
    // A fault or power cut planned past the end of the workload would hit the reopen (a
    // start-up error the service manager retries); the reopen here is the next, clean
    // start.
    fs.clear_plan();
    let mut recovered = Vec::new();
    let b = model_open(fs, &mut recovered);
    prop_assert!(b.is_some(), "buffer does not open after the faults");
    ledger.check(&recovered, !crashed && !ledger.dirty)?;
    let mut r = b.map(|b| b.reader()).into_iter().next().unwrap();
    let mut live = Vec::new();
    while let Some(item) = r.next(Duration::ZERO).unwrap() {
        match item {
            Item::Record(e) => live.push(id_of(&e.payload)),
            Item::Corrupt(c) => prop_assert!(false, "corruption after recovery at {:?}", c.start),
        }
    }
    prop_assert_eq!(live, recovered);
    Ok(())
}

/// A fixed workload with segment rolls, deliveries and reopens.
fn fixed_workload() -> Vec<Op> {
    let mut ops = Vec::new();
    for i in 0..14 {
        ops.push(Op::Append(vec![10 + i * 7, 30, i * 3]));
        if i % 3 == 2 {
            ops.push(Op::Read(4));
            ops.push(Op::Deliver);
        }
        if i == 5 || i == 11 {
            ops.push(Op::Read(100));
            ops.push(Op::Deliver);
            ops.push(Op::Roll);
        }
        if i == 8 {
            ops.push(Op::Reopen);
        }
    }
    // The retry of a failed last batch.
    ops.push(Op::Append(vec![5]));
    ops.push(Op::Append(vec![5]));
    ops
}

#[test]
fn every_fault_at_every_operation_and_a_power_cut_at_every_operation() {
    let ops = fixed_workload();
    let probe = ModelFs::new();
    let mut quiet = Vec::new();
    model_open(&probe, &mut quiet);
    let base = probe.ops();
    run_workload(&probe, &ops, &[], None).unwrap();
    let total = probe.ops() - base;
    assert!(
        total > 80,
        "the workload exercises the log ({total} operations)"
    );
    let mut cases = 0;
    for at in 0..total {
        for f in [
            Fault::NoSpace,
            Fault::Io,
            Fault::ShortWrite,
            Fault::FailedSync,
        ] {
            // The fault alone: nothing acknowledged is lost, nothing else appears.
            let fs = ModelFs::new();
            let ledger = run_workload(&fs, &ops, &[(at, f)], None).unwrap();
            read_back(&fs, &ledger, false).unwrap_or_else(|e| panic!("{f:?} at {at}: {e}"));
            // The same fault, then a power cut a few operations later.
            for later in [0, 1, 3] {
                let fs = ModelFs::new();
                let ledger = run_workload(&fs, &ops, &[(at, f)], Some(at + later)).unwrap();
                read_back(&fs, &ledger, true)
                    .unwrap_or_else(|e| panic!("{f:?} at {at}, cut at +{later}: {e}"));
                cases += 1;
            }
        }
        let fs = ModelFs::new();
        let ledger = run_workload(&fs, &ops, &[], Some(at)).unwrap();
        read_back(&fs, &ledger, true).unwrap_or_else(|e| panic!("power cut at {at}: {e}"));
        cases += 2;
    }
    assert!(cases > 1000, "{cases} interleavings");
    println!(
        "model: {total} operations, {cases} fault and power-cut interleavings, invariant held"
    );
}

#[test]
fn a_full_disk_refuses_then_resumes_when_space_returns() {
    let fs = ModelFs::new();
    let mut seen = Vec::new();
    let mut b = model_open(&fs, &mut seen).unwrap();
    fs.set_capacity(Some(700));
    let mut acked = Vec::new();
    let mut refused = 0;
    for i in 0..40u64 {
        let p = id_payload(i, 40);
        match b.append(std::slice::from_ref(&p)) {
            Ok(_) => acked.push(i),
            Err(e) => {
                assert!(e.is_no_space(), "{e}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0 && !acked.is_empty());
    fs.set_capacity(None);
    b.append(&[id_payload(99, 3)]).unwrap();
    acked.push(99);
    drop(b);
    let mut recovered = Vec::new();
    model_open(&fs, &mut recovered).unwrap();
    assert_eq!(
        recovered, acked,
        "exactly the acknowledged records, no stray bytes"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Random workloads, random faults, a power cut at a random point (or none).
    #[test]
    fn random_faults_and_power_cuts_keep_the_invariant(
        ops in prop::collection::vec(op(), 1..40),
        faults in prop::collection::vec((0u64..200, fault()), 0..4),
        crash in prop::option::of(0u64..250),
    ) {
        let fs = ModelFs::new();
        let ledger = run_workload(&fs, &ops, &faults, crash)?;
        let crashed = fs.is_dead();
        read_back(&fs, &ledger, crashed)?;
    }
}
