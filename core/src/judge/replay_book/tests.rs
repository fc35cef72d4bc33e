//! The replay book: windows, reused counters, time collisions, snapshots of every version.

use super::*;

const T1: Tag = [1; 8];
const T2: Tag = [2; 8];

/// A stored frame of `t`/`d` (epoch 1) with one air-quality reading at second 100.
fn rec(counter: u32, tag: Tag) -> Record {
    Record {
        tenant: "t".into(),
        device: "d".into(),
        epoch: 1,
        counter,
        readings: 1,
        tag: Some(tag),
        lines: "air_quality pm25=1 100000\n".into(),
    }
}

fn secs(kind: u8, first: u32, last: u32) -> Seconds {
    Seconds { kind, first, last }
}

#[test]
fn counters_a_thousand_apart_never_share_a_second() {
    let mut b = ReplayBook::default();
    let aq = |c, s| (c, Some(secs(1, s, s)));
    for (c, s) in [aq(3, 100), aq(4, 160)] {
        b.accept_counter("t", "d", 1, c, None, s);
    }
    let who = ("t", "d");
    assert!(
        b.collides(who, 1, 1003, &secs(1, 100, 100)),
        "3 and 1003 at 100"
    );
    assert!(
        b.collides(who, 1, 1003, &secs(1, 90, 130)),
        "a span over 100"
    );
    assert!(
        !b.collides(who, 1, 1003, &secs(1, 161, 200)),
        "after the block"
    );
    assert!(
        !b.collides(who, 1, 999, &secs(1, 100, 100)),
        "same block: by mod"
    );
    assert!(
        !b.collides(who, 1, 1003, &secs(3, 100, 100)),
        "status: own series"
    );
    assert!(!b.collides(("t", "e"), 1, 1003, &secs(1, 100, 100)));
    // A new key epoch restarts the counter, not the seconds.
    b.accept_counter("t", "d", 2, 0, None, Some(secs(1, 500, 500)));
    assert!(
        b.collides(who, 2, 3, &secs(1, 100, 100)),
        "epoch 1's block 0"
    );
    assert!(!b.collides(who, 2, 3, &secs(1, 500, 501)), "its own block");
    // Past SPANS blocks the oldest merge: still refused, the newest still exact.
    for blk in 1..=(SPANS as u32 + 5) {
        b.accept_counter(
            "t",
            "d",
            2,
            blk * BLOCK,
            None,
            Some(secs(1, 1000 + blk, 1000 + blk)),
        );
    }
    assert!(
        b.collides(who, 2, 7, &secs(1, 100, 100)),
        "merged, still there"
    );
    let snap = b.snapshot();
    assert_eq!(ReplayBook::from_snapshot(&snap), Ok(b.clone()));
    let slot = b.slot("t", "d").unwrap();
    assert_eq!(
        slot.spans.iter().filter(|s| s.block != MERGED).count(),
        SPANS
    );
    assert_eq!(slot.spans.iter().filter(|s| s.block == MERGED).count(), 1);
    let top = SPANS as u32 + 5;
    assert!(!b.collides(who, 2, top * BLOCK + 1, &secs(1, 1000 + top, 1000 + top)));
    assert!(b.collides(
        who,
        2,
        top * BLOCK + 1,
        &secs(1, 1000 + top - 1, 1000 + top)
    ));
}

#[test]
fn epochs_gaps_and_snapshot() {
    let mut b = ReplayBook::default();
    assert_eq!(b.accept_counter("t", "d", 1, 10, Some(T1), None), Gap::None);
    assert_eq!(
        b.accept_counter("t", "d", 1, 14, Some(T2), None),
        Gap::Skipped { from: 10, count: 3 },
        "11, 12, 13 missing"
    );
    assert_eq!(b.highest("t", "d", 1), Some(14));
    assert_eq!(b.missing("t", "d"), Some(3));
    assert_eq!(b.accept_counter("t", "d", 1, 11, None, None), Gap::Late);
    assert_eq!(
        b.accept_counter("t", "d", 1, 11, None, None),
        Gap::None,
        "a duplicate fills nothing"
    );
    assert_eq!(b.missing("t", "d"), Some(2), "11 arrived, once");
    assert_eq!(b.seen("t", "d", 1, 14, &T2), Seen::Duplicate);
    assert_eq!(b.seen("t", "d", 1, 14, &T1), Seen::Reused);
    assert_eq!(b.seen("t", "d", 1, 12, &T1), Seen::Fresh);
    assert_eq!(
        b.seen("t", "d", 2, 0, &T1),
        Seen::Fresh,
        "new epoch restarts"
    );
    assert_eq!(
        b.seen("t", "d", 0, 99, &T1),
        Seen::TooOld,
        "old epoch refused"
    );
    assert_eq!(b.seen("t", "other", 1, 14, &T1), Seen::Fresh);
    b.accept_counter("u", "d", 3, 0, None, None);
    let snap = b.snapshot();
    assert_eq!(ReplayBook::from_snapshot(&snap), Ok(b.clone()));
    for i in 0..snap.len() {
        let mut bad = snap.clone();
        bad[i] ^= 1;
        assert_eq!(
            ReplayBook::from_snapshot(&bad),
            Err(SnapshotError),
            "byte {i}"
        );
    }
    assert_eq!(ReplayBook::from_snapshot(&snap[..3]), Err(SnapshotError));
    b.accept_counter("t", "d", 2, 5, None, None);
    assert_eq!(b.seen("t", "d", 1, 20, &T1), Seen::TooOld);
    assert_eq!(b.missing("t", "d"), Some(2), "kept across key epochs");
    assert_eq!(b.missing("t", "other"), None);
}

