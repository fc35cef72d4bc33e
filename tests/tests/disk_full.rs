//! Scenario 9: a real full disk. The gateway's storage sits on a size-limited tmpfs the
//! test mounts, InfluxDB is down, and devices publish until the kernel answers `ENOSPC`.
//! The gateway must stop acknowledging (the broker keeps the messages), say so in
//! `/readyz`, resume by itself once space is freed (no restart), and in the end every
//! acknowledged reading is stored exactly once.
//!
//! - `full_disk_at_a_segment_roll`: the buffer directory alone on a tmpfs sized so that
//!   the first segment fills it to the page and the next segment cannot be created: the
//!   fill lands on a segment roll (the case that used to leave an empty segment and wedge
//!   ingest until a restart).
//! - `full_disk_with_a_restart_while_full`: the whole data directory (buffer, quarantine,
//!   state files) on a tmpfs; the gateway is stopped with SIGTERM and started again while
//!   the disk is still full.
//! - `full_disk_without_its_space_reserve`: the whole data directory on a tmpfs filled by
//!   the gateway's own segments; its space reserve is gone (the test puts a file as large
//!   in its place: on 2026-12-07 a reserve spent on a segment roll and not remade did
//!   the same), then InfluxDB comes back. Nothing but the gateway's delivered segments can
//!   be freed, and the replay state cannot be written before they are: it must free them
//!   by itself and take everything in, with no space freed from outside.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};
use vigie_tests::process::{GatewayProcess, GatewaySettings};
use vigie_tests::servers::Server;
use vigie_tests::tmpfs::Tmpfs;
use vigie_tests::{fleet, influxdb, mosquitto, now_s, readback, scenario, wait_for};

/// Space the test frees by deleting a file it put there first.
const FILLER: usize = 64 * 1024;

fn fill(disk: &Path) -> std::path::PathBuf {
    let filler = disk.join("filler");
    std::fs::write(&filler, vec![0x55u8; FILLER]).unwrap();
    filler
}

