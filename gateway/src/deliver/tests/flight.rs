//! Writes in flight: several batches at once, answers taken in order, a slow commune on
//! its own cursor.

use super::*;

/// `n` records alternating between `tenants`, one line each.
fn alternating(tenants: &[&str], n: u32) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let tenant = tenants[i as usize % tenants.len()];
            record(tenant, i, &format!("m v={i} {i}"))
        })
        .collect()
}

/// The distinct lines stored for `tenant` (a write dropped unanswered may have been kept
/// by the database before its own cursor wrote it again).
fn distinct(run: &Run, tenant: &str) -> usize {
    let mut lines = run.lines();
    lines.retain(|l| l.starts_with(&format!("{tenant}:")));
    lines.dedup();
    lines.len()
}

/// A sink with nothing buffered yet, lyon's database answering in `delay`.
fn lyon_answering_in(delay: Duration) -> Run {
    let run = start(BTreeMap::new(), None, Vec::new());
    run.delays.lock().unwrap().insert("lyon".into(), delay);
    run
}

#[test]
fn several_batches_are_written_at_once_and_each_reading_counted_once() {
    let mut run = lyon_answering_in(Duration::from_millis(50));
    run.buffer.append(&alternating(&["lyon"], 1_000)).unwrap();
    run.wait_for("1,000 stored", |r| stored(&r.metrics) >= 1_000);
    let most = run.flying.most.load(Ordering::SeqCst);
    assert!(
        (2..=4).contains(&most),
        "{most} writes at once (batch.in_flight 4)"
    );
    let (all, metrics, _dir) = run.stop();
    assert_eq!(all.len(), 1_000, "each line written once");
    assert_eq!(stored(&metrics), 1_000);
}

#[test]
fn a_slow_database_never_slows_the_others_and_its_readings_are_counted_once() {
    let mut run = lyon_answering_in(Duration::from_millis(800));
    let sent = Instant::now();
    run.buffer
        .append(&alternating(&["lyon", "nice"], 800))
        .unwrap();
    run.wait_for("nice stored", |r| {
        r.metrics.readings_stored.of("nice").get() >= 400
    });
    let nice_took = sent.elapsed();
    let lyon_then = run.metrics.readings_stored.of("lyon").get();
    // Each of lyon's writes takes 0.8 s: 4 of them in a row would be 3.2 s before nice's
    // last batch, in flight 4 at a time at least 0.8 s.
    assert!(
        nice_took < Duration::from_millis(700),
        "nice took {nice_took:?} behind a slow lyon"
    );
    assert!(lyon_then < 400, "lyon: {lyon_then} stored by then");
    run.wait_for("lyon stored", |r| distinct(r, "lyon") >= 400);
    run.wait_for("lyon counted", |r| {
        r.metrics.readings_stored.of("lyon").get() >= 400
    });
    assert!(run.metrics.tenant_slow.of("lyon").get() >= 1);
    assert_eq!(run.metrics.tenant_slow.of("nice").get(), 0);
    assert!(
        !matches!(
            run.health.snapshot().tenants.get("lyon"),
            Some(Tenant::Held { .. })
        ),
        "slow is not held: nothing failed"
    );
    let (_, metrics, _dir) = run.stop();
    assert_eq!(
        metrics.readings_stored.of("lyon").get(),
        400,
        "counted once"
    );
    assert_eq!(metrics.readings_stored.of("nice").get(), 400);
}

#[test]
fn at_a_low_rate_too_a_slow_database_never_slows_the_others() {
    let mut run = lyon_answering_in(Duration::from_millis(1_500));
    // Ten small batches, one every 100 ms: the pipeline fills only with time.
    for group in 0..10u32 {
        let records: Vec<_> = (0..4)
            .map(|i| {
                let n = group * 4 + i;
                let tenant = if n % 2 == 0 { "lyon" } else { "nice" };
                record(tenant, n, &format!("m v={n} {n}"))
            })
            .collect();
        run.buffer.append(&records).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let last = Instant::now();
    run.wait_for("nice stored", |r| {
        r.metrics.readings_stored.of("nice").get() >= 20
    });
    let lag = last.elapsed();
    // lyon's writes take 1.5 s each; nice waits at most batch.slow_after (300 ms) behind
    // one of them.
    assert!(
        lag < Duration::from_millis(900),
        "nice's last readings {lag:?} late"
    );
    run.wait_for("lyon stored", |r| {
        r.metrics.readings_stored.of("lyon").get() >= 20
    });
    let (_, metrics, _dir) = run.stop();
    assert_eq!(metrics.readings_stored.of("lyon").get(), 20, "counted once");
    assert!(metrics.tenant_slow.of("lyon").get() >= 1);
}