#[test]
fn a_version_4_snapshot_loads_with_nothing_missing() {
    let mut b = ReplayBook::default();
    b.accept_counter("t", "d", 1, 10, Some(T1), None);
    b.accept_counter("t", "d", 1, 14, Some(T2), None);
    // VGR5 less its magic, the missing count and the CRC.
    let v5 = b.snapshot();
    let mut v4 = MAGIC_V4.to_vec();
    v4.extend_from_slice(&v5[4..v5.len() - 8]);
    let crc = crc32fast::hash(&v4);
    v4.extend_from_slice(&crc.to_be_bytes());
    let back = ReplayBook::from_snapshot(&v4).unwrap();
    assert_eq!(back.seen("t", "d", 1, 14, &T1), Seen::Reused);
    assert_eq!(back.missing("t", "d"), Some(0));
    assert_eq!(b.missing("t", "d"), Some(3));
}

#[test]
fn every_counter_of_the_window_keeps_its_tag() {
    let mut b = ReplayBook::default();
    for c in 0..(RECENT as u32 + 10) {
        b.accept_counter("t", "d", 1, c, Some([c as u8 + 10; 8]), None);
    }
    // A re-flashed board's counter 3, long after the last 64: another frame, said so.
    assert_eq!(b.seen("t", "d", 1, 3, &T2), Seen::Reused);
    assert_eq!(b.seen("t", "d", 1, 3, &[13; 8]), Seen::Duplicate);
    // A frame below the window does not overwrite the fingerprint of the counter that
    // shares its index.
    b.accept_counter("t", "d", 1, 5000, Some(T1), None);
    b.accept_counter("t", "d", 1, 5000 - WINDOW, Some(T2), None);
    assert_eq!(b.seen("t", "d", 1, 5000, &T1), Seen::Duplicate);
    assert_eq!(b.seen("t", "d", 1, 5000, &T2), Seen::Reused);
    // A second accept of a stored counter keeps its first fingerprint.
    b.accept_counter("t", "d", 1, 5000, None, None);
    assert_eq!(b.seen("t", "d", 1, 5000, &T2), Seen::Reused);
    // Stored with no tag known (lines written again from the database quarantine): a
    // duplicate, whatever the tag.
    b.accept_counter("t", "d", 1, 4000, None, None);
    assert_eq!(b.seen("t", "d", 1, 4000, &T2), Seen::Duplicate);
    // The fingerprints survive a snapshot.
    let back = ReplayBook::from_snapshot(&b.snapshot()).unwrap();
    assert_eq!(back, b);
    assert_eq!(back.seen("t", "d", 1, 5000, &T2), Seen::Reused);
}

#[test]
fn a_version_3_snapshot_keeps_its_last_tags() {
    let mut v3 = MAGIC_V3.to_vec();
    v3.extend_from_slice(&1u32.to_be_bytes());
    for s in ["t", "d"] {
        v3.push(1);
        v3.extend_from_slice(s.as_bytes());
    }
    v3.extend_from_slice(&1u32.to_be_bytes());
    let mut w = ReplayWindow::new();
    for c in [6, 7] {
        w.accept(c);
    }
    v3.extend_from_slice(&w.to_bytes());
    // One tag kept (counter 7), no span.
    v3.push(1);
    v3.extend_from_slice(&7u32.to_be_bytes());
    v3.extend_from_slice(&T1);
    v3.push(0);
    let crc = crc32fast::hash(&v3);
    v3.extend_from_slice(&crc.to_be_bytes());
    let b = ReplayBook::from_snapshot(&v3).unwrap();
    assert_eq!(b.seen("t", "d", 1, 7, &T1), Seen::Duplicate);
    assert_eq!(b.seen("t", "d", 1, 7, &T2), Seen::Reused);
    assert_eq!(
        b.seen("t", "d", 1, 6, &T2),
        Seen::Duplicate,
        "no tag kept for 6"
    );
}

