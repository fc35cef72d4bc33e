//! Backup and restore as docs/OPERATIONS.md gives them: the service stopped, its
//! configuration directory (registry, keys, passwords) and its state directory (buffer,
//! replay state, quarantine, device state) archived with `tar`, then unpacked onto a fresh
//! directory and the service started there. The devices go on where they were: every
//! reading after the restore is stored, none is rejected, and a frame sent before the
//! backup and sent again is recognised as a duplicate (the replay state came back too).
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;
use vigie_tests::process::{GatewayProcess, GatewaySettings};
use vigie_tests::{fleet, influxdb, mosquitto, now_s, readback, scenario};

fn tar(args: &[&str]) {
    let status = Command::new("tar").args(args).status().unwrap();
    assert!(status.success(), "tar {args:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_carries_on_where_the_devices_are() {
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let (old, new) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let devices = scenario::devices(old.path(), 3);
    let broker = mosquitto(old.path());
    let settings = |dir: &std::path::Path| GatewaySettings {
        data_dir: Some(dir.join("state")),
        ..GatewaySettings::new("gw", broker.addr, Some(influx.addr))
    };
    let mut gw = GatewayProcess::start(old.path(), &settings(old.path()));
    let start = now_s() - 3600;
    const PER_DEVICE: u32 = 30;
    let before = scenario::load(&devices, PER_DEVICE, start);
    fleet::publish_all(broker.addr, &before.messages).await;
    scenario::all_stored(influx.addr, &before.expected, Duration::from_secs(60)).await;

    // Backup: stop, archive the configuration and the state, start again (as the docs).
    gw.terminate();
    let archive = new.path().join("vigie-backup.tar.gz");
    tar(&[
        "-C",
        old.path().to_str().unwrap(),
        "-czf",
        archive.to_str().unwrap(),
        "devices.toml",
        "broker-access.json",
        "state",
    ]);
    drop(gw);

    // Restore onto a fresh machine's directories; start there.
    tar(&[
        "-C",
        new.path().to_str().unwrap(),
        "-xzpf",
        archive.to_str().unwrap(),
    ]);
    let gw = GatewayProcess::start(new.path(), &settings(new.path()));
    let after = scenario::load_from(&devices, PER_DEVICE, PER_DEVICE, start);
    // One frame from before the backup, sent again (a device that never got its
    // acknowledgement resends): the restored replay state knows it.
    let mut messages = after.messages.clone();
    messages.push(before.messages[0].clone());
    fleet::publish_all(broker.addr, &messages).await;
    let all: std::collections::BTreeSet<String> =
        before.expected.union(&after.expected).cloned().collect();
    let got = scenario::all_stored(influx.addr, &all, Duration::from_secs(60)).await;
    let settled = gw.settled("vigie_frames_duplicate_total", Duration::from_secs(20));
    assert_eq!(settled, 1.0, "the resent old frame recognised");
    assert_eq!(gw.metric("vigie_frames_rejected_total"), Some(0.0));
    println!(
        "backup: {} readings before the backup, {} after the restore, {got}; the resent old \
         frame counted as a duplicate, 0 rejected",
        before.expected.len(),
        after.expected.len()
    );
}
