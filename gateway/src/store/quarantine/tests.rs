//! The quarantine: bounds, rotation under crashes, replay marks, offline rewrites.

use super::*;
use crate::store::fs::model::{Fault, ModelFs};
use std::sync::Arc;

fn entry(i: u64) -> Entry {
    Entry {
        received_ms: i,
        origin: Origin::Mqtt,
        topic: "vigie/v1/lyon/aq-1/up".into(),
        reason: "unknown_device".into(),
        detail: "unknown_device".into(),
        payload: "11223344".into(),
        acknowledged: false,
    }
}

/// The entry of an acknowledged frame (refused after its tag verified) of `device`.
fn acked(i: u64, device: &str) -> Entry {
    Entry {
        topic: format!("vigie/v1/lyon/{device}/up"),
        reason: "counter_reused".into(),
        detail: "counter_reused".into(),
        acknowledged: true,
        ..entry(i)
    }
}

#[test]
fn rotation_never_evicts_the_entries_of_acknowledged_frames() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = Quarantine::open(crate::store::fs::real(), dir.path(), 4_000).unwrap();
    let mut evicted = 0;
    for i in 0..200 {
        let e = if i % 50 == 0 {
            acked(i, "aq-2")
        } else {
            entry(i)
        };
        q.add(&e);
        evicted += q.sync().unwrap();
    }
    let (entries, _) = read_all(dir.path()).unwrap();
    let kept: Vec<u64> = entries
        .iter()
        .filter(|e| e.acknowledged)
        .map(|e| e.received_ms)
        .collect();
    assert_eq!(kept, [0, 50, 100, 150], "every acknowledged entry, once");
    assert!(evicted > 100, "the others rotate out: {evicted}");
    assert_eq!(
        entries.len() as u64 + evicted,
        200,
        "every entry kept or counted"
    );
    // And across a reopen, counted again.
    let q = Quarantine::open(crate::store::fs::real(), dir.path(), 4_000).unwrap();
    assert_eq!(q.kept_total, 4 * (21 + 8 + 160));
}

#[test]
fn a_crash_at_any_step_of_a_rotation_loses_no_acknowledged_entry() {
    for at in 0..12 {
        let fs = ModelFs::new();
        let shared: SharedFs = Arc::new(fs.clone());
        let mut q = Quarantine::open(shared.clone(), Path::new("q"), 2_000).unwrap();
        q.add(&acked(0, "aq-2"));
        q.sync().unwrap();
        // Fill to two rotations, then fail one step of the next and cut the power.
        for i in 1..12 {
            q.add(&entry(i));
            q.sync().unwrap();
        }
        fs.fail_at(fs.ops() + at, Fault::Io);
        for i in 12..20 {
            q.add(&entry(i));
            let _ = q.sync();
        }
        fs.power_cut();
        let q = Quarantine::open(shared, Path::new("q"), 2_000).unwrap();
        let (got, bad) = read_all_on(&fs, Path::new("q")).unwrap();
        let kept = got.iter().filter(|e| e.acknowledged).count();
        assert_eq!((kept, bad), (1, 0), "fault at op +{at}");
        assert_eq!(q.kept_total, 21 + 8 + 160);
    }
}

#[test]
fn a_torn_tail_is_cut_at_open_so_the_next_entry_stands_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = Quarantine::open(crate::store::fs::real(), dir.path(), 1 << 20).unwrap();
    q.add(&entry(1));
    q.sync().unwrap();
    drop(q);
    // A crash in the middle of the next line.
    let mut text = std::fs::read(dir.path().join(CURRENT)).unwrap();
    text.extend_from_slice(b"{\"received_ms\":2,\"orig");
    std::fs::write(dir.path().join(CURRENT), &text).unwrap();
    let mut q = Quarantine::open(crate::store::fs::real(), dir.path(), 1 << 20).unwrap();
    q.add(&entry(3));
    q.sync().unwrap();
    assert_eq!(read_all(dir.path()).unwrap(), (vec![entry(1), entry(3)], 0));
}

#[test]
fn acknowledged_entries_have_a_bound_in_all_and_per_device() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = Quarantine::open(crate::store::fs::real(), dir.path(), 16_000).unwrap();
    let one = entry_bytes("vigie/v1/lyon/aq-1/up", &[0x11, 0x22, 0x33, 0x44]);
    // A sixteenth per device: 1,000 bytes, five entries of 189.
    let mut n = 0;
    while q.admits_kept("vigie/v1/lyon/aq-1/up", one) {
        q.add(&acked(n, "aq-1"));
        n += 1;
    }
    assert_eq!(n, 5);
    assert!(
        q.admits_kept("vigie/v1/lyon/aq-2/up", one),
        "another device has room"
    );
    // A quarter in all: 4,000 bytes.
    for d in 2..6 {
        let topic = format!("vigie/v1/lyon/aq-{d}/up");
        while q.admits_kept(&topic, one) {
            q.add(&acked(n, &format!("aq-{d}")));
            n += 1;
        }
    }
    assert!(!q.admits_kept("vigie/v1/lyon/aq-9/up", one));
    assert!(q.kept_total <= 4_000);
    q.sync().unwrap();
    assert_eq!(read_all(dir.path()).unwrap().0.len() as u64, n);
}