/// Waits until InfluxDB holds every reading of `load`, at most `limit`, failing with the
/// gateway's state and log; then counts how it ended.
async fn all_stored(
    gw: &GatewayProcess,
    influx: std::net::SocketAddr,
    load: &scenario::Load,
    limit: Duration,
    what: &str,
) -> scenario::Outcome {
    let until = Instant::now() + limit;
    while scenario::stored(influx).await.len() < load.expected.len() {
        assert!(
            Instant::now() < until,
            "{what}: {} of {} stored after {limit:?}; accepted {:?}, pending bytes {:?}, /readyz {:?}; log:\n{}",
            scenario::stored(influx).await.len(),
            load.expected.len(),
            gw.metric("vigie_frames_accepted_total"),
            gw.metric("vigie_buffer_pending_bytes"),
            gw.readyz(),
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    scenario::all_stored(influx, &load.expected, Duration::from_secs(10)).await
}

async fn wait_disk_full(gw: &GatewayProcess, what: &str) -> String {
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        let last = gw.readyz();
        if let Some((false, s)) = &last
            && s.contains("disk full")
        {
            return s.clone();
        }
        assert!(
            Instant::now() < until,
            "timed out waiting for {what}; last /readyz {last:?}; log:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Run {
    name: &'static str,
    /// Mounts the tmpfs; returns it and the gateway's data directory.
    layout: fn(&Path) -> (Tmpfs, std::path::PathBuf),
    per_device: u32,
    restart_while_full: bool,
    /// What the readiness summary must name while full.
    expect_in_summary: &'static str,
}

/// The servers of a run: InfluxDB with the commune's database, stopped; Mosquitto; five
/// devices; a gateway (1 MiB buffer segments) whose data directory `layout` puts on a
/// tmpfs.
struct Setup {
    influx: Server,
    broker: Server,
    devices: Vec<fleet::Device>,
    disk: Tmpfs,
    data_dir: std::path::PathBuf,
    gw: GatewayProcess,
    dir: tempfile::TempDir,
}

async fn setup(layout: fn(&Path) -> (Tmpfs, std::path::PathBuf)) -> Setup {
    let mut influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    influx.stop(false);
    let dir = tempfile::tempdir().unwrap();
    let devices = scenario::devices(dir.path(), 5);
    let broker = mosquitto(dir.path());
    let (disk, data_dir) = layout(dir.path());
    let settings = GatewaySettings {
        buffer_mib: (64, 1),
        data_dir: Some(data_dir.clone()),
        ..GatewaySettings::new("gw", broker.addr, Some(influx.addr))
    };
    let gw = GatewayProcess::start(dir.path(), &settings);
    Setup {
        influx,
        broker,
        devices,
        disk,
        data_dir,
        gw,
        dir,
    }
}

async fn run(r: Run) {
    let Setup {
        mut influx,
        broker,
        devices,
        disk,
        mut gw,
        dir: _dir,
        ..
    } = setup(r.layout).await;
    let filler = fill(disk.path());
    let load = scenario::load(&devices, r.per_device, now_s() - 20_000);
    fleet::publish_all(broker.addr, &load.messages).await;

    let while_full = wait_disk_full(&gw, "/readyz to report the full disk").await;
    assert!(
        while_full.contains(r.expect_in_summary),
        "{}: readiness says {while_full:?}",
        r.name
    );
    assert!(
        while_full.contains("No space left on device"),
        "the kernel's own ENOSPC: {while_full:?}"
    );
    // The worker stores what still fits (smaller and smaller pieces of its batch), then
    // takes nothing more: wait for that, then check it holds.
    let mut accepted = gw.metric("vigie_frames_accepted_total").unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = gw.metric("vigie_frames_accepted_total").unwrap();
        if now == accepted {
            break;
        }
        assert!(
            Instant::now() < until,
            "intake never settled on a full disk"
        );
        accepted = now;
    }
    let accepted_before = accepted;
    assert!(accepted < load.messages.len() as f64);
    // Held, not dropped: still full a moment later, nothing more taken, nothing rejected.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(gw.metric("vigie_frames_accepted_total"), Some(accepted));
    assert_eq!(gw.metric("vigie_frames_rejected_total"), Some(0.0));
    assert!(
        gw.readyz().is_some_and(|(ready, _)| !ready),
        "still reported"
    );

    let mut shutdown = None;
    if r.restart_while_full {
        shutdown = Some(gw.terminate());
        assert!(
            shutdown < Some(Duration::from_secs(20)),
            "SIGTERM works while full"
        );
        gw.restart();
        wait_disk_full(&gw, "/readyz to report the full disk after the restart").await;
        // A new process: its counters start again.
        accepted = gw.metric("vigie_frames_accepted_total").unwrap();
    }

    // Space comes back: ingest resumes by itself.
    std::fs::remove_file(&filler).unwrap();
    let freed_at = Instant::now();
    wait_for(
        "ingest to resume without a restart",
        Duration::from_secs(30),
        async || {
            gw.metric("vigie_frames_accepted_total")
                .is_some_and(|n| n > accepted)
        },
    )
    .await;
    let resumed = freed_at.elapsed();

    influx.start();
    let outcome = all_stored(&gw, influx.addr, &load, Duration::from_secs(240), r.name).await;
    wait_for("/readyz ready again", Duration::from_secs(30), async || {
        gw.readyz().is_some_and(|(ready, _)| ready)
    })
    .await;
    assert!(
        gw.log().contains("storage writable again"),
        "the log says it is over:\n{}",
        gw.log()
    );
    println!(
        "disk_full[{}]: {outcome} acknowledged_by_gateway_when_full={accepted_before} \
         resumed_after_space_freed={resumed:?} restart_while_full={shutdown:?} readyz_while_full={while_full:?}",
        r.name
    );
    gw.terminate();
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_at_a_segment_roll() {
    run(Run {
        name: "segment_roll",
        // Only the buffer on the tmpfs: one 1 MiB segment (256 pages) plus the filler,
        // to the page. The second segment cannot even take its magic.
        layout: |dir| {
            let data = dir.join("data");
            let disk = Tmpfs::mount(&data.join("buffer"), &format!("{}k", 1024 + FILLER / 1024));
            (disk, data)
        },
        per_device: 2_000,
        restart_while_full: false,
        expect_in_summary: "creating segment 2",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_with_a_restart_while_full() {
    run(Run {
        name: "restart_while_full",
        // Buffer, quarantine and state files together on 2 MiB.
        layout: |dir| {
            let disk = Tmpfs::mount(&dir.join("disk"), "2m");
            let data = disk.path().join("data");
            (disk, data)
        },
        per_device: 5_000,
        restart_while_full: true,
        expect_in_summary: "No space left on device",
    })
    .await;
}

/// Fills what is left of the disk of `path`'s file (until `ENOSPC`), at most `limit` bytes.
fn ballast(path: &Path, limit: usize) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let page = [0x42u8; 4096];
    let mut written = 0;
    while written < limit && f.write_all(&page).is_ok() {
        written += page.len();
    }
    let _ = f.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_without_its_space_reserve() {
    // Buffer, quarantine, state files and the reserve together on 3 MiB.
    let Setup {
        mut influx,
        broker,
        devices,
        disk,
        data_dir,
        gw,
        dir: _dir,
    } = setup(|dir| {
        let disk = Tmpfs::mount(&dir.join("disk"), "3m");
        let data = disk.path().join("data");
        (disk, data)
    })
    .await;
    let load = scenario::load(&devices, 5_000, now_s() - 20_000);
    fleet::publish_all(broker.addr, &load.messages).await;
    wait_disk_full(&gw, "/readyz to report the full disk").await;
    let reserve = data_dir.join("reserve");
    let size = std::fs::metadata(&reserve).map(|m| m.len()).unwrap_or(0);
    assert!(size >= 1 << 20, "a space reserve was kept: {size} bytes");
    std::fs::remove_file(&reserve).unwrap();
    ballast(&disk.path().join("ballast"), size as usize);
    let segments = std::fs::read_dir(data_dir.join("buffer")).unwrap().count();
    assert!(
        segments >= 2,
        "a delivered segment to free: {segments} files"
    );
    let accepted = gw.metric("vigie_frames_accepted_total").unwrap();

    influx.start();
    let what = format!("the reserve gone, {accepted} accepted when full");
    let outcome = all_stored(&gw, influx.addr, &load, Duration::from_secs(180), &what).await;
    assert!(
        gw.log().contains("no space reserve left"),
        "the log says how space was found:\n{}",
        gw.log()
    );
    assert!(
        disk.path().join("ballast").exists(),
        "nothing freed from outside"
    );
    println!("disk_full[without_reserve]: {outcome} segments_when_full={segments}");
    let mut gw = gw;
    gw.terminate();
    drop(disk);
}
