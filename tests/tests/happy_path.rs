//! Scenario 1: two tenants, air-quality and bin devices, real Mosquitto, and both write
//! APIs at once: one gateway writes InfluxDB 1.x through `/write?db=`, another (its own
//! subscription group) writes VictoriaMetrics through `/api/v2/write`. Every published
//! reading is read back from each database exactly once, every field with its exact value
//! (strings and booleans included: a sensor fault, a quality flag, bin flags, a firmware
//! version) and its own timestamp, in its tenant's database.
#![allow(clippy::unwrap_used)]

use gateway::config::DatabaseApi;
use gateway::fleet::registry::DeviceKind;
use gateway::observe::metrics::Metrics;
use protocol::reading::bin_flags;
use protocol::{AirQuality, DeviceStatus, Field, Reading, Values, WasteBin};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use vigie_tests::fleet::{self, Device};
use vigie_tests::readback::{self, key, key_text};
use vigie_tests::{influxdb, mosquitto, now_s, victoria_metrics, wait_for};

const READINGS: u32 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_apis_store_every_reading_once_with_exact_values() {
    let (influx, victoria) = (influxdb(), victoria_metrics());
    for db in ["vigie_lyon", "vigie_villeurbanne"] {
        readback::influx_create_db(influx.addr, db).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let devices = vec![
        Device::new("lyon", "aq-1", DeviceKind::AirQuality),
        Device::new("lyon", "bin-1", DeviceKind::WasteBin),
        Device::new("villeurbanne", "aq-2", DeviceKind::AirQuality),
        Device::new("villeurbanne", "bin-2", DeviceKind::WasteBin),
    ];
    fleet::write_registry(&dir.path().join("devices.toml"), &devices);
    let broker = mosquitto(dir.path());

    let mut gateways = Vec::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    for (id, api, server) in [
        ("gw-v1", DatabaseApi::V1, influx.addr),
        ("gw-v2", DatabaseApi::V2, victoria.addr),
    ] {
        let config = fleet::gateway_config(
            dir.path(),
            id,
            broker.addr,
            Some(fleet::database(api, server)),
        );
        let metrics = Arc::new(Metrics::default());
        let task = tokio::spawn(gateway::run_with_metrics(
            config,
            stop_rx.clone(),
            metrics.clone(),
        ));
        gateways.push((metrics, task));
    }
    for (m, _) in &gateways {
        wait_for("gateways connected", Duration::from_secs(20), async || {
            m.counts().mqtt_connected
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Single-reading frames, then one batched frame of five (store-and-forward shape).
    let start = now_s() - 3600;
    let mut messages = Vec::new();
    let mut expected = BTreeSet::new();
    for d in &devices {
        let readings: Vec<_> = (0..READINGS)
            .map(|n| d.reading(n, start + 10 * n))
            .collect();
        for (n, r) in readings[..READINGS as usize - 5].iter().enumerate() {
            messages.push((d.topic(), d.frame(std::slice::from_ref(r), n as u32)));
        }
        messages.push((
            d.topic(),
            d.frame(&readings[READINGS as usize - 5..], READINGS),
        ));
        for (n, r) in readings.iter().enumerate() {
            let t = u64::from(r.time);
            let n = n as f64;
            match d.kind {
                DeviceKind::AirQuality => {
                    expected.insert(key(
                        &d.tenant,
                        "air_quality",
                        &d.id,
                        t,
                        "pm25",
                        (100.0 + n) / 10.0,
                    ));
                    expected.insert(key(
                        &d.tenant,
                        "air_quality",
                        &d.id,
                        t,
                        "pm10",
                        (700.0 + n) / 10.0,
                    ));
                    expected.insert(key(
                        &d.tenant,
                        "air_quality",
                        &d.id,
                        t,
                        "temperature",
                        (-50.0 + n) / 10.0,
                    ));
                }
                DeviceKind::WasteBin => {
                    expected.insert(key(
                        &d.tenant,
                        "waste_bin",
                        &d.id,
                        t,
                        "fillingLevel",
                        n / 100.0,
                    ));
                    expected.insert(key(
                        &d.tenant,
                        "waste_bin",
                        &d.id,
                        t,
                        "distance",
                        1000.0 - 10.0 * n,
                    ));
                }
            }
        }
    }
    // Frames whose values are strings or booleans in the database.
    let extra_time = start + 10 * READINGS + 5;
    for d in &devices {
        let t = u64::from(extra_time);
        let k = |m: &str, f: &str, v: f64| key(&d.tenant, m, &d.id, t, f, v);
        let kt = |m: &str, f: &str, v: &str| key_text(&d.tenant, m, &d.id, t, f, v);
        let status = Reading {
            time: extra_time + 1,
            values: Values::DeviceStatus(DeviceStatus {
                battery: Field::Value(3_712),
                firmware: Field::Value(0x01_02_03),
                ..DeviceStatus::default()
            }),
        };
        messages.push((d.topic(), d.frame(&[status], READINGS + 2)));
        let ts = t + 1;
        expected.insert(key(
            &d.tenant,
            "device_status",
            &d.id,
            ts,
            "batteryVoltage",
            3.712,
        ));
        expected.insert(key_text(
            &d.tenant,
            "device_status",
            &d.id,
            ts,
            "firmwareVersion",
            "1.2.3",
        ));
        let reading = match d.kind {
            DeviceKind::AirQuality => {
                // PM2.5 above PM10: stored with a quality flag; temperature sensor failed.
                expected.insert(k("air_quality", "pm25", 50.0));
                expected.insert(k("air_quality", "pm10", 40.0));
                expected.insert(kt("air_quality", "quality", "pm25_above_pm10"));
                expected.insert(kt("air_quality", "faults", "temperature"));
                Values::AirQuality(AirQuality {
                    pm25: Field::Value(500),
                    pm10: Field::Value(400),
                    temperature: Field::Fault,
                    ..AirQuality::default()
                })
            }
            DeviceKind::WasteBin => {
                expected.insert(k("waste_bin", "distance", 150.0));
                expected.insert(k("waste_bin", "fillingLevel", 0.85));
                expected.insert(k("waste_bin", "tilted", 0.0));
                expected.insert(k("waste_bin", "lidOpen", 1.0));
                expected.insert(k("waste_bin", "fireSuspected", 1.0));
                Values::WasteBin(WasteBin {
                    distance: Field::Value(150),
                    fill_level: Field::Value(85),
                    flags: Field::Value(bin_flags::LID_OPEN | bin_flags::FIRE_SUSPECTED),
                    ..WasteBin::default()
                })
            }
        };
        let r = Reading {
            time: extra_time,
            values: reading,
        };
        messages.push((d.topic(), d.frame(&[r], READINGS + 1)));
        // Two frames with readings in the same second: both stay (SPEC §9, SCHEMA.md).
        if d.kind == DeviceKind::AirQuality {
            for (counter, pm25) in [(READINGS + 3, 333u16), (READINGS + 4, 444)] {
                let r = Reading {
                    time: extra_time + 2,
                    values: Values::AirQuality(AirQuality {
                        pm25: Field::Value(pm25),
                        ..AirQuality::default()
                    }),
                };
                messages.push((d.topic(), d.frame(&[r], counter)));
                expected.insert(key(
                    &d.tenant,
                    "air_quality",
                    &d.id,
                    t + 2,
                    "pm25",
                    f64::from(pm25) / 10.0,
                ));
            }
        }
    }
    fleet::publish_all(broker.addr, &messages).await;
    let same_second = 2 * devices
        .iter()
        .filter(|d| d.kind == DeviceKind::AirQuality)
        .count();
    let total = f64::from(READINGS + 2) * devices.len() as f64 + same_second as f64;
    for (m, _) in &gateways {
        wait_for("all readings stored", Duration::from_secs(60), async || {
            (m.counts().readings_stored as f64) >= total
        })
        .await;
        assert_eq!(m.counts().frames_rejected, 0);
    }

    let measurements = ["air_quality", "waste_bin", "device_status"];
    let mut in_influx = BTreeSet::new();
    for tenant in ["lyon", "villeurbanne"] {
        let points =
            readback::influx_points(influx.addr, &format!("vigie_{tenant}"), &measurements).await;
        assert!(
            points.iter().all(|p| p.starts_with(&format!("{tenant}|"))),
            "a point in the wrong tenant's database"
        );
        in_influx.extend(points);
    }
    let missing: Vec<_> = expected.difference(&in_influx).collect();
    let extra: Vec<_> = in_influx.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "InfluxDB 1.x content differs: missing {missing:?}, unexpected {extra:?}"
    );
    let in_victoria = readback::victoria_points(victoria.addr, &measurements).await;
    let missing: Vec<_> = expected.difference(&in_victoria).collect();
    let extra: Vec<_> = in_victoria.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "VictoriaMetrics content differs: missing {missing:?}, unexpected {extra:?}"
    );
    let strings = expected.iter().filter(|k| k.ends_with('"')).count();
    println!(
        "happy_path: published={} fields_expected={} in_influxdb={} in_victoriametrics={} string_fields={strings}",
        messages.len(),
        expected.len(),
        in_influx.len(),
        in_victoria.len()
    );

    stop_tx.send(true).unwrap();
    for (_, task) in gateways {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
