//! The sink writing to VictoriaMetrics: writes count as stored once its counters of
//! dropped rows vouch for them (`confirm.rs`).

use super::*;

/// A sink writing to VictoriaMetrics (`start_with` with a counter script).
fn start_counted(records: Vec<Vec<u8>>, counters: Vec<Option<u64>>) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let q = Quarantine::open(crate::store::fs::real(), &dir.path().join("q"), 1 << 20).unwrap();
    start_with(
        dir,
        q,
        BTreeMap::new(),
        None,
        records,
        Some(Vm {
            counters,
            pace: Duration::ZERO,
        }),
        test_config(),
    )
}

#[test]
fn a_victoria_metrics_write_counts_as_stored_only_once_its_counters_vouch_for_it() {
    // Counters unreadable at first: nothing written (the commune held), then 0 for good.
    let run = start_counted(vec![record("a", 1, "m v=1 1")], vec![None, None, Some(0)]);
    let started = Instant::now();
    run.wait_for("written", |r| !r.lines().is_empty());
    assert_eq!(stored(&run.metrics), 0, "written, not yet confirmed");
    run.wait_for("confirmed", |r| stored(&r.metrics) == 1);
    assert!(
        started.elapsed() >= confirm::SETTLE,
        "read after the settle time"
    );
    let (all, metrics, dir) = run.stop();
    assert_eq!(all, ["a:m v=1 1"]);
    assert_eq!(refused(&metrics), 0);
    let (q, _) = quarantine::read_all(&dir.path().join("q")).unwrap();
    assert!(q.is_empty());
}

#[test]
fn lines_victoria_metrics_dropped_after_a_204_go_to_the_quarantine() {
    // 0 before the writes, then 2 dropped. Two communes in one batch: each one's lines are
    // read back from the buffer on their own.
    let records = vec![
        record("a", 1, "m v=1 1"),
        record("b", 1, "m v=3 3"),
        record("a", 2, "m v=2 2"),
    ];
    let run = start_counted(records, vec![Some(0), Some(2)]);
    run.wait_for("kept", |r| {
        quarantine::read_all(&r.dir.path().join("q")).is_ok_and(|(q, _)| q.len() >= 2)
    });
    let (_, metrics, dir) = run.stop();
    assert_eq!(stored(&metrics), 0, "nothing vouched for");
    let (q, _) = quarantine::read_all(&dir.path().join("q")).unwrap();
    let kept = |tenant: &str| -> String {
        q.iter()
            .filter(|e| e.reason == "database_discarded" && e.topic == tenant)
            .map(|e| String::from_utf8(hex::decode(&e.payload).unwrap()).unwrap())
            .collect()
    };
    assert_eq!(kept("a"), "m v=1 1\nm v=2 2\n");
    assert_eq!(kept("b"), "m v=3 3\n");
}

/// VictoriaMetrics dropping rows in the middle of a drain whose batches are written while
/// the next is read ahead (`overlap.rs`): each line ends either stored, counted once its
/// counters vouched for it, or in the database quarantine, never both, never neither; and
/// the head passes every record once all is settled. 20 batches of 100 lines, two
/// tenants, each write taking 60 ms so that the counters are read while batches still
/// flow: unchanged at first, then risen once (the writes waiting then go to the
/// quarantine), then unchanged again.
#[test]
fn rows_victoria_metrics_dropped_while_batches_overlap_are_kept_or_stored_never_lost() {
    let tenant = |i: u32| if i.is_multiple_of(2) { "lyon" } else { "nice" };
    let records: Vec<_> = (0..2_000)
        .map(|i| record(tenant(i), i, &format!("m v={i} {i}")))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let q = Quarantine::open(crate::store::fs::real(), &dir.path().join("q"), 4 << 20).unwrap();
    let vm = Vm {
        counters: vec![Some(0), Some(0), Some(0), Some(7)],
        pace: Duration::from_millis(60),
    };
    let run = start_with(
        dir,
        q,
        BTreeMap::new(),
        None,
        records,
        Some(vm),
        test_config(),
    );
    let kept = |r: &Run| -> Vec<String> {
        let (q, _) = quarantine::read_all(&r.dir.path().join("q")).unwrap();
        q.iter()
            .filter(|e| e.reason == "database_discarded")
            .flat_map(|e| {
                let lines = String::from_utf8(hex::decode(&e.payload).unwrap()).unwrap();
                let tenant = e.topic.clone();
                lines
                    .lines()
                    .map(|l| format!("{tenant}:{l}"))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    run.wait_for("every line settled", |r| {
        stored(&r.metrics) + kept(r).len() as u64 >= 2_000 && r.buffer.pending_bytes() == 0
    });
    let quarantined = kept(&run);
    let (written, metrics, _dir) = run.stop();
    assert!(
        (1..2_000).contains(&quarantined.len()),
        "some lines dropped, not all: {}",
        quarantined.len()
    );
    assert_eq!(stored(&metrics) + quarantined.len() as u64, 2_000);
    let all: std::collections::BTreeSet<_> = (0..2_000)
        .map(|i| format!("{}:m v={i} {i}", tenant(i)))
        .collect();
    let kept: std::collections::BTreeSet<_> = quarantined.iter().cloned().collect();
    assert_eq!(kept.len(), quarantined.len(), "no line quarantined twice");
    assert!(kept.is_subset(&all));
    // What was not quarantined was written, and counted as stored.
    let written: std::collections::BTreeSet<_> = written.into_iter().collect();
    assert!(all.difference(&kept).all(|l| written.contains(l)));
}
