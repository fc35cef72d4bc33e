//! Backups that hold the readings (issue 32, item 5; docs/OPERATIONS.md "Backup, restore
//! and upgrade"): the gateway's directories archived with `tar` as before, and each
//! database with its own tool, as the docs give them (`influxd backup -portable`,
//! `vmbackup` from a snapshot); then everything lost (servers killed, their directories
//! deleted), a fresh InfluxDB and VictoriaMetrics restored (`influxd restore -portable`,
//! `vmrestore`), the gateways' directories unpacked, and the devices going on. Every
//! reading from before the backup and after the restore is in each database, once.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use vigie_tests::process::{GatewayProcess, GatewaySettings};
use vigie_tests::servers::{influxdb_rpc, victoria_data};
use vigie_tests::{
    fleet, influxdb, mosquitto, now_s, readback, scenario, victoria_metrics, wait_for,
};

const PER_DEVICE: u32 = 30;

fn run(program: &str, args: &[&str]) {
    vigie_tests::process::run(program, args);
}

async fn victoria_pm25(victoria: std::net::SocketAddr) -> BTreeSet<String> {
    readback::victoria_points(victoria, &["air_quality"])
        .await
        .into_iter()
        .filter(|p| p.contains("|pm25|"))
        .collect()
}

fn gateways(
    dir: &Path,
    broker: std::net::SocketAddr,
    influx: std::net::SocketAddr,
    victoria: std::net::SocketAddr,
) -> [GatewayProcess; 2] {
    let settings = |name: &str, db, vm| GatewaySettings {
        data_dir: Some(dir.join(format!("state-{name}"))),
        victoria: vm,
        ..GatewaySettings::new(name, broker, Some(db))
    };
    [
        GatewayProcess::start(dir, &settings("gw-a", influx, false)),
        GatewayProcess::start(dir, &settings("gw-b", victoria, true)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_with_its_databases_brings_every_reading_back_on_a_fresh_install() {
    let (influx, victoria) = (influxdb(), victoria_metrics());
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let (old, new, backup) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let devices = scenario::devices(old.path(), 3);
    let broker = mosquitto(old.path());
    let start = now_s() - 3600;
    let before = scenario::load(&devices, PER_DEVICE, start);
    let [mut a, mut b] = gateways(old.path(), broker.addr, influx.addr, victoria.addr);
    fleet::publish_all(broker.addr, &before.messages).await;
    scenario::all_stored(influx.addr, &before.expected, Duration::from_secs(60)).await;
    wait_for(
        "VictoriaMetrics holds them",
        Duration::from_secs(60),
        async || victoria_pm25(victoria.addr).await == before.expected,
    )
    .await;

    // Backup: the gateways stopped, each database with its own tool, the directories.
    a.terminate();
    b.terminate();
    let (influx_dir, vm_dir) = (
        backup.path().join("influxdb"),
        backup.path().join("victoria-metrics"),
    );
    let rpc = influxdb_rpc(&influx).to_string();
    run(
        "influxd",
        &[
            "backup",
            "-portable",
            "-host",
            &rpc,
            influx_dir.to_str().unwrap(),
        ],
    );
    run(
        "vmbackup",
        &[
            &format!("-storageDataPath={}", victoria_data(&victoria).display()),
            &format!(
                "-snapshot.createURL=http://{}/snapshot/create",
                victoria.addr
            ),
            &format!("-dst=fs://{}", vm_dir.display()),
        ],
    );
    let archive = backup.path().join("vigie-backup.tar.gz");
    run(
        "tar",
        &[
            "-C",
            old.path().to_str().unwrap(),
            "-czf",
            archive.to_str().unwrap(),
            "devices.toml",
            "broker-access.json",
            "state-gw-a",
            "state-gw-b",
        ],
    );

    // Everything lost: the gateways, both databases and their directories.
    drop((a, b, influx, victoria));

    // A fresh install: new, empty servers; the databases restored, then the directories.
    let influx = influxdb();
    let rpc = influxdb_rpc(&influx).to_string();
    run(
        "influxd",
        &[
            "restore",
            "-portable",
            "-host",
            &rpc,
            influx_dir.to_str().unwrap(),
        ],
    );
    let mut victoria = victoria_metrics();
    victoria.stop(false);
    run(
        "vmrestore",
        &[
            &format!("-src=fs://{}", vm_dir.display()),
            &format!("-storageDataPath={}", victoria_data(&victoria).display()),
        ],
    );
    victoria.start();
    run(
        "tar",
        &[
            "-C",
            new.path().to_str().unwrap(),
            "-xzpf",
            archive.to_str().unwrap(),
        ],
    );
    let [a, b] = gateways(new.path(), broker.addr, influx.addr, victoria.addr);

    let after = scenario::load_from(&devices, PER_DEVICE, PER_DEVICE, start);
    fleet::publish_all(broker.addr, &after.messages).await;
    let all: BTreeSet<String> = before.expected.union(&after.expected).cloned().collect();
    let outcome = scenario::all_stored(influx.addr, &all, Duration::from_secs(60)).await;
    wait_for(
        "VictoriaMetrics holds every reading",
        Duration::from_secs(60),
        async || victoria_pm25(victoria.addr).await.len() >= all.len(),
    )
    .await;
    let vm = victoria_pm25(victoria.addr).await;
    scenario::assert_exactly(&vm, &all);
    assert_eq!(a.metric("vigie_frames_rejected_total"), Some(0.0));
    assert_eq!(b.metric("vigie_frames_rejected_total"), Some(0.0));
    println!(
        "backup with the databases: {} readings before, {} after a restore on fresh servers; \
         InfluxDB {outcome}; VictoriaMetrics {} of {} held, 0 missing, 0 unexpected",
        before.expected.len(),
        after.expected.len(),
        vm.len(),
        all.len()
    );
}
