//! The buffer under injected faults: each failing call of the filesystem model at each
//! operation, power cuts that drop unsynced writes, a full disk; a ledger of what was
//! acknowledged says what must survive.

use super::*;

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
