//! Allocations per reading on the gateway's hot path (issue 33: at most two), counted by
//! a global allocator over every thread of the gateway while it drains a backlog: the
//! MQTT read, judging, the buffer's write and fsync, the sink's read, the database
//! request and the acknowledgements, everything the process does per reading.
//!
//! Real Mosquitto and InfluxDB 1.x; the gateway in this process on a runtime of its own.
//! The test's own threads (its runtime, the publisher, the database queries) are not
//! counted. The backlog of six-value single-reading frames (as the drain benchmark's) is
//! preloaded while the gateway is away, so it drains in full batches as after a real
//! outage. What is counted: from the first readings stored to the last, over the readings
//! stored in between (its start, before, is printed apart). Reallocations count as
//! allocations.
#![allow(clippy::unwrap_used)]

use gateway::config::DatabaseApi;
use gateway::fleet::registry::DeviceKind;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::InProcessGateway;
use vigie_tests::{influxdb, mosquitto, now_s, readback, wait_for};

const DEVICES: u32 = 40;
const PER_DEVICE: u32 = 1_000;
/// Issue 33's bound.
const MAX_PER_READING: f64 = 2.0;

/// Counts every allocation made outside the test's own threads.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the test's threads: their allocations are not the gateway's.
    static THE_TESTS: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if !THE_TESTS.try_with(Cell::get).unwrap_or(true) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed to the system allocator unchanged; counting touches only
// an atomic and a const-initialised thread-local without destructor (no allocation).
// A global allocator is `unsafe` to implement: the one way to count every allocation.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

#[test]
fn draining_a_backlog_costs_the_gateway_at_most_two_allocations_per_reading() {
    THE_TESTS.set(true);
    let tests = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(|| THE_TESTS.set(true))
        .enable_all()
        .build()
        .unwrap();
    // As `gateway run` builds it; its threads, and every thread it starts, are counted.
    let gateways = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    tests.block_on(drain(gateways.handle()));
}

async fn drain(runtime: &tokio::runtime::Handle) {
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let devices: Vec<_> = (0..DEVICES)
        .map(|i| Device::new("lyon", &format!("aq-{i:03}"), DeviceKind::AirQuality))
        .collect();
    fleet::write_registry(&dir.path().join("devices.toml"), &devices);
    let broker = mosquitto(dir.path());
    let db = fleet::database(DatabaseApi::V1, influx.addr);
    let config = fleet::gateway_config(dir.path(), "gw-bench", broker.addr, Some(db));

    // Its session and subscription (one reading per device stored proves both), then
    // away while the backlog builds.
    let start = now_s() - PER_DEVICE - 60;
    let frames = |n: std::ops::Range<u32>| -> Vec<(String, Vec<u8>)> {
        n.flat_map(|n| {
            devices.iter().map(move |d| {
                let frame = d.frame(&[d.full_reading(n, start + n)], n);
                (d.topic(), frame)
            })
        })
        .collect()
    };
    let gw = InProcessGateway::start_on(runtime, config.clone()).await;
    fleet::publish_all(broker.addr, &frames(0..1)).await;
    wait_for("the first readings", Duration::from_secs(30), async || {
        gw.counts().readings_stored == u64::from(DEVICES)
    })
    .await;
    gw.stop().await;
    fleet::publish_all(broker.addr, &frames(1..PER_DEVICE)).await;
    let backlog = u64::from(DEVICES * (PER_DEVICE - 1));

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let gw = InProcessGateway::start_on(runtime, config).await;
    let (mut first, deadline) = (None, Instant::now() + Duration::from_secs(120));
    loop {
        let stored = gw.counts().readings_stored;
        let now = ALLOCATIONS.load(Ordering::Relaxed);
        if stored > 0 && first.is_none() {
            first = Some((stored, now));
        }
        if stored >= backlog || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let end = (
        gw.counts().readings_stored,
        ALLOCATIONS.load(Ordering::Relaxed),
    );
    gw.stop().await;
    assert_eq!(end.0, backlog, "the backlog was not stored within 120 s");
    let (first_stored, at_first) = first.unwrap();
    let held = readback::influx_query(
        influx.addr,
        "vigie_lyon",
        "SELECT COUNT(pm25) FROM air_quality",
    )
    .await;
    assert_eq!(
        held["results"][0]["series"][0]["values"][0][1].as_u64(),
        Some(backlog + u64::from(DEVICES)),
        "InfluxDB holds every reading once"
    );

    let readings = end.0 - first_stored;
    let per_reading = (end.1 - at_first) as f64 / readings as f64;
    eprintln!(
        "gateway allocations: {} to start and store its first {first_stored} readings; \
         {} for the next {readings}: {per_reading:.3} per reading (bound {MAX_PER_READING})",
        at_first - before,
        end.1 - at_first,
    );
    assert!(
        readings >= backlog / 2,
        "too few readings counted ({readings} of {backlog}): the first batch stored was \
         most of the backlog"
    );
    assert!(
        per_reading <= MAX_PER_READING,
        "{per_reading:.3} allocations per reading, more than {MAX_PER_READING}"
    );
}