#[test]
fn a_pending_batch_sees_its_own_frames_and_leaves_the_book_alone() {
    let mut b = ReplayBook::default();
    b.accept_counter("t", "d", 1, 5000, Some(T1), None);
    let mut p = b.pending();
    assert_eq!(p.seen("t", "d", 1, 5001, &T1), Seen::Fresh);
    p.accept(&rec(5001, T1));
    assert_eq!(p.seen("t", "d", 1, 5001, &T1), Seen::Duplicate);
    assert_eq!(p.seen("t", "d", 1, 5001, &T2), Seen::Reused);
    p.accept(&rec(8000, T2));
    assert_eq!(
        p.seen("t", "d", 1, 5002, &T2),
        Seen::TooOld,
        "below the moved window"
    );
    drop(p);
    assert_eq!(
        b.seen("t", "d", 1, 5001, &T1),
        Seen::Fresh,
        "book untouched"
    );
}

#[test]
fn version_1_snapshots_still_load() {
    let mut b = ReplayBook::default();
    b.accept_counter("t", "d", 1, 7, None, None);
    let mut v1 = MAGIC_V1.to_vec();
    v1.extend_from_slice(&1u32.to_be_bytes());
    for s in ["t", "d"] {
        v1.push(1);
        v1.extend_from_slice(s.as_bytes());
    }
    v1.extend_from_slice(&1u32.to_be_bytes());
    let mut w = ReplayWindow::new();
    w.accept(7);
    v1.extend_from_slice(&w.to_bytes());
    let crc = crc32fast::hash(&v1);
    v1.extend_from_slice(&crc.to_be_bytes());
    assert_eq!(ReplayBook::from_snapshot(&v1), Ok(b));
}

#[test]
fn a_devices_state_moves_between_books_as_a_head_and_the_blocks_judged() {
    use super::shared::{PRINT_BLOCK, print_block};
    // What a group of gateways passes through its store: one gateway's state of a device,
    // set into another's book (head, then the blocks of the counters to judge), judges
    // those counters as the first would.
    let mut a = ReplayBook::default();
    for c in [0, 1, 2, 1500, 1501] {
        a.accept_with(&rec(c, [c as u8 + 1; 8]), Some(secs(1, 100 + c, 100 + c)));
    }
    a.accept_counter("t", "other", 1, 7, Some(T1), None);
    let head = a.device_head("t", "d").unwrap();
    assert!(head.len() < 400, "a head is small: {}", head.len());
    let mut b = ReplayBook::default();
    b.set_device_head("t", "d", Some(&head)).unwrap();
    // Without its block a stored counter's tag is unknown: a duplicate, never "reused".
    assert_eq!(b.seen("t", "d", 1, 1, &[9; 8]), Seen::Duplicate);
    let block = a.device_prints("t", "d", print_block(1)).unwrap();
    b.set_device_prints("t", "d", print_block(1), Some(&block))
        .unwrap();
    for (c, tag) in [(1, [2; 8]), (1, [9; 8]), (3, T1), (1502, T1)] {
        assert_eq!(b.seen("t", "d", 1, c, &tag), a.seen("t", "d", 1, c, &tag));
    }
    assert_eq!(b.seen("t", "d", 1, 1, &[9; 8]), Seen::Reused);
    let s = secs(1, 1601, 1601);
    assert!(b.collides(("t", "d"), 1, 3, &s) && a.collides(("t", "d"), 1, 3, &s));
    assert_eq!(b.missing("t", "d"), a.missing("t", "d"));
    assert_eq!(b.device_head("t", "d"), Some(head.clone()));
    assert_eq!(
        b.device_prints("t", "d", print_block(1)),
        Some(block.clone())
    );
    assert_eq!(print_block(1500), 1500 / PRINT_BLOCK);
    // A new head forgets the fingerprints until their blocks come again.
    b.set_device_head("t", "d", Some(&head)).unwrap();
    assert_eq!(b.seen("t", "d", 1, 1, &[9; 8]), Seen::Duplicate);
    // Damaged bytes change nothing; no head forgets the device.
    let mut bad = head.clone();
    bad[10] ^= 1;
    assert_eq!(b.set_device_head("t", "d", Some(&bad)), Err(SnapshotError));
    assert_eq!(
        b.set_device_head("t", "d", Some(&head[..8])),
        Err(SnapshotError)
    );
    assert_eq!(
        b.set_device_prints("t", "d", 0, Some(&head)),
        Err(SnapshotError)
    );
    assert_eq!(
        b.set_device_prints("t", "nobody", 0, Some(&block)),
        Err(SnapshotError)
    );
    assert_eq!(b.device_head("t", "d"), Some(head));
    b.set_device_head("t", "d", None).unwrap();
    assert_eq!(b.seen("t", "d", 1, 1, &T2), Seen::Fresh);
}
