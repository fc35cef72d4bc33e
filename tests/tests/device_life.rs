//! A device removed and enrolled again loses nothing (issue: "a fleet's life loses
//! nothing").
//!
//! Real Mosquitto (the project's config and accounts), InfluxDB 1.x, the gateway process,
//! the operator's CLI and the fleet simulator (the firmware's node code). The old board
//! runs under its enrolment (key epoch 1); the operator runs `devices remove`, then
//! `devices add` for the same id, restarts the broker for the new account, and a new
//! board runs the new blob, its frame counter starting at 0 again. The id continues at
//! key epoch 2, so the new board's frames are judged on a fresh replay state: with epoch
//! 1 again (before) its counters met the old board's history, and 35 of 35 readings were
//! judged duplicates or reused counters, acknowledged and lost. A second `devices add`
//! of the same id is refused and changes nothing.
//!
//! Counting: recorded by both boards (the simulator), stored as distinct readings in
//! InfluxDB, duplicated as points beyond one per reading.
#![allow(clippy::unwrap_used)]

use gateway::fleet::registry::DeviceKind;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use vigie_sim::{Fleet, FleetOptions, FleetSummary};
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::{self, GatewayProcess, GatewaySettings, text};
use vigie_tests::scenario::recorded_outcome;
use vigie_tests::{influxdb, mosquitto, readback, wait_for};

async fn run(
    p: protocol::provision::Provisioning,
    broker: std::net::SocketAddr,
    accel: f64,
) -> FleetSummary {
    run_kept(p, broker, accel, None).await
}

/// [`run`], the board's flash kept in `state` across runs (as `vigie-sim` does).
async fn run_kept(
    p: protocol::provision::Provisioning,
    broker: std::net::SocketAddr,
    accel: f64,
    state: Option<std::path::PathBuf>,
) -> FleetSummary {
    let mut fleet = Fleet::new(
        vec![p],
        FleetOptions {
            broker,
            accel,
            duration: Duration::from_secs(8),
            status_every: 10,
            outages: Vec::new(),
            progress: false,
            ca: None,
        },
    );
    if let Some(dir) = state {
        fleet = fleet.with_state(dir);
    }
    let (_keep, never) = watch::channel(false);
    fleet.run(never).await
}

/// Real InfluxDB with the commune's database, Mosquitto with the project's accounts for
/// `devices`, and the gateway process on them, in a fresh directory.
struct Bench {
    influx: vigie_tests::servers::Server,
    broker: vigie_tests::servers::Server,
    gw: GatewayProcess,
    dir: tempfile::TempDir,
}

async fn bench(devices: &[Device]) -> Bench {
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    fleet::write_registry(&dir.path().join("devices.toml"), devices);
    let broker = mosquitto(dir.path());
    let gw = GatewayProcess::start(
        dir.path(),
        &GatewaySettings::new("gw", broker.addr, Some(influx.addr)),
    );
    Bench {
        influx,
        broker,
        gw,
        dir,
    }
}