#[test]
fn bounded_keeps_newest_and_counts_evictions() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = Quarantine::open(crate::store::fs::real(), dir.path(), 2_000).unwrap();
    let mut evicted = 0;
    for i in 0..100 {
        q.add(&entry(i));
        evicted += q.sync().unwrap();
    }
    let (entries, bad) = read_all(dir.path()).unwrap();
    assert_eq!(bad, 0);
    assert_eq!(
        entries.len() as u64 + evicted,
        100,
        "every entry kept or counted"
    );
    assert_eq!(entries.last().unwrap().received_ms, 99);
    let on_disk: u64 = [CURRENT, PREVIOUS]
        .iter()
        .map(|n| {
            std::fs::metadata(dir.path().join(n))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();
    assert!(on_disk <= 2_000, "{on_disk}");
}

#[test]
fn replay_removes_only_what_was_there_at_the_mark() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = Quarantine::open(crate::store::fs::real(), dir.path(), 1 << 20).unwrap();
    for i in 0..3 {
        q.add(&entry(i));
    }
    let (entries, mark) = q.mark().unwrap();
    assert_eq!(entries.len(), 3);
    // Re-rejected during the replay, and a new rejection.
    q.add(&entry(1));
    q.add(&entry(7));
    q.sync().unwrap();
    // A crash here keeps all five: nothing removed before the re-submission is durable.
    assert_eq!(read_all(dir.path()).unwrap().0.len(), 5);
    q.drop_before(mark).unwrap();
    assert_eq!(read_all(dir.path()).unwrap().0, vec![entry(1), entry(7)]);
}

#[test]
fn a_failed_write_leaves_nothing_and_the_retry_writes_once() {
    for fault in [
        Fault::NoSpace,
        Fault::Io,
        Fault::ShortWrite,
        Fault::FailedSync,
    ] {
        for at in 0..4 {
            let fs = ModelFs::new();
            let shared: SharedFs = Arc::new(fs.clone());
            let mut q = Quarantine::open(shared, Path::new("q"), 1 << 20).unwrap();
            q.add(&entry(1));
            q.sync().unwrap();
            q.add(&entry(2));
            fs.fail_at(fs.ops() + at, fault);
            let mut tries = 0;
            while q.sync().is_err() {
                tries += 1;
                assert!(tries < 5);
            }
            fs.power_cut();
            let (got, bad) = read_all_on(&fs, Path::new("q")).unwrap();
            assert_eq!(
                (got, bad),
                (vec![entry(1), entry(2)], 0),
                "{fault:?} at {at}"
            );
        }
    }
}

#[test]
fn an_offline_rewrite_removes_and_changes_entries_in_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = Quarantine::open(crate::store::fs::real(), dir.path(), 1_000).unwrap();
    for i in 0..12 {
        q.add(&entry(i));
        q.sync().unwrap();
    }
    let (before, _) = read_all(dir.path()).unwrap();
    assert!(dir.path().join(PREVIOUS).exists(), "rotated once at least");
    let touched = before.iter().filter(|e| e.received_ms % 3 != 2).count() as u64;
    let edit = |e: Entry| match e.received_ms % 3 {
        0 => None,
        1 => Some(Entry {
            payload: "00".into(),
            ..e
        }),
        _ => Some(e),
    };
    // A dry run counts and writes nothing.
    assert_eq!(rewrite_offline(dir.path(), false, edit).unwrap(), touched);
    assert_eq!(read_all(dir.path()).unwrap().0, before);
    assert_eq!(rewrite_offline(dir.path(), true, edit).unwrap(), touched);
    let want: Vec<_> = before.into_iter().filter_map(edit).collect();
    assert_eq!(read_all(dir.path()).unwrap().0, want);
}

#[test]
fn old_database_entries_are_read_with_their_origin() {
    let dir = tempfile::tempdir().unwrap();
    let old = "{\"received_ms\":1,\"topic\":\"database:lyon\",\"reason\":\"database_rejected\",\"detail\":\"HTTP 400\",\"payload\":\"00\"}\n";
    std::fs::write(dir.path().join(CURRENT), old).unwrap();
    let (got, _) = read_all(dir.path()).unwrap();
    assert_eq!(
        (got[0].origin, got[0].topic.as_str()),
        (Origin::Database, "lyon")
    );
}
