//! Durable buffer: append rate with group commit (one fsync per batch) and recovery scan
//! rate at start-up. `cargo bench -p gateway --bench buffer`
#![allow(clippy::unwrap_used)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use gateway::store::buffer::Buffer;
use std::time::Duration;

/// About the size of one accepted air-quality frame's record (line protocol included).
const RECORD: usize = 200;

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("buffer_append");
    g.measurement_time(Duration::from_secs(4)).sample_size(20);
    for batch in [1usize, 100, 1000] {
        let dir = tempfile::tempdir().unwrap();
        let (mut buffer, _) = Buffer::open(
            gateway::store::fs::real(),
            dir.path(),
            8 << 20,
            1 << 40,
            |_| {},
        )
        .unwrap();
        let records = vec![vec![0x5au8; RECORD]; batch];
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("records_per_fsync_{batch}"), |b| {
            b.iter(|| buffer.append(&records).unwrap())
        });
    }
    g.finish();
}

fn recover(c: &mut Criterion) {
    let mut g = c.benchmark_group("buffer_recover");
    g.measurement_time(Duration::from_secs(4)).sample_size(10);
    let dir = tempfile::tempdir().unwrap();
    let n = 100_000u64;
    {
        let (mut buffer, _) = Buffer::open(
            gateway::store::fs::real(),
            dir.path(),
            8 << 20,
            1 << 40,
            |_| {},
        )
        .unwrap();
        let records = vec![vec![0x5au8; RECORD]; 1000];
        for _ in 0..n / 1000 {
            buffer.append(&records).unwrap();
        }
    }
    g.throughput(Throughput::Elements(n));
    g.bench_function("open_scan_100k_records", |b| {
        b.iter_batched(
            || (),
            |()| {
                let mut seen = 0u64;
                let (_b, rec) = Buffer::open(
                    gateway::store::fs::real(),
                    dir.path(),
                    8 << 20,
                    1 << 40,
                    |_| seen += 1,
                )
                .unwrap();
                assert_eq!((seen, rec.records), (n, n));
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, append, recover);
criterion_main!(benches);