/// `n` air-quality devices of Lyon, `aq-0` … .
fn air_devices(n: usize) -> Vec<Device> {
    (0..n)
        .map(|i| Device::new("lyon", &format!("aq-{i}"), DeviceKind::AirQuality))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_removed_and_added_again_loses_nothing() {
    let aq = Device::new("lyon", "aq-1", DeviceKind::AirQuality);
    let Bench {
        influx,
        mut broker,
        gw,
        dir,
    } = bench(std::slice::from_ref(&aq)).await;
    let config = gw.config.to_str().unwrap().to_string();

    // The old board: 60 virtual seconds between samples, every one sent.
    let old = run(aq.provisioning(broker.addr, 60, 0), broker.addr, 120.0).await;
    assert_eq!((old.failed, old.waiting), (0, 0), "{old}");

    // Removed, then the same id added again for a new board.
    let out = process::cli(&[
        "devices", "remove", "--config", &config, "--tenant", "lyon", "--id", "aq-1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let blob = dir.path().join("aq-1-new.vgp");
    let port = broker.addr.port().to_string();
    let add = |blob: &std::path::Path| {
        process::cli(&[
            "devices",
            "add",
            "--config",
            &config,
            "--tenant",
            "lyon",
            "--id",
            "aq-1",
            "--kind",
            "air-quality",
            "--sample-interval",
            "60",
            "--heartbeat",
            "0",
            "--broker-host",
            "127.0.0.1",
            "--broker-port",
            &port,
            "--blob-out",
            blob.to_str().unwrap(),
        ])
    };
    let out = add(&blob);
    assert!(out.status.success(), "{}", text(&out));
    let added = text(&out);
    let registry_before = std::fs::read(dir.path().join("devices.toml")).unwrap();
    let again = add(&dir.path().join("aq-1-again.vgp"));
    assert!(!again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("already enrolled (key epoch ")
            && text(&again).contains("nothing changed"),
        "{}",
        text(&again)
    );
    assert_eq!(
        std::fs::read(dir.path().join("devices.toml")).unwrap(),
        registry_before
    );
    assert!(!dir.path().join("aq-1-again.vgp").exists());
    // The broker learns the new account when it restarts (the command says so).
    broker.stop(false);
    broker.start();
    wait_for(
        "the gateway back on the broker",
        Duration::from_secs(30),
        async || gw.metric("vigie_mqtt_connected") == Some(1.0),
    )
    .await;

    // The new board, counter from 0; its readings come after the old board's (60×).
    let p = protocol::provision::Provisioning::decode(&std::fs::read(&blob).unwrap()).unwrap();
    let epoch = p.key.epoch();
    let new = run(p, broker.addr, 60.0).await;
    assert_eq!((new.failed, new.waiting), (0, 0), "{new}");

    let recorded = (old.recorded - old.dropped + new.recorded - new.dropped) as usize;
    let (stored, lost, duplicated) = recorded_outcome(influx.addr, recorded).await;
    let refused = gw.metric("vigie_frames_rejected_total").unwrap();
    eprintln!(
        "remove + add: old board recorded={} new board recorded={} (epoch {epoch}) stored={} \
         lost={lost} duplicated={duplicated} refused={refused} duplicates_seen={}",
        old.recorded,
        new.recorded,
        stored,
        gw.metric("vigie_frames_duplicate_total").unwrap(),
    );
    assert!(old.recorded > 5 && new.recorded > 5, "both boards ran");
    assert_eq!((lost, duplicated), (0, 0));
    assert_eq!(stored, recorded);
    assert_eq!(refused, 0.0);
    assert_eq!(epoch, 2, "{added}");
    assert!(added.contains("key epoch 2"), "{added}");
}

/// The simulator run twice with the same blobs: the second run resumes the boards'
/// counters from their kept flash (before: 52 of 219 readings refused as reused
/// counters and acknowledged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_run_twice_with_the_same_blobs_loses_nothing() {
    let devices = air_devices(3);
    let Bench {
        influx,
        broker,
        gw,
        dir,
    } = bench(&devices).await;
    let summaries = run_twice(&devices, broker.addr, &dir.path().join("state"), false).await;
    // Every reading recorded, none dropped by a board.
    let recorded: usize = summaries.iter().map(|s| s.recorded as usize).sum();
    let (stored, lost, duplicated) = recorded_outcome(influx.addr, recorded).await;
    let refused = gw.metric("vigie_frames_rejected_total").unwrap();
    eprintln!(
        "simulator twice: recorded={recorded} stored={} lost={lost} duplicated={duplicated} \
         refused={refused}",
        stored
    );
    for s in &summaries {
        assert_eq!(s.verdict(), Ok(()), "{s}");
    }
    assert_eq!((lost, duplicated), (0, 0));
    assert_eq!(refused, 0.0);
    assert!(recorded > 30, "{recorded}");
}

/// Runs `devices` twice on their flash kept in `state`, the second run at half the pace
/// (its readings come after the first's); `erase`: each run on blank flash, so the second
/// is a chip erase of every board.
async fn run_twice(
    devices: &[Device],
    broker: std::net::SocketAddr,
    state: &std::path::Path,
    erase: bool,
) -> Vec<FleetSummary> {
    let mut summaries = Vec::new();
    for accel in [120.0, 60.0] {
        if erase {
            let _ = std::fs::remove_dir_all(state);
        }
        std::fs::create_dir_all(state).unwrap();
        let runs = devices.iter().map(|d| {
            run_kept(
                d.provisioning(broker, 60, 0),
                broker,
                accel,
                Some(state.to_path_buf()),
            )
        });
        summaries.extend(futures_join(runs).await);
    }
    summaries
}

/// Runs the futures at once, in order of their results.
async fn futures_join<F: Future<Output = FleetSummary> + Send + 'static>(
    runs: impl Iterator<Item = F>,
) -> Vec<FleetSummary> {
    let handles: Vec<_> = runs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// Boards erased (their flash gone: counter pages and ring) and run again with the same
/// blobs: their counters restart at 0 under a key the gateway knows. The gateway refuses
/// each such frame as `counter_reused` without acknowledging it and tells the board where
/// to resume (SPEC §12.1); the board re-seals what it holds under fresh counters and
/// every reading is stored. Before: the refused frames were acknowledged and their
/// readings lost (the 30 of 30; 52 of 219 for a second simulator run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boards_erased_and_flashed_again_lose_nothing() {
    let devices = air_devices(2);
    let Bench {
        influx,
        broker,
        gw,
        dir,
    } = bench(&devices).await;
    let summaries = run_twice(&devices, broker.addr, &dir.path().join("state"), true).await;
    // Every reading recorded, none dropped by a board.
    let recorded: usize = summaries.iter().map(|s| s.recorded as usize).sum();
    let (stored, lost, duplicated) = recorded_outcome(influx.addr, recorded).await;
    let reused = gw.metric("vigie_frames_rejected_total{reason=\"counter_reused\"}");
    let resealed: u64 = summaries.iter().map(|s| s.resealed).sum();
    eprintln!(
        "boards erased: recorded={recorded} stored={stored} lost={lost} duplicated={duplicated} \
         refused_as_reused={reused:?} resealed={resealed}"
    );
    for s in &summaries {
        assert_eq!(s.verdict(), Ok(()), "{s}");
    }
    assert_eq!((lost, duplicated), (0, 0));
    assert_eq!(stored, recorded);
    assert!(reused > Some(0.0) && resealed > 0, "the erase was noticed");
    assert!(recorded > 20, "{recorded}");
    // The evidence stays: the refused frames are in the quarantine.
    let config = gw.config.to_string_lossy().into_owned();
    let listed = text(&process::cli(&["quarantine", "list", "--config", &config]));
    assert!(listed.contains("counter_reused"), "{listed}");
}

/// `devices rotate` under load while the board still runs its old blob, then the new blob
/// flashed on the same board (its flash kept). From the rotation on, the gateway refuses
/// the old key's frames (`authentication`, never acknowledged: the board keeps them) and
/// quarantines each once; the new blob carries the old key (SPEC §11), so the board
/// re-seals what waits under it and every reading is stored. Before: what the board held
/// under the old key was lost once it was re-flashed (the 1,998 stranded frames).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_under_load_then_the_new_blob_loses_nothing() {
    let aq = Device::new("lyon", "aq-1", DeviceKind::AirQuality);
    let Bench {
        influx,
        mut broker,
        gw,
        dir,
    } = bench(std::slice::from_ref(&aq)).await;
    let config = gw.config.to_str().unwrap().to_string();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();

    // The board runs its first blob; three seconds in, its key is rotated.
    let first = tokio::spawn(run_kept(
        aq.provisioning(broker.addr, 60, 0),
        broker.addr,
        120.0,
        Some(state.clone()),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let blob = dir.path().join("aq-1-rotated.vgp");
    let out = process::cli(&[
        "devices",
        "rotate",
        "--config",
        &config,
        "--tenant",
        "lyon",
        "--id",
        "aq-1",
        "--kind",
        "air-quality",
        "--blob-out",
        blob.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let old = first.await.unwrap();
    assert!(
        old.waiting > 0,
        "frames sealed under the old key wait: {old}"
    );
    let refused_old_key = gw.metric("vigie_frames_rejected_total{reason=\"authentication\"}");

    // The broker learns the new password; the board is flashed with the new blob.
    broker.stop(false);
    broker.start();
    wait_for(
        "the gateway back on the broker",
        Duration::from_secs(30),
        async || gw.metric("vigie_mqtt_connected") == Some(1.0),
    )
    .await;
    let p = protocol::provision::Provisioning::decode(&std::fs::read(&blob).unwrap()).unwrap();
    assert_eq!(p.previous.as_ref().map(|k| k.epoch()), Some(1));
    let new = run_kept(p, broker.addr, 60.0, Some(state)).await;
    assert_eq!(new.verdict(), Ok(()), "{new}");

    // Every reading either board recorded: none may be dropped by the board itself (a
    // blob without the old key drops what waited under it: 11 of 19 in one run).
    let recorded = (old.recorded + new.recorded) as usize;
    let (stored, lost, duplicated) = recorded_outcome(influx.addr, recorded).await;
    eprintln!(
        "rotation under load: old blob recorded={} (waiting at its end {}), new blob \
         recorded={} resealed={} dropped={} stored={stored} lost={lost} \
         duplicated={duplicated} refused_under_the_old_key={refused_old_key:?}",
        old.recorded,
        old.waiting,
        new.recorded,
        new.resealed,
        old.dropped + new.dropped,
    );
    assert_eq!((lost, duplicated), (0, 0));
    assert_eq!(stored, recorded);
    assert!(new.resealed > 0);
}
