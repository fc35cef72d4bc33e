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
            Item::Record(e) => out.push(e.payload.to_vec()),
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
    // Every payload kept while the reader moves on to new windows: one refilled under a
    // record still held would show here.
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
fn staged_records_are_read_only_once_published_and_retracted_ones_never() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _, _) = open_real(dir.path());
    let mut r = b.reader();
    b.append(&[payload(0)]).unwrap();
    // Enough to roll into new segments (256 bytes each): a retraction removes them too.
    let retracted: Vec<_> = (100..112).map(payload).collect();
    let staged = b.stage(&retracted).unwrap();
    assert_eq!(drain(&mut r), [payload(0)], "staged: not readable yet");
    let segments = stdfs::read_dir(dir.path()).unwrap().count();
    b.retract(staged);
    assert!(stdfs::read_dir(dir.path()).unwrap().count() < segments);
    let kept: Vec<_> = (1..13).map(payload).collect();
    let staged = b.stage(&kept).unwrap();
    assert!(drain(&mut r).is_empty());
    b.publish(staged);
    assert_eq!(drain(&mut r), kept);
    b.append(&[payload(13)]).unwrap();
    assert_eq!(drain(&mut r), [payload(13)]);
    drop((b, r));
    // What a restart finds: the published records, never the retracted ones.
    let (_, rec, seen) = open_real(dir.path());
    assert_eq!((rec.cut_bytes, rec.corrupt_records), (0, 0));
    assert_eq!(seen, (0..14).map(payload).collect::<Vec<_>>());
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

/// Every fault the filesystem model injects, and power cuts, against a ledger of what was
/// acknowledged.
mod faults;
